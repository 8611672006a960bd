"""`dllm-lsp bench context` on a tiny GGUF model: the keystroke recomputes only the tail."""
import argparse
import json

import dllm_lsp.bench.cli as bench
import dllm_lsp.bench.context as bench_context

SOURCE = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(30))


def test_positions_are_inside_lines_after_the_first_word():
    pos = bench_context.positions([("a.py", SOURCE)], 5, 0)
    assert len(pos) == 5
    for text, offset in pos:
        line = text[text.rfind("\n", 0, offset) + 1:text.find("\n", offset)]
        assert line.strip() and text[offset - 1] != " "


def test_keystroke_costs_less_than_cold_and_the_json_row(tmp_path, tiny_gguf_qwen2, capsys):
    src = tmp_path / "a.py"
    src.write_text(SOURCE)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["context", str(src), "--model", str(tiny_gguf_qwen2), "--prefix", "200",
                              "--suffix", "0,40", "--positions", "4", "--threads", "1", "--json"])
    assert bench.run(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = out["rows"]
    assert set(rows) == {"200/0", "200/40"} and out["positions"] == 4
    assert rows["200/40"]["tokens_mean"] > rows["200/0"]["tokens_mean"]
    from engine import Engine
    eng = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")
    text, offset = bench_context.positions([("a.py", SOURCE)], 1, 3)[0]
    hits = eng.context_cache.hits
    bench_context.measure(eng, text, offset, 200, 40)
    # the second (keystroke) prefill reused the context up to the cursor
    assert eng.context_cache.hits - hits > 20
