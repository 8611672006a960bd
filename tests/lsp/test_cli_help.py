"""`dllm-lsp --help` and every subcommand's options: listed, described, defaults as in Settings.

The parser tree is walked as argparse built it (cli.build_parser, plus engine.bench.steps's own parser,
which `bench engine` hands its arguments to). `complete`'s output contract is checked on the
pure pieces: the --json summary and the stderr stats line.
"""
import argparse
from pathlib import Path
import re
import subprocess
import sys
from dataclasses import fields

import pytest

import dllm_lsp.cli as cli
import dllm_lsp.commands.complete as complete_cmd
from dllm_lsp.runtime.host import Decoded
from dllm_lsp.settings import Settings


def walk(parser: argparse.ArgumentParser, path=("dllm-lsp",)):
    """(path, action) for every argument of `parser` and of its subparsers, recursively."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, path + (name,))
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def all_arguments():
    import engine.bench.steps
    engine_parser = argparse.ArgumentParser(prog="dllm-lsp bench engine")
    engine.bench.steps.add_arguments(engine_parser)
    return list(walk(cli.build_parser())) + list(walk(engine_parser, ("dllm-lsp", "bench", "engine")))


def test_top_level_help_lists_every_subcommand_and_the_server_flags():
    proc = subprocess.run([sys.executable, "-m", "dllm_lsp.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in cli.SUBCOMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", proc.stdout, flags=re.M), name
    for flag in ("--stdio", "--tcp HOST:PORT", "--log-file"):
        assert flag in proc.stdout, flag
    assert "pull" in cli.SUBCOMMANDS and cli.SUBCOMMANDS["pull"][0] == "dllm_lsp.commands.pull"


def test_every_option_of_every_subcommand_has_a_description():
    arguments = all_arguments()
    assert len(arguments) > 60                           # the walk reached the subcommands' options
    missing = [" ".join(path) + " " + "/".join(a.option_strings or [a.dest]) for path, a in arguments
               if not (a.help or "").strip() and a.help != argparse.SUPPRESS]
    assert missing == []


def test_defaults_named_in_help_are_the_settings_defaults():
    """An option named like a setting that says `default: X` must say the setting's own default."""
    defaults = {f.name: getattr(Settings(), f.name) for f in fields(Settings)}
    checked = 0
    for path, action in all_arguments():
        if action.dest not in defaults or path[1] in ("bench", "train"):
            continue                                     # model shapes and benchmarks, not settings
        said = re.search(r"default: (?:the server's, )?([^;,)]+)\)?$", action.help or "")
        if said:
            checked += 1
            assert said.group(1) == str(defaults[action.dest]), (path, action.dest, action.help)
    assert checked >= 8


def decoded(text: str, first_text_ms):
    return Decoded(text=text, raw=text, forwards=3, new_tokens=5 if text else 0, ms=41.5,
                   first_text_ms=first_text_ms, finish_reason="eos")


def test_json_first_text_ms_is_null_when_nothing_was_suggested():
    # a draft was visible at 12 ms, but post-processing left nothing: nothing reached the user
    assert complete_cmd.summary(decoded("", 12.0), "line", 100.0)["firstTextMs"] is None
    shown = complete_cmd.summary(decoded("a + b", 12.0), "line", 100.0)
    assert shown["firstTextMs"] == 12.0 and shown["forwards"] == 3 and shown["tokensPerForward"] == round(5 / 3, 3)


def test_stats_line_gives_forwards_and_latency_or_says_nothing_was_suggested():
    line = complete_cmd.stats_line(decoded("a + b", 12.0), 250.0)
    assert "3 forward passes" in line and "5 tokens" in line and "42 ms" in line and "first text 12 ms" in line
    assert complete_cmd.stats_line(decoded("", None), 250.0).startswith("(the model suggests nothing here: eos")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from engine.testing.checkpoints import write_block_model
    return str(write_block_model(tmp_path_factory.mktemp("m") / "tiny"))


def test_complete_text_mode_prints_the_text_on_stdout_and_the_stats_on_stderr(tiny, tmp_path):
    src = tmp_path / "a.py"
    src.write_text("def add(a, b):\n    return \n")
    proc = subprocess.run([sys.executable, "-m", "dllm_lsp.cli", "complete", f"{src}:2:12", "--model", tiny],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stats = proc.stderr.strip().splitlines()[-1]
    if proc.stdout.strip():
        assert re.fullmatch(r"\[\d+ forward pass(es)?, \d+ tokens, \d+ ms, first text \d+ ms; model loaded in \d+ ms\]",
                            stats), stats
    else:
        assert stats.startswith("(the model suggests nothing here")


def test_a_missing_or_corrupt_model_is_one_line_without_a_traceback(tmp_path, monkeypatch, capsys):
    from dllm_lsp.cli import main
    monkeypatch.setenv("DLLM_LSP_CACHE", str(tmp_path / "empty-cache"))
    demo = Path(__file__).resolve().parents[2] / "examples" / "demo.py"
    assert main(["complete", f"{demo}:14:28"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run `dllm-lsp pull`" in err[0] and "Traceback" not in err[0]
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not gguf" * 4)
    assert main(["complete", f"{demo}:14:28", "--model", str(junk)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "junk.gguf: not a readable GGUF file" in err[0]
