"""The message loop under the server: LSP framing in, one `receive(number, body)` per message out.

pygls's own loop (pygls.io_.run_async) decodes each body inside a try that logs a traceback
and then reports the error a second time; a body that is not UTF-8, not JSON or nested too
deeply costs dozens of log lines. This loop only frames: it reads the headers, takes the
Content-Length (other headers are ignored), reads the body and hands it to the protocol's
`receive`, which decodes, answers and logs one line per rejected message (lsp/server.py). A body
larger than MAX_BODY is read and dropped (the framing stays in step) and logged as one line.
The loop ends at end of input or when `stop_event` is set; it never raises for a bad message.
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Any, Optional

log = logging.getLogger(__name__)

CONTENT_LENGTH = re.compile(rb"^Content-Length:[ \t]*(\d+)[ \t]*\r?\n?$", re.IGNORECASE)
MAX_BODY = 64 << 20           # 64 MiB: a document larger than this is not edited by a person
DISCARD_CHUNK = 1 << 20


async def _read_exactly(reader, n: int) -> Optional[bytes]:
    """n bytes, or None at end of input (StdinAsyncReader returns short reads, StreamReader raises)."""
    import asyncio
    try:
        data = await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        return None
    if n and len(data) < n:
        more = data
        while len(more) < n:                 # a pipe may deliver the body in pieces
            chunk = await reader.readexactly(n - len(more))
            if not chunk:
                return None
            more += chunk
        data = more
    return data


async def run_async(stop_event: threading.Event, reader, protocol: Any, logger=None, error_handler=None) -> None:
    """Read framed messages until end of input; `protocol.receive(number, body | None, size)` each.

    The signature matches pygls.io_.run_async (logger and error_handler are unused)."""
    content_length: Optional[int] = None
    number = 0
    while not stop_event.is_set():
        header = await reader.readline()
        if not header:
            break
        match = CONTENT_LENGTH.match(header)
        if match:
            content_length = int(match.group(1))
            continue
        if header.strip():
            continue                          # Content-Type or another header: ignored
        if content_length is None:
            continue                          # a blank line outside a message
        size, content_length = content_length, None
        number += 1
        if size > MAX_BODY:
            left = size
            while left:
                chunk = await _read_exactly(reader, min(left, DISCARD_CHUNK))
                if chunk is None:
                    return
                left -= len(chunk)
            protocol.receive(number, None, size)
            continue
        body = await _read_exactly(reader, size)
        if body is None:
            break
        protocol.receive(number, body, size)


def prune_deep(text: str, max_depth: int = 64) -> str:
    """`text` (JSON) with every array or object nested deeper than `max_depth` replaced by null.

    Python's json raises RecursionError on deep nesting; the pruned text still parses, so a
    request nested too deeply can be answered with an error under its own id."""
    out, depth, i, n = [], 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':                                  # copy a string whole
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
            continue
        if ch in "[{":
            if depth >= max_depth:                    # skip this value up to its matching bracket
                level, j = 0, i
                while j < n:
                    c = text[j]
                    if c == '"':
                        j += 1
                        while j < n and text[j] != '"':
                            j += 2 if text[j] == "\\" else 1
                    elif c in "[{":
                        level += 1
                    elif c in "]}":
                        level -= 1
                        if level == 0:
                            break
                    j += 1
                out.append("null")
                i = j + 1
                continue
            depth += 1
        elif ch in "]}":
            depth -= 1
        out.append(ch)
        i += 1
    return "".join(out)
