"""No network by default: the stdio server holds no internet socket; only --tcp makes it listen.

The server's open sockets are read from /proc/<pid>/fd (links `socket:[inode]`) and looked up
in /proc/<pid>/net/{tcp,tcp6,udp,udp6,raw,raw6} (internet sockets) and /proc/<pid>/net/unix
(asyncio's self-pipe is an unnamed unix socketpair: allowed; a named unix socket is not). The
--tcp case shows the check sees a listening socket when there is one.
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
INET_TABLES = ("tcp", "tcp6", "udp", "udp6", "raw", "raw6")


def frame(msg) -> bytes:
    body = json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def read_frame(stream):
    length = None
    while True:
        line = stream.readline()
        assert line, "the server closed stdout"
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
        elif line == b"\r\n" and length is not None:
            return json.loads(stream.read(length))


def call(proc, msg_id, method, params):
    proc.stdin.write(frame({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}))
    proc.stdin.flush()
    while True:
        msg = read_frame(proc.stdout)
        if msg.get("id") == msg_id and "method" not in msg:
            return msg


def sockets_of(pid: int):
    """{'inet': [(table, local address, state)], 'unix_named': [path], 'unix_unnamed': n}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    inet = []
    for table in INET_TABLES:
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            cols = row.split()
            if len(cols) > 9 and cols[9] in inodes:
                inet.append((table, cols[1], cols[3]))
    named, unnamed = [], 0
    for row in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        cols = row.split()
        if len(cols) >= 7 and cols[6] in inodes:
            if len(cols) >= 8 and cols[7]:
                named.append(cols[7])
            else:
                unnamed += 1
    return {"inet": inet, "unix_named": named, "unix_unnamed": unnamed, "sockets": len(inodes)}


def test_the_stdio_server_opens_no_network_socket(tiny_model, server_env):
    proc = subprocess.Popen([sys.executable, "-m", "dllm_lsp.cli", "--stdio"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=server_env)
    try:
        call(proc, 1, "initialize", {"processId": None, "rootUri": None, "capabilities": {},
                                     "initializationOptions": {"model": tiny_model}})
        proc.stdin.write(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        deadline = time.monotonic() + 60
        while call(proc, 2, "dllm/metrics", {})["result"]["state"] != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.stdin.write(frame({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": "file:///n/a.py", "languageId": "python", "version": 1, "text": "def f(x):\n    return \n"}}}))
        answer = call(proc, 3, "textDocument/inlineCompletion", {"textDocument": {"uri": "file:///n/a.py"},
                                                                 "position": {"line": 1, "character": 11},
                                                                 "context": {"triggerKind": 1}})
        assert "result" in answer                          # the model ran: everything that loads has loaded
        found = sockets_of(proc.pid)
        assert found["inet"] == [] and found["unix_named"] == [], found
    finally:
        proc.kill()
        proc.wait()


def test_with_tcp_the_check_sees_the_listening_socket(tiny_model, server_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "dllm_lsp.cli", "--tcp", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=server_env)
    try:
        deadline = time.monotonic() + 60
        while not sockets_of(proc.pid)["inet"]:
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not listen"
            time.sleep(0.1)
        found = sockets_of(proc.pid)
        assert any(f":{port:04X}" in local and state == "0A" for _, local, state in found["inet"]), found  # LISTEN
    finally:
        proc.kill()
        proc.wait()
