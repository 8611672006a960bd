import json

import torch

from engine import Engine, InfillRequest
import engine.train.embedded.session as session
from engine.train.embedded.data import DataConfig
from engine.train.embedded.trainer import ModelShape, TrainConfig, export_model, lr_at


def _cfg(code_dir, run_dir, **train):
    shape = ModelShape(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, block_size=4)
    tcfg = TrainConfig(rows=2, capacity=320, examples_per_fill=6, lr=3e-3, warmup_steps=2, total_steps=8,
                       eval_every=0, log_every=1, checkpoint_every_s=1e9, **train)
    return session.SessionConfig(run_dir=str(run_dir), roots=[str(code_dir)], vocab_size=320, shape=shape,
                                 train=tcfg, data=DataConfig(block_size=4, prefix_tokens=64, suffix_tokens=32),
                                 heldout_percent=0.0, threads=1)


def _quiet(_msg):
    pass


def test_a_run_split_in_two_equals_one_run(code_dir, tmp_path):
    one = session.build(_cfg(code_dir, tmp_path / "one"), say=_quiet)
    one.run(max_steps=6)
    two = session.build(_cfg(code_dir, tmp_path / "two"), say=_quiet)
    two.run(max_steps=3, checkpoint=tmp_path / "two" / "ckpt.pt")
    del two
    resumed = session.build(_cfg(code_dir, tmp_path / "two"), say=_quiet)     # picks up ckpt.pt
    assert resumed.state.step == 3
    resumed.run(max_steps=6)
    for (name, a), (_, b) in zip(one.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert one.state.tokens_seen == resumed.state.tokens_seen
    assert [e["loss"] for e in one.state.log] == [e["loss"] for e in resumed.state.log]
    assert one.stream.state.to_dict() == resumed.stream.state.to_dict()


def test_loss_falls_and_the_export_loads_in_the_engine(code_dir, tmp_path):
    cfg = _cfg(code_dir, tmp_path / "run")
    cfg.train.total_steps = 40
    trainer = session.build(cfg, say=_quiet)
    trainer.run(max_steps=40)
    losses = [e["loss"] for e in trainer.state.log]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    folder = export_model(trainer.model, trainer.mcfg, trainer.tokenizer_path, tmp_path / "model",
                          session.train_facts(trainer, "test"), torch.bfloat16)
    raw = json.loads((folder / "config.json").read_text())
    assert raw["model_type"] == "dllm_block" and raw["train_steps"] == 40 and raw["block_size"] == 4
    assert raw["torch_dtype"] == "bfloat16"
    eng = Engine.load(folder)
    assert eng.cfg.extra["train_tokens_seen"] == trainer.state.tokens_seen
    res = eng.infill(InfillRequest(prefix="def fib(n):\n    ", suffix="\n", max_new_tokens=8))
    assert res.forwards >= 1 and res.finish_reason in ("eos", "length")


def test_export_shards_large_models(tmp_path, monkeypatch):
    from engine.testing.checkpoints import block_config, random_state, tiny_tokenizer
    from engine.model.transformer import DecoderModel
    import engine.train.embedded.trainer as trainer_mod
    cfg = block_config(vocab_size=320, hidden=64, layers=2)
    model = DecoderModel(cfg)
    model.load_state_dict(random_state(cfg))
    tiny_tokenizer().save(str(tmp_path / "tok.json"))
    monkeypatch.setattr(trainer_mod, "MAX_SHARD_BYTES", 100_000)      # > the largest tensor (82 kB)
    folder = trainer_mod.export_model(model, cfg, tmp_path / "tok.json", tmp_path / "m")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and all(p.stat().st_size <= 100_000 + 4096 for p in shards)
    eng = Engine.load(folder)
    assert torch.equal(eng.model.embed_tokens.weight, model.embed_tokens.weight)


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == 0.1 and lr_at(9, cfg) == 1.0
    assert abs(lr_at(60, cfg) - 0.55) < 1e-9 and abs(lr_at(110, cfg) - 0.1) < 1e-9
    timed = TrainConfig(lr=1.0, warmup_steps=0, time_budget_s=100.0, min_lr_ratio=0.0)
    assert abs(lr_at(5, timed, wall_s=50.0) - 0.5) < 1e-9 and lr_at(5, timed, wall_s=500.0) == 0.0


def test_a_resumed_timed_session_warms_up_and_decays_within_its_own_budget(code_dir, tmp_path):
    cfg = _cfg(code_dir, tmp_path / "run", time_budget_s=1000.0)
    first = session.build(cfg, say=_quiet)
    first.run(max_steps=3, checkpoint=tmp_path / "run" / "ckpt.pt")
    assert first.state.step == 3
    resumed = session.build(_cfg(code_dir, tmp_path / "run", time_budget_s=1000.0), say=_quiet)
    resumed.state.wall_s += 5000.0            # long past the budget, counted over all sessions
    resumed.session_start = (resumed.state.step, resumed.state.wall_s)
    assert resumed.current_lr() == lr_at(0, resumed.cfg)           # warmup starts again
    resumed.state.step += 2
    resumed.state.wall_s += 500.0                                   # half of this session's budget
    assert abs(resumed.current_lr() - lr_at(2, resumed.cfg, wall_s=500.0)) < 1e-12
    assert resumed.current_lr() > resumed.cfg.lr * resumed.cfg.min_lr_ratio


def test_next_token_targets_are_context_slots_predicting_the_following_token():
    from engine.train.embedded.examples import Example, make_batch, row_layout
    ex = Example(context=(10, 11, 12, 13), middle=(20, 21, 0, 1), copies=2)
    batch = make_batch([[ex, ex]], 4, 40, 2, torch.Generator().manual_seed(0), ar_fraction=1.0)
    ids, _, doc, _, _, _ = row_layout([ex, ex], 4, 40)
    # each example: context slots 0..3 predict 11, 12, 13 and (from <fim_middle>) the first middle token
    per_example = [11, 12, 13, 20]
    assert batch.ar_targets.tolist() == per_example * 2
    assert all(ids[c + 1] == t for c, t in zip(batch.ar_cols.tolist(), batch.ar_targets.tolist()))
    assert all(doc[c] == doc[c + 1] for c in batch.ar_cols.tolist())
    none = make_batch([[ex, ex]], 4, 40, 2, torch.Generator().manual_seed(0))
    assert none.ar_targets.numel() == 0
    assert torch.equal(none.ids, make_batch([[ex, ex]], 4, 40, 2, torch.Generator().manual_seed(0)).ids)


def test_the_next_token_loss_trains_alongside_the_diffusion_loss(code_dir, tmp_path):
    trainer = session.build(_cfg(code_dir, tmp_path / "run", ar_fraction=0.5), say=_quiet)
    trainer.run(max_steps=4)
    assert all("ar_loss" in e and e["ar_loss"] > 0 for e in trainer.state.log)
    assert all(e["loss"] > 0 for e in trainer.state.log)
