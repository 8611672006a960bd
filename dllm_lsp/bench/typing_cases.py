"""The typing cases of `dllm-lsp bench typing` (pure): what a typist types into which document.

For the target line `lines[target]` the document starts with the end of the line before cut
off and the target line removed; the keys are that end (one key a character), then Enter with
the target's indentation (one key, as an editor's auto-indent sends it): phase "enter", whose
reference is the target line; then the first half of the target line: phase "mid", whose
reference is the rest of the line. `apply_key` and `cursor_after` replay the keys.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Key:
    text: str                 # inserted at (line, character)
    line: int
    character: int


@dataclass(frozen=True)
class TypingCase:
    name: str                 # file:line (1-based) of the target line
    start: str                # the document when typing starts
    phases: Tuple[Tuple[str, Tuple[Key, ...], str], ...]   # (phase, keys, reference)
    path: str = ""            # the file it comes from


def _usable(line: str) -> bool:
    s = line.strip()
    return len(s) >= 6 and not s.startswith(("#", '"', "'", "@")) and s not in ("else:", "try:", "finally:")


def typing_case(name: str, lines: Sequence[str], target: int, end_chars: int = 6) -> Optional[TypingCase]:
    """The case for `lines[target]` (0-based), or None where it does not fit: the line before
    must hold at least `end_chars` characters after its indentation (typed first)."""
    before, line = lines[target - 1], lines[target]
    if not _usable(line) or len(before.strip()) < end_chars + 1:
        return None
    cut = len(before) - end_chars
    start = "\n".join(list(lines[:target - 1]) + [before[:cut]] + list(lines[target + 1:]))
    row = target - 1
    keys = [Key(ch, row, cut + i) for i, ch in enumerate(before[cut:])]
    indent = line[:len(line) - len(line.lstrip())]
    keys.append(Key("\n" + indent, row, len(before)))
    body = line[len(indent):]
    half = len(body) // 2
    mid = tuple(Key(ch, target, len(indent) + i) for i, ch in enumerate(body[:half]))
    return TypingCase(f"{name}:{target + 1}", start,
                      (("enter", tuple(keys), body), ("mid", mid, body[half:])))


def typing_cases(files: Sequence[Path], n: int, seed: int = 0) -> List[TypingCase]:
    """`n` cases spread over `files` (a seeded sample of usable target lines, past line 20)."""
    rng = random.Random(f"{seed}/typing")
    per_file = -(-n // max(1, len(files))) + 1
    cases: List[TypingCase] = []
    for path in files:
        lines = path.read_text(encoding="utf-8").split("\n")
        name = path.name if path.parent.name.startswith("python") else f"{path.parent.name}/{path.name}"
        found = [replace(c, path=str(path)) for c in (typing_case(name, lines, t) for t in range(20, len(lines) - 1))
                 if c is not None]
        cases += rng.sample(found, min(per_file, len(found)))
    return rng.sample(cases, min(n, len(cases)))


def apply_key(text: str, key: Key) -> str:
    lines = text.split("\n")
    offset = sum(len(l) + 1 for l in lines[:key.line]) + key.character
    return text[:offset] + key.text + text[offset:]


def cursor_after(key: Key) -> Tuple[int, int]:
    """(line, character) of the cursor after typing `key`."""
    if "\n" in key.text:
        return key.line + key.text.count("\n"), len(key.text.rsplit("\n", 1)[1])
    return key.line, key.character + len(key.text)


def first_line(text: str) -> str:
    return text.split("\n", 1)[0].strip()
