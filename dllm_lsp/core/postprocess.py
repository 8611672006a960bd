"""Post-processing: engine output -> the text to insert at the cursor. Pure string functions.

Applied in this order by `finish`:
  1. clean          drop control characters (except tab/newline) and U+FFFD; CRLF -> LF
  2. keep_scope     line mode: the first line only; block mode: stop at the first line that
                    leaves the scope (indented at or left of the block opener's line, or, in
                    brace languages, closing more braces than it opened)
  3. drop_repeats   stop where the completion starts repeating the next lines of the document
                    (the next line, or two consecutive later ones: repeat_start), and drop a
                    tail that repeats the start of the rest of the cursor's line
  4. balance        trim closing brackets (outside string literals) that have no opener
                    before them (on the cursor's line or left open by the lines above it),
                    given what the rest of the line already closes
  5. strip          trailing whitespace on every line, trailing blank lines
Nothing left (only whitespace) -> "" (no item).

`stream_view` is the same for a partial (still growing) text, holding back the tail that a
later token could still remove (trailing closers and whitespace, an overlap with the rest of
the line, the unfinished last line of a block), so streamed text only grows.

`is_settled` says when committed text already decides the result (line mode: the line has
ended; block mode: a complete line left the scope or repeats the next line): decoding more
cannot change what `finish` returns, so the caller stops the engine there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from dllm_lsp.core.syntax import code_brackets

OPEN, CLOSE = "([{", ")]}"
PAIR = {")": "(", "]": "[", "}": "{"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")


@dataclass(frozen=True)
class Shape:
    """What post-processing needs to know about the place of the cursor."""
    mode: str = "line"                  # "line" | "block"
    line_prefix: str = ""               # text of the cursor's line before the cursor
    line_suffix: str = ""               # text of the cursor's line after the cursor
    next_lines: Sequence[str] = field(default_factory=tuple)   # the next non-blank lines after the cursor's line
    scope_indent: Optional[int] = None  # block mode: lines indented <= this leave the scope (indentation languages)
    braces: bool = False                # scope ends are braces (C-like) rather than indentation
    open_before: str = ""               # openers the lines above the cursor's leave unclosed, innermost last


def indent_width(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def clean(text: str) -> str:
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def keep_scope(text: str, shape: Shape) -> str:
    lines = text.split("\n")
    if shape.mode != "block":
        return lines[0]
    kept = [lines[0]]
    depth = _depth_change(lines[0])               # relative to the block the cursor is in
    closer_follows = bool(shape.next_lines) and shape.next_lines[0].strip()[:1] in CLOSE
    for line in lines[1:]:
        if line.strip():
            if not shape.braces and shape.scope_indent is not None and indent_width(line) <= shape.scope_indent:
                break
            if shape.braces and _min_depth(line, depth) < 0:
                if not closer_follows:             # nothing closes the block yet: keep this closing line
                    kept.append(line)
                break
            depth += _depth_change(line)
        kept.append(line)
    return "\n".join(kept)


def _depth_change(s: str) -> int:
    return sum(1 for c in s if c in OPEN) - sum(1 for c in s if c in CLOSE)


def _min_depth(s: str, start: int) -> int:
    depth = low = start
    for c in s:
        depth += (c in OPEN) - (c in CLOSE)
        low = min(low, depth)
    return low


def repeat_start(lines: Sequence[str], upcoming: Sequence[str]) -> Optional[int]:
    """The first completion line (after its first) where the completion starts writing the
    document's next lines again: a line equal to the next one, or two consecutive non-blank
    lines equal to two consecutive later ones (a block that skipped a line or two and then
    rejoined the code below). `upcoming`: the next non-blank lines, stripped."""
    filled = [(i, line.strip()) for i, line in enumerate(lines) if i and line.strip()]
    for n, (i, line) in enumerate(filled):
        if upcoming and line == upcoming[0]:
            return i
        if n + 1 < len(filled):
            follower = filled[n + 1][1]
            if any(line == upcoming[j] and follower == upcoming[j + 1] for j in range(1, len(upcoming) - 1)):
                return i
    return None


def pending_repeat(line: str, upcoming: Sequence[str]) -> bool:
    """Could this last complete line start a two-line repeat once the next line is written?"""
    return bool(line.strip()) and line.strip() in upcoming[1:-1]


def upcoming_lines(shape: Shape) -> List[str]:
    """The next non-blank lines after the cursor's, stripped."""
    return [l.strip() for l in shape.next_lines if l.strip()]


