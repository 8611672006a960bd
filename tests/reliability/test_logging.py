"""Log lines: one per record at the default level (no traceback), the traceback with -v; the [msg N] tag."""
import json
import logging
import subprocess
import sys

from dllm_lsp.lsp.logs import MESSAGE_NO, OneLineFormatter, VerboseFormatter, configure_handler


def record(msg, *args, exc=None):
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("dllm_lsp.lsp.server", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_the_default_formatter_writes_one_line_whatever_the_record_holds():
    f = OneLineFormatter()
    try:
        raise ValueError("bad\nthing")
    except ValueError as exc:
        caught = exc
    line = f.format(record("first line\nsecond line %s", "x" * 10000, exc=caught))
    assert "\n" not in line and "Traceback" not in line and "first line" in line and "second" not in line
    assert "(ValueError: bad)" in line
    assert len(line) < 700
    assert "\\ud800" in f.format(record("lone %s", "\ud800"))              # encodable: escaped, not an error
    assert "Traceback" in VerboseFormatter().format(record("x", exc=caught))


def test_records_carry_the_ordinal_of_the_message_being_handled():
    handler = configure_handler(logging.StreamHandler(), 0)
    token = MESSAGE_NO.set(41)
    try:
        r = record("rejected")
        handler.filter(r)
    finally:
        MESSAGE_NO.reset(token)
    assert "[msg 41] rejected" in handler.format(r)


def frame(msg) -> bytes:
    body = json.dumps(msg).encode() if not isinstance(msg, bytes) else msg
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def session_stderr(tiny_model, env, *flags):
    msgs = [frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "processId": None, "rootUri": None, "capabilities": {}, "initializationOptions": {"model": tiny_model}}}),
            frame(b"{not json"),         # (no `initialized`: no model load racing the shutdown)
            frame({"jsonrpc": "2.0", "id": 2, "method": "textDocument/inlineCompletion", "params": {
                "textDocument": {"uri": "file:///never-opened.py"}, "position": {"line": 0, "character": 0},
                "context": {"triggerKind": 1}}}),
            frame({"jsonrpc": "2.0", "id": 3, "method": "shutdown", "params": None}),
            frame({"jsonrpc": "2.0", "method": "exit", "params": None})]
    proc = subprocess.run([sys.executable, "-m", "dllm_lsp.cli", "--stdio", *flags], input=b"".join(msgs),
                          capture_output=True, timeout=120, env=env)
    return proc.stderr.decode()


def test_a_rejected_request_is_one_line_by_default_and_a_traceback_with_v(tiny_model, server_env):
    quiet = [l for l in session_stderr(tiny_model, server_env).splitlines() if l.strip()]
    assert len(quiet) == 2, quiet
    assert "[msg 2] rejected message: body is not JSON" in quiet[0]
    assert "[msg 3] rejected request 2" in quiet[1] and "never-opened.py is not open" in quiet[1]
    loud = session_stderr(tiny_model, server_env, "-v")
    assert "Traceback (most recent call last)" in loud and "never-opened.py is not open" in loud
