"""Linear layers with fp16 weights multiplied by fbgemm's fp16 GEMM on a CPU: half the bytes a pass reads.

A decoding pass on a CPU is bound by reading the weights. With fp32 weights the default 0.5B
reads ~2 GB a pass; packed as fp16 for fbgemm (torch.ops.quantized.linear_prepack_fp16), half
that, and the pass over the cached context got 2.5x cheaper here (2 threads, AVX2 EPYC, 600
cached tokens: 1 row 147 -> 58 ms, 5 rows 221 -> 82 ms, 8 rows 219 -> 108 ms; a 600-token
prefill 3.3 -> 2.9 s; `scripts/pass_cost.py`). Activations and accumulation stay fp32; only
each weight is rounded to fp16 once (relative error <= 2^-11; the default model's weights are
4-bit GGUF blocks, whose own quantization step is ~100x coarser).

That rounding makes it another model than the fp32 one, so it is a weight format of its own:
its drafted output is tested against its own one-token-per-pass output (the decoders' lossless
tests run on it), and its quality is measured beside fp32's (HumanEval single-line, README).
Engine.load packs only where it was measured: the CPU, a causal (AR) model, dtype "auto" (or
"fp16-weights" asked for by name); dtype "float32" keeps the exact fp32 weights.

`pack_fp16(model)` swaps every nn.Linear of the model for a HalfLinear in place and drops its
fp32 weight. HalfLinear holds only the packed weight: `dense_weight(module)` unpacks an fp32
copy for code that reads rows (the draft head's vocabulary). Forward hooks work as on any
module (the mask adapter's LoRA hooks read inputs and outputs only). No autograd: trainers load
float32.
"""
from __future__ import annotations

import ctypes
from functools import lru_cache

import torch
from torch import nn


@lru_cache(maxsize=1)
def fp16_gemm_available() -> bool:
    """Whether this torch build has fbgemm's fp16 linear (x86 builds do; ARM builds do not)."""
    try:
        packed = torch.ops.quantized.linear_prepack_fp16(torch.ones(2, 2), None)
        out = torch.ops.quantized.linear_dynamic_fp16(torch.ones(1, 2), packed)
        return bool(torch.allclose(out, torch.full((1, 2), 2.0)))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


class HalfLinear(nn.Module):
    """y = x @ W^T + b with W stored as packed fp16; x, y and the accumulation in fp32."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = None if linear.bias is None else linear.bias.detach().float().contiguous()
        self.n_params = linear.weight.numel() + (0 if bias is None else bias.numel())
        self.packed = torch.ops.quantized.linear_prepack_fp16(linear.weight.detach().float().contiguous(), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)                                         # [R, in]
        out = torch.ops.quantized.linear_dynamic_fp16(flat, self.packed)                 # [R, out]
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weights=fp16 (fbgemm)"


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The fp32 weight [out, in] of an nn.Linear or a HalfLinear (unpacked: a copy)."""
    if isinstance(module, HalfLinear):
        weight, _ = torch.ops.quantized.linear_unpack_fp16(module.packed)
        return weight.float()
    return module.weight


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, HalfLinear))


def pack_fp16(model: nn.Module) -> int:
    """Swap every nn.Linear of `model` (a CPU fp32 model) for a HalfLinear; returns how many.
    The fp32 weights are freed as they go, and the freed heap is handed back to the system."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, HalfLinear(child))
                swapped += 1
    release_freed_memory()
    return swapped


def release_freed_memory() -> None:
    """glibc keeps freed heap pages mapped; malloc_trim returns them (0.5B: resident memory
    3.2 GB -> 1.9 GB after packing, against 2.7 GB with fp32 weights). Elsewhere a no-op."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
