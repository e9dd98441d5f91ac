"""Our options on the aMUSEd transformer (not in diffusers): the learned 2D position embedding."""

import jax.numpy as jnp
import reference
from flax import nnx

from muse_styledrop import files
from muse_styledrop.models.uvit import UVit2DModel, UVitConfig


def test_position_embedding_is_on_the_scale_of_the_features_it_joins():
  # At ViT's 0.02 init it was ~35x smaller than the projected conv features and stayed negligible in training.
  config = UVitConfig(**{**reference.UVIT_TINY_512, "sample_size": 8}, position_embedding_grid=(4, 4))
  model = UVit2DModel(config, rngs=nnx.Rngs(0))
  b = 2
  tokens = jnp.full((b, 8, 8), config.mask_token_id, jnp.int32)
  micro = jnp.asarray([[64.0, 64.0, 0.0, 0.0, 6.0]] * b)

  @nnx.jit  # one compile, not one per eager op
  def ratio_and_logits(model):
    text = jnp.ones((b, 5, config.encoder_hidden_size))
    cond = model.condition(jnp.ones((b, config.cond_embed_dim)), micro)
    x = model.down_block(model.embed(tokens), cond, model.encoder_proj_layer_norm(model.encoder_proj(text)))
    features = model.project_to_hidden(model.project_to_hidden_norm(x.reshape(b, 16, -1)))
    table = jnp.linalg.norm(model.position_embedding[...], axis=-1).mean()
    return table / jnp.linalg.norm(features, axis=-1).mean(), model(
      tokens, text, jnp.ones((b, config.cond_embed_dim)), micro
    )

  ratio, logits = ratio_and_logits(model)
  assert 0.3 < float(ratio) < 3.0
  assert logits.shape == (b, 8, 8, config.codebook_size)


def test_parity_covers_a_base_with_the_position_embedding(amused_dir, tmp_path):
  # A base with our extension is still checked layer for layer against diffusers, with the embedding added to
  # diffusers' transformer input by a hook; a random unit-scale table fails the check if the hook were missing.
  import shutil

  import numpy as np

  from muse_styledrop import parity, weights

  base = tmp_path / "base"
  shutil.copytree(amused_dir, base)
  folder = base / "transformer"
  config = files.read_json(folder / "config.json")
  config["position_embedding_grid"] = [config["sample_size"]] * 2
  files.write_json(config, folder / "config.json")
  weight_files = weights.weight_files(folder, weights.DIFFUSERS_WEIGHTS)
  tensors = {k: v for k, (v, _) in weights.read_tensors(weight_files).items()}
  rng = np.random.default_rng(0)
  tensors["position_embedding"] = jnp.asarray(rng.standard_normal((config["sample_size"] ** 2, config["hidden_size"])))
  weights.write_safetensors({k: jnp.asarray(v, jnp.float32) for k, v in tensors.items()}, weight_files[0])

  rows = {r.component: r for r in parity.run(base)}
  name = f"transformer logits ({config['sample_size']}x{config['sample_size']} tokens + position embedding)"
  assert rows[name].ok, parity.report(list(rows.values()))
  assert all(r.ok for r in rows.values())
