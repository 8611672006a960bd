"""`dllm-lsp bench lsp --warm` end to end on a tiny GGUF model: cold, warm and baseline rows."""
import argparse
import asyncio
import json
from pathlib import Path

import dllm_lsp.bench.cli as bench_cli
import dllm_lsp.bench.lsp as bench

SOURCE = '''import os


def read(path):
    with open(path) as handle:
        return handle.read()


def size(path):
    return os.path.getsize(path)


class Box:
    def __init__(self, width, height):
        self.width = width
        self.height = height

    def area(self):
        return self.width * self.height
'''


def test_bench_lsp_reports_cold_warm_and_baseline_rows(tmp_path, tiny_gguf_qwen2):
    src = tmp_path / "box.py"
    src.write_text(SOURCE)
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args(["lsp", str(src), "--model", str(tiny_gguf_qwen2), "--per-file", "3",
                              "--blocks-per-file", "1", "--warm", "--settings",
                              json.dumps({"maxNewTokensLine": 6, "maxNewTokensBlock": 8, "warmUpDelayMs": 0})])
    results = asyncio.run(bench.bench_lsp(args))
    for row in ("server cold line", "server warm line", "baseline_one_token_per_step line", "server cold block"):
        assert results[row]["requests"] == (3 if "line" in row else 1), row
        assert results[row]["p50_ms"] > 0
    # the baseline commits one token per pass; drafting never needs more passes than that
    assert results["server cold line"]["forwards_per_suggestion"] <= results["baseline_one_token_per_step line"]["forwards_per_suggestion"]
