"""Block-causal exact cache vs recomputation, the context cache across keystrokes, and the
bidirectional Fast-dLLM approximations (which must at least agree when the span is one block)."""
import pytest
import torch

from engine import Engine, InfillRequest
from engine.model.kvcache import ContextCache, common_prefix, kv_cat, kv_slice

PREFIX = "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        "
SUFFIX = "\n\n    def norm(self):\n        return 0\n"


@pytest.fixture(scope="module")
def block_engine(tiny_block_model):
    return Engine.load(tiny_block_model, device="cpu")


@pytest.mark.parametrize("policy,extra", [("quota", {"tokens_per_step": 1}), ("quota", {"tokens_per_step": 3}),
                                          ("threshold", {"threshold": 0.05}), ("entropy", {"entropy_bound": 2.0})])
def test_block_causal_cached_equals_uncached(block_engine, policy, extra):
    base = dict(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=13, policy=policy, **extra)
    block_engine.context_cache.clear()
    cached = block_engine.infill(InfillRequest(**base))
    uncached = block_engine.infill(InfillRequest(**base, cache="none"))
    assert cached.token_ids == uncached.token_ids
    assert cached.forwards == uncached.forwards
    assert cached.new_tokens > 0


def test_cached_steps_match_uncached_logits(block_engine):
    """Stronger than token equality: every streamed draft is the same in both modes."""
    block_engine.context_cache.clear()
    req = dict(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=9, policy="quota", tokens_per_step=2, stop_at_eos=False)
    a = [u.draft for u in block_engine.stream(InfillRequest(**req))]
    b = [u.draft for u in block_engine.stream(InfillRequest(**req, cache="none"))]
    assert a == b and len(a) > 2


def test_context_cache_survives_keystrokes(block_engine):
    eng = block_engine
    eng.context_cache.clear()
    first = eng.infill(InfillRequest(PREFIX, SUFFIX, max_new_tokens=8))
    hits_before, misses_before = eng.context_cache.hits, eng.context_cache.misses
    typed = eng.infill(InfillRequest(PREFIX + "self.y", SUFFIX, max_new_tokens=8))
    new_tokens = eng.context_cache.misses - misses_before
    reused = eng.context_cache.hits - hits_before
    ctx_len = reused + new_tokens
    assert reused > 0.8 * ctx_len and new_tokens < 6          # only the typed tail was computed
    cold = Engine.load(eng.cfg.path, device="cpu").infill(InfillRequest(PREFIX + "self.y", SUFFIX, max_new_tokens=8))
    assert typed.token_ids == cold.token_ids
    assert first.forwards >= 1


def test_context_cache_unit():
    cache = ContextCache()
    kv = [(torch.arange(5.0).view(1, 1, 5, 1), torch.arange(5.0).view(1, 1, 5, 1))]
    cache.store([1, 2, 3, 4, 5], kv)
    n, got = cache.lookup([1, 2, 3, 9])
    assert n == 3 and got[0][0].flatten().tolist() == [0.0, 1.0, 2.0]
    n, got = cache.lookup([7])
    assert n == 0 and got is None
    with pytest.raises(ValueError):
        cache.store([1, 2], kv)
    assert common_prefix([1, 2, 3], [1, 2]) == 2
    joined = kv_cat(kv_slice(kv, 0, 2), kv_slice(kv, 3))
    assert joined[0][0].flatten().tolist() == [0.0, 1.0, 3.0, 4.0]


@pytest.mark.parametrize("fixture", ["tiny_llada_model", "tiny_dream_model"])
def test_bidirectional_cache_modes_run_and_single_block_first_step_agrees(request, fixture):
    eng = Engine.load(request.getfixturevalue(fixture), device="cpu")
    results = {}
    for mode in ("none", "prefix", "dual"):
        req = InfillRequest(PREFIX, SUFFIX, max_new_tokens=8, policy="quota", tokens_per_step=2, block_size=4, cache=mode)
        ups = list(eng.stream(req))
        results[mode] = ups
        assert ups[-1].result.forwards >= 1
    # the first step of the first block is a full forward pass in every mode: identical commits
    first = {mode: ups[0].draft for mode, ups in results.items()}
    assert first["none"] == first["prefix"] == first["dual"]


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_bidirectional_cache_refreshed_every_step_is_exact(tiny_dream_model, mode):
    """With one-token blocks every step starts a block (a full pass), so the approximations vanish."""
    eng = Engine.load(tiny_dream_model, device="cpu")
    req = dict(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=6, policy="quota", block_size=1, stop_at_eos=False)
    exact = eng.infill(InfillRequest(**req, cache="none"))
    approx = eng.infill(InfillRequest(**req, cache=mode))
    assert approx.token_ids == exact.token_ids and approx.forwards == exact.forwards == 6
