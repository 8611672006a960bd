"""`dllm-lsp train-drafter`: train a drafter of the default model on your own code.

    dllm-lsp train-drafter --data ~/src/myproject --minutes 30 --out my-drafter.safetensors

The verifier (the model itself) never changes, so the text the server suggests is the same with
or without a drafter; a drafter trained on your code only makes it arrive in fewer forward
passes. Three kinds (--kind):
  head  (default) a small draft head over the model's last hidden state (engine/drafting/head.py,
        engine/train/drafters/draft_head_train.py): the frozen model reads your code once, then only the
        head trains;
  attn  the same, with one attention layer over every earlier position's state (after EAGLE;
        engine/drafting/attention_head.py, engine/train/drafters/attention_head_train.py), trained on whole
        feature sequences;
  mask  trained mask slots: a mask embedding and low-rank adapters on the mask rows
        (engine/drafting/mask_slots.py, engine/train/drafters/mask_slots_train.py).
The run folder (--run, default <out>.run) keeps the corpus manifest, the features or adapter
and the optimizer state: the same command again continues (in the run's own kind).
The result loads with the `drafter` setting (`"dllm.drafter": "/path/to/my-drafter.safetensors"`)
or `dllm-lsp complete --drafter FILE`.

Files of `dllm-lsp bench decode`'s evaluation set (its standard-library modules) and of
HumanEval are never trained on. Top-level imports stay light: torch is imported in run().
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="the causal FIM model whose drafter to train (unless given: default, the pulled 0.5B)")
    p.add_argument("--data", nargs="+", default=[], metavar="DIR",
                   help="folders of Python code (default: the standard library and site-packages)")
    p.add_argument("--minutes", type=float, default=None, help="train for this many minutes (this session)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (this session)")
    p.add_argument("--out", default="drafter.safetensors", help="drafter file to write (default: ./drafter.safetensors)")
    p.add_argument("--run", default=None, help="run folder for checkpoints and logs (default: <out>.run)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g = p.add_argument_group("drafter (a new run only; a resumed run keeps its own)")
    g.add_argument("--kind", choices=("head", "attn", "mask"), default="head",
                   help="head: a draft head over the last hidden state (default); attn: a draft head with "
                        "attention over the context's states; mask: trained mask slots")
    g.add_argument("--slots", type=int, default=4, help="tokens drafted per pass (default: 4)")
    g.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    g.add_argument("--inner", type=int, default=1024, help="head: width of its residual block (default: 1024)")
    g.add_argument("--vocab", type=int, default=8192, help="head: tokens it can draft (default: 8192)")
    g.add_argument("--init-from", default="", metavar="HEAD",
                   help="start from this draft head file's weights and vocabulary (head: keep training it, on new "
                        "data; attn: its block, the attention starting silent, so step 0 drafts as that head does)")
    g.add_argument("--batch-rows", type=int, default=None,
                   help="head: feature rows a step (default: 256 chains; attn: 2048 rows of whole sequences)")
    g.add_argument("--rank", type=int, default=8, help="mask: low-rank adapter rank (default: 8)")
    g.add_argument("--mask-slots", type=int, default=None, help=argparse.SUPPRESS)   # older spelling of --slots
    g.add_argument("--anchors", type=int, default=48, help="mask: mask groups per training example (default: 48)")
    g.add_argument("--seed", type=int, default=0, help="data order and adapter init (default: 0)")
    g.add_argument("--eval-every", type=int, default=50, help="steps between held-out evaluations (default: 50)")
    p.add_argument("--no-progress", action="store_true", help="print log lines instead of a progress bar")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="only draw the run's curve (training loss, held-out acceptance) to PNG and exit")


def prepare_files(run: Path, roots, say):
    from engine.train.drafters.examples import drafter_corpus  # noqa: PLC0415
    return drafter_corpus(run, roots, say)


def read_log(run_dir: Path):
    """(training steps, evaluations) of a run's log.jsonl."""
    import json  # noqa: PLC0415
    steps, evals = [], []
    path = Path(run_dir) / "log.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        entry = json.loads(line)
        (evals if entry.get("kind") == "eval" else steps).append(entry)
    return steps, evals


