#!/usr/bin/env bash
# Records the demo: `dllm-lsp complete` on a terminal, the suggestion growing in place (drafts
# dim, committed text bold, forward passes and ms below it), as an asciicast v2 file.
#
#   bash scripts/record_demo.sh                                   examples/demo.py:14:28 -> docs/demo.cast
#   bash scripts/record_demo.sh FILE:LINE:COL [complete options]   e.g. --model PATH --mode block
#   DEMO_OUT=/tmp/x.cast bash scripts/record_demo.sh ...           somewhere else
#
# Play it with `asciinema play docs/demo.cast` (or any asciicast player; the timing is real).
# Uses the checkout's .venv (scripts/setup.sh) when there is one, else `dllm-lsp` on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-docs/demo.cast}
LOCATION=${1:-examples/demo.py:14:28}
[ $# -gt 0 ] && shift
[ -x .venv/bin/dllm-lsp ] && export PATH="$PWD/.venv/bin:$PATH"
command -v dllm-lsp >/dev/null || { echo "record_demo: dllm-lsp not found: run bash scripts/setup.sh" >&2; exit 1; }
PY=$(dirname "$(command -v dllm-lsp)")/python
[ -x "$PY" ] || PY=python3
mkdir -p "$(dirname "$OUT")"
"$PY" scripts/record_cast.py "$OUT" --cols 100 --rows 8 --title "dllm-lsp complete $LOCATION $*" \
  -- dllm-lsp complete "$LOCATION" "$@"
echo "record_demo: wrote $OUT ($(($(wc -l < "$OUT") - 1)) events)"
