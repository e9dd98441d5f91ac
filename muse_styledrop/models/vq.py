"""The VQ image tokenizer: diffusers' `VQModel` as aMUSEd configures it, in Flax NNX.

Images are NHWC floats in [0, 1] (aMUSEd does not normalise to [-1, 1]);
tokens are integer codebook ids on a grid 2**(len(block_out_channels)-1)
times smaller than the image.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from muse_styledrop.models.layers import axes, conv, group_norm


@dataclasses.dataclass(frozen=True)
class VQConfig:
  """The fields of diffusers' VQModel config.json that aMUSEd uses, with diffusers' defaults."""

  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: tuple[int, ...] = (64,)
  layers_per_block: int = 1
  latent_channels: int = 3
  num_vq_embeddings: int = 256
  norm_num_groups: int = 32
  vq_embed_dim: int | None = None
  sample_size: int = 32
  act_fn: str = "silu"
  mid_block_add_attention: bool = True
  lookup_from_codebook: bool = False
  norm_type: str = "group"

  @property
  def downscale(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  @property
  def embed_dim(self) -> int:
    return self.vq_embed_dim or self.latent_channels


class ResnetBlock2D(nnx.Module):
  """GroupNorm-SiLU-conv twice with a (1x1 conv) shortcut."""

  def __init__(self, c_in: int, c_out: int, groups: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    self.norm1 = group_norm(c_in, groups, 1e-6, **kw)
    self.conv1 = conv(c_in, c_out, 3, padding=1, **kw)
    self.norm2 = group_norm(c_out, groups, 1e-6, **kw)
    self.conv2 = conv(c_out, c_out, 3, padding=1, **kw)
    self.conv_shortcut = conv(c_in, c_out, 1, **kw) if c_in != c_out else None

  def __call__(self, x):
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Downsample2D(nnx.Module):
  """Pad right/bottom by one, then a 3x3 stride-2 conv."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.conv = conv(channels, channels, 3, stride=2, padding=((0, 1), (0, 1)), rngs=rngs, param_dtype=param_dtype)

  def __call__(self, x):
    return self.conv(x)


