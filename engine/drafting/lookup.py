"""Prompt lookup, a Proposer (proposer.py) that needs no model.

A draft never changes the text, only how many tokens one forward pass commits: the verifier
keeps a draft only when it equals the model's own argmax, so a bad guess costs a few wasted
rows of one pass and nothing else.

PromptLookup: the longest recent n-gram (n = max_ngram .. min_ngram) that
ends the text the suggestion continues is looked up in the context and the committed tokens;
the tokens that followed its most recent earlier occurrence are the drafts.

The text the suggestion continues is `lead` + committed tokens. In a FIM prompt
(prefix-suffix-middle) `lead` is the prefix: the middle continues the code before the cursor,
not the `<|fim_middle|>` token that ends the prompt, so the very first pass can already draft
from the last tokens before the cursor. The context itself (prefix, suffix) is what is
searched; the suffix sits after the prefix there, so a match in it is preferred: code after
the cursor often holds the next tokens verbatim (a closing line, a repeated call, a name
defined below). A draft stops before any `barrier` token (the FIM control tokens): those
never belong to the middle. Further `sources` (other open files, the previous suggestion)
are searched after the context. The index maps each n-gram to the positions where it ends
and grows by the committed tokens, so a proposal costs a few dictionary lookups.

Draft length follows the evidence, because on a CPU rows past ~5 per pass cost time (1-5
rows cost about one row, 9 rows about two: `scripts/pass_cost.py`): a match of 1 token
drafts 3, of 2 or 3 tokens 4, of >= 4 tokens `max_draft`. Measured on bench decode's
standard-library lines (scripts/lookup_sim.py replays the decoder on recorded greedy
outputs), a pass whose drafts were all rejected is no reason to stop drafting short matches
next pass: that back-off cost more passes than the rows it saved.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from engine.drafting.proposer import LONG_MATCH, SHORT_MATCH, PassOutcome, Proposal

DRAFTS_FOR_MATCH = (3, 4, 4)      # drafts after a match of 1, 2, 3 tokens; longer: max_draft


class PromptLookup:
    trained, slots, needs_hidden = False, 0, False

    def __init__(self, max_draft: int = 8, max_ngram: int = 4, min_ngram: int = 1,
                 sources: Sequence[Sequence[int]] = ()):
        self.max_draft, self.max_ngram, self.min_ngram = max_draft, max_ngram, min_ngram
        self.depth = max_draft
        self.sources = [list(s) for s in sources if s]
        self.last_match = 0          # n-gram length behind the last proposal (0: none)

    def length_for(self, n: int) -> int:
        """Drafts allowed after a match of n tokens."""
        return DRAFTS_FOR_MATCH[n - 1] if n <= len(DRAFTS_FOR_MATCH) else self.max_draft

    # ---- the Proposer protocol ------------------------------------------------------------
    def start(self, context: Sequence[int], lead: Optional[Sequence[int]] = None,
              barriers: Sequence[int] = ()) -> None:
        """context: the prompt's tokens (searched); lead: the tokens the suggestion continues
        (default: the context itself); barriers: tokens a draft never includes."""
        self.seq: List[int] = list(context)
        self.index: Dict[Tuple[int, ...], List[int]] = {}
        for end in range(len(self.seq)):
            self._add(self.index, self.seq, end)
        self.n_context = len(self.seq)
        self.lead = list(self.seq if lead is None else lead)
        self.barriers = frozenset(int(b) for b in barriers)
        self.extra = []
        for src in self.sources:
            idx: Dict[Tuple[int, ...], List[int]] = {}
            for end in range(len(src)):
                self._add(idx, src, end)
            self.extra.append((src, idx))

    def propose(self, committed: Sequence[int], room: int) -> Proposal:
        """The chain of draft() as a Proposal: a match of >= 3 tokens leads (LONG_MATCH)."""
        chain = self.draft(committed, room)
        return Proposal([chain], LONG_MATCH if self.last_match >= 3 else SHORT_MATCH)

    def observe(self, outcome: PassOutcome) -> None:
        """Nothing to learn: the committed tokens are indexed at the next proposal."""

    def draft(self, committed: Sequence[int], room: int) -> List[int]:
        """Drafts to follow `committed` (the span so far), at most min(room, max_draft)."""
        self._sync(committed)
        limit = min(room, self.max_draft)
        if limit <= 0:
            return []
        seq = self.seq
        tail = self.lead[-self.max_ngram:] + seq[self.n_context:]
        self.last_match = 0
        for n in range(min(self.max_ngram, len(tail)), self.min_ngram - 1, -1):
            allowed = min(limit, self.length_for(n))
            key = tuple(tail[len(tail) - n:])
            for end in reversed(self.index.get(key, ())):
                if end < len(seq) - 1:                      # an earlier occurrence, not the tail itself
                    draft = self._until_barrier(seq, end + 1, allowed)
                    if draft:
                        self.last_match = n
                        return draft
            for src, idx in self.extra:
                for end in reversed(idx.get(key, ())):
                    draft = self._until_barrier(src, end + 1, allowed)
                    if draft:
                        self.last_match = n
                        return draft
        return []

    # ---- the index -------------------------------------------------------------------------
    def _until_barrier(self, seq: Sequence[int], start: int, n: int) -> List[int]:
        out: List[int] = []
        for tok in seq[start:start + n]:
            if tok in self.barriers:
                break
            out.append(tok)
        return out

    def _add(self, index: Dict[Tuple[int, ...], List[int]], seq: Sequence[int], end: int) -> None:
        """Index every n-gram of seq that ends at position `end`."""
        for n in range(self.min_ngram, self.max_ngram + 1):
            if end + 1 >= n:
                index.setdefault(tuple(seq[end + 1 - n:end + 1]), []).append(end)

    def _sync(self, committed: Sequence[int]) -> None:
        """Append the committed tokens not yet indexed (the span only grows within a request)."""
        have = len(self.seq) - self.n_context
        for tok in committed[have:]:
            self.seq.append(int(tok))
            self._add(self.index, self.seq, len(self.seq) - 1)
