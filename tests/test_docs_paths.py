"""Everything the docs name is in the repository, and no doc or test points outside the checkout.

Checked files: README.md, docs/*.md, editors/**/README.md, and (for paths outside the checkout)
every test file. A "repository path" is a backticked or code-block word that starts with one of
the checkout's top-level folders (engine/, dllm_lsp/, scripts/, ...); it must exist (a glob may
match). Build outputs that the docs tell you to make (a .vsix) are the only exception.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "editors").rglob("README.md"))]
DOCS = [p for p in DOCS if "node_modules" not in p.parts]
TOP = ("engine", "dllm_lsp", "scripts", "tests", "docs", "editors", "examples", ".ci")
BUILT = (".vsix",)
PATH_WORD = re.compile(r"(?<![\w./~-])((?:%s)/[\w./*-]*)" % "|".join(re.escape(t) for t in TOP))


def named_paths(text: str):
    quoted = re.findall(r"`([^`\n]+)`", text) + re.findall(r"```[\w]*\n(.*?)```", text, flags=re.S)
    for chunk in quoted:
        for word in PATH_WORD.findall(chunk):
            yield word.rstrip(".,:;)")


def test_every_path_the_docs_name_exists():
    missing, checked = [], 0
    for doc in DOCS:
        for word in named_paths(doc.read_text(encoding="utf-8")):
            if word.endswith(BUILT):
                continue
            checked += 1
            exists = any(ROOT.glob(word.rstrip("/"))) if "*" in word else (ROOT / word).exists()
            if not exists:
                missing.append(f"{doc.relative_to(ROOT)}: {word}")
    assert checked > 30                                  # the scan found the docs' paths
    assert missing == []


def escapes(f: Path, line: str) -> bool:
    """Does `line` of file `f` name ../shared or a relative path that leaves the checkout?"""
    if "../shared" in line:
        return True
    return any(ROOT not in (f.parent / rel).resolve().parents for rel in re.findall(r"(?<![\w.])((?:\.\./)+[\w.-]*)", line))


def test_no_doc_or_test_points_outside_the_checkout():
    files = DOCS + sorted((ROOT / "tests").rglob("*.py")) + [ROOT / "scripts" / "gpu_check.sh"]
    files = [f for f in files if f != Path(__file__).resolve()]           # this file names the pattern
    outside = [f"{f.relative_to(ROOT)}:{n}: {line.strip()}" for f in files
               for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if escapes(f, line)]
    # the released checkpoints' configs are tests/fixtures/model_configs/, the design map docs/ARCHITECTURE.md
    assert outside == []
