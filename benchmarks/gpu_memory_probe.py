"""Where our GPU training step's peak memory comes from: device memory after init, compile and steps."""

import jax
import train_step  # benchmarks/ sibling


def gb(tag):
  s = jax.devices()[0].memory_stats()
  if not s:
    raise SystemExit("this probe reads GPU memory statistics; run it on a GPU (benchmarks/gpu.sh)")
  print(f"{tag:28s} in use {s['bytes_in_use'] / 1e9:6.2f} GB  peak {s['peak_bytes_in_use'] / 1e9:6.2f} GB", flush=True)


gb("start")
step, (trainable, frozen, opt_state, rng, data) = train_step.ours_setup("bottleneck", 8)
gb("after random init")
compiled = step.lower(trainable, frozen, opt_state, rng, data).compile()
gb("after compile")
m = compiled.memory_analysis()
print(
  f"XLA memory analysis: temp {m.temp_size_in_bytes / 1e9:.2f} GB, args {m.argument_size_in_bytes / 1e9:.2f} GB, "
  f"out {m.output_size_in_bytes / 1e9:.2f} GB"
)
for _ in range(3):
  trainable, opt_state, rng, metrics = compiled(trainable, frozen, opt_state, rng, data)
jax.block_until_ready(metrics)
gb("after 3 steps")
