"""`dllm-lsp bench http`: its sampling and percentiles, and one short run against the tiny model."""
import json
import subprocess
import sys
from pathlib import Path

import dllm_lsp.bench.http_api as bench_http


def test_client_counts_double_up_to_the_most():
    assert bench_http.client_counts(1) == [1]
    assert bench_http.client_counts(4) == [1, 2, 4]
    assert bench_http.client_counts(6) == [1, 2, 4, 6]


def test_cases_cut_a_line_after_a_space_and_keep_the_rest_as_suffix(tmp_path):
    f = tmp_path / "a.py"
    text = "def add(a, b):\n    return a + b\n\nvalue = add(1, 2)\n"
    f.write_text(text)
    cases = bench_http.cases_from([f], 10, seed=0)
    assert len(cases) == 3
    for prefix, suffix in cases:
        assert text.startswith(prefix) and prefix.endswith(" ") and suffix.startswith("\n")
        line_end = text.index("\n", len(prefix))
        assert text[line_end:] == suffix                       # the rest of the cut line is the reference


def test_percentile():
    assert bench_http.percentile([5, 1, 3, 2, 4], 0.5) == 3
    assert bench_http.percentile([1, 2, 3, 4, 100], 0.95) == 100


def test_a_short_run_reports_every_row(http_model, tmp_path):
    src = Path(__file__).resolve().parents[2] / "examples" / "demo.py"
    proc = subprocess.run([sys.executable, "-m", "dllm_lsp.cli", "bench", "http", str(src), "--model", http_model,
                           "--clients", "2", "--requests", "2", "--max-tokens", "8", "--threads", "1", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"] == "tiny" and [r["clients"] for r in out["rows"]] == [1, 2] and out["requestsPerRow"] == 4
    for row in out["rows"]:                              # every row decodes the same 2 x 2 requests
        assert row["requests"] == 4 and row["rejected"] == 0 and row["errors"] == 0
        assert row["requestsPerS"] > 0 and 0 < row["p50Ms"] <= row["p95Ms"]
