"""`dllm-lsp train`: train or fine-tune the small block-diffusion model on your own code.

    dllm-lsp train --data ~/src/myproject --minutes 30 --init embedded --out ./my-model

The run folder (--run, default <out>.run) keeps the corpus manifest, the tokenizer and a
resumable checkpoint: running the same command again continues where it stopped. At the end
(and whenever --export-every minutes pass) the model is exported to --out, a folder the server
loads (`"dllm.model": "/path/to/my-model"`). Top-level imports stay light: torch is imported in run().
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drafter", action="store_true",
                   help="train a drafter of the default model instead: the same as `dllm-lsp train-drafter` "
                        "(see its --help for the options)")
    p.add_argument("--data", nargs="+", default=[], metavar="DIR",
                   help="folders of Python code to train on (default: the standard library and site-packages)")
    p.add_argument("--minutes", type=float, default=None, help="train for this many minutes (this session)")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step (counted over all sessions)")
    p.add_argument("--init", default=None, help='fine-tune from a model folder or "embedded" (the self-trained 5M model; keeps its tokenizer and shape)')
    p.add_argument("--out", default="dllm-model", help="model folder to write (default: ./dllm-model)")
    p.add_argument("--run", default=None, help="run folder for checkpoints and logs (default: <out>.run)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g = p.add_argument_group("model shape (ignored with --init)")
    add_shape_arguments(g)
    g.add_argument("--vocab-size", type=int, default=8192, help="tokenizer vocabulary to train (default: 8192)")
    t = p.add_argument_group("optimisation")
    t.add_argument("--rows", type=int, default=8, help="rows per batch")
    t.add_argument("--capacity", type=int, default=768, help="slots per row")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3, 5e-4 with --init)")
    t.add_argument("--warmup", type=int, default=None, help="warmup steps (default 100, 20 with --init)")
    t.add_argument("--total-steps", type=int, default=None,
                   help="length of the cosine schedule in steps (default: follow --minutes)")
    t.add_argument("--seed", type=int, default=0, help="seed of the data order, masks and initial weights (default: 0)")
    t.add_argument("--bf16", action="store_true",
                   help="bf16 autocast (GPU; also faster on CPUs with AVX512-BF16 or AMX)")
    t.add_argument("--ar-fraction", type=float, default=None,
                   help="share of context slots given an auxiliary next-token target (0 = off; default 0.25)")
    t.add_argument("--ar-weight", type=float, default=None, help="weight of that loss (default 0.5)")
    t.add_argument("--checkpoint-every", type=float, default=4.0, help="minutes between checkpoints")
    t.add_argument("--export-dtype", default="float32", choices=["float32", "bfloat16"],
                   help="dtype of the exported model.safetensors (default: float32)")
    p.add_argument("--no-progress", action="store_true", help="print log lines instead of a progress bar")


def add_shape_arguments(g) -> None:
    """The model-shape flags, defaulting to the embedded model's shape (also used by scripts/train_gpu.py)."""
    g.add_argument("--hidden", type=int, default=256, help="hidden size (default: 256)")
    g.add_argument("--layers", type=int, default=4, help="transformer layers (default: 4)")
    g.add_argument("--heads", type=int, default=4, help="attention heads (default: 4)")
    g.add_argument("--kv-heads", type=int, default=2, help="key/value heads, GQA (default: 2)")
    g.add_argument("--intermediate", type=int, default=704, help="MLP size (default: 704)")
    g.add_argument("--block-size", type=int, default=8, help="tokens per diffusion block (default: 8)")


def shape_from_args(args):
    from engine.train.embedded.trainer import ModelShape  # noqa: PLC0415
    return ModelShape(hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
                      intermediate=args.intermediate, block_size=args.block_size)


