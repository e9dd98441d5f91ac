r"""Run a command as N processes of one multi-host JAX job on this machine, each with D fake CPU devices.

  python launch/local.py --num_processes=2 --devices_per_process=2 [--dry_run] -- \
      python -m muse_styledrop.train --config=configs/style_one_shot.py:runlocal --config.mesh.data=-1

How a pod configuration is tried on a laptop, and how multi-host is tested. Each process gets
JAX_COORDINATOR_ADDRESS (a free local port), JAX_NUM_PROCESSES, JAX_PROCESS_ID and XLA_FLAGS with its device
count; the commands start the distributed runtime from them. Process i's output goes to
<log_dir>/process_<i>.log and process 0's is also echoed. The exit code is the first non-zero one, or 0.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(base: dict, address: str, n: int, i: int, devices: int) -> dict:
  flags = [f for f in base.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
  return {
    **base,
    "JAX_COORDINATOR_ADDRESS": address,
    "JAX_NUM_PROCESSES": str(n),
    "JAX_PROCESS_ID": str(i),
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
  }


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  if "--" not in argv:
    sys.exit(
      "error: put the command after --, e.g. launch/local.py --num_processes=2 -- python -m muse_styledrop.train ..."
    )
  cut = argv.index("--")
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=1)
  parser.add_argument("--log_dir", default="runs/launch_local")
  parser.add_argument("--dry_run", action="store_true", help="print what would run, run nothing")
  args = parser.parse_args(argv[:cut])
  command = argv[cut + 1 :]
  if not command:
    sys.exit("error: no command after --")
  if args.num_processes < 1 or args.devices_per_process < 1:
    sys.exit("error: --num_processes and --devices_per_process must be at least 1")
  return args, command


def main(argv: list[str]) -> int:
  args, command = parse(argv)
  address = f"127.0.0.1:{free_port()}"
  n, d = args.num_processes, args.devices_per_process
  envs = [process_env(dict(os.environ), address, n, i, d) for i in range(n)]
  print(f"topology: local, {n} process(es) x {d} fake CPU device(s) = {n * d} devices; coordinator {address}")
  for i, env in enumerate(envs):
    names = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_PLATFORMS", "XLA_FLAGS")
    assigned = " ".join(f"{k}={shlex.quote(env[k])}" for k in names)
    print(f"process {i}: {assigned} {shlex.join(command)}  > {Path(args.log_dir) / f'process_{i}.log'}")
  if args.dry_run:
    return 0
  Path(args.log_dir).mkdir(parents=True, exist_ok=True)
  logs = [open(Path(args.log_dir) / f"process_{i}.log", "w") for i in range(n)]  # noqa: SIM115
  procs = [subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT) for env, log in zip(envs, logs)]
  while any(p.poll() is None for p in procs):
    if any(p.poll() for p in procs):  # one failed: the others would wait for it in a collective forever
      for p in procs:
        if p.poll() is None:
          p.terminate()
    time.sleep(0.2)
  codes = [p.returncode for p in procs]
  for log in logs:
    log.close()
  sys.stdout.write((Path(args.log_dir) / "process_0.log").read_text())
  for i, code in enumerate(codes):
    if code:
      print(f"process {i} exited with {code}; its log: {Path(args.log_dir) / f'process_{i}.log'}", file=sys.stderr)
  return next((c for c in codes if c), 0)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
