"""The attention draft head (drafting/attention_head.py): it drafts, it never changes the text.

Oracles: its training view (chain_levels, all rows at once under chain_visibility) against
its drafting view (a chain over a cache of true rows, one step at a time); the rows the decoder
keeps in the context cache against rows computed from scratch by one pass over the whole
context; one-token-per-pass decoding (the text with its drafts).
"""
import pytest
import torch

from engine import Engine, InfillRequest
from engine.drafting.attention_head import AttentionHead, HeadCache, HeadRows, chain_visibility, chain_levels
from engine.errors import CheckpointError
from engine.model.transformer import causal_visibility

from test_mask_adapter import drafted_text_is_the_one_per_pass_text, typing_cases  # tests/engine on sys.path


@pytest.fixture(scope="module")
def tiny_ar(tiny_gguf_qwen2):
    return Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")


def random_head(engine, seed=0, vocab=None, scale=0.3):
    """A head whose every weight is random (the initial one has zero output projections)."""
    cfg = engine.cfg
    head = AttentionHead(cfg, vocab or list(range(cfg.vocab_size)), inner=32, heads=4, kv_heads=2, slots=3, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name in ("o_proj", "down"):
            p = getattr(head, name)
            p.copy_(torch.randn(p.shape, generator=gen) * scale / p.shape[1] ** 0.5)
    return head.bind(engine.model).eval()


def frozen_pass(engine, ids):
    """hidden [T, H] of one pass over ids."""
    x = torch.tensor([ids])
    with torch.no_grad():
        hidden, _ = engine.model.hidden(x, torch.arange(len(ids)), None, causal_visibility(len(ids), 0))
    return hidden[0]


def test_the_chain_mask_shows_true_rows_then_the_chain_before_each_step():
    assert chain_visibility(3, 0).int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    m1 = chain_visibility(4, 1).int()          # [4, 8]: true rows <= j - 1, level-1 row j
    assert m1[:, :4].tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert m1[:, 4:].tolist() == torch.eye(4, dtype=torch.int).tolist()
    m2 = chain_visibility(4, 2).int()          # level-1 row j - 1, level-2 row j
    assert m2[3, :4].tolist() == [1, 1, 0, 0] and m2[3, 4:8].tolist() == [0, 0, 1, 0] and m2[3, 8:].tolist() == [0, 0, 0, 1]


def test_drafting_reads_exactly_what_training_reads(tiny_ar):
    head = random_head(tiny_ar)
    ids = tiny_ar.tokenizer.encode("def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n")
    hidden = frozen_pass(tiny_ar, ids)
    with torch.no_grad():
        levels = chain_levels(head, hidden[None], torch.tensor([ids]), depth=3)
    for t in (0, 3, len(ids) - 5):
        cache = HeadCache()
        if t:
            head.extend(cache, hidden[:t], torch.tensor(ids[1:t + 1]), 0)
        chain = head.chain(cache, hidden[t], ids[t + 1])
        assert len(cache) == t + 1                                          # row t joined as a true row
        for i in range(3):
            f, logits = chain.outputs()
            want_f, want_logits = levels[i][0][0, t + i], levels[i][1][0, t + i]
            assert torch.allclose(logits, want_logits, atol=1e-4, rtol=1e-4), (t, i)
            assert torch.allclose(f[0, 0], want_f, atol=1e-5, rtol=1e-4), (t, i)
            chain.advance(f, ids[t + 2 + i])                               # the true token, as training feeds


def fresh_rows(engine, head, ctx):
    """HeadRows of ctx from one pass over the whole context."""
    rows = HeadRows(head)
    rows.add_hidden(frozen_pass(engine, ctx))
    rows.sync(head, ctx, len(ctx) - 1)
    return rows


def assert_rows_equal(got, want, n):
    assert got is not None and len(got) >= n
    assert torch.allclose(got.hidden[:n], want.hidden[:n], atol=1e-4, rtol=1e-4)
    assert len(got.cache) >= n - 1
    assert torch.allclose(got.cache.k[:, :n - 1], want.cache.k[:, :n - 1], atol=1e-4, rtol=1e-4)
    assert torch.allclose(got.cache.v[:, :n - 1], want.cache.v[:, :n - 1], atol=1e-4, rtol=1e-4)


def test_the_rows_kept_with_the_context_are_the_rows_of_one_whole_pass(tiny_ar):
    head = random_head(tiny_ar, seed=3)
    tiny_ar.use_drafter(head)
    try:
        prefix, suffix = "import os\n\ndef walk(root):\n    for name in os.listdir(root):\n        ", "\n    return\n"
        req = InfillRequest(prefix, suffix, max_new_tokens=8)
        ctx = tiny_ar.decoder().context_ids(req)
        tiny_ar.context_cache.clear()
        tiny_ar.infill(req)                                                  # cold: rows from the first pass
        assert_rows_equal(tiny_ar.context_cache.rows, fresh_rows(tiny_ar, head, ctx), len(ctx))
        warm = tiny_ar.infill(req)                                           # warm: the cached state, the kept rows
        assert tiny_ar.context_cache.rows.owner is head
        typed = InfillRequest(prefix + "pa", suffix, max_new_tokens=8)      # a keystroke: cut, then extended
        tiny_ar.infill(typed)
        ctx2 = tiny_ar.decoder().context_ids(typed)
        assert_rows_equal(tiny_ar.context_cache.rows, fresh_rows(tiny_ar, head, ctx2), len(ctx2))
        tiny_ar.context_cache.clear()
        tiny_ar.warm(req, chunk=7)                                           # the warm-up's chunks
        assert_rows_equal(tiny_ar.context_cache.rows, fresh_rows(tiny_ar, head, ctx), len(ctx))
        assert tiny_ar.infill(req).token_ids == warm.token_ids
        other = random_head(tiny_ar, seed=4)                                 # another head: the rows are not its
        assert tiny_ar.context_cache.rows_for(other, ctx) == (None, 0)
    finally:
        tiny_ar.use_drafter(None)


@pytest.mark.parametrize("draft_with,line", [("auto", False), ("trained", False), ("auto", True)])
def test_attention_head_drafts_give_the_one_per_pass_text(tiny_ar, draft_with, line):
    """A head built to guess right often (its vocabulary rows are the model's own projection of a
    nearly identity step) and wrong often enough: accepted and rejected guesses, cut by the budget
    (and, for a line completion, at a newline)."""
    head = random_head(tiny_ar, seed=5, scale=0.05)
    tiny_ar.use_drafter(head)
    head.first_min_prob = head.min_prob = 0.0
    try:
        drafted, accepted = drafted_text_is_the_one_per_pass_text(tiny_ar, typing_cases(5, 11), draft_with,
                                                                  ends_at_newline=line)
    finally:
        tiny_ar.use_drafter(None)
    assert 0 < accepted < drafted, (accepted, drafted)


def test_files_round_trip_and_refuse_other_models(tiny_ar, tmp_path):
    cfg = tiny_ar.cfg
    head = random_head(tiny_ar, seed=6, vocab=[1, 2, 3, 5, 8])
    path = tmp_path / "a.safetensors"
    head.save(path, extra={"step": 9})
    back = AttentionHead.load(path, cfg)
    assert back.extra == {"step": 9} and back.vocab.tolist() == [1, 2, 3, 5, 8]
    assert (back.heads, back.kv_heads, back.inner, back.slots) == (4, 2, 32, 3)
    for (n, a), (_, b) in zip(head.named_parameters(), back.named_parameters()):
        assert torch.allclose(a.float(), b, atol=1e-2, rtol=1e-2), n                  # stored in fp16
    with pytest.raises(CheckpointError, match="another model"):
        AttentionHead.load(path, cfg.with_(hidden_size=cfg.hidden_size * 2))
    tiny_ar.load_drafter(path)                       # the engine reads the format from the file
    try:
        assert isinstance(tiny_ar.head, AttentionHead) and tiny_ar.adapter is None
    finally:
        tiny_ar.load_drafter(None)


def test_training_lowers_the_loss_resumes_and_leaves_the_verifier_alone(tiny_ar, tmp_path):
    import engine.train.drafters.draft_head_train as H
    from engine.train.drafters.attention_head_train import AttentionHeadTrainer
    from test_draft_head import source

    frozen = {n: p.detach().clone() for n, p in tiny_ar.model.named_parameters()}
    rec = source(tmp_path)
    cfg = H.HeadConfig(inner=32, heads=4, kv_heads=2, slots=3, vocab_size=300, lr=3e-3, warmup_steps=1,
                       batch_rows=256, prefix_tokens=96, suffix_tokens=32, middle_tokens=24, eval_examples=3,
                       eval_middle_tokens=12, eval_every=1000, save_every=1000)
    tr = AttentionHeadTrainer(tiny_ar.model, tmp_path / "run", [rec], [rec], tiny_ar.tokenizer.encode, cfg,
                              say=lambda m: None)
    tr.collect(examples=8)
    start = tr.train_step()
    tr.train(steps=60, collect_examples=0)
    ends = [tr.train_step() for _ in range(5)]
    assert sum(e["loss"] for e in ends) / 5 < start["loss"] * 0.5, (start, ends)
    # every level learns the tiny model's next-token map of its training rows (its held-out
    # greedy middles are degenerate text, as for the draft head's test: measured, not asserted)
    assert min(sum(e["slot_accuracy"][i] for e in ends) / 5 for i in range(3)) > 0.5, (start, ends)
    ev = tr.evaluate()
    assert ev["groups"] > 0 and len(ev["slot_accuracy"]) == 3 and ev["expected_tokens_per_pass"] >= 1.0
    tr.save()
    assert (tmp_path / "run" / "attn.safetensors").is_file()
    for n, p in tiny_ar.model.named_parameters():
        assert torch.equal(p, frozen[n]), n
    again = AttentionHeadTrainer(tiny_ar.model, tmp_path / "run", [rec], [rec], tiny_ar.tokenizer.encode, None,
                                 say=lambda m: None)
    assert isinstance(again.head, AttentionHead) and again.state.step == tr.state.step and again.opt.state
    with pytest.raises(ValueError, match="attn run"):
        H.HeadTrainer(tiny_ar.model, tmp_path / "run", [rec], [rec], tiny_ar.tokenizer.encode, None,
                      say=lambda m: None)


def test_a_head_started_from_a_draft_head_drafts_as_it_does(tiny_ar):
    from engine.drafting.head import DraftHead
    cfg = tiny_ar.cfg
    ff = DraftHead(cfg, list(range(cfg.vocab_size)), inner=24, slots=3, seed=2)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        ff.down.copy_(torch.randn(ff.down.shape, generator=gen) * 0.1)
    ff.bind(tiny_ar.model).eval()
    head = AttentionHead.from_draft_head(ff, cfg, heads=4, kv_heads=2).bind(tiny_ar.model).eval()
    ff.first_min_prob = ff.min_prob = head.first_min_prob = head.min_prob = 0.0
    ids = tiny_ar.tokenizer.encode("for i in range(10):\n    total += i * i\n")
    hidden = frozen_pass(tiny_ar, ids)
    for t in (2, len(ids) - 4):
        cache = HeadCache()
        head.extend(cache, hidden[:t], torch.tensor(ids[1:t + 1]), 0)
        assert head.propose(cache, hidden[t], ids[t + 1], 3) == ff.propose(hidden[t], ids[t + 1], 3)
