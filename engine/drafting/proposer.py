"""One interface for every source of drafts, and how a pass's drafts are chosen among them.

The verify loop (decoding/verify.py) knows no drafter by name. Before each pass it asks every
`Proposer` for chains of drafts after the committed tokens; after the pass it tells each what
the pass showed. A proposer is one of

    PromptLookup   (lookup.py)   copies what followed the latest n-gram seen in the prompt
    HeadDrafts     (trained.py)  a draft head or attention head chained from the last state
    MaskSlotDrafts (trained.py)  trained mask slots appended to the pass (`slots` > 0)

The protocol, per request:

    start(context, lead, barriers)     the prompt's tokens, the tokens the suggestion continues,
                                       tokens a draft never holds (the FIM markers)
    propose(committed, room)           -> Proposal: chains (best first), each <= room tokens
    observe(outcome)                   after every pass (and after the warm first token)

`arrange` lays out the proposals of a pass as the chains the verifier merges into one DraftTree
(decoding/tree.py). Without a tree only the first
chain of the strongest proposal is verified: a lookup match of >= 3 tokens (LONG_MATCH, it
copies long runs verbatim), else the trained drafter's (TRAINED), else a shorter match
(SHORT_MATCH). With a tree (greedy, no mask slots) every chain of every source joins it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Protocol, Sequence

import torch

LONG_MATCH, TRAINED, SHORT_MATCH = 2, 1, 0     # Proposal.rank: the strongest proposal leads


@dataclass
class Proposal:
    chains: List[List[int]] = field(default_factory=list)   # drafts after the committed tokens, best first
    rank: int = SHORT_MATCH                                  # how strongly its first chain should lead


@dataclass
class PassOutcome:
    """What one verified pass (or the warm first token) showed the proposers."""

    committed: List[int]              # the span's committed tokens after it
    chosen: List[int]                 # its committed tokens: the accepted drafts, then the bonus token
    accepted: int                     # drafts accepted
    drafted: int                      # drafts verified
    hidden: Optional[torch.Tensor] = None     # [H] final state of the row that gave the bonus token
    slot_rows: Optional[torch.Tensor] = None  # [K, V] logits at the pass's mask slots, or None


class Proposer(Protocol):
    trained: bool      # its drafts are the trained drafter's (DraftStats.trained_*)
    slots: int         # mask inputs the pass appends after the drafts for it (0: none)
    needs_hidden: bool # observe needs PassOutcome.hidden
    depth: int         # the most drafts one of its chains holds

    def start(self, context: Sequence[int], lead: Sequence[int], barriers: Sequence[int]) -> None: ...

    def propose(self, committed: Sequence[int], room: int) -> Proposal: ...

    def observe(self, outcome: PassOutcome) -> None: ...


@dataclass
class Arranged:
    chains: List[List[int]]    # the drafts to verify (none empty), first chain first
    trained_chains: List[int]  # indexes into chains of the trained drafter's chains

    @property
    def first(self) -> List[int]:
        """The first chain: what an update shows as the draft."""
        return self.chains[0] if self.chains else []


def through_first_newline(drafts: List[int], newline_ids) -> List[int]:
    """The drafts up to and including the first one whose text holds a newline: a line
    completion's caller stops there, so rows after it would be verified for nothing."""
    for k, d in enumerate(drafts):
        if d in newline_ids:
            return drafts[:k + 1]
    return drafts


def arrange(proposals: Sequence[Proposal], trained: Sequence[bool], room: int, as_tree: bool,
            newline_ids=None) -> Arranged:
    """The pass's chains of drafts from each proposer's proposal (trained[i]: proposer i is the
    trained drafter). The strongest non-empty proposal's chains come first (ties: in the given
    order); without `as_tree` only its first chain is kept. With `newline_ids` (a line
    completion) each chain ends at its first newline token."""
    order = sorted(range(len(proposals)),
                   key=lambda i: (not any(proposals[i].chains), -proposals[i].rank))
    chains: List[List[int]] = []
    owner: List[int] = []
    for i in order:
        for c in proposals[i].chains:
            if c and room > 0:
                chains.append(list(c[:room]))
                owner.append(i)
    if not as_tree:
        chains, owner = chains[:1], owner[:1]
    if newline_ids is not None:
        chains = [through_first_newline(c, newline_ids) for c in chains]
    return Arranged(chains, [k for k, i in enumerate(owner) if trained[i]])
