"""Engine: load a checkpoint once, then stream infills from it.

Engine.load resolves "default" (the pulled Qwen2.5-Coder-0.5B GGUF, see loading/catalog.py), another
pulled catalog name, "embedded" (the self-trained model shipped in engine/assets/embedded_model), a
model folder, a .gguf file (or a folder holding one: converted once into a cached folder,
loading/gguf_import.py), or a Hugging Face repo id found offline in the local HF cache; it reads
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

from engine.api import InfillRequest, InfillResult, InfillUpdate
from engine.loading.config import ModelConfig
from engine.kernels.cuda.graph import attach_cuda_graphs
from engine.decoding.verify import PREFILL_CHUNK, CausalDecoder
from engine.decoding.diffusion import Decoder
from engine.loading.catalog import EMBEDDED_MODEL_DIR, catalog_entry, pulled_file
from engine.errors import CheckpointError, ModelNotFoundError
import engine.kernels.cpu.gemm as cpu_gemm
import engine.loading.gguf_codes as gguf_codes
from engine.loading.gguf_import import EXACT_FILE, cached_folder, find_gguf, read_exact
from engine.kernels import select_backend
from engine.model.packed import CodesEmbedding, HalfLinear, fp16_gemm_available, pack_fp16
from engine.model.kvcache import ContextCache
from engine.model.transformer import DecoderModel
from engine.loading.tokenizer import TextTokenizer
from engine.loading.weights import expected_shapes, load_state


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


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


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but CUDA is not available")
    return device


def pick_dtype(dtype: str, device: str, cfg: Optional[ModelConfig] = None) -> torch.dtype:
    """"auto": bf16 on CUDA, fp32 activations on the CPU (pick_weights then multiplies the GGUF's
    codes or fp16 packs). Not bf16 on a CPU even where it has bf16 units (AVX512-BF16): measured
    on such an EPYC (2 threads, the 0.5B default, 600 cached tokens), a bf16 pass took 127 ms for
    1 row and 108-168 for 9-13 against 45 and 101-126 ms for the GGUF codes in fp32, and bf16
    logits tie (8 bits of mantissa) where the rows' sums, which depend on how many rows a pass
    has, break the tie: drafted text then differed from one token per pass. `bfloat16` asks
    for it explicitly."""
    if dtype in ("fp16-weights", "gguf"):
        return torch.float32
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be auto, float32, gguf, fp16-weights, bfloat16 or float16, not {dtype!r}")
    return _DTYPES[dtype]


def pick_weights(dtype: str, device: str, torch_dtype: torch.dtype, cfg: ModelConfig,
                 has_exact: bool = False) -> str:
    """"gguf": the GGUF file's own weights (its quantized matrices' int8 codes, multiplied by our
    CPU kernel; loading/gguf_codes.py), what "auto" picks for a causal (AR) model converted from a GGUF
    (`has_exact`: its folder holds them) on a CPU computing in fp32 where our kernel runs;
    "fp16": the linear layers' weights (the converted bf16 copy) packed as fp16 (model/packed.py),
    "auto"'s choice for other causal models on a CPU with fbgemm; "dense": the weights as loaded."""
    cpu_ar = device.startswith("cpu") and torch_dtype == torch.float32 and cfg.attention == "causal"
    if dtype == "gguf":
        if not (cpu_ar and has_exact and cpu_gemm.library() is not None):
            raise ValueError("dtype gguf needs a causal model converted from a GGUF file (with its exact weights), "
                             "the CPU and our kernel (" + (cpu_gemm.unavailable_reason() or "built") + ")")
        return "gguf"
    if dtype == "fp16-weights":
        if not device.startswith("cpu") or not fp16_gemm_available():
            raise ValueError("dtype fp16-weights needs the CPU and a torch build with fbgemm (x86)")
        return "fp16"
    if dtype == "auto" and cpu_ar and has_exact and cpu_gemm.library() is not None:
        return "gguf"
    if dtype == "auto" and cpu_ar and fp16_gemm_available():
        return "fp16"
    return "dense"


