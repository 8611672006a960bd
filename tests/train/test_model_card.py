"""scripts/export_default_model.py and the generated MODEL_CARD.md."""
import importlib.util
import json
from pathlib import Path

from engine import Engine
import engine.train.embedded.model_card as model_card

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--hidden", "32", "--layers", "2", "--heads", "2", "--kv-heads", "1", "--intermediate", "64",
        "--block-size", "4", "--vocab-size", "320", "--rows", "2", "--capacity", "512", "--threads", "1"]


def _export_script():
    spec = importlib.util.spec_from_file_location("export_default_model", ROOT / "scripts" / "export_default_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_curve_points_spread_and_keep_ends():
    log = [{"step": i, "loss": 10 - i / 10, "tokens": i * 100, "lr": 1e-3} for i in range(1, 101)]
    pts = model_card.curve_points(log, n=10)
    assert pts[0]["step"] == 1 and pts[-1]["step"] == 100 and 10 <= len(pts) <= 12
    assert [p["step"] for p in pts] == sorted(p["step"] for p in pts)


def test_export_writes_folder_and_card_with_real_numbers(code_dir, tmp_path):
    import engine.train.embedded.cli as cli
    run = tmp_path / "run"
    assert cli.main(["--data", str(code_dir), "--max-steps", "12", "--run", str(run), "--out", str(tmp_path / "m0"),
                     "--no-progress", "--ar-fraction", "0.5", *TINY]) == 0
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "single.json").write_text(json.dumps({
        "eval": "humaneval single-line", "tasks": 50, "limit": 50, "command": "dllm-lsp eval humaneval-infill --limit 50",
        "rows": {"threshold": {"pass_at_1": 0.125, "exact_match": 0.1, "tokens_per_forward": 1.7, "forwards_mean": 6.0,
                               "latency_ms_p50": 21.5, "latency_ms_p90": 40.0, "tasks": 50, "planned": 50}}}))
    out = tmp_path / "default_model"
    assert _export_script().main(["--run", str(run), "--out", str(out), "--evals", str(evals), "--hardware", "test box"]) == 0
    eng = Engine.load(out)
    assert eng.cfg.extra["train_steps"] == 12 and eng.cfg.extra["train_hardware"] == "test box"
    card = (out / "MODEL_CARD.md").read_text()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert f"| {log[-1]['step']} |" in card and f"{log[-1]['loss']:.3f}" in card     # the loss curve
    assert "12.5%" in card and "1.70" in card and "21.5 ms" in card                  # the evaluation row
    assert "test box" in card and "steps: 12" in card
    assert "Auxiliary next-token loss (weight 0.5): a random 50% of the" in card
    assert all("ar_loss" in e for e in log)
    assert sum(f.stat().st_size for f in out.glob("*.safetensors")) <= 48 * 2 ** 20