def drop_repeats(text: str, shape: Shape) -> str:
    lines = text.split("\n")
    upcoming = upcoming_lines(shape)
    cut = repeat_start(lines, upcoming)
    if cut is not None:
        lines = lines[:cut]
    text = "\n".join(lines)
    rest = shape.line_suffix.strip()
    if rest and "\n" not in text:
        stripped = text.rstrip()
        k = len(rest) if stripped.endswith(rest) else _overlap(stripped, rest)
        if k:
            text = stripped[: len(stripped) - k]
    if shape.mode == "line" and not shape.line_prefix.strip() and upcoming and text.strip() == upcoming[0]:
        return ""
    return text


def _overlap(text: str, rest: str) -> int:
    """Length of the longest tail of `text` (ending in a closer) that is a head of `rest`."""
    for k in range(min(len(text), len(rest)), 0, -1):
        if text.endswith(rest[:k]) and rest[k - 1] in CLOSE + ";,:\"'":
            return k
    return 0


QUOTES = "'\"`"                # string delimiters whose brackets balance() leaves alone


def _open_stack(s: str) -> List[str]:
    """Unclosed openers in `s`, outside its string literals (a cheap, line-level approximation)."""
    stack: List[str] = []
    for _, c in code_brackets(s, QUOTES)[0]:
        if c in OPEN:
            stack.append(c)
        elif stack and stack[-1] == PAIR[c]:
            stack.pop()
    return stack


def balance(text: str, shape: Shape) -> str:
    """Cut `text` before the first closer with nothing to close, counting what the line's rest closes.

    Brace-scoped blocks are left alone: keep_scope already decided where their block ends.
    """
    if shape.mode == "block" and shape.braces:
        return text
    stack = _open_stack(shape.open_before + shape.line_prefix)
    # closers at the start of the rest of the line claim the innermost openers first
    claimed = 0
    for c in shape.line_suffix.lstrip():
        if c not in CLOSE:
            break
        claimed += 1
    quote = code_brackets(shape.line_prefix, QUOTES)[1]             # a string open at the cursor
    for i, c in code_brackets(text, QUOTES, quote=quote)[0]:
        if c in OPEN:
            stack.append(c)
        elif not stack or stack[-1] != PAIR[c]:
            return text[:i]
        else:
            stack.pop()
    # the text closed openers that the rest of the line also closes: trim those trailing closers
    body = text.rstrip()
    while claimed and body and body[-1] in CLOSE and len(_open_stack(shape.open_before + shape.line_prefix + body)) < claimed:
        body = body[:-1].rstrip()
    return body if len(body) < len(text.rstrip()) else text


def strip_trailing(text: str) -> str:
    lines = [line.rstrip() for line in text.split("\n")]
    while len(lines) > 1 and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def finish(text: str, shape: Shape) -> str:
    """Engine output -> text to insert ("" = no item)."""
    text = clean(text)
    text = keep_scope(text, shape)
    text = drop_repeats(text, shape)
    text = balance(text, shape)
    text = strip_trailing(text)
    return text if text.strip() else ""


def stream_view(partial: str, shape: Shape) -> str:
    """A prefix of what `finish` will return once `partial` has grown: safe to show now."""
    text = clean(partial)
    if shape.mode == "block" and "\n" in text:
        text = text[: text.rfind("\n")]           # the last line is unfinished
    text = finish(text, shape)
    if shape.mode == "block" and "\n" in text and pending_repeat(text[text.rfind("\n") + 1:], upcoming_lines(shape)):
        text = text[: text.rfind("\n")]           # it may yet turn out to repeat the lines below
    text = text.rstrip(" \t" + CLOSE)
    rest = shape.line_suffix.strip()
    for k in range(min(len(text), len(rest)), 0, -1):   # a tail that may turn into the rest of the line
        if text.endswith(rest[:k]):
            text = text[:-k]
            break
    return text.rstrip()


def is_settled(stable: str, shape: Shape) -> bool:
    """Has the committed text (`stable`, which only grows) already fixed what `finish` returns?"""
    text = clean(stable)
    if "\n" not in text:
        return False
    if shape.mode != "block":
        return True
    complete = text[: text.rfind("\n")]          # lines that can no longer change
    return drop_repeats(keep_scope(complete, shape), shape) != complete
