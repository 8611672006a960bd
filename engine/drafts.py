"""Where draft tokens come from: guesses the verifier (causal_decode.py) confirms or replaces.

A draft never changes the text, only how many tokens one forward pass commits: the verifier
keeps a draft only when it equals the model's own argmax, so a bad guess costs a few wasted
rows of one pass and nothing else.

LookupDrafter (prompt lookup): the longest recent n-gram (n = max_ngram .. min_ngram) that
ends the text so far (context + committed tokens) is looked up earlier in that same text;
the tokens that followed its most recent earlier occurrence are the drafts. In a FIM prompt
(prefix-suffix-middle) the suffix sits after the prefix, so a match there is preferred:
code after the cursor often holds the next tokens verbatim (a closing line, a repeated call,
a name defined below). Further `sources` (other open files, the previous suggestion) are
searched after the text itself. The index maps each n-gram to the positions where it ends
and grows by the committed tokens, so a proposal costs a few dictionary lookups.

Draft length follows the evidence, because on a CPU every extra row of a pass costs time: a
match of >= 3 tokens may draft `max_draft` tokens, a 2-token match 4, a 1-token match 2; after
a pass whose drafts were all rejected, only >= 3-token matches draft until one is accepted.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple


class LookupDrafter:
    def __init__(self, max_draft: int = 8, max_ngram: int = 4, min_ngram: int = 1,
                 sources: Sequence[Sequence[int]] = ()):
        self.max_draft, self.max_ngram, self.min_ngram = max_draft, max_ngram, min_ngram
        self.sources = [list(s) for s in sources if s]
        self.stats = {"proposed": 0, "accepted": 0, "passes": 0}
        self.missed = False          # the last pass's drafts were all rejected
        self.last_match = 0          # n-gram length behind the last proposal (0: none)

    def length_for(self, n: int) -> int:
        """Drafts allowed after a match of n tokens."""
        if self.missed and n < 3:
            return 0
        return self.max_draft if n >= 3 else (4 if n == 2 else 2)

    # ---- the decoder's protocol ----------------------------------------------------------
    def start(self, context: Sequence[int], req=None) -> None:
        self.missed = False
        self.seq: List[int] = list(context)
        self.index: Dict[Tuple[int, ...], List[int]] = {}
        for end in range(len(self.seq)):
            self._add(self.index, self.seq, end)
        self.n_context = len(self.seq)
        self.extra = []
        for src in self.sources:
            idx: Dict[Tuple[int, ...], List[int]] = {}
            for end in range(len(src)):
                self._add(idx, src, end)
            self.extra.append((src, idx))

    def propose(self, committed: Sequence[int], room: int) -> List[int]:
        """Drafts to follow `committed` (the span so far), at most min(room, max_draft)."""
        self._sync(committed)
        limit = min(room, self.max_draft)
        if limit <= 0:
            return []
        seq = self.seq
        self.last_match = 0
        for n in range(min(self.max_ngram, len(seq)), self.min_ngram - 1, -1):
            allowed = min(limit, self.length_for(n))
            if allowed <= 0:
                break
            key = tuple(seq[len(seq) - n:])
            for end in reversed(self.index.get(key, ())):
                if end < len(seq) - 1:                      # an earlier occurrence, not the tail itself
                    draft = seq[end + 1:end + 1 + allowed]
                    if draft:
                        self.last_match = n
                        return draft
            for src, idx in self.extra:
                for end in reversed(idx.get(key, ())):
                    draft = src[end + 1:end + 1 + allowed]
                    if draft:
                        self.last_match = n
                        return draft
        return []

    def observe(self, chosen: Sequence[int], accepted: int, proposed: int) -> None:
        self.stats["proposed"] += proposed
        self.stats["accepted"] += accepted
        self.stats["passes"] += 1
        if proposed:
            self.missed = accepted == 0

    # ---- the index -------------------------------------------------------------------------
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
