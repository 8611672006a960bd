"""`dllm-lsp bench ...`: the subcommands and where each one lives (one module per benchmark in
this folder; `bench engine` in engine.bench.steps)."""
from __future__ import annotations

import argparse
import sys
from typing import List


# ---- command line -----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command")
    import dllm_lsp.bench.lsp as bench_lsp
    bench_lsp.add_arguments(sub.add_parser("lsp", help="replay completions through a real stdio connection"))
    import dllm_lsp.bench.decode as bench_decode
    bench_decode.add_arguments(sub.add_parser(
        "decode", help="drafted vs one-token-per-pass decoding (and llama.cpp), tokens/forward and latency"))
    import dllm_lsp.bench.typing_replay as bench_typing
    bench_typing.add_arguments(sub.add_parser(
        "typing", help="type real files as a person does (a request per key, then a pause): suggestions shown, latency"))
    import dllm_lsp.bench.prefill as bench_prefill
    bench_prefill.add_arguments(sub.add_parser(
        "prefill", help="context tokens per second, cold: ours against llama.cpp's llama-server on the same GGUF"))
    import dllm_lsp.bench.context as bench_context
    bench_context.add_arguments(sub.add_parser(
        "context", help="cost of the prefix/suffix budgets: cold prefill and per keystroke (AR FIM models)"))
    import dllm_lsp.bench.http_api as bench_http
    bench_http.add_arguments(sub.add_parser(
        "http", help="concurrent clients against one `dllm-lsp http`: requests/s, p50/p95 per client count"))
    import dllm_lsp.bench.fuzz as bench_fuzz
    import dllm_lsp.bench.storm as bench_storm
    bench_fuzz.add_arguments(sub.add_parser(
        "fuzz", help="seeded valid and broken LSP traffic: crashes, unanswered probes, log lines per bad message"))
    bench_storm.add_arguments(sub.add_parser(
        "storm", help="a typing storm (didChange + inline request every 10 ms) or a soak: queue depth, RSS, latency"))
    # prefix_chars="+": every argument after `engine` (even --flags) is passed through to engine.bench.steps
    eng = sub.add_parser("engine", help="engine benchmark (engine.bench.steps); arguments after `engine` go to it",
                         add_help=False, prefix_chars="+")
    eng.add_argument("engine_args", nargs=argparse.REMAINDER, metavar="...",
                     help="the options of the engine benchmark (`dllm-lsp bench engine --help` lists them)")


def run(args) -> int:
    if args.bench_command == "engine":
        return run_engine(args.engine_args)
    if args.bench_command == "lsp":
        import dllm_lsp.bench.lsp as bench_lsp
        return bench_lsp.run_lsp(args)
    if args.bench_command == "decode":
        import dllm_lsp.bench.decode as bench_decode
        return bench_decode.run(args)
    if args.bench_command == "typing":
        import dllm_lsp.bench.typing_replay as bench_typing
        return bench_typing.run(args)
    if args.bench_command == "prefill":
        import dllm_lsp.bench.prefill as bench_prefill
        return bench_prefill.run(args)
    if args.bench_command == "context":
        import dllm_lsp.bench.context as bench_context
        return bench_context.run(args)
    if args.bench_command == "http":
        import dllm_lsp.bench.http_api as bench_http
        return bench_http.run(args)
    if args.bench_command in ("fuzz", "storm"):
        import dllm_lsp.bench.fuzz as bench_fuzz
        import dllm_lsp.bench.storm as bench_storm
        return (bench_fuzz if args.bench_command == "fuzz" else bench_storm).run(args)
    print("usage: dllm-lsp bench {lsp FILE... | decode ... | context FILE... | http ... | fuzz | storm | engine ...}",
          file=sys.stderr)
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
