"""Decoding an AR-pretrained FIM model (Qwen2.5-Coder) through a block of verified slots.

The model is causal everywhere and its logits are shifted: the output at a slot holding a
real token is the model's exact next-token distribution given everything before it, so the
block after the context verifies itself. Canvas (prefix-suffix-middle, the order Qwen was
trained on):

    <|fim_prefix|> P <|fim_suffix|> S <|fim_middle|> | t0 d1 d2 ... dk
                                                     ^ last committed token, then k drafts

A long uncached context is first computed in chunks (prompt.py: `_prefill_ahead`), each kept in
the context cache as soon as it is done, with the cancel flag read between layers. Each forward
pass takes the inputs whose keys/values are not cached yet (the last 1..FIRST_PASS_CONTEXT
context tokens on the first pass, the last committed token afterwards) followed by the drafts,
and reads the k + 1 output rows from the last input on:
  1. verify: drafts are committed left to right while each equals the argmax of the row before
     it; at the first disagreement the row's own argmax is committed instead, so every pass
     commits at least one token and the text is token for token plain greedy decoding;
  2. the keys/values of the committed inputs are kept, those of rejected drafts dropped;
  3. an InfillUpdate streams `stable` (committed) and `draft` (committed + the drafts still
     standing), which sharpens in place as drafts are confirmed or replaced.

Where drafts come from is the proposers' business (drafting/proposer.py): prompt lookup and the
trained drafter the engine holds (a draft head, or mask slots whose inputs the pass appends
after the drafts). The loop asks each for chains before a pass (`arrange` picks the pass's
chain, or with `req.draft_tree` merges them into one trie verified at once, decoding/tree.py)
and tells each what the pass showed after it. A line completion (`req.ends_at_newline`) ends
each chain with the first token that holds a newline: its caller stops there. What the drafts
did is counted in `self.stats` (DraftStats, returned on the InfillResult).

Sampling (temperature > 0) uses the speculative rejection rule for a deterministic draft: a
draft x is kept with probability p(x), else a token is drawn from p with x removed, so the
output distribution is the model's own.

The context's KV (longest shared token prefix) is reused across requests through the
ContextCache: with prefix-suffix-middle order a keystroke keeps the prefix up to the cursor
and recomputes the rest of the prefix and the suffix. The cache also keeps the final hidden
state of the prompt's last position (the warm-up and a request's first pass store it): a
request whose whole prompt is cached takes its first token from that state through the output
projection (and the draft head its first guesses), so its first pass already verifies drafts
after that token instead of recomputing the last prompt token. That projection is not counted
as a forward pass; the text is the same (the state is the one the pass would compute).
"""
from __future__ import annotations

from typing import Iterator, List, Optional

import torch

from engine.decoding.prompt import PromptPrefill
from engine.decoding.run import DecoderBase, Span
from engine.decoding.tree import DraftTree, accepted_per_chain, tree_visibility, tree_positions, walk
from engine.drafting.attention_head import HeadRows
from engine.drafting.lookup import PromptLookup
from engine.drafting.proposer import Arranged, PassOutcome, Proposer, arrange
from engine.drafting.trained import HeadDrafts, MaskSlotDrafts
from engine.model.kvcache import KVBuffer
from engine.model.transformer import causal_visibility

MIN_FLOAT = float("-inf")


