"""The repository as context: definitions behind the names a file imports, and recently edited chunks.

    files = repo_files(path, text, cursor_line, "python", read, budget, count, recent=ring.others(path))
    # -> [RepoFile(path, text), ...] for the engine's repo layout, oldest first, nearest last

Two sources, both chosen so that typing on a line does not change them (the engine keeps the
keys/values of an unchanged context, and these files go in front of everything):

- **Definitions** (`definitions`): tree-sitter reads the file's imports (the module's top level,
  and `if`/`try` blocks there). Each imported module that lies in the workspace (`module_paths`:
  relative imports from the file's folder, absolute ones from the root or `src/`) is read with
  `read(path)`, and the definitions of the names taken from it are outlined (core/outline.py). For `import pkg.mod as m` (or
  `from pkg import mod`) the names are those the file uses as `m.NAME`. When they do not all
  fit, those used in the top-level statement around the cursor go first, then those used
  elsewhere in the file; the cursor's own line is never read, so typing on a line does not
  change the choice (a new line, or moving to another function, may).
- **Recently edited or viewed chunks** of other files (`RecentChunks`, a ring buffer as llama.vim
  keeps): the lines around an edit or a cursor rest in another document. The ring changes only
  when another document is edited or viewed, never while typing in this one.

Within `budget` tokens the definitions come first (in import order), then the newest chunks.
Only Python has definitions today; any language gets recent chunks. Pure: reading files is the
caller's `read` (runtime/workspace.py reads the disk, open documents first).
"""
from __future__ import annotations

import posixpath
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import dllm_lsp.core.syntax as syntax
from dllm_lsp.core.outline import outline, top_level_outlines

Read = Callable[[str], Optional[str]]      # workspace-relative posix path -> text, or None
TokenCounter = Callable[[str], int]

RING_SIZE = 8                # recent chunks kept
CHUNK_LINES = 32             # lines per recent chunk (half above the edit, half below)


@dataclass(frozen=True)
class RepoFile:
    """One file of the repo layout: its workspace-relative path and the text shown for it."""
    path: str
    text: str


@dataclass(frozen=True)
class Import:
    """One imported module: `level` leading dots, the dotted `module` ("" for `from . import x`),
    the names taken from it ((name, local alias), ...), and the local alias of the module itself
    when the module is bound (`import a.b as m`, `import a`), else ""."""
    level: int
    module: str
    names: Tuple[Tuple[str, str], ...] = ()
    bound_as: str = ""


# ---- imports ----------------------------------------------------------------------------------

def _lines(text: str) -> List[str]:
    return text.split("\n")


def _text(node) -> str:
    return node.text.decode("utf-8", errors="replace")


def _import_nodes(root) -> List:
    """Import statements at the module's top level and one level into if/try blocks there."""
    out, stack = [], list(root.children)
    while stack:
        node = stack.pop(0)
        if node.type in ("import_statement", "import_from_statement"):
            out.append(node)
        elif node.type in ("if_statement", "try_statement", "else_clause", "except_clause",
                           "finally_clause", "elif_clause", "block"):
            stack[:0] = list(node.children)
    return out


def imports(text: str, language_id: str = "python") -> List[Import]:
    """The file's imports, in source order (Python; [] for other languages or without a grammar)."""
    return [imp for imp, _ in _imports_and_rows(text, language_id)]


def _imports_and_rows(text: str, language_id: str) -> List[Tuple[Import, Tuple[int, int]]]:
    """Each import with the first and last line of its statement."""
    if language_id != "python":
        return []
    tree = syntax.parse(text, language_id)
    if tree is None:
        return []
    out: List[Tuple[Import, Tuple[int, int]]] = []
    for node in _import_nodes(tree.root_node):
        rows = (node.start_point[0], node.end_point[0])
        if node.type == "import_statement":          # import a.b [as m], c
            for child in node.named_children:
                if child.type == "dotted_name":
                    name = _text(child)
                    out.append((Import(0, name, bound_as=name), rows))
                elif child.type == "aliased_import":
                    target, alias = child.child_by_field_name("name"), child.child_by_field_name("alias")
                    if target is not None and alias is not None:
                        out.append((Import(0, _text(target), bound_as=_text(alias)), rows))
            continue
        source = node.child_by_field_name("module_name")
        if source is None:
            continue
        level, module = 0, _text(source)
        if source.type == "relative_import":
            dots = "".join(_text(c) for c in source.children if c.type == "import_prefix")
            level = dots.count(".")
            module = "".join(_text(c) for c in source.children if c.type == "dotted_name")
        names = []
        for child in node.children_by_field_name("name"):
            if child.type == "dotted_name":
                names.append((_text(child), _text(child)))
            elif child.type == "aliased_import":
                target, alias = child.child_by_field_name("name"), child.child_by_field_name("alias")
                if target is not None and alias is not None:
                    names.append((_text(target), _text(alias)))
        if names:
            out.append((Import(level, module, tuple(names)), rows))
    return out


