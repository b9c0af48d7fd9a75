#!/usr/bin/env bash
# Rebuild models/mole-tiny and its all-layers comparison from nothing on a CPU (about 1 h 45 min on 2 cores).
#   bash models/mole-tiny/recipe/reproduce.sh [WORK_DIR]
# Stage A trains the all-layers model (its cosine schedule spans 5000 steps) and is stopped at step 2500. From that
# checkpoint two runs of 2000 steps each start in parallel, with the same data and schedule: stage B (STAR k = 4 +
# CogKD, the shipped checkpoint) and stage B' (all layers, the comparison). Both add the instruction FiLM and the
# early-frame oversampling at that point. Evaluation uses layout seeds 500000.. that no training or tuning used.
set -euo pipefail
cd "$(dirname "$0")/../../.."
work="${1:-runs/mole-tiny}"
recipe=models/mole-tiny/recipe
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_NUM_THREADS=1
mole=.venv/bin/mole-vla

$mole sim record-demos --tasks touch,push_forward,pick --episodes 150 --seed 10000 --out "$work/demos" &
$mole sim record-demos --tasks stack --episodes 150 --seed 20000 --out "$work/demos"
wait
$mole train --config $recipe/stage_a_full.yaml --data "$work/demos" --out "$work/A" --no-progress &
a=$!
until [ "$(cat "$work/A/checkpoints/latest" 2>/dev/null)" = step_0002500 ]; do sleep 20; done
kill "$a"; wait "$a" || true
ckpt="$work/A/checkpoints/step_0002500"
$mole train --config $recipe/stage_b_mole.yaml --data "$work/demos" --out "$work/B" --init "$ckpt" --no-progress &
$mole train --config $recipe/stage_b_full.yaml --data "$work/demos" --out "$work/B_full" --init "$ckpt" --no-progress
wait
for run in B B_full; do
  $mole sim eval --checkpoint "$work/$run/checkpoints/step_0002000" --tasks all --episodes 50 --seed 500000 \
    --threads 1 --out "$work/eval_$run" &
done
wait
$mole sim eval --checkpoint "$work/B/checkpoints/step_0002000" --router random --tasks all --episodes 50 \
  --seed 500000 --threads 1 --out "$work/eval_B_random"
$mole sim probe --checkpoint "$work/B/checkpoints/step_0002000" --frames 25 --seed 900000
