"""/v1/chat/completions: the ChatML rendering as pure functions, and the openai package's
`chat.completions.create` against `dllm-lsp http` on the tiny causal GGUF model (what Cline and
Kilo Code's OpenAI-compatible provider send), compared with decoding the rendered prompt in
this process with raw_prompt, so a rendering or mapping error shows as a different text.
"""
import openai
import pytest

from http_helpers import TOKEN, HttpServer
import dllm_lsp.http.wire as fim_api
import dllm_lsp.http.chat as chat
from dllm_lsp.http.chat import parse_chat_request, parse_messages, render_chatml
from dllm_lsp.http.fields import BadRequest
from engine import InfillRequest

MESSAGES = [{"role": "system", "content": "You write Python."},
            {"role": "user", "content": [{"type": "text", "text": "Write add(a, b)"}, {"type": "text", "text": "."}]}]
RENDERED = ("<|im_start|>system\nYou write Python.<|im_end|>\n<|im_start|>user\nWrite add(a, b).<|im_end|>\n"
            "<|im_start|>assistant\n")


# ---- pure -------------------------------------------------------------------------------------

def test_chatml_rendering_follows_qwens_template():
    assert render_chatml(parse_messages(MESSAGES)) == RENDERED
    assert render_chatml([("user", "hi")]) == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                                               "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    turns = parse_messages([{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "a"},
                            {"role": "assistant", "content": None}, {"role": "user", "content": "b", "name": "x"}])
    assert turns == (("system", "Be brief."), ("user", "a"), ("assistant", ""), ("user", "b"))
    assert render_chatml(turns).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\na")


def test_chat_body_maps_what_clients_send():
    q = parse_chat_request({"model": "default", "messages": MESSAGES, "temperature": 0, "stream": True,
                            "stream_options": {"include_usage": True}, "max_tokens": 20, "stop": ["\n\n"],
                            "tools": [], "tool_choice": "none", "user": "u", "presence_penalty": 0.5})
    assert (q.prefix, q.raw_prompt, q.max_tokens, q.stop, q.stream, q.include_usage, q.suffix) == \
        (RENDERED, True, 20, ("\n\n",), True, True, "")
    assert parse_chat_request({"messages": MESSAGES, "max_completion_tokens": 7, "max_tokens": 30}).max_tokens == 7
    assert parse_chat_request({"messages": MESSAGES}, max_tokens_cap=500).max_tokens == 500   # until <|im_end|>


@pytest.mark.parametrize("body, param", [
    ({}, "messages"), ({"messages": "hi"}, "messages"), ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "1"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]}, "messages"),
    ({"messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"messages": MESSAGES, "tool_choice": "required"}, "tool_choice"),
    ({"messages": MESSAGES, "n": 2}, "n"), ({"messages": MESSAGES, "logprobs": True}, "logprobs"),
    ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"), ({"messages": MESSAGES, "max_tokens": 5000}, "max_tokens"),
    ({"messages": MESSAGES, "temperature": "hot"}, "temperature"),
    ({"messages": MESSAGES, "response_format": {"type": "json_object"}}, "response_format"),
])
def test_chat_body_refuses_what_cannot_be_honoured(body, param):
    with pytest.raises(BadRequest) as exc:
        parse_chat_request(body)
    assert exc.value.param == param


def test_chat_answer_and_chunk_shapes():
    meta = {"id": "chatcmpl-1", "created": 1, "model": "m"}
    body = chat.chat_answer_body(fim_api.FimAnswer("x = 1", "stop", 5, 3), **meta)
    assert body["object"] == "chat.completion" and body["choices"][0]["message"] == {"role": "assistant",
                                                                                    "content": "x = 1"}
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    chunk = chat.chat_chunk_body({"content": "x"}, **meta)
    assert chunk["object"] == "chat.completion.chunk" and chunk["choices"][0]["delta"] == {"content": "x"}


# ---- against the server -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def chat_server(tiny_gguf_qwen2):
    srv = HttpServer(["--model", str(tiny_gguf_qwen2), "--threads", "1", "--dtype", "float32"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def chat_local(tiny_gguf_qwen2):
    from engine import Engine
    return Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def chat_client(chat_server):
    return openai.OpenAI(base_url=chat_server.url + "/v1", api_key=TOKEN, max_retries=0, timeout=60)


def local_chat(engine, n, ignore_eos):
    return engine.infill(InfillRequest(RENDERED, max_new_tokens=n, raw_prompt=True, stop_at_eos=not ignore_eos))


@pytest.mark.parametrize("ignore_eos", [True, False])
def test_openai_chat_completion_is_the_raw_prompts_decode(chat_client, chat_local, ignore_eos):
    want = local_chat(chat_local, 12, ignore_eos)
    assert want.text or not ignore_eos
    r = chat_client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=12, temperature=0,
                                            extra_body={"ignore_eos": True} if ignore_eos else None)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want.text
    assert r.choices[0].finish_reason == ("length" if want.finish_reason == "length" else "stop")
    assert r.usage.completion_tokens == want.new_tokens
    assert r.usage.prompt_tokens == len(chat_local.tokenizer.encode(RENDERED))


def test_openai_chat_streaming_role_first_then_content_then_finish(chat_client, chat_local):
    want = local_chat(chat_local, 12, True)
    chunks = list(chat_client.chat.completions.create(
        model="default", messages=MESSAGES, max_tokens=12, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == want.text
    assert sum(1 for c in with_choices if c.choices[0].delta.content) >= 2          # it streamed
    assert [c.choices[0].finish_reason for c in with_choices][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == want.new_tokens == 12


def test_chat_needs_the_token_and_good_messages(chat_server, chat_client):
    bad = openai.OpenAI(base_url=chat_server.url + "/v1", api_key="wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="default", messages=MESSAGES, max_tokens=2)
    with pytest.raises(openai.BadRequestError) as exc:
        chat_client.chat.completions.create(model="default", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}], max_tokens=2)
    assert exc.value.body["param"] == "messages" and "text" in exc.value.body["message"]
    status, body = chat_server.request("POST", "/v1/chat/completions", {"model": "m", "messages": "hi"})
    assert status == 400 and body["error"]["param"] == "messages"
    status, body = chat_server.request("POST", "/v1/chat/completions", raw=b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert chat_server.health()["status"] == "ok"                                  # and it serves on
    assert chat_client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=2).choices


def test_the_block_diffusion_model_refuses_chat_clearly(http_server):
    status, body = http_server.request("POST", "/v1/chat/completions", {"model": "m", "messages": MESSAGES})
    assert status == 400 and "causal" in body["error"]["message"] and body["error"]["param"] == "model"
