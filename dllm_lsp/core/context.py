"""Context windows: the prefix and suffix sent to the engine, within token budgets, cut at line boundaries.

    text[:offset] = ...older lines | window lines | current line up to the cursor
    text[offset:] = rest of the current line | window lines | ...later lines

The partial current line is always kept on both sides; whole lines are then added outwards
while they fit. When the prefix is cut, its first line is rounded to a multiple of
STICKY_LINES (fewer for short windows), so that typing seldom moves the window start: the engine keeps the keys and
values of an unchanged context, and a moved start would invalidate them. The prefix is favoured: budget the suffix leaves unused goes to the prefix,
and only then what the prefix leaves goes back to the suffix. Tokens are counted with the
model's tokenizer when one is given, otherwise estimated as 1 token per 3.5 characters.

Snippets from other open documents (`pick_snippets`) are chosen by identifier overlap with the
lines around the cursor (sliding windows of a few lines) and rendered as a comment header
("Compare this snippet from NAME:") that goes in front of the prefix.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Iterable, Optional, Sequence, Tuple

TokenCounter = Callable[[str], int]
CHARS_PER_TOKEN = 3.5
STICKY_LINES = 8
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


def token_counter(tokenizer=None) -> TokenCounter:
    """A function text -> tokens: the tokenizer's encode length, or the 3.5 chars/token estimate."""
    if tokenizer is None:
        return lambda s: math.ceil(len(s) / CHARS_PER_TOKEN)
    return lambda s: len(tokenizer.encode(s)) if s else 0


def _take_lines_backward(lines: Sequence[str], budget: int, count: TokenCounter) -> Tuple[int, int]:
    """How many of the last lines fit in `budget` -> (n_lines, tokens used)."""
    used = n = 0
    for line in reversed(lines):
        cost = count(line)
        if used + cost > budget:
            break
        used, n = used + cost, n + 1
    return n, used


def _take_lines_forward(lines: Sequence[str], budget: int, count: TokenCounter) -> Tuple[int, int]:
    used = n = 0
    for line in lines:
        cost = count(line)
        if used + cost > budget:
            break
        used, n = used + cost, n + 1
    return n, used


def _clip_left(s: str, budget: int, count: TokenCounter) -> str:
    """Drop characters from the left of a single long line until it fits."""
    while s and count(s) > budget:
        s = s[max(1, len(s) // 8):]
    return s


def _clip_right(s: str, budget: int, count: TokenCounter) -> str:
    while s and count(s) > budget:
        s = s[: len(s) - max(1, len(s) // 8)]
    return s


def windows(text: str, offset: int, prefix_budget: int, suffix_budget: int,
            count: TokenCounter) -> Tuple[str, str]:
    """(prefix window, suffix window) around `offset`, within the budgets; see the module docstring."""
    before, after = text[:offset], text[offset:]
    cut = before.rfind("\n") + 1
    head_lines, current = before[:cut].splitlines(keepends=True), before[cut:]
    nl = after.find("\n")
    rest, tail = (after, "") if nl < 0 else (after[: nl + 1], after[nl + 1:])
    tail_lines = tail.splitlines(keepends=True)

    current = _clip_left(current, prefix_budget, count)
    prefix_left = prefix_budget - count(current)
    rest = _clip_right(rest, suffix_budget, count)
    suffix_left = suffix_budget - count(rest)

    # the suffix takes what it needs first (within its budget), the prefix gets the rest of both
    n_tail, used_tail = _take_lines_forward(tail_lines, max(0, suffix_left), count)
    n_head, used_head = _take_lines_backward(head_lines, max(0, prefix_left + suffix_left - used_tail), count)
    spare = max(0, prefix_left - used_head)
    if spare and n_tail < len(tail_lines):       # prefix did not need its whole budget: extend the suffix
        more, _ = _take_lines_forward(tail_lines[n_tail:], spare, count)
        n_tail += more
    start = len(head_lines) - n_head
    grid = max(1, min(STICKY_LINES, n_head // 4))  # never give up more than a quarter of the window
    if start > 0:                                 # cut: start on a multiple of the grid so that typing
        start = -(-start // grid) * grid           # rarely moves it (keeps the engine's KV cache)
    prefix = "".join(head_lines[start:]) + current
    suffix = rest + "".join(tail_lines[:n_tail])
    return prefix, suffix


# ---- snippets from other open documents -------------------------------------------------------

def identifiers(text: str) -> set:
    return set(_IDENT.findall(text))


def _chunks(text: str, size: int = 12, step: int = 6) -> Iterable[str]:
    lines = text.splitlines()
    for start in range(0, max(1, len(lines) - size + step), step):
        chunk = "\n".join(lines[start:start + size]).strip("\n")
        if chunk.strip():
            yield chunk


def pick_snippets(documents: Sequence[Tuple[str, str]], near_cursor: str, budget: int,
                  count: TokenCounter, comment: Optional[str], max_snippets: int = 2) -> str:
    """Best-matching chunks of other documents as a comment header for the prefix ("" if none fit).

    documents: (name, text) of the other open documents; near_cursor: the lines around the cursor.
    """
    if budget <= 0 or not comment or not documents:
        return ""
    query = identifiers(near_cursor)
    if not query:
        return ""
    scored = []
    for name, text in documents:
        for chunk in _chunks(text):
            ids = identifiers(chunk)
            overlap = len(query & ids) / len(query | ids) if ids else 0.0
            if overlap > 0:
                scored.append((overlap, name, chunk))
    scored.sort(key=lambda t: -t[0])
    header, used = [], 0
    for _, name, chunk in scored[:max_snippets]:
        block = comment_block(name, chunk, comment)
        cost = count(block)
        if used + cost > budget:
            continue
        header.append(block)
        used += cost
    return "".join(header)


def comment_block(name: str, text: str, comment: Optional[str]) -> str:
    """Another file's text as line comments headed "Compare this snippet from NAME:" ("" without
    a comment marker)."""
    if not comment:
        return ""
    return "".join(f"{comment} {line}\n" if line else f"{comment}\n"
                   for line in [f"Compare this snippet from {name}:"] + text.splitlines())
