"""The chat API on the wire (`/v1/chat/completions`, pure): messages checked and rendered as
ChatML, the prompt Qwen's instruct models were trained on, and the answers and chunks out."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from dllm_lsp.http.fields import BadRequest, bool_field, get_field, integer_field, number_field, stop_field
from dllm_lsp.http.wire import FimAnswer, FimQuery, usage

CHAT_ROLES = ("system", "developer", "user", "assistant")
DEFAULT_SYSTEM = "You are a helpful assistant."
MAX_MESSAGES = 4096


def chat_content(value: Any, where: str) -> str:
    """A message's content (a string, or an array of {type: "text", text} parts) -> text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        out = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise BadRequest(f"'{where}.content[{i}]' must be a text part {{type: \"text\", text: string}} "
                                 f"(got {kind!r}; only text is supported)", "messages")
            out.append(part["text"])
        return "".join(out)
    raise BadRequest(f"'{where}.content' must be a string or an array of text parts", "messages")


def parse_messages(value: Any) -> Tuple[Tuple[str, str], ...]:
    """OpenAI's `messages` -> ((role, text), ...); "developer" is a system message. BadRequest
    for anything else: no array, an unknown role (tool results: tools are not supported), images."""
    if not isinstance(value, list) or not value:
        raise BadRequest("'messages' is required: a non-empty array of {role, content}", "messages")
    if len(value) > MAX_MESSAGES:
        raise BadRequest(f"'messages' holds more than {MAX_MESSAGES} messages", "messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise BadRequest(f"'{where}' must be an object {{role, content}}", "messages")
        role = m.get("role")
        if role not in CHAT_ROLES:
            raise BadRequest(f"'{where}.role' must be one of {', '.join(CHAT_ROLES)} (got {role!r}; tool "
                             "messages are not supported)", "messages")
        if m.get("tool_calls") or m.get("function_call"):
            raise BadRequest(f"'{where}' has tool calls: tools are not supported", "messages")
        content = m.get("content")
        if content is None and role == "assistant":
            content = ""
        out.append(("system" if role == "developer" else role, chat_content(content, where)))
    return tuple(out)


def render_chatml(messages: Sequence[Tuple[str, str]], default_system: str = DEFAULT_SYSTEM) -> str:
    """Qwen's ChatML template: `<|im_start|>{role}\n{content}<|im_end|>\n` per message, a
    default system message first when the first message is not one, and the assistant's turn
    left open (`<|im_start|>assistant\n`), which the model ends with <|im_end|>."""
    turns = list(messages)
    if default_system and (not turns or turns[0][0] != "system"):
        turns.insert(0, ("system", default_system))
    return "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns) + "<|im_start|>assistant\n"


def parse_chat_request(body: Any, max_tokens_cap: int = 1024) -> FimQuery:
    """OpenAI's chat completions body -> FimQuery with the rendered prompt (`raw_prompt`).
    Without max_tokens / max_completion_tokens the answer may take the whole cap (it ends at
    the model's <|im_end|>). Temperature defaults to 0 (greedy), as for the other shapes."""
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(body).__name__}")
    messages = parse_messages(body.get("messages"))
    if integer_field(body, "n", 1, 128, 1) != 1:
        raise BadRequest("'n' > 1 is not supported (one completion per request)", "n")
    for key in ("tools", "functions"):
        if get_field(body, key, list, []):
            raise BadRequest(f"'{key}' is not supported: this server decodes text only (no tool calls)", key)
    choice = body.get("tool_choice", body.get("function_call"))
    if choice not in (None, "none", "auto"):
        raise BadRequest("'tool_choice' is not supported: this server decodes text only (no tool calls)",
                         "tool_choice")
    if bool_field(body, "logprobs") or get_field(body, "top_logprobs", (int, float), None) not in (None, 0):
        raise BadRequest("'logprobs' is not supported", "logprobs")
    fmt = get_field(body, "response_format", dict, {})
    if fmt and fmt.get("type", "text") != "text":
        raise BadRequest("'response_format' other than {type: \"text\"} is not supported", "response_format")
    if integer_field(body, "max_tokens", 0, max_tokens_cap, None) == 0 or \
            integer_field(body, "max_completion_tokens", 0, max_tokens_cap, None) == 0:
        raise BadRequest("'max_tokens' must be at least 1", "max_tokens")
    n = integer_field(body, "max_completion_tokens", 1, max_tokens_cap, None)
    if n is None:
        n = integer_field(body, "max_tokens", 1, max_tokens_cap, max_tokens_cap)
    options = get_field(body, "stream_options", dict, {})
    return FimQuery(prefix=render_chatml(messages), max_tokens=n,
                    temperature=number_field(body, "temperature", 0.0, 2.0, 0.0),
                    top_p=number_field(body, "top_p", 0.0, 1.0, 1.0), stop=stop_field(body),
                    stream=bool_field(body, "stream"), model=get_field(body, "model", str, ""),
                    ignore_eos=bool_field(body, "ignore_eos"), seed=integer_field(body, "seed", -2**63, 2**63 - 1, None),
                    include_usage=bool_field(options, "include_usage") if options else False, raw_prompt=True)


def chat_answer_body(answer: FimAnswer, *, id: str, created: int, model: str) -> Dict[str, Any]:
    """The non-streamed chat completion: the text as the assistant's message."""
    return {"id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text}, "logprobs": None,
                         "finish_reason": answer.finish_reason}], "usage": usage(answer)}


def chat_chunk_body(delta: Dict[str, Any], *, id: str, created: int, model: str,
                    finish_reason: Optional[str] = None) -> Dict[str, Any]:
    """One streamed chat event: `delta` is {"role": "assistant"} first, then {"content": text},
    and {} with the finish_reason last."""
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