def module_paths(imp_level: int, module: str, current_path: str) -> List[str]:
    """Workspace-relative candidate files of a module, in the order to try (posix paths)."""
    parts = [p for p in module.split(".") if p]
    if imp_level:
        folder = [p for p in posixpath.dirname(current_path).split("/") if p]
        if imp_level - 1 > len(folder):                      # above the root
            return []
        bases = ["/".join(folder[:len(folder) - (imp_level - 1)])]
    else:
        bases = ["", "src"]
    out = []
    for base in bases:
        stem = posixpath.join(base, *parts) if parts else base
        if parts:
            out.append(stem + ".py")
        out.append(posixpath.join(stem, "__init__.py") if stem else "__init__.py")
    return [posixpath.normpath(p) for p in out if not posixpath.normpath(p).startswith("..")]


# ---- what goes in -----------------------------------------------------------------------------

_ATTRIBUTE = r"(?<![\w.]){alias}\.([A-Za-z_]\w*)"


def _attributes_used(text: str, alias: str) -> List[str]:
    """NAME for each `alias.NAME` in text, first use first, without repeats."""
    seen, out = set(), []
    for m in re.finditer(_ATTRIBUTE.format(alias=re.escape(alias)), text):
        if m.group(1) not in seen:
            seen.add(m.group(1))
            out.append(m.group(1))
    return out


def _read_first(paths: Sequence[str], read: Read) -> Tuple[Optional[str], Optional[str]]:
    for path in paths:
        text = read(path)
        if text is not None:
            return path, text
    return None, None


@dataclass(frozen=True)
class Definition:
    """One imported definition: the module file it is in, its outline, and how near the cursor
    its name is used (2: in the top-level statement around the cursor, 1: elsewhere in the file,
    0: imported only; the cursor's line never counts)."""
    path: str
    text: str
    nearness: int


def enclosing_lines(lines: Sequence[str], cursor_line: int) -> Tuple[int, int]:
    """[first, end) lines of the top-level statement around `cursor_line` (indentation only):
    from the nearest unindented code line at or above it to the next one below."""
    first = cursor_line
    while first > 0 and not (lines[first][:1].strip() and not lines[first].startswith(("#", ")", "]", "}"))):
        first -= 1
    while first > 0 and lines[first - 1].startswith("@"):
        first -= 1
    end = cursor_line + 1
    while end < len(lines) and not (lines[end][:1].strip() and not lines[end].startswith(("#", ")", "]", "}"))):
        end += 1
    return first, end


def names_used(text: str, names: Sequence[str]) -> set:
    """Those of `names` (plain or dotted, e.g. `m.f`) that `text` uses, not as an attribute of
    something else: one scan of the text."""
    if not names:
        return set()
    pattern = "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True))
    return set(re.findall(rf"(?<![\w.])({pattern})(?!\w)", text))


def definitions(path: str, text: str, cursor_line: int, language_id: str, read: Read) -> List[Definition]:
    """The definitions of the names the file takes from workspace modules, in import order.
    The cursor's line (0-based) and the import statements are left out of every scan of uses,
    so a half-typed name never changes the choice."""
    if language_id != "python":
        return []
    found_imports = _imports_and_rows(text, language_id)
    lines = _lines(text)
    unread = {cursor_line}.union(*(range(a, b + 1) for _, (a, b) in found_imports))
    first, end = enclosing_lines(lines, cursor_line) if lines else (0, 0)
    near = "\n".join(line for i, line in enumerate(lines[first:end], first) if i not in unread)
    body = "\n".join(line for i, line in enumerate(lines) if i not in unread)

    taken: List[Tuple[str, str, str]] = []                  # (module path, outline, the local name)
    for imp, _ in found_imports:
        found, source = _read_first(module_paths(imp.level, imp.module, path), read)
        if imp.bound_as:                                     # import a.b [as m]: m.NAME uses
            if source is not None and found != path:
                taken += [(found, o, f"{imp.bound_as}.{n}")
                          for n, o in outline(source, _attributes_used(body, imp.bound_as))]
            continue
        if source is not None and found != path:
            local = dict(imp.names)
            taken += [(found, o, local[n]) for n, o in outline(source, list(local))]
        for name, alias in imp.names:                        # from pkg import mod: mod.NAME uses
            if source is not None and name in top_level_outlines(source):
                continue
            sub = f"{imp.module}.{name}" if imp.module else name
            found_mod, mod_text = _read_first(module_paths(imp.level, sub, path), read)
            if mod_text is not None and found_mod != path:
                taken += [(found_mod, o, f"{alias}.{n}")
                          for n, o in outline(mod_text, _attributes_used(body, alias))]
    local_names = [name for _, _, name in taken]
    near_names, body_names = names_used(near, local_names), names_used(body, local_names)
    return [Definition(module, text_of, 2 if name in near_names else 1 if name in body_names else 0)
            for module, text_of, name in taken]


