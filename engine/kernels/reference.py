"""Torch reference kernels: the truth that every fused kernel is compared with.

Signatures are shared with cupy_ops.py. Shapes: x [..., H] hidden states; q [B, Hq, T, D],
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
    """Rotate-half RoPE on q [B,Hq,T,D] and k [B,Hk,T,D] with cos/sin [T, D]."""
    cos = cos.to(q.dtype)
    sin = sin.to(q.dtype)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.silu(gate) * up


def decision(logits: torch.Tensor):
    """Per row of logits [N, V]: (top-1 probability, argmax, entropy, top-1 minus top-2 prob).

    All float32 [N] except argmax (int64 [N]).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    top2 = logp.topk(min(2, logp.shape[-1]), dim=-1)
    conf = top2.values[:, 0].exp()
    second = top2.values[:, 1].exp() if logp.shape[-1] > 1 else torch.zeros_like(conf)
    entropy = -(logp.exp() * logp).sum(-1)
    return conf, top2.indices[:, 0], entropy, conf - second
