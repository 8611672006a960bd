"""Linear layers with fp16 weights multiplied by fbgemm's fp16 GEMM on a CPU: half the bytes a pass reads.

A decoding pass on a CPU is bound by reading the weights. With fp32 weights the default 0.5B
reads ~2 GB a pass; packed as fp16 for fbgemm (torch.ops.quantized.linear_prepack_fp16), half
that, and the pass over the cached context got 2.5x cheaper here (2 threads, AVX2 EPYC, 600
cached tokens: 1 row 147 -> 58 ms, 5 rows 221 -> 82 ms, 8 rows 219 -> 108 ms; a 600-token
prefill 3.3 -> 2.9 s; median of 7, the loop of `scripts/pass_cost.py`). Activations and
accumulation stay fp32; only each weight is stored as fp16 (relative error <= 2^-11). A model
converted from GGUF is stored as bf16, whose values fp16 holds exactly (3 more mantissa bits)
down to its normal range, 6e-5; only smaller weights are rounded.

That rounding makes it another model than the fp32 one, so it is a weight format of its own:
its drafted output is tested against its own one-token-per-pass output (the decoders' lossless
tests run on it), and its quality is measured beside fp32's (HumanEval single-line, docs/benchmarks.md).
Engine.load packs only where it was measured: the CPU, a causal (AR) model, dtype "auto" (or
"fp16-weights" asked for by name); dtype "float32" keeps the exact fp32 weights.

`pack_fp16(model)` swaps every nn.Linear of the model for a HalfLinear in place and drops its
fp32 weight. Projections that read the same input are packed as one matrix where the module
opts in with an attribute of the fused name set to None (model/transformer.py: q|k|v as `qkv`, gate|up as
`gate_up`): 4 products a layer instead of 7, ~5 ms less a pass of the 0.5B (2 threads: 24.6 ->
19.5 ms for the attention and MLP input products at 1 row, 26.6 -> 22.5 at 4), with outputs
bit for bit those of the separate matrices (each output is computed by the same kernel
whatever the rows around it; tested). The parts stay in their places as SliceOf views (module
names, hooks, dense_weight), and `fused_outputs` gives their outputs from one product, with
their forward hooks (the mask adapter's LoRA) applied to their slices.

A block is packed for our own C kernel instead (`pack_block` -> KernelPack, kernels/cpu/gemm.py)
where that kernel runs and the block's outputs are a multiple of 32: the same fp16 values and
fbgemm's sums, 15-30% faster for the 1-3 rows of a decoding pass, and packing is a transpose
rather than fbgemm's ~4 s for the 0.5B. Elsewhere (no C compiler, another CPU) fbgemm's pack.

A block can also hold a GGUF matrix's own int8 codes and fp32 scales (loading/gguf_codes.py; `codes`
of pack_fp16, by parameter name, from the converted folder's exact weights): then the block is
packed from them (KernelPack of a cpu_gemm.CodePack) and its products use exactly the file's
weights, one byte each instead of fp16's two (dtype "gguf", auto's choice for a converted GGUF
where our kernel runs). A fused matrix takes codes only when every part has them in one group
and offset form; otherwise it is fp16 like any other. CodesEmbedding holds an input table the
same way and makes only the rows a lookup reads.

HalfLinear holds only the packed weight: `dense_weight(module)` unpacks an fp32 copy for code
that reads rows (the draft head's vocabulary). Forward hooks work as on any
module (the mask adapter's LoRA hooks read inputs and outputs only). No autograd: trainers load
float32.
"""
from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

import engine.kernels.cpu.gemm as cpu_gemm


@lru_cache(maxsize=1)
def fp16_gemm_available() -> bool:
    """Whether this torch build has fbgemm's fp16 linear (x86 builds do; ARM builds do not)."""
    try:
        packed = torch.ops.quantized.linear_prepack_fp16(torch.ones(2, 2), None)
        out = torch.ops.quantized.linear_dynamic_fp16(torch.ones(1, 2), packed)
        return bool(torch.allclose(out, torch.full((1, 2), 2.0)))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


CHUNK_ROWS = 40_000     # larger weights (the output projection) are packed in row blocks, in parallel


def pack_weight(weight, bias=None):
    """fbgemm's packed fp16 form of one weight [out, in] (and bias [out]); a list of weights
    (and of biases) is packed as their concatenation along the outputs."""
    def whole(t):
        return None if t is None else joined(t).float().contiguous()      # one fp32 copy
    return torch.ops.quantized.linear_prepack_fp16(whole(weight), whole(bias))


