"""The pure wire mapping (dllm_lsp/http/wire.py) and the remote backend's query (remote_backend.query_for_plan)."""
import json

import pytest

import dllm_lsp.http.wire as fim_api
from dllm_lsp.core.plan import plan_completion
from dllm_lsp.http.fields import BadRequest
from dllm_lsp.http.wire import FimAnswer, FimQuery
from dllm_lsp.runtime.stream import StopScanner
from dllm_lsp.http.client import error_kind, error_message, query_for_plan
from dllm_lsp.settings import Settings

from fim_api_bodies import LLAMA_VSCODE_BODY


def test_llama_vscode_body_maps_prefix_prompt_suffix_extra_budget_and_deadline():
    q = fim_api.parse_request("llamacpp", LLAMA_VSCODE_BODY)
    assert q.prefix == "def add(a, b):\n    return " and q.suffix == "\n\nprint(add(1, 2))\n"
    assert q.snippets == (("/w/ops.py", "def sub(a, b):\n    return a - b\n"),)
    assert q.max_tokens == 128 and q.deadline_ms == 1000 and q.top_p == 0.99 and not q.stream
    # the "prepare" request (n_predict 0) is a warm-up; -1 means "as many as the server allows"
    assert fim_api.parse_request("llamacpp", {**LLAMA_VSCODE_BODY, "n_predict": 0}).max_tokens == 0
    assert fim_api.parse_request("llamacpp", {**LLAMA_VSCODE_BODY, "n_predict": -1}, max_tokens_cap=77).max_tokens == 77


def test_openai_body_maps_and_rejects_what_cannot_be_honoured():
    q = fim_api.parse_request("openai", {"model": "m", "prompt": "a = ", "suffix": "\n", "max_tokens": 9,
                                         "temperature": 0, "top_p": 1, "stop": "\n", "stream": True,
                                         "stream_options": {"include_usage": True}, "user": "x", "n": 1})
    assert (q.prefix, q.suffix, q.max_tokens, q.stop, q.stream, q.include_usage, q.model) == \
        ("a = ", "\n", 9, ("\n",), True, True, "m")
    assert fim_api.parse_request("openai", {"prompt": ["only one"]}).prefix == "only one"
    # Continue's inception provider: POST {apiBase}completions, an empty suffix sent as <|endoftext|>
    assert fim_api.parse_request("openai", {"prompt": "x", "suffix": "<|endoftext|>", "presence_penalty": 1.5,
                                            "frequency_penalty": 0, "stop": ["<|endoftext|>", "\n\n", "\n \n"]}).suffix == ""
    bad = [({"prompt": 3}, "prompt"), ({}, "prompt"), ({"prompt": ["a", "b"]}, "prompt"), ({"prompt": [1, 2]}, "prompt"),
           ({"prompt": "", "max_tokens": "9"}, "max_tokens"), ({"prompt": "", "max_tokens": 1.5}, "max_tokens"),
           ({"prompt": "", "max_tokens": 100000}, "max_tokens"), ({"prompt": "", "temperature": True}, "temperature"),
           ({"prompt": "", "top_p": 2}, "top_p"), ({"prompt": "", "stop": ["a", 3]}, "stop"),
           ({"prompt": "", "stop": [""]}, "stop"), ({"prompt": "", "n": 2}, "n"), ({"prompt": "", "echo": True}, "echo"),
           ({"prompt": "", "logprobs": 3}, "logprobs"), ({"prompt": "", "stream": "yes"}, "stream"),
           ({"prompt": "", "suffix": None, "stream_options": []}, "stream_options")]
    for body, param in bad:
        with pytest.raises(BadRequest) as err:
            fim_api.parse_request("openai", body)
        assert err.value.param == param, (body, err.value)
    for body in ([], "x", None, 3):
        with pytest.raises(BadRequest):
            fim_api.parse_request("inception", body)
    with pytest.raises(BadRequest) as err:
        fim_api.parse_request("llamacpp", {"input_extra": [{"filename": 1, "text": "x"}]})
    assert err.value.param == "input_extra"


@pytest.mark.parametrize("api", fim_api.APIS)
def test_request_body_and_parse_request_round_trip(api):
    q = FimQuery(prefix="import os\ndef f():\n    return ", suffix="\n", max_tokens=24, stop=("\n",), stream=True,
                 temperature=0.0, model="" if api == "llamacpp" else "m", seed=3, deadline_ms=None,
                 snippets=(("a.py", "x = 1"),) if api == "llamacpp" else ())
    path, body = fim_api.request_body(api, q)
    assert path == fim_api.PATHS[api]
    assert fim_api.parse_request(api, json.loads(json.dumps(body))) == q
    if api == "llamacpp":      # as llama.vscode splits it: the lines above, then the cursor's line
        assert body["input_prefix"] == "import os\ndef f():\n" and body["prompt"] == "    return "


