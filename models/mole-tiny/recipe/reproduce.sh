#!/usr/bin/env bash
# Rebuild models/mole-tiny and its all-layers comparison from nothing on a CPU (about 8.5 h of training on 2 cores,
# plus the data collection and evaluation: about 2.5 h up to S; stage Y's 1450 recordings were not timed end to end,
# stage BB's took 20 min on 2 cores and its two caches 5 min; CC adds 18 min of training).
#   bash models/mole-tiny/recipe/reproduce.sh [WORK_DIR]
# All stages but the last train the all-layers model:
#   A  from scratch, 2500 steps (its cosine schedule spans 5000 steps; stopped at 2500)
#   B' 2000 steps from A@2500, adding the instruction FiLM and early-frame oversampling
#   C  from B'@2000 with the subgoal head (training.goal_weight; its cosine spans 3500 steps; stopped at 1500)
# Then two runs of 2500 steps start in parallel from C@1500 with the same data, schedule and subgoal head:
#   D  STAR k = 4 + CogKD                                D' all layers (the comparison)
# and each continues for 1200 steps (lr 3e-4, warmup 50, cosine): E from D, E' from D'.
# Then three HG-DAgger rounds (the policy drives in the sim, the scripted expert takes over as an operator would):
#   J  from E / E': pick and stack re-recorded with the expert that turns above the cube, interventions of E,
#      1500 steps on the union (expert ticks only)
#   K  from J / J': pick and stack re-recorded with `--no-grasp-turn`, interventions of J with the no-turn expert,
#      1500 steps
#   L  from K / K': interventions of K (round 3), 1500 steps
# then M from L / L': the measured pose as an input, 1500 steps on L's data; N from M / M': demonstrations that start
# above the target cube + round 4 (1500 steps); O from N / N': the subgoal knee, 1000 steps; R from O and Q' from O':
# stack demonstrations recorded past the release, 1000 steps; S from R / Q': round 5 on stack, 1000 steps; Y from S
# (shipped before BB): fresh data + round 6 on S, the gripper classifier and the word-ordered FiLM, 1500 steps; BB
# from Y / Y' (shipped before CC): fresh pick/stack data with the expert that closes near enough and lifts once it
# holds the cube, round 7 on Y, 2000 steps; CC from BB / BB' (shipped): 1000 more steps on BB's data.
# Recordings before Q pass --linger 0 "${old[@]}": they were made before stack demonstrations went on past success.
# Evaluation uses layout seeds 500000.. that no training or tuning used. The stages were run one by one with exactly
# these configs and seeds (runs/i9c, runs/i9g, runs/i9j, runs/i9k, runs/i9l, runs/i9n, runs/i9p); this script
# chains them but was not run end to end.
set -euo pipefail
cd "$(dirname "$0")/../../.."
work="${1:-runs/mole-tiny}"
recipe=models/mole-tiny/recipe
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_NUM_THREADS=1
mole=.venv/bin/mole-vla
old=(--release-tol 0.003 --place-offset 0 --grasp-hold 0.6 --grasp-offset 0)  # the stack release of the recordings before stage T
# Every recording before stage BB: the expert closed centred, stood still 0.6 s after closing, pick ended at success
pre_bb=(--grasp-hold 0.6 --grasp-offset 0)
pick_cut=(--linger 0)

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

# pick_stack_round CKPT PICK_SEED STACK_SEED OUT: 150 pick + 150 stack rollouts of CKPT with no-turn takeovers
pick_stack_round() {
  $mole sim collect-interventions --checkpoint "$1" --tasks pick --episodes 150 --seed "$2" --no-grasp-turn \
    --threads 1 "${pick_cut[@]}" "${pre_bb[@]}" --out "$4" "${@:5}" &
  $mole sim collect-interventions --checkpoint "$1" --tasks stack --episodes 150 --seed "$3" --no-grasp-turn \
    --threads 1 --linger 0 "${old[@]}" --out "$4" "${@:5}"
  wait
}

