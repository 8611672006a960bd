"""Where to cut a file into (prefix, middle, suffix): the kinds of middle an editor asks for.

Pure functions of (text, rng). Each kind mirrors a cursor situation of the language server:
  rest_of_line   cursor mid-line, the middle is the rest of that line (suffix starts at "\\n")
  line           one whole line; the cursor after the indentation, or at column 0 (with or
                 without the line's newline in the middle)
  lines          2-8 whole lines, same cursor variants
  block          the indented body under a line ending in ":" (a def, if, for, ... body)
  empty          the middle is empty: the model must answer eos at once
  continuation   left to right: empty suffix, the middle is what follows the cursor (file end
                 or cut by the token budget later)
A cut is a `Cut(prefix, middle, suffix, kind)`; prefix + middle + suffix == text always.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Optional, Tuple

KINDS = ("rest_of_line", "line", "lines", "block", "empty", "continuation")
DEFAULT_WEIGHTS = {"rest_of_line": 0.22, "line": 0.22, "lines": 0.14, "block": 0.12, "empty": 0.05,
                   "continuation": 0.25}


@dataclass(frozen=True)
class Cut:
    prefix: str
    middle: str
    suffix: str
    kind: str


def line_starts(text: str) -> List[int]:
    """Offsets where each line starts (one entry per line, a final line may lack its newline)."""
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n" and i + 1 < len(text):
            starts.append(i + 1)
    return starts


def _line_bounds(text: str, starts: List[int], i: int) -> Tuple[int, int]:
    """[start, end) of line i without its newline."""
    start = starts[i]
    end = text.find("\n", start)
    return start, (len(text) if end < 0 else end)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _content_lines(text: str, starts: List[int]) -> List[int]:
    return [i for i in range(len(starts)) if text[slice(*_line_bounds(text, starts, i))].strip()]


def _cut(text: str, a: int, b: int, kind: str) -> Cut:
    return Cut(text[:a], text[a:b], text[b:], kind)


def cut_rest_of_line(text: str, rng: random.Random, starts: List[int], lines: List[int]) -> Optional[Cut]:
    i = rng.choice(lines)
    start, end = _line_bounds(text, starts, i)
    body = start + _indent(text[start:end])
    if end - body < 2:
        return None
    cursor = rng.randint(body + 1, end - 1)
    return _cut(text, cursor, end, "rest_of_line")


def _line_span(text: str, starts: List[int], first: int, last: int, rng: random.Random, kind: str) -> Cut:
    """Lines first..last as the middle, with a random cursor variant."""
    start, _ = _line_bounds(text, starts, first)
    _, end = _line_bounds(text, starts, last)
    variant = rng.random()
    if variant < 0.5:                      # cursor after the indentation, newline stays in the suffix
        start += _indent(text[start:end])
    elif variant < 0.75 and end < len(text):
        end += 1                           # cursor at column 0, the middle ends with its newline
    return _cut(text, start, end, kind)


def cut_lines(text: str, rng: random.Random, starts: List[int], lines: List[int], n_max: int) -> Optional[Cut]:
    first = rng.choice(lines)
    n = 1 if n_max == 1 else rng.randint(2, n_max)
    last = min(len(starts) - 1, first + n - 1)
    return _line_span(text, starts, first, last, rng, "line" if n_max == 1 else "lines")


def cut_block(text: str, rng: random.Random, starts: List[int], lines: List[int]) -> Optional[Cut]:
    heads = [i for i in lines if text[slice(*_line_bounds(text, starts, i))].rstrip().endswith(":")]
    if not heads:
        return None
    head = rng.choice(heads)
    head_indent = _indent(text[slice(*_line_bounds(text, starts, head))])
    last = None
    for j in range(head + 1, len(starts)):
        line = text[slice(*_line_bounds(text, starts, j))]
        if not line.strip():
            continue
        if _indent(line) <= head_indent:
            break
        last = j
    if last is None:
        return None
    return _line_span(text, starts, head + 1, last, rng, "block")


def cut_empty(text: str, rng: random.Random, starts: List[int], lines: List[int]) -> Optional[Cut]:
    i = rng.choice(lines)
    start, end = _line_bounds(text, starts, i)
    cursor = rng.choice([end, start + _indent(text[start:end]), rng.randint(start, end)])
    return _cut(text, cursor, cursor, "empty")


def cut_continuation(text: str, rng: random.Random, starts: List[int], lines: List[int]) -> Optional[Cut]:
    i = rng.choice(lines)
    start, end = _line_bounds(text, starts, i)
    cursor = rng.choice([start, start + _indent(text[start:end]), rng.randint(start, end)])
    return _cut(text, cursor, len(text), "continuation")


def sample_cut(text: str, rng: random.Random, weights: Optional[dict] = None) -> Optional[Cut]:
    """One random cut of `text` (None if the file has no usable line)."""
    starts = line_starts(text)
    lines = _content_lines(text, starts)
    if not lines:
        return None
    weights = weights or DEFAULT_WEIGHTS
    kinds = list(weights)
    for _ in range(4):
        kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
        if kind == "rest_of_line":
            cut = cut_rest_of_line(text, rng, starts, lines)
        elif kind == "line":
            cut = cut_lines(text, rng, starts, lines, 1)
        elif kind == "lines":
            cut = cut_lines(text, rng, starts, lines, 8)
        elif kind == "block":
            cut = cut_block(text, rng, starts, lines)
        elif kind == "empty":
            cut = cut_empty(text, rng, starts, lines)
        else:
            cut = cut_continuation(text, rng, starts, lines)
        if cut is not None:
            return cut
    return None
