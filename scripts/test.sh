#!/usr/bin/env bash
# Set up .venv with every extra and run the lint and the whole test suite (CPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh "dev,export,train,ros,sim,plot"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
