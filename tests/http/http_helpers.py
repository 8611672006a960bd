"""Helpers for the HTTP tests: `dllm-lsp http` as a second process, and the token it is started with."""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

TOKEN = "test-" + secrets.token_hex(12)
LISTENING = re.compile(r"listening on (http://\S+?):(\d+) ")


class HttpServer:
    """`python -m dllm_lsp.cli http ...` in a subprocess; stderr is collected in .lines."""

    def __init__(self, args, env=None, wait_ready=True, timeout=120.0):
        self.env = {**os.environ, "DLLM_LSP_TOKEN": TOKEN, "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "dllm_lsp.cli", "http", "--port", "0", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=self.env)
        self.lines, self.url, self.port = [], None, None
        self._seen = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._seen.wait(timeout) or self.url is None:
            self.stop()
            raise AssertionError("dllm-lsp http did not say where it listens:\n" + "".join(self.lines))
        if wait_ready:
            self.wait_health(timeout)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            m = LISTENING.search(line)
            if m and self.url is None:
                self.url, self.port = f"{m.group(1)}:{m.group(2)}", int(m.group(2))
                self._seen.set()
        self._seen.set()

    def request(self, method, path, body=None, token=TOKEN, headers=None, raw=None, timeout=60):
        """(status, decoded JSON or text) with the standard library client."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {}),
             **(headers or {})}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def health(self):
        return self.request("GET", "/health")[1]

    def wait_health(self, timeout=120.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            status, body = self.request("GET", "/health")
            if status == 200:
                return body
            if isinstance(body, dict) and body.get("status") == "error":
                raise AssertionError(f"the model did not load: {body}")
            time.sleep(0.1)
        raise AssertionError(f"/health not ok after {timeout}s:\n" + "".join(self.lines))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
