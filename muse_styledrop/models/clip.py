"""CLIP text and vision towers: transformers' CLIP models in Flax NNX.

One module covers CLIPTextModelWithProjection (text tower + text_projection),
CLIPVisionModelWithProjection (vision tower + visual_projection) and CLIPModel
(both, plus logit_scale): their state-dict keys are the same per tower.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from muse_styledrop.models.layers import ACTIVATIONS, attention, conv, embed, layer_norm, linear, param

CLIP_MEAN = np.asarray([0.48145466, 0.4578275, 0.40821073], np.float32)  # OpenAI CLIP's pixel normalisation
CLIP_STD = np.asarray([0.26862954, 0.26130258, 0.27577711], np.float32)


def clip_pixels(images_uint8):
  """uint8 pictures (at the vision tower's image size) -> CLIP-normalised float pixels."""
  return (jnp.asarray(images_uint8).astype(jnp.float32) / 255.0 - CLIP_MEAN) / CLIP_STD


@dataclasses.dataclass(frozen=True)
class TowerConfig:
  """The fields of a transformers CLIPTextConfig / CLIPVisionConfig that shape the computation."""

  hidden_size: int = 512
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  # text
  vocab_size: int = 49408
  max_position_embeddings: int = 77
  eos_token_id: int = 49407
  bos_token_id: int = 49406  # not used by the model; written so that transformers finds it inside the vocabulary
  pad_token_id: int = 1
  # vision
  image_size: int = 224
  patch_size: int = 32
  num_channels: int = 3


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """Which towers exist and the shared projection width."""

  text: TowerConfig | None = None
  vision: TowerConfig | None = None
  projection_dim: int = 512
  with_logit_scale: bool = False


class CLIPAttention(nnx.Module):
  """Multi-head self-attention with q/k/v/out projections (with biases)."""

  def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
    kw = dict(bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.heads = heads
    self.q_proj, self.k_proj, self.v_proj = (linear(dim, dim, names=("embed", "heads"), **kw) for _ in range(3))
    self.out_proj = linear(dim, dim, names=("heads", "embed"), **kw)

  def __call__(self, x_BLD, mask_BQK=None):
    split = lambda t: t.reshape(*t.shape[:-1], self.heads, -1)
    q, k, v = split(self.q_proj(x_BLD)), split(self.k_proj(x_BLD)), split(self.v_proj(x_BLD))
    out = attention(q, k, v, mask_BQK)
    return self.out_proj(out.reshape(x_BLD.shape))


class CLIPMLP(nnx.Module):
  """fc1, activation, fc2."""

  def __init__(self, dim: int, inner: int, act: str, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
    kw = dict(bias=True, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.act = ACTIVATIONS[act]
    self.fc1 = linear(dim, inner, names=("embed", "mlp"), **kw)
    self.fc2 = linear(inner, dim, names=("mlp", "embed"), **kw)

  def __call__(self, x):
    return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
  """Pre-norm transformer layer."""

  def __init__(self, c: TowerConfig, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.self_attn = CLIPAttention(c.hidden_size, c.num_attention_heads, **kw)
    self.layer_norm1 = layer_norm(c.hidden_size, c.layer_norm_eps, rngs=rngs, param_dtype=param_dtype)
    self.mlp = CLIPMLP(c.hidden_size, c.intermediate_size, c.hidden_act, **kw)
    self.layer_norm2 = layer_norm(c.hidden_size, c.layer_norm_eps, rngs=rngs, param_dtype=param_dtype)

  def __call__(self, x, mask=None):
    x = x + self.self_attn(self.layer_norm1(x).astype(x.dtype), mask)
    return x + self.mlp(self.layer_norm2(x).astype(x.dtype))


class CLIPEncoder(nnx.Module):
  """A stack of layers that also returns the input to the last one (the penultimate hidden states)."""

  def __init__(self, c: TowerConfig, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
    self.layers = nnx.List(
      [CLIPEncoderLayer(c, rngs=rngs, dtype=dtype, param_dtype=param_dtype) for _ in range(c.num_hidden_layers)]
    )

  def __call__(self, x, mask=None):
    penultimate = x
    for layer in self.layers:
      penultimate = x
      x = layer(x, mask)
    return x, penultimate


class CLIPTextEmbeddings(nnx.Module):
  def __init__(self, c: TowerConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    kw = dict(param_dtype=param_dtype, rngs=rngs)
    self.token_embedding = embed(c.vocab_size, c.hidden_size, names=("vocab", "embed"), **kw)
    self.position_embedding = embed(c.max_position_embeddings, c.hidden_size, names=("position", "embed"), **kw)

  def __call__(self, ids_BT):
    return self.token_embedding(ids_BT) + self.position_embedding.embedding[: ids_BT.shape[1]][None]


@dataclasses.dataclass
class TextOutput:
  last_hidden_BTD: jax.Array  # after the final layer norm
  penultimate_BTD: jax.Array  # hidden_states[-2]: what aMUSEd cross-attends to
  pooled_BD: jax.Array  # final-norm state at the end-of-text token


class CLIPTextTransformer(nnx.Module):
  """Causal text transformer; pooled output at the first end-of-text token."""

  def __init__(self, c: TowerConfig, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
    self.config = c
    self.embeddings = CLIPTextEmbeddings(c, rngs=rngs, param_dtype=param_dtype)
    self.encoder = CLIPEncoder(c, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.final_layer_norm = layer_norm(c.hidden_size, c.layer_norm_eps, rngs=rngs, param_dtype=param_dtype)

  def __call__(self, ids_BT: jax.Array, attention_mask_BT: jax.Array | None = None) -> TextOutput:
    t = ids_BT.shape[1]
    mask_BQK = jnp.tril(jnp.ones((1, t, t), bool))
    if attention_mask_BT is not None:
      mask_BQK = mask_BQK & attention_mask_BT.astype(bool)[:, None, :]
    x, penultimate = self.encoder(self.embeddings(ids_BT), mask_BQK)
    last = self.final_layer_norm(x)
    if self.config.eos_token_id == 2:  # transformers' legacy rule for old configs
      eos_B = jnp.argmax(ids_BT, axis=-1)
    else:
      eos_B = jnp.argmax(ids_BT == self.config.eos_token_id, axis=-1)
    pooled = last[jnp.arange(ids_BT.shape[0]), eos_B]
    return TextOutput(last, penultimate, pooled)


class CLIPVisionEmbeddings(nnx.Module):
  def __init__(self, c: TowerConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    d = c.hidden_size
    self.class_embedding = param(jax.random.normal(rngs.params(), (d,), param_dtype) * d**-0.5, "embed")
    self.patch_embedding = conv(
      c.num_channels, d, c.patch_size, stride=c.patch_size, bias=False, rngs=rngs, param_dtype=param_dtype
    )
    positions = (c.image_size // c.patch_size) ** 2 + 1
    self.position_embedding = embed(positions, d, names=("position", "embed"), param_dtype=param_dtype, rngs=rngs)

  def __call__(self, pixels_BHWC):
    patches = self.patch_embedding(pixels_BHWC)
    b = patches.shape[0]
    patches = patches.reshape(b, -1, patches.shape[-1])
    cls = jnp.broadcast_to(self.class_embedding[...].astype(patches.dtype), (b, 1, patches.shape[-1]))
    return jnp.concatenate([cls, patches], axis=1) + self.position_embedding.embedding[...][None]


class CLIPVisionTransformer(nnx.Module):
  """ViT; pooled output is the post-norm class token."""

  def __init__(self, c: TowerConfig, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
    self.config = c
    self.embeddings = CLIPVisionEmbeddings(c, rngs=rngs, param_dtype=param_dtype)
    self.pre_layrnorm = layer_norm(c.hidden_size, c.layer_norm_eps, rngs=rngs, param_dtype=param_dtype)
    self.encoder = CLIPEncoder(c, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.post_layernorm = layer_norm(c.hidden_size, c.layer_norm_eps, rngs=rngs, param_dtype=param_dtype)

  def __call__(self, pixels_BHWC):
    x, _ = self.encoder(self.pre_layrnorm(self.embeddings(pixels_BHWC)))
    return self.post_layernorm(x[:, 0])


class CLIPModel(nnx.Module):
  """Text and/or vision towers with their projections into the shared embedding space."""

  def __init__(self, config: CLIPConfig, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
    c = self.config = config
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.text_model = self.text_projection = self.vision_model = self.visual_projection = nnx.data(None)
    if c.text is not None:
      self.text_model = CLIPTextTransformer(c.text, **kw)
      self.text_projection = linear(c.text.hidden_size, c.projection_dim, names=("embed", "embed"), bias=False, **kw)
    if c.vision is not None:
      self.vision_model = CLIPVisionTransformer(c.vision, **kw)
      self.visual_projection = linear(
        c.vision.hidden_size, c.projection_dim, names=("embed", "embed"), bias=False, **kw
      )
    self.logit_scale = param(jnp.asarray(2.6592, param_dtype)) if c.with_logit_scale else None

  def encode_text(self, ids_BT, attention_mask_BT=None) -> tuple[TextOutput, jax.Array]:
    """The text tower's outputs and the projected pooled embedding (text_embeds)."""
    if self.text_model is None:
      raise ValueError("this CLIP model has no text tower")
    out = self.text_model(ids_BT, attention_mask_BT)
    return out, self.text_projection(out.pooled_BD)

  def encode_image(self, pixels_BHWC) -> jax.Array:
    """Projected image embeddings (image_embeds) of CLIP-normalised pixels."""
    if self.vision_model is None:
      raise ValueError("this CLIP model has no vision tower")
    return self.visual_projection(self.vision_model(pixels_BHWC))
