"""Server settings: one defaulted, frozen dataclass; camelCase in, validated, bad values -> defaults.

Settings arrive from `initializationOptions` and `workspace/didChangeConfiguration`, either
flat (`{"model": ...}`) or under the section `dllm` (`{"dllm": {"model": ...}}`). Every key
is camelCase on the wire and snake_case here. `parse_settings` never raises: a value of the
wrong type or out of range keeps its default and yields one human-readable message (the
server shows these with `window/showMessage`); unknown keys are reported the same way.

`Settings()` is valid on its own; its defaults suit the default model (Qwen2.5-Coder-0.5B) on a
laptop CPU.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from engine.api import InfillRequest

SECTION = "dllm"
POLICIES = ("threshold", "quota", "entropy")
DTYPES = ("auto", "float32", "gguf", "fp16-weights", "bfloat16", "float16")
LOG_LEVELS = ("error", "warning", "info", "debug")


@dataclass(frozen=True)
class Settings:
    model: str = "auto"                  # "auto" (the 1.5B on a GPU or >= 8 cores and 8 GiB, else the 0.5B),
                                         # "default" (the pulled Qwen2.5-Coder-0.5B), "qwen2.5-coder-1.5b", "embedded"
                                         # (the self-trained 5M model), a .gguf file, a model folder, or an HF repo id
                                         # in the local cache
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    dtype: str = "auto"                  # auto | float32 | gguf | fp16-weights | bfloat16 | float16
    threads: int = 0                     # CPU threads for the engine; 0 = auto (all cores up to 2, else all but one)
    policy: str = "threshold"            # threshold | quota | entropy
    threshold: float = 0.9               # threshold policy: commit masks with top-1 probability >= this
    entropy_bound: float = 0.5           # entropy policy: summed entropy per step
    tokens_per_step: int = 1             # quota policy: tokens committed per forward pass
    block_size: Optional[int] = None     # None: the model's own block size
    max_new_tokens_line: int = 64        # masked span for a single-line completion (a long Python line is ~40)
    max_new_tokens_block: int = 64       # masked span for a block completion
    blank_line_min_tokens: int = 0       # on a blank line the suggestion has at least this many tokens
                                         # (0 = the model may suggest nothing there; 1 suits strong models:
                                         # with the embedded one a forced guess measured worse on HumanEval)
    prefix_tokens: int = 384             # context budget before the cursor (the embedded model trained on <= 384)
    suffix_tokens: int = 32              # context budget after the cursor: every key changes what follows the
                                         # prefix, so a pause recomputes it (128 -> 32: p50 at a pause -20 to -50%,
                                         # the same exact share and HumanEval pass@1; docs/benchmarks.md, "Typing")
    snippet_tokens: int = 128            # budget for snippets from other open documents (0 = none)
    repo_tokens: int = 0                 # budget for the repository context: imported definitions, recent chunks (0 = none; measured: docs/benchmarks.md)
    debounce_ms: int = 0                 # wait this long before decoding; a newer request in between wins
    enabled_languages: Dict[str, bool] = field(default_factory=lambda: {"*": True})
    streaming: bool = True               # send dllm/inlineCompletionUpdate while decoding
    drafting: bool = True                # AR models: verify draft tokens in the same pass (identical text,
                                         # fewer passes); false = one token per forward pass
    max_draft_tokens: int = 8            # drafts per pass (the block after the last committed token)
    draft_tree: bool = False             # verify lookup's drafts and a tree of the draft head's guesses in one
                                         # pass (more tokens a pass, more rows: on a CPU often no faster)
    drafter: str = "auto"                # trained drafter (head or mask slots): "auto" (the one shipped for the model,
                                         # if any: the draft head for the default model), "none", or a file from
                                         # `dllm-lsp train-drafter`; the text is the same either way
    warm_up: bool = True                 # prefill the context in the background on didOpen and when the cursor rests
    warm_up_delay_ms: int = 300          # "rests": this long after the last didChange / dllm/cursor
    suffix_reuse: bool = False           # after typing, reuse the unchanged suffix's cached keys/values shifted to
                                         # their new positions (llama.cpp's --cache-reuse): approximate, a different
                                         # model, off by default (measured: docs/benchmarks.md, "Suffix reuse")
    prepare_next: bool = True            # while a suggestion is shown, decode in the background the one that
                                         # follows its acceptance (Tab, Tab, Tab: the next is there at once)
    log_level: str = "warning"
    backend: Optional[Dict[str, Any]] = None   # None: the in-process engine; else a FIM server that decodes instead:
                                         # {"url", "api": openai | inception | llamacpp, "model", "apiKeyEnv",
                                         # "timeoutMs"} (http/client.py)

    def engine_threads(self) -> int:
        """CPU threads for torch: `threads`, or auto: every core on a machine of 1-2 cores, one
        core left free (the editor, the server's message loop) on larger ones. Measured on a
        2-core EPYC typing through the server (`bench typing`, 6 target lines): 2 threads answered
        at the pause after Enter in 1070 ms p50 and mid-line in 479, against 2229 and 1050 with
        one thread (the old auto, half the cores); a machine whose cores are busy with other work
        wants fewer (set `threads`)."""
        cores = os.cpu_count() or 2
        return self.threads or (cores if cores <= 2 else cores - 1)

    def infill_request(self, prefix: str, suffix: str = "", **fields: Any) -> InfillRequest:
        """The one mapping from settings to the engine's request: the decoding settings (policy,
        threshold, entropy bound, tokens per step, block size, drafting, drafts per pass, draft
        tree, suffix reuse) from here, everything else, and any override, from `fields` (InfillRequest's own
        names; `max_new_tokens` is required). A new decoding setting is added here only."""
        from_settings = dict(policy=self.policy, threshold=self.threshold, entropy_bound=self.entropy_bound,
                             tokens_per_step=self.tokens_per_step, block_size=self.block_size,
                             drafting=self.drafting, max_draft_tokens=self.max_draft_tokens,
                             draft_tree=self.draft_tree, suffix_reuse=self.suffix_reuse)
        return InfillRequest(prefix=prefix, suffix=suffix, **{**from_settings, **fields})

    def language_enabled(self, language_id: str) -> bool:
        langs = self.enabled_languages
        return bool(langs.get(language_id, langs.get("*", True)))

    def max_new_tokens(self, mode: str) -> int:
        return self.max_new_tokens_block if mode == "block" else self.max_new_tokens_line


def camel_case(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


# ---- validators: value -> checked value, or ValueError with the reason ------------------------

def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _choice(options: Tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value
    return check


def _device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return value


def _number(lo: float, hi: float, integer: bool = False) -> Callable[[Any], Any]:
    def check(value: Any):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
            raise ValueError(f"must be {'an integer' if integer else 'a number'} in [{lo:g}, {hi:g}]")
        if not lo <= value <= hi:
            raise ValueError(f"must be in [{lo:g}, {hi:g}]")
        return int(value) if integer else float(value)
    return check


def _optional_int(lo: int, hi: int) -> Callable[[Any], Optional[int]]:
    inner = _number(lo, hi, integer=True)
    return lambda value: None if value is None else inner(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _languages(value: Any) -> Dict[str, bool]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, bool) for k, v in value.items()):
        raise ValueError('must map language ids to true/false, e.g. {"*": true, "markdown": false}')
    return {"*": True, **value}


BACKEND_APIS = ("openai", "inception", "llamacpp")
BACKEND_KEYS = ("url", "api", "model", "apiKeyEnv", "timeoutMs")


def _backend(value: Any) -> Optional[Dict[str, Any]]:
    """null, or {"url": "http(s)://...", "api": ..., "model"?, "apiKeyEnv"?, "timeoutMs"?} with defaults filled in."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError('must be null or an object {"url": ..., "api": "openai" | "inception" | "llamacpp", ...}')
    unknown = sorted(set(value) - set(BACKEND_KEYS))
    if unknown:
        raise ValueError(f"has unknown keys {', '.join(unknown)} (known: {', '.join(BACKEND_KEYS)})")
    url = value.get("url")
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url.strip()):
        raise ValueError("needs a url such as http://127.0.0.1:8012")
    api = value.get("api", "openai")
    if api not in BACKEND_APIS:
        raise ValueError(f"api must be one of {', '.join(BACKEND_APIS)}")
    model, key_env = value.get("model", ""), value.get("apiKeyEnv", "")
    if not isinstance(model, str) or not isinstance(key_env, str):
        raise ValueError("model and apiKeyEnv must be strings")
    timeout = _number(100, 600000, integer=True)(value.get("timeoutMs", 10000))
    return {"url": url.strip().rstrip("/"), "api": api, "model": model, "apiKeyEnv": key_env, "timeoutMs": timeout}


