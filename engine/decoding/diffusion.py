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
from typing import Iterator, List, Optional

import torch

from engine.api import InfillRequest, InfillUpdate
from engine.model.kvcache import kv_cat, kv_len, kv_slice
from engine.decoding.policies import choose
from engine.decoding.run import DecoderBase, Span

NEVER = -1e30   # logit given to the mask token: it is never a prediction


class DiffusionDecoder(DecoderBase):
    """The denoising loop for the bidirectional and block-causal families (cfg.attention)."""

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
