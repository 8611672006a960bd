"""FIM holes cut from real files, and how an answer is scored (pure functions).

Kinds of hole (the cursor is where an editor would leave it; the document keeps everything
but the hole):

    line       a whole line's code, the cursor after its indentation (the line break stays)
    rest       the rest of a line from a point inside it
    midline    the middle of a line: from a point inside it to before its closing run
               (`)`, `]`, `}`, `:` and `,` at its end), which stays after the cursor
    block      the body of a compound statement (2..6 lines after a line ending in `:`), the
               cursor after the first body line's indentation
    crossfile  a whole line that uses a name the file imports from another module of the same
               package, where that module defines it (found with `ast`: the files are parsed,
               never run)
    crossargs  the rest of such a line after the first call `NAME(` of such a name: the
               arguments, where knowing the definition matters most

Lines inside docstrings, comments, blank lines and lines under 4 or over 120 characters are
never holes. A seeded sample takes at most `limit` holes of each kind, spread over the files.
Scores: exact match (trailing whitespace aside) and edit similarity (1 - Levenshtein distance
over the longer length).
"""
from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

KINDS = ("line", "rest", "midline", "block", "crossfile", "crossargs")
CLOSING = ")]}:,"


@dataclass(frozen=True)
class Hole:
    hole_id: str          # package/path:line/kind
    kind: str
    document: str         # the file without the hole
    offset: int           # the cursor, code points into document
    expected: str         # what belongs at the cursor


def _docstring_lines(tree: ast.AST) -> Set[int]:
    """1-based lines covered by string-only expression statements (docstrings and the like) and
    by import statements (never a hole: nothing to infer there)."""
    out: Set[int] = set()
    for node in ast.walk(tree):
        string = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        if string or isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return out


def _imported_from_siblings(tree: ast.AST, module: str, defined: Dict[str, Set[str]]) -> Set[str]:
    """Names this file imports from another module of its package that defines them there.
    module: the file's dotted name ("pkg.sub.mod"); defined: each module of the package -> its
    top-level names."""
    out: Set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = module.split(".")[:-node.level]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source == module or source not in defined:
            continue
        for alias in node.names:
            if alias.name in defined[source]:
                out.add(alias.asname or alias.name)
    return out


def _top_level_names(tree: ast.AST) -> Set[str]:
    names: Set[str] = set()
    for node in getattr(tree, "body", []):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _uses(line: str, names: Set[str]) -> bool:
    words = set("".join(c if c.isalnum() or c == "_" else " " for c in line).split())
    return bool(words & names)


def _candidates(pkg: str, files: Sequence[Tuple[str, str]]) -> Dict[str, List[tuple]]:
    """kind -> (file index, line index) candidates; files: (dotted module name, text)."""
    trees: List[Optional[ast.AST]] = []
    for _, text in files:
        try:
            trees.append(ast.parse(text))
        except (SyntaxError, ValueError):
            trees.append(None)
    defined = {name: _top_level_names(t) for (name, _), t in zip(files, trees) if t is not None}
    out: Dict[str, List[tuple]] = {k: [] for k in KINDS}
    for f, ((module, text), tree) in enumerate(zip(files, trees)):
        if tree is None:
            continue
        skip = _docstring_lines(tree)
        imported = _imported_from_siblings(tree, module, defined)
        lines = text.split("\n")
        for i, line in enumerate(lines):
            body = line.strip()
            if i + 1 in skip or not 4 <= len(body) <= 120 or body.startswith(("#", "@", "import ", "from ")):
                continue
            out["line"].append((f, i))
            out["rest"].append((f, i))
            if len(body.rstrip(CLOSING)) >= 6 and body[-1] in CLOSING:
                out["midline"].append((f, i))
            if imported and _uses(body, imported) and not body.startswith(("def ", "class ")):
                out["crossfile"].append((f, i))
                call = _first_call(line, imported)
                if call is not None and len(line.rstrip()) - call >= 2:
                    out["crossargs"].append((f, i, call))
            if body.endswith(":") and not body.startswith(("#",)):
                n = _block_length(lines, i, skip)
                if n:
                    out["block"].append((f, i))
    return out


