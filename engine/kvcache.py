"""Key/value caches as plain per-layer tuples of tensors, and the context cache that survives keystrokes.

A KV list is `[(k, v), ...]`, one pair per layer, each [1, Hkv, S, D] with RoPE already
applied to k, so entries for any set of positions can be concatenated in any order
(attention over a set does not depend on its order; masks say who sees whom).

ContextCache keeps the KV of the last block-causal context (suffix-prefix-middle order, token
causal): a new request whose context starts with the same tokens reuses them exactly and
computes only the tokens after the longest common prefix. Typing extends the prefix, which
sits at the end of the context, so a keystroke costs a few tokens, not the whole context.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

KVList = List[Tuple[torch.Tensor, torch.Tensor]]


def kv_len(kv: Optional[KVList]) -> int:
    return kv[0][0].shape[2] if kv else 0


def kv_slice(kv: KVList, start: int, stop: Optional[int] = None) -> KVList:
    return [(k[:, :, start:stop], v[:, :, start:stop]) for k, v in kv]


def kv_cat(*parts: Optional[KVList]) -> Optional[KVList]:
    parts = [p for p in parts if p and kv_len(p)]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return [(torch.cat([p[i][0] for p in parts], dim=2), torch.cat([p[i][1] for p in parts], dim=2))
            for i in range(len(parts[0]))]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ContextCache:
    """The KV of one token sequence; lookups return the exact KV of the longest shared prefix.
    With it, optionally, the final hidden state of the sequence's last position: a request for
    exactly that sequence then reads its first token through the output projection alone,
    without a pass over the last context token (causal_decode.py)."""

    def __init__(self):
        self.ids: List[int] = []
        self.kv: Optional[KVList] = None
        self.last_hidden: Optional[torch.Tensor] = None   # [H] after the final norm, or None
        self.hits = 0          # tokens served from the cache, summed over lookups
        self.misses = 0        # tokens that had to be computed

    def lookup(self, ids: Sequence[int]) -> Tuple[int, Optional[KVList]]:
        n = common_prefix(self.ids, ids) if self.kv is not None else 0
        self.hits += n
        self.misses += len(ids) - n
        return n, (kv_slice(self.kv, 0, n) if n else None)

    def store(self, ids: Sequence[int], kv: KVList, last_hidden: Optional[torch.Tensor] = None) -> None:
        if kv_len(kv) != len(ids):
            raise ValueError(f"cache of {kv_len(kv)} positions stored for {len(ids)} ids")
        self.ids = list(ids)
        self.kv = kv
        self.last_hidden = None if last_hidden is None else last_hidden.detach().clone()

    def last_state(self, ids: Sequence[int]) -> Optional[torch.Tensor]:
        """The final hidden state [H] of ids' last position, when the cache holds exactly ids."""
        if self.last_hidden is None or self.kv is None or len(ids) != len(self.ids) or list(ids) != self.ids:
            return None
        return self.last_hidden

    def clear(self) -> None:
        self.ids, self.kv, self.last_hidden = [], None, None
