"""Building blocks shared by the tokenizer, the masked transformer and CLIP.

Attribute names follow the PyTorch modules they reproduce (diffusers
`Attention`, `FeedForward`, `AdaLayerNormContinuous`, ...), so a parameter's
path in the NNX state is its key in the published state dict, up to the
leaf rename done in `muse_styledrop.weights`.

Tensor names carry their shape: B batch, L/T sequence (image / text), D
feature width, H/W spatial, C channels, V vocabulary.

Every parameter carries logical axis names, one per dimension, in flax's
partitioning metadata (`out_sharding`): embed (a model's width), heads
(attention's inner width), mlp (a feed-forward's inner width), vocab,
codebook, conv_in / conv_out (convolution channels), window (a kernel's
spatial extent), norm (a normalisation's scale or shift), position, adapter.
`muse_styledrop.sharding` maps them to mesh axes by the config's rules; no
mesh is touched when a module is built.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import jax
import jax.numpy as jnp
from flax import nnx

_TARGET = contextvars.ContextVar("target_platform", default=None)


def target_platform() -> str:
  """The platform the code being traced will run on: the default backend, unless compiling for another."""
  return _TARGET.get() or jax.default_backend()


@contextlib.contextmanager
def compiling_for(platform: str):
  """Trace for `platform` (an ahead-of-time compile for TPU on a CPU host takes the TPU's code paths)."""
  token = _TARGET.set(platform)
  try:
    yield
  finally:
    _TARGET.reset(token)


class _OneKey(nnx.RngStream):
  """A stream that gives every draw the same key."""

  def __call__(self) -> jax.Array:
    return self.key[...]


def abstract(build):
  """`build(rngs)`'s module with shapes only (nnx.eval_shape), for weights that are read or placed afterwards.

  Its rngs give every draw one key: the values are never kept, and a counting stream's update costs milliseconds
  per draw inside the trace (flax compares the new count's sharding, and jax answers a tracer's with an error
  message that walks the whole trace), 2.3 s of building aMUSEd-256's transformer.
  """

  def shapes():
    rngs = nnx.Rngs(0)
    rngs.default = _OneKey(0, tag="default")
    return build(rngs)

  return nnx.eval_shape(shapes)


def axes(*names: str) -> dict:
  """Partitioning metadata naming each dimension of a parameter (laid out later, by rules)."""
  return {"out_sharding": names, "eager_sharding": False}


def param(value: jax.Array, *names: str) -> nnx.Param:
  """A parameter with logical axis names."""
  return nnx.Param(value, **axes(*names))


def linear(
  d_in: int,
  d_out: int,
  *,
  names: tuple[str, str],
  bias: bool,
  rngs: nnx.Rngs,
  dtype=None,
  param_dtype=jnp.float32,
):
  """A dense layer whose kernel is (in, out), named `names`; the PyTorch weight is its transpose."""
  return nnx.Linear(
    d_in,
    d_out,
    use_bias=bias,
    dtype=dtype,
    param_dtype=param_dtype,
    rngs=rngs,
    kernel_metadata=axes(*names),
    bias_metadata=axes(names[1]),
  )


def embed(num: int, dim: int, *, names: tuple[str, str], rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
  """An embedding table (num, dim) named `names`."""
  return nnx.Embed(num, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs, embedding_metadata=axes(*names))


class Conv(nnx.Conv):
  """nnx.Conv (same parameters, same results) computed as slices and matmuls on CPU.

  XLA:CPU's convolutions are slow for the shapes these models use, and 40-70x
  slower again inside a while loop (a scan of training steps, the sampler's
  fori_loop): measured per fwd+bwd step on this machine, a depthwise 3x3 conv
  over 64x8x8x128 took 50 ms unrolled and 3.6 s in a loop, a 1x1 conv 6 ms and
  390 ms, while a matmul took 9 ms either way. So on CPU the convolutions the
  masked transformer and CLIP use are written as what they are: a 1x1 conv or
  a non-overlapping patch conv (kernel = stride) is a reshape and one matmul;
  a depthwise conv is a sum of shifted slices scaled per channel. Overlapping
  dense convolutions (the VQ's 3x3s) stay XLA's: their im2col would copy the
  input kh*kw times (2.4 GB for a batch of 512 at 64x64x32), and the VQ's
  pretraining unrolls its steps instead. Other backends keep XLA's convolution.
  """

  def __call__(self, x):
    explicit = isinstance(self.padding, (tuple, list)) and all(isinstance(p, (tuple, list)) for p in self.padding)
    dilated = self.kernel_dilation not in (1, (1, 1)) or self.input_dilation not in (1, (1, 1))
    if target_platform() != "cpu" or not explicit or dilated:
      return super().__call__(x)
    kh, kw = self.kernel_size
    sh, sw = (self.strides, self.strides) if isinstance(self.strides, int) else self.strides
    (pt, pb), (pl, pr) = self.padding
    dtype = self.dtype or jnp.result_type(x.dtype, self.kernel.dtype)
    x = jnp.pad(x.astype(dtype), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kernel = self.kernel[...].astype(dtype)
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    window = lambda i, j: x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
    c_in, groups = x.shape[-1], self.feature_group_count
    if groups == 1 and (kh, kw) == (sh, sw):  # 1x1, or non-overlapping patches: a reshape and a matmul
      b = x.shape[0]
      cols = x[:, : ho * kh, : wo * kw].reshape(b, ho, kh, wo, kw, c_in).transpose(0, 1, 3, 2, 4, 5)
      y = cols.reshape(b, ho, wo, kh * kw * c_in) @ kernel.reshape(kh * kw * c_in, -1)
    elif groups == c_in == kernel.shape[-1]:  # depthwise
      y = sum(window(i, j) * kernel[i, j, 0] for i in range(kh) for j in range(kw))
    else:
      return super().__call__(x[:, pt : x.shape[1] - pb, pl : x.shape[2] - pr])
    return y if self.bias is None else y + self.bias[...].astype(dtype)


def conv(
  c_in: int,
  c_out: int,
  kernel: int,
  *,
  rngs: nnx.Rngs,
  names: tuple[str, str] = ("conv_in", "conv_out"),
  stride: int = 1,
  padding=0,
  groups: int = 1,
  bias: bool = True,
  dtype=None,
  param_dtype=jnp.float32,
):
  """An NHWC convolution with PyTorch's explicit symmetric padding; `names` name its in and out channels."""
  pad = ((padding, padding), (padding, padding)) if isinstance(padding, int) else padding
  return Conv(
    c_in,
    c_out,
    (kernel, kernel),
    strides=stride,
    padding=pad,
    feature_group_count=groups,
    use_bias=bias,
    dtype=dtype,
    param_dtype=param_dtype,
    rngs=rngs,
    kernel_metadata=axes("window", "window", *names),
    bias_metadata=axes(names[1]),
  )


def rms_norm(dim: int, eps: float, affine: bool = True, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
  """diffusers' RMSNorm: x / sqrt(mean(x^2) + eps) * weight, statistics in fp32."""
  return nnx.RMSNorm(
    dim,
    epsilon=eps,
    use_scale=affine,
    use_fast_variance=False,
    dtype=jnp.float32,
    param_dtype=param_dtype,
    rngs=rngs,
    scale_metadata=axes("norm"),
  )


def layer_norm(
  dim: int, eps: float, *, affine: bool = True, bias: bool = True, rngs: nnx.Rngs, param_dtype=jnp.float32
):
  """torch.nn.LayerNorm with optional weight and bias, statistics in fp32."""
  return nnx.LayerNorm(
    dim,
    epsilon=eps,
    use_scale=affine,
    use_bias=affine and bias,
    use_fast_variance=False,
    dtype=jnp.float32,
    param_dtype=param_dtype,
    rngs=rngs,
    scale_metadata=axes("norm"),
    bias_metadata=axes("norm"),
  )


def group_norm(channels: int, groups: int, eps: float, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
  """torch.nn.GroupNorm over NHWC, statistics in fp32."""
  return nnx.GroupNorm(
    channels,
    num_groups=groups,
    epsilon=eps,
    use_fast_variance=False,
    dtype=jnp.float32,
    param_dtype=param_dtype,
    rngs=rngs,
    scale_metadata=axes("norm"),
    bias_metadata=axes("norm"),
  )


def gelu(x):
  """PyTorch's default (erf) GELU."""
  return jax.nn.gelu(x, approximate=False)


def quick_gelu(x):
  """OpenAI CLIP's sigmoid approximation of GELU."""
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
  "gelu": gelu,
  "quick_gelu": quick_gelu,
  "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
  "silu": jax.nn.silu,
  "relu": jax.nn.relu,
}


def sinusoidal_embedding(values_N: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """diffusers' get_timestep_embedding with flip_sin_to_cos=True, downscale_freq_shift=0."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles_NF = values_N.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.cos(angles_NF), jnp.sin(angles_NF)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def attention(q_BLNH, k_BTNH, v_BTNH, mask_BQK=None):
  """Softmax attention, softmax in fp32, scale 1/sqrt(head dim); mask_BQK True where a query may attend.

  On CPU an explicit heads-major matmul form: XLA's CPU attention runs at
  about 30 GFLOP/s forward and backward on aMUSEd's shapes, this form at
  about 50 (measured; docs/performance.md). Elsewhere jax.nn.dot_product_attention,
  which can dispatch to fused kernels.
  """
  if target_platform() != "cpu":
    return jax.nn.dot_product_attention(q_BLNH, k_BTNH, v_BTNH, mask=None if mask_BQK is None else mask_BQK[:, None])
  q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q_BLNH, k_BTNH, v_BTNH))  # B N L H
  scores = jnp.matmul(q, jnp.swapaxes(k, -1, -2)).astype(jnp.float32) * (q.shape[-1] ** -0.5)
  if mask_BQK is not None:
    scores = jnp.where(mask_BQK[:, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.swapaxes(jnp.matmul(probs, v), 1, 2)


class Attention(nnx.Module):
  """diffusers `Attention` without norms: q from x, k/v from a context (self-attention when None)."""

  def __init__(
    self,
    dim: int,
    heads: int,
    head_dim: int,
    *,
    context_dim: int | None = None,
    bias: bool = False,
    out_bias: bool = True,
    rngs: nnx.Rngs,
    dtype=None,
    param_dtype=jnp.float32,
  ):
    inner = heads * head_dim
    context_dim = dim if context_dim is None else context_dim
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.heads, self.head_dim = heads, head_dim
    self.to_q = linear(dim, inner, names=("embed", "heads"), bias=bias, **kw)
    self.to_k = linear(context_dim, inner, names=("embed", "heads"), bias=bias, **kw)
    self.to_v = linear(context_dim, inner, names=("embed", "heads"), bias=bias, **kw)
    self.to_out = nnx.List([linear(inner, dim, names=("heads", "embed"), bias=out_bias, **kw)])

  def __call__(self, x_BLD: jax.Array, context_BTD: jax.Array | None = None, lora=None, adapter_ids_B=None):
    """Attention output; `lora` (a LoRASite) adds low-rank q/k/v deltas for the examples it selects."""
    context_BTD = x_BLD if context_BTD is None else context_BTD
    q, k, v = self.to_q(x_BLD), self.to_k(context_BTD), self.to_v(context_BTD)
    if lora is not None:
      q = q + lora("q", x_BLD, adapter_ids_B)
      k = k + lora("k", context_BTD, adapter_ids_B)
      v = v + lora("v", context_BTD, adapter_ids_B)
    split = lambda t: t.reshape(*t.shape[:-1], self.heads, self.head_dim)
    q, k, v = split(q), split(k), split(v)
    out_BLNH = attention(q, k, v)
    return self.to_out[0](out_BLNH.reshape(*x_BLD.shape[:-1], -1))


class GEGLU(nnx.Module):
  """Gated GELU input projection: value * gelu(gate)."""

  def __init__(self, dim: int, inner: int, *, bias: bool, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
    self.proj = linear(
      dim, 2 * inner, names=("embed", "mlp"), bias=bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype
    )

  def __call__(self, x):
    value, gate = jnp.split(self.proj(x), 2, axis=-1)
    return value * gelu(gate)


class FeedForward(nnx.Module):
  """diffusers `FeedForward` with a GEGLU activation: net = [GEGLU, Dropout, Linear]."""

  def __init__(
    self, dim: int, inner: int, *, bias: bool, dropout: float = 0.0, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32
  ):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.net = nnx.List(
      [
        GEGLU(dim, inner, bias=bias, **kw),
        nnx.Dropout(dropout),
        linear(inner, dim, names=("mlp", "embed"), bias=bias, **kw),
      ]
    )

  def __call__(self, x):
    for layer in self.net:
      x = layer(x)
    return x


class AdaLayerNormContinuous(nnx.Module):
  """Norm whose scale and shift come from a conditioning vector: norm(x) * (1 + scale) + shift."""

  def __init__(
    self,
    dim: int,
    cond_dim: int,
    *,
    eps: float,
    affine: bool,
    bias: bool,
    kind: str,
    rngs: nnx.Rngs,
    dtype=None,
    param_dtype=jnp.float32,
  ):
    self.linear = linear(
      cond_dim, 2 * dim, names=("embed", "mlp"), bias=bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype
    )
    if kind == "rms_norm":
      self.norm = rms_norm(dim, eps, affine, rngs=rngs, param_dtype=param_dtype)
    elif kind == "layer_norm":
      self.norm = layer_norm(dim, eps, affine=affine, bias=bias, rngs=rngs, param_dtype=param_dtype)
    else:
      raise ValueError(f"unknown norm kind {kind!r}; use 'rms_norm' or 'layer_norm'")

  def __call__(self, x_BLD, cond_BD):
    scale_BD, shift_BD = jnp.split(self.linear(jax.nn.silu(cond_BD)), 2, axis=-1)
    return (self.norm(x_BLD) * (1 + scale_BD[:, None]) + shift_BD[:, None]).astype(x_BLD.dtype)