def test_snippets_reach_the_openai_prompt_as_a_comment_header_and_split_back():
    q = FimQuery(prefix="x = ", snippets=(("a.py", "def a():\n    pass"), ("b.py", "B = 2")))
    _, body = fim_api.request_body("openai", q)
    assert body["prompt"].startswith("# Compare this snippet from a.py:\n# def a():\n#     pass\n") and \
        body["prompt"].endswith("x = ")
    header = fim_api.render_snippets(q.snippets, "//")
    assert fim_api.split_snippets(header) == [("a.py", "def a():\n    pass"), ("b.py", "B = 2")]


def test_answers_and_chunks_parse_back_on_the_client_side():
    ans = FimAnswer("a + b", "length", prompt_tokens=7, completion_tokens=3, prompt_ms=10.0, total_ms=40.0)
    meta = {"id": "cmpl-1", "created": 1, "model": "m"}
    for api in fim_api.APIS:
        assert fim_api.parse_answer(api, fim_api.answer_body(api, ans, **meta)) == ("a + b", "length")
    oa = fim_api.answer_body("openai", ans, **meta)
    assert oa["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    fim = fim_api.answer_body("inception", ans, **meta)["choices"][0]
    assert fim["text"] == fim["message"]["content"] == "a + b"          # Inception's and Mistral's readers
    assert fim_api.chunk_body("inception", "b", **meta)["choices"][0]["delta"] == {"content": "b"}
    lc = fim_api.answer_body("llamacpp", ans, **meta)
    assert lc["stop"] is True and lc["timings"]["predicted_n"] == 3 and lc["timings"]["predicted_ms"] == 30.0
    chunk = fim_api.chunk_body("openai", "b", dllm={"stable": "a b", "draft": "a b c", "forwards": 2}, **meta)
    assert fim_api.parse_chunk("openai", json.dumps(chunk)) == fim_api.Chunk(text="b", draft="a b c")
    last = fim_api.chunk_body("llamacpp", "", answer=ans, **meta)
    assert fim_api.parse_chunk("llamacpp", json.dumps(last)).done
    assert fim_api.parse_chunk("openai", "[DONE]").done
    assert fim_api.parse_chunk("openai", json.dumps(fim_api.usage_chunk(ans, **meta))) is None
    with pytest.raises(ValueError):
        fim_api.parse_chunk("openai", json.dumps({"error": {"message": "boom"}}))
    with pytest.raises(ValueError):
        fim_api.parse_answer("openai", {"choices": []})


def test_stop_scanner_holds_back_a_possible_stop_and_never_shrinks():
    s = StopScanner(["\n\n", "END"])
    assert s.visible("abc") == ("abc", False)
    assert s.visible("abc\n") == ("abc", False)         # may become "\n\n"
    assert s.visible("abc\nE") == ("abc\n", False)      # "E" may become "END"; the "\n" no longer "\n\n"
    assert s.visible("abc\nEN") == ("abc\n", False)
    assert s.visible("abc\nEND!") == ("abc\n", True)
    assert s.final("x\n\ny END") == ("x", "\n\n")
    text, shown = "one two\nthree\n\nfour", ""
    for i in range(len(text) + 1):
        vis, hit = s.visible(text[:i])
        assert vis.startswith(shown)
        shown = vis
    assert shown == "one two\nthree"


def test_query_for_plan_carries_the_plan_and_a_line_stop():
    text = "import os\n\ndef f(path):\n    return os.path.\n"
    offset = text.index("os.path.") + len("os.path.")
    settings = Settings(max_new_tokens_line=17)
    plan = plan_completion(text, offset, "python", settings, None, snippets=[("util.py", "def f(path):\n    return os.path.join(path)\n")])
    assert plan is not None and plan.mode == "line" and plan.snippet_header
    q = query_for_plan(plan, "openai", "m")
    assert q.prefix == plan.prefix and q.suffix == plan.suffix and q.max_tokens == 17 and q.stop == ("\n",)
    assert q.stream and q.model == "m" and q.temperature == 0.0
    lq = query_for_plan(plan, "llamacpp")
    assert lq.prefix == plan.prefix[len(plan.snippet_header):] and lq.snippets[0][0] == "util.py"
    assert "os.path.join(path)" in lq.snippets[0][1]
    block = plan_completion("def f(x):\n", len("def f(x):\n"), "python", Settings(max_new_tokens_block=40), None)
    assert block.mode == "block" and query_for_plan(block, "openai").stop == () and \
        query_for_plan(block, "openai").max_tokens == 40


def test_error_mapping_takes_the_servers_words():
    assert error_message(401, b'{"error": {"message": "bad token"}}') == "HTTP 401: bad token"
    assert error_message(500, b"<html>oops</html>") == "HTTP 500: <html>oops</html>"
    assert [error_kind(s) for s in (401, 403, 429, 503, 500, 502, 404)] == \
        ["auth", "auth", "busy", "busy", "server", "server", "http"]


class FakeEngine:
    """Engine.stream's contract, scripted: one update per 'pass', each `delay` seconds apart."""

    reads_repo_layout = False

    def __init__(self, texts, delay=0.0):
        from engine.testing.checkpoints import tiny_tokenizer
        self.texts, self.delay, self.tokenizer, self.requests = texts, delay, tiny_tokenizer(), []

    def stream(self, req, stop):
        import time as _time
        from engine.api import InfillResult, InfillUpdate
        self.requests.append(req)
        text, n = "", 0
        for nxt in self.texts:
            if stop.is_set():                   # checked before every pass, as the engine does
                break
            _time.sleep(self.delay)
            text, n = nxt, n + 1
            yield InfillUpdate(stable=text, draft=text, forwards=n, committed=n, total=len(self.texts))
        yield InfillUpdate(stable=text, draft=text, forwards=n, committed=n, total=n,
                           result=InfillResult(text=text, forwards=n, new_tokens=n, ms=1.0, finish_reason="length"))


def test_t_max_predict_ms_stops_only_once_a_line_is_complete():
    from dllm_lsp.http.fim_engine import decode_query
    texts = ["a", "ab", "abc", "abcd", "abcd\n", "abcd\ne", "abcd\nef", "abcd\nefg"]
    slow = FakeEngine(texts, delay=0.02)
    ans = decode_query(slow, Settings(), FimQuery(prefix="x = ", max_tokens=8, deadline_ms=1.0))
    assert ans.text == "abcd\n" and ans.finish_reason == "length"       # past the deadline long ago, but
    assert slow.requests[0].deadline_ms is None                           # the first line was left whole
    ans = decode_query(FakeEngine(texts), Settings(), FimQuery(prefix="x = ", max_tokens=8, deadline_ms=10_000))
    assert ans.text == "abcd\nefg"
    stopped = decode_query(FakeEngine(texts), Settings(), FimQuery(prefix="x = ", max_tokens=8, stop=("cd",)))
    assert (stopped.text, stopped.finish_reason, stopped.stop_word) == ("ab", "stop", "cd")


def test_a_newline_stop_string_ends_the_drafts_at_the_line():
    from dllm_lsp.http.fim_engine import decode_query
    line = FakeEngine(["a", "ab\n"])
    decode_query(line, Settings(), FimQuery(prefix="x = ", max_tokens=8, stop=("\n",)))
    block = FakeEngine(["a", "ab\n"])
    decode_query(block, Settings(), FimQuery(prefix="x = ", max_tokens=8, stop=("\n\n",)))
    assert line.requests[0].ends_at_newline and not block.requests[0].ends_at_newline


def test_input_extra_becomes_the_repo_layouts_files_on_a_model_that_reads_it():
    from dllm_lsp.http.fim_engine import fim_request
    extra = (("old.py", "o" * 40), ("util.py", "def helper(a):\n    return a\n"), ("new.py", "n = 1\n"))
    q = FimQuery(prefix="x = helper(", suffix=")\n", snippets=extra, max_tokens=8)
    req, tokens = fim_request(Settings(repo_tokens=60), q, len, repo_layout=True)
    assert [p for p, _ in req.repo.files] == ["util.py", "new.py"]     # the newest that fit, in their order
    assert req.prefix == "x = helper(" and tokens == len(req.prefix) + len(req.suffix) + 28 + 6
    flat, _ = fim_request(Settings(repo_tokens=60), q, len, repo_layout=False)
    assert flat.repo is None and flat.prefix.startswith("# Compare this snippet from")
    none, _ = fim_request(Settings(repo_tokens=0), q, len, repo_layout=True)
    assert none.repo is None


def test_a_llamacpp_backend_gets_the_repo_files_as_input_extra():
    from dllm_lsp.core.plan import RepoView
    text = "from util import helper\nx = helper(\n"
    view = RepoView(name="proj", path="main.py", read={"util.py": "def helper(a):\n    return a\n"}.get)
    plan = plan_completion(text, text.index("(") + 1, "python", Settings(repo_tokens=512), None, repo=view)
    q = query_for_plan(plan, "llamacpp")
    assert q.snippets == (("util.py", "def helper(a):\n    return a\n"),)
    assert fim_api.request_body("llamacpp", q)[1]["input_extra"] == [{"filename": "util.py",
                                                                      "text": "def helper(a):\n    return a\n"}]
