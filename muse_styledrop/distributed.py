"""Multi-host runs: JAX's distributed runtime from the config or the environment, and one writer.

On a TPU VM slice the runtime finds its peers itself (config.distributed.enabled=True, or MUSE_DISTRIBUTED=1 as
launch/tpu_vm.sh sets on a multi-host slice); elsewhere it needs
the coordinator's address, the number of processes and this process's id, from config.distributed or from
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (which launch/local.py and
launch/gpu_multinode.sh set). Every process takes part in every computation and checkpoint; only process 0
writes the other files.
"""

from __future__ import annotations

import os

import jax


class DistributedError(RuntimeError):
  """The distributed runtime could not start as configured."""


def initialize(enabled: bool, coordinator_address: str, num_processes: int, process_id: int) -> None:
  """Start the runtime when asked to, or when the environment names a coordinator; fail loudly if it cannot."""
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  if not (enabled or address or os.environ.get("MUSE_DISTRIBUTED") == "1"):
    return
  env = lambda name: int(os.environ[name]) if os.environ.get(name, "") != "" else None
  num = num_processes or env("JAX_NUM_PROCESSES")
  pid = process_id if process_id >= 0 else env("JAX_PROCESS_ID")
  try:
    jax.distributed.initialize(address or None, num, pid)
  except Exception as e:  # noqa: BLE001  jax raises several kinds; the user needs one message
    raise DistributedError(
      f"could not start JAX's distributed runtime (coordinator {address or 'auto'}, {num or 'auto'} processes, "
      f"this one {pid if pid is not None else 'auto'}): {str(e).rstrip('.')}. On a TPU VM it starts by itself; "
      "elsewhere set "
      "config.distributed.coordinator_address, num_processes and process_id, or launch with launch/local.py "
      "or launch/gpu_multinode.sh"
    ) from e
  here, everywhere = jax.local_device_count(), jax.device_count()
  print(f"process {jax.process_index()} of {jax.process_count()}: {here} of {everywhere} devices")


def is_writer() -> bool:
  """Whether this process writes the run's files (process 0; checkpoints are written by all together)."""
  return jax.process_index() == 0
