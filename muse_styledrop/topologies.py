"""The accelerator slices the launchers and the ahead-of-time check know: chips, hosts, memory per chip.

`python -m muse_styledrop.topologies [NAME [-- COMMAND]]` prints the table, or one row as shell variables for
launch/ (with the mesh COMMAND would build on it). This file imports nothing of the package, so the launchers
run it on a machine where the project is only checked out.
"""

from __future__ import annotations

import dataclasses
import sys


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str  # what our commands call it
  accelerator_type: str  # what `gcloud compute tpus tpu-vm create --accelerator-type` calls it
  topology: str  # what jax.experimental.topologies.get_topology_desc calls it
  chips: int  # JAX devices
  hosts: int  # processes (one per TPU VM worker)
  hbm_gib: float  # memory per chip
  runtime: str  # the TPU VM software version to create it with


TABLE = {
  t.name: t
  for t in (
    Topology("v4-8", "v4-8", "v4:2x2x1", 4, 1, 32, "tpu-ubuntu2204-base"),
    Topology("v4-32", "v4-32", "v4:2x2x4", 16, 4, 32, "tpu-ubuntu2204-base"),
    Topology("v5e-8", "v5litepod-8", "v5e:2x4", 8, 1, 16, "v2-alpha-tpuv5-lite"),
    Topology("v5e-16", "v5litepod-16", "v5e:4x4", 16, 4, 16, "v2-alpha-tpuv5-lite"),
    Topology("v5e-32", "v5litepod-32", "v5e:4x8", 32, 8, 16, "v2-alpha-tpuv5-lite"),
    Topology("v5p-8", "v5p-8", "v5p:2x2x1", 4, 1, 95, "v2-alpha-tpuv5"),
    Topology("v6e-8", "v6e-8", "v6e:2x4", 8, 1, 32, "v2-alpha-tpuv6e"),
  )
}
BY_ACCELERATOR = {t.accelerator_type: t for t in TABLE.values()}


def lookup(name: str) -> Topology:
  """A topology by our name or by its accelerator type (v5e-16 or v5litepod-16); unknown names list the known."""
  found = TABLE.get(name) or BY_ACCELERATOR.get(name)
  if found is None:
    raise ValueError(f"unknown topology {name!r}; use one of {', '.join(TABLE)} (muse_styledrop/topologies.py)")
  return found


MESH_AXES = ("data", "fsdp", "model")
DEFAULT_MESH = {"data": -1, "fsdp": 1, "model": 1}  # the shipped configs' config.mesh


def mesh_for(devices: int, command: list[str]) -> dict[str, int]:
  """The mesh a command's `--config.mesh.AXIS=N` overrides (over the shipped default) give on `devices`."""
  sizes = dict(DEFAULT_MESH)
  for arg in command:
    for axis in MESH_AXES:
      if arg.startswith(f"--config.mesh.{axis}="):
        sizes[axis] = int(arg.split("=", 1)[1])
  known = 1
  for axis in MESH_AXES:
    known *= sizes[axis] if sizes[axis] != -1 else 1
  if -1 in sizes.values():
    sizes[next(a for a in MESH_AXES if sizes[a] == -1)] = devices // known
  return sizes


def main(argv: list[str]) -> int:
  command = argv[argv.index("--") + 1 :] if "--" in argv else []
  argv = argv[: argv.index("--")] if "--" in argv else argv
  if len(argv) > 1:
    try:
      t = lookup(argv[1])
    except ValueError as e:
      print(e, file=sys.stderr)
      return 2
    for field in dataclasses.fields(t):
      print(f"{field.name.upper()}={getattr(t, field.name)}")
    mesh = mesh_for(t.chips, command)
    print("MESH=" + ",".join(f"{a}={mesh[a]}" for a in MESH_AXES))
    return 0
  print(f"{'name':8} {'accelerator type':17} {'topology':10} {'chips':>5} {'hosts':>5} {'HBM/chip':>9}")
  for t in TABLE.values():
    print(f"{t.name:8} {t.accelerator_type:17} {t.topology:10} {t.chips:5d} {t.hosts:5d} {t.hbm_gib:7.0f} GiB")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
