"""The ecosystem's fill-in-the-middle wire formats, both ways, as pure functions (no I/O).

One neutral request, `FimQuery` (prefix, suffix, snippets, token budget, stop strings, stream,
...), and one neutral answer, `FimAnswer`, meet three wire shapes:

    api          path                  request                                   answer text at
    "openai"     /v1/completions       model prompt suffix max_tokens stop ...   choices[0].text
    "inception"  /v1/fim/completions   model prompt suffix max_tokens stop ...   choices[0].text
    "llamacpp"   /infill               input_prefix prompt input_suffix          content (+ stop, timings)
                                       input_extra n_predict t_max_predict_ms

Server side (`dllm-lsp http`, http/server.py): `parse_request(api, body)` -> FimQuery (a
`BadRequest` names the parameter and why: the handler answers 400), and `answer_body` /
`chunk_body` render the answer. Client side (the LSP's remote backend, http/client.py):
`request_body(api, query)` -> (path, body), `parse_answer` / `parse_chunk` read what comes back.
`parse_request(api, request_body(api, q)[1])` gives back q (tests/http/test_fim_api.py).

/v1/fim/completions also carries the text where Mistral-style FIM clients read it
(`choices[].message.content`, streamed `choices[].delta.content`), and a suffix of exactly
`<|endoftext|>` means no suffix (how Continue's inception provider sends an empty one).

Leniency follows the servers these shapes come from: unknown keys are ignored (llama.vscode
sends `samplers`, `cache_prompt`, `n_indent`, ...; OpenAI clients send `user`, `n`), but a
known key of the wrong type or out of range is an error. What we cannot honour is an error
too rather than a silent difference: `n` > 1, `best_of` > 1, `echo`, `logprobs`, token-id
prompts. `top_p` is validated and carried, and the engine samples without nucleus
truncation (greedy at temperature 0, which is what editors ask for).

Chat (`/v1/chat/completions`, what Cline and Kilo Code's OpenAI-compatible provider talk):
`parse_chat_request` checks OpenAI's chat body and renders its messages with the model's
ChatML template (`render_chatml`, Qwen's own: a default system message when none is given,
then `<|im_start|>assistant\n` open), giving a FimQuery with `raw_prompt` set: the engine
decodes that text as the whole prompt, no FIM tokens. `chat_answer_body` / `chat_chunk_body`
render `choices[0].message` / `choices[0].delta`. Only text content is taken; tools, images,
`n` > 1 and logprobs are refused (400) rather than silently ignored.

Streaming: server-sent events, one `data: {json}` per forward pass that committed text (a
delta of the committed text, which never retracts), OpenAI's and Inception's ending with
`data: [DONE]`, llama.cpp's with a last chunk that has `stop: true`. Our extension: a client
that sends the header `X-Dllm-Draft: 1` or the body key `"dllm": {"draft": true}` also gets
`"dllm": {"stable", "draft", "forwards"}` in each chunk (the whole committed text and the
current best guess for the whole span, the suggestion sharpening in place) and chunks for
passes that changed only the draft; other clients never see it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dllm_lsp.core import context
from dllm_lsp.http.fields import BadRequest, bool_field, draft_flag, get_field, integer_field, number_field, stop_field

APIS = ("openai", "inception", "llamacpp")
PATHS = {"openai": "/v1/completions", "inception": "/v1/fim/completions", "llamacpp": "/infill"}
DRAFT_HEADER = "X-Dllm-Draft"


@dataclass(frozen=True)
class FimQuery:
    prefix: str                                       # text before the hole
    suffix: str = ""                                  # text after it
    snippets: Tuple[Tuple[str, str], ...] = ()        # (filename, text) of other files, context only
    max_tokens: Optional[int] = None                  # None: the server's default; 0: warm the context only
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Tuple[str, ...] = ()                        # the answer ends before the first of these
    stream: bool = False
    deadline_ms: Optional[float] = None               # llama.cpp's t_max_predict_ms: once a newline is decoded,
                                                      # stop when this long has passed since the first token
    model: str = ""
    ignore_eos: bool = False                          # decode all max_tokens (benchmarks, tests)
    seed: Optional[int] = None
    draft: bool = False                               # our extension: stream the draft too
    include_usage: bool = False                       # OpenAI stream_options.include_usage
    raw_prompt: bool = False                          # chat: `prefix` is the whole rendered prompt, no suffix


@dataclass(frozen=True)
class FimAnswer:
    text: str
    finish_reason: str = "stop"                       # stop | length | cancelled | error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    forwards: int = 0
    prompt_ms: float = 0.0                            # until the first forward pass returned
    total_ms: float = 0.0
    stop_word: str = ""                               # the stop string that ended it, if one did


@dataclass(frozen=True)
class Chunk:
    """One streamed event as a client reads it."""
    text: str = ""                                    # new committed text (a delta)
    draft: Optional[str] = None                       # our extension: the whole current guess
    done: bool = False
    finish_reason: Optional[str] = None


# ---- server side: wire -> FimQuery ------------------------------------------------------------

def parse_request(api: str, body: Any, max_tokens_cap: int = 1024) -> FimQuery:
    """A decoded JSON body of `api`'s shape -> FimQuery; BadRequest says what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(body).__name__}")
    if api == "llamacpp":
        return _parse_llamacpp(body, max_tokens_cap)
    if api in ("openai", "inception"):
        return _parse_openai(body, max_tokens_cap)
    raise ValueError(f"unknown api {api!r}")


