"""CuPy fused kernels: the same functions as reference.py, each one launch (decision: two).

Importing this module imports CuPy, so only engine.kernels.select_backend imports it, and
only for a CUDA device. The CUDA C lives in fused.cu (read once, compiled once per device by
cupy.RawModule/NVRTC; CuPy also caches the binary on disk). Tensors cross to CuPy through
DLPack with no copies: bf16 tensors are viewed as int16 first (CuPy has no bfloat16 dtype;
the kernels read the raw 16-bit patterns). Every launch goes on torch's current stream (so
it is ordered with torch's work and recorded by CUDA graph capture); outputs are allocated
by torch (capture-safe caching allocator). Inputs the kernels do not cover (CPU tensors,
float16, mixed dtypes, odd layouts) go to the torch reference, so callers never need to care.

Each op takes optional preallocated outputs (`out=...`), used by the GPU tests to poison
outputs first and check that every element is written.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Tuple

import cupy  # noqa: F401  (ImportError here makes select_backend fall back to torch)
import numpy as np
import torch

import engine.kernels.reference as reference

NAME = "cupy"
SOURCE = Path(__file__).with_name("fused.cu")
THREADS = 256                 # block size of the row / elementwise kernels (multiple of 32)
DECISION_CHUNK = 4096         # vocabulary entries per block in decision_partial
MAX_GRID_Y = 65535
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}


# ---- plumbing -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _module(device_index: int):
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=SOURCE.read_text())


@functools.lru_cache(maxsize=None)
def _function(device_index: int, name: str):
    with cupy.cuda.Device(device_index):
        return _module(device_index).get_function(name)


_streams: dict = {}


def _torch_stream_ptr(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _stream(device: torch.device):
    """torch's current stream on `device`, as a CuPy stream object (cached per pointer)."""
    ptr = _torch_stream_ptr(device)
    s = _streams.get(ptr)
    if s is None:
        s = _streams[ptr] = cupy.cuda.ExternalStream(ptr)
    return s


def _is_device_tensor(t: torch.Tensor) -> bool:
    return t.is_cuda


def _kind(*tensors: torch.Tensor) -> Optional[str]:
    """'f32' | 'bf16' when every tensor is a CUDA tensor of that one dtype, else None."""
    dtype = tensors[0].dtype
    if dtype not in _SUFFIX:
        return None
    for t in tensors:
        if t.dtype != dtype or not _is_device_tensor(t) or t.device != tensors[0].device:
            return None
    return _SUFFIX[dtype]


