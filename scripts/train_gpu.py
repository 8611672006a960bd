#!/usr/bin/env python
"""Train the embedded model, or a drafter of the default model, on a GPU box for at most 10 minutes.

    python scripts/train_gpu.py --init runs/main/ckpt.pt --minutes 9 --out runs/gpu/model
    python scripts/train_gpu.py --drafter MODEL [--kind head|attn|mask] --minutes 9 --run runs/drafter-main

--drafter trains a drafter of MODEL (--kind head: the draft head, engine/train/drafters/draft_head_train.py;
attn: the attention draft head, engine/train/drafters/attention_head_train.py; mask: the mask slots,
engine/train/drafters/mask_slots_train.py; a resumed run keeps its kind) (a .gguf file or a
converted model folder: the box has no network, so the model travels with the job) with the
same trainer as `dllm-lsp train-drafter`, continuing the run folder's state (weights, features and
optimizer), so CPU and GPU sessions accumulate into one drafter.

Runs from the repository root without installing the package (imports `engine` from the
working tree); needs only torch, tokenizers and safetensors, and no network: the corpus is the
box's own standard library and site-packages (or --data), the tokenizer comes from --init.
--init takes a training checkpoint (ckpt.pt, next to its tokenizer.json) or a model folder
("embedded" included); without it a new model and tokenizer are trained from scratch. The
weights are written in safetensors files of at most 16 MB each.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MAX_MINUTES = 10.0


def parse_args(argv=None) -> argparse.Namespace:
    from engine.train.embedded.cli import add_shape_arguments  # noqa: PLC0415
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init", default=None, help="ckpt.pt of a CPU run, a model folder, or 'embedded'")
    p.add_argument("--drafter", default=None, metavar="MODEL",
                   help="train a drafter of MODEL instead (a .gguf file or a model folder)")
    p.add_argument("--kind", choices=("head", "attn", "mask"), default="head",
                   help="with --drafter: head (a draft head, the default), attn (a draft head with attention "
                        "over the context's states) or mask (trained mask slots)")
    p.add_argument("--minutes", type=float, default=9.0, help=f"training minutes (at most {MAX_MINUTES:g})")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps of this session")
    p.add_argument("--data", nargs="*", default=[], help="code folders (default: stdlib + site-packages)")
    p.add_argument("--run", default="runs/gpu", help="run folder (manifest, tokenizer, checkpoint, log)")
    p.add_argument("--out", default=None, help="model folder to export (default: <run>/model)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--rows", type=int, default=64, help="rows per batch")
    p.add_argument("--capacity", type=int, default=768)
    p.add_argument("--lr", type=float, default=None, help="peak LR (default 2e-3; 1e-3 with --init)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--no-bf16", action="store_true", help="fp32 instead of bf16 autocast")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--export-dtype", default="float32", choices=["float32", "bfloat16"])
    # shape, for training from scratch only
    add_shape_arguments(p)
    args = p.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        p.error(f"--minutes must be in (0, {MAX_MINUTES:g}]")
    return args


def checkpoint_to_folder(ckpt: Path, folder: Path) -> Path:
    """A CPU checkpoint (model weights + config) -> a model folder usable as --init."""
    import torch  # noqa: PLC0415
    from engine.loading.config import ModelConfig  # noqa: PLC0415
    from engine.loading.weights import save_state  # noqa: PLC0415
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    folder.mkdir(parents=True, exist_ok=True)
    st = blob.get("train_state", {})
    facts = {f"train_{k}": st[k] for k in ("step", "tokens_seen", "loss_tokens", "wall_s") if k in st}
    if "step" in st:
        facts["train_steps"] = facts.pop("train_step")
    (folder / "config.json").write_text(json.dumps({**blob["model_config"], **facts}))
    tok = ckpt.parent / "tokenizer.json"
    if not tok.is_file():
        raise SystemExit(f"{tok}: the checkpoint's tokenizer.json is missing")
    (folder / "tokenizer.json").write_bytes(tok.read_bytes())
    save_state(ModelConfig.from_folder(folder), blob["model"], folder)
    return folder


def session_config(args, init_folder):
    from engine.train.embedded.data import DataConfig  # noqa: PLC0415
    from engine.train.embedded.session import SessionConfig  # noqa: PLC0415
    from engine.train.embedded.cli import shape_from_args  # noqa: PLC0415
    from engine.train.embedded.trainer import TrainConfig  # noqa: PLC0415
    fine_tune = init_folder is not None
    bf16 = not args.no_bf16 and args.device.startswith("cuda")
    train = TrainConfig(rows=args.rows, capacity=args.capacity, examples_per_fill=args.rows * 3,
                        lr=args.lr or (1e-3 if fine_tune else 2e-3),
                        warmup_steps=args.warmup if args.warmup is not None else (20 if fine_tune else 100),
                        time_budget_s=args.minutes * 60 * 0.97, total_steps=10 ** 9, seed=args.seed, bf16=bf16,
                        log_every=10, eval_every=50, checkpoint_every_s=120.0)
    shape = shape_from_args(args)
    return SessionConfig(run_dir=args.run, roots=args.data, init=str(init_folder) if init_folder else None,
                         shape=shape, train=train, data=DataConfig(block_size=args.block_size, seed=args.seed),
                         device=args.device)


def train_drafter(args) -> int:
    """The drafter mode: the run folder's trainer on args.device for args.minutes, in args.run."""
    import torch  # noqa: PLC0415
    from engine.engine import Engine  # noqa: PLC0415
    from engine.train.drafters.examples import drafter_corpus  # noqa: PLC0415
    from engine.train.drafters.runs import describe_step, open_run  # noqa: PLC0415
    t0 = time.perf_counter()
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    engine = Engine.load(args.drafter, device=args.device, dtype="float32")
    train, heldout = drafter_corpus(Path(args.run), args.data, say=lambda m: print(m, flush=True))
    trainer = open_run(args.kind, engine.model, Path(args.run), train, heldout, engine.tokenizer.encode,
                       say=lambda m: print(m, flush=True))
    budget = max(10.0, args.minutes * 60 - (time.perf_counter() - t0) - 20)
    trainer.train(seconds=budget, steps=args.max_steps,
                  progress=lambda e: describe_step(e) and print(describe_step(e), flush=True))
    final = trainer.evaluate()
    print(f"drafter ({trainer.kind}) step {trainer.state.step} after {time.perf_counter() - t0:.0f} s: "
          f"{json.dumps(final)}", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.drafter:
        return train_drafter(args)
    import torch  # noqa: PLC0415
    import engine.train.embedded.session as session  # noqa: PLC0415
    from engine.train.embedded.trainer import export_model  # noqa: PLC0415
    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    init_folder = None
    if args.init:
        init = Path(args.init)
        init_folder = checkpoint_to_folder(init, Path(tmp.name) / "init") if init.suffix == ".pt" else session.resolve_init(args.init)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = session_config(args, init_folder)
    trainer = session.build(cfg)
    print(f"model {sum(p.numel() for p in trainer.model.parameters()) / 1e6:.2f}M parameters on {args.device}, "
          f"bf16 {cfg.train.bf16}, {args.rows} rows x {args.capacity}", flush=True)
    setup_s = time.perf_counter() - t_start
    budget = max(10.0, args.minutes * 60 - setup_s - 20)      # leave time to export
    max_steps = trainer.state.step + args.max_steps if args.max_steps else 10 ** 9

    def log(entry: dict) -> None:
        session.write_log(Path(cfg.run_dir), entry)
        held = f" heldout {entry['heldout_loss']:.3f}" if entry.get("heldout_loss") is not None else ""
        print(f"step {entry['step']} loss {entry['loss']:.3f}{held} tokens {entry['tokens']} "
              f"wall {entry['wall_s']}s", flush=True)

    trainer.cfg.log_every = 1 if args.max_steps and args.max_steps < 10 else trainer.cfg.log_every
    trainer.run(max_steps=max_steps, deadline_s=budget, checkpoint=Path(cfg.run_dir) / "ckpt.pt", on_log=log)
    facts = session.train_facts(trainer, session.hardware_name(args.device))
    init_facts = _init_facts(init_folder)
    if init_facts:
        facts = {**facts, "init": init_facts}
    out = Path(args.out or Path(cfg.run_dir) / "model")
    dtype = torch.bfloat16 if args.export_dtype == "bfloat16" else torch.float32
    export_model(trainer.model.float(), trainer.mcfg, trainer.tokenizer_path, out, facts, dtype)
    print(f"exported {out} after {time.perf_counter() - t_start:.0f} s: {json.dumps(facts)}", flush=True)
    tmp.cleanup()
    return 0


def _init_facts(folder):
    if folder is None:
        return None
    raw = json.loads((Path(folder) / "config.json").read_text())
    return {k[len("train_"):]: v for k, v in raw.items() if k.startswith("train_") and k != "train_init"} or None


if __name__ == "__main__":
    sys.exit(main())
