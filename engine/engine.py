"""Engine: load a checkpoint folder once, then stream infills from it.

Engine.load resolves "default" (the embedded model shipped in engine/default_model), a
model folder, or a Hugging Face repo id found offline in the local HF cache; it reads
config.json, the tokenizer and the safetensors weights (nothing else, no checkpoint code),
picks the device, dtype and kernel backend once, and keeps the block-causal context cache
between requests so that keystrokes reuse the keys/values of the unchanged context.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Union

import torch

from .api import InfillRequest, InfillResult, InfillUpdate
from .config import ModelConfig
from .cuda_graph import attach_cuda_graphs
from .decode import Decoder
from .errors import CheckpointError, ModelNotFoundError
from .kernels import select_backend
from .kvcache import ContextCache
from .model import DecoderModel
from .tokenizer import TextTokenizer
from .weights import expected_shapes, load_state

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_model_path(name: Union[str, os.PathLike]) -> Path:
    """'default' | a folder | an HF repo id in the local cache -> a folder with config.json."""
    if str(name) == "default":
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            raise ModelNotFoundError(f"the embedded default model is missing from {DEFAULT_MODEL_DIR}")
        return DEFAULT_MODEL_DIR
    path = Path(os.path.expanduser(str(name)))
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFoundError(f"{path}: not a folder (a model is a folder with config.json, "
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
    raise ModelNotFoundError(f"model '{name}' not found: give 'default', a model folder, or a "
                             "Hugging Face repo id that is in the local cache")


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but CUDA is not available")
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, not {dtype!r}")
    return _DTYPES[dtype]


def build_model(cfg: ModelConfig, device: str, dtype: torch.dtype, kernels: str = "auto") -> DecoderModel:
    """A model with uninitialised (meta) parameters: fill it with load_state_dict(..., assign=True)."""
    with torch.device("meta"):
        model = DecoderModel(cfg, select_backend(kernels, device))
    d = cfg.head_dim
    model.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))
    return model


class Engine:
    def __init__(self, model: DecoderModel, tokenizer: TextTokenizer, cfg: ModelConfig, name: str = ""):
        self.model, self.tokenizer, self.cfg, self.name = model.eval(), tokenizer, cfg, name
        self.context_cache = ContextCache()
        self._lock = threading.Lock()
        self.load_ms = 0.0

    @classmethod
    def load(cls, path_or_name: Union[str, os.PathLike] = "default", device: str = "auto",
             dtype: str = "auto", kernels: str = "auto", cuda_graphs="auto") -> "Engine":
        t0 = time.perf_counter()
        folder = resolve_model_path(path_or_name)
        cfg = ModelConfig.from_folder(folder)
        device = pick_device(device)
        torch_dtype = pick_dtype(dtype, device)
        tokenizer = TextTokenizer.from_folder(folder, special_ids=cfg.stop_ids | {cfg.mask_id})
        model = build_model(cfg, device, torch_dtype, kernels)
        state = load_state(cfg, folder, expected_shapes(model), torch_dtype, device)
        model.load_state_dict(state, strict=True, assign=True)
        attach_cuda_graphs(model, cuda_graphs)      # "auto": on for CUDA unless DLLM_CUDA_GRAPHS=0
        if tokenizer.vocab_size > cfg.vocab_size:
            raise CheckpointError(f"{folder}: tokenizer has {tokenizer.vocab_size} tokens but the model "
                                  f"only {cfg.vocab_size} embedding rows")
        engine = cls(model, tokenizer, cfg, name=str(path_or_name))
        engine.load_ms = (time.perf_counter() - t0) * 1000
        return engine

    def stream(self, req: InfillRequest, cancel: Optional[threading.Event] = None) -> Iterator[InfillUpdate]:
        """Updates after every forward pass; the last one carries `.result` (an InfillResult)."""
        with self._lock:
            yield from Decoder(self.model, self.tokenizer, self.cfg, self.context_cache).run(req, cancel)

    def infill(self, req: InfillRequest, cancel: Optional[threading.Event] = None) -> InfillResult:
        last = None
        for last in self.stream(req, cancel):
            pass
        return last.result

    def describe(self) -> dict:
        n_params = sum(p.numel() for p in self.model.parameters())
        return {"name": self.name, "family": self.cfg.family, "attention": self.cfg.attention,
                "parameters": n_params, "device": str(self.model.device), "dtype": str(self.model.dtype).replace("torch.", ""),
                "kernels": self.model.kernels.NAME, "block_size": self.cfg.block_size}
