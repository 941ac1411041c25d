#!/usr/bin/env bash
# Lint and test edgeattn. Creates .venv (with the [export,plot,ray,dev] extras) when it is missing.
#   scripts/test.sh              ruff + the fast tests
#   scripts/test.sh -m slow      extra pytest arguments are passed on (here: only the slow tests)
# First, the TensorFlow-free tests run at the oldest supported pins (scripts/test_oldest.sh, .venv-oldest).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh "export,plot,ray,dev"
start=$(date +%s)
# onnxruntime-web / onnxruntime-node for the web and Node tests (pinned in package-lock.json)
if command -v npm >/dev/null 2>&1 && [[ ! -d node_modules || package-lock.json -nt node_modules ]]; then
  npm ci --no-audit --no-fund --loglevel=error 2>&1 | grep -v "Unknown user config" || true
  touch node_modules
fi
ruff check .
ruff format --check .
bash scripts/test_oldest.sh -q
python -m pytest "$@"
echo "scripts/test.sh: done in $(( $(date +%s) - start )) s"
