"""`dllm-lsp complete` on a terminal, recorded by scripts/record_demo.sh (a pseudo-terminal).

The live view must draw one frame per forward pass (the footer counts 0, 1, ... up to N, where N
is what the final stats line reports), the line before the cursor dim, committed text bold, and end
with the stats line: what docs/demo.cast shows, made by the same script.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from engine.testing.checkpoints import write_block_model
    return str(write_block_model(tmp_path_factory.mktemp("m") / "tiny"))


def read_cast(path: Path):
    header, *events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return header, events


def test_record_demo_shows_the_suggestion_growing_frame_by_frame(tiny, tmp_path):
    src = tmp_path / "a.py"
    src.write_text("def add(a, b):\n    total = \n    return total\n")
    out = tmp_path / "demo.cast"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "DEMO_OUT": str(out), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(["bash", "scripts/record_demo.sh", f"{src}:2:13", "--model", tiny, "--mode", "block"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, events = read_cast(out)
    assert header["version"] == 2 and header["width"] == 100
    assert all(kind == "o" for _, kind, _ in events)
    times = [t for t, _, _ in events]
    assert times == sorted(times)
    screen = "".join(text for _, _, text in events)
    assert events[0][2].startswith("$ dllm-lsp complete ")
    final = re.search(r"\[(\d+) forward pass(?:es)?, (\d+) tokens, \d+ ms, first text \d+ ms; model loaded", screen)
    nothing = "(the model suggests nothing here" in screen
    assert final or nothing, screen[-500:]
    frames = [int(n) for n in re.findall(r"\[(\d+) forward pass(?:es)? · \d+ ms\]", screen)]
    if final:
        forwards = int(final.group(1))
        # a live frame per forward pass (the last pass may come only with the final result)
        assert frames == list(range(len(frames))) and len(frames) - 1 in (forwards - 1, forwards), (frames, forwards)
        assert "\x1b[1m" in screen                              # committed text in bold
    assert "\x1b[2m    total = " in screen                     # the line before the cursor, dim
