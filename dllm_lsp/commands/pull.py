"""`dllm-lsp pull [NAME]`: download a catalog model into the user cache (the only download there is).

    dllm-lsp pull                       what `model: "auto"` picks here: qwen2.5-coder-0.5b (491 MB),
                                        or the 1.5B on a GPU or >= 8 cores and 8 GiB (catalog.auto_model)
    dllm-lsp pull qwen2.5-coder-1.5b    the larger one (1.1 GB)
    dllm-lsp pull --list                what can be pulled, and what is already here
    dllm-lsp pull realcode              the pinned third-party sources `eval realcode` cuts holes from

A progress bar (rich) on a terminal, a line per phase otherwise; a second call is instant;
errors (offline, a hash that differs) are one line on stderr and exit code 1.
"""
from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default="auto",
                        help="model to pull: auto (default: what `model: auto` picks on this machine), "
                             "default (= qwen2.5-coder-0.5b) or qwen2.5-coder-1.5b; "
                             "or realcode: the sources of `dllm-lsp eval realcode`")
    parser.add_argument("--list", action="store_true", help="list the models that can be pulled and where they are")
    parser.add_argument("--convert", action=argparse.BooleanOptionalAction, default=True,
                        help="also convert the GGUF file once into the engine's cached bf16 folder (default: on)")


def _list() -> int:
    from engine.loading.catalog import CATALOG, auto_model, machine_facts, pulled_file
    from engine.errors import ModelNotFoundError
    for name, entry in CATALOG.items():
        try:
            where = str(pulled_file(name))
        except ModelNotFoundError:
            where = "not pulled"
        mark = " (auto's pick here)" if name == auto_model(*machine_facts()) else ""
        print(f"{name}{mark}: {entry.size / 1e6:,.0f} MB, {where}")
    return 0


def run(args) -> int:
    if args.list:
        return _list()
    from engine.errors import EngineError
    if args.name == "realcode":
        from dllm_lsp.bench.realcode_sources import pull_sources
        try:
            print(f"realcode: {pull_sources()} (each wheel's sha256 verified)")
        except EngineError as exc:
            print(f"dllm-lsp pull: {exc}", file=sys.stderr)
            return 1
        return 0
    from dllm_lsp.commands.fetch import pull
    progress, close = _progress()
    t0 = time.perf_counter()
    try:
        path = pull(args.name, progress=progress)
    except EngineError as exc:
        close()
        print(f"dllm-lsp pull: {exc}", file=sys.stderr)
        return 1
    close()
    print(f"{args.name}: {path} (sha256 verified, {time.perf_counter() - t0:.1f} s)")
    if args.convert:
        from engine.loading.gguf_import import cached_folder
        t1 = time.perf_counter()
        try:
            folder = cached_folder(path)
        except EngineError as exc:
            print(f"dllm-lsp pull: {exc}", file=sys.stderr)
            return 1
        print(f"converted for the engine: {folder} ({time.perf_counter() - t1:.1f} s)")
    return 0


def _progress():
    """(callback, close) drawing a rich progress bar on a TTY, plain phase lines otherwise."""
    if not sys.stderr.isatty():
        said = set()

        def plain(phase, done, total):
            if phase not in said:
                said.add(phase)
                print(f"{phase}ing ...", file=sys.stderr)
        return plain, lambda: None
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                   transient=True)
    bar.start()
    tasks = {}

    def draw(phase, done, total):
        if phase not in tasks:
            label = "downloading parts" if phase == "download" else "joining + sha256"
            tasks[phase] = bar.add_task(label, total=total)
        bar.update(tasks[phase], completed=done, total=total)
    return draw, bar.stop
