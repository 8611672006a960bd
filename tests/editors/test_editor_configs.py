"""Editor configs that no test can run here (JetBrains, Helix, Emacs, Sublime, VS Code's settings
schema) are checked against the server itself: every settings block must pass
dllm_lsp.settings.parse_settings without a message, and every file mapping must give the language
id the server derives from the file name.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

from dllm_lsp.core.syntax import language_for_path
from dllm_lsp.settings import Settings, parse_settings, to_camel_dict

EDITORS = Path(__file__).parent.parent.parent / "editors"
README = (EDITORS / "README.md").read_text(encoding="utf-8")
JETBRAINS = EDITORS / "jetbrains" / "dllm-lsp"


def code_blocks(language: str) -> list:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def assert_valid_settings(raw: dict) -> Settings:
    settings, messages = parse_settings(raw)
    assert messages == [], messages
    return settings


def test_jetbrains_template_starts_the_server_and_maps_files_to_the_servers_language_ids():
    template = json.loads((JETBRAINS / "template.json").read_text())
    assert template["programArgs"]["default"] == "dllm-lsp --stdio"
    assert template["id"] and template["name"]
    seen = set()
    for mapping in template["fileTypeMappings"]:
        for pattern in mapping["fileType"]["patterns"]:
            assert pattern.startswith("*.")
            assert language_for_path(f"file:///x/a{pattern[1:]}") == mapping["languageId"], pattern
            seen.add(mapping["languageId"])
    assert {"python", "javascript", "typescript", "go", "rust", "java", "c", "cpp"} <= seen


def test_jetbrains_initialization_options_and_settings_are_valid_server_settings():
    init = json.loads((JETBRAINS / "initializationOptions.json").read_text())
    assert_valid_settings(init)
    assert init["streaming"] is False                 # LSP4IJ ignores dllm/inlineCompletionUpdate
    assert_valid_settings(json.loads((JETBRAINS / "settings.json").read_text()))


def test_helix_languages_toml():
    (block,) = code_blocks("toml")
    config = tomllib.loads(block)
    server = config["language-server"]["dllm-lsp"]
    assert [server["command"], *server["args"]] == ["dllm-lsp", "--stdio"]
    assert_valid_settings(server["config"])
    assert config["language"] and all("dllm-lsp" in lang["language-servers"] for lang in config["language"])


def elisp_plist_to_dict(plist: str) -> dict:
    """(:model "default" :threshold 0.9 :streaming :json-false) -> {"model": "default", ...}"""
    pairs = re.findall(r':(\w+)\s+("[^"]*"|:json-false|t|[-\d.]+)', plist)
    return {key: json.loads(value) if value.startswith('"') else
            False if value == ":json-false" else True if value == "t" else float(value)
            for key, value in pairs}


@pytest.mark.parametrize("index", [0, 1])
def test_emacs_snippets_are_balanced_and_pass_valid_settings(index):
    block = code_blocks("elisp")[index]
    code = re.sub(r'"[^"]*"|;[^\n]*', "", block)        # strings and comments hold no parens
    depth = 0
    for char in code:
        depth += {"(": 1, ")": -1}.get(char, 0)
        assert depth >= 0, "unbalanced )"
    assert depth == 0, "unbalanced ("
    assert '"dllm-lsp" "--stdio"' in block
    plist = re.search(r"itiali[sz]ation-?[oO]ptions '?(\(.*?\))", block).group(1)
    settings = elisp_plist_to_dict(plist)
    assert settings == {"model": "default", "threshold": 0.9, "streaming": False}
    assert_valid_settings(settings)


def test_sublime_and_other_json_snippets():
    (block,) = code_blocks("json")
    client = json.loads(block)["clients"]["dllm-lsp"]
    assert client["command"] == ["dllm-lsp", "--stdio"]
    assert_valid_settings(client["initializationOptions"])


def test_vscode_settings_are_the_servers_settings_with_the_servers_defaults():
    package = json.loads((EDITORS / "vscode" / "package.json").read_text())
    props = package["contributes"]["configuration"]["properties"]
    client_only = {"enable", "server.command", "server.pythonPath", "trace.server"}
    server_side = {key.removeprefix("dllm."): spec for key, spec in props.items()
                   if key.removeprefix("dllm.") not in client_only}
    defaults = to_camel_dict(Settings())
    assert set(server_side) == set(defaults)
    for key, spec in server_side.items():
        assert spec["default"] == defaults[key], key
    assert_valid_settings({key: spec["default"] for key, spec in server_side.items()})
    settings_ts = (EDITORS / "vscode" / "src" / "settings.ts").read_text()
    mapped = set(re.findall(r"^  (\w+): \"(?:string|number|integer|boolean|object)\",$", settings_ts, flags=re.M))
    assert mapped == set(defaults)                    # toServerSettings forwards every server setting


def test_vscode_readme_setting_points_at_the_venv_server_through_a_real_setting():
    (block,) = code_blocks("jsonc")
    setting = json.loads("{" + block.strip() + "}")
    package = json.loads((EDITORS / "vscode" / "package.json").read_text())
    props = package["contributes"]["configuration"]["properties"]
    (key,) = setting
    assert props[key]["type"] == "array" and setting[key] == ["/path/to/dllm-lsp/.venv/bin/dllm-lsp", "--stdio"]
