#!/usr/bin/env bash
# Create .venv and install this project with the given extras (default: none), from the project's own files.
#   bash scripts/setup-venv.sh "dev,export,train,ros,sim,plot"
# torch is pinned to 2.13.0 here because an unpinned resolve pulls a multi-GB CUDA build on CPU machines;
# on a CUDA workstation install your torch into .venv first and this step keeps it (pyproject: >=2.4,<2.14).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
pip_q() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }

if [[ ",$extras," == *",sim,"* ]]; then
  # Offscreen OpenGL for MuJoCo on a machine without a display (EGL, with OSMesa as the fallback).
  if ! ldconfig -p | grep -q libOSMesa && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6) >/dev/null
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || pip_q "torch==2.13.0"
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
pip_q -e "$spec"
if [[ ",$extras," == *",ros,"* ]]; then
  pip_q -e ros2_ws/src/mole_ros
fi
if [[ ",$extras," == *",sim,"* ]]; then
  # The FR3 MJCF + meshes (Apache-2.0). --no-deps: we only read its assets/, never import it.
  pip_q --no-deps "franky-sim==1.0.4"
fi
.venv/bin/python -c "import mole_inference" || { echo "setup failed: mole_inference does not import" >&2; exit 1; }
