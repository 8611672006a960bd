"""A request body's fields checked as the FIM and chat APIs define them: each wrong one raises one
BadRequest naming the field (the server answers 400 with it), never a traceback (pure)."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

MAX_STOP = 16                 # stop strings per request (OpenAI allows 4; llama.cpp any number)
MAX_STOP_CHARS = 256


class BadRequest(ValueError):
    """A request body we refuse; `param` names the offending key (None: the body itself)."""

    def __init__(self, message: str, param: Optional[str] = None):
        super().__init__(message)
        self.param = param


def get_field(body: Dict[str, Any], key: str, kinds, default=None, *, allow_none: bool = True):
    if key not in body or (body[key] is None and allow_none):
        return default
    value = body[key]
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise BadRequest(f"'{key}' must be {kind_name(kinds)}, not a boolean", key)
    if not isinstance(value, kinds):
        raise BadRequest(f"'{key}' must be {kind_name(kinds)}, not {type(value).__name__}", key)
    return value


def kind_name(kinds) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
             dict: "an object"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def number_field(body, key, lo, hi, default):
    value = get_field(body, key, (int, float), default)
    if value is default:
        return default
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadRequest(f"'{key}' must be in [{lo:g}, {hi:g}], got {value!r}", key)
    return float(value)


def integer_field(body, key, lo, hi, default):
    value = get_field(body, key, (int, float), default)
    if value is default:
        return default
    if not float(value).is_integer() or not lo <= value <= hi:
        raise BadRequest(f"'{key}' must be an integer in [{lo}, {hi}], got {value!r}", key)
    return int(value)


def stop_field(body, key="stop") -> Tuple[str, ...]:
    value = get_field(body, key, (str, list), None)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if len(items) > MAX_STOP or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in items):
        raise BadRequest(f"'{key}' must be a string or an array of at most {MAX_STOP} non-empty strings "
                         f"of at most {MAX_STOP_CHARS} characters", key)
    return tuple(dict.fromkeys(items))


def bool_field(body, key, default=False) -> bool:
    return bool(get_field(body, key, bool, default))


def draft_flag(body) -> bool:
    ext = get_field(body, "dllm", dict, {})
    return bool_field(ext, "draft") if ext else False
