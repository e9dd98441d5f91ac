"""Adapters: a fresh one changes nothing, sizes follow the paper, per-example selection is exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from flax import nnx

from muse_styledrop.models import adapters, presets
from muse_styledrop.models.adapters import AdapterConfig, AdapterParam
from muse_styledrop.models.uvit import UVit2DModel, UVitConfig

TINY = UVitConfig(**{**reference.UVIT_TINY, "num_hidden_layers": 3})


def inputs(b=3, seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  return (
    jax.random.randint(k[0], (b, 4, 4), 0, 41),
    jax.random.normal(k[1], (b, 5, 16)),
    jax.random.normal(k[2], (b, 16)),
    jnp.tile(jnp.asarray([[32.0, 32.0, 0, 0, 6]]), (b, 1)),
  )


def randomize_adapters(model, seed=1):
  state = adapters.adapter_params(model)
  keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(state))))
  nnx.update(model, jax.tree.map(lambda x: 0.05 * jax.random.normal(next(keys), x.shape), state))


@pytest.mark.parametrize(
  "config",
  [
    AdapterConfig(),
    AdapterConfig(hidden=8, shared=False),
    AdapterConfig(blocks=True, head=True),
    AdapterConfig(kind="lora", rank=4),
  ],
)
def test_fresh_adapter_leaves_logits_bitwise_equal(config):
  model = UVit2DModel(TINY, rngs=nnx.Rngs(0))
  base = model(*inputs())
  model.attach_adapters(config, nnx.Rngs(1))
  on = model(*inputs(), adapter_ids_B=jnp.zeros((3,), jnp.int32))
  np.testing.assert_array_equal(np.asarray(on), np.asarray(base))


@pytest.mark.parametrize(
  "config",
  [
    AdapterConfig(bank_size=2),
    AdapterConfig(bank_size=2, blocks=True, head=True),
    AdapterConfig(kind="lora", rank=4, bank_size=2),
  ],
)
def test_each_example_gets_its_own_adapter_or_none(config):
  model = UVit2DModel(TINY, rngs=nnx.Rngs(0))
  model.attach_adapters(config, nnx.Rngs(1))
  randomize_adapters(model)
  x = inputs()
  mixed = model(*x, adapter_ids_B=jnp.asarray([0, -1, 1]))
  for i, ids in enumerate([0, -1, 1]):
    alone = model(*x, adapter_ids_B=jnp.full((3,), ids))
    np.testing.assert_allclose(mixed[i], alone[i], rtol=1e-5, atol=1e-5)
  off = model(*x)  # no ids: the base model
  np.testing.assert_array_equal(np.asarray(mixed[1]), np.asarray(off[1]))
  assert not np.allclose(mixed[0], off[0]) and not np.allclose(mixed[0], mixed[2])


def test_paper_adapter_sizes_at_full_scale():
  """Round 1 (H=4, shared) and round 2 (H=32, unshared) at aMUSEd-256 size; the formula is the paper's."""
  c = presets.AMUSED_256_TRANSFORMER
  for config, expected in [
    (AdapterConfig(hidden=4, shared=True), 2 * (2 * c.hidden_size * 4) + 2 * c.num_hidden_layers * (4 + 1024)),
    (AdapterConfig(hidden=32, shared=False), 2 * c.num_hidden_layers * 2 * c.hidden_size * 32),
  ]:
    model = nnx.eval_shape(lambda config=config: _with_adapters(c, config))
    assert adapters.count(model) == expected
  # Muse-3B (48 layers, width 2048), the paper's 0.23M and 12.6M:
  assert round((2 * 2 * 2048 * 4 + 2 * 48 * (4 + 2048)) / 1e6, 2) == 0.23
  assert round(2 * 48 * 2 * 2048 * 32 / 1e6, 1) == 12.6


def _with_adapters(c, config):
  model = UVit2DModel(c, rngs=nnx.Rngs(0))
  model.attach_adapters(config, nnx.Rngs(1))
  return model


def test_adapter_weights_are_their_own_type_and_initialised_as_the_paper_says():
  model = _with_adapters(TINY, AdapterConfig(hidden=4, shared=True))
  state = adapters.adapter_params(model)
  flat = dict(nnx.to_flat_state(state))
  assert all(isinstance(v, AdapterParam) for v in flat.values())
  assert not np.asarray(flat[("adapters", "ff", "wu")][...]).any()
  wd = np.asarray(flat[("adapters", "ff", "wd")][...])
  assert 0.01 < wd.std() < 0.03 and np.abs(wd).max() <= 2 * 0.02 + 1e-6
  base = nnx.state(model, lambda _, v: type(v) is nnx.Param)
  assert not any("adapters" in p for p, _ in nnx.to_flat_state(base))


def test_block_adapters_sit_on_every_block_attention_and_only_for_the_bottleneck():
  plain = adapters.count(_with_adapters(TINY, AdapterConfig()))
  model = _with_adapters(TINY, AdapterConfig(blocks=True))
  blocks, dim = 2 * TINY.num_res_blocks, TINY.block_out_channels  # the down block's attentions, then the up block's
  assert adapters.count(model) - plain == 2 * dim * 4 + blocks * (4 + dim)  # shared Wd, Wu + per-block offsets
  base = model(*inputs())
  generator = model.adapters.blocks
  generator.du.set_value(generator.du[...].at[:, blocks - 1].set(0.5))  # only the up block's last adapter trained
  moved = model(*inputs(), adapter_ids_B=jnp.zeros((3,), jnp.int32))
  assert not np.allclose(np.asarray(moved), np.asarray(base))
  with pytest.raises(ValueError, match="with kind='lora' set blocks=False"):
    AdapterConfig(kind="lora", blocks=True)


def test_the_head_adapter_sits_on_the_head_input_once_and_only_for_the_bottleneck():
  plain = adapters.count(_with_adapters(TINY, AdapterConfig()))
  model = _with_adapters(TINY, AdapterConfig(head=True))
  assert adapters.count(model) - plain == 2 * TINY.block_out_channels * 4  # its own Wd, Wu: one site, nothing shared
  base = model(*inputs())
  on = model(*inputs(), adapter_ids_B=jnp.zeros((3,), jnp.int32))
  np.testing.assert_array_equal(np.asarray(on), np.asarray(base))  # Wu starts at zero
  model.adapters.head.wu.set_value(jnp.full_like(model.adapters.head.wu[...], 0.5))  # only the head adapter trained
  moved = model(*inputs(), adapter_ids_B=jnp.zeros((3,), jnp.int32))
  assert not np.allclose(np.asarray(moved), np.asarray(base))
  # The head reads one position at a time (1x1 convs), so its adapter moves the logits the same way as adapting the
  # head's input by hand: what sits in front of it is untouched.
  features = []
  head = model.mlm_layer
  model.mlm_layer = lambda x: features.append(x) or head(x)
  model(*inputs())
  model.mlm_layer = head
  site = model.adapters.head_site()
  b, h, w, c = features[0].shape
  by_hand = head(site(features[0].reshape(b, h * w, c), jnp.zeros((3,), jnp.int32)).reshape(b, h, w, c))
  np.testing.assert_allclose(np.asarray(moved), np.asarray(by_hand), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="with kind='lora' set head=False"):
    AdapterConfig(kind="lora", head=True)
