"""Transports: stdout carries only framed JSON-RPC; --tcp HOST:PORT serves one client."""
import json
import os
import socket
import subprocess
import sys
import time

SERVER = [sys.executable, "-m", "dllm_lsp.cli"]


def frame(msg: dict) -> bytes:
    body = json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def parse_frames(data: bytes):
    """Split a byte stream into JSON messages; fails on anything that is not a frame."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"stray bytes on stdout: {data[:200]!r}"
        headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))
        n = int(headers[b"Content-Length"])
        out.append(json.loads(rest[:n]))
        data = rest[n:]
    return out


def session(model: str):
    return [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"processId": None, "rootUri": None, "capabilities": {}, "initializationOptions": {"model": model}}},
        {"jsonrpc": "2.0", "method": "initialized", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "method": "dllm/metrics", "params": {}},
        {"jsonrpc": "2.0", "id": 3, "method": "shutdown", "params": None},
        {"jsonrpc": "2.0", "method": "exit", "params": None},
    ]


def test_stdout_carries_only_the_protocol(tiny_model, tmp_path):
    env = {**os.environ, "DLLM_LSP_STATE_DIR": str(tmp_path)}
    stdin = b"".join(frame(m) for m in session(tiny_model))
    proc = subprocess.run(SERVER + ["--stdio", "-v"], input=stdin, capture_output=True, timeout=60, env=env)
    messages = parse_frames(proc.stdout)
    ids = {m.get("id") for m in messages if "id" in m}
    assert {1, 2, 3} <= ids
    init = next(m for m in messages if m.get("id") == 1)
    assert "inlineCompletionProvider" in init["result"]["capabilities"]
    assert b"serving on stdio" in proc.stderr           # -v logs went to stderr instead


def test_tcp_transport(tiny_model, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DLLM_LSP_STATE_DIR": str(tmp_path)}
    log_file = tmp_path / "server.log"
    proc = subprocess.Popen(SERVER + ["--tcp", f"127.0.0.1:{port}", "--log-file", str(log_file), "-v"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not listen"
                time.sleep(0.1)
        with conn:
            conn.sendall(frame(session(tiny_model)[0]))
            data = b""
            while b"inlineCompletionProvider" not in data:
                chunk = conn.recv(65536)
                assert chunk, "connection closed"
                data += chunk
        assert "serving on tcp" in log_file.read_text()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert out == b""                                    # nothing on stdout in TCP mode either