def exact_state(exact, state: dict, tied: bool) -> dict:
    """The tensors of `state` that the GGUF's exact weights replace: its fp32 vectors, and a
    tied embedding table (which stays dense: use_codes_embedding) made from its codes."""
    out = {name: t for name, t in exact.dense.items() if name in state}
    codes = exact.codes.get("embed_tokens.weight")
    if tied and codes is not None:
        out["embed_tokens.weight"] = gguf_codes.dequantize_torch(*codes)
    return out


def use_codes_embedding(model: DecoderModel, exact) -> None:
    """Hold an untied input embedding as the GGUF's codes (CodesEmbedding: rows made at lookup);
    a tied one stays a dense table, since the output projection reads all of it every pass."""
    codes = exact.codes.get("embed_tokens.weight")
    if codes is not None and model.lm_head is not None:
        model.embed_tokens = CodesEmbedding(*codes)


def build_model(cfg: ModelConfig, device: str, dtype: torch.dtype, kernels: str = "auto") -> DecoderModel:
    """A model with uninitialised (meta) parameters: fill it with load_state_dict(..., assign=True)."""
    with torch.device("meta"):
        model = DecoderModel(cfg, select_backend(kernels, device), init_weights=False)
    d = cfg.head_dim
    model.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))
    return model


def packed_weights(packed) -> str:
    """What describe() says of the packed linear layers: "gguf (our AVX2 kernel)" where every
    one multiplies the GGUF's codes, else "fp16 (...)" and whose kernel; "+ fp16" when mixed."""
    kernel = "our AVX2 kernel" if all(m.kernel == "ours" for m in packed) else "fbgemm"
    forms = {m.form for m in packed}
    return f"{'gguf' if forms == {'gguf'} else 'gguf + fp16' if 'gguf' in forms else 'fp16'} ({kernel})"


