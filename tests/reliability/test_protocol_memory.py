"""The protocol keeps nothing per notification: pygls stores a future for each notification handler
(and each step of its built-in generator handlers) and never removes it; DllmProtocol does."""
import json

from dllm_lsp.lsp.server import build_server


class Writer:
    def __init__(self):
        self.data = []

    def write(self, data):
        self.data.append(data)

    def close(self):
        pass


def test_two_thousand_keystrokes_leave_no_futures_behind():
    server = build_server()
    protocol = server.protocol
    protocol.set_writer(Writer())
    send = lambda n, msg: protocol.receive(n, json.dumps(msg).encode(), 0)
    send(1, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"processId": None, "rootUri": None,
                                                                          "capabilities": {}}})
    uri = "file:///m/a.py"
    send(2, {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": uri, "languageId": "python", "version": 1, "text": ""}}})
    for i in range(2000):
        send(3 + i, {"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": uri, "version": i + 2},
            "contentChanges": [{"range": {"start": {"line": 0, "character": i}, "end": {"line": 0, "character": i}},
                                "text": "x"}]}})
    assert server.workspace.get_text_document(uri).source == "x" * 2000      # every change was applied
    assert len(protocol._request_futures) == 0
