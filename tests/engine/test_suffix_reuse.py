"""The approximate suffix reuse (decoding/suffix_reuse.py, InfillRequest.suffix_reuse): the plan
(pure), the key rotation (exact on the first layer), and the engine on the tiny FIM model: with
it a keystroke computes the typed tokens and the last one, not the suffix; without it nothing
changes and an exact request never reads what the reuse left in the cache."""
from dataclasses import replace

import pytest
import torch

from engine import Engine, InfillRequest
from engine.decoding.suffix_reuse import MAX_SHIFT_DEBT, plan_reuse, shift_keys
from engine.model.transformer import causal_visibility

S, M = 90, 91                     # the suffix and middle markers of the plans below


def test_the_plan_reuses_the_tail_after_typed_tokens_and_only_then():
    cached = [1, 2, 3, S, 7, 8, M]
    typed = [1, 2, 3, 4, 5, S, 7, 8, M]
    plan = plan_reuse(cached, typed, S)
    assert plan == (3, 5, 3, 3) and plan.delta == 2          # 4, 5 computed; S 7 8 reused; M computed
    deleted = [1, 2, S, 7, 8, M]
    assert plan_reuse(cached, deleted, S) == (2, 2, 3, 3) and plan_reuse(cached, deleted, S).delta == -1
    assert plan_reuse(cached[:-1], typed, S) == (3, 5, 3, 3)                  # a reuse's cache lacks the last token
    assert plan_reuse(cached[:-2], typed, S) == (3, 5, 3, 2)                  # a stopped prefill: what it holds
    assert plan_reuse(cached, cached, S) is None                              # nothing changed: the exact cache serves
    assert plan_reuse(cached, [1, 2, 3, 4, S, 7, 9, M], S) is None            # the suffix changed
    assert plan_reuse(cached, typed, None) is None                            # a model without FIM tokens
    assert plan_reuse([1, S, 2, S, M], [1, 4, S, 2, S, M], S) is None         # the marker twice: no guess
    assert plan_reuse(cached, typed, S, debt=MAX_SHIFT_DEBT - 1) is None      # too much typed since it was exact
    assert plan_reuse(cached, typed, S, debt=MAX_SHIFT_DEBT - 2) is not None


@pytest.fixture(scope="module")
def tiny_ar(tiny_gguf_qwen2):
    return Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")


def test_shifted_keys_are_the_keys_at_the_new_positions_on_the_first_layer(tiny_ar):
    """The first layer's key of a token depends on the token and its position only: computed at
    p and shifted by delta it is the key computed at p + delta."""
    model = tiny_ar.model
    ids = torch.tensor([[5, 9, 17, 33, 2]])
    with torch.inference_mode():
        _, kv_at_3 = model.hidden(ids, torch.arange(3, 8), None, causal_visibility(5, 0))
        _, kv_at_10 = model.hidden(ids, torch.arange(10, 15), None, causal_visibility(5, 0))
        moved = shift_keys(kv_at_3[0][0], 7, model.rope, model.kernels.apply_rope)
    assert torch.allclose(moved, kv_at_10[0][0], atol=1e-5)
    assert torch.equal(kv_at_3[0][1], kv_at_10[0][1])                        # values carry no position


PREFIX = "def add(a, b):\n    return a + b\n\n" * 3 + "def mul(a, b):\n    return "
SUFFIX = "\n\n\ndef sub(a, b):\n    return a - b\n" * 2


def _typed(engine, reuse: bool):
    """Warm the prompt before a key, type one, decode; -> (result, context tokens computed by it)."""
    engine.context_cache.clear()
    before = InfillRequest(PREFIX, SUFFIX, max_new_tokens=6, suffix_reuse=reuse)
    engine.warm(before)
    after = replace(before, prefix=PREFIX + "a *")
    computed = engine.context_cache.computed
    result = engine.infill(after)
    return result, engine.context_cache.computed - computed, after


def test_a_key_with_the_reuse_computes_the_typed_tokens_and_not_the_suffix(tiny_ar):
    exact, exact_cost, after = _typed(tiny_ar, reuse=False)
    assert tiny_ar.context_cache.approximate_from is None
    ctx = tiny_ar.decoder().context_ids(after)
    suffix_len = len(ctx) - ctx.index(tiny_ar.cfg.fim_suffix_id)
    approx, approx_cost, _ = _typed(tiny_ar, reuse=True)
    assert approx_cost <= exact_cost - suffix_len + 1                        # the suffix window was not computed
    assert approx_cost >= 1 and approx.token_ids                             # the typed tokens and the last one were
    assert tiny_ar.context_cache.approximate_from == ctx.index(tiny_ar.cfg.fim_suffix_id)
    # an exact request on the same prompt does not read the shifted entries: it computes them again
    computed = tiny_ar.context_cache.computed
    again = tiny_ar.infill(replace(after, suffix_reuse=False))
    assert again.token_ids == exact.token_ids
    assert tiny_ar.context_cache.computed - computed >= suffix_len
    assert tiny_ar.context_cache.approximate_from is None


def test_without_the_setting_typing_gives_the_cold_text(tiny_ar):
    typed, _, after = _typed(tiny_ar, reuse=False)
    tiny_ar.context_cache.clear()
    assert tiny_ar.infill(after).token_ids == typed.token_ids


def test_keys_in_a_row_reuse_the_shifted_tail_again(tiny_ar):
    """Typing: each key's request may be stopped before its first pass, so the cache holds the
    last reuse (the prompt but its last token); the next key still reuses it."""
    tiny_ar.context_cache.clear()
    tiny_ar.warm(InfillRequest(PREFIX, SUFFIX, max_new_tokens=6))
    dec = tiny_ar.decoder()
    for typed in ("a", "a *", "a * b"):
        ctx = dec.context_ids(InfillRequest(PREFIX + typed, SUFFIX, max_new_tokens=6))
        computed = tiny_ar.context_cache.computed
        assert dec.reuse_shifted_suffix(ctx), typed
        assert tiny_ar.context_cache.ids == ctx[:-1]
        assert tiny_ar.context_cache.computed - computed <= 3                # the typed tokens only
    assert 0 < tiny_ar.context_cache.shift_debt <= 5


def test_a_warm_up_with_the_reuse_leaves_an_exact_request_exact(tiny_ar):
    tiny_ar.context_cache.clear()
    before = InfillRequest(PREFIX, SUFFIX, max_new_tokens=6, suffix_reuse=True)
    tiny_ar.warm(before)
    after = replace(before, prefix=PREFIX + "b")
    tiny_ar.warm(after)                                                       # reused, then its last token computed
    assert tiny_ar.context_cache.approximate_from is not None
    exact = replace(after, suffix_reuse=False)
    got = tiny_ar.infill(exact)
    tiny_ar.context_cache.clear()
    assert got.token_ids == tiny_ar.infill(exact).token_ids


def test_the_setting_reaches_the_request():
    from dllm_lsp.settings import Settings, parse_settings
    s, problems = parse_settings({"suffixReuse": True})
    assert problems == [] and s.suffix_reuse
    assert s.infill_request("a", "b", max_new_tokens=4).suffix_reuse
    assert not Settings().infill_request("a", "b", max_new_tokens=4).suffix_reuse
