"""The published aMUSEd-256 architecture at full size: parameter count and one forward on this CPU."""

import os
import subprocess
import sys

import jax
import numpy as np
import torch
from flax import nnx

from muse_styledrop import weights
from muse_styledrop.models import presets
from muse_styledrop.models.uvit import UVit2DModel
from muse_styledrop.models.vq import VQModel


def count(state):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))


def test_full_size_parameter_counts_equal_diffusers():
  from diffusers import UVit2DModel as TorchUVit
  from diffusers import VQModel as TorchVQ

  for config in (presets.AMUSED_256_TRANSFORMER, presets.AMUSED_512_TRANSFORMER):
    ours = nnx.eval_shape(lambda c=config: UVit2DModel(c, rngs=nnx.Rngs(0)))
    with torch.device("meta"):
      ref = TorchUVit.from_config(weights.uvit_config_dict(config))  # the config.json we would write
    assert count(nnx.state(ours, nnx.Param)) == sum(p.numel() for p in ref.parameters())
  assert count(nnx.state(ours, nnx.Param)) > 600_000_000
  vq = presets.AMUSED_VQ
  ours = nnx.eval_shape(lambda: VQModel(vq, rngs=nnx.Rngs(0)))
  n = len(vq.block_out_channels)
  with torch.device("meta"):
    ref = TorchVQ(
      block_out_channels=vq.block_out_channels,
      layers_per_block=2,
      latent_channels=64,
      num_vq_embeddings=8192,
      norm_num_groups=32,
      down_block_types=("DownEncoderBlock2D",) * n,
      up_block_types=("UpDecoderBlock2D",) * n,
      mid_block_add_attention=False,
    )
  assert count(nnx.state(ours, nnx.Param)) == sum(p.numel() for p in ref.parameters())


FORWARD = """
import jax.numpy as jnp
from flax import nnx
from muse_styledrop.models import presets
from muse_styledrop.models.uvit import UVit2DModel
from muse_styledrop.frozen import frozen_jit

import jax
graphdef, state = nnx.split(nnx.eval_shape(lambda: UVit2DModel(presets.AMUSED_256_TRANSFORMER, rngs=nnx.Rngs(0))))
# constant weights: the forward's size and compile are what is checked, and drawing 600M random numbers is slow
model = nnx.merge(graphdef, jax.tree.map(lambda x: jnp.full(x.shape, 0.01, x.dtype), state))
logits = frozen_jit(lambda m, *a: m(*a), model)(
  jnp.full((1, 16, 16), 8255), jnp.zeros((1, 77, 768)), jnp.zeros((1, 768)), jnp.asarray([[256.0, 256.0, 0, 0, 6.0]])
)
print(logits.shape, bool(jnp.isfinite(logits).all()))
"""


def test_one_full_size_forward_runs_on_cpu():
  # its own process, compiled as a user's is: the suite's XLA flags trade run time for compile time (conftest.py)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  result = subprocess.run([sys.executable, "-c", FORWARD], capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split("\n")[-2] == "(1, 16, 16, 8192) True"