def plot_curve(run_dir: Path, png: Path) -> str:
    """Training loss (running mean of 10 steps) and held-out expected tokens per pass against
    minutes trained; returns a one-line summary (or why nothing was drawn)."""
    steps, evals = read_log(run_dir)
    if not steps:
        return f"{run_dir}: no training steps logged yet"
    try:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    minutes, t = [], 0.0
    for e in steps:
        t += e["seconds"] / 60
        minutes.append(t)
    losses = [e["loss"] for e in steps]
    smooth = [sum(losses[max(0, i - 9):i + 1]) / len(losses[max(0, i - 9):i + 1]) for i in range(len(losses))]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(minutes, smooth)
    a.set_xlabel("minutes of training steps (a head run: its feature passes excluded)")
    a.set_ylabel("drafter training loss (mean of 10 steps)")
    if evals:
        em = [e["seconds_trained"] / 60 for e in evals]
        b.plot(em, [e["expected_tokens_per_pass"] for e in evals], marker="o", label="tokens / pass (the drafter alone)")
        for i in range(len(evals[0]["slot_accuracy"])):
            b.plot(em, [1 + e["slot_accuracy"][i] for e in evals], linestyle="--", label=f"1 + slot {i + 1} accuracy")
        b.set_xlabel("minutes trained (all of it)")
        b.legend(fontsize=7)
    b.set_title("held out")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    last = evals[-1] if evals else {}
    return (f"wrote {png}: {len(steps)} steps, {minutes[-1]:.0f} min, last held-out tokens/pass "
            f"{last.get('expected_tokens_per_pass')}, slot accuracy {last.get('slot_accuracy')}")


def run(args) -> int:
    if args.plot:
        out = Path(args.out)
        print(plot_curve(Path(args.run) if args.run else out.with_name(out.name + ".run"), Path(args.plot)))
        return 0
    import torch  # noqa: PLC0415
    from engine.engine import Engine  # noqa: PLC0415
    from engine.train.drafters.draft_head_train import HeadConfig  # noqa: PLC0415
    from engine.train.drafters.examples import DrafterConfig  # noqa: PLC0415
    from engine.train.drafters.runs import describe_step, open_run, run_kind  # noqa: PLC0415

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    run_dir = Path(args.run) if args.run else out.with_name(out.name + ".run")
    say = lambda msg: print(time.strftime("%H:%M:%S"), msg, flush=True)  # noqa: E731
    engine = Engine.load(args.model, device=args.device, dtype="float32")
    if engine.cfg.attention != "causal":
        print(f"dllm-lsp train-drafter: {args.model} is a {engine.cfg.family}-family model; "
              "drafters are for causal FIM models (Qwen2.5-Coder)", file=sys.stderr)
        return 2
    train, heldout = prepare_files(run_dir, args.data, say)
    kind = run_kind(run_dir, args.kind)
    slots = args.mask_slots or args.slots
    config = None
    if not (run_dir / "state.json").is_file():
        batch = {"batch_rows": args.batch_rows or (2048 if kind == "attn" else 256)}
        config = (HeadConfig(inner=args.inner, slots=slots, vocab_size=args.vocab, lr=args.lr, seed=args.seed,
                             eval_every=args.eval_every, init_from=args.init_from if kind in ("head", "attn") else "",
                             **batch) if kind in ("head", "attn") else
                  DrafterConfig(rank=args.rank, mask_slots=slots, lr=args.lr, anchors=args.anchors,
                                seed=args.seed, eval_every=args.eval_every))
    trainer = open_run(kind, engine.model, run_dir, train, heldout, engine.tokenizer.encode, config, say=say)
    seconds = args.minutes * 60 if args.minutes else None
    if seconds is None and args.max_steps is None:
        seconds = 10 * 60
    say(f"training {args.model}'s {kind} drafter from step {trainer.state.step} "
        f"({'%.0f min' % (seconds / 60) if seconds else '%d steps' % args.max_steps})")
    if args.no_progress:
        trainer.train(seconds=seconds, steps=args.max_steps,
                      progress=lambda e: describe_step(e) and say(describe_step(e)))
    else:
        _train_with_progress(trainer, seconds, args.max_steps)
    shutil.copyfile(trainer.weights_file, out)
    print(f"wrote {out} ({trainer.kind} drafter, {trainer.summary()}); use it with the dllm.drafter setting", flush=True)
    return 0


def _train_with_progress(trainer, seconds, steps) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415
    with Progress(TextColumn("[bold]drafter"), BarColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn()) as bar:
        task = bar.add_task("", total=seconds if seconds else steps)
        start = time.perf_counter()
        first = trainer.state.step

        def on_step(entry: dict) -> None:
            if "step" not in entry:                       # the head's feature phase: count rows
                bar.update(task, completed=time.perf_counter() - start if seconds else 0,
                           description=f"features: {entry['rows']} rows")
                return
            done = time.perf_counter() - start if seconds else entry["step"] - first
            bar.update(task, completed=done,
                       description=f"step {entry['step']} loss {entry['loss']:.3f} slot 1 {entry['slot_accuracy'][0]:.2f}")

        trainer.train(seconds=seconds, steps=steps, progress=on_step)
