#!/usr/bin/env bash
# Set up .venv (with the ROS 2 and MuJoCo extras) and run the main job: `mole-vla demo`, the simulated FR3
# driven by the full ROS stack and the shipped MoLe-VLA checkpoint, on a CPU-only machine without a display.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh "ros,sim"
exec .venv/bin/mole-vla demo "$@"
