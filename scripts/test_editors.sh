#!/usr/bin/env bash
# Editor integrations: build and unit-test the VS Code extension, package it, then run the
# editor tests (headless Neovim against the fake and the real server, config checks).
# Needs: node >= 20 + npm, neovim (Debian bookworm: apt-get install -y neovim), the Python deps.
set -euo pipefail
cd "$(dirname "$0")/.."

(cd editors/vscode && npm ci --no-audit --no-fund && npm run compile && npm test \
   && npx --no-install vsce package --skip-license -o "${TMPDIR:-/tmp}/dllm-lsp.vsix")
python -m pytest -q tests/editors "$@"
