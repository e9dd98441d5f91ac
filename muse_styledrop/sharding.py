"""The device mesh, and where each array lives on it: logical axis names mapped to mesh axes by rules.

The mesh has named axes ('data', 'fsdp', 'model') whose sizes come from the
config (one may be -1: the devices left). Every parameter names its
dimensions (`muse_styledrop.models.layers.axes`: embed, heads, mlp, vocab, ...)
and `config.sharding.rules` maps each name to mesh axes, as maxtext keeps
them: embed -> fsdp shards every large weight over 'fsdp' (fully sharded
data parallel), heads/mlp/vocab -> model splits attention and feed-forward
widths over 'model' (tensor parallel), adapter -> "" replicates the
adapters and so their optimizer state. A dimension that the mesh axes do not
divide, or whose axes an earlier dimension already took, stays whole. A batch
splits as the 'batch' rule says. One device is the 1x1x1 case of the same code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "model")
Rules = Mapping[str, "str | tuple[str, ...]"]  # "" or None: whole on every device


class ShardingError(ValueError):
  """A mesh, rule or parameter annotation that cannot lay arrays out as asked."""


def make_mesh(sizes: Mapping[str, int], devices=None) -> Mesh:
  """A mesh with axis sizes from config; -1 takes the rest of the devices.

  Explicit sizes whose product is below the device count use the first
  devices (data=1, fsdp=1 is one device even where eight are visible).
  """
  devices = list(devices if devices is not None else jax.devices())
  unknown = set(sizes) - set(AXES)
  if unknown:
    raise ShardingError(f"config.mesh names axis {sorted(unknown)[0]!r}; the mesh axes are {', '.join(AXES)}")
  shape = [int(sizes.get(a, 1)) for a in AXES]
  if any(s < 1 and s != -1 for s in shape):
    raise ShardingError(f"mesh sizes {dict(zip(AXES, shape))}: each is at least 1, or -1 for the devices left over")
  if shape.count(-1) > 1:
    raise ShardingError(f"mesh sizes {dict(zip(AXES, shape))}: at most one axis may be -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ShardingError(f"{len(devices)} devices cannot fill mesh {dict(zip(AXES, shape))}")
    shape[shape.index(-1)] = len(devices) // known
  elif math.prod(shape) < len(devices):
    logging.warning(
      "config.mesh %s uses %d of the %d devices; the others stay idle (-1 on one axis uses them all)",
      dict(zip(AXES, shape)),
      math.prod(shape),
      len(devices),
    )
    devices = devices[: math.prod(shape)]  # an explicit smaller mesh uses the first devices
  if math.prod(shape) != len(devices):
    raise ShardingError(
      f"mesh {dict(zip(AXES, shape))} needs {math.prod(shape)} devices but {len(devices)} are "
      "visible; change config.mesh"
    )
  return Mesh(np.asarray(devices).reshape(shape), AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _mesh_axes(rules: Rules, name: str | None) -> tuple[str, ...]:
  if name is None:
    return ()
  if name not in rules:
    raise ShardingError(
      f"logical axis {name!r} has no rule in config.sharding.rules; add one (None replicates it): "
      f"--config.sharding.rules.{name}=fsdp"
    )
  target = rules[name]
  return () if not target else (target,) if isinstance(target, str) else tuple(target)


def spec(mesh: Mesh, names: tuple[str | None, ...], shape: tuple[int, ...], rules: Rules) -> P:
  """The PartitionSpec of an array of `shape` whose dimensions are named `names`.

  A mesh axis is used at most once (by the first dimension that asks for it);
  a dimension that its axes do not divide stays whole.
  """
  if len(names) != len(shape):
    raise ShardingError(f"axis names {names} do not match an array of shape {shape}")
  used, out = set(), []
  for name, dim in zip(names, shape):
    axes = tuple(a for a in _mesh_axes(rules, name) if a not in used and mesh.shape[a] > 1)
    if axes and dim % math.prod(mesh.shape[a] for a in axes) == 0:
      used.update(axes)
      out.append(axes[0] if len(axes) == 1 else axes)
    else:
      out.append(None)
  return P(*out)


def named(mesh: Mesh, names: tuple[str | None, ...], shape: tuple[int, ...], rules: Rules) -> NamedSharding:
  return NamedSharding(mesh, spec(mesh, names, shape, rules))


def logical_names(var: nnx.Variable, where: str = "") -> tuple[str, ...]:
  """A parameter's logical axis names; an unannotated one is an error, never a silent replication."""
  names = var.get_metadata().get("out_sharding")
  if names is None or len(names) != len(var.shape):
    raise ShardingError(
      f"parameter {where or type(var).__name__} of shape {tuple(var.shape)} has logical axis names {names}; "
      "every parameter names each of its dimensions (muse_styledrop.models.layers.axes)"
    )
  return tuple(names)


