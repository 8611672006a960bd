"""`dllm-lsp eval realcode`: hole cutting and scoring (pure), the sources' fetch and unpack (a fake pip,
no network), and the command end to end on the tiny GGUF model over a synthetic package."""
import json
import sys
import textwrap
import zipfile

import pytest

import dllm_lsp.bench.realcode_cases as rc
import dllm_lsp.bench.realcode_sources as sources
import dllm_lsp.cli as cli

CORE = textwrap.dedent('''\
    """A package's core module.

    total = compute(values)  (a docstring line: never a hole)
    """
    import os


    def compute(values):
        total = 0
        for value in values:
            if value > 0:
                total += value
                total *= 2
        return os.path.join(str(total), "x")


    class Store:
        def get(self, key, default=None):
            return self.data.get(key, default)
    ''')
USER = textwrap.dedent('''\
    from .core import compute, Store
    from os import path


    def summary(rows):
        store = Store()
        result = compute([len(r) for r in rows])
        return path.basename(str(result))
    ''')
PACKAGE = {"pkg": [("pkg.core", CORE), ("pkg.user", USER)]}


def test_every_hole_put_back_gives_the_file_and_lies_outside_docstrings_and_imports():
    texts = dict(PACKAGE["pkg"])
    holes = rc.holes(PACKAGE, limit=50, seed=3)
    assert {h.kind for h in holes} == set(rc.KINDS)
    for h in holes:
        module = h.hole_id.split("/")[1].split(":")[0]
        assert h.document[:h.offset] + h.expected + h.document[h.offset:] == texts[module], h.hole_id
        assert h.expected.strip() and "docstring" not in h.expected and "import" not in h.expected


def test_the_kinds_cut_where_an_editor_leaves_the_cursor():
    by_kind = {}
    for h in rc.holes(PACKAGE, limit=50, seed=1):
        by_kind.setdefault(h.kind, []).append(h)
    for h in by_kind["line"] + by_kind["crossfile"]:
        line_start = h.document.rfind("\n", 0, h.offset) + 1
        assert not h.document[line_start:h.offset].strip() and "\n" not in h.expected
    for h in by_kind["midline"]:
        rest = h.document[h.offset:].split("\n", 1)[0]
        assert rest and set(rest) <= set(rc.CLOSING), rest         # only the closing run stays after the cursor
    for h in by_kind["block"]:
        assert h.document[:h.offset].rstrip().endswith(":") and h.expected.count("\n") >= 1
    # cross-file: the line uses a name that pkg.user imports from pkg.core, where it is defined
    assert by_kind["crossfile"] and all(h.hole_id.startswith("pkg/pkg.user:") for h in by_kind["crossfile"])
    assert all("compute" in h.expected or "Store" in h.expected for h in by_kind["crossfile"])
    assert not any("path.basename" in h.expected for h in by_kind["crossfile"])   # `path` is not the package's
    # cross-file arguments: the cursor just after the first call of such a name
    args = sorted((h.document[h.document.rfind("\n", 0, h.offset) + 1:h.offset], h.expected) for h in by_kind["crossargs"])
    assert args == [("    result = compute(", "[len(r) for r in rows])")]      # `Store()` leaves under 2 characters


def test_the_sample_is_seeded_and_capped_per_kind():
    a, b = rc.holes(PACKAGE, limit=2, seed=7), rc.holes(PACKAGE, limit=2, seed=7)
    assert a == b
    assert all(sum(h.kind == k for h in a) <= 2 for k in rc.KINDS)


def test_scores():
    assert rc.exact("x = 1  \n", "x = 1") and not rc.exact("x = 2", "x = 1")
    assert rc.levenshtein("kitten", "sitting") == 3
    assert rc.edit_similarity("abc", "abc") == 1.0 and rc.edit_similarity("", "") == 1.0
    assert rc.edit_similarity("abd", "abc") == pytest.approx(2 / 3)
    assert rc.first_line("a\nb") == "a"


