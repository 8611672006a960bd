"""The `dllm-lsp` command line: a thin dispatcher; each subcommand lives in its own module.

    dllm-lsp [--stdio | --tcp HOST:PORT]        the language server (default)
    dllm-lsp complete FILE:LINE:COL             one suggestion, shown as it grows
    dllm-lsp bench lsp|decode|context|http|fuzz|storm|engine   benchmarks
    dllm-lsp eval humaneval-infill ...          evaluation
    dllm-lsp train ...                          train or fine-tune the small model
    dllm-lsp train --drafter ...                = dllm-lsp train-drafter ...
    dllm-lsp train-drafter ...                  train a drafter of the default model
    dllm-lsp stats                              local acceptance / latency counts
    dllm-lsp pull [MODEL]                       download a model into the user cache
    dllm-lsp http [--host H] [--port P]         the engine over HTTP (OpenAI, Inception, llama.cpp FIM APIs)

Each module exposes add_arguments(parser) and run(args) -> int; a module is imported when
the parser is built (to list its options) and run only when its subcommand is chosen, so
modules keep heavy imports (torch) inside run(). `dllm-lsp --help` lists every subcommand and,
below them, the server's own flags (--stdio, --tcp, ...), which the top level passes to
`serve`: any argument list that starts with an option other than -h/--version is served.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# subcommand -> (module, help)
SUBCOMMANDS = {
    "complete": ("dllm_lsp.commands.complete", "complete at FILE:LINE:COL (1-based) without an editor"),
    "bench": ("dllm_lsp.bench.cli", "benchmarks: `bench lsp`, `bench decode`, `bench context`, `bench http`, `bench fuzz`, "
                                "`bench storm`, `bench engine`"),
    "eval": ("dllm_lsp.commands.eval", "evaluation: `eval humaneval-infill`, `eval heldout`"),
    "train": ("engine.train.embedded.cli", "train or fine-tune the small model on your code; "
                                  "`train --drafter` = `train-drafter`"),
    "train-drafter": ("dllm_lsp.commands.train_drafter", "train a drafter of the default model on your code (draft head or mask slots)"),
    "stats": ("dllm_lsp.lsp.usage", "print local acceptance and latency counts"),
    "serve": ("dllm_lsp.commands.serve", "run the language server (the default)"),
    "http": ("dllm_lsp.commands.http", "serve the engine over HTTP: OpenAI /v1/completions and /v1/chat/completions, /v1/fim/completions, llama.cpp /infill"),
    "pull": ("dllm_lsp.commands.pull", "download a model (default: qwen2.5-coder-0.5b) into the user cache"),
}


def server_flags_help() -> str:
    """The `serve` options as help text, for the top-level --help (they work without `serve`)."""
    serve = argparse.ArgumentParser(prog="dllm-lsp", add_help=False)
    _load(SUBCOMMANDS["serve"][0]).add_arguments(serve)
    text = serve.format_help()
    return "language server (`dllm-lsp [serve] [--stdio | --tcp HOST:PORT] ...`, the default):\n" + \
        text.split("options:\n", 1)[-1].rstrip() + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dllm-lsp", description="Diffusion-LLM code completion language server",
                                     epilog=server_flags_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dllm-lsp {__import__('dllm_lsp').__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
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
    if argv[0] == "train" and "--drafter" in argv:  # the default model's drafter, by its other name
        argv = ["train-drafter"] + [a for a in argv[1:] if a != "--drafter"]
    args = build_parser().parse_args(argv)
    if args.command is None:
        args = build_parser().parse_args(["serve"])
    if getattr(args, "_unavailable", None):
        print(args._unavailable, file=sys.stderr)
        return 2
    from engine.errors import EngineError
    try:
        return int(_load(args._module).run(args) or 0)
    except EngineError as exc:        # a missing, corrupt or mismatched model: one line, no traceback
        if getattr(args, "verbose", 0):
            raise
        print(f"dllm-lsp {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
