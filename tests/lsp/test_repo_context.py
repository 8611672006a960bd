"""The repository context (core/repo.py, runtime/workspace.py): imports read with tree-sitter,
definitions outlined, chosen nearest first within a budget, stable while typing on a line; the
ring of recent chunks; the workspace reader's limits; the plan's layout."""
import os

import pytest

import dllm_lsp.core.outline as outline
import dllm_lsp.core.repo as repo
import dllm_lsp.runtime.workspace as workspace_module
from dllm_lsp.core.plan import RepoView, plan_completion
from dllm_lsp.runtime.workspace import MAX_FILE_BYTES, Workspace
from dllm_lsp.settings import Settings

chars = len                                    # 1 "token" per character

UTIL = '''"""Helpers."""
import os

LIMIT = 10


def helper(a, b=2):
    return a + b


def long_one(x, y, *, z=None) -> int:
    """Compute things.

    More words.
    """
    a = 1
    b = 2
    c = 3
    d = 4
    return a + b + c + d + x + y


class Thing(Base):
    """A thing."""
    kind = "x"

    def __init__(self, v):
        self.v = v

    def method(self, a, b):
        x = 1
        y = 2
        z = 3
        return x + y + z
'''

MAIN = '''from .util import helper, long_one as lo, Thing
from . import other
try:
    from pkg.fast import speedy
except ImportError:
    speedy = None


def first():
    return helper(1)


def second():
    t = Thing(3)
    other.ping()
    
'''

OTHER = "def ping():\n    return 'pong'\n\n\ndef unused():\n    pass\n"


def reader(files):
    return lambda path: files.get(path)


FILES = {"pkg/util.py": UTIL, "pkg/other.py": OTHER, "pkg/fast.py": "def speedy(n):\n    return n\n"}


def test_imports_are_read_from_the_top_level_and_try_blocks():
    got = repo.imports(MAIN)
    assert got == [repo.Import(1, "util", (("helper", "helper"), ("long_one", "lo"), ("Thing", "Thing"))),
                   repo.Import(1, "", (("other", "other"),)),
                   repo.Import(0, "pkg.fast", (("speedy", "speedy"),))]
    assert repo.imports("import a.b as m, c\n") == [repo.Import(0, "a.b", bound_as="m"), repo.Import(0, "c", bound_as="c")]
    assert repo.imports("def f(:\n", "javascript") == []


def test_module_paths_resolve_relative_and_absolute_imports():
    assert repo.module_paths(1, "util", "pkg/main.py") == ["pkg/util.py", "pkg/util/__init__.py"]
    assert repo.module_paths(2, "", "pkg/sub/main.py") == ["pkg/__init__.py"]
    assert repo.module_paths(0, "a.b", "x.py") == ["a/b.py", "a/b/__init__.py", "src/a/b.py", "src/a/b/__init__.py"]
    assert repo.module_paths(3, "up", "main.py") == []          # never above the root


def test_outlines_keep_short_definitions_whole_and_cut_long_ones_to_their_signature():
    got = dict(outline.outline(UTIL, ["helper", "long_one", "Thing", "LIMIT", "missing"]))
    assert list(got) == ["helper", "long_one", "Thing", "LIMIT"]
    assert got["helper"] == "def helper(a, b=2):\n    return a + b\n"
    assert got["long_one"] == ('def long_one(x, y, *, z=None) -> int:\n    """Compute things.\n\n    More words.\n'
                               '    """\n    ...\n')
    assert got["Thing"].startswith('class Thing(Base):\n    """A thing."""\n    kind = "x"\n')
    assert "    def __init__(self, v):\n        self.v = v\n" in got["Thing"]       # a short method whole
    assert "    def method(self, a, b):\n        ...\n" in got["Thing"]             # a long one outlined
    assert got["LIMIT"] == "LIMIT = 10\n"


def test_definitions_follow_imports_into_the_workspace_and_rank_uses_near_the_cursor():
    cursor = MAIN.count("\n") - 1                    # the blank line at the end of second()
    found = repo.definitions("pkg/main.py", MAIN, cursor, "python", reader(FILES))
    by_name = {d.text.split("(")[0].split()[-1]: d for d in found}
    assert [d.path for d in found] == ["pkg/util.py"] * 3 + ["pkg/other.py", "pkg/fast.py"]
    assert by_name["Thing"].nearness == 2 and by_name["ping"].nearness == 2     # used in second()
    assert by_name["helper"].nearness == 1                                      # used in first()
    assert by_name["long_one"].nearness == 0                  # imported as lo, never used
    assert by_name["speedy"].nearness == 1                    # `speedy = None` in the except block
    assert "unused" not in by_name                                             # other.NAME: only names used
    # a budget that holds two: the two used around the cursor, shown in import order
    ranked = [d for d in found if d.nearness == 2]
    budget = sum(chars(d.text) + 2 for d in ranked) + chars("pkg/util.py") + chars("pkg/other.py") + 4
    files = repo.repo_files("pkg/main.py", MAIN, cursor, "python", reader(FILES), budget, chars)
    assert [f.path for f in files] == ["pkg/util.py", "pkg/other.py"]
    assert files[0].text.startswith("class Thing") and files[1].text.startswith("def ping")


def test_typing_on_the_cursor_line_never_changes_the_files():
    lines = MAIN.split("\n")
    cursor = len(lines) - 2
    before = repo.repo_files("pkg/main.py", MAIN, cursor, "python", reader(FILES), 120, chars)
    for typed in ("h", "hel", "helper(", "lo(", "other.unused("):
        text = "\n".join(lines[:cursor] + ["    " + typed] + lines[cursor + 1:])
        assert repo.repo_files("pkg/main.py", text, cursor, "python", reader(FILES), 120, chars) == before, typed


