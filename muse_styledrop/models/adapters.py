"""StyleDrop adapters and LoRA, as banks of K adapters selected per example.

The paper's adapter (docs/method.md) sits on the output of each
transformer layer's cross-attention and of its MLP, before the residual add:
  y = x + gelu(x @ Wd_l) @ Wu_l,   Wd_l: D x H, Wu_l: H x D, no biases.
Per-layer weights come from a generator, one per site kind (cross-attention,
MLP): unshared, every layer has its own Wd_l, Wu_l; shared, one Wd and Wu
for all layers plus per-layer offset rows, Wd_l = Wd + dd_l (dd_l: H, added
to every row), Wu_l = Wu + du_l (du_l: D). Wu starts at zero, Wd from a
truncated normal (std 0.02), so a fresh adapter changes nothing.

LoRA (for comparison, as in diffusers' aMUSEd recipe): x W + (x A) B * alpha/r
on the q/k/v projections of every attention, B zero-initialised.

Every parameter has a leading bank axis K. `adapter_ids_B` picks, per
example, which adapter applies (-1: none), so the guidance passes with and
without an adapter, or two adapters of a composition, share one forward.
All adapter weights are `AdapterParam`s: the only variables an optimizer or a
checkpoint of a style sees.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from muse_styledrop.models.layers import axes, gelu


class AdapterParam(nnx.Param):
  """A trainable adapter weight; frozen base weights are plain nnx.Param."""


def adapter_param(value: jax.Array) -> AdapterParam:
  """An adapter weight, every dimension named 'adapter' (laid out by the adapter's own sharding rule)."""
  return AdapterParam(value, **axes(*["adapter"] * value.ndim))


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
  """What to train: the paper's bottleneck adapter (default) or LoRA."""

  kind: Literal["bottleneck", "lora"] = "bottleneck"
  hidden: int = 4  # bottleneck width H (paper: 4 round 1, 32 round 2)
  shared: bool = True  # one generator for all layers + per-layer offsets (round 1) or one per layer
  rank: int = 16  # LoRA rank
  alpha: float = 16.0  # LoRA scale numerator
  bank_size: int = 1  # K adapters that can be selected per example
  # Bottleneck only, our extension (the paper's Muse has no conv blocks): one more adapter on the output of each
  # attention block of the U-ViT's down and up blocks, the ConvNeXt side of aMUSEd's transformer (docs/training.md).
  blocks: bool = False
  # Bottleneck only, our extension: one more on the upsampled features that the logit head reads, one per token
  # (on a downsampling U-ViT each 2x2 group of tokens is drawn from one transformer position; docs/training.md).
  head: bool = False

  def __post_init__(self):
    if self.kind not in ("bottleneck", "lora"):
      raise ValueError(f"adapter kind {self.kind!r} is unknown; use 'bottleneck' or 'lora'")
    if self.blocks and self.kind != "bottleneck":
      raise ValueError(
        "adapter blocks=True is for the bottleneck adapter; with kind='lora' set blocks=False "
        "(LoRA already covers the block attentions)"
      )
    if self.head and self.kind != "bottleneck":
      raise ValueError("adapter head=True is for the bottleneck adapter; with kind='lora' set head=False")
    if min(self.hidden, self.rank, self.bank_size) < 1:
      raise ValueError("adapter hidden, rank and bank_size must be positive")


def bank_entry(ids_B, weights_K):
  """Per-example weights weights_B... from a bank (index -1 gives bank entry 0; callers mask it off)."""
  return weights_K[jnp.maximum(ids_B, 0)]


def add_where_on(x, delta, ids_B):
  """x + delta for examples whose adapter id is >= 0; x exactly (bitwise) elsewhere."""
  on = (ids_B >= 0).reshape(-1, *([1] * (x.ndim - 1)))
  return x + jnp.where(on, delta.astype(x.dtype), jnp.zeros((), x.dtype))


class BottleneckGenerator(nnx.Module):
  """Per-layer bottleneck weights for one site kind, for K adapters."""

  def __init__(self, bank: int, layers: int, dim: int, hidden: int, shared: bool, *, rngs: nnx.Rngs):
    init = nnx.initializers.truncated_normal(0.02)
    self.shared = shared
    lead = (bank,) if shared else (bank, layers)
    self.wd = adapter_param(init(rngs.params(), (*lead, dim, hidden), jnp.float32))
    self.wu = adapter_param(jnp.zeros((*lead, hidden, dim), jnp.float32))
    if shared:
      self.dd = adapter_param(jnp.zeros((bank, layers, hidden), jnp.float32))
      self.du = adapter_param(jnp.zeros((bank, layers, dim), jnp.float32))

  def layer(self, index: int) -> tuple[jax.Array, jax.Array]:
    """(Wd_KDH, Wu_KHD) of one layer."""
    if self.shared:
      return (self.wd[...] + self.dd[:, index, None, :], self.wu[...] + self.du[:, index, None, :])
    return self.wd[:, index], self.wu[:, index]


@dataclasses.dataclass
class BottleneckSite:
  """One layer's adapter at one site: y = x + gelu(x Wd) Wu for the selected examples."""

  wd_KDH: jax.Array
  wu_KHD: jax.Array

  def __call__(self, x_BLD, ids_B):
    wd, wu = bank_entry(ids_B, self.wd_KDH), bank_entry(ids_B, self.wu_KHD)
    h = gelu(jnp.einsum("bld,bdh->blh", x_BLD, wd.astype(x_BLD.dtype)))
    return add_where_on(x_BLD, jnp.einsum("blh,bhd->bld", h, wu.astype(x_BLD.dtype)), ids_B)


class BottleneckAdapters(nnx.Module):
  """The paper's adapters at both sites of every transformer layer; with `blocks`, also on `blocks` block outputs;
  with `config.head`, also on the head's input (`block_dim` wide)."""

  def __init__(self, config: AdapterConfig, layers: int, dim: int, *, rngs: nnx.Rngs, blocks=0, block_dim=0):
    args = (config.bank_size, layers, dim, config.hidden, config.shared)
    self.attn2 = BottleneckGenerator(*args, rngs=rngs)
    self.ff = BottleneckGenerator(*args, rngs=rngs)
    self.blocks = nnx.data(None)
    if blocks:
      self.blocks = BottleneckGenerator(config.bank_size, blocks, block_dim, config.hidden, config.shared, rngs=rngs)
    self.head = nnx.data(None)
    if config.head:  # a single site: nothing to share, so its own Wd, Wu
      self.head = BottleneckGenerator(config.bank_size, 1, block_dim, config.hidden, False, rngs=rngs)

  def block_site(self, index: int) -> BottleneckSite:
    """The adapter on the output of attention block `index` (the down block's, then the up block's)."""
    return BottleneckSite(*self.blocks.layer(index))

  def head_site(self) -> BottleneckSite:
    """The adapter on the features the logit head reads."""
    return BottleneckSite(*self.head.layer(0))

  def sites(self, index: int) -> dict[str, BottleneckSite]:
    return {"attn2": BottleneckSite(*self.attn2.layer(index)), "ff": BottleneckSite(*self.ff.layer(index))}


class LoRAProjection(nnx.Module):
  """Low-rank deltas for one attention's q/k/v projections, for K adapters."""

  def __init__(self, bank: int, d_in: int, d_kv_in: int, d_out: int, rank: int, *, rngs: nnx.Rngs):
    init = nnx.initializers.kaiming_uniform()
    for name, width in (("q", d_in), ("k", d_kv_in), ("v", d_kv_in)):
      setattr(self, f"{name}_a", adapter_param(init(rngs.params(), (bank, width, rank), jnp.float32)))
      setattr(self, f"{name}_b", adapter_param(jnp.zeros((bank, rank, d_out), jnp.float32)))


@dataclasses.dataclass
class LoRASite:
  """Deltas for one attention: delta(name, x) = (x A) B * scale for the selected examples."""

  a: dict
  b: dict
  scale: float

  def __call__(self, name: str, x_BLD, ids_B):
    a, b = bank_entry(ids_B, self.a[name]), bank_entry(ids_B, self.b[name])
    delta = jnp.einsum("blr,bro->blo", jnp.einsum("bld,bdr->blr", x_BLD, a.astype(x_BLD.dtype)), b.astype(x_BLD.dtype))
    return jnp.where((ids_B >= 0)[:, None, None], delta * self.scale, 0.0).astype(x_BLD.dtype)


class LoRAAdapters(nnx.Module):
  """LoRA on to_q/to_k/to_v of every attention (transformer layers and conv-block cross-attentions)."""

  def __init__(self, config: AdapterConfig, targets: dict[str, tuple[int, int, int]], *, rngs: nnx.Rngs):
    self.scale = config.alpha / config.rank
    self.projections = nnx.Dict(
      {
        name.replace(".", "_"): LoRAProjection(config.bank_size, *dims, config.rank, rngs=rngs)
        for name, dims in targets.items()
      }
    )

  def site(self, name: str) -> LoRASite:
    p = self.projections[name.replace(".", "_")]
    return LoRASite(
      {n: getattr(p, f"{n}_a")[...] for n in "qkv"}, {n: getattr(p, f"{n}_b")[...] for n in "qkv"}, self.scale
    )


def adapter_params(module: nnx.Module) -> nnx.State:
  """Only the adapter weights of a model."""
  return nnx.state(module, AdapterParam)


def count(module: nnx.Module) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(adapter_params(module)))
