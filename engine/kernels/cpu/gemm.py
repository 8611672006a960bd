"""Matrix products on x86 CPUs by our own C kernel (kernels/cpu/cpu_gemm.c), from fp16 weights or
from a GGUF file's own int8 codes and scales.

A decoding pass multiplies 1 to ~9 rows by every weight. fbgemm's fp16 GEMM (model/packed.py)
is built for many rows; this kernel streams each block of 16 outputs once and keeps every sum in
a register. Measured on the default 0.5B's own weights, both forms loaded in one process and
alternated (2 threads, median of 7-11): the 24 layers' products 33.2 / 39.1 ms (ours / fbgemm)
for 1 row, 39.8 / 56.2 for 3, 52.6 / 61.2 for 5; a whole pass over 600 cached tokens 54.6 /
66.9 ms (1 row), 67.0 / 82.3 (3), 86.4 / 88.0 (5), 108.8 / 117.2 (8). Long inputs are slower
than fbgemm's (it blocks for the cache, this does not): one layer at 600 rows 138 / 127 ms, a
900-token prefill 6.45-7.55 / 6.36 s.

Its outputs are bit for bit fbgemm's for most row counts (3-6, 8, 9, 12, 16 tested: there
fbgemm sums each output over k in order with one FMA a step, as this kernel does; for 1, 2, 7
or 32 rows fbgemm takes other paths whose sums differ in the last bits), so the model is the
same fp16-weight model; and every output is computed the same way whatever rows are beside it
(tested), so a pass's products give each row the numbers a one-row pass gives it (the softmax
of attention still sums a row's scores in groups that depend on how many keys the pass has,
so a whole pass is equal only to the last bits: the decoders' token-for-token tests stand).

The C source ships in the package and is compiled on first use with the system C compiler
(`cc`, or $CC) into the user cache (kernels/, keyed by the source, flags and compiler), then
loaded with ctypes: nothing is downloaded and nothing of a checkpoint runs. Without a compiler,
on a CPU without AVX2/FMA/F16C, or with DLLM_CPU_GEMM=0, `library()` is None and the weights stay
fbgemm's. A freshly built library must pass a check against the
torch reference before it is used.

Layout: `pack(weight [N, K])` -> fp16 [N/16, K, 16] (N a multiple of 32); `reference` is the
torch oracle (x @ W^T + b in fp32 from the same fp16 values).

Codes (`pack_codes` -> CodePack, `codes_gemm`; loading/gguf_codes.py reads them from a GGUF): int8
codes [N/16, K, 16] and fp32 scales (and Q4_K's offsets) [N/16, K/G, 16]; the kernel makes each
weight vector in registers as scale * code (- offset), exactly gguf's dequantized value
(compiled with -ffp-contract=off), and sums k in order as above, so rows stay independent and
`codes_reference` (the same values dequantized in torch, then x @ W^T) is the oracle. One byte a
weight instead of two, but making a weight costs a convert and a multiply more than an fp16
one, and on this 2-core EPYC a pass is then bound by arithmetic rather than by memory: the
products of 24 matrices of 9728 x 896, alternated in one process (`python scripts/codes_ab.py`):
1 row 12.7-13.0 / 15.4-16.8 ms (codes / fp16), 3 rows 17.9-18.1 / 16.7-17.5, 5 rows 22-32 /
23-27, 7 rows 32.5 / 33.1, 300 rows 1267-1339 / 1163-1227. Long inputs (>= 16 rows) make each
block's weights once into an fp32 buffer that stays in the L2 cache while every chunk of rows
reads it; on a CPU with AVX-512 (avx512f) that long path sums 16 outputs in one zmm vector and
16 rows a sweep (the same per-output arithmetic, so the same bits; `set_wide(False)` keeps the
AVX2 path). On such a CPU a pass's 1-15 rows also take AVX-512 kernels (a block's 16 outputs one
zmm, its weight vector made once for up to 7 rows a sweep, 1 row streaming 4 blocks: the same
per-output arithmetic, so the same bits, tested; `dllm-lsp bench pass --ab avx2` times both; `--ab two-blocks` the 4-block sweeps of 2-15 rows against 2).
Without AVX-512, a decoding pass's 4-15 rows: the first 3 rows stream a tile of two blocks from memory
(k3x2, both blocks at once), the rest read the tile from the cache 6 rows a sweep (krx1, one
block at a time: it streams from memory at half k3x2's speed). Measured on a 2-core Xeon with
AVX-512 (24 codes matrices of 9728 x 896, 2 threads, old / new split, alternated in one process,
bit for bit the same outputs): 4 rows 39.2 / 25.5 ms, 5 40.2 / 26.5, 7 40.0 / 29.3, 9 41.0 /
33.3, 13 49.6 / 45.7 (1-3 rows unchanged); a whole pass over 600 cached tokens
(`scripts/pass_cost.py`): 4 rows 97.8 / 77.7 ms, 9 rows 123.4 / 99.2 (1 row 38.6). What codes buy is the file's exact weights in 40% less memory (engine.py, docs/benchmarks.md).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Optional

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_gemm.c")
# -ffp-contract=off: a code weight is s * q - m as two roundings, as numpy computes it (never fused)
FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC"]
ENV_SWITCH = "DLLM_CPU_GEMM"          # "0": never use the kernel (fbgemm's products instead)
CPU_FLAGS = ("avx2", "fma", "f16c")
BLOCK = 16                            # outputs per packed block
ALIGN = 32                            # out_features must be a multiple of this


def cpu_flags() -> set:
    """The flags of this CPU from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def compiler() -> Optional[str]:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def unavailable_reason() -> Optional[str]:
    """Why the kernel cannot be used here, or None."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"{ENV_SWITCH}=0"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"not an x86-64 CPU ({platform.machine()})"
    missing = [f for f in CPU_FLAGS if f not in cpu_flags()]
    if missing:
        return "the CPU lacks " + ", ".join(missing)
    if compiler() is None:
        return "no C compiler (cc) found"
    return None


def _build(cc: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = Path(tmp) / out.name
        subprocess.run([cc, *FLAGS, str(SOURCE), "-o", str(built)], check=True, capture_output=True, text=True,
                       timeout=120)
        os.replace(built, out)                     # atomic: a concurrent load sees all or nothing


@lru_cache(maxsize=1)
def library() -> Optional[ctypes.CDLL]:
    """The compiled kernel (built once per source, flags and compiler), or None (logged why)."""
    reason = unavailable_reason()
    if reason is not None:
        log.info("fp16 CPU kernel not used: %s", reason)
        return None
    from engine.loading.gguf_import import cache_root
    cc = compiler()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + version.encode()).hexdigest()[:16]
        path = cache_root() / "kernels" / f"cpu_gemm-{key}.so"
        if not path.is_file():
            _build(cc, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        log.warning("fp16 CPU kernel not built (%s): fbgemm's products are used", str(detail).strip()[:500])
        return None
    P, I = ctypes.c_void_p, ctypes.c_int64
    lib.fp16_gemm.argtypes = [P, I, I, P, P, P, I, ctypes.c_int]
    lib.fp16_gemm.restype = None
    lib.q8_gemm.argtypes = [P, I, I, P, P, P, ctypes.c_int, P, P, I, ctypes.c_int]
    lib.q8_gemm.restype = None
    lib.wide_available.argtypes, lib.wide_available.restype = [], ctypes.c_int
    lib.set_wide.argtypes, lib.set_wide.restype = [ctypes.c_int], None
    lib.set_four.argtypes, lib.set_four.restype = [ctypes.c_int], None
    if not _passes_check(lib):
        log.warning("fp16 CPU kernel at %s disagrees with the torch reference: not used", path)
        return None
    return lib


def _passes_check(lib) -> bool:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 64, generator=gen)
    b = torch.randn(64, generator=gen)
    packed = pack(w)
    codes = torch.randint(-32, 32, (64, 64), generator=gen, dtype=torch.int8)
    scale, offset = torch.rand(64, 4, generator=gen), torch.rand(64, 4, generator=gen)
    code_packs = [pack_codes(codes, scale, None), pack_codes(codes, scale, offset)]
    for rows in (1, 2, 3, 4, 5, 7, 13, 16, 21):
        x = torch.randn(rows, 64, generator=gen)
        if not torch.allclose(_call(lib, x, packed, b, 64), reference(x, packed, b), rtol=1e-5, atol=1e-5):
            return False
        for cp in code_packs:
            if not torch.allclose(_call_codes(lib, x, cp, b), codes_reference(x, cp, b), rtol=1e-5, atol=1e-4):
                return False
    return True


def wide_available() -> bool:
    """Whether products from codes take the AVX-512 paths here (the CPU has avx512f): a pass's few rows and long inputs."""
    lib = library()
    return bool(lib is not None and lib.wide_available())


