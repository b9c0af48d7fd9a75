#!/usr/bin/env bash
# Rebuild models/mole-tiny and its all-layers comparison from nothing on a CPU (about 4.5 h on 2 cores, plus about
# 1 h of data collection and evaluation).
#   bash models/mole-tiny/recipe/reproduce.sh [WORK_DIR]
# All stages but the last train the all-layers model:
#   A  from scratch, 2500 steps (its cosine schedule spans 5000 steps; stopped at 2500)
#   B' 2000 steps from A@2500, adding the instruction FiLM and early-frame oversampling
#   C  from B'@2000 with the subgoal head (training.goal_weight; its cosine spans 3500 steps; stopped at 1500)
# Then two runs of 2500 steps start in parallel from C@1500 with the same data, schedule and subgoal head:
#   D  STAR k = 4 + CogKD                                D' all layers (the comparison)
# and each continues for 1200 steps (lr 3e-4, warmup 50, cosine): E from D, E' from D'.
# Then two HG-DAgger rounds (the policy drives in the sim, the scripted expert takes over as an operator would):
#   J  from E / E': pick and stack re-recorded with the expert that turns above the cube, interventions of E,
#      1500 steps on the union (expert ticks only)
#   K  from J / J' (the shipped checkpoint is K): pick and stack re-recorded with `--no-grasp-turn`, interventions
#      of J with the no-turn expert, 1500 steps
# Evaluation uses layout seeds 500000.. that no training or tuning used. The stages were run one by one with exactly
# these configs and seeds (runs/i9c, runs/i9g, runs/i9j, runs/i9k); this script chains them but was not run end to
# end.
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

# link_tasks DEST SRC TASK...: DEST/TASK -> SRC/TASK (a training set as a folder of links to recordings)
link_tasks() {
  local dest=$1 src=$2 t
  shift 2
  mkdir -p "$dest"
  for t in "$@"; do ln -sfn "$(realpath "$src/$t")" "$dest/$t"; done
}

# train_pair STAGE DATA INIT_MOLE INIT_FULL: stage_STAGE_{mole,full}.yaml in parallel into STAGE_{mole,full}
train_pair() {
  $mole train --config "$recipe/stage_$1_mole.yaml" --data "$2" --out "$work/$(tr a-z A-Z <<< "$1")_mole" \
    --init "$3" --no-progress &
  $mole train --config "$recipe/stage_$1_full.yaml" --data "$2" --out "$work/$(tr a-z A-Z <<< "$1")_full" \
    --init "$4" --no-progress
  wait
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
# HG-DAgger round 1 (J): turn-above-cube pick/stack demos, E's rollouts with takeovers, union of expert ticks
$mole sim record-demos --tasks pick --episodes 150 --seed 30000 --out "$work/demos_j" &
$mole sim record-demos --tasks stack --episodes 150 --seed 40000 --out "$work/demos_j"
wait
ckE="$work/E_mole/checkpoints/step_0001200"
for t in "pick 120 60000" "stack 120 70000" "push_forward 60 80000" "touch 30 90000"; do
  set -- $t
  $mole sim collect-interventions --checkpoint "$ckE" --tasks "$1" --episodes "$2" --seed "$3" --threads 1 \
    --out "$work/dagger_j"
done
link_tasks "$work/data_j/demos" "$work/demos" touch push_forward
link_tasks "$work/data_j/demos" "$work/demos_j" pick stack
ln -sfn "$(realpath "$work/dagger_j")" "$work/data_j/dagger"
train_pair j "$work/data_j" "$ckE" "$work/E_full/checkpoints/step_0001200"
# round 2 (K): no-turn pick/stack demos, J's rollouts with no-turn takeovers
$mole sim record-demos --tasks pick --episodes 150 --seed 32000 --no-grasp-turn --out "$work/demos_k" &
$mole sim record-demos --tasks stack --episodes 150 --seed 42000 --no-grasp-turn --out "$work/demos_k"
wait
ckJ="$work/J_mole/checkpoints/step_0001500"
$mole sim collect-interventions --checkpoint "$ckJ" --tasks pick --episodes 150 --seed 61000 --no-grasp-turn \
  --threads 1 --out "$work/dagger_k" &
$mole sim collect-interventions --checkpoint "$ckJ" --tasks stack --episodes 150 --seed 71000 --no-grasp-turn \
  --threads 1 --out "$work/dagger_k"
wait
link_tasks "$work/data_k/demos" "$work/demos" touch push_forward
link_tasks "$work/data_k/dagger_j" "$work/dagger_j" touch push_forward
link_tasks "$work/data_k/demos" "$work/demos_k" pick stack
ln -sfn "$(realpath "$work/dagger_k")" "$work/data_k/dagger_k"
train_pair k "$work/data_k" "$ckJ" "$work/J_full/checkpoints/step_0001500"
for run in K_mole K_full; do
  $mole sim eval --checkpoint "$work/$run/checkpoints/step_0001500" --tasks all --episodes 50 --seed 500000 \
    --threads 1 --out "$work/eval_$run" &
done
wait
$mole sim eval --checkpoint "$work/K_mole/checkpoints/step_0001500" --router random --tasks all --episodes 50 \
  --seed 500000 --threads 1 --out "$work/eval_K_random"
$mole sim probe --checkpoint "$work/K_mole/checkpoints/step_0001500" --frames 25 --seed 500000
