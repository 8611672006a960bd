"""The example stream: training files in a seeded order, each cut into FIM examples, packed into batches.

Everything is a deterministic function of (seed, file order position), so the stream's state is
a few integers plus the examples left over by the last packing: `StreamState`. A checkpoint
stores it, and a resumed run sees exactly the batches an uninterrupted run would have seen.

Token budgets mirror the server's windows: the prefix keeps up to `prefix_tokens` (from the
left), the suffix up to `suffix_tokens`; half of the examples use the full budgets, the rest a
random smaller one, so the model sees short contexts (file starts) as well.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

from engine.train.embedded.examples import Example, fit_middle_lines, make_example, truncate_prefix, truncate_suffix
from engine.train.fim import sample_cut


@dataclass
class DataConfig:
    block_size: int = 8
    prefix_tokens: int = 384
    suffix_tokens: int = 128
    middle_tokens: int = 64           # FIM middles (whole lines that fit)
    continuation_tokens: int = 128    # left-to-right middles (cut to whole blocks)
    chars_per_example: int = 1500     # a file yields about len(text) / this examples (1..16)
    full_window_rate: float = 0.2     # examples with the full prefix/suffix budgets (else smaller)
    max_copies: int = 8               # noisy copies of short middles (examples.copies_for)
    seed: int = 0


@dataclass
class StreamState:
    epoch: int = 0
    file_pos: int = 0                 # index into this epoch's file order
    example_pos: int = 0              # examples of that file already taken
    carry: List[list] = field(default_factory=list)   # leftover examples [context, middle, copies]

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "file_pos": self.file_pos, "example_pos": self.example_pos,
                "carry": self.carry}

    @classmethod
    def from_dict(cls, d: dict) -> "StreamState":
        return cls(int(d["epoch"]), int(d["file_pos"]), int(d["example_pos"]),
                   [list(c) for c in d.get("carry", [])])


def examples_from_text(text: str, rng: random.Random, encode: Callable[[str], List[int]],
                       cfg: DataConfig, count: int) -> List[Example]:
    out: List[Example] = []
    for _ in range(count * 2):
        if len(out) >= count:
            break
        ex = example_from_text(text, rng, encode, cfg)
        if ex is not None:
            out.append(ex)
    return out


def example_from_text(text: str, rng: random.Random, encode, cfg: DataConfig) -> Optional[Example]:
    cut = sample_cut(text, rng)
    if cut is None:
        return None
    full = rng.random() < cfg.full_window_rate
    p_budget = cfg.prefix_tokens if full else rng.randint(16, cfg.prefix_tokens // 2)
    s_budget = cfg.suffix_tokens if full else rng.randint(0, cfg.suffix_tokens // 3)
    prefix_text = cut.prefix[-p_budget * 8:]
    prefix = encode(prefix_text)
    if len(prefix_text) < len(cut.prefix):
        prefix = prefix[1:]                        # the first token may be a cut word
    prefix = truncate_prefix(prefix, p_budget)
    if cut.kind == "continuation":
        budget = cfg.continuation_tokens
        window = cut.middle[: budget * 8]
        middle = encode(window)
        ends = len(window) == len(cut.middle) and len(middle) <= budget
        if not ends:
            middle = middle[: min(budget, len(middle) - 1)]
        return make_example(prefix, [], middle, ends, cfg.block_size, max_copies=cfg.max_copies)
    fitted = fit_middle_lines(cut.middle, encode, cfg.middle_tokens)
    if fitted is None:
        return None
    middle_text, middle = fitted
    suffix_text = cut.middle[len(middle_text):] + cut.suffix
    window = suffix_text[: s_budget * 8]
    suffix = encode(window)
    if len(window) < len(suffix_text):
        suffix = suffix[:-1]
    suffix = truncate_suffix(suffix, s_budget)
    return make_example(prefix, suffix, middle, True, cfg.block_size, max_copies=cfg.max_copies)


class ExampleStream:
    """Yields examples file by file; `state` can be saved and restored at any point between batches."""

    def __init__(self, texts: Callable[[int], Optional[str]], n_files: int, encode, cfg: DataConfig,
                 state: Optional[StreamState] = None):
        self.texts, self.n_files, self.encode, self.cfg = texts, n_files, encode, cfg
        self.state = state or StreamState()

    def order(self, epoch: int) -> List[int]:
        order = list(range(self.n_files))
        random.Random(f"{self.cfg.seed}:order:{epoch}").shuffle(order)
        return order

    def file_examples(self, epoch: int, pos: int) -> List[Example]:
        index = self.order(epoch)[pos]
        text = self.texts(index)
        if not text:
            return []
        rng = random.Random(f"{self.cfg.seed}:{epoch}:{index}")
        count = max(1, min(16, len(text) // self.cfg.chars_per_example))
        return examples_from_text(text, rng, self.encode, self.cfg, count)

    def take(self, n: int) -> List[Example]:
        """The next n examples (carried-over ones first), advancing the state."""
        st = self.state
        out = [Example(tuple(c), tuple(m), int(k)) for c, m, k in st.carry[:n]]
        st.carry = st.carry[n:]
        empty_files = 0
        while len(out) < n:
            if st.file_pos >= self.n_files:
                st.epoch, st.file_pos, st.example_pos = st.epoch + 1, 0, 0
            exs = self.file_examples(st.epoch, st.file_pos)
            empty_files = 0 if exs else empty_files + 1
            if empty_files > self.n_files:
                raise ValueError("no file yields a training example")
            rest = exs[st.example_pos:]
            need = n - len(out)
            out += rest[:need]
            if len(rest) > need:
                st.example_pos += need
            else:
                st.file_pos, st.example_pos = st.file_pos + 1, 0
        return out

    def give_back(self, examples: Sequence[Example]) -> None:
        self.state.carry = [[list(e.context), list(e.middle), e.copies] for e in examples] + self.state.carry

