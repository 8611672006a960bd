"""Which folder a model name means: "embedded" (the self-trained test model shipped in
engine/assets/embedded_model), a pulled catalog name ("default" = Qwen2.5-Coder-0.5B), a model
folder, a .gguf file or a folder holding one (converted once into a cached folder,
gguf_import.py), or a Hugging Face repo id found offline in the local HF cache. Nothing is
downloaded here."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from engine.errors import ModelNotFoundError
from engine.loading.catalog import EMBEDDED_MODEL_DIR, catalog_entry, pulled_file
from engine.loading.gguf_import import cached_folder, find_gguf


def resolve_model_path(name: Union[str, os.PathLike]) -> Path:
    """A model name or path -> a folder with config.json (a GGUF file is converted once first)."""
    if str(name) == "embedded":
        if not (EMBEDDED_MODEL_DIR / "config.json").is_file():
            raise ModelNotFoundError(f"the embedded model is missing from {EMBEDDED_MODEL_DIR}")
        return EMBEDDED_MODEL_DIR
    if catalog_entry(str(name)) is not None:
        return cached_folder(pulled_file(str(name)))
    path = Path(os.path.expanduser(str(name)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            gguf_file = find_gguf(path)
            if gguf_file is not None:
                return cached_folder(gguf_file)
        return path
    if path.is_file() and path.suffix == ".gguf":
        return cached_folder(path)
    if path.exists():
        raise ModelNotFoundError(f"{path}: not a model (give a .gguf file, or a folder with config.json, "
                                 "tokenizer.json and *.safetensors)")
    parts = str(name).split("/")
    if len(parts) == 2 and all(parts):
        hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
        snapshots = hub / f"models--{parts[0]}--{parts[1]}" / "snapshots"
        found = sorted((p for p in snapshots.glob("*") if (p / "config.json").is_file()),
                       key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
        if found:
            return found[-1]
        raise ModelNotFoundError(f"'{name}' is not in the local Hugging Face cache ({hub}); nothing is "
                                 "downloaded at run time: download it yourself and pass its folder")
    raise ModelNotFoundError(f"model '{name}' not found: give 'default', 'embedded', a .gguf file, a model "
                             "folder, or a Hugging Face repo id that is in the local cache")
