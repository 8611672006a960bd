#!/usr/bin/env bash
# Builds the VS Code extension into one installable file: editors/vscode/dllm-lsp-VERSION.vsix
# (or VSIX_OUT=path). Needs node >= 20 and npm; the build tools (TypeScript, @vscode/vsce) are
# the extension's pinned devDependencies, installed by `npm ci` from the npm registry.
#
#   bash scripts/build_vsix.sh && code --install-extension editors/vscode/dllm-lsp-0.1.0.vsix
#
# Then point the extension at the server that scripts/setup.sh installed: the line printed at
# the end goes into VS Code's settings.json (it names this checkout's .venv/bin/dllm-lsp).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
command -v npm >/dev/null || { echo "build_vsix: npm not found (Debian/Ubuntu: apt-get install nodejs npm)" >&2; exit 1; }
cd editors/vscode
VERSION=$(node -p 'require("./package.json").version')
OUT=${VSIX_OUT:-$ROOT/editors/vscode/dllm-lsp-$VERSION.vsix}
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run --silent compile
npx --no-install vsce package --skip-license -o "$OUT" >/dev/null
echo "build_vsix: wrote $OUT"
echo "install:  code --install-extension $OUT"
echo "settings: \"dllm.server.command\": [\"$ROOT/.venv/bin/dllm-lsp\", \"--stdio\"]"
