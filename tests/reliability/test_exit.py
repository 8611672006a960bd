"""`shutdown` + `exit` while the model is still loading: the server leaves cleanly (exit code 0).

A model load cannot be interrupted; ending the interpreter while the engine thread is inside
torch aborted the process ("terminate called without an active exception", SIGABRT) in three of
four tries before DllmServer.leave_if_engine_busy.
"""
import json
import subprocess
import sys


def frame(msg) -> bytes:
    body = json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_exit_during_a_model_load_is_clean(tiny_model, server_env):
    msgs = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "processId": None, "rootUri": None, "capabilities": {}, "initializationOptions": {"model": tiny_model}}},
            {"jsonrpc": "2.0", "method": "initialized", "params": {}},
            {"jsonrpc": "2.0", "id": 2, "method": "shutdown", "params": None},
            {"jsonrpc": "2.0", "method": "exit", "params": None}]
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-m", "dllm_lsp.cli", "--stdio"], input=b"".join(map(frame, msgs)),
                              capture_output=True, timeout=120, env=server_env)
        assert proc.returncode == 0 and b"terminate called" not in proc.stderr, (proc.returncode, proc.stderr[-500:])
        assert b'"id": 2' in proc.stdout                         # shutdown was answered before leaving