def joined(t):
    """A tensor as it is, or a list of tensors concatenated along the outputs (detached)."""
    return t.detach() if isinstance(t, torch.Tensor) else torch.cat([part.detach() for part in t])


class KernelPack(NamedTuple):
    """One block of a HalfLinear in a layout of our C kernel (kernels/cpu/gemm.py)."""
    weight: Union[torch.Tensor, cpu_gemm.CodePack]   # fp16 [N/16, K, 16], or a GGUF matrix's int8 codes
    bias: Optional[torch.Tensor]                       # fp32 [N] or None


Codes = Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]     # int8 [N, K], fp32 [N, K/G] x 2 (or None)


def pack_block(weight, bias=None, codes: Optional[Sequence[Codes]] = None):
    """One block packed for our C kernel where it runs here and takes the block's size
    (kernels/cpu/gemm.py: fbgemm's numbers for most row counts, 15-30% faster for 1-3 rows), else
    fbgemm's pack (pack_weight). weight/bias: a tensor or a list to concatenate, as there.
    `codes`: the block's GGUF codes (one per weight of the list), packed instead of `weight`
    (the caller checked that the kernel runs and that they share a group and an offset form)."""
    b = None if bias is None else joined(bias).float().contiguous()
    if codes is not None:
        offsets = [c[2] for c in codes]
        return KernelPack(cpu_gemm.pack_codes(torch.cat([c[0] for c in codes]), torch.cat([c[1] for c in codes]),
                                              None if offsets[0] is None else torch.cat(offsets)), b)
    rows = weight.shape[0] if isinstance(weight, torch.Tensor) else sum(w.shape[0] for w in weight)
    if cpu_gemm.library() is None or not cpu_gemm.supports(rows):
        return pack_weight(weight, bias)
    return KernelPack(cpu_gemm.pack(joined(weight)), b)


def block_product(flat: torch.Tensor, block) -> torch.Tensor:
    """flat [R, in] times one packed block -> [R, block outputs]."""
    if isinstance(block, KernelPack):
        if isinstance(block.weight, cpu_gemm.CodePack):
            return cpu_gemm.codes_gemm(flat, block.weight, block.bias)
        return cpu_gemm.gemm(flat, block.weight, block.bias)
    return torch.ops.quantized.linear_dynamic_fp16(flat, block)


class HalfLinear(nn.Module):
    """y = x @ W^T + b with W stored as packed fp16 (row blocks of <= CHUNK_ROWS outputs); x, y
    and the accumulation in fp32. Each output is computed by the same kernel whatever the
    blocks, so the blocks give the same numbers as one packed matrix (tested)."""

    def __init__(self, linear: nn.Linear, packed: Optional[List] = None):
        """linear's weight packed here, or `packed`: its blocks_of(linear) already packed."""
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.n_params = linear.weight.numel() + (0 if linear.bias is None else linear.bias.numel())
        self.packed = packed if packed is not None else [pack_weight(w, b) for w, b in blocks_of(linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)                                         # [R, in]
        outs = [block_product(flat, p) for p in self.packed]                             # [R, out_block]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)                     # [R, out]
        return out.reshape(*x.shape[:-1], self.out_features)

    @property
    def kernel(self) -> str:
        """Whose products these are: "ours" (kernels/cpu/gemm.py) or "fbgemm"."""
        return "ours" if all(isinstance(p, KernelPack) for p in self.packed) else "fbgemm"

    @property
    def form(self) -> str:
        """The stored weights: "gguf" (the file's int8 codes and scales) or "fp16"."""
        return "gguf" if all(isinstance(p, KernelPack) and isinstance(p.weight, cpu_gemm.CodePack)
                             for p in self.packed) else "fp16"

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, weights={self.form} ({self.kernel})"
                + (f", {len(self.packed)} blocks" if len(self.packed) > 1 else ""))


class SliceOf(nn.Module):
    """Outputs [start, end) of a fused HalfLinear: what one of the projections packed into it
    computes. Called alone it runs the whole fused product (fused_outputs is the fast way)."""

    def __init__(self, fused: HalfLinear, start: int, end: int):
        super().__init__()
        self._fused = (fused,)            # not a submodule: the fused one is its parent's own child
        self.start, self.end = start, end
        self.in_features, self.out_features = fused.in_features, end - start

    @property
    def fused(self) -> HalfLinear:
        return self._fused[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x)[..., self.start:self.end]

    def extra_repr(self) -> str:
        return f"outputs {self.start}:{self.end} of a fused fp16 projection"


