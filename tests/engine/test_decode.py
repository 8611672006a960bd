"""The denoising loop driven by a scripted mock model: policies, EOS, blocks, streaming, cancel.

The mock predicts, for every absolute canvas position, one fixed token with a fixed
confidence, whatever the input: so every choice the decoder makes is known in advance.
"""
import threading

import pytest
import torch

from engine.api import InfillRequest
from engine.loading.config import ModelConfig
from engine.decoding.diffusion import DiffusionDecoder as Decoder
import engine.kernels.reference as reference
from engine.testing.checkpoints import block_config
from engine.loading.tokenizer import TextTokenizer
from engine.testing.checkpoints import tiny_tokenizer

V = 320
MASK, EOS, PAD = 2, 0, 1


class ScriptedModel:
    """logits row for position p: `strength[p]` on token `target[p]`, 0 elsewhere."""

    kernels = reference
    device = torch.device("cpu")

    def __init__(self, target: dict, strength: dict, default=(7, 0.0)):
        self.target, self.strength, self.default = target, strength, default
        self.calls = []

    def __call__(self, ids, positions, past=None, mask=None, logits_from=0):
        self.calls.append((ids.clone(), positions.clone(), 0 if past is None else past[0][0].shape[2]))
        rows = torch.zeros(1, len(positions) - logits_from, V)
        for i, p in enumerate(positions.tolist()[logits_from:]):
            tok = self.target.get(p, self.default[0])
            rows[0, i, tok] = self.strength.get(p, self.default[1])
        kv = [(torch.zeros(1, 1, len(positions), 2), torch.zeros(1, 1, len(positions), 2))]
        return rows, kv


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer(tiny_tokenizer(), special_ids={EOS, PAD, MASK})


def bidi_cfg(**kw):
    base = dict(family="llada", vocab_size=V, hidden_size=8, num_layers=1, num_heads=1, num_kv_heads=1,
                head_dim=8, intermediate_size=8, rope_theta=1e4, rms_norm_eps=1e-5, tie_embeddings=False,
                qkv_bias=False, mlp_bias=False, logit_shift=False, attention="bidirectional",
                block_size=None, mask_id=MASK, eos_id=EOS, pad_id=PAD, bos_id=None, max_position=512)
    base.update(kw)
    return ModelConfig(**base)


def run(model, cfg, tok, req, cancel=None, cache=None):
    dec = Decoder(model, tok, cfg, cache) if cache else Decoder(model, tok, cfg)
    return list(dec.run(req, cancel))


def span_start(tok, prefix):
    return len(tok.encode(prefix))


def commits_per_step(updates):
    counts, prev = [], 0
    for u in updates:
        counts.append(u.committed - prev)
        prev = u.committed
    return counts


def test_quota_one_per_step_most_confident_first(tok):
    prefix = "x = "
    s = span_start(tok, prefix)
    m = 5
    # confidence rises to the right: the decoder must commit right to left, one per step
    target = {s + i: 10 + i for i in range(m)}
    strength = {s + i: 1.0 + i for i in range(m)}
    model = ScriptedModel(target, strength)
    ups = run(model, bidi_cfg(), tok, InfillRequest(prefix, "", max_new_tokens=m, policy="quota", tokens_per_step=1))
    assert len(model.calls) == m and ups[-1].result.forwards == m
    assert commits_per_step(ups) == [1] * m
    assert [u.stable for u in ups[:-1]] == [""] * (m - 1)          # leftmost is committed last
    assert list(ups[-1].result.token_ids) == [10 + i for i in range(m)]
    assert ups[-1].result.finish_reason == "length"


def test_quota_k_commits_k(tok):
    s = span_start(tok, "a")
    model = ScriptedModel({s + i: 20 for i in range(6)}, {s + i: 3.0 for i in range(6)})
    ups = run(model, bidi_cfg(), tok, InfillRequest("a", "", max_new_tokens=6, policy="quota", tokens_per_step=4))
    assert commits_per_step(ups) == [4, 2]


def test_threshold_commits_all_confident_at_least_one(tok):
    s = span_start(tok, "a")
    # positions 0,2 very confident (strength 20 -> p ~ 1), others unsure (p = e^0.5/(e^0.5+319))
    strength = {s: 20.0, s + 1: 0.5, s + 2: 20.0, s + 3: 0.5}
    model = ScriptedModel({s + i: 11 for i in range(4)}, strength)
    ups = run(model, bidi_cfg(), tok, InfillRequest("a", "", max_new_tokens=4, policy="threshold", threshold=0.9))
    # step 1: both confident ones; then one unsure per step (at least one)
    assert commits_per_step(ups) == [2, 1, 1]


def test_entropy_bound(tok):
    s = span_start(tok, "a")
    strength = {s: 30.0, s + 1: 30.0, s + 2: 30.0, s + 3: 0.01}     # last is ~uniform: entropy ~ln(320)
    model = ScriptedModel({s + i: 11 for i in range(4)}, strength)
    ups = run(model, bidi_cfg(), tok, InfillRequest("a", "", max_new_tokens=4, policy="entropy", entropy_bound=0.5))
    assert commits_per_step(ups) == [3, 1]