# train_from CONFIG DATA OUT INIT [ARGS...]: one stage into OUT, starting from the checkpoint INIT
train_from() {
  local config=$1 data=$2 out=$3 init=$4
  shift 4
  $mole train --config "$config" --data "$data" --out "$out" --init "$init" --no-progress "$@"
}

# train_pair STAGE DATA INIT_MOLE INIT_FULL [ARGS...]: stage_STAGE_{mole,full}.yaml in parallel into
# STAGE_{mole,full}, extra ARGS to both
train_pair() {
  local stage=$1 data=$2 init_mole=$3 init_full=$4 out
  shift 4
  out="$work/$(tr a-z A-Z <<< "$stage")"
  train_from "$recipe/stage_${stage}_mole.yaml" "$data" "${out}_mole" "$init_mole" "$@" &
  train_from "$recipe/stage_${stage}_full.yaml" "$data" "${out}_full" "$init_full" "$@"
  wait
}

$mole sim record-demos --tasks touch,push_forward,pick --episodes 150 --seed 10000 "${pick_cut[@]}" "${pre_bb[@]}" \
  --out "$work/demos" &
$mole sim record-demos --tasks stack --episodes 150 --seed 20000 --linger 0 "${old[@]}" --out "$work/demos"
wait
stage_until $recipe/stage_a_full.yaml "$work/A" "" step_0002500
$mole train --config $recipe/stage_b_full.yaml --data "$work/demos" --out "$work/B_full" \
  --init "$work/A/checkpoints/step_0002500" --no-progress
stage_until $recipe/stage_c_full.yaml "$work/C_full" "$work/B_full/checkpoints/step_0002000" step_0001500
ckpt="$work/C_full/checkpoints/step_0001500"
train_pair d "$work/demos" "$ckpt" "$ckpt"
train_pair e "$work/demos" "$work/D_mole/checkpoints/step_0002500" "$work/D_full/checkpoints/step_0002500"
# HG-DAgger round 1 (J): turn-above-cube pick/stack demos, E's rollouts with takeovers, union of expert ticks
$mole sim record-demos --tasks pick --episodes 150 --seed 30000 "${pick_cut[@]}" "${pre_bb[@]}" --out "$work/demos_j" &
$mole sim record-demos --tasks stack --episodes 150 --seed 40000 --linger 0 "${old[@]}" --out "$work/demos_j"
wait
ckE="$work/E_mole/checkpoints/step_0001200"
for t in "pick 120 60000" "stack 120 70000" "push_forward 60 80000" "touch 30 90000"; do
  set -- $t
  $mole sim collect-interventions --checkpoint "$ckE" --tasks "$1" --episodes "$2" --seed "$3" --threads 1 \
    --linger 0 "${old[@]}" --out "$work/dagger_j"
done
link_tasks "$work/data_j/demos" "$work/demos" touch push_forward
link_tasks "$work/data_j/demos" "$work/demos_j" pick stack
ln -sfn "$(realpath "$work/dagger_j")" "$work/data_j/dagger"
train_pair j "$work/data_j" "$ckE" "$work/E_full/checkpoints/step_0001200"
# round 2 (K): no-turn pick/stack demos, J's rollouts with no-turn takeovers
$mole sim record-demos --tasks pick --episodes 150 --seed 32000 --no-grasp-turn "${pick_cut[@]}" "${pre_bb[@]}" \
  --out "$work/demos_k" &