class CodesEmbedding(nn.Module):
    """An input embedding table held as the GGUF's codes (loading/gguf_codes.py): a lookup makes only
    the rows it reads, with dequantize's roundings (scale * code, then - offset), so its rows
    are the file's values; the table costs 1 + 4/G bytes a weight instead of fp32's 4 (the
    default's 151936 x 896: 153 MB instead of 545). `weight` makes the whole fp32 table (a copy,
    for code that needs it all)."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, offset: Optional[torch.Tensor] = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = codes.shape
        # copies: a view would keep the file they were read from mapped
        self.codes, self.scale = codes.clone(memory_format=torch.contiguous_format), scale.float().clone()
        self.offset = None if offset is None else offset.float().clone()
        self.n_params = codes.numel()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        from engine.loading.gguf_codes import dequantize_torch
        flat = ids.reshape(-1)                                                           # [R]
        rows = dequantize_torch(self.codes[flat], self.scale[flat],
                                None if self.offset is None else self.offset[flat])      # [R, H]
        return rows.reshape(*ids.shape, self.embedding_dim)                             # [..., H]

    @property
    def weight(self) -> torch.Tensor:
        from engine.loading.gguf_codes import dequantize_torch
        return dequantize_torch(self.codes, self.scale, self.offset)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, weights=gguf codes (group {self.codes.shape[1] // self.scale.shape[1]})"


def fused_outputs(fused: Optional[HalfLinear], x: torch.Tensor, parts: Sequence[nn.Module]) -> List[torch.Tensor]:
    """Each part's output for input x: one product through `fused` when the parts are its
    SliceOf views (their forward hooks then run on their slices, as calling them would), else
    each part called on x."""
    if fused is None or any(not isinstance(p, SliceOf) or p.fused is not fused or p._forward_pre_hooks
                            or p._forward_hooks_with_kwargs for p in parts):
        return [p(x) for p in parts]
    out = fused(x)                                                                   # [..., sum of outs]
    results = []
    for p in parts:
        y = out[..., p.start:p.end]
        for hook in p._forward_hooks.values():
            changed = hook(p, (x,), y)
            y = y if changed is None else changed
        results.append(y)
    return results


def blocks_of(linear: nn.Linear) -> List[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """(weight rows, bias) blocks of at most CHUNK_ROWS outputs."""
    w, b = linear.weight, linear.bias
    return [(w[i:i + CHUNK_ROWS], None if b is None else b[i:i + CHUNK_ROWS]) for i in range(0, w.shape[0], CHUNK_ROWS)]


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The fp32 weight [out, in] of an nn.Linear, a HalfLinear or a SliceOf one (unpacked: a copy)."""
    if isinstance(module, SliceOf):
        return dense_weight(module.fused)[module.start:module.end]
    if isinstance(module, HalfLinear):
        return torch.cat([_unpacked(p) for p in module.packed])
    return module.weight


def _unpacked(block) -> torch.Tensor:
    if isinstance(block, KernelPack):
        w = block.weight
        return cpu_gemm.unpack_codes(w) if isinstance(w, cpu_gemm.CodePack) else cpu_gemm.unpack(w)
    return torch.ops.quantized.linear_unpack_fp16(block)[0].float()


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, HalfLinear, SliceOf))


FUSIONS = (("qkv", ("q_proj", "k_proj", "v_proj")), ("gate_up", ("gate_proj", "up_proj")))


def _fusable(parent: nn.Module, fused_name: str, names: Sequence[str]) -> Optional[List[nn.Linear]]:
    """The parts to pack as one matrix: the module opts in (`fused_name` attribute set to None)
    and they are linears over the same input, all with a bias or none."""
    if getattr(parent, fused_name, 0) is not None:
        return None
    parts = [getattr(parent, n, None) for n in names]
    if not all(isinstance(p, nn.Linear) for p in parts):
        return None
    if len({p.in_features for p in parts}) != 1 or len({p.bias is None for p in parts}) != 1:
        return None
    return parts