VALIDATORS: Dict[str, Callable[[Any], Any]] = {
    "model": _str,
    "device": _device,
    "dtype": _choice(DTYPES),
    "threads": _number(0, 1024, integer=True),
    "policy": _choice(POLICIES),
    "threshold": _number(0.0, 1.0),
    "entropy_bound": _number(0.0, 100.0),
    "tokens_per_step": _number(1, 64, integer=True),
    "block_size": _optional_int(1, 256),
    "max_new_tokens_line": _number(1, 256, integer=True),
    "max_new_tokens_block": _number(1, 1024, integer=True),
    "blank_line_min_tokens": _number(0, 256, integer=True),
    "prefix_tokens": _number(16, 32768, integer=True),
    "suffix_tokens": _number(0, 32768, integer=True),
    "snippet_tokens": _number(0, 32768, integer=True),
    "repo_tokens": _number(0, 32768, integer=True),
    "debounce_ms": _number(0, 5000, integer=True),
    "enabled_languages": _languages,
    "streaming": _bool,
    "drafting": _bool,
    "max_draft_tokens": _number(0, 64, integer=True),
    "draft_tree": _bool,
    "drafter": _str,
    "warm_up": _bool,
    "prepare_next": _bool,
    "suffix_reuse": _bool,
    "warm_up_delay_ms": _number(0, 10000, integer=True),
    "log_level": _choice(LOG_LEVELS),
    "backend": _backend,
}
assert set(VALIDATORS) == {f.name for f in fields(Settings)}


