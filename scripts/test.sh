#!/usr/bin/env bash
# Set up .venv with every extra and run the lint and the whole test suite (CPU only).
# tests/ros runs in its own pytest process: its real-time checks (50 Hz stack, watchdog) must not share the
# interpreter with threads the library tests leave behind (seen: the stack's policy starved, then a hung rerun).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh "dev,export,train,ros,sim,plot"
.venv/bin/ruff check .
.venv/bin/python -m pytest -q --ignore=tests/ros "$@"
exec .venv/bin/python -m pytest -q tests/ros "$@"
