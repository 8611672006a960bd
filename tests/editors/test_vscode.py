"""The VS Code extension (editors/vscode): its Node unit tests, and a .vsix that holds what it needs.

`npm test` compiles the TypeScript and runs node's test runner on the pure modules (settings
mapping, merging streamed updates, sessions, status) and on extension.ts against a fake `vscode`
module; no VS Code or Electron is downloaded. `npm ci` runs first when node_modules is missing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

VSCODE = Path(__file__).parent.parent.parent / "editors" / "vscode"
NPM = shutil.which("npm")
pytestmark = pytest.mark.skipif(NPM is None, reason="npm is not installed (CI: apt-get install -y nodejs npm)")


@pytest.fixture(scope="module")
def node_modules():
    if not (VSCODE / "node_modules" / ".package-lock.json").exists():
        proc = subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=VSCODE, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return VSCODE / "node_modules"


def test_node_unit_tests_pass(node_modules):
    proc = subprocess.run([NPM, "test"], cwd=VSCODE, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout
    passed = int(proc.stdout.split("# pass ")[1].split()[0])
    assert passed >= 20, proc.stdout[-2000:]


def test_build_vsix_script_packs_the_compiled_extension_and_its_runtime_dependency(node_modules, tmp_path):
    """scripts/build_vsix.sh (the README's one command) makes the .vsix and prints the settings line."""
    vsix = tmp_path / "dllm.vsix"
    proc = subprocess.run(["bash", "scripts/build_vsix.sh"], cwd=VSCODE.parent.parent, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "VSIX_OUT": str(vsix)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    settings_line = proc.stdout.strip().splitlines()[-1].removeprefix("settings: ")
    command = json.loads("{" + settings_line + "}")["dllm.server.command"]
    assert command == [str(VSCODE.parent.parent / ".venv" / "bin" / "dllm-lsp"), "--stdio"]
    package = json.loads((VSCODE / "package.json").read_text())
    assert package["contributes"]["configuration"]["properties"]["dllm.server.command"]["type"] == "array"
    with zipfile.ZipFile(vsix) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("extension/package.json"))
    main = "extension/" + manifest["main"].removeprefix("./")
    assert main in names
    assert "extension/node_modules/vscode-languageclient/node.js" in names
    assert not any(name.startswith("extension/src/") or name.startswith("extension/out/test/") for name in names)
    commands = {c["command"] for c in manifest["contributes"]["commands"]}
    assert {"dllm.toggle", "dllm.trigger"} <= commands
