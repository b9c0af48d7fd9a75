#!/usr/bin/env bash
# Create .venv and install this project with the given extras (default: none), from the project's own files.
# torch is pinned to 2.13.0 here because an unpinned resolve pulls a multi-GB CUDA build on CPU machines;
# on a CUDA workstation install your torch first and this step keeps it (pyproject allows >=2.4,<2.14).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
.venv/bin/python -m pip install -q -e "$spec"
