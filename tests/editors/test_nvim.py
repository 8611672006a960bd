"""The Neovim plugin (editors/nvim), driven inside `nvim --headless`.

nvim_driver.lua runs one scenario (open a file, enter insert mode, trigger, wait for the ghost
text, accept / partially accept / dismiss) and writes what it saw to a JSON file; the assertions
are here. Most tests run against fake_server.py (deterministic streamed text, logs what the plugin
sends); `test_real_server_*` runs the real `python -m dllm_lsp.cli --stdio` with a tiny random
model from engine.testing.checkpoints, and checks the local stats that `dllm-lsp stats` prints.
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
NVIM = shutil.which("nvim")
pytestmark = pytest.mark.skipif(NVIM is None, reason="nvim is not installed (CI: apt-get install -y neovim)")

FAKE_CMD = [sys.executable, str(HERE / "fake_server.py")]
SOURCE = "def add(a, b):\n    \n\nprint(add(1, 2))\n"


def run_driver(tmp_path: Path, scenario: str, *, text: str = SOURCE, cursor=(2, 4), cmd=FAKE_CMD,
               init: dict | None = None, env: dict | None = None, timeout: float = 60) -> dict:
    """Run nvim_driver.lua; return its result, plus the fake server's log as result['log']."""
    source = tmp_path / "sample.py"
    source.write_text(text, encoding="utf-8")
    result_file, log_file = tmp_path / f"{scenario}.json", tmp_path / f"{scenario}.log.jsonl"
    full_env = {**os.environ, "DLLM_RTP": str(REPO / "editors" / "nvim"), "DLLM_CMD": json.dumps(cmd),
                "DLLM_INIT": json.dumps(init or {"model": "fake-model"}), "DLLM_FILE": str(source),
                "DLLM_CURSOR": f"{cursor[0]},{cursor[1]}", "DLLM_SCENARIO": scenario,
                "DLLM_RESULT": str(result_file), "FAKE_LOG": str(log_file),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                **(env or {})}
    proc = subprocess.run([NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-n",
                           "--cmd", f"luafile {HERE / 'nvim_driver.lua'}"],
                          cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert result_file.exists(), f"nvim wrote no result (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(result_file.read_text())
    assert result["errors"] == [] and proc.returncode == 0, (result["errors"], proc.stderr[-2000:])
    result["log"] = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.exists() else []
    return result


def insert_at(lines: list, row: int, col: int, text: str) -> list:
    """The buffer `lines` with `text` typed at (1-based row, byte col)."""
    whole = "\n".join(lines)
    encoded = whole.encode()
    offset = sum(len(line.encode()) + 1 for line in lines[: row - 1]) + col
    return (encoded[:offset] + text.encode() + encoded[offset:]).decode().split("\n")


def logged(result: dict, method: str) -> list:
    return [entry["params"] for entry in result["log"] if entry["method"] == method]


def test_streamed_suggestion_grows_in_place_then_accept_inserts_exactly_it(tmp_path):
    result = run_driver(tmp_path, "accept", env={"FAKE_STREAM": "return a + b", "FAKE_STEPS": "3"})
    assert result["mode"] == "i" and result["trigger_ok"]
    shown = [entry["text"] for entry in result["history"] if entry["text"] is not None]
    assert shown[:3] == ["retu", "return a", "return a + b"]        # the fake server's stable prefixes
    drawn = [entry["ghost"]["first"] for entry in result["history"] if entry["ghost"] is not None]
    assert drawn[:3] == ["retu", "return a", "return a + b"]        # each one drawn as an extmark
    assert result["ghost"] == {"row": 1, "col": 4, "first": "return a + b", "more": []}
    assert result["extmarks"] == 1 and result["extmarks_after"] == 0
    assert result["after"] == insert_at(result["before"], 2, 4, "return a + b")
    assert result["cursor_after"] == [2, 4 + len("return a + b")]
    assert result["status"] == "dLLM 12ms"                          # from dllm/status
    init = logged(result, "initialize")[0]
    assert init["initializationOptions"] == {"model": "fake-model"}
    assert logged(result, "textDocument/inlineCompletion")[0]["position"] == {"line": 1, "character": 4}
    position = {"line": 1, "character": 4}
    assert logged(result, "dllm/didShowCompletion") == [{"uri": (tmp_path / "sample.py").as_uri(),
                                                         "position": position, "text": "return a + b"}]
    assert [p["acceptedLength"] for p in logged(result, "dllm/didAcceptCompletion")] == [12]


def test_alt_bracket_cycles_through_the_alternatives_of_an_invoked_request(tmp_path):
    result = run_driver(tmp_path, "cycle", env={"FAKE_STREAM": "return a + b", "FAKE_STEPS": "1",
                                                 "FAKE_ALTERNATIVES": "return a - b|return b"})
    assert result["cycled"] == ["return a + b", "return a - b", "return b", "return a - b"]
    kinds = [p["context"]["triggerKind"] for p in logged(result, "textDocument/inlineCompletion")]
    assert kinds == [2, 1]                       # automatic, then one invoked request for the alternatives
    assert result["after"] == insert_at(result["before"], 2, 4, "return a - b")


def test_multiline_suggestion_first_line_at_cursor_rest_as_virtual_lines(tmp_path):
    suggestion = "total = a + b\n    return total"
    result = run_driver(tmp_path, "accept", env={"FAKE_STREAM": suggestion, "FAKE_STEPS": "2"})
    assert result["ghost"] == {"row": 1, "col": 4, "first": "total = a + b", "more": ["    return total"]}
    assert result["after"] == insert_at(result["before"], 2, 4, suggestion)
    assert result["cursor_after"] == [3, len("    return total")]


def test_final_answer_replaces_a_longer_streamed_text(tmp_path):
    result = run_driver(tmp_path, "accept", env={"FAKE_STREAM": "return a + b\nprint(", "FAKE_FINAL": "return a + b"})
    texts = [entry["text"] for entry in result["history"] if entry["text"] is not None]
    assert "return a + b\nprint(" in texts                         # streamed text was shown ...
    assert result["suggestion"] == "return a + b"                  # ... and the answer trimmed it
    assert result["after"] == insert_at(result["before"], 2, 4, "return a + b")


def test_accept_next_word_then_next_line_then_the_rest(tmp_path):
    suggestion = "total = add(a, b)\n    return total"
    result = run_driver(tmp_path, "partial", env={"FAKE_STREAM": suggestion})
    before = result["before"]
    assert result["after_word"] == insert_at(before, 2, 4, "total")
    assert result["rest_after_word"] == " = add(a, b)\n    return total"
    assert result["after_line"] == insert_at(before, 2, 4, "total = add(a, b)")
    assert result["rest_after_line"] == "\n    return total"
    assert result["after"] == insert_at(before, 2, 4, suggestion)
    assert [p["acceptedLength"] for p in logged(result, "dllm/didAcceptCompletion")] == [len(suggestion)]
    assert [p["text"] for p in logged(result, "dllm/didShowCompletion")] == [suggestion]


def test_typing_and_leaving_insert_mode_dismiss(tmp_path):
    result = run_driver(tmp_path, "dismiss", env={"FAKE_STREAM": "return a + b", "FAKE_STEPS": "1"})
    assert result["extmarks"] == 1
    assert result["extmarks_after_typing"] == 0
    assert result["after_typing"] == insert_at(result["before"], 2, 4, "z")     # only what was typed
    assert result["trigger_again"] and result["extmarks_before_leave"] == 1
    assert result["extmarks_after_leave"] == 0
    assert result["after"] == result["after_typing"]
    shows = logged(result, "dllm/didShowCompletion")
    assert len(shows) == 2 and logged(result, "dllm/didAcceptCompletion") == []  # shown twice, never accepted


def test_typing_asks_by_itself_after_the_debounce(tmp_path):
    result = run_driver(tmp_path, "auto", env={"FAKE_STREAM": "return a + b", "FAKE_STEPS": "1"})
    assert result["suggestion"] == "return a + b" and result["extmarks"] == 1
    requests = logged(result, "textDocument/inlineCompletion")
    assert requests and requests[-1]["context"]["triggerKind"] == 2              # automatic
    assert requests[-1]["position"] == {"line": 1, "character": 5}               # after the typed "x"


def test_a_cursor_moved_before_typing_is_reported_with_dllm_cursor(tmp_path):
    result = run_driver(tmp_path, "cursor", cursor=(4, 2))
    hints = logged(result, "dllm/cursor")
    uri = (tmp_path / "sample.py").as_uri()
    assert all(h["uri"] == uri for h in hints)
    positions = [(h["position"]["line"], h["position"]["character"]) for h in hints]
    # "l" in normal mode, insert mode entered there, <Esc> steps back one
    assert positions[-3:] == [(3, 3), (3, 3), (3, 2)], positions


def test_positions_are_utf16_and_accepted_length_counts_code_points(tmp_path):
    line = 's = "é🎉" + '
    suggestion = '"ü✓"'
    result = run_driver(tmp_path, "accept", text=f"{line}\n", cursor=(1, len(line.encode())),
                        env={"FAKE_STREAM": suggestion, "FAKE_STEPS": "1"})
    utf16 = len(line.encode("utf-16-le")) // 2
    assert logged(result, "textDocument/inlineCompletion")[0]["position"] == {"line": 0, "character": utf16}
    assert result["after"][0] == line + suggestion
    assert [p["acceptedLength"] for p in logged(result, "dllm/didAcceptCompletion")] == [len(suggestion)]


def test_text_helpers(tmp_path):
    """Pure Lua helpers (next word / next line / merging), run by nvim_text_spec.lua."""
    proc = subprocess.run([NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-n",
                           "--cmd", f"set rtp^={REPO / 'editors' / 'nvim'}",
                           "--cmd", f"luafile {HERE / 'nvim_text_spec.lua'}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "text helpers: all passed" in proc.stderr


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from engine.testing.checkpoints import write_block_model
    return write_block_model(tmp_path_factory.mktemp("tiny") / "model")


def test_real_server_streams_and_accept_is_counted(tmp_path, tiny_model):
    """The plugin against `python -m dllm_lsp.cli --stdio` with a tiny random model."""
    state_dir = tmp_path / "state"
    env = {"DLLM_LSP_STATE_DIR": str(state_dir)}
    result = run_driver(tmp_path, "accept", cmd=[sys.executable, "-m", "dllm_lsp.cli", "--stdio"],
                        init={"model": str(tiny_model), "maxNewTokensLine": 12, "maxNewTokensBlock": 12},
                        env=env, timeout=240)
    suggestion = result["suggestion"]
    assert suggestion, "the tiny model suggested nothing"
    assert result["ghost"]["first"] == suggestion.split("\n")[0]
    assert result["extmarks"] == 1 and result["extmarks_after"] == 0
    assert result["after"] == insert_at(result["before"], 2, 4, suggestion)
    stats = subprocess.run([sys.executable, "-m", "dllm_lsp.cli", "stats", "--json"], capture_output=True,
                           text=True, env={**os.environ, **env, "PYTHONPATH": str(REPO)}, timeout=60)
    assert stats.returncode == 0, stats.stderr
    counts = json.loads(stats.stdout)
    assert counts["shown"] == 1 and counts["accepted"] == 1, counts


@pytest.mark.slow
def test_real_model_typing_then_a_pause_shows_ghost_text(tmp_path, real_model_file):
    """Keys typed one at a time into a real module's size of code (the plugin asks after each by
    itself, debounced, and the server warms up 300 ms after the last key, default settings),
    then a pause: ghost text must come (it never did: the warm-up cancelled the request)."""
    import textwrap
    module = Path(textwrap.__file__).read_text(encoding="utf-8").split("\n")
    before = "\n".join(module[:150]) + "\n\n\n"
    text = (before + "def count_chars(words):\n    total = 0\n    for word in words:\n        \n"
            "    return total\n\n\n" + "\n".join(module[150:300]))
    row = before.count("\n") + 4                          # the blank line in the loop body (1-based)
    env = {"DLLM_LSP_STATE_DIR": str(tmp_path / "state"), "DLLM_LSP_CACHE": os.environ["DLLM_TEST_USER_CACHE"],
           "DLLM_TYPE": "total += len(", "DLLM_GAP_MS": "100"}
    result = run_driver(tmp_path, "typing", text=text, cursor=(row, 8),
                        cmd=[sys.executable, "-m", "dllm_lsp.cli", "--stdio"], init={"model": "default"},
                        env=env, timeout=400)
    assert result["typed_line"] == "        total += len("
    assert result["suggestion"] and "word" in result["suggestion"], result["suggestion"]
    assert result["ghost"]["first"] == result["suggestion"].split("\n")[0]
    assert result["pause_ms"] < 60000, result["pause_ms"]        # within the budget, on a busy CI machine too


def readme_lua_block(first_line: str) -> str:
    """The ```lua block of editors/README.md whose first line is `first_line`."""
    readme = (REPO / "editors" / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```lua\n(.*?)```", readme, flags=re.S) if b.startswith(first_line + "\n")]
    return block


def as_installed(block: str) -> str:
    """The README's placeholders filled in as a user would: this checkout, and its venv's dllm-lsp
    (the interpreter running the tests: .venv/bin under scripts/test.sh)."""
    return block.replace("/path/to/dllm-lsp/.venv/bin/dllm-lsp", str(Path(sys.executable).parent / "dllm-lsp")) \
                .replace("/path/to/dllm-lsp", str(REPO))


@pytest.mark.parametrize("first_line", ["-- init.lua (Neovim 0.7 and later)", "-- lazy.nvim (Neovim 0.8 and later)"])
def test_readme_snippet_runs_as_written(tmp_path, first_line):
    """The README's init.lua (and its lazy.nvim spec, loaded as lazy.nvim loads a `dir` plugin:
    runtimepath, then config()) starts the real server with the snippet's settings, and completes
    once the model loads. Where the default model has not been pulled (`dllm-lsp pull`, part of
    scripts/setup.sh) the server must say so in its status instead."""
    block = as_installed(readme_lua_block(first_line))
    if first_line.startswith("-- lazy.nvim"):
        block = f"local spec = {block.split(chr(10), 1)[1]}\nvim.opt.runtimepath:append(spec.dir)\nspec.config()\n"
    snippet = tmp_path / "init.lua"
    snippet.write_text(block, encoding="utf-8")
    server = str(Path(sys.executable).parent / "dllm-lsp")
    assert Path(server).exists(), f"{server} is missing: run bash scripts/setup.sh"
    # the server reads the models where `dllm-lsp pull` put them (the user's cache), as a user's would
    result = run_driver(tmp_path, "snippet", env={"DLLM_SNIPPET": str(snippet), "DLLM_RTP": "",
                                                  "DLLM_LSP_STATE_DIR": str(tmp_path / "state"),
                                                  "DLLM_LSP_CACHE": os.environ["DLLM_TEST_USER_CACHE"]}, timeout=240)
    assert result["rtp_has_plugin"]
    assert result["client"] == {"cmd": [server, "--stdio"], "init_options": {"model": "default", "threshold": 0.9}}
    status = result["server_status"]
    if default_model_pulled():                                   # setup pulls it: the snippet must really complete
        assert status["state"] == "ready", status
        assert result["status"].startswith("dLLM ")
        assert isinstance(result["suggestion"], str)             # the inline completion round trip finished
    else:
        assert status["state"] == "error" and "dllm-lsp pull" in status["message"], status


def default_model_pulled() -> bool:
    from engine.loading.catalog import pulled_file
    from engine.errors import ModelNotFoundError
    try:
        pulled_file("default", Path(os.environ["DLLM_TEST_USER_CACHE"]))
        return True
    except ModelNotFoundError:
        return False
