"""tests/skip_guard.py in a real pytest run: a skip CI does not accept fails the run under
DLLM_STRICT_SKIPS=1, an accepted one does not, and without the variable nothing changes."""
import os
import subprocess
import sys
from pathlib import Path

import skip_guard

HERE = Path(__file__).parent


def run(tmp_path, reason: str, strict: bool):
    (tmp_path / "test_one.py").write_text(f"import pytest\n\ndef test_one():\n    pytest.skip({reason!r})\n")
    env = {**os.environ, "PYTHONPATH": str(HERE), "DLLM_STRICT_SKIPS": "1" if strict else "0"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "skip_guard",
                           str(tmp_path / "test_one.py")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_an_unexpected_skip_fails_a_strict_run(tmp_path):
    proc = run(tmp_path, "nvim is not installed", strict=True)
    assert proc.returncode == 1, proc.stdout
    assert "skips CI does not accept" in proc.stdout and "nvim is not installed" in proc.stdout


def test_an_allowed_skip_and_a_lenient_run_pass(tmp_path):
    assert run(tmp_path, "needs a CUDA GPU (run `pytest -m gpu` on a GPU machine)", strict=True).returncode == 0
    assert run(tmp_path, "nvim is not installed", strict=False).returncode == 0


def test_unexpected_is_the_reasons_outside_the_list():
    skips = [("a", "needs a CUDA GPU (x)"), ("b", "the CPU has no AVX-512 (avx512f): only AVX2"), ("c", "npm is not installed")]
    assert skip_guard.unexpected(skips) == [("c", "npm is not installed")]