def _parse_openai(body: Dict[str, Any], cap: int) -> FimQuery:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise BadRequest("'prompt' must be a string (or an array of exactly one string; token ids "
                             "and batches are not supported)", "prompt")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' is required and must be a string", "prompt")
    for key, ok in (("n", 1), ("best_of", 1)):
        if integer_field(body, key, 1, 128, 1) != ok:
            raise BadRequest(f"'{key}' > 1 is not supported (one completion per request)", key)
    if bool_field(body, "echo"):
        raise BadRequest("'echo' is not supported", "echo")
    if get_field(body, "logprobs", (int, float), None) not in (None, 0):
        raise BadRequest("'logprobs' is not supported", "logprobs")
    options = get_field(body, "stream_options", dict, {})
    seed = integer_field(body, "seed", -2**63, 2**63 - 1, None)
    suffix = get_field(body, "suffix", str, "")
    if suffix == "<|endoftext|>":       # Continue's inception provider says "no suffix" this way
        suffix = ""
    return FimQuery(prefix=prompt, suffix=suffix,
                    max_tokens=integer_field(body, "max_tokens", 0, cap, None),
                    temperature=number_field(body, "temperature", 0.0, 2.0, 0.0),
                    top_p=number_field(body, "top_p", 0.0, 1.0, 1.0), stop=stop_field(body),
                    stream=bool_field(body, "stream"), model=get_field(body, "model", str, ""),
                    ignore_eos=bool_field(body, "ignore_eos"), seed=seed, draft=draft_flag(body),
                    include_usage=bool_field(options, "include_usage") if options else False)


def _parse_llamacpp(body: Dict[str, Any], cap: int) -> FimQuery:
    extra = get_field(body, "input_extra", list, [])
    snippets = []
    for i, item in enumerate(extra):
        if not isinstance(item, dict) or not isinstance(item.get("text", ""), str) \
                or not isinstance(item.get("filename", ""), str):
            raise BadRequest(f"'input_extra[{i}]' must be an object {{filename: string, text: string}}",
                             "input_extra")
        if item.get("text"):
            snippets.append((item.get("filename", "") or "", item["text"]))
    n_predict = integer_field(body, "n_predict", -1, 2**31 - 1, None)
    if n_predict is not None and (n_predict < 0 or n_predict > cap):
        n_predict = cap                                # llama.cpp: -1 = as many as the server allows
    deadline = number_field(body, "t_max_predict_ms", 0, 3.6e6, None)
    seed = integer_field(body, "seed", -2**63, 2**63 - 1, None)
    return FimQuery(prefix=get_field(body, "input_prefix", str, "") + get_field(body, "prompt", str, ""),
                    suffix=get_field(body, "input_suffix", str, ""), snippets=tuple(snippets),
                    max_tokens=n_predict, temperature=number_field(body, "temperature", 0.0, 2.0, 0.0),
                    top_p=number_field(body, "top_p", 0.0, 1.0, 1.0), stop=stop_field(body),
                    stream=bool_field(body, "stream"), deadline_ms=deadline or None,
                    model=get_field(body, "model", str, ""), ignore_eos=bool_field(body, "ignore_eos"),
                    seed=None if seed is None or seed < 0 else seed, draft=draft_flag(body))


