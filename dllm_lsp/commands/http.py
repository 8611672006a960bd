"""`dllm-lsp http [--host 127.0.0.1] [--port 8012]`: the engine behind OpenAI / Inception / llama.cpp FIM APIs.

Loopback only unless --host names another address (then a warning says the port is reachable
from other machines). Every request needs `Authorization: Bearer <token>`: the token is
$DLLM_LSP_TOKEN, else the file `http-token` in the user config dir (platformdirs; or
$DLLM_LSP_CONFIG_DIR), generated on the first start and printed that once. The server
listens at once and loads the model in the background (GET /health: 503 until it is ready);
one line on stderr says where it listens. The HTTP side lives in http/server.py (aiohttp is
imported only when this command runs).
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dllm_lsp.commands.serve import add_device_arguments, add_logging_arguments
    from dllm_lsp.settings import Settings
    d = Settings()
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; another address is reachable from other "
                             "machines and prints a warning)")
    parser.add_argument("--port", type=int, default=8012, help="TCP port (0: any free port; default: 8012)")
    parser.add_argument("--model", default=d.model,
                        help=f"'auto' (the pulled model this machine runs fast enough), 'default' (the pulled "
                             f"Qwen2.5-Coder-0.5B), 'embedded', a .gguf file or a model "
                             f"folder (default: {d.model})")
    add_device_arguments(parser)
    parser.add_argument("--queue", type=int, default=8,
                        help="requests waiting or decoding at once; more are answered 429 (default: 8)")
    parser.add_argument("--max-body-kb", type=int, default=2048,
                        help="largest request body in KiB; larger ones are answered 413 (default: 2048)")
    parser.add_argument("--settings", default="{}",
                        help="server settings as JSON, camelCase as for the LSP server (e.g. "
                             "'{\"prefixTokens\": 1024, \"drafting\": true}')")
    add_logging_arguments(parser)


def run(args) -> int:
    from dllm_lsp.commands.serve import setup_logging
    setup_logging(args.log_file, args.verbose)
    from dataclasses import replace

    from dllm_lsp.settings import parse_settings
    try:
        raw = json.loads(args.settings)
    except ValueError as exc:
        print(f"dllm-lsp http: --settings is not JSON: {exc}", file=sys.stderr)
        return 2
    settings, messages = parse_settings(raw)
    for m in messages:
        print(f"dllm-lsp http: {m}", file=sys.stderr)
    settings = replace(settings, model=args.model, device=args.device, dtype=args.dtype, threads=max(0, args.threads))
    if not 0 <= args.port <= 65535:
        print(f"dllm-lsp http: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return 2
    import asyncio
    import signal

    from dllm_lsp.http.fim_engine import FimEngine
    from dllm_lsp.http.server import is_loopback, resolve_token, serve
    token, source, created = resolve_token()
    if created:
        print(f"dllm-lsp http: generated an API token into {source} (shown this once):\n  {token}", file=sys.stderr)
    else:
        print(f"dllm-lsp http: API token from {source}", file=sys.stderr)
    if not is_loopback(args.host):
        print(f"dllm-lsp http: warning: listening on {args.host}, reachable from other machines; every request "
              "still needs the bearer token, and the traffic is plain HTTP (put TLS in front of it)", file=sys.stderr)
    engine = FimEngine(settings, queue_limit=args.queue)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass

        def ready(port: int) -> None:
            host = f"[{args.host}]" if ":" in args.host else args.host
            print(f"dllm-lsp http: listening on http://{host}:{port} (model {settings.model}, queue {engine.queue_limit})",
                  file=sys.stderr, flush=True)

        await serve(engine, token, args.host, args.port, max(1, args.max_body_kb) * 1024, ready=ready, stop=stop)

    try:
        asyncio.run(main())
    except OSError as exc:                  # the port is taken, the address is not ours
        print(f"dllm-lsp http: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
