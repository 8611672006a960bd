"""`dllm-lsp http` with real clients on loopback: the openai package, llama.vscode's exact /infill body,
raw HTTP for the error paths, a dropped connection, and what listens where.

The server runs as a second process on the tiny random model (conftest.py); its answers are
compared with the same model decoding in this process, so a mapping error shows as a
different text, not only as a wrong shape.
"""
import asyncio
import json
import socket
import time
import urllib.error

import openai
import pytest

from http_helpers import TOKEN, HttpServer
from engine import InfillRequest
from fim_api_bodies import LLAMA_VSCODE_BODY

PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n\n\nprint(add(1, 2))\n"


def expected(engine, max_tokens, prefix=PREFIX, suffix=SUFFIX):
    return engine.infill(InfillRequest(prefix=prefix, suffix=suffix, max_new_tokens=max_tokens))


@pytest.fixture(scope="module")
def client(http_server):
    return openai.OpenAI(base_url=http_server.url + "/v1", api_key=TOKEN, max_retries=0, timeout=60)


def test_openai_client_completion_with_suffix_is_the_engines_text(client, local_engine):
    want = expected(local_engine, 12)
    r = client.completions.create(model="tiny", prompt=PREFIX, suffix=SUFFIX, max_tokens=12, temperature=0)
    assert r.choices[0].text == want.text and want.text
    assert r.choices[0].finish_reason == ("length" if want.finish_reason == "length" else "stop")
    assert r.usage.completion_tokens == want.new_tokens and r.usage.prompt_tokens > 5
    assert r.model == "tiny" and r.object == "text_completion"
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_openai_client_streaming_sends_chunks_as_decoding_commits(client, local_engine):
    want = expected(local_engine, 12)
    chunks = list(client.completions.create(model="tiny", prompt=PREFIX, suffix=SUFFIX, max_tokens=12, stream=True,
                                            stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == want.text
    assert sum(1 for t in texts if t) >= 2                       # more than one piece: it streamed
    assert chunks[-2].choices[0].finish_reason in ("length", "stop") and chunks[-1].usage.completion_tokens == want.new_tokens
    # our extension: the draft (the whole current guess) rides along for clients that ask for it
    drafts = [c.model_extra["dllm"] for c in client.completions.create(
        model="tiny", prompt=PREFIX, suffix=SUFFIX, max_tokens=12, stream=True, extra_headers={"X-Dllm-Draft": "1"})]
    assert drafts and all(set(d) == {"stable", "draft", "forwards"} for d in drafts)
    assert drafts[-1]["stable"] == want.text and [d["forwards"] for d in drafts] == sorted(d["forwards"] for d in drafts)
    plain = list(client.completions.create(model="tiny", prompt=PREFIX, suffix=SUFFIX, max_tokens=12, stream=True))
    assert all("dllm" not in (c.model_extra or {}) for c in plain)


def test_stop_strings_cut_the_text_streamed_or_not(client, local_engine):
    full = expected(local_engine, 16).text
    stop = full[5:7]
    assert len(stop) == 2, full
    cut = full[:full.find(stop)]
    r = client.completions.create(model="tiny", prompt=PREFIX, suffix=SUFFIX, max_tokens=16, stop=[stop])
    assert (r.choices[0].text, r.choices[0].finish_reason) == (cut, "stop")
    streamed = client.completions.create(model="tiny", prompt=PREFIX, suffix=SUFFIX, max_tokens=16, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut


def test_inception_fim_shape(http_server, local_engine):
    status, body = http_server.request("POST", "/v1/fim/completions", {
        "model": "mercury-coder", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 12, "stop": [], "stream": False})
    assert status == 200, body
    assert body["choices"][0]["text"] == expected(local_engine, 12).text
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_llama_vscode_infill_body_exactly_as_sent(http_server, local_engine):
    body = {**LLAMA_VSCODE_BODY, "input_prefix": "def add(a, b):\n", "prompt": "    return ", "input_suffix": SUFFIX,
            "n_predict": 12, "t_max_predict_ms": 5000}
    status, with_extra = http_server.request("POST", "/infill", body)
    assert status == 200, with_extra
    assert with_extra["stop"] is True and isinstance(with_extra["content"], str)
    assert set(with_extra["timings"]) >= {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_second"}
    status, without = http_server.request("POST", "/infill", {**body, "input_extra": []})
    assert without["content"] == expected(local_engine, 12).text
    assert with_extra["timings"]["prompt_n"] > without["timings"]["prompt_n"]     # input_extra went into the context
    # llama.vscode's "prepare" request after a chunk update: n_predict 0 only warms the context
    status, prep = http_server.request("POST", "/infill", {"input_prefix": "", "input_suffix": "", "prompt": "",
                                                           "input_extra": body["input_extra"], "n_predict": 0,
                                                           "samplers": [], "cache_prompt": True,
                                                           "t_max_prompt_ms": 500, "t_max_predict_ms": 1})
    assert status == 200 and prep["content"] == "" and prep["timings"]["predicted_n"] == 0


def test_infill_streams_content_and_ends_with_stop(http_server, local_engine):
    import urllib.request
    req = urllib.request.Request(http_server.url + "/infill", data=json.dumps({
        "input_prefix": "def add(a, b):\n", "prompt": "    return ", "input_suffix": SUFFIX, "n_predict": 12,
        "stream": True}).encode(), headers={"Authorization": f"Bearer {TOKEN}"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in resp.read().decode().splitlines() if line.startswith("data:")]
    assert all(not e["stop"] for e in events[:-1]) and events[-1]["stop"] is True and "timings" in events[-1]
    assert "".join(e["content"] for e in events) == expected(local_engine, 12).text


def test_token_required_everywhere(http_server):
    for method, path in (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/infill")):
        for token in (None, "wrong", TOKEN + "x"):
            status, body = http_server.request(method, path, {"prompt": "x"}, token=token)
            assert status == 401 and body["error"]["type"] == "authentication_error", (method, path, token)
    bad = openai.OpenAI(base_url=http_server.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="tiny", prompt="x", max_tokens=2)


def test_bad_bodies_are_4xx_json_and_the_server_lives_on(http_server):
    cases = [("/v1/completions", b"{not json", 400), ("/v1/completions", b"[1, 2]", 400),
             ("/v1/completions", b'{"prompt": 5}', 400), ("/v1/completions", b'{"prompt": "x", "max_tokens": "3"}', 400),
             ("/v1/completions", b'{"prompt": "x", "n": 3}', 400), ("/v1/completions", b"\xff\xfe", 400),
             ("/v1/fim/completions", b'{"prompt": "x", "stop": [1]}', 400),
             ("/infill", b'{"input_prefix": ["a"]}', 400), ("/infill", b'{"input_extra": "a"}', 400),
             ("/infill", b'{"n_predict": 1e400}', 400), ("/v1/completions", b'{"prompt": "a\\ud800b"}', 400),
             ("/v1/completions", b"[" * 100000 + b"]" * 100000, 400),
             ("/nowhere", b"{}", 404)]
    for path, raw, want in cases:
        status, body = http_server.request("POST", path, raw=raw)
        assert status == want and isinstance(body, dict) and body["error"]["code"] == want, (path, raw, body)
    status, body = http_server.request("GET", "/infill")
    assert status == 405 and body["error"]["code"] == 405
    status, body = http_server.request("POST", "/v1/completions", raw=b'{"prompt": "' + b"a" * (3 * 1024 * 1024) + b'"}')
    assert status == 413 and body["error"]["code"] == 413
    def chunks():                                    # no Content-Length: the limit still holds
        for _ in range(40):
            yield b" " * (100 * 1024)
    import urllib.request
    req = urllib.request.Request(http_server.url + "/v1/completions", data=chunks(), method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Transfer-Encoding": "chunked"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 413 and json.loads(err.value.read())["error"]["code"] == 413
    # odd but valid requests are answered, not crashed on
    for body in ({"prompt": ""}, {"prompt": "", "suffix": "", "max_tokens": 0}, {"prompt": "<|fim_prefix|><|endoftext|>"}):
        status, answer = http_server.request("POST", "/v1/completions", {**body, "max_tokens": body.get("max_tokens", 3)})
        assert status == 200 and isinstance(answer["choices"][0]["text"], str), (body, answer)
    assert http_server.health()["status"] == "ok" and http_server.proc.poll() is None


@pytest.mark.parametrize("stream", [True, False])
def test_a_closed_connection_cancels_its_decode(http_server, stream):
    before = http_server.health()["counters"]
    s = socket.create_connection(("127.0.0.1", http_server.port), timeout=30)
    body = json.dumps({"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 1000, "ignore_eos": True,
                       "stream": stream}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    if stream:
        got = b""
        while b"data: " not in got:                  # the decode is running: a chunk came
            got += s.recv(4096)
    else:                                            # nothing comes before the end: wait until it decodes
        t0 = time.monotonic()
        while http_server.health()["queue"]["active"] == 0 and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        time.sleep(0.1)
    s.close()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        h = http_server.health()
        if h["counters"]["decodes"] > before["decodes"] and h["queue"]["active"] == 0:
            break
        time.sleep(0.05)
    assert h["counters"]["cancelled"] == before["cancelled"] + 1, h
    assert h["counters"]["decodes"] == before["decodes"] + 1, h
    # the engine stopped well before the 1000 tokens it was asked for (ignore_eos: it would decode them all)
    assert h["counters"]["completion_tokens"] - before["completion_tokens"] < 500, h
    t0 = time.perf_counter()                                            # and the engine is free again
    assert http_server.request("POST", "/v1/completions", {"prompt": "x = ", "max_tokens": 2})[0] == 200
    assert time.perf_counter() - t0 < 10


def test_nothing_listens_beyond_loopback_by_default(http_server):
    port = http_server.port
    listening = []
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            listening.append(local.split(":")[0])
    assert listening == ["0100007F"]                                    # 127.0.0.1, nothing else
    for line in open("/proc/net/tcp6").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        assert not (state == "0A" and int(local.split(":")[1], 16) == port), line
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.254.254.254", 1))                            # no packet: just picks the outward address
        outward = probe.getsockname()[0]
    except OSError:
        outward = None
    finally:
        probe.close()
    if outward and not outward.startswith("127."):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outward, port), timeout=5).close()


def test_another_host_warns_and_a_generated_token_is_printed_once(http_model, tmp_path):
    import os
    import subprocess
    import sys
    env = {"DLLM_LSP_TOKEN": "", "DLLM_LSP_CONFIG_DIR": str(tmp_path / "config")}
    # an address that is not ours: the warning comes first, then the bind fails with one line
    proc = subprocess.run([sys.executable, "-m", "dllm_lsp.cli", "http", "--host", "203.0.113.7", "--port", "0",
                           "--model", http_model], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert proc.returncode == 1, proc.stderr
    assert "warning: listening on 203.0.113.7" in proc.stderr and "cannot listen on 203.0.113.7" in proc.stderr
    token_file = tmp_path / "config" / "http-token"
    token = token_file.read_text().strip()
    assert len(token) >= 32 and token in proc.stderr and (token_file.stat().st_mode & 0o777) == 0o600
    srv = HttpServer(["--model", http_model], env=env, wait_ready=False)
    try:
        assert token not in "".join(srv.lines) and str(token_file) in "".join(srv.lines)
        assert srv.request("GET", "/v1/models", token=token)[0] == 200
        assert srv.request("GET", "/v1/models", token=TOKEN)[0] == 401
    finally:
        srv.stop()


# ---- in-process: the bounded queue and the loading state ----------------------------------------

async def test_full_queue_is_429_and_loading_is_503(http_model):
    from aiohttp.test_utils import TestClient, TestServer

    from dllm_lsp.http.fim_engine import FimEngine
    from dllm_lsp.http.server import make_app
    from dllm_lsp.settings import Settings
    engine = FimEngine(Settings(model=http_model, threads=1), queue_limit=1)
    async with TestClient(TestServer(make_app(engine, "t"))) as c:
        auth = {"Authorization": "Bearer t"}
        r = await c.post("/v1/completions", json={"prompt": "x"}, headers=auth)      # not started: no model
        assert r.status == 503 and (await r.json())["error"]["code"] == 503 and "Retry-After" in r.headers
        assert (await c.get("/health", headers=auth)).status == 503
        await asyncio.wrap_future(engine.start().future)
        assert (await c.get("/health", headers=auth)).status == 200
        long = asyncio.ensure_future(c.post("/v1/completions", headers=auth, json={
            "prompt": PREFIX, "max_tokens": 1000, "ignore_eos": True}))
        while engine.active == 0:
            await asyncio.sleep(0.01)
        r = await c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}, headers=auth)
        assert r.status == 429 and (await r.json())["error"]["type"] == "rate_limit_error" and "Retry-After" in r.headers
        r = await c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "stream": True}, headers=auth)
        assert r.status == 429
        assert (await long).status == 200
        assert engine.counters.rejected == 2 and engine.counters.completed == 1
        r = await c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}, headers=auth)
        assert r.status == 200
    engine.close()