def test_eos_truncates_and_stops_early(tok):
    s = span_start(tok, "a")
    ids = tok.encode(" b c")
    m = 10
    target = {s + i: t for i, t in enumerate(ids)}
    target[s + len(ids)] = EOS
    strength = {s + i: 5.0 for i in range(m)}
    strength[s + len(ids)] = 9.0                                      # EOS is the most confident
    model = ScriptedModel(target, strength)
    ups = run(model, bidi_cfg(), tok, InfillRequest("a", "", max_new_tokens=m, policy="quota", tokens_per_step=1))
    res = ups[-1].result
    assert res.finish_reason == "eos"
    assert res.text == " b c" and res.new_tokens == len(ids)
    assert res.forwards == len(ids) + 1                              # EOS step + one per real token
    # after EOS the canvas tail is EOS, not masks
    last_ids = model.calls[-1][0][0]
    assert last_ids[s + len(ids):s + m].tolist() == [EOS] * (m - len(ids))


def test_blocks_are_decoded_left_to_right(tok):
    s = span_start(tok, "a")
    m, block = 6, 2
    # the rightmost positions are the most confident, but blocks force left-to-right
    model = ScriptedModel({s + i: 30 + i for i in range(m)}, {s + i: 1.0 + i for i in range(m)})
    ups = run(model, bidi_cfg(), tok, InfillRequest("a", "", max_new_tokens=m, policy="quota", block_size=block))
    stable_lens = [len(tok.encode(u.stable)) if u.stable else 0 for u in ups]
    assert stable_lens == sorted(stable_lens)
    assert stable_lens[1] == 2 and stable_lens[3] == 4               # each block completes in turn


def test_stable_only_grows_and_is_prefix_of_draft_and_result(tok):
    prefix = "def f():\n    return "
    s = span_start(tok, prefix)
    ids = tok.encode("self.x + 1")
    gen = torch.Generator().manual_seed(3)
    strength = {s + i: float(torch.rand(1, generator=gen) * 5 + 1) for i in range(len(ids))}
    model = ScriptedModel({s + i: t for i, t in enumerate(ids)}, strength)
    ups = run(model, bidi_cfg(), tok, InfillRequest(prefix, "\n", max_new_tokens=len(ids), policy="threshold", threshold=0.99))
    for before, after in zip(ups, ups[1:]):
        assert after.stable.startswith(before.stable)
    for u in ups:
        assert u.draft.startswith(u.stable)
    assert ups[-1].result.text == "self.x + 1" == ups[-1].stable


def test_cancel_after_k_steps_returns_promptly(tok):
    s = span_start(tok, "a")
    model = ScriptedModel({s + i: 12 for i in range(20)}, {s + i: 1.0 for i in range(20)})
    cancel = threading.Event()
    ups = []
    for u in Decoder(model, tok, bidi_cfg()).run(InfillRequest("a", "", max_new_tokens=20, policy="quota"), cancel):
        ups.append(u)
        if len(ups) == 3:
            cancel.set()
    assert ups[-1].result.finish_reason == "cancelled"
    assert ups[-1].result.forwards == 3 == len(model.calls)


def test_deadline_returns_the_draft(tok):
    s = span_start(tok, "a")
    model = ScriptedModel({s + i: 12 for i in range(8)}, {s + i: 1.0 for i in range(8)})
    ups = run(model, bidi_cfg(), tok, InfillRequest("a", "", max_new_tokens=8, policy="quota", deadline_ms=0))
    assert ups[-1].result.finish_reason == "deadline" and ups[-1].result.forwards == 0


def test_greedy_is_deterministic_and_seeded_sampling_repeats(tok):
    s = span_start(tok, "a")
    model = ScriptedModel({s + i: 12 + i for i in range(8)}, {s + i: 0.3 for i in range(8)})
    req = InfillRequest("a", "", max_new_tokens=8, policy="threshold", threshold=0.5)
    a = run(model, bidi_cfg(), tok, req)[-1].result
    b = run(model, bidi_cfg(), tok, req)[-1].result
    assert a.token_ids == b.token_ids
    sreq = InfillRequest("a", "", max_new_tokens=8, policy="quota", temperature=1.0, seed=5)
    c = run(model, bidi_cfg(), tok, sreq)[-1].result
    d = run(model, bidi_cfg(), tok, sreq)[-1].result
    e = run(model, bidi_cfg(), tok, InfillRequest("a", "", max_new_tokens=8, policy="quota", temperature=1.0, seed=6))[-1].result
    assert c.token_ids == d.token_ids and c.token_ids != e.token_ids


def test_shifted_logits_read_the_previous_row(tok):
    s = span_start(tok, "a")
    # with the shift, span index i is predicted by canvas row s + i - 1
    model = ScriptedModel({s - 1 + i: 40 + i for i in range(3)}, {s - 1 + i: 5.0 for i in range(3)})
    res = run(model, bidi_cfg(family="dream", logit_shift=True), tok, InfillRequest("a", "", max_new_tokens=3))[-1].result
    assert list(res.token_ids) == [40, 41, 42]


