"""The masked image transformer: diffusers' `UVit2DModel` (aMUSEd) in Flax NNX.

Conv blocks (ConvNeXt + GRN, double text cross-attention) around a stack of
adaptive-norm transformer layers; logits over the VQ codebook per token.
Layout is channels-last throughout: tokens_BHW in, logits_BHWV out.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from muse_styledrop.models.adapters import AdapterConfig, BottleneckAdapters, LoRAAdapters
from muse_styledrop.models.layers import (
  AdaLayerNormContinuous,
  Attention,
  FeedForward,
  conv,
  embed,
  gelu,
  linear,
  param,
  rms_norm,
  sinusoidal_embedding,
)


@dataclasses.dataclass(frozen=True)
class UVitConfig:
  """The fields of diffusers' UVit2DModel config.json, with its defaults, plus our options."""

  hidden_size: int = 1024
  use_bias: bool = False
  hidden_dropout: float = 0.0
  cond_embed_dim: int = 768
  micro_cond_encode_dim: int = 256
  micro_cond_embed_dim: int = 1280
  encoder_hidden_size: int = 768
  vocab_size: int = 8256
  codebook_size: int = 8192
  in_channels: int = 768
  block_out_channels: int = 768
  num_res_blocks: int = 3
  downsample: bool = False
  upsample: bool = False
  block_num_heads: int = 12
  num_hidden_layers: int = 22
  num_attention_heads: int = 16
  attention_dropout: float = 0.0
  intermediate_size: int = 2816
  layer_norm_eps: float = 1e-6
  ln_elementwise_affine: bool = True
  sample_size: int = 64
  # Ours, not diffusers': a learned 2D position embedding over a token grid of
  # this (height, width) added before the transformer layers (Muse has one,
  # aMUSEd does not). Empty = none, as aMUSEd.
  position_embedding_grid: tuple[int, ...] = ()

  @property
  def mask_token_id(self) -> int:
    return self.vocab_size - 1


