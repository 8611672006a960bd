"""The `dllm-lsp` command line: a thin dispatcher; each subcommand lives in its own module.

    dllm-lsp [--stdio | --tcp HOST:PORT]        the language server (default)
    dllm-lsp complete FILE:LINE:COL             one suggestion, shown as it grows
    dllm-lsp bench engine|lsp ...               benchmarks
    dllm-lsp eval humaneval-infill ...          evaluation
    dllm-lsp train ...                          train or fine-tune the small model
    dllm-lsp stats                              local acceptance / latency counts

Each module exposes add_arguments(parser) and run(args) -> int; they are imported only
when their subcommand runs, so `dllm-lsp --stdio` starts without loading the others.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# subcommand -> (module, help)
SUBCOMMANDS = {
    "complete": ("dllm_lsp.complete_cmd", "complete at FILE:LINE:COL (1-based) without an editor"),
    "bench": ("dllm_lsp.bench", "benchmarks: `bench engine`, `bench lsp`"),
    "eval": ("dllm_lsp.evaluate", "evaluation: `eval humaneval-infill`, `eval heldout`"),
    "train": ("engine.train.cli", "train or fine-tune the small model on your code"),
    "stats": ("dllm_lsp.stats", "print local acceptance and latency counts"),
    "serve": ("dllm_lsp.serve_cmd", "run the language server (the default)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dllm-lsp", description="Diffusion-LLM code completion language server")
    parser.add_argument("--version", action="version", version=f"dllm-lsp {__import__('dllm_lsp').__version__}")
    sub = parser.add_subparsers(dest="command")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(_module=module)
        try:
            _load(module).add_arguments(p)
        except ImportError as exc:          # one missing subcommand must not break the others
            p.set_defaults(_unavailable=f"`dllm-lsp {name}` is not available: {exc}")
    return parser


def _load(module: str):
    return importlib.import_module(module)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["serve"] + argv                     # `dllm-lsp --stdio` and bare `dllm-lsp` serve
    args = build_parser().parse_args(argv)
    if args.command is None:
        args = build_parser().parse_args(["serve"])
    if getattr(args, "_unavailable", None):
        print(args._unavailable, file=sys.stderr)
        return 2
    return int(_load(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