def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def state_shardings(mesh: Mesh, state, rules: Rules):
  """The NamedSharding of every variable of an nnx State (concrete or abstract), by its logical names."""

  def one(path, var):
    where = ".".join(str(getattr(k, "key", k)) for k in path)
    return var.replace(named(mesh, logical_names(var, where), tuple(var.shape), rules))

  return jax.tree_util.tree_map_with_path(one, state, is_leaf=_is_variable)


def follow_params(mesh: Mesh, tree, rules: Rules):
  """Shardings for an optimizer state: moments follow their parameter's names, anything else is replicated."""

  def one(x):
    if _is_variable(x) and x.get_metadata().get("out_sharding") is not None:
      return x.replace(named(mesh, logical_names(x), tuple(x.shape), rules))
    return jax.tree.map(lambda _: replicated(mesh), x)

  return jax.tree.map(one, tree, is_leaf=_is_variable)


def batch(mesh: Mesh, rules: Rules, ndim: int = 1) -> NamedSharding:
  """The sharding of a batch: its first dimension as the 'batch' rule says, the rest whole."""
  axes = tuple(a for a in _mesh_axes(rules, "batch") if mesh.shape[a] > 1)
  first = axes[0] if len(axes) == 1 else (axes or None)
  return NamedSharding(mesh, P(first, *[None] * (ndim - 1)))


def stacked_batch(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
  """The sharding of several steps' batches stacked on a leading axis: each batch as `batch` lays it out."""
  return NamedSharding(mesh, P(None, *batch(mesh, rules, ndim - 1).spec))


def batch_shards(mesh: Mesh, rules: Rules) -> int:
  return math.prod(mesh.shape[a] for a in _mesh_axes(rules, "batch"))


def check_batch_size(mesh: Mesh, rules: Rules, batch_size: int) -> None:
  """A batch must split evenly over the devices that share it."""
  shards = batch_shards(mesh, rules)
  if batch_size % shards:
    raise ShardingError(
      f"batch_size={batch_size} does not split over the {shards} devices of the mesh's batch axes; use a multiple"
    )


def bytes_per_device(shardings_and_arrays) -> int:
  """The bytes one device holds of (NamedSharding, array-like) pairs: the largest shard of each, summed."""
  total = 0
  for sh, x in shardings_and_arrays:
    total += math.prod(sh.shard_shape(tuple(x.shape))) * np.dtype(x.dtype).itemsize
  return total


def placer(mesh: Mesh, rules: Rules):
  """A weight loader's placement: each device receives only its slice of a host array, cast to the parameter's
  dtype (jax.make_array_from_callback), so a whole weight is never put on one device."""

  def place(path, var, host):
    where = ".".join(str(p) for p in path)
    sh = named(mesh, logical_names(var, where), tuple(var.shape), rules)
    return jax.make_array_from_callback(tuple(host.shape), sh, lambda index: np.asarray(host[index], var.dtype))

  return place


def sampler_inputs(mesh: Mesh, rules: Rules, passes, pictures: int):
  """Shardings of a sampler call's inputs: (the passes', one for per-picture arrays such as keys and tokens).

  Pictures split over the batch axes when their number divides over them, else every device holds them all; in the
  passes, (pass, picture, ...) arrays split on the picture axis.
  """
  over = batch(mesh, rules).spec[0] if pictures % batch_shards(mesh, rules) == 0 else None
  per_picture = NamedSharding(mesh, P(over))
  in_passes = NamedSharding(mesh, P(None, over))
  return jax.tree.map(lambda x: in_passes, passes), per_picture
