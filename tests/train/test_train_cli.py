"""`dllm-lsp train` and scripts/train_gpu.py, end to end on a tiny corpus (CPU)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import Engine, InfillRequest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--hidden", "32", "--layers", "2", "--heads", "2", "--kv-heads", "1", "--intermediate", "64",
        "--block-size", "4"]


def _gpu_script():
    spec = importlib.util.spec_from_file_location("train_gpu", ROOT / "scripts" / "train_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_cli_writes_a_model_the_engine_loads(code_dir, tmp_path, capsys):
    import engine.train.embedded.cli as cli
    out = tmp_path / "my-model"
    rc = cli.main(["--data", str(code_dir), "--max-steps", "3", "--out", str(out), "--vocab-size", "320",
                   "--rows", "2", "--capacity", "512", "--threads", "1", "--no-progress", *TINY])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    eng = Engine.load(out)
    assert eng.cfg.block_size == 4 and eng.cfg.extra["train_steps"] == 3
    assert eng.infill(InfillRequest(prefix="def fib(n):\n", max_new_tokens=4)).forwards >= 1
    log = [json.loads(line) for line in (tmp_path / "my-model.run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log][-1] == 3
    # the same command again resumes (step counted over sessions) and fine-tunes with --init
    rc = cli.main(["--data", str(code_dir), "--max-steps", "4", "--out", str(out), "--rows", "2", "--capacity",
                   "512", "--threads", "1", "--no-progress", "--vocab-size", "320", *TINY])
    assert rc == 0 and Engine.load(out).cfg.extra["train_steps"] == 4
    tuned = tmp_path / "tuned"
    rc = cli.main(["--data", str(code_dir), "--max-steps", "2", "--init", str(out), "--out", str(tuned),
                   "--rows", "2", "--capacity", "512", "--threads", "1", "--no-progress"])
    assert rc == 0
    assert (tuned / "tokenizer.json").read_text() == (out / "tokenizer.json").read_text()


def test_train_cli_needs_a_budget(capsys):
    import engine.train.embedded.cli as cli
    assert cli.main(["--out", "/nonexistent/x"]) == 2
    assert "--minutes" in capsys.readouterr().err


def test_train_is_a_dllm_lsp_subcommand():
    from dllm_lsp.cli import build_parser
    args = build_parser().parse_args(["train", "--data", "src", "--minutes", "5", "--init", "default"])
    assert args.minutes == 5 and args.init == "default" and args.data == ["src"]


def test_gpu_script_arguments():
    mod = _gpu_script()
    args = mod.parse_args(["--init", "runs/main/ckpt.pt", "--minutes", "9"])
    assert args.minutes == 9 and args.device == "cuda" and args.rows == 64 and not args.no_bf16
    with pytest.raises(SystemExit):
        mod.parse_args(["--minutes", "11"])                      # at most 10 minutes


def test_gpu_script_runs_on_cpu_from_a_checkpoint(code_dir, tmp_path):
    import engine.train.embedded.cli as cli
    assert cli.main(["--data", str(code_dir), "--max-steps", "2", "--out", str(tmp_path / "cpu"), "--vocab-size",
                     "320", "--rows", "2", "--capacity", "512", "--threads", "1", "--no-progress", *TINY]) == 0
    ckpt = tmp_path / "cpu.run" / "ckpt.pt"
    out = tmp_path / "gpu-model"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_gpu.py"), "--device", "cpu", "--max-steps",
                           "2", "--init", str(ckpt), "--data", str(code_dir), "--run", str(tmp_path / "gpu"),
                           "--out", str(out), "--rows", "2", "--capacity", "512", "--minutes", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "exported" in proc.stdout
    eng = Engine.load(out)
    assert eng.cfg.extra["train_steps"] == 2 and eng.cfg.extra["train_init"]["steps"] == 2
    assert all(p.stat().st_size <= 16 * 2 ** 20 for p in out.glob("*.safetensors"))


def test_progress_bar_path(code_dir, tmp_path, capsys):
    import engine.train.embedded.cli as cli
    import engine.train.embedded.session as session
    parser = __import__("argparse").ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--data", str(code_dir), "--max-steps", "2", "--out", str(tmp_path / "m"), *TINY,
                              "--vocab-size", "320", "--rows", "2", "--capacity", "512", "--threads", "1"])
    trainer = session.build(cli.session_config(args), say=lambda _m: None)
    seen = []
    cli._run_with_progress(trainer, 2, None, tmp_path / "ckpt.pt", seen.append)
    assert [e["step"] for e in seen] == [1, 2] and (tmp_path / "ckpt.pt").is_file()
    assert "step 2" in capsys.readouterr().out
