"""editors/README.md's Emacs eglot snippet, run in `emacs --batch` against the real server.

The README's own ```elisp block (the one for eglot) becomes init.el, with `dllm-lsp` found on
PATH (this checkout's venv, as scripts/setup.sh prints) and its `:model "default"` pointed at a
tiny random model from engine.testing so a completion comes back in seconds. emacs_driver.el then
does what the README says: opens a Python file, M-x eglot, waits for the server's dllm/status,
then M-x completion-at-point. Emacs 29 has eglot built in; Emacs 28 (Debian bookworm) needs the
elpa-eglot package (scripts/test.sh installs emacs-nox and elpa-eglot when it can).
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


def _has_eglot() -> bool:
    if EMACS is None:
        return False
    probe = subprocess.run([EMACS, "--batch", "--eval", '(princ (if (locate-library "eglot") "yes" "no"))'],
                           capture_output=True, text=True, timeout=60)
    return probe.stdout.strip().endswith("yes")


pytestmark = [
    pytest.mark.skipif(EMACS is None, reason="emacs is not installed (Debian: apt-get install -y emacs-nox elpa-eglot)"),
    pytest.mark.skipif(EMACS is not None and not _has_eglot(),
                       reason="eglot is not installed (Emacs 28: apt-get install -y elpa-eglot; built into Emacs 29+)"),
]

SOURCE = "def add(a, b):\n    \n\nprint(add(1, 2))\n"


def readme_eglot_block() -> str:
    """The ```elisp block of editors/README.md that configures eglot."""
    readme = (REPO / "editors" / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```elisp\n(.*?)```", readme, flags=re.S) if "'eglot" in b]
    return block


def test_readme_eglot_snippet_connects_and_completes(tmp_path, tiny_block_model):
    block = readme_eglot_block()
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
           "DLLM_LSP_STATE_DIR": str(tmp_path / "state"),
           "DLLM_FILE": str(source), "DLLM_LINE": "2", "DLLM_COLUMN": "4", "DLLM_RESULT": str(result_file)}
    proc = subprocess.run([EMACS, "--batch", "-l", str(init), "-l", str(HERE / "emacs_driver.el")],
                          cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)
    assert result_file.exists(), f"emacs wrote no result (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    result = json.loads(result_file.read_text(encoding="utf-8"))
    context = f"\n--- emacs stderr ---\n{proc.stderr[-3000:]}\n--- eglot events ---\n{result.get('events', '')}"
    assert result["errors"] == [], str(result["errors"]) + context
    assert result["mode"] == "python-mode"
    assert "dllm-lsp" in result["contact"] and ":initializationOptions" in result["contact"], result["contact"]
    # the server answered initialize: eglot holds its capabilities and manages the buffer
    assert result["connected"] is True and result["managed"] is True, context
    capabilities = result["capabilities"]
    assert "completionProvider" in capabilities and "inlineCompletionProvider" in capabilities, capabilities
    # the snippet's initializationOptions reached the server: it loaded the model they name
    statuses = result["statuses"]
    assert statuses and statuses[-1]["state"] == "ready", str(statuses) + context
    assert {s["model"] for s in statuses} == {str(tiny_block_model)}, statuses
    # M-x completion-at-point: eglot's capf asked textDocument/completion and got the suggestion ...
    assert result["capf"] is True
    (item,) = result["items"]
    assert item["detail"] == "dllm-lsp" and item["textEdit"]["newText"].strip(), item
    assert item["textEdit"]["range"]["start"] == {"line": 1, "character": 4}
    # ... and inserted it at the cursor (eglot applies the item's textEdit)
    before, after = "\n".join(result["before"]), "\n".join(result["after"])
    prefix, suffix = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
    assert before == prefix + suffix
    assert after.startswith(prefix) and after.endswith(suffix), after
    inserted = after[len(prefix): len(after) - len(suffix)]
    assert inserted == item["textEdit"]["newText"], (inserted, item)
    cursor_line = ("    " + inserted).split("\n")[-1]                # the cursor ends after the insertion
    assert result["point_after"] == [2 + inserted.count("\n"), len(cursor_line)], result["point_after"]