# ---- server side: FimAnswer -> wire ------------------------------------------------------------

def usage(answer: FimAnswer) -> Dict[str, int]:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}


def timings(answer: FimAnswer) -> Dict[str, float]:
    """llama.cpp's `timings` object (what llama.vscode shows in its status line)."""
    predicted_ms = max(0.0, answer.total_ms - answer.prompt_ms)
    rate = lambda n, ms: round(n * 1000 / ms, 2) if ms > 0 else 0.0
    return {"prompt_n": answer.prompt_tokens, "prompt_ms": round(answer.prompt_ms, 3),
            "prompt_per_second": rate(answer.prompt_tokens, answer.prompt_ms),
            "predicted_n": answer.completion_tokens, "predicted_ms": round(predicted_ms, 3),
            "predicted_per_second": rate(answer.completion_tokens, predicted_ms)}


def answer_body(api: str, answer: FimAnswer, *, id: str, created: int, model: str) -> Dict[str, Any]:
    """The non-streamed response body."""
    if api == "llamacpp":
        return {"content": answer.text, "stop": True, "model": model, "tokens_predicted": answer.completion_tokens,
                "tokens_evaluated": answer.prompt_tokens, "stopped_eos": answer.finish_reason == "stop"
                and not answer.stop_word, "stopped_word": bool(answer.stop_word), "stopping_word": answer.stop_word,
                "stopped_limit": answer.finish_reason == "length", "truncated": False, "tokens_cached": 0,
                "timings": timings(answer)}
    choice = {"index": 0, "text": answer.text, "logprobs": None, "finish_reason": answer.finish_reason}
    if api == "inception":              # Mistral-style FIM clients read the text as a chat message
        choice["message"] = {"role": "assistant", "content": answer.text}
    return {"id": id, "object": "text_completion", "created": created, "model": model, "choices": [choice],
            "usage": usage(answer)}


