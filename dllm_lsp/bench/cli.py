"""`dllm-lsp bench ...`: the subcommands and where each one lives (one module per benchmark in
this folder; `bench engine` in engine.bench.steps)."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List


# ---- command line -----------------------------------------------------------------------------

# subcommand -> (its module in this folder, help): each module has add_arguments(parser) and run(args)
BENCHES = {
    "lsp": ("lsp", "replay completions through a real stdio connection"),
    "decode": ("decode", "drafted vs one-token-per-pass decoding (and llama.cpp), tokens/forward and latency"),
    "typing": ("typing_replay", "type real files as a person does (a request per key, then a pause): suggestions "
                                "shown, latency"),
    "pass": ("pass_time", "where one forward pass goes (weight products, attention, output projection, the rest) "
                          "for 1..k rows"),
    "prefill": ("prefill", "context tokens per second, cold: ours against llama.cpp's llama-server on the same GGUF"),
    "context": ("context", "cost of the prefix/suffix budgets: cold prefill and per keystroke (AR FIM models)"),
    "http": ("http_api", "concurrent clients against one `dllm-lsp http`: requests/s, p50/p95 per client count"),
    "fuzz": ("fuzz", "seeded valid and broken LSP traffic: crashes, unanswered probes, log lines per bad message"),
    "storm": ("storm", "a typing storm (didChange + inline request every 10 ms) or a soak: queue depth, RSS, latency"),
}


def _module(name: str):
    return importlib.import_module(f"dllm_lsp.bench.{BENCHES[name][0]}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command")
    for name, (_, help_text) in BENCHES.items():
        _module(name).add_arguments(sub.add_parser(name, help=help_text))
    # prefix_chars="+": every argument after `engine` (even --flags) is passed through to engine.bench.steps
    eng = sub.add_parser("engine", help="engine benchmark (engine.bench.steps); arguments after `engine` go to it",
                         add_help=False, prefix_chars="+")
    eng.add_argument("engine_args", nargs=argparse.REMAINDER, metavar="...",
                     help="the options of the engine benchmark (`dllm-lsp bench engine --help` lists them)")


def run(args) -> int:
    if args.bench_command == "engine":
        return run_engine(args.engine_args)
    if args.bench_command in BENCHES:
        return _module(args.bench_command).run(args)
    print("usage: dllm-lsp bench {" + " | ".join(BENCHES) + " | engine ...} ...", file=sys.stderr)
    return 2


def run_engine(argv: List[str]) -> int:
    try:
        import engine.bench.steps as engine_bench
    except ImportError as exc:
        print(f"`dllm-lsp bench engine` needs engine.bench.steps, which is not available yet ({exc}).", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="dllm-lsp bench engine")
    engine_bench.add_arguments(parser)
    return int(engine_bench.run(parser.parse_args(argv)) or 0)