class Engine:
    def __init__(self, model: DecoderModel, tokenizer: TextTokenizer, cfg: ModelConfig, name: str = ""):
        self.model, self.tokenizer, self.cfg, self.name = model.eval(), tokenizer, cfg, name
        self.context_cache = ContextCache()
        self._lock = threading.Lock()
        self.load_ms = 0.0
        self.adapter = None           # a MaskAdapter (trained mask slots) or None
        self.head = None              # a DraftHead or AttentionHead, or None (at most one of the two)
        self.drafter_path = None

    def load_drafter(self, path: Union[str, os.PathLike, None]) -> None:
        """Attach the trained drafter at `path`: a draft head or trained mask slots, as the file
        says (None: detach; "auto": the shipped one for this model, if any). CheckpointError when
        the file is unreadable or was trained for another model (no drafter is left attached);
        the verifier never changes."""
        from engine.drafting.files import load_named
        self.use_drafter(None)
        self.use_drafter(load_named(path, self.cfg))

    def use_drafter(self, drafter) -> None:
        """Attach a loaded DraftHead, AttentionHead or MaskAdapter (None: none), detaching the current one
        (benches switch drafters this way without reading files)."""
        with self._lock:
            if self.adapter is not None:
                self.adapter.detach_hooks()
            self.adapter, self.head, self.drafter_path = None, None, None
            if drafter is not None:
                self._attach(drafter)
                self.drafter_path = str(getattr(drafter, "path", "")) or None

    def _attach(self, drafter) -> None:
        from engine.drafting.attention_head import AttentionHead
        from engine.drafting.head import DraftHead
        if isinstance(drafter, (DraftHead, AttentionHead)):
            self.head = drafter.bind(self.model).eval()
        else:
            self.adapter = drafter.attach(self.model).eval()

    @classmethod
    def load(cls, path_or_name: Union[str, os.PathLike] = "default", device: str = "auto",
             dtype: str = "auto", kernels: str = "auto", cuda_graphs="auto") -> "Engine":
        t0 = time.perf_counter()
        folder = resolve_model_path(path_or_name)
        cfg = ModelConfig.from_folder(folder)
        device = pick_device(device)
        torch_dtype = pick_dtype(dtype, device, cfg)
        tokenizer = TextTokenizer.from_folder(folder, special_ids=cfg.stop_ids | {cfg.mask_id})
        has_exact = dtype in ("auto", "gguf") and (Path(folder) / EXACT_FILE).is_file()
        weights = pick_weights(dtype, device, torch_dtype, cfg, has_exact=has_exact)
        exact = read_exact(folder, cfg) if weights == "gguf" else None
        # packed weights: read the stored bf16/fp16 tensors as they are and convert each
        # block to fp32 inside the packing threads, so the whole fp32 model never exists at once
        stored = _DTYPES.get(str(cfg.torch_dtype))
        read_as = stored if weights in ("fp16", "gguf") and stored in (torch.bfloat16, torch.float16) else torch_dtype
        model = build_model(cfg, device, read_as, kernels)
        state = load_state(cfg, folder, expected_shapes(model), read_as, device)
        if weights == "gguf":
            state.update(exact_state(exact, state, tied=model.lm_head is None))
        model.load_state_dict(state, strict=True, assign=True)
        if weights in ("fp16", "gguf"):
            del state
            if weights == "gguf":
                use_codes_embedding(model, exact)
            pack_fp16(model, codes=exact.codes if weights == "gguf" else None)
            model.to(torch_dtype)                 # what is left: embedding, norms, biases
        attach_cuda_graphs(model, cuda_graphs)      # "auto": on for CUDA only with DLLM_CUDA_GRAPHS=1
        if tokenizer.vocab_size > cfg.vocab_size:
            raise CheckpointError(f"{folder}: tokenizer has {tokenizer.vocab_size} tokens but the model "
                                  f"only {cfg.vocab_size} embedding rows")
        engine = cls(model, tokenizer, cfg, name=str(path_or_name))
        engine.load_ms = (time.perf_counter() - t0) * 1000
        return engine

    def stream(self, req: InfillRequest, cancel: Optional[threading.Event] = None) -> Iterator[InfillUpdate]:
        """Updates after every forward pass; the last one carries `.result` (an InfillResult)."""
        with self._lock:
            yield from self.decoder().run(req, cancel)

    def decoder(self) -> Decoder:
        """A fresh decoder for one request (the context cache is the engine's)."""
        if self.cfg.attention == "causal":
            return CausalDecoder(self.model, self.tokenizer, self.cfg, self.context_cache, adapter=self.adapter,
                                 head=self.head)
        return Decoder(self.model, self.tokenizer, self.cfg, self.context_cache)

    def warm(self, req: InfillRequest, cancel: Optional[threading.Event] = None, chunk: int = PREFILL_CHUNK) -> int:
        """Prefill the context KV of `req` (causal models) in chunks of `chunk` tokens, checking
        `cancel` between chunks, so that the request itself later computes only what changed.
        Returns the tokens computed (0 for other families, whose caches are per request)."""
        if self.cfg.attention != "causal":
            return 0
        with self._lock:
            dec = self.decoder()
            self.tokenizer.newline_ids            # computed once (~0.15 s) before line requests need it
            ctx = dec.context_ids(req)
            return dec.prefill(ctx, chunk, cancel, settled=dec.settled_tokens(ctx))

    def infill(self, req: InfillRequest, cancel: Optional[threading.Event] = None) -> InfillResult:
        last = None
        for last in self.stream(req, cancel):
            pass
        return last.result

    def describe(self) -> dict:
        packed = [m for m in self.model.modules() if isinstance(m, HalfLinear)]
        codes = [m for m in self.model.modules() if isinstance(m, CodesEmbedding)]
        n_params = sum(p.numel() for p in self.model.parameters()) + sum(m.n_params for m in packed + codes)
        return {"name": self.name, "family": self.cfg.family, "attention": self.cfg.attention,
                "parameters": n_params, "device": str(self.model.device), "dtype": str(self.model.dtype).replace("torch.", ""),
                "weights": (packed_weights(packed) if packed else str(self.model.dtype).replace("torch.", "")),
                "kernels": self.model.kernels.NAME, "block_size": self.cfg.block_size,
                "drafter": self.drafter_path}
