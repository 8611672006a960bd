"""`dllm-lsp serve` (also bare `dllm-lsp`, `dllm-lsp --stdio`, `dllm-lsp --tcp HOST:PORT`).

Logs go to stderr, or to --log-file; stdout carries nothing but the protocol. Before the
server starts, anything that writes to sys.stdout by mistake (a library's print) is sent to
stderr instead: pygls writes the protocol to the original stdout buffer, which it is given
explicitly.
"""
from __future__ import annotations

import argparse
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--stdio", action="store_true", help="speak LSP on stdin/stdout (the default)")
    mode.add_argument("--tcp", metavar="HOST:PORT", help="listen for one LSP client on a TCP socket")
    parser.add_argument("--model", default=None,
                        help="model to load unless the client's settings name one ('default', a folder, or an HF repo id in the local cache)")
    add_logging_arguments(parser)


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """--log-file and -v, the same for every command that logs (setup_logging reads them)."""
    parser.add_argument("--log-file", default=None, help="write logs here instead of stderr")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --dtype and --threads with the settings' defaults (commands that load a model)."""
    from dllm_lsp.settings import DTYPES, Settings
    d = Settings()
    parser.add_argument("--device", default=d.device, help=f"auto | cpu | cuda | cuda:N (default: {d.device})")
    parser.add_argument("--dtype", default=d.dtype, choices=DTYPES, help=f"weights and activations type (default: {d.dtype})")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help=f"CPU threads (0: all cores up to 2, else all but one; default: {d.threads})")


def setup_logging(log_file, verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    from dllm_lsp.lsp.logs import configure_handler          # one line per record unless -v (tracebacks then)
    handler = logging.FileHandler(log_file, errors="backslashreplace") if log_file else logging.StreamHandler(sys.stderr)
    configure_handler(handler, verbose)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if verbose < 2:
        logging.getLogger("pygls").setLevel(max(level, logging.WARNING))   # pygls logs every message at info


def parse_tcp(value: str):
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--tcp wants HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def run(args) -> int:
    setup_logging(args.log_file, args.verbose)
    from dllm_lsp.lsp.server import build_server
    server = build_server(default_model=args.model)
    log = logging.getLogger("dllm_lsp.serve")
    if args.tcp:
        host, port = parse_tcp(args.tcp)
        log.info("dllm-lsp %s serving on tcp %s:%d", server.version, host, port)
        server.start_tcp(host, port)
    else:
        log.info("dllm-lsp %s serving on stdio", server.version)
        protocol_out = sys.stdout.buffer
        sys.stdout = sys.stderr                 # stray prints must not corrupt the protocol stream
        server.start_io(sys.stdin.buffer, protocol_out)
    return 0
