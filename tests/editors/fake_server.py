"""A stand-in for `dllm-lsp --stdio` that speaks the editor-facing contracts, for editor tests.

Plain Python over stdio (JSON-RPC with Content-Length framing), no model: a
`textDocument/inlineCompletion` request is answered by streaming FAKE_STREAM in FAKE_STEPS growing
`dllm/inlineCompletionUpdate` notifications (FAKE_DELAY_MS apart), then the response FAKE_FINAL
(defaults to FAKE_STREAM), followed for an invoked request (triggerKind 1) by the items
FAKE_ALTERNATIVES ("|"-separated). `$/cancelRequest` stops a stream with RequestCancelled. Every client
message whose method is `initialize`, `textDocument/inlineCompletion`, `workspace/...` or `dllm/...`
is appended to the JSON-lines file FAKE_LOG, so tests can check what the plugin sent.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time

STREAM = os.environ.get("FAKE_STREAM", "return a + b")
FINAL = os.environ.get("FAKE_FINAL", STREAM)
STEPS = int(os.environ.get("FAKE_STEPS", "3"))
DELAY = float(os.environ.get("FAKE_DELAY_MS", "60")) / 1000
LOG = os.environ.get("FAKE_LOG")
ALTERNATIVES = [t for t in os.environ.get("FAKE_ALTERNATIVES", "").split("|") if t]   # added to an invoked request's items

_out_lock = threading.Lock()
_cancelled: set = set()


def send(message: dict) -> None:
    body = json.dumps({"jsonrpc": "2.0", **message}).encode()
    with _out_lock:
        sys.stdout.buffer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        sys.stdout.buffer.flush()


def read_message():
    length = None
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return None
        line = line.strip()
        if not line:
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return json.loads(sys.stdin.buffer.read(length))


def log(message: dict) -> None:
    if LOG:
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({"method": message.get("method"), "params": message.get("params")}) + "\n")


def stream(request_id, params: dict) -> None:
    doc = params["textDocument"]["uri"]
    position = params["position"]
    for step in range(1, STEPS + 1):
        time.sleep(DELAY)
        if request_id in _cancelled:
            send({"id": request_id, "error": {"code": -32800, "message": "cancelled"}})
            return
        stable = STREAM[: round(len(STREAM) * step / STEPS)]
        send({"method": "dllm/inlineCompletionUpdate",
              "params": {"uri": doc, "version": VERSIONS.get(doc), "position": position,
                         "stable": stable, "draft": STREAM, "done": step == STEPS}})
    time.sleep(DELAY)
    texts = ([FINAL] if FINAL else []) + (ALTERNATIVES if params.get("context", {}).get("triggerKind") == 1 else [])
    items = [{"insertText": t, "range": {"start": position, "end": position}} for t in texts]
    send({"id": request_id, "result": {"items": items}})


VERSIONS: dict = {}


def main() -> int:
    while True:
        message = read_message()
        if message is None:
            return 0
        method = message.get("method", "")
        if method == "initialize" or method.startswith(("textDocument/inline", "workspace/", "dllm/")):
            log(message)
        if method == "initialize":
            send({"id": message["id"], "result": {
                "capabilities": {"textDocumentSync": 1, "inlineCompletionProvider": {}},
                "serverInfo": {"name": "fake-dllm-lsp"}}})
        elif method == "initialized":
            send({"method": "dllm/status", "params": {"state": "ready", "message": "", "model": "fake",
                                                       "lastLatencyMs": 12.4}})
        elif method in ("textDocument/didOpen", "textDocument/didChange"):
            doc = message["params"]["textDocument"]
            VERSIONS[doc["uri"]] = doc.get("version", 0)
        elif method == "textDocument/inlineCompletion":
            threading.Thread(target=stream, args=(message["id"], message["params"]), daemon=True).start()
        elif method == "$/cancelRequest":
            _cancelled.add(message["params"]["id"])
        elif method == "shutdown":
            send({"id": message["id"], "result": None})
        elif method == "exit":
            return 0
        elif "id" in message:
            send({"id": message["id"], "error": {"code": -32601, "message": f"unhandled {method}"}})


if __name__ == "__main__":
    sys.exit(main())
