"""The real code `eval realcode` cuts its holes from: pinned releases of third-party packages.

Each package is a pure-Python wheel from PyPI, pinned by version and sha256. `dllm-lsp pull
realcode` fetches them (`pip download --no-deps --only-binary :all:`: a wheel is only an archive
here, never installed or imported, no sdist ever built), checks each hash and unpacks the `.py`
members of the package's own folders into `<cache>/realcode/<name>-<version>/`; nothing else
downloads them. None of them is in the environment the drafters were trained in (their corpus
is the standard library and the installed packages), in a test or in any tuning.

Two splits, by package: `tuning` (choose settings on it) and `reporting` (quote numbers from
it). The reporting packages are also `bench typing`'s third-party files.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from engine.errors import EngineError

SPLITS = ("tuning", "reporting")


@dataclass(frozen=True)
class SourcePackage:
    name: str           # on PyPI
    version: str
    wheel: str          # the wheel's file name
    sha256: str         # of the wheel
    split: str          # "tuning" | "reporting"

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.version}"


_PINNED = (   # name, version, wheel, its sha256, split
    ("more-itertools", "10.8.0", "more_itertools-10.8.0-py3-none-any.whl",
     "52d4362373dcf7c52546bc4af9a86ee7c4579df9a8dc268be0a2f949d376cc9b", "tuning"),
    ("python-dateutil", "2.9.0.post0", "python_dateutil-2.9.0.post0-py2.py3-none-any.whl",
     "a8b2bc7bffae282281c8140a97d3aa9c14da0b136dfe83f850eea9a5f7470427", "tuning"),
    ("parso", "0.8.5", "parso-0.8.5-py2.py3-none-any.whl",
     "646204b5ee239c396d040b90f9e272e9a8017c630092bf59980beb62fd033887", "tuning"),
    ("boltons", "26.2.0", "boltons-26.2.0-py3-none-any.whl",
     "41942cbce440211bbcf2487ccdc356964ad674f95a01068b8a0dd7a1d1fed036", "reporting"),
    ("toolz", "1.0.0", "toolz-1.0.0-py3-none-any.whl",
     "292c8f1c4e7516bf9086f8850935c799a874039c8bcf959d47b600e4c44a6236", "reporting"),
    ("humanize", "4.17.0", "humanize-4.17.0-py3-none-any.whl",
     "02d0899527760efe18011944f882df4970943b4cdff7b5a0ba7fed43a576ef98", "reporting"),
)
PACKAGES = tuple(SourcePackage(*row) for row in _PINNED)


class SourcesMissing(EngineError):
    """The evaluation sources are not here; the message says how to fetch them."""


def sources_root(root: Optional[Path] = None) -> Path:
    from engine.loading.gguf_import import cache_root
    return (root or cache_root()) / "realcode"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unpack_sources(wheel: Path, dest: Path) -> int:
    """Write the wheel's `.py` members (not its *.dist-info metadata) under `dest`; returns how
    many. A member whose path would leave `dest` is refused."""
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    n = 0
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            parts = Path(info.filename).parts
            if not info.filename.endswith(".py") or any(p.endswith((".dist-info", ".data")) for p in parts):
                continue
            if info.filename.startswith("/") or ".." in parts:
                raise EngineError(f"{wheel.name}: member {info.filename!r} leaves the folder")
            out = tmp / info.filename
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(info))
            n += 1
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return n


def pull_sources(root: Optional[Path] = None, pip: Optional[Sequence[str]] = None,
                 packages: Optional[Sequence[SourcePackage]] = None) -> Path:
    """Fetch, check and unpack every package (default: PACKAGES) not yet unpacked; returns the
    sources' root."""
    packages = PACKAGES if packages is None else packages
    base = sources_root(root)
    downloads = base / "downloads"
    pip = list(pip or [sys.executable, "-m", "pip"])
    for pkg in packages:
        if (base / pkg.folder_name).is_dir():
            continue
        wheel = downloads / pkg.wheel
        if not wheel.is_file():
            downloads.mkdir(parents=True, exist_ok=True)
            cmd = pip + ["download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
                         "-d", str(downloads), f"{pkg.name}=={pkg.version}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not wheel.is_file():
                raise EngineError(f"realcode: could not download {pkg.name} {pkg.version} "
                                  f"({(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no wheel']})")
        digest = file_sha256(wheel)
        if digest != pkg.sha256:
            wheel.unlink()
            raise EngineError(f"realcode: {pkg.wheel} has sha256 {digest}, expected {pkg.sha256}; it was deleted")
        unpack_sources(wheel, base / pkg.folder_name)
    return base


def source_files(split: str, root: Optional[Path] = None,
                 packages: Optional[Sequence[SourcePackage]] = None) -> Dict[str, List[Path]]:
    """package name -> its `.py` files (sorted, no test folders) for the packages (default:
    PACKAGES) of `split`."""
    packages = PACKAGES if packages is None else packages
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} ({' | '.join(SPLITS)})")
    base = sources_root(root)
    out: Dict[str, List[Path]] = {}
    for pkg in packages:
        if pkg.split != split:
            continue
        folder = base / pkg.folder_name
        if not folder.is_dir():
            raise SourcesMissing(f"the evaluation sources are not here ({folder}): run `dllm-lsp pull realcode`")
        out[pkg.name] = sorted(p for p in folder.rglob("*.py")
                               if not any(part.startswith("test") for part in p.relative_to(folder).parts))
    return out
