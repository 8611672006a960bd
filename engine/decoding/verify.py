"""Decoding an AR-pretrained FIM model (Qwen2.5-Coder) through a block of verified slots.

The model is causal everywhere and its logits are shifted: the output at a slot holding a
real token is the model's exact next-token distribution given everything before it, so the
block after the context verifies itself. Canvas (prefix-suffix-middle, the order Qwen was
trained on):

    <|fim_prefix|> P <|fim_suffix|> S <|fim_middle|> | t0 d1 d2 ... dk
                                                     ^ last committed token, then k drafts

A long uncached context is first computed in chunks of PREFILL_CHUNK tokens (`_prefill_ahead`),
each kept in the context cache as soon as it is done, with the cancel flag read between layers:
a keystroke stops stale work within one layer, and what was computed serves the next request.
Each forward pass takes the inputs whose keys/values are not cached yet (the last 1..FIRST_PASS_CONTEXT
context tokens on the first pass, the last committed token afterwards) followed by the drafts, and reads
the k + 1 output rows from the last input on:
  1. verify: drafts are committed left to right while each equals the argmax of the row before
     it; at the first disagreement the row's own argmax is committed instead, so every pass
     commits at least one token and the text is token for token plain greedy decoding;
  2. the keys/values of the committed inputs are kept, those of rejected drafts dropped;
  3. an InfillUpdate streams `stable` (committed) and `draft` (committed + the drafts still
     standing), which sharpens in place as drafts are confirmed or replaced.
Where drafts come from is the `Drafter`'s business (drafting/lookup.py); with none, one token per pass.
A line completion (`req.ends_at_newline`) ends each pass's drafts with the first token that
holds a newline: its caller stops there, and rows past it would be verified for nothing.

A draft head (drafting/head.py) instead: after the pass, the head reads the final hidden state of the
last accepted row and the bonus token committed after it and chains K guesses of the tokens
after that; they are the next pass's drafts whether or not this pass's drafts were accepted
(the head's input is the exact state after the committed tokens). With `req.draft_tree` the
head proposes a small tree of its likeliest guesses instead (DraftHead.propose_tree), and the
pass verifies it together with lookup's chain as one trie (decoding/tree.py).

Trained mask slots (drafting/mask_slots.py): with an adapter, K mask slots follow the drafts,

    ... | t0 d1 .. dj m1 .. mK        rows >= 1 + j run the adapter, earlier rows the frozen model

and the output at m_i guesses the token after the bonus token's i-th successor. When every draft
of the pass is accepted those K guesses are the next pass's drafts (a rejected draft voids them,
they were conditioned on it), cut at the first guess below GUESS_MIN_PROB. Which source drafts a pass: a lookup match of >= 3 tokens first
(it copies long runs verbatim), else the mask guesses, else a shorter lookup match
(`req.draft_with`: "auto" | "lookup" | "mask").

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

from engine.drafting.attention_head import HeadRows
from engine.decoding.context import CausalContext
from engine.decoding.diffusion import Decoder, Span
from engine.decoding.tree import DraftTree, accepted_per_chain, tree_mask, tree_positions, walk
from engine.drafting.lookup import LookupDrafter
from engine.model.kvcache import KVBuffer
from engine.model.transformer import causal_mask

MIN_FLOAT = float("-inf")
GUESS_MIN_PROB = 0.3     # mask guesses are drafted while their probability stays above this


def confident_guesses(mask_rows: torch.Tensor, mask_id: int, min_prob: float = GUESS_MIN_PROB) -> List[int]:
    """mask_rows [K, V] -> the argmax guesses up to the first one whose probability is below
    `min_prob` (the first guess is always kept). One wrong draft voids the mask guesses of its
    pass, so a short confident run beats a long doubtful one."""
    rows = mask_rows.float()
    rows[:, mask_id] = MIN_FLOAT
    probs, ids = torch.softmax(rows, dim=-1).max(dim=-1)
    out = [int(ids[0])] if len(ids) else []
    for p, i in zip(probs[1:].tolist(), ids[1:].tolist()):
        if p < min_prob:
            break
        out.append(int(i))
    return out


def through_first_newline(drafts: List[int], newline_ids) -> List[int]:
    """The drafts up to and including the first one whose text holds a newline: a line
    completion's caller stops there, so rows after it would be verified for nothing."""
    for k, d in enumerate(drafts):
        if d in newline_ids:
            return drafts[:k + 1]
    return drafts


