"""Corrupt and hostile models: one clear line naming the file and the fault, in the CLI and over LSP.

GGUF faults the engine tests do not cover yet (tests/engine/test_gguf.py has truncated and junk
files, a missing metadata key, wrong shapes and missing tensors; tests/lsp/test_pull.py has the
hash mismatch, wheels with escaping entries and an `__init__.py` that must not run): metadata of
the wrong type or value, a tensor of an integer type; a conversion that fails half-way leaves
nothing behind; and the user-facing side: `dllm-lsp complete` prints one line (a traceback only
with -v), and the server reports status error + one message and keeps serving.
"""
import json
import subprocess
import sys
import time

import gguf
import numpy as np
import pytest

from engine.errors import CheckpointError
from engine.loading.gguf_import import convert_gguf
from engine.testing.gguf_files import write_gguf_model


@pytest.fixture
def truncated_gguf(tmp_path):
    good = write_gguf_model(tmp_path / "good.gguf")
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(good.read_bytes()[:5000])
    return bad


def patched_writer(monkeypatch, method, replacement):
    original = getattr(gguf.GGUFWriter, method)
    monkeypatch.setattr(gguf.GGUFWriter, method, lambda self, *a, **k: replacement(original, self, *a, **k))


def test_metadata_of_the_wrong_value_or_type_is_named(tmp_path, monkeypatch):
    patched_writer(monkeypatch, "add_head_count", lambda orig, self, n: orig(self, 0))
    zero = write_gguf_model(tmp_path / "zero-heads.gguf")
    with pytest.raises(CheckpointError, match=r"zero-heads\.gguf: metadata 'qwen2\.attention\.head_count' is 0; "
                                              r"expected a positive integer"):
        convert_gguf(zero, tmp_path / "out")
    monkeypatch.undo()
    patched_writer(monkeypatch, "add_embedding_length",
                   lambda orig, self, n: self.add_string("qwen2.embedding_length", "sixty-four"))
    text = write_gguf_model(tmp_path / "text-width.gguf")
    with pytest.raises(CheckpointError, match=r"text-width\.gguf: metadata 'qwen2\.embedding_length' is 'sixty-four'"):
        convert_gguf(text, tmp_path / "out")
    monkeypatch.undo()
    patched_writer(monkeypatch, "add_eos_token_id", lambda orig, self, n: orig(self, 10 ** 6))
    eos = write_gguf_model(tmp_path / "eos.gguf")
    with pytest.raises(CheckpointError, match=r"eos\.gguf: metadata 'tokenizer\.ggml\.eos_token_id' is 1000000, "
                                              r"not a token id"):
        convert_gguf(eos, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_tensor_of_an_integer_type_is_named(tmp_path, monkeypatch):
    def add_tensor(orig, self, name, data, *a, **k):
        if name == "blk.1.attn_q.weight":
            return orig(self, name, (data * 100).astype(np.int32))
        return orig(self, name, data, *a, **k)
    patched_writer(monkeypatch, "add_tensor", add_tensor)
    path = write_gguf_model(tmp_path / "int-tensor.gguf")
    with pytest.raises(CheckpointError, match=r"int-tensor\.gguf: tensor 'blk\.1\.attn_q\.weight' has type I32, "
                                              r"which cannot be dequantized"):
        convert_gguf(path, tmp_path / "out")


def test_a_conversion_that_fails_half_way_leaves_nothing_to_load(tmp_path, monkeypatch):
    import safetensors.torch
    path = write_gguf_model(tmp_path / "m.gguf")

    def save_half(state, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 1000)                  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safetensors.torch, "save_file", save_half)
    out = tmp_path / "cache" / "converted" / "m"
    with pytest.raises(OSError):
        convert_gguf(path, out)
    assert not out.exists() and list((tmp_path / "cache" / "converted").iterdir()) == []   # no .part- folder left


def complete(model, tmp_path, env, *extra):
    src = tmp_path / "a.py"
    src.write_text("def f(x):\n    return \n")
    return subprocess.run([sys.executable, "-m", "dllm_lsp.cli", "complete", f"{src}:2:12", "--model", str(model),
                           *extra], capture_output=True, text=True, timeout=120, env=env)


def test_the_cli_says_one_line_and_shows_a_traceback_only_with_v(truncated_gguf, tmp_path, server_env):
    proc = complete(truncated_gguf, tmp_path, server_env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert str(truncated_gguf) in lines[0] and "truncated or corrupt" in lines[0]
    verbose = complete(truncated_gguf, tmp_path, server_env, "-v")
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr


def frame(msg) -> bytes:
    body = json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def read_until(stream, predicate, timeout=60):
    """Frames from `stream` until one satisfies `predicate`; returns (that one, all read)."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        length = None
        while True:
            line = stream.readline()
            assert line, f"the server closed stdout after {seen}"
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
            elif line == b"\r\n" and length is not None:
                break
        msg = json.loads(stream.read(length))
        seen.append(msg)
        if predicate(msg):
            return msg, seen
    raise AssertionError(f"not seen within {timeout}s: {seen}")


def test_over_lsp_status_error_one_message_and_the_server_keeps_serving(truncated_gguf, tiny_model, tmp_path,
                                                                       server_env):
    log = tmp_path / "stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dllm_lsp.cli", "--stdio"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, env=server_env)
    send = lambda msg: (proc.stdin.write(frame(msg)), proc.stdin.flush())
    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "processId": None, "rootUri": None, "capabilities": {},
            "initializationOptions": {"model": str(truncated_gguf)}}})
        send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        status, seen = read_until(proc.stdout, lambda m: m.get("method") == "dllm/status"
                                  and m["params"]["state"] == "error")
        assert str(truncated_gguf) in status["params"]["message"]
        shown, more = read_until(proc.stdout, lambda m: m.get("method") == "window/showMessage")
        assert shown["params"]["type"] == 1 and str(truncated_gguf) in shown["params"]["message"]
        send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": "file:///h/a.py", "languageId": "python", "version": 1, "text": "x = 1\ny = \n"}}})
        send({"jsonrpc": "2.0", "id": 2, "method": "textDocument/inlineCompletion", "params": {
            "textDocument": {"uri": "file:///h/a.py"}, "position": {"line": 1, "character": 4},
            "context": {"triggerKind": 1}}})
        answer, more2 = read_until(proc.stdout, lambda m: m.get("id") == 2)
        assert answer["result"]["items"] == []                                # served, empty: no model
        errors = [m for m in seen + more + more2 if m.get("method") == "window/showMessage" and m["params"]["type"] == 1]
        assert len(errors) == 1
        send({"jsonrpc": "2.0", "method": "workspace/didChangeConfiguration",
              "params": {"settings": {"dllm": {"model": tiny_model}}}})       # a good model: the server recovers
        read_until(proc.stdout, lambda m: m.get("method") == "dllm/status" and m["params"]["state"] == "ready")
        send({"jsonrpc": "2.0", "id": 3, "method": "shutdown", "params": None})
        read_until(proc.stdout, lambda m: m.get("id") == 3)
        send({"jsonrpc": "2.0", "method": "exit", "params": None})
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [l for l in log.read_text().splitlines() if l.strip()]
    assert "Traceback" not in log.read_text()
    assert len(lines) == 1 and str(truncated_gguf) in lines[0], lines          # the failure, once, in one line
