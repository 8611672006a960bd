"""Training examples in exactly the layout the block-causal decoder (engine/decoding/diffusion.py) builds.

One example = context + middle, where
  context = <fim_suffix> suffix <fim_prefix> prefix <fim_middle>     (token-causal)
  middle  = middle tokens [+ <eos>, then <pad> up to a multiple of B]  (blocks of B)
and it is laid out with the block-diffusion "two copies" trick, so one forward pass trains
every block:
  row = context | middle_clean | middle_noisy_1 | ... | middle_noisy_k
  positions: context 0..n_c-1, every middle copy n_c..n_c+n_m-1 (a noisy copy reuses the
  clean copy's positions, as the decoder puts a block where its committed tokens will be)
  attention (True = may attend), by a per-token block number and a copy number (0 = clean):
    context token i       sees context tokens <= i
    clean block b         sees the context and clean blocks <= b
    noisy block b, copy c sees the context, clean blocks < b and block b of copy c only
Several noisy copies (differently masked) of a short middle share one context: the context
dominates the cost of a row, so k copies multiply the loss tokens per slot (k = `copies`,
fewer for long middles). Copies never see each other, so each is exactly a decoder step.
Several examples are packed into one row; a document id keeps them apart. In each noisy
block every token is masked with a per-block rate t ~ U(eps, 1), at least one; the loss is
cross-entropy on the masked tokens (eos and pad included, so the model learns where a
middle stops and that pad follows eos).

Auxiliary next-token targets (`ar_fraction` > 0): the context is token-causal, so the hidden
state of context token i has seen exactly tokens <= i and can be asked for token i + 1 (the
<fim_middle> slot for the first middle token) at no extra forward cost. Only ~1 slot in 5 of a
row carries a diffusion target; a sampled fraction of the context positions adds dense
supervision for the shared body and head. The decoder never reads these predictions: a mask
slot's input embedding tells the model which of the two questions a position is asked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from engine.train.embedded.tokenizer_train import SPECIAL_IDS


@dataclass(frozen=True)
class Example:
    context: Tuple[int, ...]     # <fim_suffix> suffix <fim_prefix> prefix <fim_middle>
    middle: Tuple[int, ...]      # a multiple of block_size tokens (eos/pad included)
    copies: int = 1              # noisy copies of the middle

    @property
    def length(self) -> int:
        """Row slots it takes: context + the clean middle + its noisy copies."""
        return len(self.context) + (1 + self.copies) * len(self.middle)


def copies_for(n_middle: int, max_copies: int = 8, noisy_budget: int = 192) -> int:
    """How many noisy copies: up to max_copies while they fit in noisy_budget slots."""
    return max(1, min(max_copies, noisy_budget // max(1, n_middle)))


def make_example(prefix: Sequence[int], suffix: Sequence[int], middle: Sequence[int], ends: bool,
                 block_size: int, ids: dict = SPECIAL_IDS, max_copies: int = 8) -> Example:
    """ends=True appends <eos> and pads to a multiple of B; ends=False (a continuation cut by the
    budget) cuts the middle down to a whole number of blocks instead."""
    context = (ids["fim_suffix"], *suffix, ids["fim_prefix"], *prefix, ids["fim_middle"])
    mid = list(middle)
    if ends:
        mid.append(ids["eos"])
        mid += [ids["pad"]] * (-len(mid) % block_size)
    else:
        mid = mid[: len(mid) - len(mid) % block_size]
    return Example(tuple(context), tuple(mid), copies_for(len(mid), max_copies))


@dataclass
class Batch:
    ids: torch.Tensor        # [R, C] int64, noisy copies already masked
    positions: torch.Tensor  # [R, C] int64
    mask: torch.Tensor       # [R, 1, C, C] bool, True = may attend
    loss_rows: torch.Tensor  # [N] row index of each masked (loss) token
    loss_cols: torch.Tensor  # [N] column index
    targets: torch.Tensor    # [N] the clean token there
    rates: torch.Tensor      # [N] the masking rate t of its block
    tokens: int              # real (non-padding) slots in the batch
    ar_rows: torch.Tensor = torch.empty(0, dtype=torch.long)     # [M] next-token targets: row,
    ar_cols: torch.Tensor = torch.empty(0, dtype=torch.long)     # [M] the context slot predicting,
    ar_targets: torch.Tensor = torch.empty(0, dtype=torch.long)  # [M] the token after it


def row_layout(examples: Sequence[Example], block_size: int, capacity: int):
    """Per slot of one packed row: (ids, positions, doc, blk, copy, middle_index) lists.

    copy is 0 for context and clean middle, c for the c-th noisy copy; middle_index is the index
    into the example's middle for middle slots, -1 for context. Unused slots are padding:
    doc -1, blk 0, copy 0, so they only see each other.
    """
    ids, pos, doc, blk, noisy, mid_ix = [], [], [], [], [], []
    for d, ex in enumerate(examples):
        n_c, n_m, k = len(ex.context), len(ex.middle), 1 + ex.copies
        ids += list(ex.context) + list(ex.middle) * k
        pos += list(range(n_c)) + list(range(n_c, n_c + n_m)) * k
        doc += [d] * (n_c + k * n_m)
        middle_blocks = [n_c + i // block_size for i in range(n_m)]
        blk += list(range(n_c)) + middle_blocks * k
        noisy += [0] * n_c + [c for c in range(k) for _ in range(n_m)]
        mid_ix += [-1] * n_c + list(range(n_m)) * k
    if len(ids) > capacity:
        raise ValueError(f"row of {len(ids)} slots exceeds capacity {capacity}")
    pad = capacity - len(ids)
    ids += [SPECIAL_IDS["pad"]] * pad
    pos += [0] * pad
    doc += [-1] * pad
    blk += [0] * pad
    noisy += [0] * pad
    mid_ix += [-1] * pad
    return ids, pos, doc, blk, noisy, mid_ix


def attention_mask(doc: torch.Tensor, blk: torch.Tensor, copy: torch.Tensor) -> torch.Tensor:
    """[C] doc/blk/copy -> bool [C, C] (query, key) following the module docstring's rules."""
    q_blk, k_blk = blk[:, None], blk[None, :]
    q_copy, k_copy = copy[:, None], copy[None, :]
    same_doc = doc[:, None] == doc[None, :]
    clean_key = (k_copy == 0) & ((k_blk < q_blk) | ((k_blk == q_blk) & (q_copy == 0)))
    noisy_key = (k_copy != 0) & (q_copy == k_copy) & (k_blk == q_blk)
    return same_doc & (clean_key | noisy_key)


