"""The trained drafters as Proposers (proposer.py): a draft head and trained mask slots.

HeadDrafts: after each pass the head reads the final hidden state of the row that gave the
bonus token and that token, and chains up to `depth` guesses of the tokens after it (cut at its
probability thresholds). They are the next pass's drafts whether or not this pass's drafts
were accepted: the head's input is the exact state after the committed tokens. With `as_tree`
(greedy, asked for) a DraftHead proposes a small tree of its likeliest guesses instead. An
attention head also reads the rows it keeps of the context and the committed tokens (`rows`,
a HeadRows the verifier extends pass by pass).

MaskSlotDrafts: `slots` mask inputs follow the pass's drafts, run through the adapter, and the
output at the i-th guesses the token after the bonus token's i-th successor:

    ... | t0 d1 .. dj m1 .. mK        rows >= 1 + j run the adapter, earlier rows the frozen model

When every draft of the pass is accepted those guesses are the next pass's drafts (a rejected
draft voids them, they were conditioned on it), cut at the first guess below GUESS_MIN_PROB.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from engine.drafting.proposer import TRAINED, PassOutcome, Proposal

GUESS_MIN_PROB = 0.3     # mask guesses are drafted while their probability stays above this


def confident_guesses(mask_rows: torch.Tensor, mask_id: int, min_prob: float = GUESS_MIN_PROB) -> List[int]:
    """mask_rows [K, V] -> the argmax guesses up to the first one whose probability is below
    `min_prob` (the first guess is always kept). One wrong draft voids the mask guesses of its
    pass, so a short confident run beats a long doubtful one."""
    rows = mask_rows.float()
    rows[:, mask_id] = float("-inf")
    probs, ids = torch.softmax(rows, dim=-1).max(dim=-1)
    out = [int(ids[0])] if len(ids) else []
    for p, i in zip(probs[1:].tolist(), ids[1:].tolist()):
        if p < min_prob:
            break
        out.append(int(i))
    return out


class HeadDrafts:
    """A DraftHead or AttentionHead bound to the verifier's model, as a Proposer."""

    trained, slots, needs_hidden = True, 0, True

    def __init__(self, head, depth: int, banned: Sequence[int], rows=None, as_tree: bool = False,
                 tree_nodes: int = 0):
        self.head, self.depth, self.banned = head, depth, banned
        self.rows = rows                      # HeadRows (attention head) or None
        self.as_tree, self.tree_nodes = as_tree and hasattr(head, "propose_tree"), tree_nodes
        self.after: Optional[tuple] = None    # (hidden [H], bonus token) of the last pass

    def start(self, context: Sequence[int], lead: Sequence[int], barriers: Sequence[int]) -> None:
        self.context = list(context)

    def observe(self, outcome: PassOutcome) -> None:
        self.after = (outcome.hidden, outcome.chosen[-1]) if outcome.hidden is not None else None

    def propose(self, committed: Sequence[int], room: int) -> Proposal:
        k = min(self.depth, room)
        if self.after is None or k <= 0:
            return Proposal([], TRAINED)
        hidden, token = self.after
        if self.rows is not None:             # the head's rows up to the last one (a warm start has the context's only)
            if len(self.rows.cache) < len(self.rows) - 1:      # after a pass the verifier synced them already
                self.rows.sync(self.head, self.context + list(committed), len(self.rows) - 1)
            return Proposal([self.head.propose(self.rows.cache, hidden, token, k, banned=self.banned)], TRAINED)
        if self.as_tree:
            return Proposal(self.head.propose_tree(hidden, token, k, self.tree_nodes, banned=self.banned), TRAINED)
        return Proposal([self.head.propose(hidden, token, k, banned=self.banned)], TRAINED)


class MaskSlotDrafts:
    """A MaskAdapter attached to the verifier's model, as a Proposer with `slots` mask inputs."""

    trained, needs_hidden = True, False

    def __init__(self, adapter, slots: int, mask_id: int):
        self.adapter, self.slots, self.mask_id = adapter, slots, mask_id
        self.depth = slots
        self.guesses: List[List[int]] = []

    def start(self, context: Sequence[int], lead: Sequence[int], barriers: Sequence[int]) -> None:
        self.guesses = []

    def observe(self, outcome: PassOutcome) -> None:
        every_draft_kept = outcome.accepted == outcome.drafted
        rows = outcome.slot_rows
        self.guesses = [confident_guesses(rows, self.mask_id)] if rows is not None and len(rows) and every_draft_kept else []

    def propose(self, committed: Sequence[int], room: int) -> Proposal:
        return Proposal(self.guesses, TRAINED)

    def rows_from(self, start: int):
        """Context manager: input rows >= start run through the adapter during the pass."""
        return self.adapter.rows_from(start)