class ConvEmbed(nnx.Module):
  """Token embedding, RMS norm and a 1x1 conv to the block width (`UVit2DConvEmbed`)."""

  def __init__(
    self,
    vocab: int,
    c_in: int,
    c_out: int,
    *,
    eps: float,
    affine: bool,
    bias: bool,
    rngs: nnx.Rngs,
    dtype=None,
    param_dtype=jnp.float32,
  ):
    self.embeddings = embed(vocab, c_in, names=("vocab", "embed"), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.layer_norm = rms_norm(c_in, eps, affine, rngs=rngs, param_dtype=param_dtype)
    self.conv = conv(c_in, c_out, 1, bias=bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

  def __call__(self, tokens_BHW):
    return self.conv(self.layer_norm(self.embeddings(tokens_BHW)))


class GlobalResponseNorm(nnx.Module):
  """ConvNeXt-v2 GRN over NHWC: gamma * (x * nx) + beta + x."""

  def __init__(self, dim: int, param_dtype=jnp.float32):
    self.gamma = param(jnp.zeros((1, 1, 1, dim), param_dtype), "norm", "norm", "norm", "norm")
    self.beta = param(jnp.zeros((1, 1, 1, dim), param_dtype), "norm", "norm", "norm", "norm")

  def __call__(self, x_BHWC):
    gx = jnp.sqrt(jnp.sum(jnp.square(x_BHWC.astype(jnp.float32)), axis=(1, 2), keepdims=True))
    nx = gx / (jnp.mean(gx, axis=-1, keepdims=True) + 1e-6)
    return (self.gamma[...] * (x_BHWC * nx) + self.beta[...] + x_BHWC).astype(x_BHWC.dtype)


class ConvNextBlock(nnx.Module):
  """Depthwise conv, channel MLP with GRN, residual, then FiLM from the pooled condition."""

  def __init__(
    self,
    channels: int,
    cond_dim: int,
    *,
    eps: float,
    affine: bool,
    bias: bool,
    dropout: float,
    rngs: nnx.Rngs,
    ffn_factor: int = 4,
    dtype=None,
    param_dtype=jnp.float32,
  ):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    inner = channels * ffn_factor
    self.depthwise = conv(channels, channels, 3, padding=1, groups=channels, bias=bias, **kw)
    self.norm = rms_norm(channels, eps, affine, rngs=rngs, param_dtype=param_dtype)
    self.channelwise_linear_1 = linear(channels, inner, names=("embed", "mlp"), bias=bias, **kw)
    self.channelwise_norm = GlobalResponseNorm(inner, param_dtype)
    self.channelwise_linear_2 = linear(inner, channels, names=("mlp", "embed"), bias=bias, **kw)
    self.channelwise_dropout = nnx.Dropout(dropout)
    self.cond_embeds_mapper = linear(cond_dim, 2 * channels, names=("embed", "mlp"), bias=bias, **kw)

  def __call__(self, x_BHWC, cond_BD):
    h = self.norm(self.depthwise(x_BHWC)).astype(x_BHWC.dtype)
    h = self.channelwise_linear_1(h)
    h = self.channelwise_norm(gelu(h))
    h = self.channelwise_dropout(self.channelwise_linear_2(h))
    x_BHWC = x_BHWC + h
    scale_BC, shift_BC = jnp.split(self.cond_embeds_mapper(jax.nn.silu(cond_BD)), 2, axis=-1)
    return x_BHWC * (1 + scale_BC[:, None, None]) + shift_BC[:, None, None]


class SkipFFTransformerBlock(nnx.Module):
  """Two text cross-attentions with RMS pre-norms and no MLP, on the conv features."""

  def __init__(
    self, channels: int, heads: int, text_dim: int, *, bias: bool, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32
  ):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.kv_mapper = (
      linear(text_dim, channels, names=("embed", "embed"), bias=bias, **kw) if text_dim != channels else None
    )
    self.norm1 = rms_norm(channels, 1e-6, rngs=rngs, param_dtype=param_dtype)
    self.attn1 = Attention(channels, heads, channels // heads, context_dim=channels, bias=bias, out_bias=bias, **kw)
    self.norm2 = rms_norm(channels, 1e-6, rngs=rngs, param_dtype=param_dtype)
    self.attn2 = Attention(channels, heads, channels // heads, context_dim=channels, bias=bias, out_bias=bias, **kw)

  def __call__(self, x_BLC, text_BTD, lora1=None, lora2=None, adapter_ids_B=None):
    if self.kv_mapper is not None:
      text_BTD = self.kv_mapper(jax.nn.silu(text_BTD))
    x_BLC = x_BLC + self.attn1(self.norm1(x_BLC).astype(x_BLC.dtype), text_BTD, lora1, adapter_ids_B)
    return x_BLC + self.attn2(self.norm2(x_BLC).astype(x_BLC.dtype), text_BTD, lora2, adapter_ids_B)


class Downsample(nnx.Module):
  """RMS norm, pad right/bottom by one, 2x2 stride-2 conv (diffusers Downsample2D, padding=0)."""

  def __init__(
    self, channels: int, *, eps: float, affine: bool, bias: bool, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32
  ):
    self.norm = rms_norm(channels, eps, affine, rngs=rngs, param_dtype=param_dtype)
    self.conv = conv(
      channels,
      channels,
      2,
      stride=2,
      padding=((0, 1), (0, 1)),
      bias=bias,
      rngs=rngs,
      dtype=dtype,
      param_dtype=param_dtype,
    )

  def __call__(self, x_BHWC):
    return self.conv(self.norm(x_BHWC).astype(x_BHWC.dtype))


class ConvTranspose2x2(nnx.Module):
  """A 2x2 stride-2 transposed conv; `weight` keeps PyTorch's (in, out, kh, kw) layout."""

  def __init__(self, c_in: int, c_out: int, *, bias: bool, rngs: nnx.Rngs, param_dtype=jnp.float32):
    bound = (c_out * 4) ** -0.5
    weight = jax.random.uniform(rngs.params(), (c_in, c_out, 2, 2), param_dtype, -bound, bound)
    self.weight = param(weight, "conv_in", "conv_out", "window", "window")
    self.bias = param(jnp.zeros((c_out,), param_dtype), "conv_out") if bias else None

  def __call__(self, x_BHWC):
    b, h, w, _ = x_BHWC.shape
    y = jnp.einsum("bhwi,ioyx->bhywxo", x_BHWC, self.weight[...].astype(x_BHWC.dtype))
    y = y.reshape(b, 2 * h, 2 * w, -1)
    return y if self.bias is None else y + self.bias[...]


class Upsample(nnx.Module):
  """RMS norm then a 2x2 stride-2 transposed conv (diffusers Upsample2D, use_conv_transpose)."""

  def __init__(self, channels: int, *, eps: float, affine: bool, bias: bool, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.norm = rms_norm(channels, eps, affine, rngs=rngs, param_dtype=param_dtype)
    self.conv = ConvTranspose2x2(channels, channels, bias=bias, rngs=rngs, param_dtype=param_dtype)

  def __call__(self, x_BHWC):
    return self.conv(self.norm(x_BHWC).astype(x_BHWC.dtype))


class UVitBlock(nnx.Module):
  """Optional down/upsampling around pairs of ConvNeXt blocks and text cross-attention blocks."""

  def __init__(
    self,
    channels: int,
    num_res_blocks: int,
    cond_dim: int,
    *,
    heads: int,
    eps: float,
    affine: bool,
    bias: bool,
    dropout: float,
    downsample: bool,
    upsample: bool,
    rngs: nnx.Rngs,
    dtype=None,
    param_dtype=jnp.float32,
  ):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    norm_kw = dict(eps=eps, affine=affine, bias=bias)
    self.downsample = Downsample(channels, **norm_kw, **kw) if downsample else None
    self.res_blocks = nnx.List(
      [ConvNextBlock(channels, cond_dim, **norm_kw, dropout=dropout, **kw) for _ in range(num_res_blocks)]
    )
    self.attention_blocks = nnx.List(
      [SkipFFTransformerBlock(channels, heads, cond_dim, bias=bias, **kw) for _ in range(num_res_blocks)]
    )
    self.upsample = Upsample(channels, **norm_kw, rngs=rngs, param_dtype=param_dtype) if upsample else None

  def __call__(self, x_BHWC, cond_BD, text_BTD, lora=None, adapter_ids_B=None, adapter=None):
    """`lora(i, j)`, when given, is the LoRA site of attention j (1 or 2) of attention block i; `adapter(i)` the
    bottleneck adapter on attention block i's output."""
    if self.downsample is not None:
      x_BHWC = self.downsample(x_BHWC)
    b, h, w, c = x_BHWC.shape
    for i, (res_block, attention_block) in enumerate(zip(self.res_blocks, self.attention_blocks)):
      x_BHWC = res_block(x_BHWC, cond_BD)
      sites = (lora(i, 1), lora(i, 2)) if lora is not None else (None, None)
      x_BLC = attention_block(x_BHWC.reshape(b, h * w, c), text_BTD, *sites, adapter_ids_B)
      if adapter is not None:
        x_BLC = adapter(i)(x_BLC, adapter_ids_B)
      x_BHWC = x_BLC.reshape(b, h, w, c)
    if self.upsample is not None:
      x_BHWC = self.upsample(x_BHWC)
    return x_BHWC


class TransformerLayer(nnx.Module):
  """diffusers BasicTransformerBlock with ada_norm_continuous: self-attn, cross-attn, GEGLU MLP.

  The two StyleDrop adapter sites (docs/method.md) sit on the outputs of
  the cross-attention and of the MLP, before their residual adds. They are
  empty (None) on a plain base model; `adapter_ids_B` selects, per example,
  which adapter of a bank applies (or none), so guidance passes and
  compositions run as one batched forward.
  """

  def __init__(
    self,
    dim: int,
    heads: int,
    ff_inner: int,
    *,
    eps: float,
    affine: bool,
    bias: bool,
    dropout: float,
    rngs: nnx.Rngs,
    dtype=None,
    param_dtype=jnp.float32,
  ):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    ada = dict(eps=eps, affine=affine, bias=bias, **kw)
    self.norm1 = AdaLayerNormContinuous(dim, dim, kind="rms_norm", **ada)
    self.attn1 = Attention(dim, heads, dim // heads, bias=bias, out_bias=bias, **kw)
    self.norm2 = AdaLayerNormContinuous(dim, dim, kind="rms_norm", **ada)
    self.attn2 = Attention(dim, heads, dim // heads, context_dim=dim, bias=bias, out_bias=bias, **kw)
    self.norm3 = AdaLayerNormContinuous(dim, dim, kind="layer_norm", **ada)
    self.ff = FeedForward(dim, ff_inner, bias=bias, dropout=dropout, **kw)

  def __call__(self, x_BLD, text_BTD, cond_BD, adapter_ids_B=None, sites=None, lora=None):
    sites, lora = sites or {}, lora or (lambda name: None)
    x_BLD = x_BLD + self.attn1(self.norm1(x_BLD, cond_BD), None, lora("attn1"), adapter_ids_B)
    out_BLD = self.attn2(self.norm2(x_BLD, cond_BD), text_BTD, lora("attn2"), adapter_ids_B)
    if "attn2" in sites:
      out_BLD = sites["attn2"](out_BLD, adapter_ids_B)
    x_BLD = x_BLD + out_BLD
    out_BLD = self.ff(self.norm3(x_BLD, cond_BD))
    if "ff" in sites:
      out_BLD = sites["ff"](out_BLD, adapter_ids_B)
    return x_BLD + out_BLD


class TimestepEmbedding(nnx.Module):
  """Two linears with a SiLU between: the pooled-text + micro-condition embedding."""

  def __init__(self, d_in: int, d_out: int, *, bias: bool, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.linear_1 = linear(d_in, d_out, names=("embed", "mlp"), bias=bias, **kw)
    self.linear_2 = linear(d_out, d_out, names=("mlp", "embed"), bias=bias, **kw)

  def __call__(self, x):
    return self.linear_2(jax.nn.silu(self.linear_1(x)))


class ConvMlmLayer(nnx.Module):
  """1x1 conv, RMS norm, 1x1 conv to codebook logits."""

  def __init__(
    self,
    c_block: int,
    c_in: int,
    codebook: int,
    *,
    eps: float,
    affine: bool,
    bias: bool,
    rngs: nnx.Rngs,
    dtype=None,
    param_dtype=jnp.float32,
  ):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.conv1 = conv(c_block, c_in, 1, bias=bias, **kw)
    self.layer_norm = rms_norm(c_in, eps, affine, rngs=rngs, param_dtype=param_dtype)
    self.conv2 = conv(
      c_in, codebook, 1, names=("embed", "vocab"), bias=bias, **{**kw, "dtype": jnp.float32}
    )  # fp32 logits

  def __call__(self, x_BHWC):
    h = self.conv1(x_BHWC)
    return self.conv2(self.layer_norm(h).astype(h.dtype))


def lora_targets(c: UVitConfig) -> dict[str, tuple[int, int, int]]:
  """LoRA's attentions, by their PyTorch module path, with (query input, key/value input, output) widths: every
  attention of the transformer layers and of the blocks' attention blocks, as diffusers' aMUSEd LoRA recipe has it."""
  targets = {
    f"transformer_layers.{i}.attn{j}": (c.hidden_size, c.hidden_size, c.hidden_size)
    for i in range(c.num_hidden_layers)
    for j in (1, 2)
  }
  for block in ("down_block", "up_block"):
    for i in range(c.num_res_blocks):
      for j in (1, 2):
        targets[f"{block}.attention_blocks.{i}.attn{j}"] = (c.block_out_channels,) * 3
  return targets


class UVit2DModel(nnx.Module):
  """The aMUSEd masked transformer: (tokens, text states, pooled text, micro-conds) -> codebook logits."""

  def __init__(self, config: UVitConfig, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
    c = self.config = config
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    norm_kw = dict(eps=c.layer_norm_eps, affine=c.ln_elementwise_affine)
    self.encoder_proj = linear(c.encoder_hidden_size, c.hidden_size, names=("embed", "embed"), bias=c.use_bias, **kw)
    self.encoder_proj_layer_norm = rms_norm(c.hidden_size, **norm_kw, rngs=rngs, param_dtype=param_dtype)
    self.embed = ConvEmbed(c.vocab_size, c.in_channels, c.block_out_channels, **norm_kw, bias=c.use_bias, **kw)
    self.cond_embed = TimestepEmbedding(c.micro_cond_embed_dim + c.cond_embed_dim, c.hidden_size, bias=c.use_bias, **kw)
    block_kw = dict(heads=c.block_num_heads, **norm_kw, bias=c.use_bias, dropout=c.hidden_dropout, **kw)
    self.down_block = UVitBlock(
      c.block_out_channels, c.num_res_blocks, c.hidden_size, downsample=c.downsample, upsample=False, **block_kw
    )
    self.project_to_hidden_norm = rms_norm(c.block_out_channels, **norm_kw, rngs=rngs, param_dtype=param_dtype)
    self.project_to_hidden = linear(
      c.block_out_channels, c.hidden_size, names=("embed", "embed"), bias=c.use_bias, **kw
    )
    if c.position_embedding_grid:
      h, w = c.position_embedding_grid
      # Unit scale, like the features it is added to (an RMS-normed vector through a fan-in-scaled linear): at
      # ViT's 0.02 it was ~35x smaller than them and stayed negligible (docs/research/blob_bases.md).
      init = nnx.initializers.truncated_normal(1.0)
      self.position_embedding = param(init(rngs.params(), (h * w, c.hidden_size), param_dtype), "position", "embed")
    else:
      self.position_embedding = None
    self.transformer_layers = nnx.List(
      [
        TransformerLayer(
          c.hidden_size,
          c.num_attention_heads,
          c.intermediate_size,
          **norm_kw,
          bias=c.use_bias,
          dropout=c.hidden_dropout,
          **kw,
        )
        for _ in range(c.num_hidden_layers)
      ]
    )
    self.project_from_hidden_norm = rms_norm(c.hidden_size, **norm_kw, rngs=rngs, param_dtype=param_dtype)
    self.project_from_hidden = linear(
      c.hidden_size, c.block_out_channels, names=("embed", "embed"), bias=c.use_bias, **kw
    )
    self.up_block = UVitBlock(
      c.block_out_channels, c.num_res_blocks, c.hidden_size, downsample=False, upsample=c.upsample, **block_kw
    )
    self.mlm_layer = ConvMlmLayer(
      c.block_out_channels, c.in_channels, c.codebook_size, **norm_kw, bias=c.use_bias, **kw
    )
    self.adapters = nnx.data(None)

  def attach_adapters(self, config: AdapterConfig, rngs: nnx.Rngs) -> None:
    """Add a fresh bank of adapters (AdapterParams); the model's output is unchanged until they train."""
    self.adapters = self.make_adapters(config, rngs)

  def make_adapters(self, config: AdapterConfig, rngs: nnx.Rngs) -> BottleneckAdapters | LoRAAdapters:
    """A fresh bank of adapters for this model (not attached)."""
    c = self.config
    if config.kind == "bottleneck":
      blocks = 2 * c.num_res_blocks if config.blocks else 0
      return BottleneckAdapters(
        config, c.num_hidden_layers, c.hidden_size, rngs=rngs, blocks=blocks, block_dim=c.block_out_channels
      )
    else:
      targets = lora_targets(c)
      return LoRAAdapters(config, targets, rngs=rngs)

  def condition(self, pooled_BD, micro_conds_BM):
    """The vector that drives every adaptive norm: pooled text + sinusoidal micro-conditions."""
    b = pooled_BD.shape[0]
    micro = sinusoidal_embedding(micro_conds_BM.reshape(-1), self.config.micro_cond_encode_dim).reshape(b, -1)
    return self.cond_embed(jnp.concatenate([pooled_BD, micro.astype(pooled_BD.dtype)], axis=-1))

  def __call__(
    self,
    tokens_BHW: jax.Array,
    text_BTD: jax.Array,
    pooled_BD: jax.Array,
    micro_conds_BM: jax.Array,
    adapter_ids_B: jax.Array | None = None,
  ) -> jax.Array:
    """Logits over the codebook for every token position, logits_BHWV."""
    text_BTD = self.encoder_proj_layer_norm(self.encoder_proj(text_BTD)).astype(text_BTD.dtype)
    cond_BD = self.condition(pooled_BD, micro_conds_BM)
    bottleneck = isinstance(self.adapters, BottleneckAdapters) and adapter_ids_B is not None
    lora = self.adapters.site if isinstance(self.adapters, LoRAAdapters) and adapter_ids_B is not None else None
    block_lora = lambda block: None if lora is None else (lambda i, j: lora(f"{block}.attention_blocks.{i}.attn{j}"))
    layer_lora = lambda i: None if lora is None else (lambda name: lora(f"transformer_layers.{i}.{name}"))
    on_blocks = bottleneck and self.adapters.blocks is not None
    block_adapter = lambda first: (lambda i: self.adapters.block_site(first + i)) if on_blocks else None
    x_BHWC = self.down_block(
      self.embed(tokens_BHW), cond_BD, text_BTD, block_lora("down_block"), adapter_ids_B, block_adapter(0)
    )
    b, h, w, c = x_BHWC.shape
    x_BLD = self.project_to_hidden(self.project_to_hidden_norm(x_BHWC.reshape(b, h * w, c)).astype(x_BHWC.dtype))
    if self.position_embedding is not None:
      x_BLD = x_BLD + self.position_embedding[...].astype(x_BLD.dtype)
    for i, layer in enumerate(self.transformer_layers):
      sites = self.adapters.sites(i) if bottleneck else None
      x_BLD = layer(x_BLD, text_BTD, cond_BD, adapter_ids_B, sites, layer_lora(i))
    x_BLD = self.project_from_hidden(self.project_from_hidden_norm(x_BLD).astype(x_BLD.dtype))
    up_adapter = block_adapter(self.config.num_res_blocks)
    x_BHWC = self.up_block(
      x_BLD.reshape(b, h, w, c), cond_BD, text_BTD, block_lora("up_block"), adapter_ids_B, up_adapter
    )
    if bottleneck and self.adapters.head is not None:
      b, h, w, c = x_BHWC.shape
      x_BHWC = self.adapters.head_site()(x_BHWC.reshape(b, h * w, c), adapter_ids_B).reshape(b, h, w, c)
    return self.mlm_layer(x_BHWC)