def next_token_slots(doc: torch.Tensor, mid_ix: torch.Tensor, copy: torch.Tensor) -> torch.Tensor:
    """[C] layout -> slots i of context tokens whose next slot i + 1 holds the token that follows
    them in the example (more context, or the clean first middle token after <fim_middle>)."""
    is_ctx = (doc >= 0) & (mid_ix < 0)                                     # [C]
    nxt_ok = (doc[1:] == doc[:-1]) & ((mid_ix[1:] < 0) | ((mid_ix[1:] == 0) & (copy[1:] == 0)))
    return (is_ctx[:-1] & nxt_ok).nonzero().flatten()


def make_batch(rows: Sequence[Sequence[Example]], block_size: int, capacity: int, mask_id: int,
               generator: torch.Generator, eps: float = 1e-3, ar_fraction: float = 0.0) -> Batch:
    """Pack rows of examples, mask each noisy block at its own rate; see the module docstring."""
    all_ids, all_pos, masks = [], [], []
    loss_rows, loss_cols, targets, rates = [], [], [], []
    ar_rows, ar_cols, ar_targets = [], [], []
    tokens = 0
    for r, row in enumerate(rows):
        ids, pos, doc, blk, copy, mid_ix = row_layout(row, block_size, capacity)
        ids_t = torch.tensor(ids)
        blk_t, copy_t, doc_t = torch.tensor(blk), torch.tensor(copy), torch.tensor(doc)
        masks.append(attention_mask(doc_t, blk_t, copy_t))
        tokens += sum(1 for d in doc if d >= 0)
        if ar_fraction > 0:
            slots = next_token_slots(doc_t, torch.tensor(mid_ix), copy_t)         # [n_ctx]
            slots = slots[torch.rand(slots.numel(), generator=generator) < ar_fraction]
            ar_rows.append(torch.full((slots.numel(),), r, dtype=torch.long))
            ar_cols.append(slots)
            ar_targets.append(ids_t[slots + 1].clone())                            # before masking
        cols = copy_t.nonzero().flatten()                                   # [n_noisy]
        if cols.numel():
            groups = (blk_t[cols] * 64 + copy_t[cols]) * 4096 + doc_t[cols]  # one id per (doc, copy, block)
            uniq, which = torch.unique(groups, return_inverse=True)
            t = eps + (1 - eps) * torch.rand(len(uniq), generator=generator)  # [n_blocks]
            u = torch.rand(cols.numel(), generator=generator)
            hit = u < t[which]
            # at least one masked token per block: force the one with the smallest draw
            n_hit = torch.zeros(len(uniq)).index_add_(0, which, hit.float())              # [n_blocks]
            u_min = torch.full((len(uniq),), 2.0).scatter_reduce(0, which, u, "amin")     # [n_blocks]
            hit |= (n_hit[which] == 0) & (u == u_min[which])
            chosen = cols[hit]
            targets.append(ids_t[chosen].clone())
            rates.append(t[which[hit]])
            ids_t[chosen] = mask_id
            loss_rows.append(torch.full((chosen.numel(),), r, dtype=torch.long))
            loss_cols.append(chosen)
        all_ids.append(ids_t)
        all_pos.append(torch.tensor(pos))
    cat = (lambda xs, dt: torch.cat(xs) if xs else torch.empty(0, dtype=dt))
    return Batch(ids=torch.stack(all_ids), positions=torch.stack(all_pos), mask=torch.stack(masks)[:, None],
                 loss_rows=cat(loss_rows, torch.long), loss_cols=cat(loss_cols, torch.long),
                 targets=cat(targets, torch.long), rates=cat(rates, torch.float32), tokens=tokens,
                 ar_rows=cat(ar_rows, torch.long), ar_cols=cat(ar_cols, torch.long),
                 ar_targets=cat(ar_targets, torch.long))


