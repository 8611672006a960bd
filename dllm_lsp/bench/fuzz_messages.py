"""`bench fuzz`'s traffic (pure, seeded): valid and broken LSP messages, each framed as it goes on
the wire and paired with what the server must do with it (answer with a given error, log one
line, or neither); a probe after each batch checks that the server still answers."""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

WORDS = ["def", "return", "x", "self", "(", ")", ":", "\n", "    ", "if", "for", "in", "=", "+", "1", "'s'",
         "é", "🎉", "\t", "\r\n", "import os", "class A:", "#"]
UNIT_METHODS = ["textDocument/inlineCompletion", "textDocument/completion", "textDocument/didOpen",
                "textDocument/didChange", "textDocument/didClose", "dllm/infill", "dllm/cursor", "dllm/metrics",
                "dllm/didShowCompletion", "dllm/didAcceptCompletion", "$/cancelRequest", "textDocument/hover",
                "workspace/executeCommand", "textDocument/didSave"]


def lsp_lines(text: str) -> List[str]:
    """The lines of `text` as LSP counts them: "\r\n", "\r" and "\n" each end one."""
    return re.split(r"\r\n|\r|\n", text)


def frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def dumps(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")          # ensure_ascii: lone surrogates travel as \ud800


@dataclass
class Out:
    body: bytes
    expect: str                       # ok | reject | maybe
    kind: str
    answer_id: Optional[object] = None   # a request id the server must answer
    probe: bool = False               # must be answered with a result, not an error


class Fuzzer:
    """Seeded messages; keeps a model of the open documents so valid traffic stays valid."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.docs: Dict[str, Tuple[int, str]] = {}          # uri -> (version, text)
        self.next_id = 0
        self.recent_ids: List[str] = []
        self.cancelled: set = set()

    # ---- helpers ---------------------------------------------------------------------------
    def new_id(self) -> str:
        self.next_id += 1
        rid = f"f{self.next_id}"
        self.recent_ids = (self.recent_ids + [rid])[-20:]
        return rid

    def text(self, n: int = 12) -> str:
        return "".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(0, n)))

    def uri(self) -> str:
        return f"file:///fuzz/doc{self.rng.randint(0, 5)}.py"

    def request(self, method: str, params, expect="ok", kind="valid", probe=False) -> Out:
        rid = self.new_id()
        return Out(dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}), expect, kind, rid, probe)

    def notify(self, method: str, params, expect="ok", kind="valid") -> Out:
        return Out(dumps({"jsonrpc": "2.0", "method": method, "params": params}), expect, kind)

    def position_in(self, text: str) -> dict:
        lines = lsp_lines(text)
        line = self.rng.randrange(len(lines))
        row = lines[line]
        # utf-16 units (the default encoding): code points outside the BMP count 2
        units = [0]
        for ch in row:
            units.append(units[-1] + (2 if ord(ch) >= 0x10000 else 1))
        return {"line": line, "character": self.rng.choice(units)}

    def open_uri(self) -> Optional[str]:
        return self.rng.choice(sorted(self.docs)) if self.docs else None

    # ---- valid traffic -----------------------------------------------------------------------
    def valid(self) -> Out:
        r = self.rng.random()
        uri = self.open_uri()
        if uri is None or r < 0.12:
            uri = self.uri()
            text = self.text(30)
            version = self.docs.get(uri, (0, ""))[0] + 1
            self.docs[uri] = (version, text)
            return self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                                          "version": version, "text": text}})
        version, text = self.docs[uri]
        if r < 0.45:
            new = self.text(4)
            if self.rng.random() < 0.5:          # insert at the start: always in range
                text2, change = new + text, {"range": {"start": {"line": 0, "character": 0},
                                                       "end": {"line": 0, "character": 0}}, "text": new}
            else:
                text2, change = new + text[: self.rng.randint(0, 200)], None
                change = {"text": text2}
            if len(text2) > 4000:
                text2, change = text2[:100], {"text": text2[:100]}
            self.docs[uri] = (version + 1, text2)
            return self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version + 1},
                                                          "contentChanges": [change]})
        if r < 0.5:
            del self.docs[uri]
            return self.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        if r < 0.62:
            return self.request("textDocument/inlineCompletion", {
                "textDocument": {"uri": uri}, "position": self.position_in(text), "context": {"triggerKind": 2}},
                probe=True)
        if r < 0.66:
            return self.request("textDocument/completion", {"textDocument": {"uri": uri},
                                                            "position": self.position_in(text)}, probe=True)
        if r < 0.78:
            return self.notify("dllm/cursor", {"uri": uri, "position": self.position_in(text)})
        if r < 0.86:
            return self.request("dllm/metrics", {}, probe=True)
        if r < 0.9:
            return self.notify("dllm/didShowCompletion", {"uri": uri, "position": self.position_in(text),
                                                          "text": self.text(3)})
        if r < 0.94 and self.recent_ids:
            rid = self.rng.choice(self.recent_ids)
            self.cancelled.add(rid)              # answered with a result or RequestCancelled: both fine
            return self.notify("$/cancelRequest", {"id": rid}, expect="maybe")
        return self.request("dllm/infill", {"prefix": self.text(6), "suffix": self.text(3),
                                            "options": {"maxNewTokens": self.rng.randint(1, 4)}}, probe=True)

    # ---- broken traffic ----------------------------------------------------------------------
    def wrong_value(self):
        return self.rng.choice([None, True, -1, 2 ** 31, 2 ** 64, 1.5, "x", "", [], [1, "a"], {}, {"a": {"b": []}},
                                "\ud800", float("1e308")])

    def broken(self) -> Out:
        rng = self.rng
        kind = rng.choice(["shape", "shape", "range", "reversed", "surrogate", "huge", "nested", "unopened",
                           "unknown", "cancel", "nonjson", "nonutf8", "notrpc", "badid", "response", "type"])
        uri = self.open_uri()
        text = self.docs[uri][1] if uri else ""
        if kind == "shape":                  # a known method, params of the wrong shape
            method = rng.choice(UNIT_METHODS[:6])
            params = rng.choice([[1, 2], "params", 7, None, {"textDocument": self.wrong_value()},
                                 {"textDocument": {"uri": self.wrong_value()}, "position": {"line": 0, "character": 0}},
                                 {"textDocument": {"uri": uri or self.uri()}, "position": self.wrong_value()}])
            if method in ("textDocument/didOpen", "textDocument/didChange", "textDocument/didClose"):
                self.docs.pop(uri, None)          # the server may have taken part of it: reopen before use
                return self.notify(method, params, "maybe", kind)
            return self.request(method, params, "reject", kind)
        if kind == "type":                   # one field of a valid request made the wrong type
            params = {"textDocument": {"uri": uri or self.uri()}, "position": {"line": 0, "character": 0},
                      "context": {"triggerKind": 1}}
            field = rng.choice(["line", "character", "triggerKind"])
            if field == "triggerKind":
                params["context"]["triggerKind"] = rng.choice(["auto", 99, None, [1]])
                expect = "reject"
            else:
                value = rng.choice(["0", -1, 2 ** 40, None, 0.5, [0]])
                params["position"][field] = value
                # lsprotocol's converter takes "0" and 0.5 as 0 (lenient, harmless): no rejection then
                expect = "maybe" if value in ("0", 0.5) else "reject"
            return self.request("textDocument/inlineCompletion", params, expect, kind)
        if kind == "range":                  # positions past the end
            pos = {"line": rng.choice([10 ** 6, len(lsp_lines(text)) + 1, 2 ** 31 - 1]),
                   "character": rng.choice([0, 10 ** 6, 2 ** 31 - 1])}
            if uri and rng.random() < 0.5:
                version = self.docs.pop(uri)[0]    # how the server clamps it is its business: reopen later
                return self.notify("textDocument/didChange", {
                    "textDocument": {"uri": uri, "version": version},
                    "contentChanges": [{"range": {"start": pos, "end": pos}, "text": "x"}]}, "maybe", kind)
            # with no document the generator knows, a pool uri might be open on the server with more
            # lines than "" has: use one that never is
            target = uri or f"file:///fuzz/never-opened-{rng.randint(0, 999)}.py"
            return self.request("textDocument/inlineCompletion", {
                "textDocument": {"uri": target}, "position": pos, "context": {"triggerKind": 1}}, "reject", kind)
        if kind == "reversed" and uri:       # a range whose end comes before its start
            version = self.docs[uri][0]
            change = {"range": {"start": {"line": 3, "character": 5}, "end": {"line": 0, "character": 1}},
                      "text": "y"}
            del self.docs[uri]               # the server's copy is now unknown to us: reopen later
            return self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                          "contentChanges": [change]}, "maybe", kind)
        if kind == "surrogate":              # JSON allows "\ud800"; UTF-8 cannot hold it
            u = self.uri()
            t = "x = '\ud800'\ny = \udfff" + self.text(3)
            version = self.docs.get(u, (0, ""))[0] + 1
            self.docs[u] = (version, t)
            if rng.random() < 0.5:
                return self.notify("textDocument/didOpen", {"textDocument": {"uri": u, "languageId": "python",
                                                                              "version": version, "text": t}})
            del self.docs[u]
            return self.request("dllm/infill", {"prefix": "a\ud800b", "suffix": "\udc00"}, "ok", kind, probe=True)
        if kind == "huge":
            choice = rng.randrange(3)
            if choice == 0:                  # a 1 MB method name
                return self.request("x" * (1 << 20), {}, "reject", kind)
            if choice == 1:                  # a long array as params of a custom method
                return self.request("dllm/infill", {"prefix": list(range(100000))}, "reject", kind)
            u = self.uri()                   # a 2 MB document, opened then closed
            self.docs.pop(u, None)
            return self.notify("textDocument/didOpen", {"textDocument": {"uri": u, "languageId": "python",
                                                                          "version": 1, "text": "x = 1\n" * 350000}},
                               "maybe", kind)
        if kind == "nested":
            depth = rng.choice([100, 1000, 10000, 200000])
            inner = "[" * depth + "]" * depth
            rid = self.new_id()
            method = rng.choice(["dllm/infill", "dllm/metrics", "textDocument/inlineCompletion", "dllm/cursor"])
            body = ('{"jsonrpc": "2.0", "id": "%s", "method": "%s", "params": {"prefix": %s}}'
                    % (rid, method, inner)).encode()
            # pygls' converter may take it (metrics ignores params) or not; either way: answered
            return Out(body, "maybe", kind, answer_id=rid)
        if kind == "unopened":
            u = f"file:///fuzz/never-opened-{rng.randint(0, 999)}.py"
            if rng.random() < 0.5:
                return self.request("textDocument/inlineCompletion", {
                    "textDocument": {"uri": u}, "position": {"line": 0, "character": 0}, "context": {"triggerKind": 1}},
                    "reject", kind)
            return self.notify(rng.choice(["textDocument/didChange", "textDocument/didClose"]),
                               {"textDocument": {"uri": u, "version": 2},
                                "contentChanges": [{"text": "x"}]}, "maybe", kind)
        if kind == "unknown":
            method = rng.choice(["dllm/noSuchThing", "foo", "textDocument/flyToTheMoon", "", "$/weird"])
            if rng.random() < 0.5:
                return self.request(method, {"a": 1}, "reject", kind)
            return self.notify(method, {"a": 1}, "maybe" if method.startswith("$/") else "reject", kind)
        if kind == "cancel":
            return self.notify("$/cancelRequest", {"id": rng.choice([f"nope-{rng.randint(0, 99)}", 123456789])},
                               "reject", kind)
        if kind == "nonjson":
            body = rng.choice([b"hello", b"{", b'{"jsonrpc": "2.0", "id": 1, "method": ', b"[1, 2", b"\x00\x01",
                               b"{'single': 'quotes'}", b"NaN-ish", bytes(rng.randrange(32, 127) for _ in range(50))])
            return Out(body, "reject", kind)
        if kind == "nonutf8":
            body = rng.choice([b"\xff\xfe\x00{}", b'{"jsonrpc": "2.0", "method": "x\xe9"}', b"\xc3\x28",
                               bytes(rng.randrange(128, 256) for _ in range(40))])
            return Out(body, "reject", kind)
        if kind == "notrpc":
            obj = rng.choice([5, "text", [1, 2, 3], None, {"method": "dllm/metrics", "id": 1},
                              {"jsonrpc": "1.0", "id": "v1", "method": "dllm/metrics"}, {"jsonrpc": 2}])
            return Out(dumps(obj), "reject", kind)
        if kind == "badid":
            bad = rng.choice([{}, [1], 1.5, True, None])
            return Out(dumps({"jsonrpc": "2.0", "id": bad, "method": "dllm/metrics", "params": {}}), "maybe", kind)
        if kind == "response":               # a response to a request the server never sent
            return Out(dumps({"jsonrpc": "2.0", "id": f"r{rng.randint(0, 999)}", "result": {"x": 1}}), "reject", kind)
        return self.valid()

    def next(self, broken_rate: float = 0.6) -> Out:
        return self.broken() if self.rng.random() < broken_rate else self.valid()
