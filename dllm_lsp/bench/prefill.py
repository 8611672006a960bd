"""`dllm-lsp bench prefill`: how fast a context is computed, ours against llama.cpp's, in one run.

    dllm-lsp bench prefill [--model default] [--tokens 512] [--threads 2] [--repeat 3]
                           [--llama-server http://127.0.0.1:8090] [--json]

A keystroke after a jump, and every pause (the suffix follows the prefix in the prompt), wait on
computing context tokens: many rows a pass. The text is real code (the first `--tokens` tokens
of each of a few standard-library modules); ours: the engine computes it cold (context cache
cleared) in chunks of PREFILL_CHUNK, as a request does, and once as one pass; llama.cpp's
`llama-server` (started by you on the same GGUF file with the same threads) computes the same
text through /completion with `cache_prompt: false` and `n_predict: 1`, and its own
`timings.prompt_per_second` is read. Medians over `--repeat` runs per module; tokens per second
and the ratio ours / llama.cpp. One JSON object on the last line with --json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
from typing import Dict, List, Optional

MODULES = ("textwrap", "csv", "heapq")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="model ('default', a .gguf, a folder)")
    p.add_argument("--tokens", type=int, default=512, help="context tokens computed per run")
    p.add_argument("--threads", type=int, default=2, help="engine threads (give llama-server the same -t)")
    p.add_argument("--repeat", type=int, default=3, help="runs per module (medians)")
    p.add_argument("--llama-server", default=None, help="URL of a llama-server on the same GGUF file")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")


def texts(tokenizer, n: int) -> List[str]:
    """The first `n` tokens of each module in MODULES, as text."""
    from engine.eval_data import bench_files
    out = []
    for path in bench_files(MODULES):
        ids = tokenizer.encode(path.read_text(encoding="utf-8"))[:n]
        out.append(tokenizer.decode(ids))
    return out


def ours(engine, text: str, chunk: Optional[int]) -> float:
    """Tokens per second computing `text` cold: in chunks of `chunk` (None: one pass)."""
    import torch
    dec = engine.decoder()
    ids = engine.tokenizer.encode(text)
    engine.context_cache.clear()
    t0 = time.perf_counter()
    with torch.inference_mode():
        dec.prefill(ids, chunk or len(ids))
    return len(ids) / (time.perf_counter() - t0)


def llama(url: str, text: str) -> Dict:
    body = {"prompt": text, "n_predict": 1, "cache_prompt": False, "temperature": 0}
    req = urllib.request.Request(url.rstrip("/") + "/completion", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t = json.loads(urllib.request.urlopen(req, timeout=300).read())["timings"]
    return {"tokens": t["prompt_n"], "tok_s": t["prompt_per_second"]}


def run(args) -> int:
    import torch
    from engine import Engine
    from engine.decoding.prompt import PREFILL_CHUNK
    torch.set_num_threads(args.threads)
    engine = Engine.load(args.model, device="cpu")
    samples = texts(engine.tokenizer, args.tokens)
    ours(engine, samples[0][:200], PREFILL_CHUNK)                 # first-call overheads
    rows: Dict[str, List[float]] = {f"ours, chunks of {PREFILL_CHUNK}": [], "ours, one pass": []}
    anchor: List[float] = []
    tokens: List[int] = []
    for text in samples:
        for _ in range(args.repeat):
            rows[f"ours, chunks of {PREFILL_CHUNK}"].append(ours(engine, text, PREFILL_CHUNK))
            rows["ours, one pass"].append(ours(engine, text, None))
            if args.llama_server:
                got = llama(args.llama_server, text)
                anchor.append(got["tok_s"])
                tokens.append(got["tokens"])
    result = {"model": args.model, "threads": args.threads, "tokens": args.tokens,
              "weights": engine.describe()["weights"], "modules": list(MODULES),
              "rows": {k: round(statistics.median(v), 1) for k, v in rows.items()}}
    if anchor:
        result["rows"]["llama.cpp (llama-server)"] = round(statistics.median(anchor), 1)
        result["llama_tokens"] = round(statistics.median(tokens))
        result["ratio"] = round(result["rows"][f"ours, chunks of {PREFILL_CHUNK}"] / result["rows"]["llama.cpp (llama-server)"], 3)
    print(f"prefill of {args.tokens} tokens of real code, {args.threads} threads, cold ({engine.describe()['weights']}):")
    for name, tok_s in result["rows"].items():
        print(f"  {name:30} {tok_s:8.1f} tok/s")
    if "ratio" in result:
        print(f"  ours (chunks) / llama.cpp: {result['ratio']}")
    if args.json:
        print(json.dumps(result))
    return 0