class Upsample2D(nnx.Module):
  """Nearest-neighbour 2x upsampling, then a 3x3 conv."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.conv = conv(channels, channels, 3, padding=1, rngs=rngs, param_dtype=param_dtype)

  def __call__(self, x):
    return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class DownEncoderBlock2D(nnx.Module):
  """Resnet blocks, then an optional downsampler."""

  def __init__(
    self, c_in: int, c_out: int, layers: int, groups: int, downsample: bool, *, rngs: nnx.Rngs, param_dtype=jnp.float32
  ):
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    self.resnets = nnx.List([ResnetBlock2D(c_in if i == 0 else c_out, c_out, groups, **kw) for i in range(layers)])
    self.downsamplers = nnx.List([Downsample2D(c_out, **kw)]) if downsample else None

  def __call__(self, x):
    for resnet in self.resnets:
      x = resnet(x)
    if self.downsamplers is not None:
      x = self.downsamplers[0](x)
    return x


class UpDecoderBlock2D(nnx.Module):
  """Resnet blocks, then an optional upsampler."""

  def __init__(
    self, c_in: int, c_out: int, layers: int, groups: int, upsample: bool, *, rngs: nnx.Rngs, param_dtype=jnp.float32
  ):
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    self.resnets = nnx.List([ResnetBlock2D(c_in if i == 0 else c_out, c_out, groups, **kw) for i in range(layers)])
    self.upsamplers = nnx.List([Upsample2D(c_out, **kw)]) if upsample else None

  def __call__(self, x):
    for resnet in self.resnets:
      x = resnet(x)
    if self.upsamplers is not None:
      x = self.upsamplers[0](x)
    return x


class MidBlock2D(nnx.Module):
  """Two resnet blocks (aMUSEd's VQ has no mid-block attention)."""

  def __init__(self, channels: int, groups: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.resnets = nnx.List(
      [ResnetBlock2D(channels, channels, groups, rngs=rngs, param_dtype=param_dtype) for _ in range(2)]
    )

  def __call__(self, x):
    for resnet in self.resnets:
      x = resnet(x)
    return x


class Encoder(nnx.Module):
  """Image to latent grid."""

  def __init__(self, c: VQConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    ch = c.block_out_channels
    self.conv_in = conv(c.in_channels, ch[0], 3, padding=1, **kw)
    self.down_blocks = nnx.List(
      [
        DownEncoderBlock2D(ch[max(i - 1, 0)], ch[i], c.layers_per_block, c.norm_num_groups, i < len(ch) - 1, **kw)
        for i in range(len(ch))
      ]
    )
    self.mid_block = MidBlock2D(ch[-1], c.norm_num_groups, **kw)
    self.conv_norm_out = group_norm(ch[-1], c.norm_num_groups, 1e-6, **kw)
    self.conv_out = conv(ch[-1], c.latent_channels, 3, padding=1, **kw)

  def __call__(self, x):
    x = self.conv_in(x)
    for block in self.down_blocks:
      x = block(x)
    x = self.mid_block(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
  """Latent grid to image."""

  def __init__(self, c: VQConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    ch = tuple(reversed(c.block_out_channels))
    self.conv_in = conv(c.latent_channels, ch[0], 3, padding=1, **kw)
    self.mid_block = MidBlock2D(ch[0], c.norm_num_groups, **kw)
    self.up_blocks = nnx.List(
      [
        UpDecoderBlock2D(ch[max(i - 1, 0)], ch[i], c.layers_per_block + 1, c.norm_num_groups, i < len(ch) - 1, **kw)
        for i in range(len(ch))
      ]
    )
    self.conv_norm_out = group_norm(ch[-1], c.norm_num_groups, 1e-6, **kw)
    self.conv_out = conv(ch[-1], c.out_channels, 3, padding=1, **kw)

  def __call__(self, x):
    x = self.mid_block(self.conv_in(x))
    for block in self.up_blocks:
      x = block(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


def squared_distances(z_BHWD, codes_KD):
  """dist_BHWK: squared Euclidean distance of every latent to every codebook entry, in float32."""
  codes_KD = codes_KD.astype(jnp.float32)
  z = z_BHWD.astype(jnp.float32)
  return jnp.sum(z * z, -1, keepdims=True) - 2 * jnp.einsum("bhwd,kd->bhwk", z, codes_KD) + jnp.sum(codes_KD**2, -1)


class VectorQuantizer(nnx.Module):
  """The codebook: nearest-entry lookup (Euclidean) and id -> vector."""

  def __init__(self, n_codes: int, dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    init = nnx.initializers.uniform(2.0 / n_codes)
    self.embedding = nnx.Embed(
      n_codes,
      dim,
      embedding_init=lambda k, s, d: init(k, s, d) - 1.0 / n_codes,
      param_dtype=param_dtype,
      rngs=rngs,
      embedding_metadata=axes("codebook", "embed"),
    )

  def nearest(self, z_BHWD):
    """Ids of the nearest codebook entries, by squared distance."""
    return jnp.argmin(squared_distances(z_BHWD, self.embedding.embedding[...]), axis=-1).astype(jnp.int32)

  def lookup(self, ids_BHW):
    return self.embedding(ids_BHW)


class VQModel(nnx.Module):
  """aMUSEd's VQ-GAN: encode images to codebook ids, decode ids to images."""

  def __init__(self, config: VQConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    if config.mid_block_add_attention:
      raise ValueError(
        "this VQModel config asks for mid-block attention, which aMUSEd's tokenizer does not "
        "have and we do not implement; set mid_block_add_attention=false"
      )
    if config.norm_type != "group":
      raise ValueError(f"VQModel norm_type={config.norm_type!r} is not supported; aMUSEd uses 'group'")
    c = self.config = config
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    self.encoder = Encoder(c, **kw)
    self.quant_conv = conv(c.latent_channels, c.embed_dim, 1, **kw)
    self.quantize = VectorQuantizer(c.num_vq_embeddings, c.embed_dim, **kw)
    self.post_quant_conv = conv(c.embed_dim, c.latent_channels, 1, **kw)
    self.decoder = Decoder(c, **kw)

  def encode(self, images_BHWC: jax.Array) -> jax.Array:
    """Codebook ids tokens_BHW of images in [0, 1]."""
    return self.quantize.nearest(self.quant_conv(self.encoder(images_BHWC)))

  def decode(self, tokens_BHW: jax.Array) -> jax.Array:
    """Images (unclipped, nominally [0, 1]) of codebook ids."""
    return self.decoder(self.post_quant_conv(self.quantize.lookup(tokens_BHW)))