class CausalDecoder(CausalContext, Decoder):
    """Decoder for cfg.attention == "causal"; `drafter` proposes tokens (None: one per pass)."""

    def __init__(self, model, tokenizer, cfg, context_cache=None, drafter=None, adapter=None, head=None):
        super().__init__(model, tokenizer, cfg, context_cache)
        self.drafter = drafter
        self.adapter = adapter        # MaskAdapter attached to `model`, or None
        self.head = head              # DraftHead or AttentionHead bound to `model`, or None

    def run(self, req, cancel=None) -> Iterator:
        self._start(req, cancel)
        with torch.inference_mode():
            yield from self._run_causal()

    # ---- one request ---------------------------------------------------------------------
    def _run_causal(self) -> Iterator:
        req, dev = self.req, self.device
        m = req.max_new_tokens
        ctx, lead = self.prompt(req)
        exact = req.cache != "none"
        state = self.context_cache.last_state(ctx) if exact else None                         # [H]
        trained = req.drafting and req.draft_with in ("auto", "mask")
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
                                                     limit=limit)
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
        self.drafted = self.accepted = 0
        self.tree_passes = self.branch_wins = 0   # passes verifying a tree; ... accepting past its first chain
        drafter = None
        use_lookup = req.draft_with in ("auto", "lookup")
        n_masks = 0
        n_guesses = 0                             # draft-head guesses per pass
        if trained and self.adapter is not None:
            n_masks = min(self.adapter.mask_slots, req.max_draft_tokens)
        elif trained and self.head is not None:
            n_guesses = min(self.head.slots, req.max_draft_tokens)
        self.mask_drafted = self.mask_accepted = 0   # drafts from the trained drafter (masks or head)
        self.slot_tries = [0] * (n_masks or n_guesses)  # passes whose trained drafts reached slot i
        self.slot_hits = [0] * (n_masks or n_guesses)   # ... and slot i (and every slot before it) was accepted
        guesses: List[List[int]] = []             # the trained drafter's chains of drafts for the next pass
        # the head's chain ends after a stop token, and in a line completion after a newline token
        chain_ends = self.stop_ids | self.tok.newline_ids if req.ends_at_newline and n_guesses else self.stop_ids
        if req.drafting and use_lookup and req.max_draft_tokens > 0:
            drafter = self.drafter or LookupDrafter(max_draft=req.max_draft_tokens,
                                                    sources=[self.tok.encode(t) if isinstance(t, str) else t
                                                             for t in req.draft_sources])
        if drafter is not None:
            fim = [t for t in (self.cfg.fim_prefix_id, self.cfg.fim_suffix_id, self.cfg.fim_middle_id) if t is not None]
            drafter.start(ctx, req, lead=lead, barriers=fim)
        if state is not None:                     # warm: the first token from the cached last state, no pass
            chosen, _ = self._verify(self.model.head(state[None]), [], done)                  # [1, V]
            done = self._commit(span, done, chosen)
            if span.end < m or done >= m:
                yield self._finish(span, span.end)
                return
            if n_guesses:
                guesses = self._guess(rows, ctx, state, chosen[-1], min(n_guesses, m - done - 1), chain_ends)
            pending = [chosen[-1]]
        tree, head_chains = self._propose(drafter, span, done, guesses, n_masks)
        if state is not None:
            yield self._update(span, m)
        while True:
            if self._should_stop():
                yield self._finish(span, span.end)
                return
            drafts, chain = tree.tokens, tree.is_chain()
            masks = min(n_masks, max(0, m - done - len(drafts) - 1))
            q = pending + drafts + [self.cfg.mask_id] * masks
            ids = torch.tensor([q], device=dev)
            past.reserve(pos0 + len(q))
            if chain:
                positions = torch.arange(pos0, pos0 + len(q), device=dev)
                attn = causal_mask(len(q), past.length, dev)
            else:                                 # several branches: each node sees its own path
                positions = torch.tensor(tree_positions(tree, pos0, len(pending)), device=dev)
                attn = tree_mask(tree, len(pending), past.length, dev)
            hidden = None                         # [1, T, H] where the head or the context cache reads it
            if masks:
                with self.adapter.rows_from(len(q) - masks):
                    hidden, _ = self.model.hidden(ids, positions, past, attn)
                    raw = self.model.head(hidden[:, len(pending) - 1:])
            elif n_guesses or not ctx_stored:     # the head reads the accepted row; the cache the context's last
                hidden, _ = self.model.hidden(ids, positions, past, attn)
                raw = self.model.head(hidden[:, len(pending) - 1:])
            else:
                raw, _ = self.model(ids, positions, past, attn, len(pending) - 1)
            self.forwards += 1
            n_rows = len(drafts) + 1
            if chain:
                chosen, n_ok = self._verify(raw[0, :n_rows], drafts, done)       # raw [1, k+1+K, V]
                path = list(range(n_ok))
            else:
                path, chosen = self._verify_tree(raw[0, :n_rows], tree, done)
                n_ok = len(path)
                self.tree_passes += 1
                self.branch_wins += any(i not in tree.chains[0] for i in path)
            self.drafted += len(drafts)
            self.accepted += n_ok
            if head_chains:                       # the trained drafter's chains, wherever they sit in the tree
                per_chain = accepted_per_chain(tree, path)
                hits = max(per_chain[c] for c in head_chains)
                self.mask_drafted += len({n for c in head_chains for n in tree.chains[c]})
                self.mask_accepted += hits
                for i in range(min(max(len(tree.chains[c]) for c in head_chains), len(self.slot_tries))):
                    self.slot_tries[i] += 1
                    self.slot_hits[i] += hits > i
            guesses = []
            if masks and n_ok == len(drafts):
                guesses = [confident_guesses(raw[0, n_rows:], self.cfg.mask_id)]
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
            if n_guesses:                         # exact state after the committed tokens: h, bonus token
                guesses = self._guess(rows, ctx, hidden[0, kept[-1]], chosen[-1],
                                      min(n_guesses, m - done - 1), chain_ends)
            if drafter is not None:
                drafter.observe(chosen, n_ok, len(drafts))
            pending = [chosen[-1]]
            tree, head_chains = self._propose(drafter, span, done, guesses, n_masks)
            yield self._update(span, m)
        span.predicted.clear()
        yield self._finish(span, span.end)

    def _guess(self, rows, ctx, hidden, token: int, k: int, banned) -> List[List[int]]:
        """The head's chains of guesses after the last accepted row (final state `hidden` [H])
        and the bonus token: one chain, or with `req.draft_tree` (greedy) the draft head's tree
        of guesses (DraftHead.propose_tree, its best chain first). An attention head also reads
        (and extends) the rows it keeps, and drafts one chain."""
        if rows is None:
            if self._tree_mode() and hasattr(self.head, "propose_tree"):
                return self.head.propose_tree(hidden, token, k, self.req.tree_nodes, banned=banned)
            return [self.head.propose(hidden, token, k, banned=banned)]
        rows.sync(self.head, ctx, len(rows) - 1)  # warm: the context's rows before its last
        return [self.head.propose(rows.cache, hidden, token, k, banned=banned)]

    def _tree_mode(self, n_masks: int = 0) -> bool:
        """Several chains of drafts verified as one tree: asked for, greedy, no mask slots
        (they follow one chain)."""
        return self.req.draft_tree and self.generator is None and not n_masks

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

    def _propose(self, drafter, span: Span, done: int, guesses: List[List[int]], n_masks: int = 0):
        """The drafts after the committed tokens (each source's at most what the token budget
        leaves room for) as a DraftTree, and which of its chains are the trained drafter's
        (guesses: its chains, best first). The first chain is the source that would draft
        alone: a lookup match of >= 3 tokens, else the trained drafter's best chain, else a
        shorter match; with `req.draft_tree` (greedy, no mask slots) every other chain of both
        sources joins it as a branch. The first chain is recorded in span.predicted, so that
        updates show it as the draft."""
        span.predicted.clear()
        room = self.req.max_new_tokens - done - 1
        if room <= 0:
            return DraftTree(), []
        looked = list(drafter.propose(span.tokens[:done], room))[:room] if drafter is not None else []
        long_match = getattr(drafter, "last_match", 0) >= 3       # a drafter may not say
        guesses = [g[:room] for g in guesses if g]
        from_masks = bool(guesses) and not (looked and long_match)
        chains = guesses + [looked] if from_masks else [looked] + guesses
        if not self._tree_mode(n_masks):
            chains = chains[:1]
        if self.req.ends_at_newline:
            chains = [through_first_newline(c, self.tok.newline_ids) for c in chains]
        tree = DraftTree.merge(chains)
        for i, d in enumerate(next((c for c in chains if c), [])):
            span.predicted[done + i] = d
        first = 0 if from_masks else 1
        head_chains = [c for c in range(first, first + len(guesses)) if c < len(chains)]
        return tree, head_chains

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
