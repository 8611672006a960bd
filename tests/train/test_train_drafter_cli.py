"""`dllm-lsp train-drafter` and `scripts/train_gpu.py --drafter`, end to end on a tiny GGUF model (CPU)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from engine import Engine
from engine.drafting.mask_slots import MaskAdapter

ROOT = Path(__file__).resolve().parents[2]


def test_train_drafter_writes_a_loadable_drafter_and_resumes(tiny_gguf_qwen2, code_dir, tmp_path, capsys):
    from dllm_lsp.cli import main
    out = tmp_path / "d.safetensors"
    argv = ["train-drafter", "--model", str(tiny_gguf_qwen2), "--data", str(code_dir), "--kind", "mask", "--max-steps", "3",
            "--out", str(out), "--threads", "1", "--rank", "2", "--mask-slots", "3", "--eval-every", "2"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and out.is_file()
    run = tmp_path / "d.safetensors.run"
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 3 and state["targets"] > 0
    evals = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals and all(len(e["slot_accuracy"]) == 3 for e in evals)
    engine = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")
    engine.load_drafter(out)
    assert engine.adapter.mask_slots == 3 and engine.adapter.rank == 2
    assert main(argv[:-8] + ["--out", str(out), "--threads", "1", "--no-progress"]) == 0   # resumes its run
    assert json.loads((run / "state.json").read_text())["step"] == 6
    png = tmp_path / "curve.png"
    assert main(["train-drafter", "--out", str(out), "--plot", str(png)]) == 0
    said = capsys.readouterr().out
    if importlib.util.find_spec("matplotlib") is None:            # an optional dependency
        assert "matplotlib is not installed" in said and not png.exists()
    else:
        assert "6 steps" in said and png.stat().st_size > 1000


def test_gpu_script_trains_the_drafter_on_cpu(tiny_gguf_qwen2, code_dir, tmp_path):
    run = tmp_path / "drafter-run"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_gpu.py"), "--drafter", str(tiny_gguf_qwen2),
                           "--kind", "mask", "--device", "cpu", "--max-steps", "2", "--data", str(code_dir), "--run", str(run),
                           "--minutes", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "drafter (mask) step 2" in proc.stdout
    cfg = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32").cfg
    assert MaskAdapter.load(run / "adapter.safetensors", cfg).extra["step"] == 2


def test_train_drafter_trains_a_draft_head_by_default(tiny_gguf_qwen2, code_dir, tmp_path, capsys):
    from dllm_lsp.cli import main
    out = tmp_path / "h.safetensors"
    argv = ["train-drafter", "--model", str(tiny_gguf_qwen2), "--data", str(code_dir), "--max-steps", "4",
            "--out", str(out), "--threads", "1", "--inner", "32", "--slots", "3", "--eval-every", "2", "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "head drafter" in text and "feature rows" in text
    run = tmp_path / "h.safetensors.run"
    state = json.loads((run / "state.json").read_text())
    assert state["kind"] == "head" and state["step"] == 4 and state["rows"] > 0
    evals = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals and all(len(e["slot_accuracy"]) == 3 for e in evals)
    engine = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")
    engine.load_drafter(out)
    assert engine.head is not None and engine.head.slots == 3 and engine.adapter is None
    assert main(["train", "--drafter", "--kind", "mask"] + argv[1:]) == 0   # its other name; a head run stays one
    assert json.loads((run / "state.json").read_text())["step"] == 8


def test_gpu_script_trains_the_draft_head_on_cpu(tiny_gguf_qwen2, code_dir, tmp_path):
    run = tmp_path / "head-run"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_gpu.py"), "--drafter", str(tiny_gguf_qwen2),
                           "--device", "cpu", "--max-steps", "2", "--data", str(code_dir), "--run", str(run),
                           "--minutes", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "drafter (head) step 2" in proc.stdout
    cfg = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32").cfg
    from engine.drafting.head import DraftHead
    assert DraftHead.load(run / "head.safetensors", cfg).extra["step"] == 2
