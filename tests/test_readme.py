"""README.md stays a first read: small, the two commands as they are, every setting in its table.

The measurements live in docs/benchmarks.md, the HTTP reference in docs/http.md, the design in
docs/ARCHITECTURE.md; the README points at them.
"""
import json
import re
from dataclasses import fields
from pathlib import Path

from dllm_lsp.settings import Settings, camel_case, to_camel_dict

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAX_BYTES = 15 * 1024
COMMANDS = (
    "bash scripts/setup.sh && .venv/bin/dllm-lsp complete examples/demo.py:14:28",
    "bash scripts/test.sh",
)


def settings_table() -> dict:
    """The README's settings table: camelCase name -> (default cell, description), in order."""
    section = re.search(r"^## Settings\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert section, "README.md has no '## Settings' section"
    rows = {}
    for line in section.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`(\w+)`", cells[0]) if line.startswith("|") and len(cells) == 3 else None
        if name:
            rows[name.group(1)] = (cells[1], cells[2])
    return rows


def test_readme_is_small():
    size = len(README.encode("utf-8"))
    assert size <= MAX_BYTES, f"README.md is {size} bytes; measurements go to docs/benchmarks.md"


def test_readme_has_the_two_commands_as_they_are():
    block = re.search(r"^## The two commands\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert block, "README.md has no '## The two commands' section"
    lines = block.group(1).splitlines()
    for command in COMMANDS:
        assert command in lines, f"the command line {command!r} is not in 'The two commands'"


def test_every_setting_is_in_the_table_with_its_default():
    table = settings_table()
    defaults = to_camel_dict(Settings())
    names = [camel_case(f.name) for f in fields(Settings)]
    assert [n for n in names if n not in table] == [], "settings missing from the README's table"
    assert [n for n in table if n not in names] == [], "the README's table names settings that do not exist"
    wrong = {}
    for name in names:
        cell = table[name][0]
        quoted = re.fullmatch(r"`([^`]*)`", cell)
        if not quoted or json.loads(quoted.group(1)) != defaults[name]:
            wrong[name] = (cell, defaults[name])
    assert wrong == {}, "README defaults that differ from dllm_lsp/settings.py: {name: (README, code)}"


def test_readme_points_at_the_docs():
    for doc in ("docs/ARCHITECTURE.md", "docs/benchmarks.md", "docs/http.md", "docs/models.md",
                "editors/README.md"):
        assert f"]({doc})" in README, f"README.md does not link {doc}"
        assert (ROOT / doc).exists()