def set_wide(on: bool) -> None:
    """Use the AVX-512 paths (a pass's few rows and long inputs) where the CPU has it (the default), or the AVX2 ones
    (for A/B measurements and the tests that compare both: their outputs are bit for bit equal)."""
    lib = library()
    if lib is not None:
        lib.set_wide(1 if on else 0)


def set_four_blocks(on: bool) -> None:
    """AVX-512, 2-15 rows: sweep 4 blocks of outputs at once where the blocks come in fours (the
    default), or 2 (for A/B measurements and the test that compares both: the same bits)."""
    lib = library()
    if lib is not None:
        lib.set_four(1 if on else 0)


def supports(out_features: int) -> bool:
    return out_features % ALIGN == 0


def pack(weight: torch.Tensor) -> torch.Tensor:
    """weight [N, K] (any float dtype) -> fp16 [N/16, K, 16]: block b, column k, output 16b + i."""
    n, k = weight.shape
    if n % ALIGN:
        raise ValueError(f"{n} outputs: the kernel takes a multiple of {ALIGN}")
    return weight.detach().to(torch.float16).reshape(n // BLOCK, BLOCK, k).transpose(1, 2).contiguous()


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """The fp32 weight [N, K] of a pack."""
    blocks, k, _ = packed.shape
    return packed.transpose(1, 2).reshape(blocks * BLOCK, k).float()


def reference(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The torch oracle: x [R, K] @ W^T (+ b) in fp32 -> [R, N]."""
    y = x.float() @ unpack(packed).T
    return y if bias is None else y + bias


class CodePack(NamedTuple):
    """A weight w = scale * code (- offset) in the kernel's layout, G columns sharing a scale:
    codes int8 [N/16, K, 16]; scale and offset (or None) fp32 [N/16, K/G, 16]."""
    codes: torch.Tensor
    scale: torch.Tensor
    offset: Optional[torch.Tensor]

    @property
    def group(self) -> int:
        return self.codes.shape[1] // self.scale.shape[1]

    @property
    def out_features(self) -> int:
        return self.codes.shape[0] * BLOCK


def pack_codes(codes: torch.Tensor, scale: torch.Tensor, offset: Optional[torch.Tensor]) -> CodePack:
    """codes int8 [N, K], scale (and offset) fp32 [N, K/G] -> a CodePack (G a power of two)."""
    n, k = codes.shape
    groups = scale.shape[1]
    group = k // groups if groups else 0
    if n % ALIGN or codes.dtype != torch.int8 or scale.shape != (n, groups) or not group or group * groups != k \
            or group & (group - 1) or (offset is not None and offset.shape != scale.shape):
        raise ValueError(f"codes {tuple(codes.shape)} {codes.dtype} with scales {tuple(scale.shape)}: the kernel "
                         f"takes int8 codes [N, K] (N a multiple of {ALIGN}) and scales [N, K/G], G a power of two")

    def blocked(t):
        return t.reshape(n // BLOCK, BLOCK, t.shape[1]).transpose(1, 2).contiguous()
    return CodePack(blocked(codes), blocked(scale.float()), None if offset is None else blocked(offset.float()))


def unpack_codes(pack: CodePack) -> torch.Tensor:
    """The fp32 weight [N, K] of a CodePack: scale * code (- offset), rounded as the kernel does."""
    from engine.loading.gguf_codes import dequantize_torch

    def flat(t):
        return None if t is None else t.transpose(1, 2).reshape(pack.out_features, t.shape[1])
    return dequantize_torch(flat(pack.codes), flat(pack.scale), flat(pack.offset))


def codes_reference(x: torch.Tensor, pack: CodePack, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The torch oracle of codes_gemm: x [R, K] @ W^T (+ b) in fp32 -> [R, N]."""
    y = x.float() @ unpack_codes(pack).T
    return y if bias is None else y + bias


def gemm(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x [R, K] fp32 -> [R, N] through the kernel (library() must not be None)."""
    return _call(library(), x, packed, bias, packed.shape[0] * BLOCK)


def codes_gemm(x: torch.Tensor, pack: CodePack, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x [R, K] fp32 -> [R, N] through the kernel from int8 codes (library() must not be None)."""
    return _call_codes(library(), x, pack, bias)


def _inputs(x: torch.Tensor, k: int, n: int, bias: Optional[torch.Tensor], what: str) -> torch.Tensor:
    x = x.float().contiguous()
    if x.dim() != 2 or x.shape[1] != k:
        raise ValueError(f"{what} does not take inputs of shape {tuple(x.shape)}")
    if bias is not None and (bias.dtype != torch.float32 or bias.numel() != n or not bias.is_contiguous()):
        raise ValueError("bias must be contiguous float32 of the outputs' size")
    return x


def _call(lib, x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor], n: int) -> torch.Tensor:
    if packed.dtype != torch.float16 or packed.dim() != 3 or not packed.is_contiguous():
        raise ValueError(f"pack {tuple(packed.shape)} {packed.dtype} is not an fp16 kernel pack")
    x = _inputs(x, packed.shape[1], n, bias, f"pack {tuple(packed.shape)}")
    rows, k = x.shape
    y = torch.empty(rows, n)
    if rows:
        lib.fp16_gemm(x.data_ptr(), rows, k, packed.data_ptr(), None if bias is None else bias.data_ptr(),
                      y.data_ptr(), n, torch.get_num_threads())
    return y


def _call_codes(lib, x: torch.Tensor, pack: CodePack, bias: Optional[torch.Tensor]) -> torch.Tensor:
    codes, scale, offset = pack
    blocks, k, _ = codes.shape
    group = pack.group
    if codes.dtype != torch.int8 or scale.dtype != torch.float32 or scale.shape != (blocks, k // group, BLOCK) \
            or group & (group - 1) or not all(t is None or t.is_contiguous() for t in pack) \
            or (offset is not None and (offset.dtype != torch.float32 or offset.shape != scale.shape)):
        raise ValueError(f"codes {tuple(codes.shape)} with scales {tuple(scale.shape)} are not a kernel pack")
    n = blocks * BLOCK
    x = _inputs(x, k, n, bias, f"codes {tuple(codes.shape)}")
    y = torch.empty(x.shape[0], n)
    if x.shape[0]:
        lib.q8_gemm(x.data_ptr(), x.shape[0], k, codes.data_ptr(), scale.data_ptr(),
                    None if offset is None else offset.data_ptr(), group.bit_length() - 1,
                    None if bias is None else bias.data_ptr(), y.data_ptr(), n, torch.get_num_threads())
    return y
