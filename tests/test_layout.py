"""The tree shows the design: folders by layer, imports only pointing down, no cycle, small
modules, and every module named in docs/ARCHITECTURE.md's layout.

The layers, low to high (a module may import its own layer and the ones below):
  engine:   errors, api, eval_data < loading < kernels < model < drafting < decoding < engine.py, the package
            < testing, train < bench
  dllm_lsp: settings < core < runtime < http < lsp < commands, bench < cli
and all of engine sits below all of dllm_lsp.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "dllm_lsp")
LAYERS = [
    ("engine.errors", 0), ("engine.api", 0), ("engine.eval_data", 0), ("engine.loading", 1), ("engine.kernels", 2), ("engine.model", 3),
    ("engine.drafting", 4), ("engine.decoding", 5), ("engine.engine", 6), ("engine", 6),
    ("engine.testing", 7), ("engine.train", 7), ("engine.bench", 8),
    ("dllm_lsp", 10), ("dllm_lsp.settings", 10), ("dllm_lsp.core", 11), ("dllm_lsp.runtime", 12),
    ("dllm_lsp.http", 13), ("dllm_lsp.lsp", 14), ("dllm_lsp.commands", 15), ("dllm_lsp.bench", 15),
    ("dllm_lsp.cli", 16),
]
MAX_LINES = 400
ENGINE_PY_LINES = 150        # the composition root only (issue 28)


def modules() -> Dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The project modules `name` imports (a package's name where no module of the name exists)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)] + ([node.module] if node.module else [])
                module = ".".join(base)
            else:
                module = node.module or ""
            if module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                found.add(full if full in known else module)
    return found - {name}


def layer(module: str) -> int:
    best = max((prefix for prefix, _ in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return dict(LAYERS)[best]


def graph() -> Dict[str, Set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_no_import_points_up_a_layer():
    g = graph()
    up = sorted(f"{m} -> {d}" for m, deps in g.items() for d in deps if layer(d) > layer(m))
    assert up == [], "imports pointing up a layer:\n" + "\n".join(up)


def test_no_import_cycle():
    g = graph()
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(v: str) -> None:                      # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_modules_stay_small():
    too_long = {}
    for path in modules().values():
        rel = path.relative_to(ROOT).as_posix()
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            too_long[rel] = n
    assert too_long == {}, f"modules over {MAX_LINES} lines: {too_long}"
    engine_py = len((ROOT / "engine" / "engine.py").read_text(encoding="utf-8").splitlines())
    assert engine_py <= ENGINE_PY_LINES, engine_py


def layout_names(doc: str) -> Set[str]:
    """Paths named in the first ``` block after '## Layout': a line `<indent><names>  <what>`;
    a name ending in '/' opens a folder for the deeper lines under it."""
    section = doc[doc.index("## Layout"):]
    block = section[section.index("```") + 3:]
    block = block[:block.index("```")]
    names: Set[str] = set()
    folders: List[tuple] = []                      # (indent, path)
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        head = re.split(r"\s{2,}", line.strip())[0]
        while folders and folders[-1][0] >= indent:
            folders.pop()
        base = folders[-1][1] if folders else ""
        for token in head.split():
            names.add(base + token)
            if token.endswith("/"):
                folders.append((indent, base + token))
    return names


def test_every_module_is_named_in_the_architecture_page():
    names = layout_names((ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    missing = sorted(p.relative_to(ROOT).as_posix() for p in modules().values()
                     if p.name != "__init__.py" and p.relative_to(ROOT).as_posix() not in names)
    assert missing == [], f"modules the layout in docs/ARCHITECTURE.md does not name: {missing}"


def test_the_layout_names_only_files_that_exist():
    names = layout_names((ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    gone = sorted(n for n in names if n.startswith(PACKAGES) and not (ROOT / n).exists())
    assert gone == [], f"docs/ARCHITECTURE.md names paths that do not exist: {gone}"