$mole sim record-demos --tasks stack --episodes 150 --seed 42000 --no-grasp-turn --linger 0 "${old[@]}" --out "$work/demos_k"
wait
ckJ="$work/J_mole/checkpoints/step_0001500"
pick_stack_round "$ckJ" 61000 71000 "$work/dagger_k"
link_tasks "$work/data_k/demos" "$work/demos" touch push_forward
link_tasks "$work/data_k/dagger_j" "$work/dagger_j" touch push_forward
link_tasks "$work/data_k/demos" "$work/demos_k" pick stack
ln -sfn "$(realpath "$work/dagger_k")" "$work/data_k/dagger_k"
train_pair k "$work/data_k" "$ckJ" "$work/J_full/checkpoints/step_0001500"
# round 3 (L): K's rollouts with no-turn takeovers, on top of K's data
ckK="$work/K_mole/checkpoints/step_0001500"
pick_stack_round "$ckK" 62000 72000 "$work/dagger_l"
mkdir -p "$work/data_l"
for d in "$work"/data_k/*; do ln -sfn "$(realpath "$d")" "$work/data_l/$(basename "$d")"; done
ln -sfn "$(realpath "$work/dagger_l")" "$work/data_l/dagger_l"
train_pair l "$work/data_l" "$ckK" "$work/K_full/checkpoints/step_0001500"
# M (shipped): the measured pose as an input (a fresh zero-initialized map), same data
train_pair m "$work/data_l" "$work/L_mole/checkpoints/step_0001500" "$work/L_full/checkpoints/step_0001500" \
  --init-fresh state_input
# N: the last centimetres: demonstrations that start above the target cube, and round 4 from M with a later drift
# takeover and the robot's gripper handling while the policy drives
$mole sim record-demos --tasks pick,stack --episodes 150 --seed 64000 --no-grasp-turn --start-near-target 0.03 \
  --linger 0 "${old[@]}" --out "$work/demos_near"
pick_stack_round "$work/M_mole/checkpoints/step_0001500" 63000 73000 "$work/dagger_n" --deviation 0.06 --stall 2.0 \
  --gripper-vote --gripper-confirm 0.3
mkdir -p "$work/data_n"
for d in "$work"/data_l/*; do ln -sfn "$(realpath "$d")" "$work/data_n/$(basename "$d")"; done
ln -sfn "$(realpath "$work/dagger_n")" "$work/data_n/dagger_n"
ln -sfn "$(realpath "$work/demos_near")" "$work/data_n/demos_near"
train_pair n "$work/data_n" "$work/M_mole/checkpoints/step_0001500" "$work/M_full/checkpoints/step_0001500"
# O: the subgoal target with a 2 cm knee (training.goal_knee), same data, 1000 steps
train_pair o "$work/data_n" "$work/N_mole/checkpoints/step_0001500" "$work/N_full/checkpoints/step_0001500"
# Q' and R: stack demonstrations that go on 0.5 s past success (StackTask.linger, the default from here on);
# Q' continues O', R continues O (Q, a fresh router on O', is the ablation's star_cogkd: recipe/ablation.yaml)
$mole sim record-demos --tasks stack --episodes 300 --seed 80000 --no-grasp-turn "${old[@]}" \
  --out "$work/demos_linger" &
$mole sim record-demos --tasks stack --episodes 150 --seed 82000 --no-grasp-turn --start-near-target 0.03 \
  "${old[@]}" --out "$work/demos_linger_near"
wait
mkdir -p "$work/stage_q_data"
for d in "$work"/data_n/* "$work/demos_linger" "$work/demos_linger_near"; do
  ln -sfn "$(realpath "$d")" "$work/stage_q_data/$(basename "$d")"
done
train_from $recipe/stage_r_mole.yaml "$work/stage_q_data" "$work/R_mole" "$work/O_mole/checkpoints/step_0001000" &
train_from $recipe/stage_q_full.yaml "$work/stage_q_data" "$work/Q_full" "$work/O_full/checkpoints/step_0001000"
wait
# S (shipped): HG-DAgger round 5 on stack, rollouts of Q' (the best stacker then), 1000 steps from R / Q'
$mole sim collect-interventions --checkpoint "$work/Q_full/checkpoints/step_0001000" --tasks stack --episodes 150 \
  --seed 74000 --no-grasp-turn --threads 1 --deviation 0.06 --stall 2.0 --gripper-vote --gripper-confirm 0.3 \
  "${old[@]}" --out "$work/dagger_s"
mkdir -p "$work/data_s"
for d in "$work"/stage_q_data/* "$work/dagger_s"; do ln -sfn "$(realpath "$d")" "$work/data_s/$(basename "$d")"; done
train_pair s "$work/data_s" "$work/R_mole/checkpoints/step_0001000" "$work/Q_full/checkpoints/step_0001000"
# evaluation as the robot runs it: gripper vote + 0.3 s confirmation
vote=(--gripper-vote --gripper-confirm 0.3)
# eval_stage STAGE STEP [SEED [TAG]]: held-out evaluation of STAGE_mole and STAGE_full at checkpoint STEP, then of
# STAGE_mole with random layers, on layout seeds SEED.. (default 500000) into TAG_<run> (default eval)
eval_stage() {
  local stage=$1 step=$2 seed=${3:-500000} tag=${4:-eval} run
  for run in "${stage}_mole" "${stage}_full"; do
    $mole sim eval --checkpoint "$work/$run/checkpoints/step_$step" --tasks all --episodes 50 --seed "$seed" \
      --threads 1 "${vote[@]}" --out "$work/${tag}_$run" &
  done
  wait
  $mole sim eval --checkpoint "$work/${stage}_mole/checkpoints/step_$step" --router random --tasks all \
    --episodes 50 --seed "$seed" --threads 1 "${vote[@]}" --out "$work/${tag}_${stage}_random"
}
eval_stage S 0001000
$mole sim probe --checkpoint "$work/S_mole/checkpoints/step_0001000" --frames 25 --seed 500000
$mole sim probe --checkpoint "$work/S_mole/checkpoints/step_0001000" --frames 8 --seed 710000 --grasp
# Y (shipped, session 13): from S, both runs (the all-layers twin also starts from S: S' was not at hand), 1500 steps
# on fresh data: 1100 scripted demonstrations + HG-DAgger round 6 on S (1450 episodes), read from one cache file
$mole sim record-demos --tasks touch,push_forward --episodes 200 --seed 110000 --out "$work/data_y/demos" &
$mole sim record-demos --tasks pick --episodes 250 --seed 120000 --no-grasp-turn "${pick_cut[@]}" "${pre_bb[@]}" \
  --out "$work/data_y/demos"
wait
$mole sim record-demos --tasks stack --episodes 250 --seed 120000 --no-grasp-turn "${pre_bb[@]}" \
  --out "$work/data_y/demos" &
$mole sim record-demos --tasks pick --episodes 100 --seed 130000 --no-grasp-turn --start-near-target 0.03 \
  "${pick_cut[@]}" "${pre_bb[@]}" --out "$work/data_y/near" &
$mole sim record-demos --tasks stack --episodes 100 --seed 130000 --no-grasp-turn --start-near-target 0.03 \
  "${pre_bb[@]}" --out "$work/data_y/near"
wait
s_ckpt="$work/S_mole/checkpoints/step_0001000"
takeover=(--no-grasp-turn --threads 1 --deviation 0.06 --stall 2.0 --gripper-vote --gripper-confirm 0.3)
y_takeover=("${takeover[@]}" "${pre_bb[@]}")
$mole sim collect-interventions --checkpoint "$s_ckpt" --tasks stack --episodes 150 --seed 140000 "${y_takeover[@]}" \
  --out "$work/data_y/dagger" &
$mole sim collect-interventions --checkpoint "$s_ckpt" --tasks stack --episodes 100 --seed 142000 "${y_takeover[@]}" \
  --out "$work/data_y/dagger"
wait
$mole sim collect-interventions --checkpoint "$s_ckpt" --tasks pick --episodes 100 --seed 141000 "${y_takeover[@]}" "${pick_cut[@]}" \
  --out "$work/data_y/dagger"
$mole data cache --data "$work/data_y" --config "$recipe/stage_y_mole.yaml" --out "$work/stage_y.npz" \
  --image-codec webp:85
train_pair y "cache:$work/stage_y.npz" "$s_ckpt" "$s_ckpt" --init-fresh gripper_head
eval_stage Y 0001500
$mole sim probe --checkpoint "$work/Y_mole/checkpoints/step_0001500" --frames 40 --seed 700000 --order
# BB (shipped, session 14): from Y / Y', 2000 steps on fresh pick and stack data recorded with the expert that
# closes up to 12 mm off the cube's centre and lifts once the fingers hold it (the defaults from here on; pick
# recordings go on 0.5 s through the lift), HG-DAgger round 7 on Y with that expert, and Y's touch and push
# demonstrations (1450 episodes in two cache files, both passed to train)
data_bb="$work/data_bb"
mkdir -p "$data_bb/tp"
for t in touch push_forward; do ln -sfn "$(realpath "$work/data_y/demos/$t")" "$data_bb/tp/$t"; done
y_ckpt="$work/Y_mole/checkpoints/step_0001500"
$mole sim record-demos --tasks pick,stack --episodes 250 --seed 170000 --no-grasp-turn --out "$data_bb/demos" &
$mole sim collect-interventions --checkpoint "$y_ckpt" --tasks stack --episodes 250 --seed 172000 "${takeover[@]}" \
  --out "$data_bb/dagger"
wait
$mole sim record-demos --tasks pick,stack --episodes 100 --seed 171000 --no-grasp-turn --start-near-target 0.03 \
  --out "$data_bb/near" &
$mole sim collect-interventions --checkpoint "$y_ckpt" --tasks pick --episodes 100 --seed 173000 "${takeover[@]}" \
  --out "$data_bb/dagger"
wait
$mole data cache --data "$data_bb/demos" --data "$data_bb/near" --config "$recipe/stage_bb_mole.yaml" \
  --out "$work/bb_demos.npz" --image-codec webp:85 &
$mole data cache --data "$data_bb/dagger" --data "$data_bb/tp" --config "$recipe/stage_bb_mole.yaml" \
  --out "$work/bb_rest.npz" --image-codec webp:85
wait
train_pair bb "cache:$work/bb_demos.npz" "$y_ckpt" "$work/Y_full/checkpoints/step_0001500" \
  --data "cache:$work/bb_rest.npz"
eval_stage BB 0002000
$mole sim probe --checkpoint "$work/BB_mole/checkpoints/step_0002000" --frames 40 --seed 700000 --order
# CC (shipped, session 15): BB / BB' continued 1000 steps on BB's data, the schedule restarted (warmup 50, cosine).
# recipe/tried/stage_cr_mole.yaml is CC with the router at 10x the learning rate (tried, not shipped): train it like
# CC_mole into "$work/CR_mole" to compare.
train_pair cc "cache:$work/bb_demos.npz" "$work/BB_mole/checkpoints/step_0002000" \
  "$work/BB_full/checkpoints/step_0002000" --data "cache:$work/bb_rest.npz"
eval_stage CC 0001000
$mole sim probe --checkpoint "$work/CC_mole/checkpoints/step_0001000" --frames 40 --seed 700000 --order
# confirmation on layout seeds 800000.. (used by nothing else), the shipped CC, its random-layer run and CC'
eval_stage CC 0001000 800000 eval800
# DD (tried, session 15; configs in recipe/tried/): HG-DAgger round 8 on BB (collect-interventions --checkpoint
# "$work/BB_mole/checkpoints/step_0002000" "${takeover[@]}": stack 300 from seed 174000, pick 100 from 175000, one
# cache file), then CC / CC' continued 1000 steps on BB's two caches + that one, evaluated as above.