def chunk_body(api: str, text: str, *, id: str, created: int, model: str, finish_reason: Optional[str] = None,
               answer: Optional[FimAnswer] = None, dllm: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One streamed event: `text` is the new committed text; the last one has finish_reason / answer."""
    if api == "llamacpp":
        body: Dict[str, Any] = {"content": text, "stop": answer is not None}
        if answer is not None:
            body.update({k: v for k, v in answer_body(api, answer, id=id, created=created, model=model).items()
                         if k not in ("content", "stop")})
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        if api == "inception":          # and, streamed, as a chat delta (Continue's base _streamFim)
            choice["delta"] = {"content": text}
        body = {"id": id, "object": "text_completion", "created": created, "model": model, "choices": [choice]}
    if dllm is not None:
        body["dllm"] = dllm
    return body


def usage_chunk(answer: FimAnswer, *, id: str, created: int, model: str, object: str = "text_completion"
                ) -> Dict[str, Any]:
    """OpenAI's extra last chunk when stream_options.include_usage is set: no choices, the usage."""
    return {"id": id, "object": object, "created": created, "model": model, "choices": [],
            "usage": usage(answer)}


def sse(body: Any) -> bytes:
    return b"data: " + json.dumps(body).encode("ascii") + b"\n\n"      # \u escapes: never an unencodable byte


SSE_DONE = b"data: [DONE]\n\n"


def error_body(status: int, message: str, param: Optional[str] = None) -> Dict[str, Any]:
    """OpenAI's error shape, which llama.cpp's server uses too."""
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
            503: "unavailable_error"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


# ---- client side: FimQuery -> wire, wire -> text ----------------------------------------------

def request_body(api: str, q: FimQuery) -> Tuple[str, Dict[str, Any]]:
    """(path, JSON body) asking `api` for `q`."""
    if api == "llamacpp":
        cut = q.prefix.rfind("\n") + 1                 # llama.vscode: the lines above, then the cursor's line
        body: Dict[str, Any] = {"input_prefix": q.prefix[:cut], "prompt": q.prefix[cut:], "input_suffix": q.suffix,
                                "input_extra": [{"filename": n, "text": t} for n, t in q.snippets],
                                "stream": q.stream, "temperature": q.temperature, "top_p": q.top_p,
                                "cache_prompt": True}
        if q.max_tokens is not None:
            body["n_predict"] = q.max_tokens
        if q.stop:
            body["stop"] = list(q.stop)
        if q.deadline_ms:
            body["t_max_predict_ms"] = q.deadline_ms
    elif api in ("openai", "inception"):
        prompt = q.prefix
        if q.snippets:                                 # no snippet field in these shapes: a comment header
            prompt = render_snippets(q.snippets) + prompt
        body = {"model": q.model, "prompt": prompt, "suffix": q.suffix, "stream": q.stream,
                "temperature": q.temperature, "top_p": q.top_p}
        if q.max_tokens is not None:
            body["max_tokens"] = q.max_tokens
        if q.stop:
            body["stop"] = list(q.stop)
        if q.stream and q.include_usage:
            body["stream_options"] = {"include_usage": True}
    else:
        raise ValueError(f"unknown api {api!r}")
    if q.seed is not None:
        body["seed"] = q.seed
    if q.ignore_eos:
        body["ignore_eos"] = True
    return PATHS[api], body


def parse_answer(api: str, body: Any) -> Tuple[str, str]:
    """A non-streamed response -> (text, finish_reason); ValueError when it is not that shape."""
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    if api == "llamacpp":
        if not isinstance(body.get("content"), str):
            raise ValueError("no 'content' string in the /infill response")
        return body["content"], "length" if body.get("stopped_limit") else "stop"
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) \
            or not isinstance(choices[0].get("text"), str):
        raise ValueError("no choices[0].text in the completion response")
    return choices[0]["text"], choices[0].get("finish_reason") or "stop"


def parse_chunk(api: str, data: str) -> Optional[Chunk]:
    """One SSE `data:` payload -> Chunk (None for events without text, e.g. a usage-only chunk)."""
    if data.strip() == "[DONE]":
        return Chunk(done=True)
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError("a streamed event must be a JSON object")
    if "error" in body and isinstance(body["error"], dict):
        raise ValueError(str(body["error"].get("message") or body["error"]))
    ext = body.get("dllm") if isinstance(body.get("dllm"), dict) else {}
    draft = ext.get("draft") if isinstance(ext.get("draft"), str) else None
    if api == "llamacpp":
        text = body.get("content") if isinstance(body.get("content"), str) else ""
        stop = bool(body.get("stop"))
        return Chunk(text=text, draft=draft, done=stop,
                     finish_reason=("length" if body.get("stopped_limit") else "stop") if stop else None)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return None if not draft else Chunk(draft=draft)
    choice = choices[0] if isinstance(choices[0], dict) else {}
    text = choice.get("text") if isinstance(choice.get("text"), str) else ""
    return Chunk(text=text, draft=draft, finish_reason=choice.get("finish_reason"))


# ---- snippets as a comment header --------------------------------------------------------------

_HEADER_LINE = re.compile(r"^(\S+) Compare this snippet from (.*):$")


def render_snippets(snippets: Sequence[Tuple[str, str]], comment: str = "#") -> str:
    """The header format of context.pick_snippets, for snippets that are already chosen."""
    return "".join(context.comment_block(name, text.strip("\n"), comment) for name, text in snippets)


def split_snippets(header: str) -> List[Tuple[str, str]]:
    """context.pick_snippets' header back into (name, text) pairs (inverse of render_snippets)."""
    out: List[Tuple[str, List[str]]] = []
    comment = ""
    for line in header.split("\n"):
        m = _HEADER_LINE.match(line)
        if m:
            comment = m.group(1)
            out.append((m.group(2), []))
        elif out and line.startswith(comment):
            body = line[len(comment):]
            out[-1][1].append(body[1:] if body.startswith(" ") else body)
    return [(name, "\n".join(lines).strip("\n")) for name, lines in out]