def _first_call(line: str, names: Set[str]) -> Optional[int]:
    """The column just after `NAME(` for the first call of one of `names` on the line, or None."""
    for m in re.finditer(r"(?<![\w.])([A-Za-z_]\w*)\(", line):
        if m.group(1) in names:
            return m.end()
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_length(lines: List[str], i: int, skip: Set[int]) -> int:
    """Lines of the body after line i (2..6 non-blank lines, all deeper than line i, no
    docstring), else 0."""
    base = _indent(lines[i])
    n = 0
    for j in range(i + 1, len(lines)):
        if not lines[j].strip():
            break
        if _indent(lines[j]) <= base:
            break
        if j + 1 in skip:
            return 0
        n += 1
    return n if 2 <= n <= 6 else 0


def _starts(lines: List[str]) -> List[int]:
    out, at = [], 0
    for line in lines:
        out.append(at)
        at += len(line) + 1
    return out


def cut(kind: str, text: str, i: int, rng: random.Random, column: Optional[int] = None) -> Optional[Tuple[str, int, str]]:
    """(document, cursor, expected) of a `kind` hole at line i of text (crossargs: the cursor at
    `column` of the line)."""
    lines = text.split("\n")
    line = lines[i]
    start = _starts(lines)[i]
    indent = _indent(line)
    body_end = start + len(line.rstrip())
    if kind in ("line", "crossfile"):
        cursor, end = start + indent, body_end
    elif kind == "rest":
        cursor, end = rng.randint(start + indent + 1, body_end - 1), body_end
    elif kind == "crossargs":
        cursor, end = start + column, body_end
    elif kind == "midline":
        end = start + indent + len(line.strip().rstrip(CLOSING))
        if end - (start + indent) < 2:
            return None
        cursor = rng.randint(start + indent + 1, end - 1)
    elif kind == "block":
        n = _block_length(lines, i, set())
        first = i + 1
        cursor = _starts(lines)[first] + _indent(lines[first])
        last = first + n - 1
        end = _starts(lines)[last] + len(lines[last].rstrip())
    else:
        raise ValueError(f"unknown kind {kind!r}")
    expected = text[cursor:end]
    if not expected.strip():
        return None
    return text[:cursor] + text[end:], cursor, expected


def holes(packages: Dict[str, Sequence[Tuple[str, str]]], limit: int, seed: int = 0,
          kinds: Sequence[str] = KINDS) -> List[Hole]:
    """At most `limit` holes of each kind from the packages' files ((dotted module, text) each),
    sampled with `seed`, round-robin over packages so each contributes."""
    rng = random.Random(seed)
    out: List[Hole] = []
    per_pkg = {pkg: _candidates(pkg, files) for pkg, files in sorted(packages.items())}
    for kind in kinds:
        pools = []
        for pkg, cands in per_pkg.items():
            pool = list(cands[kind])
            rng.shuffle(pool)
            pools.append((pkg, pool))
        taken = 0
        while taken < limit and any(pool for _, pool in pools):
            for pkg, pool in pools:
                if not pool or taken >= limit:
                    continue
                f, i, *column = pool.pop()
                module, text = packages[pkg][f]
                made = cut(kind, text, i, rng, *column)
                if made is None:
                    continue
                document, cursor, expected = made
                out.append(Hole(f"{pkg}/{module}:{i + 1}/{kind}", kind, document, cursor, expected))
                taken += 1
    return out


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(answer: str, expected: str) -> float:
    a, b = answer.rstrip(), expected.rstrip()
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


def exact(answer: str, expected: str) -> bool:
    return answer.rstrip() == expected.rstrip()


def first_line(text: str) -> str:
    return text.split("\n", 1)[0]
