"""The prompt of a causal FIM model and its prefill, for CausalDecoder (decoding/verify.py).

The prompt is prefix-suffix-middle with the model's FIM tokens (the order Qwen was trained on),
after the repo layout of `req.repo`'s files where the model has its tokens (`repo_ids`), or
the prefix alone, or with `raw_prompt` the prefix's own tokens. A long uncached context is
computed in chunks of PREFILL_CHUNK tokens, each kept in the context cache as soon as it is done;
the cancel flag is read between chunks, and inside a chunk between layers once the chunk lies
past the settled tokens (the lines above the cursor's and the cursor's line but its last
TYPING_MARGIN tokens: what the next key leaves alone), so a keystroke stops stale work within
one layer and what was computed serves the next request.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from engine.decoding.suffix_reuse import plan_reuse, shift_keys
from engine.drafting.attention_head import AttentionHead, HeadRows
from engine.model.transformer import PassStopped, causal_visibility

PREFILL_CHUNK = 64       # context tokens a prefill pass computes between two reads of the cancel flag (measured: 358 tok/s at 64, 309 at 32, 330 in one pass of 512 on a 2-core AVX-512 EPYC)
FIRST_PASS_CONTEXT = 16  # at most this many uncached context tokens go with the first decoding pass (it cannot stop midway)
TYPING_MARGIN = 2        # tokens at the end of the prefix a key may retokenize (settled_tokens)
REPO_NAME, FILE_SEP = "<|repo_name|>", "<|file_sep|>"   # the repo layout's tokens (Qwen2.5-Coder)


class PromptPrefill:
    """Prompt and prefill methods over the decoder's model, tokenizer, config and context cache."""

    def context_ids(self, req) -> List[int]:
        """The prompt: prefix-suffix-middle with the model's FIM tokens, or the prefix alone;
        with `req.raw_prompt` the prefix's own tokens and nothing else."""
        return self.prompt(req)[0]

    def prompt(self, req):
        """(context ids, lead): lead is the tokens the suggestion continues, the prefix of a
        FIM prompt (its middle follows the code before the cursor), else the context itself."""
        cfg = self.cfg
        if req.raw_prompt:
            if req.suffix:
                raise ValueError("raw_prompt takes the whole prompt in `prefix`; `suffix` must be empty")
            prompt, _ = self._fit(self.tok.encode(req.prefix), [], req.max_new_tokens)
            if not prompt:
                raise ValueError("raw_prompt needs a non-empty prompt")
            return prompt, prompt
        prefix, suffix = self.tok.encode(req.prefix), self.tok.encode(req.suffix)
        if cfg.fim_middle_id is not None:
            repo = self.repo_ids(req.repo)
            if repo and len(repo) + len(prefix) + len(suffix) + 3 + req.max_new_tokens > cfg.max_position:
                repo = []                         # the file's own context comes first
            prefix, suffix = self._fit(prefix, suffix, len(repo) + 3 + req.max_new_tokens)
            return repo + [cfg.fim_prefix_id] + prefix + [cfg.fim_suffix_id] + suffix + [cfg.fim_middle_id], prefix
        head = [cfg.bos_id] if cfg.bos_id is not None else []
        prefix, _ = self._fit(prefix, [], len(head) + req.max_new_tokens)
        return head + prefix, head + prefix

    def repo_layout_ids(self) -> Optional[tuple]:
        """(<|repo_name|>, <|file_sep|>) ids where the tokenizer has both, else None."""
        ids = (self.tok.token_id(REPO_NAME), self.tok.token_id(FILE_SEP))
        return ids if None not in ids else None

    def repo_ids(self, repo) -> List[int]:
        """The repo layout in front of the FIM prompt (llama.cpp's /infill builds the same):

            <|repo_name|>name\n <|file_sep|>path\n text\n ... <|file_sep|>current path\n

        [] without files or on a model without the two tokens."""
        layout = self.repo_layout_ids()
        if repo is None or not repo.files or layout is None:
            return []
        repo_name, file_sep = layout
        ids = [repo_name] + self.tok.encode((repo.name or "project") + "\n")
        for path, text in repo.files:
            ids += [file_sep] + self.tok.encode(f"{path}\n{text}" + ("" if text.endswith("\n") else "\n"))
        return ids + [file_sep] + self.tok.encode((repo.path or "file") + "\n")

    def prefill(self, ctx: List[int], chunk: int, cancel=None, settled: Optional[int] = None,
                approximate_ok: bool = False) -> int:
        """Compute and cache the KV of `ctx` in chunks of `chunk` tokens; returns how many tokens
        were computed. `cancel` is read between chunks, and inside a chunk between layers once
        the chunk lies past the first `settled` tokens (None: all of ctx is settled): typing does
        not change the settled tokens (the lines above the cursor's), so a chunk of them is
        finished and kept for the next request, while a chunk of what the next key changes
        (the cursor's line, the suffix after it) is dropped at once. `approximate_ok`: a shifted
        suffix's cached KV (reuse_shifted_suffix) may be continued."""
        rows, limit = self._kept_rows(ctx)
        n_cached, past = self.context_cache.take(ctx, len(ctx), self._kv_shape(), limit=limit,
                                                 approximate_ok=approximate_ok)
        rows = rows.prefix(n_cached) if rows is not None else None
        settled = len(ctx) if settled is None else settled
        computed = 0
        with torch.inference_mode():
            while n_cached < len(ctx):
                if cancel is not None and cancel.is_set():
                    break
                end = min(n_cached + chunk, settled) if n_cached < settled else n_cached + chunk
                part = ctx[n_cached:end]
                pos = torch.arange(n_cached, n_cached + len(part), device=self.device)
                try:                              # past the settled tokens a keystroke stops the chunk between layers
                    hidden, _ = self.model.hidden(torch.tensor([part], device=self.device), pos, past,
                                                  causal_visibility(len(part), n_cached, self.device),
                                                  stop=cancel if n_cached >= settled else None)
                except PassStopped:
                    break
                past.length = n_cached = n_cached + len(part)
                computed += len(part)
                self.context_cache.computed += len(part)
                if rows is not None:
                    rows.add_hidden(hidden[0])
                    rows.sync(self.head, ctx, n_cached - 1)
                self.context_cache.store_buffer(ctx[:n_cached], past, last_hidden=hidden[0, -1], rows=rows)
        return computed

    def _prefill_ahead(self, ctx: List[int], limit: Optional[int]) -> bool:
        """Before a request's first pass: compute the context's uncached tokens in chunks of
        PREFILL_CHUNK, reading the cancel flag between chunks and keeping each chunk in the
        context cache, so that a keystroke stops a stale prefill within one layer of a chunk (the
        chunk is dropped) and the next request continues from what it computed. The last
        FIRST_PASS_CONTEXT uncached tokens are left to the first decoding pass, which computes
        them with its drafts (a pass of its own would read every weight once more). True when it
        stopped on the cancel flag. With `req.suffix_reuse` an unchanged suffix's KV is first
        reused, shifted (reuse_shifted_suffix)."""
        approximate = self.req.suffix_reuse and limit is None
        if approximate:
            self.reuse_shifted_suffix(ctx, self.cancel)
        n_cached = self.context_cache.shared(ctx[:-1], approximate)
        if limit is not None:
            n_cached = min(n_cached, limit)
        end = len(ctx) - FIRST_PASS_CONTEXT
        if end > n_cached:
            self.prefill(ctx[:end], PREFILL_CHUNK, self.cancel, settled=self.settled_tokens(ctx),
                         approximate_ok=approximate)
        return self._should_stop()

    def reuse_shifted_suffix(self, ctx: List[int], cancel=None) -> bool:
        """Approximate (decoding/suffix_reuse.py): when the cached prompt differs from ctx only
        before an unchanged suffix, compute the changed tokens exactly and put the cached
        suffix's KV after them, its keys rotated to the new positions; the cache then holds
        ctx but its last token, the positions from the suffix on marked approximate. False
        when there is nothing to reuse (an attention head's rows, another tail, too much typed
        since the tail was exact) or the cancel flag stopped the changed tokens."""
        cache = self.context_cache
        if isinstance(self.head, AttentionHead) or cache.kv is None or cache.buffer is None:
            return False
        plan = plan_reuse(cache.ids, ctx, self.cfg.fim_suffix_id, cache.shift_debt)
        if plan is None:
            return False
        debt = cache.shift_debt + max(plan.new_start, plan.old_start) - plan.shared
        old = slice(plan.old_start, plan.old_start + plan.length)
        saved = [(k[:, :, old].clone(), v[:, :, old].clone()) for k, v in zip(cache.buffer.k, cache.buffer.v)]
        head = ctx[:plan.new_start]
        self.prefill(head, PREFILL_CHUNK, cancel)
        if cache.ids != head or cache.buffer is None:
            return False                          # stopped (what it computed of the head stays cached)
        buffer, new = cache.buffer, slice(plan.new_start, plan.new_start + plan.length)
        buffer.reserve(new.stop)
        with torch.inference_mode():
            for (k, v), dst_k, dst_v in zip(saved, buffer.k, buffer.v):
                dst_k[:, :, new] = shift_keys(k, plan.delta, self.model.rope, self.model.kernels.apply_rope)
                dst_v[:, :, new] = v
        buffer.length = new.stop
        cache.store_buffer(ctx[:new.stop], buffer)
        cache.mark_approximate(plan.new_start, debt)
        return True

    def settled_tokens(self, ctx: List[int]) -> int:
        """How many leading tokens of the prompt `ctx` typing at the cursor leaves alone: the
        prefix up to its last newline token (the lines above the cursor's), and on the cursor's
        line all but its last TYPING_MARGIN tokens (a key at the cursor retokenizes only the word
        it extends; the tokens before it stay, which a wrong guess costs only a recomputation,
        the cache being keyed by the exact ids). In prefix-suffix-middle order everything after
        the prefix changes with the next key."""
        end = ctx.index(self.cfg.fim_suffix_id) if self.cfg.fim_suffix_id in ctx else len(ctx)
        newlines = self.tok.newline_ids
        line_start = 0
        for i in range(end - 1, -1, -1):
            if ctx[i] in newlines:
                line_start = i + 1
                break
        return max(line_start, end - TYPING_MARGIN)

    def _kept_rows(self, ctx: List[int]):
        """With an attention head: (its rows of the context cache, or fresh empty ones; how many
        positions of ctx they cover, the most of the cached KV a decode may reuse: the head needs
        the final state of every position); else (None, None)."""
        if not isinstance(self.head, AttentionHead):
            return None, None
        kept, covered = self.context_cache.rows_for(self.head, ctx)
        return (kept if kept is not None else HeadRows(self.head)), covered

    def _kv_shape(self):
        """(layers, Hkv, D, dtype, device) of this model's KV, for an empty KVBuffer."""
        return (self.cfg.num_layers, self.cfg.num_kv_heads, self.cfg.head_dim, self.model.dtype, self.device)
