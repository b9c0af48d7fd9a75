#!/usr/bin/env bash
# One call on a lent GPU machine (the workplace's device tool: an H100/H200, 15 device-minutes per session):
#   1. `mole-vla bench` of the three 7B presets in bf16, full vs MoLe (issue #13) -> $OUT/bench.jsonl
#   2. stage V of models/mole-tiny (issue #9) at batch 256: S continued with MoLe (STAR + CogKD) and, beside it on
#      the same GPU, its all-layers twin, same data, init, batch and steps. A 100-step probe of both measures steps/s, then the
#      step budget is sized to fit TRAIN_S seconds. -> $OUT/{mole,full}.tar (final checkpoint + metrics.csv)
# Usage, from the repository root on that machine (its python3 holds torch, transformers, opencv; nothing here
# needs rosbags or MuJoCo: the data travels as one `mole-vla data cache` file):
#   bash benchmarks/gpu_session.sh CACHE_NPZ TRAIN_S      (TRAIN_S = 0: the bench alone; CACHE_NPZ is then unused)
# A dry run on a CPU (wiring only): DEVICE=cpu PRESETS=tiny DTYPE=float32 PROBE_STEPS=4 BATCH=4 bash ... CACHE 20
set -uo pipefail
cache=$1 train_s=$2
device=${DEVICE:-cuda} presets=${PRESETS:-cogact-7b openvla-7b pi0} dtype=${DTYPE:-bfloat16}
probe_steps=${PROBE_STEPS:-100}
out=${OUT:-/tmp/gpu_out}
work=/tmp/gpu_work
mkdir -p "$out" "$work"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
mole() { python3 -m mole_inference.cli "$@"; }
recipe=models/mole-tiny/recipe/tried  # stage V was run on the CPU and not shipped (the card)
log() { echo "[$(date +%T)] $*"; }

log "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "$device")"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

# 1. stage V's probe first (a training bug shows before the bench spends device time): both runs together,
# then the step budget is sized to train_s
train() {  # train NAME CONFIG OUT STEPS [ARGS]
  local name=$1 config=$2 dir=$3 steps=$4
  shift 4
  mole train --config "$config" --data "cache:$cache" --out "$dir" --init models/mole-tiny --steps "$steps" \
    --device "$device" --no-progress "$@" > "$work/$name.log" 2>&1
}
probe_rate() {  # the slower run's steps/s over the probe's last logged window
  python3 - "$work" <<'EOF'
import csv, sys
print(min(float(list(csv.DictReader(open(f"{sys.argv[1]}/probe_{v}/metrics.csv")))[-1]["steps_per_s"])
          for v in ("mole", "full")))
EOF
}
rate=0
if [ "$train_s" != 0 ]; then
  for v in mole full; do
    train "probe_$v" "$recipe/stage_v_$v.yaml" "$work/probe_$v" "$probe_steps" --batch-size "${BATCH:-256}" --workers 5 &
  done
  wait
  rate=$(probe_rate) || { log "probe failed"; tail -n 20 "$work"/probe_*.log; cp "$work"/probe_*.log "$out/"; rate=0; }
  steps=$(python3 -c "print(max($probe_steps, min(20000, int($rate * $train_s * 0.9) // 100 * 100)))")
  log "probe: $rate steps/s with both runs on the GPU -> $steps steps each"
fi

# 2. the 7B presets, random weights drawn on the GPU, bf16, full vs MoLe interleaved; on CUDA the report also
# holds the weights' and each run's peak GPU memory
for p in $presets; do
  log "bench $p"
  timeout 150 python3 -m mole_inference.cli bench --preset "$p" --device "$device" --dtype "$dtype" --iters 20 \
    --warmup 5 --json > "$work/bench_$p.json" 2> "$work/bench_$p.err" || { log "bench $p failed"; tail -n 5 "$work/bench_$p.err"; }
  python3 -c "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))" "$work/bench_$p.json" \
    >> "$out/bench.jsonl" || true
done
log "bench done"

# 3. stage V proper
[ "$rate" = 0 ] && { ls -la "$out"; [ "$train_s" = 0 ]; exit; }  # bench only: success; a failed probe: 1
for v in mole full; do
  train "$v" "$recipe/stage_v_$v.yaml" "$work/$v" "$steps" --batch-size "${BATCH:-256}" --workers 5 &
done
wait
log "training done"
for v in mole full; do
  ck=$(cat "$work/$v/checkpoints/latest") || { tail -n 20 "$work/$v.log"; continue; }
  tail -n 2 "$work/$v.log"
  tar -cf "$out/$v.tar" -C "$work/$v" "checkpoints/$ck/model.safetensors" "checkpoints/$ck/config.yaml" \
    "checkpoints/$ck/action_stats.json" metrics.csv
done
cp "$work/mole.log" "$out/mole.log" 2>/dev/null
ls -la "$out"
