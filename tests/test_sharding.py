"""Logical axis names on every parameter, rules to mesh axes, weights loaded into their shards, sampling on a mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from muse_styledrop import configs, sampling, sharding
from muse_styledrop.models import presets
from muse_styledrop.models.adapters import AdapterConfig
from muse_styledrop.models.clip import CLIPConfig, CLIPModel, TowerConfig
from muse_styledrop.models.uvit import UVit2DModel, UVitConfig
from muse_styledrop.models.vq import VQModel
from muse_styledrop.pipeline import Pipeline

RULES = configs.sharding_rules().to_dict()


def abstract(build):
  return nnx.state(nnx.eval_shape(build))


def uvit_with(adapter: AdapterConfig, **changes):
  """aMUSEd-256's layers at full width (two of them: names do not depend on depth), with an adapter bank."""
  changes = {"num_hidden_layers": 2, **changes}

  def build():
    model = UVit2DModel(UVitConfig(**{**presets.AMUSED_256_TRANSFORMER.__dict__, **changes}), rngs=nnx.Rngs(0))
    model.attach_adapters(adapter, nnx.Rngs(1))
    return model

  return build


MODULES = {
  "uvit-256 + bottleneck blocks/head": uvit_with(AdapterConfig(blocks=True, head=True, bank_size=2)),
  "uvit-512 + lora": uvit_with(AdapterConfig(kind="lora"), downsample=True, upsample=True, sample_size=32),
  "uvit + position grid": uvit_with(AdapterConfig(shared=False), position_embedding_grid=(16, 16)),
  "vq": lambda: VQModel(presets.AMUSED_VQ, rngs=nnx.Rngs(0)),
  "clip text": lambda: CLIPModel(presets.CLIP_L14_TEXT, rngs=nnx.Rngs(0)),
  "clip both": lambda: CLIPModel(CLIPConfig(TowerConfig(), TowerConfig(), with_logit_scale=True), rngs=nnx.Rngs(0)),
}


@pytest.mark.parametrize("name", MODULES)
def test_every_parameter_names_each_of_its_dimensions_and_every_name_has_a_rule(name):
  state = abstract(MODULES[name])
  flat = nnx.to_flat_state(state)
  assert flat
  for path, var in flat:
    names = sharding.logical_names(var, ".".join(map(str, path)))
    assert all(n in RULES for n in names), (path, names)


def test_an_unannotated_parameter_or_a_name_without_a_rule_is_an_error():
  class Bare(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.zeros((4, 4)))

  mesh = sharding.make_mesh({"fsdp": -1})
  with pytest.raises(sharding.ShardingError, match="w of shape .4, 4. has logical axis names None"):
    sharding.state_shardings(mesh, nnx.state(Bare()), RULES)
  with pytest.raises(sharding.ShardingError, match="'embed' has no rule in config.sharding.rules"):
    sharding.spec(mesh, ("embed",), (8,), {})


def bytes_per_device(states, mesh):
  total = 0
  for state in states:
    shardings = sharding.state_shardings(mesh, state, RULES)
    total += sharding.bytes_per_device(zip(jax.tree.leaves(shardings), jax.tree.leaves(state)))
  return total


def test_fsdp_over_eight_devices_holds_an_eighth_of_the_full_size_base_on_each():
  full_uvit = lambda: UVit2DModel(presets.AMUSED_256_TRANSFORMER, rngs=nnx.Rngs(0))
  states = [abstract(build) for build in (MODULES["vq"], MODULES["clip text"], full_uvit)]
  one = bytes_per_device(states, sharding.make_mesh({"fsdp": 1}))
  eight = bytes_per_device(states, sharding.make_mesh({"fsdp": 8}))
  assert one > 2.5e9  # amused-256's transformer, VQ and CLIP text tower in fp32
  assert eight == pytest.approx(one / 8, rel=0.01)


def test_rules_alone_give_tensor_parallel_and_replicated_adapters():
  mesh = sharding.make_mesh({"fsdp": 2, "model": 4})
  state = abstract(uvit_with(AdapterConfig()))
  specs = {
    ".".join(map(str, p)): s.get_value().spec
    for p, s in nnx.to_flat_state(sharding.state_shardings(mesh, state, RULES))
  }
  assert specs["transformer_layers.0.attn1.to_q.kernel"] == jax.sharding.PartitionSpec("fsdp", "model")
  assert specs["transformer_layers.0.attn1.to_out.0.kernel"] == jax.sharding.PartitionSpec("model", "fsdp")
  assert specs["transformer_layers.0.ff.net.0.proj.kernel"] == jax.sharding.PartitionSpec("fsdp", "model")
  assert specs["adapters.ff.wd"] == jax.sharding.PartitionSpec(None, None, None)
  # A dimension the mesh does not divide stays whole: 8256 tokens over 'model' = 4 divides; the RMS scale is a norm.
  assert specs["embed.embeddings.embedding"] == jax.sharding.PartitionSpec("model", "fsdp")
  assert specs["transformer_layers.0.norm1.norm.scale"] == jax.sharding.PartitionSpec(None)
  assert sharding.spec(mesh, ("embed", "mlp"), (3, 4), RULES) == jax.sharding.PartitionSpec(None, "model")


