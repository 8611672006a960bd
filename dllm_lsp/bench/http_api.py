"""`dllm-lsp bench http --clients N`: concurrent clients against one `dllm-lsp http` on loopback.

Starts `dllm-lsp http --port 0` on --model (or uses --url with the token from $DLLM_LSP_TOKEN),
waits for /health, then for each client count in 1, 2, 4, ... up to N (and N itself) sends the
same N x --requests POST /v1/completions (a prefix and suffix cut from FILE... in the middle of
sampled lines, `stop: ["\\n"]`, --max-tokens), split round-robin over that many clients that
each send theirs back to back: every row decodes the same work, only the concurrency differs.
Reported per client count: requests/s over the wall time, p50/p95 latency, 429 answers. One engine decodes
one request at a time, so throughput stays flat and latency grows about linearly with N: the
row where p95 passes what an editor tolerates is where one box stops and a batching serving
engine (SGLang, vLLM) has to take over.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", type=Path,
                        help="source files to cut requests from (default: examples/demo.py and this package's lsp/service.py)")
    parser.add_argument("--clients", type=int, default=4, help="most concurrent clients (default: 4)")
    parser.add_argument("--requests", type=int, default=4,
                        help="requests per client at the most clients; every row sends clients x this many (default: 4)")
    parser.add_argument("--max-tokens", type=int, default=24, help="max_tokens per request (default: 24)")
    parser.add_argument("--model", default="default", help="model for the server it starts (default: default)")
    parser.add_argument("--threads", type=int, default=0, help="engine threads of that server (0: all cores up to 2, else all but one)")
    parser.add_argument("--url", default=None, help="use this running server instead (token from $DLLM_LSP_TOKEN)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the position sample (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def cases_from(files: List[Path], n: int, seed: int) -> List[Tuple[str, str]]:
    """(prefix, suffix) pairs: a line cut in its middle (at a space after its indentation)."""
    rng = random.Random(seed)
    out = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        starts = [m.start() for m in re.finditer(r"^[ \t]*\S.{8,}$", text, flags=re.M)]
        for start in rng.sample(starts, min(len(starts), max(1, n))):
            end = text.find("\n", start)
            end = len(text) if end < 0 else end
            cut = text.rfind(" ", start + 1, end)
            cut = end if cut <= start else cut + 1
            out.append((text[:cut], text[end:]))
    rng.shuffle(out)
    return out or [("def add(a, b):\n    return ", "\n")]


def client_counts(most: int) -> List[int]:
    counts, n = [], 1
    while n < most:
        counts.append(n)
        n *= 2
    return counts + [most]


def percentile(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def run_row(url: str, token: str, cases, clients: int, max_tokens: int) -> Dict:
    """Send every case once, split round-robin over `clients` concurrent clients."""
    import aiohttp
    latencies: List[float] = []
    rejected = errors = 0
    headers = {"Authorization": f"Bearer {token}"}

    async def one_client(k: int, session) -> None:
        nonlocal rejected, errors
        for prefix, suffix in cases[k::clients]:
            t0 = time.perf_counter()
            async with session.post(url + "/v1/completions", headers=headers, json={
                    "model": "bench", "prompt": prefix, "suffix": suffix, "max_tokens": max_tokens,
                    "stop": ["\n"], "temperature": 0}) as resp:
                await resp.read()
                if resp.status == 200:
                    latencies.append((time.perf_counter() - t0) * 1000)
                elif resp.status == 429:
                    rejected += 1
                else:
                    errors += 1

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(k, session) for k in range(clients)))
        wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(latencies), "rejected": rejected, "errors": errors,
            "wallS": round(wall, 3), "requestsPerS": round(len(latencies) / wall, 3) if wall else 0.0,
            "p50Ms": round(percentile(latencies, 0.5), 1), "p95Ms": round(percentile(latencies, 0.95), 1)}


def start_server(model: str, threads: int, queue: int) -> Tuple[subprocess.Popen, str, str]:
    import secrets
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "DLLM_LSP_TOKEN": token}
    proc = subprocess.Popen([sys.executable, "-m", "dllm_lsp.cli", "http", "--port", "0", "--model", model,
                             "--threads", str(threads), "--queue", str(queue)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    found: Dict[str, str] = {}
    seen = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            m = re.search(r"listening on (http://\S+?:\d+) ", line)
            if m:
                found["url"] = m.group(1)
                seen.set()
            elif "dllm-lsp http:" in line or "Error" in line:
                sys.stderr.write(line)
        seen.set()

    threading.Thread(target=read, daemon=True).start()
    seen.wait(120)
    if "url" not in found:
        proc.kill()
        raise SystemExit("bench http: the server did not start")
    return proc, found["url"], token


def wait_ready(url: str, token: str, timeout: float = 600.0) -> Dict:
    import urllib.error
    import urllib.request
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            req = urllib.request.Request(url + "/health", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            if body.get("status") == "error":
                raise SystemExit(f"bench http: the model did not load: {body.get('error')}")
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("bench http: the server never became ready")


def run(args) -> int:
    if args.clients < 1 or args.requests < 1:
        print("bench http: --clients and --requests must be at least 1", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parents[2]
    files = args.files or [p for p in (root / "examples" / "demo.py", root / "dllm_lsp" / "lsp" / "service.py") if p.is_file()]
    total = args.clients * args.requests
    pool = cases_from(files, total, args.seed)
    cases = [pool[i % len(pool)] for i in range(total)]
    proc: Optional[subprocess.Popen] = None
    if args.url:
        url, token = args.url.rstrip("/"), os.environ.get("DLLM_LSP_TOKEN", "")
    else:
        proc, url, token = start_server(args.model, args.threads, queue=max(8, args.clients))
    try:
        health = wait_ready(url, token)
        asyncio.run(run_row(url, token, cases[:1], 1, args.max_tokens))      # warm the engine once
        rows = [asyncio.run(run_row(url, token, cases, n, args.max_tokens)) for n in client_counts(args.clients)]
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    result = {"model": health.get("model"), "maxTokens": args.max_tokens, "requestsPerRow": total, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"bench http: model {result['model']}, the same {total} requests in every row, max_tokens {args.max_tokens}")
    print(f"{'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'429':>5} {'errors':>6}")
    for r in rows:
        print(f"{r['clients']:>7} {r['requests']:>8} {r['requestsPerS']:>7.2f} {r['p50Ms']:>8.0f} {r['p95Ms']:>8.0f} "
              f"{r['rejected']:>5} {r['errors']:>6}")
    return 0
