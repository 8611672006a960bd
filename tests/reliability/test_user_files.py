"""`dllm-lsp complete` on files as users have them: Latin-1, a PEP 263 coding line, a BOM, CRLF, binary junk."""
import json
import subprocess
import sys

import pytest

from dllm_lsp.commands.complete import offset_of, read_source

SOURCE = "def greet(name):\n    return 'café ' + \n"


def test_utf8_with_a_bom_loses_the_bom(tmp_path):
    f = tmp_path / "bom.py"
    f.write_bytes(b"\xef\xbb\xbf" + SOURCE.encode())
    s = read_source(f)
    assert s.text == SOURCE and s.note is None and s.encoding == "utf-8-sig"
    assert s.text[offset_of(s.text, 1, 1)] == "d"                  # column 1 is the first real character


def test_a_pep263_coding_line_is_obeyed(tmp_path):
    f = tmp_path / "latin.py"
    text = "# -*- coding: latin-1 -*-\n" + SOURCE
    f.write_bytes(text.encode("latin-1"))
    s = read_source(f)
    assert s.text == text and s.note is None and s.encoding == "iso8859-1"


def test_latin1_without_a_coding_line_is_read_with_a_note(tmp_path):
    f = tmp_path / "latin.py"
    f.write_bytes(SOURCE.encode("latin-1"))
    s = read_source(f)
    assert s.text == SOURCE and "not UTF-8" in s.note and "Latin-1" in s.note and "0xe9" in s.note


def test_crlf_and_lone_cr_become_lf_and_are_remembered(tmp_path):
    f = tmp_path / "crlf.py"
    f.write_bytes(SOURCE.replace("\n", "\r\n").encode())
    s = read_source(f)
    assert s.text == SOURCE and s.newline == "\r\n"
    g = tmp_path / "cr.py"
    g.write_bytes(SOURCE.replace("\n", "\r").encode())
    assert read_source(g).text == SOURCE and read_source(g).newline == "\r"


@pytest.mark.parametrize("data, words", [
    (b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 4, "binary file"),
    (bytes(range(1, 32)) * 50, "binary file"),
    (b"\xff\xfed\x00e\x00f\x00", "UTF-16"),
    (b"# coding: no-such-codec\nx = 1\n", "no-such-codec"),
    ("# coding: ascii\nx = 'é'\n".encode("utf-8"), "not valid ascii"),
])
def test_what_cannot_be_read_is_one_clear_line(tmp_path, data, words):
    f = tmp_path / "junk.py"
    f.write_bytes(data)
    with pytest.raises(SystemExit) as err:
        read_source(f)
    message = str(err.value)
    assert words in message and str(f) in message and "\n" not in message


def run_complete(tiny_model, location, server_env):
    return subprocess.run([sys.executable, "-m", "dllm_lsp.cli", "complete", location, "--model", tiny_model,
                           "--json", "--threads", "1"], capture_output=True, text=True, timeout=120, env=server_env)


def test_the_command_completes_a_latin1_crlf_file_and_refuses_junk_in_one_line(tiny_model, tmp_path, server_env):
    f = tmp_path / "old.py"
    f.write_bytes(SOURCE.replace("\n", "\r\n").encode("latin-1"))
    proc = run_complete(tiny_model, f"{f}:2:22", server_env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "text" in out and "\n" not in out["text"].replace("\r\n", "")      # CRLF file: CRLF suggestion
    assert [l for l in proc.stderr.splitlines() if "Latin-1" in l] and "Traceback" not in proc.stderr

    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 10)
    proc = run_complete(tiny_model, f"{junk}:1:1", server_env)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "binary file" in proc.stderr and "Traceback" not in proc.stderr
