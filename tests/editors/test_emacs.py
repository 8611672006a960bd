"""editors/README.md's Emacs snippets (eglot, lsp-mode), run in `emacs --batch` against the real server.

Each README ```elisp block becomes init.el as written, except that its `:model "default"` points
at a tiny random model from engine.testing.checkpoints (a completion comes back in seconds); `dllm-lsp` is
found on PATH (this checkout's venv, as scripts/setup.sh prints). Emacs starts as it does for a
user (packages activated, then init.el), and emacs_driver.el does what the README says: opens a
Python file, M-x eglot (or M-x lsp, answering its project-root question with the file's folder),
waits for the server's dllm/status, then M-x completion-at-point. Emacs 29 has eglot built in;
Emacs 28 (Debian bookworm) needs the elpa-eglot package, lsp-mode is elpa-lsp-mode (scripts/test.sh
installs emacs-nox, elpa-eglot and elpa-lsp-mode when it can). Each client's test skips, saying
so, only when emacs or that client is not installed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parent.parent
EMACS = shutil.which("emacs")
STARTUP = ["--batch", "-f", "package-activate-all"]       # what an interactive Emacs does before init.el
INSTALL = {"eglot": "Emacs 28: apt-get install -y elpa-eglot; built into Emacs 29+",
           "lsp-mode": "apt-get install -y elpa-lsp-mode, or M-x package-install lsp-mode"}


def installed(library: str) -> bool:
    probe = subprocess.run([EMACS, *STARTUP, "--eval", f'(princ (if (locate-library "{library}") "yes" "no"))'],
                           capture_output=True, text=True, timeout=60)
    return probe.stdout.strip().endswith("yes")


pytestmark = pytest.mark.skipif(EMACS is None, reason="emacs is not installed (Debian: apt-get install -y emacs-nox elpa-eglot)")

SOURCE = "def add(a, b):\n    \n\nprint(add(1, 2))\n"


def readme_elisp_block(feature: str) -> str:
    """The ```elisp block of editors/README.md that configures `feature` (eglot or lsp-mode)."""
    readme = (REPO / "editors" / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```elisp\n(.*?)```", readme, flags=re.S) if f"'{feature}" in b]
    return block


@pytest.mark.parametrize("client", ["eglot", "lsp-mode"])
def test_readme_snippet_connects_and_completes(tmp_path, tiny_block_model, client):
    if not installed(client):
        pytest.skip(f"{client} is not installed ({INSTALL[client]})")
    block = readme_elisp_block(client)
    assert ':model "default"' in block
    (tmp_path / "home" / ".emacs.d").mkdir(parents=True)
    init = tmp_path / "home" / ".emacs.d" / "init.el"
    init.write_text(block.replace(':model "default"', f':model "{tiny_block_model}"'), encoding="utf-8")
    project = tmp_path / "project"
    project.mkdir()
    source = project / "sample.py"
    source.write_text(SOURCE, encoding="utf-8")
    result_file = tmp_path / "result.json"
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "dllm-lsp").exists(), f"{venv_bin / 'dllm-lsp'} is missing: run bash scripts/setup.sh"
    env = {**os.environ, "HOME": str(tmp_path / "home"),
           "PATH": os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "DLLM_LSP_STATE_DIR": str(tmp_path / "state"), "DLLM_CLIENT": client,
           "DLLM_FILE": str(source), "DLLM_LINE": "2", "DLLM_COLUMN": "4", "DLLM_RESULT": str(result_file)}
    proc = subprocess.run([EMACS, *STARTUP, "-l", str(init), "-l", str(HERE / "emacs_driver.el")],
                          cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)
    assert result_file.exists(), f"emacs wrote no result (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    result = json.loads(result_file.read_text(encoding="utf-8"))
    context = f"\n--- emacs stderr ---\n{proc.stderr[-3000:]}\n--- {client} log ---\n{result.get('events', '')}"
    assert result["errors"] == [], str(result["errors"]) + context
    assert result["mode"] == "python-mode"
    assert ":model" in result["contact"] and ":threshold 0.9" in result["contact"], result["contact"]
    # the server answered initialize: the client holds its capabilities and manages the buffer
    assert result["connected"] is True and result["managed"] is True, context
    capabilities = result["capabilities"]
    assert "completionProvider" in capabilities and "inlineCompletionProvider" in capabilities, capabilities
    # the snippet's initializationOptions reached the server: it loaded the model they name
    statuses = result["statuses"]
    assert statuses and statuses[-1]["state"] == "ready", str(statuses) + context
    assert {s["model"] for s in statuses} == {str(tiny_block_model)}, statuses
    # M-x completion-at-point: the client's capf asked textDocument/completion and got the suggestion ...
    assert result["capf"] is True
    (item,) = result["items"]
    assert item["detail"] == "dllm-lsp" and item["textEdit"]["newText"].strip(), item
    assert item["textEdit"]["range"]["start"] == {"line": 1, "character": 4}
    # ... and inserted it at the cursor (the client applies the item's textEdit)
    before, after = "\n".join(result["before"]), "\n".join(result["after"])
    prefix, suffix = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
    assert before == prefix + suffix
    assert after.startswith(prefix) and after.endswith(suffix), after
    inserted = after[len(prefix): len(after) - len(suffix)]
    assert inserted == item["textEdit"]["newText"], (inserted, item)
    cursor_line = ("    " + inserted).split("\n")[-1]                # the cursor ends after the insertion
    assert result["point_after"] == [2 + inserted.count("\n"), len(cursor_line)], result["point_after"]
