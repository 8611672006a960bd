"""The command line: `complete`, `bench` (sampling and the engine delegation), routing to `serve`."""
import argparse
import json
import random
import sys
import types as pytypes

import pytest

import dllm_lsp.bench.cli as bench_cli
import dllm_lsp.bench.lsp as bench
import dllm_lsp.cli as cli
import dllm_lsp.commands.complete as complete_cmd
from dllm_lsp.settings import Settings


def test_location_parsing_is_one_based():
    path, line, col = complete_cmd.parse_location("dir/a.py:3:5")
    assert (str(path), line, col) == ("dir/a.py", 3, 5)
    text = "ab\ncd\nefgh\n"
    assert text[complete_cmd.offset_of(text, 3, 2)] == "f"
    assert complete_cmd.offset_of(text, 3, 5) == text.index("h") + 1           # one past the end
    with pytest.raises(SystemExit):
        complete_cmd.offset_of(text, 9, 1)
    with pytest.raises(SystemExit):
        complete_cmd.parse_location("a.py:x:1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from engine.testing.checkpoints import write_block_model
    return str(write_block_model(tmp_path_factory.mktemp("m") / "tiny"))


def test_complete_prints_json_with_text_forwards_and_timings(tiny, tmp_path, capsys):
    src = tmp_path / "a.py"
    src.write_text("def add(a, b):\n    return \n")
    parser = argparse.ArgumentParser()
    complete_cmd.add_arguments(parser)
    assert complete_cmd.run(parser.parse_args([f"{src}:2:12", "--model", tiny, "--json"])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "line" and isinstance(out["text"], str) and "\n" not in out["text"]
    assert 1 <= out["forwards"] <= Settings().max_new_tokens_line and out["ms"] > 0 and out["loadMs"] > 0
    assert out["finishReason"] in ("eos", "length")
    assert complete_cmd.run(parser.parse_args([f"{src}:2:12", "--model", tiny])) == 0   # not a TTY: final text
    assert capsys.readouterr().out.rstrip("\n") == out["text"]


def test_bench_samples_real_positions_between_words():
    text = "import os\n\ndef area(width, height):\n    return width * height\n"
    samples = bench.sample_positions("a.py", text, 5, random.Random(1))
    assert samples
    for s in samples:
        line = s.text.split("\n")[s.line]
        original = text.split("\n")[s.line]
        assert line + s.reference == original and s.character == len(line) and s.reference
        assert not (line[-1].isalnum() and s.reference[0].isalnum())          # never inside a word


def test_bench_engine_delegates_to_engine_bench(monkeypatch, capsys):
    calls = {}
    fake = pytypes.ModuleType("engine.bench.steps")
    fake.add_arguments = lambda p: p.add_argument("--steps", type=int, default=1)
    fake.run = lambda args: calls.setdefault("steps", args.steps) and 0
    monkeypatch.setitem(sys.modules, "engine.bench.steps", fake)
    import engine.bench
    monkeypatch.setattr(engine.bench, "steps", fake, raising=False)
    assert cli.main(["bench", "engine", "--steps", "7"]) == 0 and calls == {"steps": 7}


def test_bench_engine_without_engine_bench_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "engine.bench.steps", None)                   # import fails
    assert bench_cli.run_engine([]) == 2
    assert "engine.bench.steps" in capsys.readouterr().err


def test_bare_and_stdio_invocations_route_to_serve():
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--stdio", "--log-file", "x.log", "-vv"])
    assert args._module == "dllm_lsp.commands.serve" and args.stdio and args.verbose == 2 and args.log_file == "x.log"
    args = parser.parse_args(["serve", "--tcp", "127.0.0.1:9000"])
    from dllm_lsp.commands.serve import parse_tcp
    assert parse_tcp(args.tcp) == ("127.0.0.1", 9000)
    with pytest.raises(SystemExit):
        parse_tcp("nope")


def test_bench_block_positions_are_empty_first_body_lines():
    text = "def area(width, height):\n    return width * height\n\nx = 1\n"
    samples = bench.sample_block_positions("a.py", text, 5, random.Random(0))
    assert len(samples) == 1
    s = samples[0]
    assert (s.line, s.character, s.reference) == (1, 4, "return width * height")
    assert s.text.split("\n")[1] == "    "
    from dllm_lsp.core.syntax import decide_mode
    offset = s.text.index("\n") + 1 + 4
    assert decide_mode(s.text, offset, "python") == "block"
