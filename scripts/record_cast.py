"""Record a command's terminal output as an asciicast v2 file (what asciinema writes and plays).

    python scripts/record_cast.py OUT.cast [--cols 100 --rows 10 --title T] -- CMD [ARGS...]

Design: the command runs on the slave side of a pseudo-terminal of the given size (so it sees
a TTY, as in a real terminal, and draws its live view); the master side is read until the
command exits, and every chunk becomes one output event with its real time offset. The cast
starts with a `$ CMD` prompt line (written at t=0, not typed) so a viewer sees what ran. No
timing is changed: `asciinema play` (or any asciicast player) replays it as it happened.
Exit status: the command's.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import shlex
import struct
import subprocess
import sys
import termios
import time


def record(cmd, out_path: str, cols: int = 100, rows: int = 10, title: str = "", env=None) -> int:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    run_env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows), **(env or {})}
    run_env.pop("NO_COLOR", None)
    events = [(0.0, f"$ {shlex.join(cmd)}\r\n")]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=run_env, close_fds=True)
    os.close(slave)
    while True:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:            # EIO: the command has exited and closed its side
                data = b""
            if not data:
                break
            events.append((time.monotonic() - t0, data.decode("utf-8", "replace")))
        elif proc.poll() is not None:
            break
    os.close(master)
    rc = proc.wait()
    header = {"version": 2, "width": cols, "height": rows, "timestamp": int(time.time()),
              "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"}, "title": title or shlex.join(cmd)}
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        for t, text in events:
            f.write(json.dumps([round(t, 6), "o", text]) + "\n")
    return rc


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="record_cast.py")
    parser.add_argument("out", help="the .cast file to write")
    parser.add_argument("--cols", type=int, default=100, help="terminal width (default: 100)")
    parser.add_argument("--rows", type=int, default=10, help="terminal height (default: 10)")
    parser.add_argument("--title", default="", help="the cast's title (default: the command)")
    args = parser.parse_args(argv[:split])
    return record(argv[split + 1:], args.out, args.cols, args.rows, args.title)


if __name__ == "__main__":
    sys.exit(main())
