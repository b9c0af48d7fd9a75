#!/usr/bin/env bash
# Rebuild models/mole-tiny and its all-layers comparison from nothing on a CPU (about 3 h on 2 cores, plus about
# 40 min of evaluation).
#   bash models/mole-tiny/recipe/reproduce.sh [WORK_DIR]
# All stages but the last train the all-layers model:
#   A  from scratch, 2500 steps (its cosine schedule spans 5000 steps; stopped at 2500)
#   B' 2000 steps from A@2500, adding the instruction FiLM and early-frame oversampling
#   C  from B'@2000 with the subgoal head (training.goal_weight; its cosine spans 3500 steps; stopped at 1500)
# Then two runs of 2500 steps start in parallel from C@1500 with the same data, schedule and subgoal head:
#   D  STAR k = 4 + CogKD                                D' all layers (the comparison)
# and each continues for 1200 steps (lr 3e-4, warmup 50, cosine): E from D (the shipped checkpoint), E' from D'.
# Evaluation uses layout seeds 500000.. that no training or tuning used.
set -euo pipefail
cd "$(dirname "$0")/../../.."
work="${1:-runs/mole-tiny}"
recipe=models/mole-tiny/recipe
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_NUM_THREADS=1
mole=.venv/bin/mole-vla

# stage_until CONFIG OUT INIT STEP: train CONFIG into OUT from INIT ("" for none) and stop at checkpoint STEP
stage_until() {
  local init=()
  [ -n "$3" ] && init=(--init "$3")
  $mole train --config "$1" --data "$work/demos" --out "$2" "${init[@]}" --no-progress &
  local pid=$!
  until [ "$(cat "$2/checkpoints/latest" 2>/dev/null)" = "$4" ]; do sleep 20; done
  kill "$pid"; wait "$pid" || true
}

$mole sim record-demos --tasks touch,push_forward,pick --episodes 150 --seed 10000 --out "$work/demos" &
$mole sim record-demos --tasks stack --episodes 150 --seed 20000 --out "$work/demos"
wait
stage_until $recipe/stage_a_full.yaml "$work/A" "" step_0002500
$mole train --config $recipe/stage_b_full.yaml --data "$work/demos" --out "$work/B_full" \
  --init "$work/A/checkpoints/step_0002500" --no-progress
stage_until $recipe/stage_c_full.yaml "$work/C_full" "$work/B_full/checkpoints/step_0002000" step_0001500
ckpt="$work/C_full/checkpoints/step_0001500"
$mole train --config $recipe/stage_d_mole.yaml --data "$work/demos" --out "$work/D_mole" --init "$ckpt" --no-progress &
$mole train --config $recipe/stage_d_full.yaml --data "$work/demos" --out "$work/D_full" --init "$ckpt" --no-progress
wait
$mole train --config $recipe/stage_e_mole.yaml --data "$work/demos" --out "$work/E_mole" \
  --init "$work/D_mole/checkpoints/step_0002500" --no-progress &
$mole train --config $recipe/stage_e_full.yaml --data "$work/demos" --out "$work/E_full" \
  --init "$work/D_full/checkpoints/step_0002500" --no-progress
wait
for run in E_mole E_full; do
  $mole sim eval --checkpoint "$work/$run/checkpoints/step_0001200" --tasks all --episodes 50 --seed 500000 \
    --threads 1 --out "$work/eval_$run" &
done
wait
$mole sim eval --checkpoint "$work/E_mole/checkpoints/step_0001200" --router random --tasks all --episodes 50 \
  --seed 500000 --threads 1 --out "$work/eval_E_random"
$mole sim probe --checkpoint "$work/E_mole/checkpoints/step_0001200" --frames 25 --seed 500000
