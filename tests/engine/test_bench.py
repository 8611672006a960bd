"""`bench engine` on the CPU with tiny shapes: the numbers it reports must be consistent.

The configs of released checkpoints (shapes and ids, no weights) are fixtures in
tests/fixtures/model_configs.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import engine.bench.steps as bench
import engine.testing.random_weights as random_weights

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tests" / "fixtures" / "model_configs"


@pytest.fixture(scope="module")
def dream_config():
    return CONFIGS / "dream-v0-7b.json"


def run_bench(argv, capsys):
    parser = bench.argparse.ArgumentParser()
    bench.add_arguments(parser)
    rc = bench.run(parser.parse_args(argv + ["--json"]))
    assert rc == 0
    return json.loads(capsys.readouterr().out)


TINY = ["--layers", "1", "--hidden", "64", "--vocab", "512", "--context", "40", "--span", "8", "--block", "4",
        "--reps", "1", "--bw-mib", "8"]


def test_random_weights_bidirectional_report(dream_config, capsys):
    report = run_bench(["--random-weights", str(dream_config)] + TINY, capsys)
    setup = report["setup"]
    assert (setup["layers"], setup["hidden"], setup["vocab"], setup["heads"]) == (1, 64, 512, "1/1")
    rows = {(r["policy"], r["cache"]): r for r in report["policies"]}
    assert set(rows) == {(p, c) for p in bench.POLICIES for c in ("none", "prefix", "dual")}
    base = rows[bench.BASELINE]
    assert base["baseline"] and report["policies"][0] is not None and report["policies"][0]["baseline"]
    assert (base["forwards"], base["tokens"], base["tokens_per_forward"], base["match_baseline"]) == (8, 8, 1.0, 1.0)
    for cache in ("none", "prefix", "dual"):
        assert rows[("quota k=2", cache)]["forwards"] == 4 and rows[("quota k=4", cache)]["forwards"] == 2
        for r in (rows[(p, cache)] for p in bench.POLICIES):
            assert r["tokens"] == 8 and r["ms_per_forward"] > 0
            assert r["tokens_per_s"] == pytest.approx(r["tokens"] / r["ms_total"] * 1000)
    # random weights: no confidence reaches 0.7, so threshold decoding is the baseline, token for token
    assert rows[("threshold 0.7", "none")]["match_baseline"] == 1.0
    assert rows[("threshold 0.7", "none")]["forwards"] == 8

    step = report["step"]
    assert step["query_tokens"] == 5 and step["past_tokens"] == 40         # block + the Dream shift row
    assert step["step_ms_graphed"] is None and step["step_ms"] == step["step_ms_eager"] > 0
    embed = 512 * 64 * 4
    assert step["weight_bytes_total"] - step["weight_bytes_read"] == embed   # untied table: only rows gathered
    assert step["floor_ms"] == pytest.approx(step["weight_bytes_read"] / (step["copy_bandwidth_gbs"] * 1e9) * 1000)
    assert step["floor_ratio"] == pytest.approx(step["step_ms"] / step["floor_ms"])
    assert step["tokens_per_s_at_fixed_tpf"]["6"] == pytest.approx(6000 / step["step_ms"])

    kernels = {r["kernel"]: r for r in report["kernels"]}
    assert set(kernels) == {"rms_norm+residual", "rope q,k (in place)", "swiglu", "decision",
                            "softmax+max+argmax (torch)"}
    assert all(r["torch_us"] > 0 and "fused_us" not in r for r in kernels.values())


def test_block_causal_checkpoint_exact_cache_equals_no_cache(tiny_block_model, capsys):
    report = run_bench(["--model", str(tiny_block_model), "--context", "48", "--span", "8", "--block", "4",
                        "--reps", "1", "--bw-mib", "8", "--sections", "policies",
                        "--policies", "quota k=1,quota k=2,threshold 0.9"], capsys)
    rows = {(r["policy"], r["cache"]): r for r in report["policies"]}
    assert set(rows) == {(p, c) for p in ("quota k=1", "quota k=2", "threshold 0.9") for c in ("exact", "none")}
    assert rows[("quota k=1", "none")]["baseline"]
    assert rows[("quota k=1", "exact")]["match_baseline"] == 1.0              # the exact cache is exact
    assert rows[("quota k=2", "exact")]["forwards"] == rows[("quota k=2", "none")]["forwards"] == 4
    assert "step" not in report and "kernels" not in report


@pytest.mark.parametrize("name", ["dream-v0-7b.json", "llada-8b.json", "open-dcoder-0.5b.json"])
def test_real_configs_shrink_for_the_cpu(name):
    cfg = random_weights.config_from(str(CONFIGS / name))
    small = random_weights.resized_config(cfg, layers=2, hidden=256, vocab=1024)
    assert small.num_layers == 2 and small.hidden_size == small.num_heads * small.head_dim <= 256
    assert small.num_heads % small.num_kv_heads == 0
    assert small.head_dim == cfg.head_dim
    ids = {small.mask_id, small.eos_id, small.pad_id}
    assert max(i for i in ids if i is not None) < 1024
    assert (small.eos_id == small.pad_id) == (cfg.eos_id == cfg.pad_id)
    assert small.mask_id not in (small.eos_id, small.pad_id)
    assert random_weights.resized_config(cfg) == cfg


def test_cpu_memory_guard(monkeypatch, dream_config):
    cfg = random_weights.config_from(str(dream_config))
    monkeypatch.setattr(random_weights.os, "sysconf", lambda name: 1024 if name == "SC_PAGE_SIZE" else 1024 * 1024)  # 1 GiB
    with pytest.raises(MemoryError, match="--layers 2 --hidden 256"):
        random_weights.check_memory(cfg, "cpu", __import__("torch").float32)
    random_weights.check_memory(random_weights.resized_config(cfg, layers=1, hidden=64, vocab=512), "cpu",
                        __import__("torch").float32)


def test_id_text_round_trips_ids():
    tok = bench.IdText(100, special_ids={0})
    assert tok.encode(bench.IdText.text([5, 17, 0, 99])) == [5, 17, 0, 99]
    assert tok.decode([5, 0, 7]) == "5 7" and tok.encode("") == []


def test_table_output_and_json_file(dream_config, tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "engine.bench.steps", "--random-weights", str(dream_config)] + TINY
                          + ["--sections", "step,kernels", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "## one step" in proc.stdout and "weight-read floor" in proc.stdout and "| decision" in proc.stdout
    assert "fused kernels: not available here" in proc.stdout
    assert json.loads(out.read_text())["step"]["floor_ms"] > 0


def test_bad_arguments_fail_cleanly(dream_config, capsys):
    parser = bench.argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.run(parser.parse_args(["--random-weights", str(dream_config), "--span", "0"])) == 2
    assert bench.run(parser.parse_args(["--random-weights", "/nonexistent.json"])) == 2
    assert "no such config" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_check_script_dry_run(tmp_path):
    """scripts/gpu_check.sh --dry-run: the GPU box's one-go script end to end on the CPU, tiny shapes."""
    env = dict(__import__("os").environ, OUT=str(tmp_path), MODEL_CONFIGS=str(CONFIGS), PYTHON=sys.executable)
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = (tmp_path / "gpu_report.md").read_text()
    assert "runner: 7 passed, 0 failed" in report
    for section in ("## Targets (issue 5)", "## One step", "## Policies x caches", "## Kernels"):
        assert section in report
    assert "missing benchmark results" not in report
    for name in ("dream", "llada", "dream_torch_kernels"):
        assert json.loads((tmp_path / f"bench_{name}.json").read_text())["step"]["floor_ms"] > 0
