"""The Neovim plugin says why the server did not start, instead of "starting" forever.

Three ways to fail: the command is not on PATH; the server exits at once with a code and a
last stderr line (a stand-in script); the real server given an argument it refuses (argparse's
usage error, exit code 2). Each ends in status "error" with the reason, `:DllmStatus` prints
it, and vim.notify says it once (a second BufEnter does not repeat it).
"""
from __future__ import annotations

import sys

import pytest

from test_nvim import NVIM, run_driver

pytestmark = pytest.mark.skipif(NVIM is None, reason="nvim is not installed (CI: apt-get install -y neovim)")


def errors_told(result):
    return [n["msg"] for n in result["notes"] if n["level"] == 4]       # vim.log.levels.ERROR


def test_a_command_that_is_not_on_path_is_named(tmp_path):
    result = run_driver(tmp_path, "failure", cmd=["no-such-dllm-lsp-binary", "--stdio"], timeout=60)
    assert result["server_status"]["state"] == "error"
    message = result["server_status"]["message"]
    assert "not found" in message and "no-such-dllm-lsp-binary" in message
    assert message in result["command_output"] and result["status"].startswith("dLLM error: server not found")
    assert len(errors_told(result)) == 1 and "no-such-dllm-lsp-binary" in errors_told(result)[0]


def test_an_exit_code_and_the_last_stderr_line_are_shown(tmp_path):
    script = tmp_path / "dies.py"
    script.write_text("import sys\nprint('loading things', file=sys.stderr)\n"
                      "print('fatal: the model folder /m is unreadable', file=sys.stderr)\nsys.exit(3)\n")
    result = run_driver(tmp_path, "failure", cmd=[sys.executable, str(script)], timeout=60)
    message = result["server_status"]["message"]
    assert "exited with code 3" in message and message.endswith("fatal: the model folder /m is unreadable")
    assert len(errors_told(result)) == 1 and "exited with code 3" in errors_told(result)[0]


def test_the_real_server_refusing_its_arguments(tmp_path):
    result = run_driver(tmp_path, "failure", cmd=[sys.executable, "-m", "dllm_lsp.cli", "--stdio", "--no-such-flag"],
                        timeout=120)
    message = result["server_status"]["message"]
    assert "exited with code 2" in message and "unrecognized arguments: --no-such-flag" in message
