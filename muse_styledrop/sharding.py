"""Device mesh and placement: frozen weights FSDP-sharded, adapters replicated, batches split.

The mesh has named axes ('data', 'fsdp', 'model') whose sizes come from the
config (one may be -1: the devices left). A frozen weight is split over
'fsdp' along its largest dimension that the axis size divides (small weights
stay replicated); trainable adapter weights and the optimizer state are
replicated (they are kilobytes to megabytes); a batch is split over 'data'
and 'fsdp' together, so every device computes. One device is the 1x1x1 case
of the same code.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")
MIN_SHARDED_SIZE = 2**14  # below this a weight is cheaper replicated


def make_mesh(sizes: dict[str, int], devices=None) -> Mesh:
  """A mesh with axis sizes from config; -1 takes the rest of the devices.

  Explicit sizes whose product is below the device count use the first
  devices (data=1, fsdp=1 is one device even where eight are visible).
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = [int(sizes.get(a, 1)) for a in AXES]
  if shape.count(-1) > 1:
    raise ValueError(f"mesh sizes {dict(zip(AXES, shape))}: at most one axis may be -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices cannot fill mesh {dict(zip(AXES, shape))}")
    shape[shape.index(-1)] = len(devices) // known
  if -1 not in [int(sizes.get(a, 1)) for a in AXES] and math.prod(shape) < len(devices):
    devices = devices[: math.prod(shape)]  # an explicit smaller mesh uses the first devices
  if math.prod(shape) != len(devices):
    raise ValueError(
      f"mesh {dict(zip(AXES, shape))} needs {math.prod(shape)} devices but {len(devices)} are "
      "visible; change config.mesh"
    )
  return Mesh(np.asarray(devices).reshape(shape), AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def check_batch_size(mesh: Mesh, batch_size: int) -> None:
  """A batch must split evenly over the devices that share it."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if batch_size % shards:
    raise ValueError(
      f"batch_size={batch_size} does not split over the mesh's data x fsdp = {shards} devices; use a multiple"
    )


def fsdp(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
  """Split the largest dimension the 'fsdp' axis divides; replicate small or indivisible weights."""
  n = mesh.shape["fsdp"]
  if n == 1 or math.prod(shape) < MIN_SHARDED_SIZE:
    return replicated(mesh)
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % n == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return NamedSharding(mesh, P(*spec))
  return replicated(mesh)


def frozen_shardings(mesh: Mesh, tree):
  return jax.tree.map(lambda x: fsdp(mesh, tuple(x.shape)), tree)


def replicated_shardings(mesh: Mesh, tree):
  return jax.tree.map(lambda _: replicated(mesh), tree)