def pack_fp16(model: nn.Module, workers: Optional[int] = None, fuse: bool = True,
              codes: Optional[Dict[str, Codes]] = None) -> int:
    """Swap every nn.Linear of `model` (a CPU model, fp32 or its stored bf16/fp16) for a
    HalfLinear; returns how many.
    fbgemm's packing runs at ~45M weights a second on one core (0.5B: ~8 s), so the blocks are
    packed by `workers` threads (default: every core, since nothing else runs during a load, even
    where the `threads` setting gives inference fewer; the op releases the GIL). The
    loaded weights are freed as modules are swapped, and the freed heap is handed back.
    fuse=False packs every projection alone (FUSIONS ignored).
    `codes`: GGUF codes by parameter name ("layers.0.mlp.up_proj.weight"; gguf_import.read_exact):
    a matrix that has them is packed from them (its exact GGUF weights) where our kernel runs,
    the parts of a fused matrix only when all of them have codes of one group and offset form."""
    codes = codes if codes is not None and cpu_gemm.library() is not None else {}
    module_names = {id(m): name for name, m in model.named_modules()}
    targets = []                  # (parent, attribute, [(part name, linear)]): one matrix each
    for parent in list(model.modules()):
        fused_away = set()
        for fused_name, names in FUSIONS if fuse else ():
            parts = _fusable(parent, fused_name, names)
            if parts is not None:
                targets.append((parent, fused_name, list(zip(names, parts))))
                fused_away.update(names)
        targets += [(parent, name, [(name, child)]) for name, child in parent.named_children()
                    if isinstance(child, nn.Linear) and name not in fused_away]
    jobs = []                     # (target index, weight or weights, bias or biases, codes or None)
    for k, (_, _, parts) in enumerate(targets):
        found = _codes_for([module_names[id(p)] + ".weight" for _, p in parts], [p.weight.shape for _, p in parts], codes)
        if len(parts) == 1:
            jobs += [(k, w, b, None if found is None else [tuple(None if t is None else t[i:i + CHUNK_ROWS]
                                                                 for t in found[0])])
                     for i, (w, b) in zip(range(0, parts[0][1].out_features, CHUNK_ROWS), blocks_of(parts[0][1]))]
        else:
            bias = None if parts[0][1].bias is None else [p.bias for _, p in parts]
            jobs.append((k, [p.weight for _, p in parts], bias, found))
    cpu_gemm.library()            # built (or found) once here, not by each packing thread
    with ThreadPoolExecutor(max(1, workers or os.cpu_count() or 1)) as pool:
        packed = list(pool.map(lambda job: pack_block(job[1], job[2], job[3]), jobs))
    per_module: Dict[int, List] = {}
    for (k, _, _, _), p in zip(jobs, packed):
        per_module.setdefault(k, []).append(p)
    del jobs, packed
    for k, (parent, name, parts) in enumerate(targets):
        if len(parts) == 1:
            setattr(parent, name, HalfLinear(parts[0][1], per_module.pop(k)))
            continue
        outs = [p.out_features for _, p in parts]
        shape = nn.Linear(parts[0][1].in_features, sum(outs), bias=parts[0][1].bias is not None, device="meta")
        fused = HalfLinear(shape, per_module.pop(k))
        setattr(parent, name, fused)
        start = 0
        for (part_name, _), n in zip(parts, outs):
            setattr(parent, part_name, SliceOf(fused, start, start + n))
            start += n
    swapped = sum(len(parts) for _, _, parts in targets)
    del targets
    release_freed_memory()
    return swapped


def _codes_for(weight_names: Sequence[str], shapes: Sequence[torch.Size], codes: Dict[str, Codes]) -> Optional[List[Codes]]:
    """The codes of every one of these weights if all have them in the weights' shapes,
    packable as one matrix (one group, all with offsets or none, a multiple of 32 outputs in
    all), else None."""
    found = [codes.get(n) for n in weight_names]
    if not found or any(c is None or c[0].shape != shape for c, shape in zip(found, shapes)):
        return None
    groups = {c[0].shape[1] // c[1].shape[1] for c in found}
    if len(groups) != 1 or len({c[2] is None for c in found}) != 1 \
            or not cpu_gemm.supports(sum(c[0].shape[0] for c in found)):
        return None
    if len(found) == 1 and found[0][0].shape[0] > CHUNK_ROWS and not all(
            cpu_gemm.supports(min(CHUNK_ROWS, found[0][0].shape[0] - i)) for i in range(0, found[0][0].shape[0], CHUNK_ROWS)):
        return None
    return found


MMAP_THRESHOLD = 4 << 20     # bytes: larger blocks are mapped and unmapped on their own


def release_freed_memory() -> None:
    """glibc keeps freed heap pages mapped; malloc_trim returns them (0.5B: resident memory
    3.2 GB -> 1.9 GB after packing, against 2.7 GB with fp32 weights). Freeing the large fp32
    weights had also raised glibc's dynamic mmap threshold to its 32 MB cap, so later prefill
    buffers came from the heap and stayed resident (+7% over a 10,000-key storm); a fixed
    threshold maps them on their own again, and they go back when freed. Elsewhere a no-op."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
        libc.mallopt(-3, MMAP_THRESHOLD)          # M_MMAP_THRESHOLD (fixing it ends the dynamic one)
    except (OSError, AttributeError):
        pass
