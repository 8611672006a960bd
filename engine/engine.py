"""Engine: load a checkpoint once, then stream infills from it.

The composition root. Engine.load resolves a name to a folder (loading/resolve.py), reads
config.json and the tokenizer, builds the model in the weights' form that device and dtype call
for (model/forms.py: nothing but safetensors, GGUF and JSON is read, no checkpoint code), and
keeps the context cache between requests so that keystrokes reuse the keys/values of the
unchanged context; each request gets a fresh decoder (decoding/verify.py for causal models,
decoding/diffusion.py for the diffusion families) and a drafter attached here.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Iterator, Optional, Union


from engine.api import InfillRequest, InfillResult, InfillUpdate
from engine.decoding.diffusion import DiffusionDecoder
from engine.decoding.run import DecoderBase
from engine.decoding.prompt import FILE_SEP, PREFILL_CHUNK, REPO_NAME
from engine.decoding.verify import CausalDecoder
from engine.errors import CheckpointError
from engine.kernels.cuda.graph import attach_cuda_graphs
from engine.loading.config import ModelConfig
from engine.loading.resolve import resolve_model_path
from engine.loading.tokenizer import TextTokenizer
from engine.model.forms import load_model, packed_weights, pick_device, pick_dtype
from engine.model.kvcache import ContextCache
from engine.model.packed import CodesEmbedding, HalfLinear
from engine.model.transformer import DecoderModel


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
        model = load_model(folder, cfg, dtype, device, torch_dtype, kernels)
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

    def decoder(self) -> DecoderBase:
        """A fresh decoder for one request (the context cache is the engine's)."""
        if self.cfg.attention == "causal":
            return CausalDecoder(self.model, self.tokenizer, self.cfg, self.context_cache, adapter=self.adapter,
                                 head=self.head)
        return DiffusionDecoder(self.model, self.tokenizer, self.cfg, self.context_cache)

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
            if req.suffix_reuse:
                dec.reuse_shifted_suffix(ctx, cancel)
            return dec.prefill(ctx, chunk, cancel, settled=dec.settled_tokens(ctx), approximate_ok=req.suffix_reuse)

    @property
    def reads_repo_layout(self) -> bool:
        """Whether `InfillRequest.repo` reaches the model: a causal FIM model whose tokenizer has
        the repo layout's tokens (decoding/prompt.py); callers render other files another way."""
        return (self.cfg.attention == "causal" and self.cfg.fim_middle_id is not None
                and None not in (self.tokenizer.token_id(REPO_NAME), self.tokenizer.token_id(FILE_SEP)))

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
