"""Log lines a person can read: one line per record at the default level, tracebacks only with -v.

At the default level (`dllm-lsp` without -v) every record is written as exactly one line:
the first line of its message, a logged exception folded in as `(Type: message)` instead of
its traceback, at most MAX_CHARS characters, characters the stream cannot encode (a lone
surrogate from a client) escaped. With -v the standard format is used, tracebacks included.

While the server handles one incoming message, MESSAGE_NO holds that message's ordinal (1 for
the first framed message read); every record logged meanwhile, also from the handler's tasks
(asyncio copies the context into them), starts with `[msg N]`, so a log line can be matched
to the message that caused it (the fuzz benchmark counts lines per message this way).
"""
from __future__ import annotations

import contextvars
import logging
from typing import Optional

MAX_CHARS = 400
MESSAGE_NO: "contextvars.ContextVar[Optional[int]]" = contextvars.ContextVar("dllm_message_no", default=None)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _tagged(record: logging.LogRecord, text: str) -> str:
    no = getattr(record, "message_no", None)
    return text if no is None else f"[msg {no}] {text}"


class MessageTag(logging.Filter):
    """Stamps each record with the ordinal of the message being handled (see MESSAGE_NO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "message_no"):
            record.message_no = MESSAGE_NO.get()
        return True


def one_line(text: str, limit: int = MAX_CHARS) -> str:
    """The first non-empty line of `text`, cut to `limit` characters, encodable as UTF-8."""
    line = next((l for l in str(text).splitlines() if l.strip()), "")
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return line.encode("utf-8", "backslashreplace").decode("utf-8")


class OneLineFormatter(logging.Formatter):
    """Default-level formatter: one line per record, never a traceback."""

    def __init__(self):
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception as exc:              # a bad format string must not cost the line
            message = f"{record.msg!r} (unformattable: {exc})"
        message = one_line(message)
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and str(exc) not in message:
            message = one_line(f"{message} ({type(exc).__name__}: {one_line(str(exc), 200)})")
        record.asctime = self.formatTime(record)
        return f"{record.asctime} {record.levelname} {record.name}: {_tagged(record, message)}"


class VerboseFormatter(logging.Formatter):
    """-v: the standard format, tracebacks included, with the message tag."""

    def __init__(self):
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        no = getattr(record, "message_no", None)
        if no is None:
            return text
        head, sep, rest = text.partition(": ")
        return f"{head}{sep}[msg {no}] {rest}"


def configure_handler(handler: logging.Handler, verbose: int) -> logging.Handler:
    handler.setFormatter(OneLineFormatter() if verbose == 0 else VerboseFormatter())
    handler.addFilter(MessageTag())
    return handler
