"""Local counts: recorded, saved atomically, summarised by `dllm-lsp stats`."""
import argparse
import json

import dllm_lsp.lsp.usage as stats
from dllm_lsp.lsp.usage import StatsStore, percentile


def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 95) == 95


def test_counts_survive_a_restart_and_the_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLM_LSP_STATE_DIR", str(tmp_path))
    store = StatsStore()
    assert store.path == tmp_path / "stats.json"
    store.record_shown("abc")
    store.record_shown("defg")
    store.record_accepted(3)
    for ms in (10, 20, 30, 40):
        store.record_latency(ms)
    store.record_latency(1, cached=True)
    store.save()
    again = StatsStore().summary()
    assert again["shown"] == 2 and again["accepted"] == 1 and again["acceptedChars"] == 3
    assert again["acceptanceRate"] == 0.5 and again["cacheHits"] == 1
    assert again["latencyMs"]["count"] == 5 and again["latencyMs"]["p50"] == 20


def test_a_corrupt_file_starts_from_zero(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text("{not json")
    assert StatsStore(path).summary()["shown"] == 0


def test_stats_command_prints_the_counts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLLM_LSP_STATE_DIR", str(tmp_path))
    store = StatsStore()
    store.record_shown("x")
    store.record_accepted(1)
    store.record_latency(12.5)
    store.save()
    assert stats.run(argparse.Namespace(json=True, reset=False)) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["shown"] == 1 and data["acceptanceRate"] == 1.0 and data["latencyMs"]["p50"] == 12.5
    assert stats.run(argparse.Namespace(json=False, reset=False)) == 0
    out = capsys.readouterr().out
    assert "accepted             1  (100.0%)" in out and "p50 12 ms" in out
