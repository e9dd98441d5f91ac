"""The masked-token objective of Muse-family transformers, and the cosine mask schedule it shares with decoding."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax


def mask_ratio(t):
  """The share of tokens masked at schedule position t in [0, 1]: cos(pi/2 t) (Muse's cosine schedule)."""
  return jnp.cos(math.pi / 2 * t)


def mask_tokens(rng, tokens_BHW, mask_id: int):
  """Mask a cosine-scheduled random share of each example's tokens: rate mask_ratio(u), u ~ U(0, 1)."""
  b = tokens_BHW.shape[0]
  flat = tokens_BHW.reshape(b, -1)
  rate_rng, order_rng = jax.random.split(rng)
  rate_B = mask_ratio(jax.random.uniform(rate_rng, (b,)))
  count_B = jnp.maximum(1, jnp.round(rate_B * flat.shape[1])).astype(jnp.int32)
  rank_BL = jnp.argsort(jnp.argsort(jax.random.uniform(order_rng, flat.shape), axis=-1), axis=-1)
  mask_BL = rank_BL < count_B[:, None]
  return jnp.where(mask_BL, mask_id, flat).reshape(tokens_BHW.shape), mask_BL.reshape(tokens_BHW.shape)


def masked_loss(model, tokens_BHW, text_BTD, pooled_BD, micro_BM, adapter_ids_B, rng, mask_id: int):
  """Cross-entropy of the true tokens at the masked positions only (the base model's own objective)."""
  masked, mask = mask_tokens(rng, tokens_BHW, mask_id)
  logits = model(masked, text_BTD, pooled_BD, micro_BM, adapter_ids_B).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens_BHW)
  return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1)