def _cp(t: torch.Tensor):
    """A CuPy view of `t` (DLPack, no copy); bf16 is viewed as int16."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return cupy.from_dlpack(t)


def _launch(device: torch.device, name: str, grid: tuple, block: tuple, args: tuple) -> None:
    index = device.index if device.index is not None else 0
    fn = _function(index, name)
    with cupy.cuda.Device(index), _stream(device):
        fn(grid, block, tuple(_cp(a) if isinstance(a, torch.Tensor) else a for a in args))


def _check_out(out: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
    if out.shape != like.shape or out.dtype != like.dtype or out.device != like.device or not out.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous {like.dtype} tensor of shape {tuple(like.shape)}")
    return out


# ---- the four kernels -----------------------------------------------------------------------
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: Optional[torch.Tensor] = None, *,
             out: Optional[torch.Tensor] = None,
             residual_out: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(normed, new_residual) as reference.rms_norm; x/residual [..., H], weight [H]."""
    operands = (x, weight) if residual is None else (x, weight, residual)
    kind = _kind(*operands)
    hidden = x.shape[-1]
    if (kind is None or weight.shape != (hidden,) or x.numel() == 0
            or (residual is not None and residual.shape != x.shape)):
        return reference.rms_norm(x, weight, eps, residual)
    x = x.contiguous()
    weight = weight.contiguous()
    out = torch.empty_like(x) if out is None else _check_out(out, x, "out")
    if residual is None:
        new_residual, res_in, res_out = x, x, x          # unused by the kernel (has_residual = 0)
    else:
        res_in = residual.contiguous()
        new_residual = torch.empty_like(x) if residual_out is None else _check_out(residual_out, x, "residual_out")
        res_out = new_residual
    rows = x.numel() // hidden
    _launch(x.device, f"rms_norm_{kind}", (rows,), (THREADS,),
            (x, res_in, weight, out, res_out, np.int32(residual is not None), np.int32(hidden), np.float32(eps)))
    return out, new_residual


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half RoPE applied to q [B,Hq,T,D] and k [B,Hk,T,D] in place; cos/sin [T, D]."""
    kind = _kind(q, k)
    ok = (kind is not None and q.dim() == 4 and k.dim() == 4 and q.shape[-1] % 2 == 0
          and q.shape[-1] == k.shape[-1] and q.shape[0] == k.shape[0] and q.shape[2] == k.shape[2]
          and q.stride(-1) == 1 and k.stride(-1) == 1 and tuple(cos.shape) == (q.shape[2], q.shape[3])
          and cos.shape == sin.shape and cos.device == q.device and q.numel() > 0)
    if not ok:
        return reference.apply_rope(q, k, cos, sin)
    b, hq, t, d = q.shape
    hk = k.shape[1]
    half = d // 2
    cos = cos.float().contiguous()
    sin = sin.float().contiguous()
    nq, nk = b * hq * t * half, b * hk * t * half
    blocks = (nq + nk + THREADS - 1) // THREADS
    _launch(q.device, f"rope_{kind}", (blocks,), (THREADS,),
            (q, k, cos, sin, np.int32(hq), np.int32(hk), np.int32(t), np.int32(half),
             np.int64(q.stride(0)), np.int64(q.stride(1)), np.int64(q.stride(2)),
             np.int64(k.stride(0)), np.int64(k.stride(1)), np.int64(k.stride(2)), np.int64(nq), np.int64(nk)))
    return q, k


def swiglu(gate: torch.Tensor, up: torch.Tensor, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    kind = _kind(gate, up)
    if kind is None or gate.shape != up.shape or gate.numel() == 0:
        return reference.swiglu(gate, up)
    gate, up = gate.contiguous(), up.contiguous()
    out = torch.empty_like(gate) if out is None else _check_out(out, gate, "out")
    n = gate.numel()
    blocks = min((n + THREADS - 1) // THREADS, 65535)
    _launch(gate.device, f"swiglu_{kind}", (blocks,), (THREADS,), (gate, up, out, np.int64(n)))
    return out


def decision(logits: torch.Tensor, *, out: Optional[tuple] = None):
    """Per row of logits [N, V]: (top-1 probability, argmax, entropy, top-1 minus top-2 probability).

    float32 [N] except argmax (int64 [N]); -inf logits (e.g. the mask id) are skipped. One pass
    over the vocabulary per row, split into chunks of DECISION_CHUNK across blocks, then merged.
    """
    kind = _kind(logits)
    if kind is None or logits.dim() != 2 or logits.numel() == 0 or logits.shape[0] > MAX_GRID_Y:
        return reference.decision(logits)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    n, vocab = logits.shape
    dev = logits.device
    if out is None:
        out = (torch.empty(n, dtype=torch.float32, device=dev), torch.empty(n, dtype=torch.int64, device=dev),
               torch.empty(n, dtype=torch.float32, device=dev), torch.empty(n, dtype=torch.float32, device=dev))
    conf, argmax, entropy, margin = out
    for t, dtype in zip(out, (torch.float32, torch.int64, torch.float32, torch.float32)):
        if t.shape != (n,) or t.dtype != dtype or t.device != dev or not t.is_contiguous():
            raise ValueError(f"decision out: expected contiguous {dtype} tensors of shape ({n},)")
    chunks = (vocab + DECISION_CHUNK - 1) // DECISION_CHUNK
    part = torch.empty(n * chunks * 4, dtype=torch.float32, device=dev)          # [N, C, 4]
    part_idx = torch.empty(n * chunks, dtype=torch.int32, device=dev)            # [N, C]
    _launch(dev, f"decision_partial_{kind}", (chunks, n), (THREADS,),
            (logits, np.int64(logits.stride(0)), np.int32(vocab), np.int32(DECISION_CHUNK), part, part_idx))
    _launch(dev, "decision_finish", (n,), (32,), (part, part_idx, np.int32(chunks), conf, argmax, entropy, margin))
    return conf, argmax, entropy, margin