def pack_rows(examples: Sequence[Example], n_rows: int, capacity: int) -> Tuple[List[List[Example]], List[Example]]:
    """First-fit packing into n_rows rows of `capacity` slots; returns (rows, leftovers)."""
    rows: List[List[Example]] = [[] for _ in range(n_rows)]
    used = [0] * n_rows
    left: List[Example] = []
    for ex in examples:
        for r in range(n_rows):
            if used[r] + ex.length <= capacity:
                rows[r].append(ex)
                used[r] += ex.length
                break
        else:
            left.append(ex)
    return [row for row in rows if row], left


def truncate_prefix(tokens: Sequence[int], budget: int) -> List[int]:
    return list(tokens[max(0, len(tokens) - budget):]) if budget > 0 else []


def truncate_suffix(tokens: Sequence[int], budget: int) -> List[int]:
    return list(tokens[:budget]) if budget > 0 else []


def fit_middle_lines(middle: str, encode, max_tokens: int) -> Optional[Tuple[str, List[int]]]:
    """The longest run of whole leading lines of `middle` within max_tokens (None if none fits)."""
    ids = encode(middle)
    if len(ids) <= max_tokens:
        return middle, ids
    lines = middle.splitlines(keepends=True)
    best = None
    text = ""
    for line in lines:
        text += line
        if len(text) > max_tokens * 8:
            break
        ids = encode(text)
        if len(ids) > max_tokens:
            break
        best = (text, ids)
    return best
