#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the device tool): our speed and memory against diffusers on the GPU.
# Needs wheels in .whl/ (diffusers, ml_collections, importlib_metadata; flax in .whl/flax if the machine's is old):
# see docs/performance.md. Writes logs and JSON under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
python3 -c "import flax, sys; sys.exit(0 if tuple(map(int, flax.__version__.split('.')[:2])) >= (0, 12) else 1)" \
  || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/flax/*.whl
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, torch, diffusers, transformers; print('jax', jax.__version__, jax.devices(), 'flax', \
flax.__version__, 'torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', \
transformers.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
python3 benchmarks/amused_speed.py --torch_device=cuda --batches 2 32 --repeats=10 --sample_repeats=3 \
  --out="$OUT/amused_speed_gpu.json" 2>&1 | grep -v -i "deprecat\|warn" | tee "$OUT/amused_speed_gpu.log"
python3 benchmarks/train_step.py --torch_device=cuda --impls ours-bottleneck ours-lora diffusers-lora \
  --batches 8 --repeats 1 --steps 10 --out="$OUT/train_step_gpu.json" 2>&1 | tee "$OUT/train_step_gpu.log"