class CausalDecoder(PromptPrefill, DecoderBase):
    """Decoder for cfg.attention == "causal". `lookup` stands in for prompt lookup (a Proposer;
    None: a PromptLookup per request); `adapter` / `head`: the engine's trained drafter."""

    def __init__(self, model, tokenizer, cfg, context_cache=None, lookup: Optional[Proposer] = None,
                 adapter=None, head=None):
        super().__init__(model, tokenizer, cfg, context_cache)
        self.lookup = lookup
        self.adapter = adapter        # MaskAdapter attached to `model`, or None
        self.head = head              # DraftHead or AttentionHead bound to `model`, or None

    def run(self, req, cancel=None) -> Iterator:
        self._start(req, cancel)
        with torch.inference_mode():
            yield from self._run_causal()

    def proposers(self, ctx: List[int], lead: List[int], rows: Optional[HeadRows]) -> List[Proposer]:
        """The request's sources of drafts, started on its prompt: prompt lookup and the trained
        drafter, as `req.draft_with` asks ("auto": both; none without `req.drafting`)."""
        req, out = self.req, []
        if not req.drafting or req.max_draft_tokens <= 0:
            return out
        if req.draft_with in ("auto", "lookup"):
            out.append(self.lookup or PromptLookup(max_draft=req.max_draft_tokens,
                                                   sources=[self.tok.encode(t) if isinstance(t, str) else t
                                                            for t in req.draft_sources]))
        if req.draft_with in ("auto", "trained") and self.adapter is not None:
            out.append(MaskSlotDrafts(self.adapter, min(self.adapter.mask_slots, req.max_draft_tokens), self.cfg.mask_id))
        elif req.draft_with in ("auto", "trained") and self.head is not None:
            # the head's chain ends after a stop token, and in a line completion after a newline token
            ends = self.stop_ids | self.tok.newline_ids if req.ends_at_newline else self.stop_ids
            out.append(HeadDrafts(self.head, min(self.head.slots, req.max_draft_tokens), ends, rows=rows,
                                  as_tree=self._tree_mode(None), tree_nodes=req.tree_nodes))
        fim = [t for t in (self.cfg.fim_prefix_id, self.cfg.fim_suffix_id, self.cfg.fim_middle_id) if t is not None]
        for p in out:
            p.start(ctx, lead, fim)
        return out

    # ---- one request ---------------------------------------------------------------------
    def _run_causal(self) -> Iterator:
        req, dev = self.req, self.device
        m = req.max_new_tokens
        ctx, lead = self.prompt(req)
        exact = req.cache != "none"
        approximate = req.suffix_reuse                                                          # decoding/suffix_reuse.py
        state = self.context_cache.last_state(ctx, approximate) if exact else None            # [H]
        trained = req.drafting and req.draft_with in ("auto", "trained")
        # an attention head drafting: the rows it keeps of the context (None: no such head)
        rows, limit = self._kept_rows(ctx) if trained else (None, None)
        if rows is not None and (not exact or limit < len(ctx)):
            state = None                          # the head has no rows for the cached state's context
        # the KV of the decode: the context cache's longest shared prefix (without the last
        # context token when its output is needed and not cached), extended in place pass by pass
        room = len(ctx) + m                       # a pass's rows never reach past the token budget
        span = Span.of_masks(m, -1)
        if exact and state is None and self._prefill_ahead(ctx, limit):
            yield self._finish(span, span.end)    # stopped in the prefill (its finished chunks are cached)
            return
        if exact:
            n_cached, past = self.context_cache.take(ctx if state is not None else ctx[:-1], room, self._kv_shape(),
                                                     limit=limit, approximate_ok=approximate)
        else:
            n_cached, past = 0, KVBuffer.empty(self._kv_shape(), room)
        if rows is not None:
            rows = rows.prefix(n_cached) if exact else HeadRows(self.head)
        pending = ctx[n_cached:]                  # inputs without cached KV
        if exact:
            self.context_cache.computed += len(pending)
        pos0 = n_cached                           # absolute position of pending[0]
        done = 0                                  # span tokens committed
        ctx_stored = not exact or state is not None
        proposers = self.proposers(ctx, lead, rows)
        slotted = next((p for p in proposers if p.slots), None)    # mask slots follow the drafts
        needs_hidden = any(p.needs_hidden for p in proposers)
        depth = max((p.depth for p in proposers if p.trained), default=0)
        self.stats.slot_tries, self.stats.slot_hits = [0] * depth, [0] * depth
        if state is not None:                     # warm: the first token from the cached last state, no pass
            chosen, _ = self._verify(self.model.head(state[None]), [], done)                  # [1, V]
            done = self._commit(span, done, chosen)
            if span.end < m or done >= m:
                yield self._finish(span, span.end)
                return
            self._observe(proposers, PassOutcome(span.tokens[:done], chosen, 0, 0, hidden=state))
            pending = [chosen[-1]]
        drafts = self._propose(proposers, span, done, slotted)
        if state is not None:
            yield self._update(span, m)
        while True:
            if self._should_stop():
                yield self._finish(span, span.end)
                return
            tree = DraftTree.merge(drafts.chains)
            chain = tree.is_chain()
            masks = min(slotted.slots, max(0, m - done - len(tree) - 1)) if slotted is not None else 0
            q = pending + tree.tokens + [self.cfg.mask_id] * masks
            ids = torch.tensor([q], device=dev)
            past.reserve(pos0 + len(q))
            if chain:
                positions = torch.arange(pos0, pos0 + len(q), device=dev)
                attn = causal_visibility(len(q), past.length, dev)
            else:                                 # several branches: each node sees its own path
                positions = torch.tensor(tree_positions(tree, pos0, len(pending)), device=dev)
                attn = tree_visibility(tree, len(pending), past.length, dev)
            hidden = None                         # [1, T, H] where a proposer or the context cache reads it
            if masks:
                with slotted.rows_from(len(q) - masks):
                    hidden, _ = self.model.hidden(ids, positions, past, attn)
                    raw = self.model.head(hidden[:, len(pending) - 1:])
            elif needs_hidden or not ctx_stored:  # the head reads the accepted row; the cache the context's last
                hidden, _ = self.model.hidden(ids, positions, past, attn)
                raw = self.model.head(hidden[:, len(pending) - 1:])
            else:
                raw, _ = self.model(ids, positions, past, attn, len(pending) - 1)
            self.forwards += 1
            n_rows = len(tree) + 1
            if chain:
                chosen, n_ok = self._verify(raw[0, :n_rows], tree.tokens, done)   # raw [1, k+1+K, V]
                path = list(range(n_ok))
            else:
                path, chosen = self._verify_tree(raw[0, :n_rows], tree, done)
                n_ok = len(path)
            self._count(tree, path, drafts.trained_chains)
            keep = len(pending) + n_ok
            kept = list(range(len(pending))) + [len(pending) + i for i in path]    # rows of q kept
            if not chain:                         # the accepted nodes' KV next to the pending inputs'
                past.keep(past.length + len(pending), path)
            past.length += keep                   # the rejected drafts' entries are overwritten next pass
            done = self._commit(span, done, chosen)
            if rows is not None:                  # the kept rows' states; the head's rows before the last one
                rows.add_hidden(hidden[0, kept])
                rows.sync(self.head, ctx + span.tokens[:done], pos0 + keep - 1)
            if not ctx_stored and pos0 + keep >= len(ctx):
                last = hidden[0, len(ctx) - 1 - pos0] if hidden is not None else None
                self.context_cache.store_buffer(ctx, past, last_hidden=last, rows=rows)
                ctx_stored = True
            pos0 += keep
            if span.end < m or done >= m:
                break
            self._observe(proposers, PassOutcome(
                span.tokens[:done], chosen, n_ok, len(tree),
                hidden=hidden[0, kept[-1]] if hidden is not None else None,            # exact state after the committed tokens
                slot_rows=raw[0, n_rows:] if masks else None))                           # [K, V]
            pending = [chosen[-1]]
            drafts = self._propose(proposers, span, done, slotted)
            yield self._update(span, m)
        span.predicted.clear()
        yield self._finish(span, span.end)

    def _tree_mode(self, slotted: Optional[Proposer]) -> bool:
        """Several chains of drafts verified as one tree: asked for, greedy, no mask slots
        (they follow one chain)."""
        return self.req.draft_tree and self.generator is None and slotted is None

    def _observe(self, proposers: List[Proposer], outcome: PassOutcome) -> None:
        for p in proposers:
            p.observe(outcome)

    def _propose(self, proposers: List[Proposer], span: Span, done: int, slotted: Optional[Proposer]) -> Arranged:
        """The next pass's drafts after the committed tokens (each at most what the token budget
        leaves room for). The first chain is recorded in span.predicted, so that updates show it
        as the draft."""
        span.predicted.clear()
        room = self.req.max_new_tokens - done - 1
        live = proposers if room > 0 else []
        committed = span.tokens[:done]
        proposals = [p.propose(committed, room) for p in live]
        drafts = arrange(proposals, [p.trained for p in live], room, self._tree_mode(slotted),
                         self.tok.newline_ids if self.req.ends_at_newline else None)
        for i, d in enumerate(drafts.first):
            span.predicted[done + i] = d
        return drafts

    def _count(self, tree: DraftTree, path: List[int], trained_chains: List[int]) -> None:
        """Add one verified pass to self.stats (path: its accepted nodes)."""
        s = self.stats
        s.drafted += len(tree)
        s.accepted += len(path)
        if not tree.is_chain():
            s.tree_passes += 1
            s.branch_wins += any(i not in tree.chains[0] for i in path)
        if not trained_chains:
            return
        hits = max(accepted_per_chain(tree, path)[c] for c in trained_chains)
        s.trained_drafted += len({n for c in trained_chains for n in tree.chains[c]})
        s.trained_accepted += hits
        for i in range(min(max(len(tree.chains[c]) for c in trained_chains), len(s.slot_tries))):
            s.slot_tries[i] += 1
            s.slot_hits[i] += hits > i

    def _commit(self, span: Span, done: int, chosen: List[int]) -> int:
        """Write the committed tokens into the span up to a stop token (which sets span.end);
        returns the new count of committed tokens."""
        for tok in chosen:
            span.tokens[done], span.committed[done] = tok, True
            done += 1
            if tok in self.stop_ids:
                span.end = done - 1
                break
        return done

    def _no_early_stops(self, rows: torch.Tensor, depths: Optional[List[int]], done: int) -> torch.Tensor:
        """rows [R, V] as fp32, a stop token ruled out where the row's token would be span
        token done + depth < min_new_tokens (depths [R]: 0 for the last committed token's row;
        None: row i has depth i, a chain)."""
        rows = rows.float()
        n_min = self.req.min_new_tokens if self.stop_ids else 0
        if done < n_min:                                      # no stop token before min_new_tokens
            stops = torch.tensor(sorted(self.stop_ids), device=rows.device)
            depth = torch.tensor(depths) if depths is not None else torch.arange(rows.shape[0])
            early = depth.to(rows.device) + done < n_min
            rows[early[:, None] & torch.isin(torch.arange(rows.shape[1], device=rows.device), stops)[None, :]] = MIN_FLOAT
        return rows

    def _verify_tree(self, rows: torch.Tensor, tree: DraftTree, done: int):
        """rows [1 + N, V] (the last committed token's row, then each node's) -> (the accepted
        nodes, the committed tokens); greedy only."""
        greedy = self._no_early_stops(rows, [0] + [d + 1 for d in tree.depths], done).argmax(-1).tolist()
        return walk(tree, greedy, self.stop_ids)

    def _verify(self, rows: torch.Tensor, drafts: List[int], done: int):
        """rows [k+1, V]: the committed tokens of this pass and how many drafts were accepted."""
        rows = self._no_early_stops(rows, None, done)
        if self.generator is None:
            greedy = rows.argmax(-1).tolist()
            n = 0
            while n < len(drafts) and drafts[n] == greedy[n] and greedy[n] not in self.stop_ids:
                n += 1
            if self.req.runner_ups and len(self.runner_ups) == done:
                top = rows[:n + 1].topk(2, dim=-1)                      # [n+1, 2]: the first and second choice
                gaps = (top.values[:, 0] - top.values[:, 1]).tolist()
                pairs = top.indices.tolist()                            # a tie may list the argmax second
                self.runner_ups += [(b if a == g else a, gap) for (a, b), g, gap in zip(pairs, greedy, gaps)]
            return drafts[:n] + [greedy[n]], n
        probs = torch.softmax(rows / self.req.temperature, dim=-1).cpu()
        out: List[int] = []
        for i, d in enumerate(drafts):                        # speculative rejection, point-mass drafts
            p = probs[i]
            if torch.rand((), generator=self.generator).item() < float(p[d]):
                out.append(d)
                continue
            residual = p.clone()
            residual[d] = 0.0
            if float(residual.sum()) <= 0.0:
                residual = p
            out.append(int(torch.multinomial(residual / residual.sum(), 1, generator=self.generator)))
            return out, i
        out.append(int(torch.multinomial(probs[len(drafts)], 1, generator=self.generator)))
        return out, len(drafts)