class RecentChunks:
    """A ring buffer of chunks of recently edited or viewed documents (newest last).

    add(path, text, line) keeps the CHUNK_LINES lines around `line`; a chunk of the same file that
    overlaps it by half or more is replaced, and the oldest goes when RING_SIZE are kept."""

    def __init__(self, size: int = RING_SIZE, lines: int = CHUNK_LINES):
        self.size, self.lines = size, lines
        self.chunks: List[Tuple[str, int, str]] = []        # (path, first line, text)

    def add(self, path: str, text: str, line: int) -> None:
        all_lines = _lines(text)
        first = max(0, min(line - self.lines // 2, len(all_lines) - self.lines))
        chunk = "\n".join(all_lines[first:first + self.lines]).strip("\n")
        if not chunk.strip():
            return
        self.chunks = [c for c in self.chunks if c[0] != path or abs(c[1] - first) * 2 >= self.lines]
        self.chunks.append((path, first, chunk + "\n"))
        del self.chunks[:-self.size]

    def forget(self, path: str) -> None:
        self.chunks = [c for c in self.chunks if c[0] != path]

    def others(self, path: str) -> List[RepoFile]:
        """The chunks of other files, oldest first."""
        return [RepoFile(p, t) for p, _, t in self.chunks if p != path]


_MEMO: "OrderedDict[tuple, List[Definition]]" = OrderedDict()
MEMO_SIZE = 8


def remembered_definitions(path: str, text: str, cursor_line: int, language_id: str, read: Read,
                           generation) -> List[Definition]:
    """`definitions`, remembered while the file but its cursor line, the cursor's top-level
    statement and `generation` (the caller's word that the other files are unchanged) stay the
    same: typing on a line then costs a dictionary lookup, not a parse and a scan of the file."""
    lines = _lines(text)
    if not 0 <= cursor_line < len(lines):
        return definitions(path, text, cursor_line, language_id, read)
    key = (path, language_id, generation, cursor_line, enclosing_lines(lines, cursor_line),
           "\n".join(lines[:cursor_line]), "\n".join(lines[cursor_line + 1:]))
    found = _MEMO.get(key)
    if found is None:
        found = _MEMO[key] = definitions(path, text, cursor_line, language_id, read)
        while len(_MEMO) > MEMO_SIZE:
            _MEMO.popitem(last=False)
    return found


def repo_files(path: str, text: str, cursor_line: int, language_id: str, read: Read, budget: int,
               count: TokenCounter, recent: Sequence[RepoFile] = (), generation=None) -> List[RepoFile]:
    """The files in front of the current one, within `budget` tokens: the definitions, nearest
    uses first (`Definition.nearness`), shown grouped by module in import order; then the newest
    recent chunks that fit, in front of them. With a `generation` the definitions are remembered
    (`remembered_definitions`)."""
    if budget <= 0:
        return []
    found = (definitions(path, text, cursor_line, language_id, read) if generation is None
             else remembered_definitions(path, text, cursor_line, language_id, read, generation))
    used, taken, modules = 0, set(), set()
    for k in sorted(range(len(found)), key=lambda k: -found[k].nearness):
        d = found[k]
        cost = count(d.text) + 2 + (0 if d.path in modules else count(d.path) + 2)
        if used + cost > budget:
            continue
        taken.add(k)
        modules.add(d.path)
        used += cost
    by_module: Dict[str, List[str]] = {}
    for k, d in enumerate(found):
        if k in taken:
            by_module.setdefault(d.path, []).append(d.text)
    chunks: List[RepoFile] = []
    for chunk in reversed(list(recent)):
        cost = count(chunk.text) + count(chunk.path) + 2
        if used + cost > budget:
            break
        chunks.insert(0, chunk)
        used += cost
    return chunks + [RepoFile(p, "\n".join(parts)) for p, parts in by_module.items()]
