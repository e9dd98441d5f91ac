#!/usr/bin/env bash
# Pretrain the embedded base's U-ViT on a lent GPU machine (the device tool's `run`), time-boxed.
#
# The machine has jax, flax, optax, orbax and transformers but not ml_collections, no package index, and takes a
# working tree of at most 64 MiB, so the pictures (740 MB) stay here: the workdir travels with tokens.npz only
# (tokens + captions + labels, ~6 MB), made here by any run of the same config on this VQ. Prepare, here:
#
#   mkdir -p runs/pretrain_uvit_anchored_gpu && cp runs/pretrain_uvit_anchored/tokens.npz runs/pretrain_uvit_anchored_gpu/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl ml_collections==1.1.0
#
# (extra arguments pass to the trainer, e.g. --config.steps=100). Then call the device tool's run with
#   command: bash benchmarks/gpu_pretrain_uvit.sh     timeout_s: 600
#   carry: [".whl/ml_collections-1.1.0-py3-none-any.whl", "runs/pretrain_uvit_anchored_gpu/tokens.npz",
#           "runs/pretrain_vq_anchored_decoder/export/vqvae", "runs/pretrain_clip/export/text_encoder",
#           "runs/pretrain_clip/export/tokenizer"]
#
# What comes back under $OUT: shapes_base.tar (the exported base directory, half precision), summary.json (steps
# reached, the base's grades under both samplers), metrics.jsonl and log.txt. The config's max_seconds stops
# training in time for the export and grading; the checkpoints stay on the machine, which starts bare next time.
set -euo pipefail
CONFIG=${CONFIG:-configs/pretrain_uvit.py:anchored_gpu}
WORKDIR=${WORKDIR:-runs/pretrain_uvit_anchored_gpu}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/ml_collections-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
status=0
python3 -m muse_styledrop.pretrain --config="$CONFIG" --workdir="$WORKDIR" "$@" 2>&1 | tr '\r' '\n' | grep -v '^$' \
  > "$OUT/log.txt" || status=$?
tail -n 30 "$OUT/log.txt"
cp "$WORKDIR/metrics.jsonl" "$OUT/" 2>/dev/null || true
if [ -f "$WORKDIR/summary.json" ]; then
  cp "$WORKDIR/summary.json" "$OUT/"
  tar -C "$WORKDIR/export" -cf "$OUT/shapes_base.tar" shapes_base
fi
exit "$status"
