"""Evaluation task derivation, the test runner, and `dllm-lsp eval` end to end on a tiny model."""
import argparse
import json

import pytest

import dllm_lsp.commands.eval as evaluate
from engine.eval_data import load_humaneval_problems


@pytest.fixture(scope="module")
def problems():
    return {p["task_id"]: p for p in load_humaneval_problems()}


def test_benchmark_task_counts(problems):
    assert len(evaluate.humaneval_tasks(problems.values(), "single-line")) == 1033
    assert len(evaluate.humaneval_tasks(problems.values(), "multi-line")) == 5815
    with pytest.raises(ValueError):
        evaluate.humaneval_tasks(problems.values(), "whole-file")


def test_tasks_for_one_problem(problems):
    prob = problems["HumanEval/0"]
    lines = evaluate.solution_lines(prob["canonical_solution"])
    nonblank = [line for line in lines if line.strip()]
    single = evaluate.humaneval_tasks([prob], "single-line")
    multi = evaluate.humaneval_tasks([prob], "multi-line")
    assert len(single) == len(nonblank) and len(multi) == len(nonblank) * (len(nonblank) + 1) // 2
    for task in single + multi:
        # cursor after the indentation; putting the expected text back gives prompt + solution
        filled = task.document[:task.offset] + task.expected + task.document[task.offset:]
        assert filled == prob["prompt"] + prob["canonical_solution"]
        assert task.document[task.offset:].startswith("\n")
        assert not task.expected.startswith((" ", "\t")) and not task.expected.endswith("\n")
    assert single[0].expected == nonblank[0].strip()


def test_the_canonical_insertion_passes_and_a_wrong_one_fails(problems):
    task = evaluate.humaneval_tasks([problems["HumanEval/2"]], "single-line")[0]
    assert task.expected == "return number % 1.0"
    assert evaluate.passes(evaluate.program_for(task, task.expected))
    assert not evaluate.passes(evaluate.program_for(task, "return number"))
    assert not evaluate.passes(evaluate.program_for(task, "while True: pass"), timeout_s=2)
    [floor] = evaluate.empty_floor([task])
    assert floor.insertion == "" and floor.passed is False           # the tests need this line


def test_heldout_tasks_cut_lines():
    text = "import os\n\n\ndef f(x):\n    y = x + 1\n    return os.path.join(str(y), 'a')\n"
    tasks = evaluate.heldout_tasks([text], n=10, seed=0)
    assert {t.kind for t in tasks} == {"line", "rest"}
    for t in tasks:
        assert t.document[:t.offset] + t.expected + t.document[t.offset:] == text
        assert "\n" not in t.expected and t.expected.strip()


def test_summary_numbers():
    task = evaluate.Task("t", "x = ", 4, "1")
    outs = [evaluate.Outcome(task, "1", forwards=2, new_tokens=4, ms=10.0, planned=True, passed=True),
            evaluate.Outcome(task, "2", forwards=2, new_tokens=2, ms=30.0, planned=True, passed=False),
            evaluate.Outcome(task, "", forwards=0, new_tokens=0, ms=0.0, planned=False, passed=False)]
    s = evaluate.summarize(outs)
    assert s["pass_at_1"] == pytest.approx(1 / 3) and s["exact_match"] == pytest.approx(1 / 3)
    assert s["tokens_per_forward"] == 1.5 and s["planned"] == 2 and s["latency_ms_p50"] == 20.0


def test_eval_command_end_to_end(tiny_block_model, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    out = tmp_path / "r.json"
    args = parser.parse_args(["humaneval-infill", "--split", "single-line", "--limit", "3", "--model",
                              str(tiny_block_model), "--baseline", "--floor", "--json", str(out), "--threads", "1"])
    assert evaluate.run(args) == 0
    printed = capsys.readouterr().out
    assert "one-token-per-step" in printed and "pass@1" in printed
    rows = json.loads(out.read_text())["rows"]
    assert rows["one-token-per-step"]["tasks"] == 3 and 0 <= rows["threshold"]["pass_at_1"] <= 1
    assert rows["empty insertion (floor)"]["tasks"] == 3
    # the baseline commits one token per forward pass
    assert rows["one-token-per-step"]["tokens_per_forward"] <= 1.0 + 1e-9


def test_eval_heldout_end_to_end(tiny_block_model, code_dir, tmp_path, capsys):
    import engine.train.corpus as corpus
    files = corpus.scan([str(code_dir)], heldout_percent=100.0, exclude_markers=[])
    corpus.write_manifest(files, tmp_path / "manifest.json", [str(code_dir)])
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    out = tmp_path / "h.json"
    args = parser.parse_args(["heldout", "--manifest", str(tmp_path / "manifest.json"), "--limit", "6",
                              "--model", str(tiny_block_model), "--json", str(out), "--threads", "1"])
    assert evaluate.run(args) == 0
    row = json.loads(out.read_text())["rows"]["threshold"]
    assert row["tasks"] == 6 and "pass_at_1" not in row and 0 <= row["exact_match"] <= 1
    assert "heldout lines: 6 tasks" in capsys.readouterr().out


def test_plain_greedy_is_the_first_line_of_the_models_own_greedy_text(problems, tiny_gguf_qwen2):
    from engine import Engine
    from dllm_lsp.core import context
    from dllm_lsp.settings import Settings
    engine = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")
    tasks = evaluate.humaneval_tasks([problems["HumanEval/2"]], "single-line")[:2]
    settings = Settings()
    out = evaluate.plain_greedy(engine, tasks, settings)
    count = context.token_counter(engine.tokenizer)
    for task, outcome in zip(tasks, out):
        prefix, suffix = context.windows(task.document, task.offset, settings.prefix_tokens, settings.suffix_tokens, count)
        whole = engine.infill(settings.infill_request(prefix, suffix, max_new_tokens=64, drafting=False)).text
        assert outcome.insertion == whole.split("\n", 1)[0]
        assert outcome.passed == evaluate.passes(evaluate.program_for(task, outcome.insertion))
