"""Grouped-query attention of a few new rows over a cache: the form a decoding pass needs.

attend(q, k, v, mask) takes q [B, Hq, T, D], k/v [B, Hk, S, D] (S keys, the T new ones last),
mask bool [T, S] (True = may attend), its additive float form, or None (every row sees every key), and returns
softmax(q k^T / sqrt(D) + mask) v [B, Hq, T, D], query head j reading key head j // (Hq / Hk).

Two forms, one result up to float rounding:
- torch's fused SDPA (flash attention on a CPU), for long inputs (a prompt's prefill) and on
  GPUs: it never holds the [T, S] scores.
- for a few float32 rows on a CPU (a decoding pass: 1 to ~16), three batched products over the
  key heads: the query heads that share a key head are stacked as rows of one product
  ([B, Hk, G*T, D] x [B, Hk, D, S]), so the keys and values are read once per key head and never
  repeated. Measured on the 0.5B default's shapes (14 query heads, 2 key heads, D 64, S 600,
  2 threads): 5 rows 211 us against SDPA's 378 us a layer, 1 row 110 / 118 us.
  A row's scores are one dot product per key whatever the other rows of the pass are, and
  masked keys add exact zeros; torch's softmax and products over the key axis still group
  their sums by the key count, so a row of a T-row pass equals the one-row pass's to the last
  bits (exactly at 600 keys, not at 200, in a check here), as with the flash kernel.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

MAX_PRODUCT_ROWS = 32     # above this, SDPA's flash kernel (the scores would be [Hq, T, S])


def additive_bias(mask: Optional[torch.Tensor], dtype=torch.float32) -> Optional[torch.Tensor]:
    """bool [T, S] (True = may attend) -> the same mask as 0 / -inf to add to scores [T, S]."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def uses_products(rows: int, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether attend takes the batched-product form for `rows` queries of this dtype and device."""
    return torch.device(device).type == "cpu" and dtype == torch.float32 and rows <= MAX_PRODUCT_ROWS


def visibility_for_pass(mask: Optional[torch.Tensor], rows: int, dtype: torch.dtype,
                  device: torch.device) -> Optional[torch.Tensor]:
    """The form of a pass's mask that its layers' attend calls take: additive where they use
    products (made once a pass; adding it to the scores costs a fifth of filling them through
    the bool mask in every layer), else as given (SDPA takes either)."""
    if mask is not None and mask.dim() == 2 and uses_products(rows, dtype, device):
        return additive_bias(mask, dtype)
    return mask


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Attention of q [B, Hq, T, D] over k, v [B, Hk, S, D] under mask [T, S] (bool, or float
    added to the scores: visibility_for_pass) -> [B, Hq, T, D]. Other mask shapes ([B, 1, T, S],
    training's) go to SDPA."""
    if not uses_products(q.shape[2], q.dtype, q.device) or (mask is not None and mask.dim() != 2):
        # grouped-query attention inside SDPA: no [B,Hq,S,D] copies of the keys and values
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                              enable_gqa=k.shape[1] != q.shape[1])
    return attend_by_products(q, k, v, mask)


def attend_by_products(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       mask: Optional[torch.Tensor]) -> torch.Tensor:
    b, hq, t, d = q.shape
    hk, s = k.shape[1], k.shape[2]
    group = hq // hk
    rows = q.reshape(b, hk, group * t, d)                                  # [B, Hk, G*T, D]
    scores = torch.matmul(rows, k.transpose(2, 3)).mul_(d ** -0.5)         # [B, Hk, G*T, S]
    if mask is not None and mask.dtype == torch.bool:
        scores.view(b, hk, group, t, s).masked_fill_(~mask, float("-inf"))
    elif mask is not None:
        scores.view(b, hk, group, t, s).add_(mask)
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v).view(b, hq, t, d)                        # [B, Hq, T, D]
