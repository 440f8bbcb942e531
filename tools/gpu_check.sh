#!/usr/bin/env bash
# The first GPU run, in ONE call on a lent GPU machine (its image has torch, torchvision, torchaudio,
# click, tqdm, scikit-learn, matplotlib, pillow, safetensors, pytest; no webdataset, braceexpand,
# ffmpeg, DALI or package registry). Prepare it here first: bash tools/gpu_prepare.sh (makes .gpu/),
# then run, with .gpu carried:
#
#   bash tools/gpu_check.sh                      # results in $OUT (default .gpu/out), at most 7 files
#   (from a session with a device machine: run command "bash tools/gpu_check.sh", carry [".gpu"], timeout_s 600)
#   GPU_CHECK_DRY_RUN=1 bash tools/gpu_check.sh  # anywhere: every command checked with --help / --collect-only,
#                                                # and one tiny CPU training step on the carried shards
#
# Steps, in order of importance (each under a time limit; all together under GPU_CHECK_SECONDS, default
# 540, so the later ones are cut first):
#   env         nvidia-smi, torch and the GPU, and that every package the run needs imports
#   pytest      pytest -m gpu -rs on the test files that hold GPU tests
#   bench_gpu   tools/bench_gpu.py: the torch-on-GPU loader, the CPU loader, the full model's AMP step (clips/s)
#   train_step  tools/bench_train_step.py on CUDA: the trainer's step with bf16 and fp16, LARC foreach vs loop
#   train       crisscross train on .gpu/shards: bf16 3 steps, --resume auto to 6 (resume on CUDA), fp16, --deterministic
# and writes summary.txt (one line per step: exit code, seconds) plus one .txt per step and the bf16 run's log.csv.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/.gpu/out}
DRY=${GPU_CHECK_DRY_RUN:-}
DEADLINE=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-540} ))
RUNS=$(mktemp -d)
mkdir -p "$OUT"
: > "$OUT/summary.txt"

die() { echo "gpu_check: $*" | tee -a "$OUT/summary.txt" >&2; exit 2; }

[ -d .gpu/wheels ] && [ -f .gpu/shards/manifest.json ] \
    || die "no .gpu/wheels or .gpu/shards here: run bash tools/gpu_prepare.sh on a machine with ffmpeg and a package registry, and carry .gpu"
if [ -z "$DRY" ]; then
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        || die "torch sees no CUDA device (torch.cuda.is_available() is False); run this on the GPU machine, or set GPU_CHECK_DRY_RUN=1 to check the commands only"
fi
site=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .gpu/wheels/*.whl \
    || die "installing the carried wheels (.gpu/wheels) into $site failed"
export PYTHONPATH="$PWD:$site" AVSHARDS_MEDIA="$PWD/.gpu/media" OMP_NUM_THREADS=4

# step NAME SECONDS CMD...: run CMD (in a dry run: CMD --help) with its output in $OUT/NAME.txt
step() {
    local name=$1 limit=$2 left start rc
    shift 2
    left=$(( DEADLINE - $(date +%s) ))
    [ "$limit" -lt "$left" ] || limit=$left
    if [ "$limit" -le 5 ]; then echo "$name skipped: the time is up" | tee -a "$OUT/summary.txt"; return; fi
    echo "== $name (at most ${limit}s): $*"
    start=$(date +%s)
    if [ -n "$DRY" ] && [[ " $* " != *" --collect-only "* ]]; then set -- "$@" --help; fi
    timeout "$limit" "$@" >> "$OUT/$name.txt" 2>&1
    rc=$?
    echo "$name: exit $rc, $(( $(date +%s) - start )) s${DRY:+ (dry run)}" | tee -a "$OUT/summary.txt"
    tail -n 4 "$OUT/$name.txt"
}

# The paper's model (the tiny-cpu preset's other values): the full network's resume and AMP on CUDA.
TRAIN=("$PY" -m crisscross.cli -v train .gpu/shards --model paper --device cuda --batch-size 8 --epoch-size 0
       --workers 2 --quiet)

rm -f "$OUT"/{env,pytest,bench_gpu,train_step,train}.txt
step env 60 sh -c 'nvidia-smi; "$0" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else \"no GPU\")"; "$0" -c "import webdataset, braceexpand, ffmpeg, yaml, matplotlib, safetensors, sklearn, tqdm, click; print(\"imports: ok\")"' "$PY"
if [ -n "$DRY" ]; then
    step pytest 120 "$PY" -m pytest -m gpu -q -p no:cacheprovider --collect-only $(grep -l "mark.gpu" tests/test_*.py)
else
    step pytest 200 "$PY" -m pytest -m gpu -rs -q -p no:cacheprovider $(grep -l "mark.gpu" tests/test_*.py)
fi
step bench_gpu 150 "$PY" tools/bench_gpu.py --shards .gpu/shards --only torch-gpu,torch-cpu,train-amp --clips 128 \
    --batch-size 16 --workers 4 --train-batch 64 --train-steps 10
step train_step 90 "$PY" tools/bench_train_step.py --device cuda --amp bf16 --batch-size 32 --steps 10
step train_step 60 "$PY" tools/bench_train_step.py --device cuda --amp fp16 --batch-size 32 --steps 10
step train 90 "${TRAIN[@]}" --amp bf16 --steps 6 --stop-after 3 --log-every 2 --out "$RUNS/bf16"
step train 90 "${TRAIN[@]}" --amp bf16 --steps 6 --log-every 2 --out "$RUNS/bf16" --resume auto
if [ -n "$DRY" ]; then   # the carried shards and wheels, for real: one tiny step on the CPU
    DRY= step train 240 "$PY" -m crisscross.cli -v train .gpu/shards --device cpu --batch-size 2 --epoch-size 4 \
        --steps 1 --workers 1 --quiet --out "$RUNS/cpu"
fi
[ -f "$RUNS/bf16/log.csv" ] && cp "$RUNS/bf16/log.csv" "$OUT/log.csv"
step train 60 "${TRAIN[@]}" --amp fp16 --steps 4 --log-every 2 --out "$RUNS/fp16"
step train 60 "${TRAIN[@]}" --amp bf16 --steps 2 --deterministic --out "$RUNS/det"
rm -rf "$RUNS"
echo "done: $OUT/summary.txt"
cat "$OUT/summary.txt"
