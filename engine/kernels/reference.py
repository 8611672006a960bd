"""Torch reference kernels: the truth that every fused kernel is compared with.

Signatures are shared with kernels/cuda/ops.py. Shapes: x [..., H] hidden states; q [B, Hq, T, D],
k [B, Hk, T, D]; cos/sin [T, D]; logits [N, V].
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

NAME = "torch"


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(normed, new_residual): new_residual = x + residual (or x); normed = RMSNorm(new_residual).

    Accumulates in float32 and returns x's dtype, as the HF Llama/Qwen2 norms do.
    """
    if residual is not None:
        x = x + residual
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype), x


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half RoPE on q [B,Hq,T,D] and k [B,Hk,T,D] with cos/sin [T, D].

    x * cos + rotate_half(x) * sin, computed as x * cos + roll(x, D/2) * signed_sin with the
    first half of sin negated once: (-a) * s == a * (-s) exactly, so the same numbers in 4 ops
    a tensor instead of 7 (~2.4x faster on a decoding pass's few rows)."""
    cos = cos.to(q.dtype)
    sin = sin.to(q.dtype)
    half = q.shape[-1] // 2
    signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return q * cos + q.roll(half, -1) * signed_sin, k * cos + k.roll(half, -1) * signed_sin


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.silu(gate) * up


def decision(logits: torch.Tensor):
    """Per row of logits [N, V]: (top-1 probability, argmax, entropy, top-1 minus top-2 prob).

    All float32 [N] except argmax (int64 [N]). -inf logits (the mask id) have probability 0.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    top2 = logp.topk(min(2, logp.shape[-1]), dim=-1)
    conf = top2.values[:, 0].exp()
    second = top2.values[:, 1].exp() if logp.shape[-1] > 1 else torch.zeros_like(conf)
    entropy = -(logp.exp() * logp).nan_to_num_(0.0).sum(-1)      # 0 * -inf = nan -> 0: 0 log 0 = 0
    return conf, logp.argmax(-1), entropy, conf - second           # argmax: first index on ties


# ---- the decision kernel's algorithm, in torch ------------------------------------------------
# fused.cu computes `decision` in one pass by merging per-chunk statistics
#   (m = max, idx = first index of m, m2 = largest other logit,
#    s = sum exp(x - m), u = sum exp(x - m) (x - m));  -inf logits skipped.
# decision_by_chunks runs the same merge algebra on the CPU, so the algebra is tested against
# the plain definition above without a GPU; only its CUDA transcription needs one.

def chunk_stats(x: torch.Tensor):
    """Stats of each row of x [N, C] (one chunk): (m, idx, m2, s, u), each [N]."""
    finite = x != float("-inf")                                                     # [N, C]
    m, idx = x.max(-1)                                                              # first index of the max
    others = x.clone()
    others[torch.arange(x.shape[0]), idx] = float("-inf")
    m2 = others.max(-1).values if x.shape[1] > 1 else torch.full_like(m, float("-inf"))
    d = torch.where(finite, x - m[:, None], torch.zeros_like(x))
    e = torch.where(finite, d.exp(), torch.zeros_like(x))
    s, u = e.sum(-1), (e * d).sum(-1)
    empty = s == 0
    m = torch.where(empty, torch.full_like(m, float("-inf")), m)
    idx = torch.where(empty, torch.full_like(idx, 2**31 - 1), idx)
    return m, idx, m2, s, u


def merge_stats(a, b):
    """The stats of the union of two disjoint sets (vectorised over rows), as stat_merge in fused.cu."""
    am, ai, am2, as_, au = a
    bm, bi, bm2, bs, bu = b
    b_wins = (bm > am) | ((bm == am) & (bi < ai))
    hm, hi, hm2, hs, hu = (torch.where(b_wins, y, x) for x, y in zip(a, b))
    lm, _, _, ls, lu = (torch.where(b_wins, x, y) for x, y in zip(a, b))
    d = torch.where(ls > 0, lm - hm, torch.zeros_like(hm))
    e = d.exp()
    merged = (hm, hi, torch.maximum(hm2, lm), hs + ls * e, hu + e * (lu + d * ls))
    a_empty, b_empty = (as_ == 0), (bs == 0)
    return tuple(torch.where(b_empty, x, torch.where(a_empty, y, z)) for x, y, z in zip(a, b, merged))


def decision_by_chunks(logits: torch.Tensor, chunk: int = 4096):
    """`decision` computed as fused.cu does: stats per chunk of the vocabulary, merged left to right."""
    x = logits.float()
    stats = None
    for lo in range(0, x.shape[1], chunk):
        part = chunk_stats(x[:, lo:lo + chunk])
        part = (part[0], part[1] + lo, *part[2:])
        stats = part if stats is None else merge_stats(stats, part)
    m, idx, m2, s, u = stats
    conf = 1.0 / s
    entropy = (s.log() - u / s).clamp_min(0.0)
    margin = (1.0 - (m2 - m).exp()) / s
    return conf, idx, entropy, margin