def _wheel(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return path


def test_unpack_keeps_the_package_sources_only_and_refuses_a_member_that_leaves_the_folder(tmp_path):
    wheel = _wheel(tmp_path / "p.whl", {"pkg/__init__.py": "", "pkg/core.py": CORE,
                                        "pkg-1.0.dist-info/METADATA": "x", "pkg-1.0.dist-info/x.py": "",
                                        "pkg/data.json": "{}"})
    assert sources.unpack_sources(wheel, tmp_path / "out") == 2
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
                  if p.is_file()) == ["pkg/__init__.py", "pkg/core.py"]
    bad = _wheel(tmp_path / "bad.whl", {"../evil.py": "print(1)"})
    with pytest.raises(sources.EngineError, match="leaves the folder"):
        sources.unpack_sources(bad, tmp_path / "out2")
    assert not (tmp_path / "evil.py").exists()


def test_pull_checks_each_wheel_hash_and_deletes_a_wrong_one(tmp_path):
    """A fake pip writes the wheel; the right hash unpacks it, a wrong one deletes it. The
    command pip gets is a download of one pinned wheel, never an install."""
    wheel_bytes = tmp_path / "src.whl"
    _wheel(wheel_bytes, {"pkg/__init__.py": "", "pkg/core.py": CORE})
    fake_pip = tmp_path / "fake_pip.py"
    fake_pip.write_text(textwrap.dedent(f'''\
        import shutil, sys
        args = sys.argv[1:]
        assert args[:4] == ["download", "--no-deps", "--only-binary", ":all:"], args
        dest = args[args.index("-d") + 1]
        shutil.copy({str(wheel_bytes)!r}, dest + "/pkg-1.0-py3-none-any.whl")
        '''))
    pip = [sys.executable, str(fake_pip)]
    good = sources.SourcePackage("pkg", "1.0", "pkg-1.0-py3-none-any.whl", sources.file_sha256(wheel_bytes), "tuning")
    base = sources.pull_sources(tmp_path / "cache", pip=pip, packages=[good])
    assert (base / "pkg-1.0" / "pkg" / "core.py").read_text() == CORE
    files = sources.source_files("tuning", tmp_path / "cache", packages=[good])
    assert [p.name for p in files["pkg"]] == ["__init__.py", "core.py"]
    wrong = sources.SourcePackage("pkg", "1.0", "pkg-1.0-py3-none-any.whl", "0" * 64, "reporting")
    with pytest.raises(sources.EngineError, match="expected 0000"):
        sources.pull_sources(tmp_path / "other", pip=pip, packages=[wrong])
    assert not (tmp_path / "other" / "realcode" / "downloads" / wrong.wheel).exists()
    with pytest.raises(sources.SourcesMissing, match="dllm-lsp pull realcode"):
        sources.source_files("reporting", tmp_path / "other", packages=[wrong])


def test_eval_realcode_end_to_end_on_the_tiny_model(tiny_gguf_qwen2, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "realcode" / "pkg-1.0" / "pkg"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "core.py").write_text(CORE)
    (folder / "user.py").write_text(USER)
    monkeypatch.setattr(sources, "PACKAGES", (sources.SourcePackage("pkg", "1.0", "w", "0", "reporting"),))
    code = cli.main(["eval", "realcode", "--model", str(tiny_gguf_qwen2), "--sources", str(tmp_path),
                     "--limit", "1", "--threads", "1", "--device", "cpu", "--json"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["packages"] == {"pkg": "1.0"}
    assert set(result["kinds"]) == set(rc.KINDS) | {"all"}
    total = result["kinds"]["all"]
    assert total["holes"] == len(rc.KINDS) and 0 <= total["exact"] <= 1 and 0 <= total["greedy_edit_similarity"] <= 1
    assert out[0].split()[:3] == ["kind", "holes", "exact"]
