#!/usr/bin/env bash
# The prepared GPU session of issues 15 (speed on CUDA) and 17 (portrait training on a GPU).
#
# Device time is short (15 minutes a session, a machine's start included), so everything runs
# as ONE command that fits the 10-minute limit of a call:
#
#   bash bench/device_session.sh prepare          # here: fixtures -> .device/ (ignored by git)
#   device run: command="bash bench/device_session.sh run", timeout_s=600, carry=[".device"]
#
# `run` (on the GPU machine; $OUT is the folder that comes back, default ./device_out), in order
# of importance, so that the deadline cuts the least useful steps:
#   1. parity: each model's deterministic frame on CUDA, both paths, against the CPU reference
#      (bench/render_speed.py --parity);
#   2. the committed portrait run continued for TRAIN_S seconds (timeout sends SIGINT: train.py
#      writes a snapshot and exits), on data generated there with the model card's command;
#   3. render speed on CUDA, reference vs fast per stage with the GPU's limit line, the orbit
#      frame eager and as a CUDA graph (bench/render_speed.py --graph);
#   4. a training step at the ffhq512 architecture, reference vs fast ray marcher
#      (bench/train_speed.py; 8 steps, so without the lazy R1 step);
#   5. parity and render speed with the backbone and SR in bf16 / fp16, then torch.compile.
# Each step has its own time box, so a slow or failing step costs only its share. Results:
# $OUT/session.log (every step's output), $OUT/train.log, $OUT/portrait-run-gpu.safetensors
# (the run's last snapshot: G, G_ema, D, optimiser states). Bring the snapshot back and evaluate
# it here with the model card's metrics command before anything replaces a shipped file.
#
# Knobs (environment): DEADLINE_S (default 560: seconds from the start after which nothing new
# starts), TRAIN_S (default 200), TRAIN_BATCH (default 32: the GPU idles at the CPU run's
# batch 8), RUN (default checkpoints/training/portrait-run.safetensors), DATA (an existing
# dataset instead of generating one).
set -uo pipefail
cd "$(dirname "$0")/.."

DEV=.device                       # the carried folder (ignored by .gitignore)
MODE=${1:-}

if [ "$MODE" = prepare ]; then
  set -e
  mkdir -p "$DEV"
  src=../shared/fixtures/eg3d_official
  for name in tiny128 small512; do
    python3 -m model.convert "$src/$name.pkl" "$DEV/$name.safetensors"     # G_ema only
    ls -l "$DEV/$name.safetensors"
  done
  echo "prepared $DEV; now: device run command='bash bench/device_session.sh run' timeout_s=600 carry=['$DEV']"
  exit 0
fi
if [ "$MODE" != run ]; then
  echo "usage: bash bench/device_session.sh prepare|run" >&2
  exit 2
fi

OUT=${OUT:-device_out}
mkdir -p "$OUT"
DEADLINE_S=${DEADLINE_S:-560}
TRAIN_BATCH=${TRAIN_BATCH:-32}
TRAIN_S=${TRAIN_S:-200}
RUN=${RUN:-checkpoints/training/portrait-run.safetensors}
export PYTHONUNBUFFERED=1
LOG="$OUT/session.log"
START=$(date +%s)
left() { echo $(( DEADLINE_S - ($(date +%s) - START) )); }

step() {     # step SECONDS TITLE COMMAND...: run with a time box (and never past the deadline)
  local box=$1 title=$2
  shift 2
  local budget
  budget=$(left)
  [ "$box" -gt "$budget" ] && box=$budget
  if [ "$box" -le 5 ]; then
    echo "== $title: skipped (deadline)" | tee -a "$LOG"
    return
  fi
  echo "== $title (at most ${box} s): $*" | tee -a "$LOG"
  local t0
  t0=$(date +%s)
  timeout -k 10 "$box" "$@" >> "$LOG" 2>&1
  echo "== $title: exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} >> "$LOG" 2>&1

# The dataset (CPU work) is made while the first GPU step runs; the training waits for it.
DATA=${DATA:-/tmp/portrait64.zip}
DATA_PID=
if [ ! -e "$DATA" ]; then
  python3 -m training.synthetic --dest "$DATA" --count 6000 --resolution 64 --cameras portrait \
    --seed 0 --bias 0.8 --no-progress > /tmp/synthetic.log 2>&1 &
  DATA_PID=$!
fi

FIX=(--fixtures "$DEV")
step 60 "parity fp32" python3 bench/render_speed.py --device cuda --parity "${FIX[@]}" --models portrait tiny128 small512 ffhq512

if [ -n "$DATA_PID" ]; then
  wait "$DATA_PID"
  cat /tmp/synthetic.log >> "$LOG"
fi
box=$(( TRAIN_S < $(left) - 20 ? TRAIN_S : $(left) - 20 ))
echo "== training (at most $box s): from $RUN, batch $TRAIN_BATCH" | tee -a "$LOG"
timeout -k 30 -s INT "$box" python3 train.py --resume "$RUN" --data "$DATA" --outdir /tmp/runs \
  --batch "$TRAIN_BATCH" --workers 4 --threads 8 --kimg 100000 --tick 4 --snap 1 --image-snap 0 \
  > "$OUT/train.log" 2>&1
echo "== training: exit $?" | tee -a "$LOG"
last=$(ls -t /tmp/runs/*/network-snapshot-*.safetensors 2>/dev/null | head -1)
if [ -n "$last" ]; then
  cp "$last" "$OUT/portrait-run-gpu.safetensors"
  echo "== snapshot: $last -> $OUT/portrait-run-gpu.safetensors" | tee -a "$LOG"
fi

step 90 "render fp32" python3 bench/render_speed.py --device cuda --graph --repeats 5 "${FIX[@]}"
step 120 "train step" python3 bench/train_speed.py --cfg ffhq --resolution 512 --batch 32 --batch-gpu 4 --device cuda --steps 8 --warmup 1 --compare render_path=fast
step 30 "parity bf16" python3 bench/render_speed.py --device cuda --parity --amp bf16 "${FIX[@]}" --models portrait small512 ffhq512
step 30 "parity fp16" python3 bench/render_speed.py --device cuda --parity --amp fp16 "${FIX[@]}" --models portrait small512 ffhq512
step 45 "render bf16" python3 bench/render_speed.py --device cuda --graph --repeats 5 --amp bf16 "${FIX[@]}" --models small512 ffhq512
step 60 "render compile" python3 bench/render_speed.py --device cuda --graph --compile --repeats 5 --models ffhq512
echo "== done after $(( $(date +%s) - START )) s" | tee -a "$LOG"