def section_of(raw: Any) -> Dict[str, Any]:
    """The `dllm` section of a settings payload (or the payload itself when it is flat)."""
    if not isinstance(raw, dict):
        return {}
    inner = raw.get(SECTION)
    return dict(inner) if isinstance(inner, dict) else dict(raw)


def parse_settings(raw: Optional[dict], base: Optional[Settings] = None) -> Tuple[Settings, List[str]]:
    """camelCase dict -> (Settings, messages about values that were rejected and kept at default)."""
    messages: List[str] = []
    if raw is not None and not isinstance(raw, dict):
        return base or Settings(), [f"settings must be an object, not {type(raw).__name__}; using defaults"]
    defaults = Settings()
    changes: Dict[str, Any] = {}
    for key, value in section_of(raw).items():
        name = snake_case(key)
        check = VALIDATORS.get(name)
        if check is None:
            messages.append(f"unknown setting '{SECTION}.{key}' ignored")
            continue
        try:
            changes[name] = check(value)
        except ValueError as exc:
            changes[name] = getattr(defaults, name)
            messages.append(f"setting '{SECTION}.{camel_case(name)}' {exc}; got {value!r}, "
                            f"using the default {getattr(defaults, name)!r}")
    return replace(base or defaults, **changes), messages


def to_camel_dict(settings: Settings) -> Dict[str, Any]:
    return {camel_case(f.name): getattr(settings, f.name) for f in fields(settings)}
