"""Where our GPU training step's peak memory comes from: device memory after init, compile and steps."""

import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

sys.path.insert(0, os.getcwd())
from muse_styledrop import train  # noqa: E402
from muse_styledrop.models import presets  # noqa: E402
from muse_styledrop.models.adapters import AdapterConfig, AdapterParam  # noqa: E402
from muse_styledrop.models.uvit import UVit2DModel  # noqa: E402


def gb(tag):
  s = jax.devices()[0].memory_stats()
  print(f"{tag:28s} in use {s['bytes_in_use'] / 1e9:6.2f} GB  peak {s['peak_bytes_in_use'] / 1e9:6.2f} GB", flush=True)


gb("start")
model = UVit2DModel(presets.AMUSED_256_TRANSFORMER, rngs=nnx.Rngs(0))
gb("after random init")
model.attach_adapters(AdapterConfig(), nnx.Rngs(1))
graphdef, trainable, frozen = nnx.split(model, AdapterParam, ...)
tx = train.make_optimizer(
  ml_collections.ConfigDict(
    dict(learning_rate=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, grad_clip=0.0, warmup_steps=0)
  )
)
opt_state = tx.init(trainable)
k = jax.random.split(jax.random.key(0), 3)
data = train.StyleData(
  jax.random.randint(k[0], (8, 16, 16), 0, 8192),
  jnp.zeros((8,), jnp.int32),
  jax.random.normal(k[1], (1, 77, 768)),
  jax.random.normal(k[2], (1, 768)),
  jnp.zeros((77, 768)),
  jnp.zeros((768,)),
  jnp.asarray([256.0, 256, 0, 0, 6]),
)
step = jax.jit(
  train.make_train_steps(graphdef, tx, steps=1, batch_size=8, mask_id=8255, text_dropout=0.0, use_adapter=True),
  donate_argnums=(0, 2),
)
compiled = step.lower(trainable, frozen, opt_state, jax.random.key(1), data).compile()
gb("after compile")
m = compiled.memory_analysis()
print(
  f"XLA memory analysis: temp {m.temp_size_in_bytes / 1e9:.2f} GB, args {m.argument_size_in_bytes / 1e9:.2f} GB, "
  f"out {m.output_size_in_bytes / 1e9:.2f} GB"
)
rng = jax.random.key(1)
for _ in range(3):
  trainable, opt_state, rng, metrics = compiled(trainable, frozen, opt_state, rng, data)
jax.block_until_ready(metrics)
gb("after 3 steps")
