"""`dllm-lsp bench typing` end to end on a tiny GGUF model: keys typed over stdio, pauses measured."""
import argparse
import asyncio
import json

import dllm_lsp.bench.cli as bench

SOURCE = "\n".join(f"def handler_{i}(request, response):\n    value_{i} = request.get('field_{i}')\n"
                   f"    response.write(value_{i} * {i})\n" for i in range(12))


def test_bench_typing_types_pauses_and_reports_each_phase(tmp_path, tiny_gguf_qwen2):
    src = tmp_path / "handlers.py"
    src.write_text(SOURCE)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["typing", str(src), "--model", str(tiny_gguf_qwen2), "--lines", "2", "--gap", "20",
                              "--settings", json.dumps({"maxNewTokensLine": 6, "maxNewTokensBlock": 8})])
    import dllm_lsp.bench.typing_replay as bench_typing
    result, raw = asyncio.run(bench_typing.bench_typing(args))
    rows = result["rows"]["dllm-lsp"]
    assert len(result["cases"]) == 2
    for phase in ("enter", "mid"):
        r = rows[phase]
        assert r["pauses"] == 2, phase
        assert r["p50_ms"] > 0 and r["floor_p50_ms"] > 0, r
        assert r["tokens_per_key"] > 0, r               # the engine computed context while keys came
    pauses = raw["dllm-lsp"]
    typed = [p for p in pauses if p.phase in ("enter", "mid")]
    assert all(p.reason in ("ok", "cached") for p in typed), [p.reason for p in typed]
    assert all(p.queue_ms is not None for p in typed if p.reason == "ok")
    # an accept phase follows every mid pause that showed something
    assert sum(p.phase == "accept" for p in pauses) == sum(p.shown for p in pauses if p.phase == "mid")
    assert "enter_floor_ratio" in result and "mid_floor_ratio" in result


def test_bench_typing_cursor_rest_computes_the_context_before_the_first_key(tmp_path, tiny_gguf_qwen2):
    """--cursor-rest: dllm/cursor where typing starts, and the warm-up there awaited before the first key."""
    src = tmp_path / "handlers.py"
    src.write_text(SOURCE)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    common = ["typing", str(src), "--model", str(tiny_gguf_qwen2), "--lines", "2", "--gap", "20", "--no-floor",
              "--settings", json.dumps({"maxNewTokensLine": 6, "maxNewTokensBlock": 8})]
    import dllm_lsp.bench.typing_replay as bench_typing
    cold, _ = asyncio.run(bench_typing.bench_typing(parser.parse_args(common)))
    rest, raw = asyncio.run(bench_typing.bench_typing(parser.parse_args(common + ["--cursor-rest"])))
    assert rest["cursor_rest"] is True and cold["cursor_rest"] is False and cold["rested_tokens"] == []
    # each case's warm-up at the cursor ran before its first key and computed that place's context
    assert len(rest["rested_tokens"]) == 2 and all(n > 0 for n in rest["rested_tokens"]), rest["rested_tokens"]
    assert all(p.first_line_ms is not None and p.first_line_ms <= p.ms for p in raw["dllm-lsp"])


def test_bench_typing_workspace_opens_files_in_their_folder_with_the_repository_context(tmp_path, tiny_gguf_qwen2):
    """--workspace: the files under their own paths, the folder above the package as the workspace
    folder (the server then adds the repository context: tests/e2e/test_repo_files_e2e.py)."""
    pkg = tmp_path / "proj" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "util.py").write_text("".join(f"def helper_{i}(value):\n    return value * {i}\n\n\n" for i in range(12)))
    src = pkg / "handlers.py"
    src.write_text("from .util import " + ", ".join(f"helper_{i}" for i in range(12)) + "\n\n\n" + SOURCE)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    settings = {"maxNewTokensLine": 6, "maxNewTokensBlock": 8, "warmUp": False, "prepareNext": False}
    common = ["typing", str(src), "--model", str(tiny_gguf_qwen2), "--lines", "1", "--gap", "20", "--no-floor",
              "--settings", json.dumps(settings)]
    import dllm_lsp.bench.typing_replay as bench_typing
    alone, raw_alone = asyncio.run(bench_typing.bench_typing(parser.parse_args(common)))
    in_folder, raw = asyncio.run(bench_typing.bench_typing(parser.parse_args(common + ["--workspace"])))
    assert alone["workspace"] == [] and in_folder["workspace"] == [str(tmp_path / "proj")]
    assert all(p.uri == src.resolve().as_uri() for p in raw["dllm-lsp"])
    assert in_folder["cases"] == alone["cases"]
    assert all(p.uri.startswith("file:///typing/") for p in raw_alone["dllm-lsp"])      # made up, outside any folder
    assert all(p.reason in ("ok", "cached") for p in raw["dllm-lsp"] if p.phase in ("enter", "mid"))
    from dllm_lsp.bench.typing_replay import workspace_roots
    assert workspace_roots([src, pkg / "util.py", tmp_path / "loose.py"]) == [tmp_path / "proj", tmp_path]
