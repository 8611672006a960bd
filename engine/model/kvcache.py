"""Key/value caches as plain per-layer tuples of tensors, and the context cache that survives keystrokes.

A KV list is `[(k, v), ...]`, one pair per layer, each [1, Hkv, S, D] with RoPE already
applied to k, so entries for any set of positions can be concatenated in any order
(attention over a set does not depend on its order; masks say who sees whom).

KVBuffer holds one decode's KV in preallocated per-layer buffers [1, Hkv, capacity, D]: a pass
writes its T new keys and values after the `length` valid positions and attends over a view of
the first length + T (model.Attention, through LayerKV.extend), and the decoder then advances
`length` by the rows it kept; a rejected draft's entries are left past `length` and overwritten
by the next pass. The tuple form concatenates the cache with every pass's rows twice a layer
(in attention and after the pass), a copy of the whole cache each time.

ContextCache keeps the KV of the last block-causal context (suffix-prefix-middle order, token
causal): a new request whose context starts with the same tokens reuses them exactly and
computes only the tokens after the longest common prefix. Typing extends the prefix, which
sits at the end of the context, so a keystroke costs a few tokens, not the whole context.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

KVList = List[Tuple[torch.Tensor, torch.Tensor]]


def kv_len(kv) -> int:
    if isinstance(kv, KVBuffer):
        return kv.length
    return kv[0][0].shape[2] if kv else 0


class LayerKV:
    """One layer's slots of a KVBuffer: what model.Attention takes as `past` for it."""
    __slots__ = ("buffer", "index")

    def __init__(self, buffer: "KVBuffer", index: int):
        self.buffer, self.index = buffer, index

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [1, Hkv, T, D] at positions length.. and return the keys and values of all
        length + T positions [1, Hkv, length + T, D] (views of the buffer)."""
        n, t = self.buffer.length, k.shape[2]
        keys, values = self.buffer.k[self.index], self.buffer.v[self.index]
        if n + t > keys.shape[2]:
            raise ValueError(f"KV buffer of {keys.shape[2]} positions written to {n + t}: reserve first")
        keys[:, :, n:n + t].copy_(k)
        values[:, :, n:n + t].copy_(v)
        return keys[:, :, :n + t], values[:, :, :n + t]


class KVBuffer:
    """Per-layer key and value buffers [1, Hkv, capacity, D] of which the first `length`
    positions are valid. Indexing gives each layer's LayerKV (model.hidden's `past`)."""

    SLACK = 256                 # positions added past what a reserve asks for, so it reallocates rarely

    def __init__(self, k: List[torch.Tensor], v: List[torch.Tensor], length: int = 0):
        self.k, self.v, self.length = k, v, length
        self.layers = [LayerKV(self, i) for i in range(len(k))]

    @classmethod
    def empty(cls, shape: Tuple[int, int, int, torch.dtype, torch.device], capacity: int) -> "KVBuffer":
        """A buffer of `capacity` positions, none valid; shape = (layers, Hkv, D, dtype, device)."""
        layers, hkv, d, dtype, device = shape
        return cls([torch.empty(1, hkv, capacity, d, dtype=dtype, device=device) for _ in range(layers)],
                   [torch.empty(1, hkv, capacity, d, dtype=dtype, device=device) for _ in range(layers)])

    @classmethod
    def holding(cls, kv: Optional[KVList], capacity: int, shape=None) -> "KVBuffer":
        """A buffer of at least `capacity` positions holding a copy of kv (None: empty, and
        then `shape` gives its layers, as for empty(); else kv does)."""
        if kv:
            shape = (len(kv), kv[0][0].shape[1], kv[0][0].shape[3], kv[0][0].dtype, kv[0][0].device)
        buffer = cls.empty(shape, max(capacity, kv_len(kv)))
        for (k, v), (dst_k, dst_v) in zip(kv or [], zip(buffer.k, buffer.v)):
            dst_k[:, :, :k.shape[2]].copy_(k)
            dst_v[:, :, :v.shape[2]].copy_(v)
        buffer.length = kv_len(kv)
        return buffer

    @property
    def shape(self) -> Tuple[int, int, int, torch.dtype, torch.device]:
        k = self.k[0]
        return len(self.k), k.shape[1], k.shape[3], k.dtype, k.device

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> LayerKV:
        return self.layers[i]

    def reserve(self, positions: int) -> None:
        """Make room for `positions` in all; the valid ones are copied when it reallocates
        (views handed out earlier keep the old storage)."""
        if positions <= self.capacity:
            return
        grown = KVBuffer.holding(self.prefix(self.length), positions + self.SLACK, self.shape)
        self.k, self.v = grown.k, grown.v

    def keep(self, start: int, offsets: Sequence[int]) -> None:
        """Move the entries at positions start + offsets[j] to start + j (offsets ascending, each
        >= j: the accepted nodes of a draft tree, decoding/tree.py), in every layer; entries
        already in place are not copied."""
        moved = [(start + j, start + o) for j, o in enumerate(offsets) if o != j]
        if not moved:
            return
        dst = torch.tensor([d for d, _ in moved], device=self.k[0].device)
        src = torch.tensor([s for _, s in moved], device=self.k[0].device)
        for k, v in zip(self.k, self.v):
            k[:, :, dst] = k[:, :, src]
            v[:, :, dst] = v[:, :, src]

    def prefix(self, n: int) -> KVList:
        """The KV of positions 0..n-1 as views [1, Hkv, n, D]."""
        return [(k[:, :, :n], v[:, :, :n]) for k, v in zip(self.k, self.v)]


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
    without a pass over the last context token (decoding/verify.py). And the rows an attention
    draft head keeps of the sequence (`rows`, attention_head.HeadRows: its positions' final
    states and the head's keys), cut with the KV to the shared prefix."""

    def __init__(self):
        self.ids: List[int] = []
        self.kv: Optional[KVList] = None
        self.buffer: Optional[KVBuffer] = None          # the buffer whose prefix self.kv views, if one
        self.last_hidden: Optional[torch.Tensor] = None   # [H] after the final norm, or None
        self.rows = None                                  # attention_head.HeadRows of ids' positions, or None
        self.approximate_from: Optional[int] = None       # positions from here hold a shifted suffix's KV
        self.shift_debt = 0                               # tokens typed before them since they were exact
        self.hits = 0          # tokens served from the cache, summed over lookups
        self.misses = 0        # tokens that had to be computed
        self.computed = 0      # context tokens whose KV the decoders computed (prefill and first passes)

    def shared(self, ids: Sequence[int], approximate_ok: bool = False) -> int:
        """How many leading tokens of ids the cache holds usable KV for: approximate entries (a
        shifted suffix, decoding/suffix_reuse.py) count only with `approximate_ok`."""
        n = common_prefix(self.ids, ids) if self.kv is not None else 0
        if self.approximate_from is not None and not approximate_ok:
            n = min(n, self.approximate_from)
        return n

    def lookup(self, ids: Sequence[int], approximate_ok: bool = False) -> Tuple[int, Optional[KVList]]:
        """(n, the KV of the longest usable shared prefix, `shared`)."""
        n = self.shared(ids, approximate_ok)
        self.hits += n
        self.misses += len(ids) - n
        return n, (kv_slice(self.kv, 0, n) if n else None)

    def take(self, ids: Sequence[int], capacity: int, shape, limit: Optional[int] = None,
             approximate_ok: bool = False) -> Tuple[int, KVBuffer]:
        """(n, buffer): a KVBuffer of at least `capacity` positions whose first n = the longest
        prefix shared with ids hold their exact KV, for a decode to extend (writing past n).
        The cache's own buffer is shared when it holds the KV (no copy): the cache then keeps
        only those n positions, which the decode never writes (it writes from n on; one decode
        at a time, Engine's lock); else they are copied into a new buffer.
        `shape` = (layers, Hkv, D, dtype, device) for an empty one; n <= `limit` when given.
        The rows kept for an attention head are cut to n with the rest; approximate entries are
        shared only with `approximate_ok` (lookup)."""
        n, kv = self.lookup(ids if limit is None else ids[:limit], approximate_ok)
        if n and self.buffer is not None:
            if n < len(self.ids):                          # the rest is overwritten from now on
                self.ids, self.kv, self.last_hidden = self.ids[:n], kv_slice(self.kv, 0, n), None
                self.rows = self.rows.prefix(n) if self.rows is not None else None
                self._exact_through(n)
            self.buffer.length = n
            self.buffer.reserve(capacity)
            return n, self.buffer
        return n, KVBuffer.holding(kv, capacity + KVBuffer.SLACK, shape)

    def store_buffer(self, ids: Sequence[int], buffer: KVBuffer,
                     last_hidden: Optional[torch.Tensor] = None, rows=None) -> None:
        """Keep the KV of ids = the first len(ids) positions of buffer, as views (take() shares
        the buffer with the next decode)."""
        self.store(ids, buffer.prefix(len(ids)), last_hidden, rows)
        self.buffer = buffer

    def store(self, ids: Sequence[int], kv: KVList, last_hidden: Optional[torch.Tensor] = None, rows=None) -> None:
        if kv_len(kv) != len(ids):
            raise ValueError(f"cache of {kv_len(kv)} positions stored for {len(ids)} ids")
        if rows is not None and len(rows) < len(ids):
            raise ValueError(f"head rows of {len(rows)} positions stored for {len(ids)} ids")
        self.ids = list(ids)
        self.kv = kv
        self.buffer = None
        self._exact_through(len(ids))
        self.last_hidden = None if last_hidden is None else last_hidden.detach().clone()
        self.rows = None if rows is None else rows.prefix(len(ids))

    def rows_for(self, owner, ids: Sequence[int]):
        """(the kept head rows of `owner`, how many leading positions of ids they cover); (None, 0)
        when the rows are another head's or none were kept."""
        if self.rows is None or self.rows.owner is not owner or self.kv is None:
            return None, 0
        return self.rows, min(len(self.rows), common_prefix(self.ids, ids))

    def last_state(self, ids: Sequence[int], approximate_ok: bool = False) -> Optional[torch.Tensor]:
        """The final hidden state [H] of ids' last position, when the cache holds exactly ids
        (and, where its KV is partly approximate, `approximate_ok`)."""
        if self.last_hidden is None or self.kv is None or len(ids) != len(self.ids) or list(ids) != self.ids \
                or (self.approximate_from is not None and not approximate_ok):
            return None
        return self.last_hidden

    def mark_approximate(self, start: int, debt: int) -> None:
        """Positions from `start` hold a shifted suffix's KV, `debt` tokens typed since it was exact."""
        self.approximate_from, self.shift_debt = start, debt

    def _exact_through(self, n: int) -> None:
        """Only the first n positions are kept: approximate ones past them are gone."""
        if self.approximate_from is not None and n <= self.approximate_from:
            self.approximate_from, self.shift_debt = None, 0

    def clear(self) -> None:
        self.ids, self.kv, self.last_hidden, self.buffer, self.rows = [], None, None, None, None
        self.approximate_from, self.shift_debt = None, 0

    def forget_last_state(self) -> None:
        """Keep the keys/values, drop the prompt's last state: the next request for the same
        prompt computes its last token again (llama.cpp's warm state; `bench decode` warm=)."""
        self.last_hidden = None
