"""Our options on the aMUSEd transformer (not in diffusers): the learned 2D position embedding."""

import jax.numpy as jnp
import reference
from flax import nnx

from muse_styledrop.models.uvit import UVit2DModel, UVitConfig


def test_position_embedding_is_on_the_scale_of_the_features_it_joins():
  # At ViT's 0.02 init it was ~35x smaller than the projected conv features and stayed negligible in training.
  config = UVitConfig(**{**reference.UVIT_TINY_512, "sample_size": 8}, position_embedding_grid=(4, 4))
  model = UVit2DModel(config, rngs=nnx.Rngs(0))
  b = 2
  tokens = jnp.full((b, 8, 8), config.mask_token_id, jnp.int32)
  text = jnp.ones((b, 5, config.encoder_hidden_size))
  cond = model.condition(jnp.ones((b, config.cond_embed_dim)), jnp.asarray([[64.0, 64.0, 0.0, 0.0, 6.0]] * b))
  text = model.encoder_proj_layer_norm(model.encoder_proj(text))
  x = model.down_block(model.embed(tokens), cond, text)
  features = model.project_to_hidden(model.project_to_hidden_norm(x.reshape(b, 16, -1)))
  ratio = jnp.linalg.norm(model.position_embedding[...], axis=-1).mean() / jnp.linalg.norm(features, axis=-1).mean()
  assert 0.3 < float(ratio) < 3.0
  logits = model(
    tokens,
    jnp.ones((b, 5, config.encoder_hidden_size)),
    jnp.ones((b, config.cond_embed_dim)),
    jnp.asarray([[64.0, 64.0, 0.0, 0.0, 6.0]] * b),
  )
  assert logits.shape == (b, 8, 8, config.codebook_size)
