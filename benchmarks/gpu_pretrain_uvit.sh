#!/usr/bin/env bash
# Pretrain the embedded base's U-ViT on a lent GPU machine (the device tool's `run`), fitted to its minutes.
#
# The machine has jax, flax, optax, orbax and transformers but not ml_collections, no package index, and takes a
# working tree of at most 64 MiB, so the pictures (740 MB) stay here: the workdir travels with tokens.npz only
# (tokens + captions + labels, 6-17 MB), made here by any run of the same config on this VQ. Prepare, here (the
# 2x2-token base continued from its CPU run, configs/pretrain_uvit.py:anchored_2px_gpu):
#
#   mkdir -p runs/pretrain_uvit_2px_gpu && cp runs/pretrain_uvit_2px_warm/tokens.npz runs/pretrain_uvit_2px_gpu/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl ml_collections==1.1.0 tensorboardX flax==0.12.8 optax==0.2.8 \
#     orbax-checkpoint==0.12.8
#
# then call the device tool's run with
#   command: bash benchmarks/gpu_pretrain_uvit.sh     timeout_s: 600
#   carry: [".whl", "runs/pretrain_uvit_2px_gpu/tokens.npz", "runs/pretrain_vq_2px_decoder/export/vqvae",
#           "runs/pretrain_uvit_2px_warm/export/shapes_base/transformer"]
#
# It first runs 150 steps in a scratch workdir with the machine's own flax, optax and orbax (and, if that fails,
# with the carried versions this project tests with): that checks every stage (warm start, steps, checkpoint,
# export, grading) and times a call of steps after compiling. It then sets config.steps so that the cosine schedule
# ends DEADLINE seconds after the start with export and grading done, and runs. Extra arguments pass to both runs.
#
# What comes back under $OUT: shapes_base.tar (the exported base directory, half precision), summary.json (steps
# reached, the base's grades under both samplers), metrics.jsonl, probe.json and log.txt. The checkpoints stay on
# the machine, which starts bare next time.
set -uo pipefail
CONFIG=${CONFIG:-configs/pretrain_uvit.py:anchored_2px_gpu}
WORKDIR=${WORKDIR:-runs/pretrain_uvit_2px_gpu}
DEADLINE=${DEADLINE:-560}  # seconds after the start by which all is under $OUT (a device command may run 600)
GRADING_EXTRA=${GRADING_EXTRA:-45}
OUT=${OUT:-/tmp/gpu_out}
PROBE=/tmp/probe_workdir
mkdir -p "$OUT"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@"; }
versions() { python3 -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, jax.devices(), \
'flax', flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__)"; }
probe() {
  rm -rf "$PROBE" && mkdir -p "$PROBE" && cp "$WORKDIR/tokens.npz" "$PROBE/"
  python3 -m muse_styledrop.pretrain --config="$CONFIG" --workdir="$PROBE" --config.steps=150 \
    --config.evals.shapes_base.prompts=8 --config.max_seconds=0 "$@" 2>&1 | tr '\r' '\n' | grep -v '^$' >> "$OUT/log.txt"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
install .whl/ml_collections-*.whl .whl/tensorboard[xX]-*.whl || exit 1
versions 2>&1 | tee -a "$OUT/log.txt"
echo "== probe with the machine's packages" | tee -a "$OUT/log.txt"
PROBE_START=$SECONDS
if ! probe "$@"; then
  echo "== probe failed; again with the carried flax, optax, orbax" | tee -a "$OUT/log.txt"
  tail -n 15 "$OUT/log.txt"
  install .whl/flax-*.whl .whl/optax-*.whl .whl/orbax_checkpoint-*.whl || exit 1
  versions 2>&1 | tee -a "$OUT/log.txt"
  PROBE_START=$SECONDS
  probe "$@" || { tail -n 30 "$OUT/log.txt"; exit 1; }
fi
PROBE_WALL=$((SECONDS - PROBE_START))
# Seconds per step from the first two logged calls, which are a call apart; on the GPU the last row came right after
# the one before it (session 12: 0.15 s for 50 steps that took 2.4 s; reading a call's metrics back seems to wait for
# the call queued behind it too, docs/research/gpu_runs.md). The probe's other costs
# (starting, loading, compiling, export, grading) stand for the real run's, plus GRADING_EXTRA for its 200 prompts;
# the rest of the DEADLINE is training, so the cosine schedule ends in time. config.max_seconds is the backstop.
PLAN=$(python3 - "$PROBE" "$PROBE_WALL" "$((DEADLINE - SECONDS))" "$GRADING_EXTRA" "$OUT/probe.json" <<'EOF'
import json, sys
workdir, probe_wall, left, extra, out = sys.argv[1], *map(float, sys.argv[2:5]), sys.argv[5]
rows = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
call = rows[1]["step"] - rows[0]["step"]  # config.steps_per_call
per_step = (rows[1]["time"] - rows[0]["time"]) / call
loop = json.load(open(f"{workdir}/summary.json"))["train_seconds"]
compiling = max(loop - rows[-1]["step"] * per_step, 0.0)
other = probe_wall - loop
train = left - compiling - other - extra
steps = max(call, int(train / per_step) // call * call)
plan = dict(seconds_per_step=per_step, compiling=compiling, other=other, seconds_left=left, train_seconds=train,
            steps=steps, max_seconds=int(train + compiling + 20))
json.dump(plan, open(out, "w"), indent=1)
print(steps, plan["max_seconds"])
EOF
) || exit 1
read -r STEPS MAX_SECONDS <<< "$PLAN"
echo "== probe: $(cat "$OUT/probe.json"); training $STEPS steps, max_seconds $MAX_SECONDS" | tee -a "$OUT/log.txt"
status=0
python3 -m muse_styledrop.pretrain --config="$CONFIG" --workdir="$WORKDIR" --config.steps="$STEPS" \
  --config.max_seconds="$MAX_SECONDS" "$@" 2>&1 \
  | tr '\r' '\n' | grep -v '^$' >> "$OUT/log.txt" || status=$?
tail -n 30 "$OUT/log.txt"
cp "$WORKDIR/metrics.jsonl" "$OUT/" 2>/dev/null || true
if [ -f "$WORKDIR/summary.json" ]; then
  cp "$WORKDIR/summary.json" "$OUT/"
  tar -C "$WORKDIR/export" -cf "$OUT/shapes_base.tar" shapes_base
fi
exit "$status"