def test_a_module_never_feeds_itself_and_unreadable_modules_are_skipped():
    files = {"pkg/main.py": MAIN}
    assert repo.definitions("pkg/main.py", MAIN, 0, "python", reader(files)) == []
    assert repo.definitions("pkg/main.py", "from .main import first\n", 0, "python", reader(files)) == []


def test_recent_chunks_form_a_ring_without_the_current_file():
    ring = repo.RecentChunks(size=3, lines=4)
    text = "\n".join(f"line {i}" for i in range(40))
    ring.add("a.py", text, 10)
    ring.add("a.py", text, 11)                       # overlaps the last chunk of a.py by half or more: replaced
    assert [(c.path, c.text) for c in ring.others("x.py")] == [("a.py", "line 9\nline 10\nline 11\nline 12\n")]
    ring.add("a.py", text, 30)                       # far from it: a second chunk
    ring.add("b.py", "x = 1\n", 0)
    ring.add("c.py", "y = 2\n", 0)                   # the fourth: the oldest goes
    assert [c.path for c in ring.others("x.py")] == ["a.py", "b.py", "c.py"]
    assert [c.path for c in ring.others("b.py")] == ["a.py", "c.py"]
    ring.forget("a.py")
    assert [c.path for c in ring.others("x.py")] == ["b.py", "c.py"]
    ring.add("d.py", "\n\n", 0)                      # a blank chunk is not kept
    assert len(ring.chunks) == 2


def test_recent_chunks_fill_what_the_definitions_leave_newest_first():
    recent = [repo.RepoFile("old.py", "o" * 50 + "\n"), repo.RepoFile("new.py", "n" * 50 + "\n")]
    files = repo.repo_files("pkg/main.py", "x = 1\n", 0, "python", reader({}), 80, chars, recent)
    assert [f.path for f in files] == ["new.py"]
    assert repo.repo_files("pkg/main.py", "x = 1\n", 0, "python", reader({}), 0, chars, recent) == []


def test_the_workspace_reads_under_its_root_with_open_documents_first(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "util.py").write_text(UTIL)
    (root / "big.py").write_text("x" * (MAX_FILE_BYTES + 1))
    (tmp_path / "secret.py").write_text("SECRET = 1\n")
    os.symlink(tmp_path / "secret.py", root / "link.py")
    ws = Workspace([root.as_uri()])
    uri = (root / "pkg" / "main.py").as_uri()
    assert ws.relative(uri) == "pkg/main.py" and ws.name_of(uri) == "proj"
    assert ws.relative((tmp_path / "elsewhere.py").as_uri()) is None
    read = ws.reader(uri, {(root / "pkg" / "other.py").as_uri(): "OPEN = 1\n"})
    assert read("pkg/util.py") == UTIL and read("pkg/util.py") is read("pkg/util.py")   # kept while unchanged
    assert read("pkg/other.py") == "OPEN = 1\n"                  # an open document wins over the disk
    assert read("../secret.py") is None and read("link.py") is None and read("big.py") is None
    assert read("missing.py") is None and read("pkg") is None
    assert Workspace().reader(uri)("pkg/util.py") is None        # no roots: nothing is read
    (root / "pkg" / "util.py").write_text(UTIL + "\nNEW = 2\n")
    os.utime(root / "pkg" / "util.py", ns=(1, 10**18))
    assert read("pkg/util.py") == UTIL                           # looked at less than FRESH_S ago: not again
    monkeypatch.setattr(workspace_module, "FRESH_S", 0.0)
    assert read("pkg/util.py").endswith("NEW = 2\n")             # changed on disk: read again


def test_the_plan_puts_the_files_in_the_repo_layout_or_in_a_comment_header():
    cursor_line = MAIN.count("\n") - 1
    offset = MAIN.rindex("    ") + 4
    assert MAIN.count("\n", 0, offset) == cursor_line
    view = RepoView(name="proj", path="pkg/main.py", read=reader(FILES))
    plan = plan_completion(MAIN, offset, "python", Settings(repo_tokens=2000), repo=view)
    assert plan.request.repo.name == "proj" and plan.request.repo.path == "pkg/main.py"
    assert [p for p, _ in plan.request.repo.files] == ["pkg/util.py", "pkg/other.py", "pkg/fast.py"]
    assert not plan.snippet_header and plan.prefix.startswith("from .util")
    flat = plan_completion(MAIN, offset, "python", Settings(repo_tokens=2000),
                           repo=RepoView(name="proj", path="pkg/main.py", read=reader(FILES), layout=False))
    assert flat.request.repo is None and flat.prefix.startswith("# Compare this snippet from pkg/util.py:\n# def helper")
    assert plan_completion(MAIN, offset, "python", Settings(repo_tokens=0), repo=view).request.repo is None


def test_definitions_are_remembered_while_typing_on_a_line_and_not_across_generations():
    reads = []

    def counting_read(path):
        reads.append(path)
        return FILES.get(path)
    lines = MAIN.split("\n")
    cursor = len(lines) - 2
    first = repo.repo_files("pkg/main.py", MAIN, cursor, "python", counting_read, 2000, chars, generation=1)
    n = len(reads)
    for typed in ("o", "oth", "other.pi"):
        text = "\n".join(lines[:cursor] + ["    " + typed] + lines[cursor + 1:])
        assert repo.repo_files("pkg/main.py", text, cursor, "python", counting_read, 2000, chars, generation=1) == first
    assert len(reads) == n                                      # typing on the line read nothing again
    assert repo.repo_files("pkg/main.py", MAIN, cursor, "python", counting_read, 2000, chars, generation=2) == first
    assert len(reads) > n                                       # another generation: the files are read again
    assert first == repo.repo_files("pkg/main.py", MAIN, cursor, "python", reader(FILES), 2000, chars)
