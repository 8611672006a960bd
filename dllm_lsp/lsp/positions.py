"""LSP positions <-> Python string offsets, in the negotiated encoding (utf-16, utf-8 or utf-32).

An LSP position is (line, character) where `character` counts code units of the negotiated
encoding: UTF-16 by default, so an emoji outside the BMP counts 2. Python strings index code
points. Lines end at "\\n", "\\r\\n" or "\\r" (the LSP definition). A position past the end of
its line or of the document raises ValueError (the server turns that into InvalidParams);
a position in the middle of a surrogate pair or of a UTF-8 sequence snaps to the character
start.
"""
from __future__ import annotations

import re
from typing import List, Tuple

_LINE_END = re.compile(r"\r\n|\r|\n")


def line_starts(text: str) -> List[int]:
    """Offsets where each line starts; len = number of lines (an empty text has one line)."""
    return [0] + [m.end() for m in _LINE_END.finditer(text)]


def _line_text(text: str, starts: List[int], line: int) -> str:
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    return _LINE_END.sub("", text[starts[line]:end])


def units(ch: str, encoding: str) -> int:
    """Code units of one code point in `encoding` ("utf-16" | "utf-8" | "utf-32")."""
    cp = ord(ch)
    if encoding == "utf-8":
        return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
    if encoding == "utf-32":
        return 1
    return 2 if cp >= 0x10000 else 1


def length_in_units(s: str, encoding: str) -> int:
    return sum(units(ch, encoding) for ch in s)


def offset_at(text: str, line: int, character: int, encoding: str = "utf-16") -> int:
    """(line, character in code units) -> index into `text`; ValueError past the end."""
    starts = line_starts(text)
    if line < 0 or character < 0:
        raise ValueError(f"negative position ({line}, {character})")
    if line >= len(starts):
        raise ValueError(f"line {line} is past the end of the document ({len(starts)} lines)")
    row = _line_text(text, starts, line)
    count = 0
    for col, ch in enumerate(row):
        if count >= character:
            return starts[line] + col
        count += units(ch, encoding)
        if count > character:                      # inside a multi-unit character: snap to its start
            return starts[line] + col
    if character > count:
        raise ValueError(f"character {character} is past the end of line {line} ({count} {encoding} units)")
    return starts[line] + len(row)


def position_at(text: str, offset: int, encoding: str = "utf-16") -> Tuple[int, int]:
    """Index into `text` -> (line, character in code units)."""
    if not 0 <= offset <= len(text):
        raise ValueError(f"offset {offset} outside the document (length {len(text)})")
    starts = line_starts(text)
    line = max(i for i, s in enumerate(starts) if s <= offset)
    return line, length_in_units(text[starts[line]:offset], encoding)


def normalize_encoding(kind) -> str:
    """lsprotocol PositionEncodingKind or str -> "utf-8" | "utf-16" | "utf-32"."""
    value = getattr(kind, "value", kind) or "utf-16"
    return value if value in ("utf-8", "utf-16", "utf-32") else "utf-16"


def edit_end(old: str, new: str) -> int:
    """Where the cursor is after the edit that turned `old` into `new` (code points in `new`):
    the end of the changed span, found as the longest common prefix and then the longest common
    suffix of what is left. For clients that send whole documents on every change (no range),
    so the warm-up is aimed at the typing, not at the document's end. An insertion that could
    sit at several places (the same characters around it) is placed where it starts with a line
    break if it can (Enter and the indentation typed at a line's end before an empty line are
    "\n    " there, not "    \n" one line further), else rightmost. No change gives len(new)."""
    if old == new:
        return len(new)
    n = min(len(old), len(new))
    p = 0
    while p < n and old[p] == new[p]:
        p += 1
    s = 0
    while s < n - p and old[len(old) - 1 - s] == new[len(new) - 1 - s]:
        s += 1
    end = len(new) - s
    if len(old) - s == p and "\n" in new[p:end] and new[p] != "\n":   # start an insertion at its line break
        q, e = p, end
        while q > 0 and new[q - 1] == new[e - 1]:
            q, e = q - 1, e - 1
            if new[q] == "\n":
                return e
    return end
