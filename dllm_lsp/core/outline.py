"""Outlines of a Python file's top-level definitions, for the repository context (core/repo.py).

    top_level_outlines(text) -> {name: outline}        outline(text, ["f", "C"]) -> [(name, outline)]

A short definition goes in whole (SHORT_DEFINITION_LINES); a long one as its decorators and
signature, its docstring (at most DOCSTRING_LINES) and `...`; a class as its header, docstring,
class attributes and its methods, each outlined the same way (whole when SHORT_METHOD_LINES or
fewer). Simple top-level assignments go in as they are (a long one as its first line). Read with
tree-sitter; nothing is run.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import dllm_lsp.core.syntax as syntax

SHORT_DEFINITION_LINES = 8   # a definition this short goes in whole
SHORT_METHOD_LINES = 3       # in a class outline, a method this short goes in whole
DOCSTRING_LINES = 6          # at most this many lines of a docstring


def _text(node) -> str:
    return node.text.decode("utf-8", errors="replace")


def _docstring(body) -> Optional[object]:
    """The docstring statement of a block, or None."""
    if body is None:
        return None
    first = next((c for c in body.named_children if c.type != "comment"), None)
    if first is not None and first.type == "expression_statement" and first.named_children \
            and first.named_children[0].type == "string":
        return first
    return None


def _clip_docstring(lines: List[str]) -> List[str]:
    if len(lines) <= DOCSTRING_LINES:
        return lines
    indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
    quote = '"""' if '"""' in lines[0] else "'''"
    return lines[: DOCSTRING_LINES - 1] + [indent + quote]


def _definition_outline(node, lines: List[str], short: int) -> List[str]:
    """A function or class definition (decorated or not) as outline lines."""
    start, end = node.start_point[0], node.end_point[0]
    if end - start + 1 <= short:
        return lines[start:end + 1]
    inner = node.child_by_field_name("definition") if node.type == "decorated_definition" else node
    body = inner.child_by_field_name("body") if inner is not None else None
    if body is None or body.start_point[0] <= start:
        return lines[start:end + 1][:short]
    head = lines[start:body.start_point[0]]
    indent = " " * body.start_point[1]
    doc = _docstring(body)
    out = list(head)
    if doc is not None:
        out += _clip_docstring(lines[doc.start_point[0]:doc.end_point[0] + 1])
    members = []
    if inner.type == "class_definition":
        for child in body.named_children:
            if doc is not None and child.start_byte == doc.start_byte:
                continue
            if child.type in ("function_definition", "decorated_definition"):
                members += _definition_outline(child, lines, SHORT_METHOD_LINES)
            elif child.type == "expression_statement" and child.end_point[0] - child.start_point[0] < 2:
                members += lines[child.start_point[0]:child.end_point[0] + 1]
    return out + (members or [indent + "..."])


def _defined_name(node) -> Optional[str]:
    inner = node.child_by_field_name("definition") if node.type == "decorated_definition" else node
    if inner is not None and inner.type in ("function_definition", "class_definition"):
        name = inner.child_by_field_name("name")
        return _text(name) if name is not None else None
    if node.type == "expression_statement" and node.named_children and node.named_children[0].type == "assignment":
        left = node.named_children[0].child_by_field_name("left")
        return _text(left) if left is not None and left.type == "identifier" else None
    return None


@lru_cache(maxsize=256)
def top_level_outlines(text: str) -> Dict[str, str]:
    """name -> outline text of each top-level function, class and simple assignment of a Python
    file (the first definition of a name wins). Cached by the text: a workspace file's text is
    the same string object until it changes."""
    tree = syntax.parse(text, "python")
    if tree is None:
        return {}
    lines = text.split("\n")
    out: Dict[str, str] = {}
    for node in tree.root_node.named_children:
        name = _defined_name(node)
        if not name or name in out:
            continue
        if node.type == "expression_statement":
            start, end = node.start_point[0], node.end_point[0]
            body = lines[start:end + 1] if end - start < 3 else [lines[start].rstrip() + "  # ..."]
        else:
            body = _definition_outline(node, lines, SHORT_DEFINITION_LINES)
        out[name] = "\n".join(body).rstrip() + "\n"
    return out


def outline(text: str, names: Sequence[str]) -> List[Tuple[str, str]]:
    """(name, outline) of the given names that `text` defines at its top level, in `names` order."""
    defined = top_level_outlines(text)
    seen, out = set(), []
    for name in names:
        if name in defined and name not in seen:
            seen.add(name)
            out.append((name, defined[name]))
    return out