@pytest.fixture(scope="session")
def pipelines(amused_dir):
  """The tiny base on one device, and on a data 2 x fsdp 2 x model 2 mesh (shared: each compiles its own)."""
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
  return Pipeline.from_pretrained(amused_dir), Pipeline.from_pretrained(amused_dir, mesh=mesh, rules=RULES)


def test_weights_load_straight_into_their_shards_with_the_values_of_a_one_device_load(pipelines):
  one, spread = pipelines
  mesh = spread.mesh
  assert spread.fingerprint == one.fingerprint
  for module in ("transformer", "vqvae", "text_encoder"):
    a, b = nnx.state(getattr(one, module)), nnx.state(getattr(spread, module))
    want = sharding.state_shardings(mesh, b, RULES)
    for (path, x), (_, y), (_, sh) in zip(nnx.to_flat_state(a), nnx.to_flat_state(b), nnx.to_flat_state(want)):
      assert y[...].sharding == sh.get_value(), path
      np.testing.assert_array_equal(np.asarray(y[...]), np.asarray(x[...]))
  sharded = [p for p, v in nnx.to_flat_state(nnx.state(spread.transformer)) if not v[...].is_fully_replicated]
  assert len(sharded) > 10


def test_the_sampler_on_a_mesh_gives_one_devices_logits_and_tokens(pipelines):
  one, spread = pipelines
  settings = sampling.SamplingSettings(
    steps=4, temperature=(1.0, 0.0), token_temperature=1.0, guidance_scale=2.0, lambda_a=1.0, lambda_b=2.0
  )
  prompts = ["a red cat", "a blue dog", "a house", "a cat in watercolor painting style"]
  a = one.draw_tokens(prompts, settings, seed=3)
  b = spread.draw_tokens(prompts, settings, seed=3)
  np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
  # Logits at the states the decoding passed through (all masked, then each step's tokens, part masked again).
  text, pooled = one.encode_prompts(prompts)
  micro = one.micro_conds(4, 16, 16)
  forward = jax.jit(lambda m, *x: m(*x))
  for ratio in (1.0, 0.75, 0.4, 0.1):
    masked = jnp.where(jax.random.uniform(jax.random.key(0), a.shape) < ratio, one.mask_token_id, a)
    la = forward(one.transformer, masked, text, pooled, micro)
    lb = forward(spread.transformer, masked, text, pooled, micro)
    np.testing.assert_allclose(np.asarray(lb), np.asarray(la), rtol=1e-5, atol=1e-5)


# bf16 weights and activations against fp32, on the tiny random base: the largest logit difference is within 8% of
# the logits' spread (measured 4.3%: bf16 keeps 8 bits of mantissa, about 0.4% per rounding, over a dozen layers),
# and the likeliest token mostly agrees.
BF16_LOGITS_RTOL = 0.08


def test_bf16_logits_are_fp32_logits_within_the_stated_tolerance(amused_dir, pipelines):
  fp32 = pipelines[0]
  bf16 = Pipeline.from_pretrained(amused_dir, jnp.bfloat16)
  assert bf16.transformer.transformer_layers[0].attn1.to_q.kernel.dtype == jnp.bfloat16
  assert bf16.vqvae.encoder.conv_in.kernel.dtype == jnp.float32
  prompts = ["a red cat", "a blue dog in watercolor painting style"]
  tokens = jax.random.randint(jax.random.key(0), (2, 4, 4), 0, 40)
  tokens = jnp.where(jax.random.uniform(jax.random.key(1), tokens.shape) < 0.5, fp32.mask_token_id, tokens)
  logits, forward = {}, jax.jit(lambda m, *x: m(*x))
  for name, pipe in (("fp32", fp32), ("bf16", bf16)):
    text, pooled = pipe.encode_prompts(prompts)
    logits[name] = forward(pipe.transformer, tokens, text, pooled, pipe.micro_conds(2, 16, 16))
  assert logits["bf16"].dtype == jnp.float32
  error = np.abs(np.asarray(logits["bf16"]) - np.asarray(logits["fp32"])).max()
  assert error <= BF16_LOGITS_RTOL * float(np.std(logits["fp32"])), error
  assert error > 0  # it did compute in bf16
  agree = np.mean(np.argmax(logits["bf16"], -1) == np.argmax(logits["fp32"], -1))
  assert agree >= 0.9, agree
