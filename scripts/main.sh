#!/usr/bin/env bash
# Set up .venv and run the main job: the full model vs MoLe benchmark on the `small` preset (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
exec .venv/bin/mole-vla bench --preset small "$@"