def test_mask_token_is_never_committed(tok):
    s = span_start(tok, "a")
    model = ScriptedModel({s: MASK}, {s: 50.0})
    res = run(model, bidi_cfg(), tok, InfillRequest("a", "", max_new_tokens=1))[-1].result
    assert MASK not in res.token_ids


def test_prefix_and_dual_cache_compute_smaller_windows(tok):
    s = span_start(tok, "a")
    suffix = "\nprint(1)\n"
    m = 4
    for mode, expected in (("none", None), ("prefix", "prefix"), ("dual", "dual")):
        model = ScriptedModel({s + i: 12 for i in range(m)}, {s + i: 1.0 + i for i in range(m)})
        run(model, bidi_cfg(), tok, InfillRequest("a", suffix, max_new_tokens=m, policy="quota", block_size=2, cache=mode))
        total = model.calls[0][0].shape[1]
        lengths = [c[0].shape[1] for c in model.calls]
        if expected is None:
            assert lengths == [total] * m
        elif expected == "prefix":     # first step of each block is full, then block + everything after it
            assert lengths == [total, total - s, total, total - s - 2]
        else:                          # first step of each block is full, then the block only
            assert lengths == [total, 2, total, 2]
            assert model.calls[1][2] == total - 2                        # the rest comes from the cache


def test_block_causal_layout_and_query_shapes(tok):
    cfg = block_config(vocab_size=V, block_size=4).with_(mask_id=MASK, eos_id=EOS, pad_id=PAD)
    model = ScriptedModel({}, {}, default=(20, 9.0))                # everything confident
    ups = run(model, cfg, tok, InfillRequest("ab", "cd", max_new_tokens=8, policy="threshold"))
    ctx = [cfg.fim_suffix_id] + tok.encode("cd") + [cfg.fim_prefix_id] + tok.encode("ab") + [cfg.fim_middle_id]
    first_ids, first_pos, first_past = model.calls[0]
    assert first_ids[0].tolist() == ctx + [MASK] * 4 and first_past == 0
    # second block: the finished block is appended to the cache in the same forward pass
    second_ids, second_pos, second_past = model.calls[1]
    assert second_ids[0].tolist() == [20] * 4 + [MASK] * 4
    assert second_pos.tolist() == list(range(len(ctx), len(ctx) + 8)) and second_past == len(ctx)
    assert ups[-1].result.forwards == 2 and ups[-1].result.new_tokens == 8


def test_a_predicted_stop_run_ends_the_span_in_one_step(tok):
    """Threshold policy: the tail predicted as pad ends with the one confident stop token."""
    s = span_start(tok, "a")
    ids = tok.encode(" b")
    m = 8
    target = {s + i: t for i, t in enumerate(ids)}
    strength = {s + i: 1.0 for i in range(m)}
    for i in range(len(ids), m):
        target[s + i] = PAD
    strength[s + m - 1] = 30.0                                        # only the last pad is confident
    model = ScriptedModel(target, strength)
    ups = run(model, bidi_cfg(), tok, InfillRequest("a", "", max_new_tokens=m, policy="threshold", threshold=0.9))
    res = ups[-1].result
    assert res.finish_reason == "eos" and res.text == " b"
    assert res.forwards == 1 + len(ids)                               # the whole tail in the first step
    # the quota baseline stays exact: it spends forward passes on tail positions one at a time
    quota = run(ScriptedModel(target, strength), bidi_cfg(), tok,
                InfillRequest("a", "", max_new_tokens=m, policy="quota"))[-1].result
    assert quota.text == " b" and quota.forwards > res.forwards


@pytest.mark.parametrize("policy", ["quota", "threshold"])
def test_min_new_tokens_forbids_ending_the_span_before_it(tok, policy):
    s = span_start(tok, "a")
    ids = tok.encode(" b c")
    m = 6
    # the model's favourite first token is EOS; its runner-up there is ids[0]
    target = {s: EOS, **{s + i: t for i, t in enumerate(ids) if i}, s + len(ids): EOS}
    strength = {s + i: 5.0 for i in range(m)}
    model = ScriptedModel(target, strength)
    free = run(model, bidi_cfg(), tok, InfillRequest("a", "", max_new_tokens=m, policy=policy))[-1].result
    assert free.text == "" and free.finish_reason == "eos"

    class RunnerUp(ScriptedModel):
        def __call__(self, ids_, positions, past=None, mask=None, logits_from=0):
            rows, kv = super().__call__(ids_, positions, past, mask, logits_from)
            for i, p in enumerate(positions.tolist()[logits_from:]):
                if p == s:
                    rows[0, i, ids[0]] = 4.0
            return rows, kv

    req = InfillRequest("a", "", max_new_tokens=m, policy=policy, min_new_tokens=1)
    res = run(RunnerUp(target, strength), bidi_cfg(), tok, req)[-1].result
    assert res.token_ids[0] == ids[0]
    assert res.text == " b c" and res.finish_reason == "eos"
