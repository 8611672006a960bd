"""The denoising loop: a span of masks, one forward pass per step, a policy commits the confident ones.

Two canvases:
- bidirectional (LLaDA, Dream, Qwen2-style): `[BOS] prefix [MASK]*m suffix [EOS]`, full
  attention; the span is decoded in blocks of B left to right. cache="none" recomputes the
  canvas every step (exact); "prefix" and "dual" are Fast-dLLM's approximations: the first
  step of each block runs the full canvas and keeps its keys/values, later steps of the
  block recompute only the block and what follows it ("prefix") or only the block ("dual").
- block-causal (our embedded model, SDAR-style): context `<fim_suffix> suffix <fim_prefix>
  prefix <fim_middle>` is token-causal, then blocks of B masks, bidirectional inside a block,
  causal across blocks. The cache is exact: each step's query is the tokens not yet in the
  cache (new context tokens, or the block just finished) plus the current block, so no
  forward pass is spent only on bookkeeping. cache="none" recomputes everything (the oracle).

Once a stop token (EOS/pad) is committed at span index k, the span ends at k and the
decoder stops as soon as everything before k is committed. After every forward pass the
loop yields an InfillUpdate; `stable` (committed left to right) only grows. The cancel flag
and the deadline are checked before every forward pass.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, List, Optional

import torch

from engine.api import InfillRequest, InfillResult, InfillUpdate
from engine.loading.config import ModelConfig
from engine.kernels.cuda.graph import step_function
from engine.model.kvcache import ContextCache, kv_cat, kv_len, kv_slice
from engine.model.transformer import DecoderModel
from engine.decoding.policies import choose
from engine.loading.tokenizer import StableText, TextTokenizer

NEVER = -1e30   # logit given to the mask token: it is never a prediction


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


class Decoder:
    """Runs one InfillRequest; construct per request. Yields InfillUpdate, the last one with .result."""

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

    def _should_stop(self) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            self.interrupted = "cancelled"
        elif self.req.deadline_ms is not None and (time.perf_counter() - self.t0) * 1000 >= self.req.deadline_ms:
            self.interrupted = "deadline"
        return self.interrupted is not None

    def _decide(self, rows: torch.Tensor):
        """rows [n, V] logits -> (conf [n], token [n], entropy [n]) on the CPU."""
        rows = rows.float()
        rows[:, self.cfg.mask_id] = NEVER      # finite, so p*log p stays 0 rather than NaN
        if self.generator is None:
            conf, token, entropy, _ = self.model.kernels.decision(rows)
        else:
            logp = torch.log_softmax(rows / self.req.temperature, dim=-1).cpu()
            probs = logp.exp()
            token = torch.multinomial(probs, 1, generator=self.generator).flatten()
            conf = probs.gather(1, token[:, None]).flatten()
            entropy = -(probs * torch.nan_to_num(logp, neginf=0.0)).sum(-1)
        return conf.cpu(), token.cpu(), entropy.cpu()

    def _commit(self, span: Span, positions: List[int], rows: torch.Tensor) -> None:
        """Decide on `positions` (span indices, one logits row each in rows [n, V]) and commit."""
        n_min = self.req.min_new_tokens if self.stop_ids else 0
        early = [i for i, p in enumerate(positions) if p < n_min] if n_min else []
        if early:                               # the span may not end before min_new_tokens
            rows = rows.float().clone()
            rows[torch.tensor(early, device=rows.device)[:, None],
                 torch.tensor(sorted(self.stop_ids), device=rows.device)[None, :]] = NEVER
        conf, token, entropy = self._decide(rows)
        for i, p in enumerate(positions):
            span.predicted[p] = int(token[i])
        req = self.req
        chosen = choose(req.policy, conf, entropy, threshold=req.threshold,
                        entropy_bound=req.entropy_bound, tokens_per_step=req.tokens_per_step)
        for c in sorted(chosen.tolist()):
            p = positions[c]
            if p >= span.end:
                continue
            span.tokens[p], span.committed[p] = int(token[c]), True
            if span.tokens[p] in self.stop_ids:
                span.end = p
        if req.policy != "quota" and span.end < len(span.tokens):
            span.end = self._stop_run_start(span)

    def _stop_run_start(self, span: Span) -> int:
        """Where the span really ends: the committed stop token plus the open positions just
        before it whose current prediction is also a stop token. A model that ends a middle
        predicts eos/pad for the whole tail, but rarely with enough confidence to commit it
        all at once; without this, each tail position would cost one forward pass. The quota
        policy (the one-token-per-step baseline) is left exact."""
        end = span.end
        while end > 0 and not span.committed[end - 1] and span.predicted.get(end - 1) in self.stop_ids:
            end -= 1
        return end

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
                              token_ids=tuple(ids))
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

    def run(self, req: InfillRequest, cancel: Optional[threading.Event] = None) -> Iterator[InfillUpdate]:
        if req.raw_prompt:
            raise ValueError("raw_prompt needs a causal (AR) model; this one fills a masked span")
        self._start(req, cancel)
        with torch.inference_mode():
            if self.cfg.attention == "block_causal":
                yield from self._run_block_causal()
            else:
                yield from self._run_bidirectional()

    # ---- bidirectional canvas --------------------------------------------------------------
    def _run_bidirectional(self) -> Iterator[InfillUpdate]:
        cfg, req = self.cfg, self.req
        m = req.max_new_tokens
        head = [cfg.bos_id] if cfg.bos_id is not None else []
        prefix, suffix = self._fit(self.tok.encode(req.prefix), self.tok.encode(req.suffix), len(head) + m + 1)
        s = len(head) + len(prefix)
        ids = torch.tensor([head + prefix + [cfg.mask_id] * m + suffix + [cfg.eos_id]], device=self.device)
        positions = torch.arange(ids.shape[1], device=self.device)
        span = Span.of_masks(m, cfg.mask_id)
        block = req.block_size or m
        mode = "none" if req.cache == "auto" else req.cache
        shift = 1 if cfg.logit_shift else 0
        for bs in range(0, m, block):
            be = min(m, bs + block)
            block_past = None                                 # prefix/dual: KV kept from the block's first step
            while span.open_positions(bs, be):
                if self._should_stop():
                    yield self._finish(span, span.end)
                    return
                w0, w1, past = 0, ids.shape[1], None         # window of canvas rows to compute
                if block_past is not None:
                    w0, w1, past = s + bs - shift, (s + be if mode == "dual" else ids.shape[1]), block_past
                # span index p is predicted by canvas row s + p - shift
                lo = max(0, w0 - s + shift)
                hi = min(span.end, w1 - s + shift)
                open_all = [p for p in range(lo, hi) if not span.committed[p]]
                first_row = s + open_all[0] - shift - w0                               # project from here
                raw, kvs = self.step(ids[:, w0:w1], positions[w0:w1], past, None, first_row)  # [1, W', V]
                self.forwards += 1
                if mode != "none" and block_past is None:   # built once per block, reused by its steps
                    cut = s + bs - shift
                    block_past = (kv_cat(kv_slice(kvs, 0, cut), kv_slice(kvs, s + be)) if mode == "dual"
                                  else kv_slice(kvs, 0, cut))
                rows = raw[0, [s + p - shift - w0 - first_row for p in open_all]]
                in_block = [i for i, p in enumerate(open_all) if bs <= p < be]
                self._predict(span, open_all, rows, skip=in_block)
                self._commit(span, [open_all[i] for i in in_block], rows[in_block])
                self._write_back(ids, span, s)
                if not span.done():
                    yield self._update(span, span.end)
            if span.end <= be:
                break
        yield self._finish(span, span.end)

    def _predict(self, span: Span, positions: List[int], rows: torch.Tensor, skip: List[int]) -> None:
        """Record argmax guesses for open positions outside the block (for the draft only)."""
        skipped = set(skip)
        others = [i for i in range(len(positions)) if i not in skipped]
        if others:
            guess = rows[others].float()
            guess[:, self.cfg.mask_id] = NEVER
            for i, tok in zip(others, guess.argmax(-1).tolist()):
                span.predicted[positions[i]] = tok

    def _write_back(self, ids: torch.Tensor, span: Span, s: int) -> None:
        """Put committed tokens on the canvas; positions after a stop token become EOS."""
        row = [span.tokens[p] if (span.committed[p] and p < span.end) else self.cfg.mask_id
               for p in range(len(span.tokens))]
        if span.end < len(span.tokens):
            row[span.end:] = [self.cfg.eos_id] * (len(span.tokens) - span.end)
        ids[0, s:s + len(row)] = torch.tensor(row, device=ids.device)

    # ---- block-causal canvas ---------------------------------------------------------------
    def _context_ids(self) -> List[int]:
        cfg, req = self.cfg, self.req
        prefix, suffix = self.tok.encode(req.prefix), self.tok.encode(req.suffix)
        if cfg.uses_fim_tokens:
            prefix, suffix = self._fit(prefix, suffix, 3 + req.max_new_tokens)
            return [cfg.fim_suffix_id] + suffix + [cfg.fim_prefix_id] + prefix + [cfg.fim_middle_id]
        head = [cfg.bos_id] if cfg.bos_id is not None else []
        prefix, _ = self._fit(prefix, [], len(head) + req.max_new_tokens)
        return head + prefix

    def _run_block_causal(self) -> Iterator[InfillUpdate]:
        cfg, req = self.cfg, self.req
        if cfg.logit_shift:
            raise ValueError("block-causal models with shifted logits are not supported")
        m = req.max_new_tokens
        block = req.block_size or cfg.block_size
        exact_cache = req.cache != "none"
        ctx = self._context_ids()
        span = Span.of_masks(m, cfg.mask_id)
        dev = self.device
        if exact_cache:
            n_cached, past = self.context_cache.lookup(ctx)
        else:
            n_cached, past = 0, None
        pending = list(range(n_cached, len(ctx)))  # canvas positions whose KV is not cached yet
        pending_blocks = list(pending)             # block id per pending position (context: token-causal)
        canvas = list(ctx)
        for b, bs in enumerate(range(0, m, block)):
            be = min(m, bs + block)
            base = len(ctx) + bs                     # canvas position of span index bs
            block_id = len(ctx) + b
            while span.open_positions(bs, be):
                if self._should_stop():
                    yield self._finish(span, len(canvas) - len(ctx) + be - bs)
                    return
                block_tokens = span.tokens[bs:be]
                if exact_cache:
                    q_pos = pending + list(range(base, base + be - bs))
                    q_ids = [canvas[p] for p in pending] + block_tokens
                    q_blocks = pending_blocks + [block_id] * (be - bs)
                else:
                    q_pos = list(range(base + be - bs))
                    q_ids = canvas + block_tokens
                    q_blocks = list(range(len(ctx))) + [len(ctx) + i // block for i in range(bs)] + [block_id] * (be - bs)
                qb = torch.tensor(q_blocks, device=dev)
                mask = None
                if len(set(q_blocks)) > 1:
                    own = qb[None, :] <= qb[:, None]                                      # [Tq, Tq]
                    mask = torch.cat([torch.ones(len(q_ids), kv_len(past), dtype=torch.bool, device=dev), own], 1)
                n_pending = len(q_ids) - (be - bs)
                raw, kvs = self.step(torch.tensor([q_ids], device=dev), torch.tensor(q_pos, device=dev),
                                     past, mask, n_pending)                               # [1, be-bs, V]
                self.forwards += 1
                if exact_cache and pending:
                    past = kv_cat(past, kv_slice(kvs, 0, n_pending))
                    if pending[-1] < len(ctx):
                        self.context_cache.store(ctx, past)
                    pending, pending_blocks = [], []
                open_pos = span.open_positions(bs, be)
                rows = raw[0, [p - bs for p in open_pos]]
                self._commit(span, open_pos, rows)
                if not span.done():
                    yield self._update(span, len(canvas) - len(ctx) + be - bs)
            if span.end <= be:
                break
            pending = list(range(base, base + be - bs))
            pending_blocks = [block_id] * (be - bs)
            canvas += span.tokens[bs:be]
        yield self._finish(span, min(span.end, m))
