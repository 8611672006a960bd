#!/usr/bin/env bash
# Editor integrations: build and unit-test the VS Code extension, package it, then run the
# editor tests (headless Neovim against the fake and the real server, config checks).
# Needs: node >= 20 + npm, neovim (Debian bookworm: apt-get install -y neovim), the Python deps.
set -euo pipefail
cd "$(dirname "$0")/.."

VSIX_OUT="${TMPDIR:-/tmp}/dllm-lsp.vsix" bash scripts/build_vsix.sh
(cd editors/vscode && npm test)
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
"$PY" -m pytest -q -p no:cacheprovider tests/editors "$@"
