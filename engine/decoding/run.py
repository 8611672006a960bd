"""What every decoder shares: the span being generated and one request's bookkeeping.

`Span` holds the generated tokens (committed or not) and the latest prediction at each slot;
`DecoderBase` starts a request (its stop tokens, sampler, clock), reads the cancel flag and the
deadline before every forward pass, turns the span into InfillUpdates (`stable` only grows,
`draft` shows the predictions too) and the final InfillResult, and cuts a prompt to the model's
positions. The diffusion loop (diffusion.py) and the verify loop (verify.py) build on it; each
decides and commits tokens its own way.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from engine.api import DraftStats, InfillRequest, InfillResult, InfillUpdate
from engine.loading.config import ModelConfig
from engine.kernels.cuda.graph import step_function
from engine.model.kvcache import ContextCache
from engine.model.transformer import DecoderModel
from engine.loading.tokenizer import StableText, TextTokenizer


@dataclass
class Span:
    """The tokens being generated. tokens [m] (mask id where undecided), committed [m] bool."""

    tokens: List[int]
    committed: List[bool]
    end: int                                   # positions >= end are dropped (after a stop token)
    predicted: dict = field(default_factory=dict)   # index -> latest argmax, for the draft

    @classmethod
    def of_masks(cls, m: int, mask_id: int) -> "Span":
        return cls([mask_id] * m, [False] * m, m)

    def open_positions(self, lo: int, hi: int) -> List[int]:
        return [i for i in range(lo, min(hi, self.end)) if not self.committed[i]]

    def stable_ids(self) -> List[int]:
        out = []
        for i in range(self.end):
            if not self.committed[i]:
                break
            out.append(self.tokens[i])
        return out

    def draft_ids(self) -> List[int]:
        out = []
        for i in range(self.end):
            tok = self.tokens[i] if self.committed[i] else self.predicted.get(i)
            if tok is None:
                break
            out.append(tok)
        return out

    def done(self) -> bool:
        return all(self.committed[: self.end])


class DecoderBase:
    """What every decoder shares: one InfillRequest per instance (construct per request), the
    cancel flag and deadline read before each pass, the stable/draft text of each update and
    the final InfillResult. The families' loops live in their own modules (diffusion.py,
    verify.py)."""

    def __init__(self, model: DecoderModel, tokenizer: TextTokenizer, cfg: ModelConfig,
                 context_cache: Optional[ContextCache] = None):
        self.model, self.tok, self.cfg = model, tokenizer, cfg
        self.context_cache = context_cache if context_cache is not None else ContextCache()
        self.device = model.device
        self.step = step_function(model)        # model.forward, or its CUDA-graph replay (kernels/cuda/graph.py)

    # ---- shared step machinery -------------------------------------------------------------
    def _start(self, req: InfillRequest, cancel: Optional[threading.Event]):
        if req.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        self.req, self.cancel = req, cancel
        self.t0 = time.perf_counter()
        self.forwards = 0
        self.stop_ids = self.cfg.stop_ids if req.stop_at_eos else frozenset()
        self.stable = StableText(self.tok)
        self.generator = torch.Generator().manual_seed(req.seed) if req.temperature > 0 else None
        self.interrupted: Optional[str] = None
        self.stats = DraftStats()
        self.runner_ups: List[tuple] = []       # (second choice, logit gap) per committed token (runner_ups)

    def _should_stop(self) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            self.interrupted = "cancelled"
        elif self.req.deadline_ms is not None and (time.perf_counter() - self.t0) * 1000 >= self.req.deadline_ms:
            self.interrupted = "deadline"
        return self.interrupted is not None

    def _update(self, span: Span, total: int, result: Optional[InfillResult] = None) -> InfillUpdate:
        stable = self.stable.update(span.stable_ids())
        draft = self.tok.safe_decode(span.draft_ids())
        return InfillUpdate(stable=stable, draft=draft, forwards=self.forwards,
                            committed=sum(span.committed[: span.end]), total=total, result=result)

    def _finish(self, span: Span, total: int) -> InfillUpdate:
        if self.interrupted == "deadline":
            ids = span.draft_ids()
        elif self.interrupted == "cancelled":
            ids = span.stable_ids()
        else:
            ids = span.tokens[: span.end]
        ids = [i for i in ids if i not in self.stop_ids]
        reason = self.interrupted or ("eos" if span.end < len(span.tokens) else "length")
        result = InfillResult(text=self.tok.decode(ids), forwards=self.forwards, new_tokens=len(ids),
                              ms=(time.perf_counter() - self.t0) * 1000, finish_reason=reason,
                              token_ids=tuple(ids), drafts=self.stats,
                              runner_ups=tuple(self.runner_ups[:len(ids)]))
        return self._update(span, total, result)

    def _fit(self, prefix: List[int], suffix: List[int], fixed: int):
        """Cut the prefix (from the left) and suffix (from the right) to fit max_position."""
        room = self.cfg.max_position - fixed
        if room <= 0:
            raise ValueError(f"max_new_tokens too large for this model ({self.cfg.max_position} positions)")
        if len(prefix) + len(suffix) > room:
            keep_suffix = min(len(suffix), room // 4)
            keep_prefix = room - keep_suffix
            prefix, suffix = prefix[max(0, len(prefix) - keep_prefix):], suffix[:keep_suffix]
        return prefix, suffix