def session_config(args):
    from engine.train.embedded.data import DataConfig  # noqa: PLC0415
    from engine.train.embedded.session import SessionConfig  # noqa: PLC0415
    from engine.train.embedded.trainer import TrainConfig  # noqa: PLC0415
    fine_tune = args.init is not None
    budget = args.minutes * 60 if (args.minutes and not args.total_steps) else None
    train = TrainConfig(rows=args.rows, capacity=args.capacity, lr=args.lr or (5e-4 if fine_tune else 2e-3),
                        warmup_steps=args.warmup if args.warmup is not None else (20 if fine_tune else 100),
                        total_steps=args.total_steps or args.max_steps or 10 ** 9, time_budget_s=budget,
                        seed=args.seed, bf16=args.bf16, checkpoint_every_s=args.checkpoint_every * 60,
                        **{k: v for k, v in (("ar_fraction", args.ar_fraction), ("ar_weight", args.ar_weight))
                           if v is not None})
    shape = shape_from_args(args)
    run_dir = args.run or f"{args.out.rstrip('/')}.run"
    return SessionConfig(run_dir=run_dir, roots=[str(Path(d).expanduser()) for d in args.data], init=args.init,
                         vocab_size=args.vocab_size, shape=shape, train=train,
                         data=DataConfig(block_size=args.block_size, seed=args.seed), device=args.device,
                         threads=args.threads)


def run(args) -> int:
    import torch  # noqa: PLC0415
    import engine.train.embedded.session as session  # noqa: PLC0415
    from engine.train.embedded.trainer import export_model  # noqa: PLC0415
    if args.minutes is None and args.max_steps is None:
        print("dllm-lsp train: give --minutes or --max-steps", file=sys.stderr)
        return 2
    cfg = session_config(args)
    try:
        trainer = session.build(cfg)
    except (ValueError, OSError) as exc:
        print(f"dllm-lsp train: {exc}", file=sys.stderr)
        return 1
    n_params = sum(p.numel() for p in trainer.model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, block size {trainer.mcfg.block_size}, "
          f"vocab {trainer.mcfg.vocab_size}; run folder {cfg.run_dir}", flush=True)
    deadline = args.minutes * 60 if args.minutes else None
    max_steps = args.max_steps if args.max_steps is not None else 10 ** 9
    ckpt = Path(cfg.run_dir) / "ckpt.pt"

    def log_line(entry: dict) -> None:
        session.write_log(Path(cfg.run_dir), entry)
        if args.no_progress or not sys.stdout.isatty():
            held = f" heldout {entry['heldout_loss']:.3f}" if entry.get("heldout_loss") is not None else ""
            print(f"{time.strftime('%H:%M:%S')} step {entry['step']} loss {entry['loss']:.3f}{held} "
                  f"tokens {entry['tokens']} lr {entry['lr']:.2e} wall {entry['wall_s']}s", flush=True)

    if args.no_progress or not sys.stdout.isatty():
        trainer.run(max_steps=max_steps, deadline_s=deadline, checkpoint=ckpt, on_log=log_line)
    else:
        _run_with_progress(trainer, max_steps, deadline, ckpt, log_line)
    facts = session.train_facts(trainer, session.hardware_name(cfg.device))
    dtype = torch.bfloat16 if args.export_dtype == "bfloat16" else torch.float32
    export_model(trainer.model, trainer.mcfg, trainer.tokenizer_path, Path(args.out), facts, dtype)
    print(f"wrote {args.out} (step {facts['steps']}, {facts['tokens_seen']} tokens seen); "
          f"use it with --model {args.out} or the dllm.model setting", flush=True)
    return 0


def _run_with_progress(trainer, max_steps, deadline, ckpt, log_line) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415
    total = deadline if deadline is not None else max_steps - trainer.state.step
    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn()) as bar:
        task = bar.add_task("", total=total)
        start = time.perf_counter()

        def on_log(entry: dict) -> None:
            log_line(entry)
            done = time.perf_counter() - start if deadline is not None else entry["step"]
            bar.update(task, completed=done, description=f"step {entry['step']} loss {entry['loss']:.3f}")

        trainer.cfg.log_every = 1
        trainer.run(max_steps=max_steps, deadline_s=deadline, checkpoint=ckpt, on_log=on_log)


def main(argv=None) -> int:
    """`python -m engine.train.embedded.cli ...`: the same command without the dllm_lsp package."""
    parser = argparse.ArgumentParser(prog="dllm-lsp train", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
