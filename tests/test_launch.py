"""launch/: every script's dry run, and what each hands to gcloud / sbatch / srun (stubs that record their
arguments)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
COMMAND = ["python", "-m", "muse_styledrop.train", "--config=configs/style_one_shot.py:paper", "--config.mesh.fsdp=-1"]
COMMAND += ["--config.mesh.data=1"]


@pytest.fixture
def stubs(tmp_path):
  """gcloud, sbatch, srun and scontrol on PATH that append their arguments to calls.txt."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in ("gcloud", "sbatch", "srun"):
    (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {tmp_path}/calls.txt\n')
  (bin_dir / "scontrol").write_text("#!/bin/sh\necho node-a; echo node-b\n")
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
  env.pop("SLURM_JOB_ID", None)
  calls = lambda: (tmp_path / "calls.txt").read_text().splitlines() if (tmp_path / "calls.txt").exists() else []
  return env, calls


def launch(args, env, check=True):
  out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
  if check:
    assert out.returncode == 0, out.stderr
  return out


def test_tpu_vm_dry_run_prints_topology_mesh_and_commands_and_runs_nothing(stubs):
  env, calls = stubs
  args = ["launch/tpu_vm.sh", "run", "--name=pod", "--zone=us-west4-a", "--type=v5litepod-16", "--dry_run", "--"]
  out = launch([*args, *COMMAND], env).stdout
  assert "16 chips on 4 host(s), 16 GiB each" in out and "processes: 4" in out
  assert "mesh: data=1,fsdp=16,model=1" in out and "MUSE_DISTRIBUTED=1" in out
  assert "gcloud compute tpus tpu-vm ssh pod --zone=us-west4-a --worker=all" in out
  assert calls() == []


def test_tpu_vm_actions_call_gcloud_as_printed(stubs):
  env, calls = stubs
  base = ["--name=pod", "--zone=z", "--type=v5e-8", "--project=p"]
  launch(["launch/tpu_vm.sh", "create", *base], env)
  launch(["launch/tpu_vm.sh", "run", *base, "--", "python", "-m", "muse_styledrop.train"], env)
  launch(["launch/tpu_vm.sh", "delete", "--name=pod", "--zone=z"], env)
  made, ran, deleted = calls()
  assert made == "gcloud compute tpus tpu-vm create pod --zone=z --project=p --accelerator-type=v5litepod-8 " + (
    "--version=v2-alpha-tpuv5-lite"
  )
  assert ran.startswith("gcloud compute tpus tpu-vm ssh pod --zone=z --project=p --worker=all --command=cd ")
  assert "python -m muse_styledrop.train" in ran and "MUSE_DISTRIBUTED" not in ran  # one host: no runtime to start
  assert deleted == "gcloud compute tpus tpu-vm delete pod --zone=z --quiet"


@pytest.mark.parametrize(
  "args, message",
  [
    (["boot", "--name=a", "--zone=z"], "unknown action 'boot'"),
    (["create", "--name=a", "--zone=z", "--type=v9-1"], "unknown topology 'v9-1'"),
    (["run", "--name=a", "--zone=z", "--type=v5e-8"], "run needs a command after --"),
  ],
)
def test_tpu_vm_bad_arguments_are_one_line_and_exit_2(stubs, args, message):
  env, calls = stubs
  out = launch(["launch/tpu_vm.sh", *args], env, check=False)
  assert out.returncode == 2 and message in out.stderr and calls() == []


def test_gpu_multinode_submits_itself_outside_an_allocation_and_sruns_inside(stubs):
  env, calls = stubs
  out = launch(["launch/gpu_multinode.sh", "--nodes=2", "--gpus_per_node=8", "--dry_run", "--", *COMMAND], env).stdout
  assert "2 node(s) x 8 GPU(s) = 16 devices" in out and "mesh: data=1,fsdp=16,model=1" in out and calls() == []
  launch(["launch/gpu_multinode.sh", "--nodes=2", "--gpus_per_node=8", "--", *COMMAND], env)
  inside = {**env, "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "node-[a-b]"}
  launch(["launch/gpu_multinode.sh", "--nodes=2", "--gpus_per_node=8", "--", *COMMAND], inside)
  submitted, ran = calls()
  assert submitted.startswith("sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8")
  assert "--wrap=" in submitted and "launch/gpu_multinode.sh --nodes=2" in submitted
  assert ran.startswith("srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --gpus-per-node=8 bash -c")
  assert "JAX_COORDINATOR_ADDRESS=node-a:12355 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$SLURM_PROCID" in ran


def test_local_dry_run_prints_each_process_and_its_environment(stubs, tmp_path):
  env, _ = stubs
  logs = tmp_path / "logs"
  args = [sys.executable, "launch/local.py", "--num_processes=3", "--devices_per_process=2", f"--log_dir={logs}"]
  out = launch([*args, "--dry_run", "--", "python", "-c", "pass"], env).stdout
  assert "3 process(es) x 2 fake CPU device(s) = 6 devices" in out
  for i in range(3):
    assert f"process {i}: JAX_COORDINATOR_ADDRESS=127.0.0.1:" in out and f"JAX_PROCESS_ID={i}" in out
  assert out.count("--xla_force_host_platform_device_count=2") == 3
  assert not logs.exists()  # nothing ran


def test_a_distributed_runtime_that_cannot_start_is_one_line_and_exit_2(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "MUSE_"))}
  cmd = [sys.executable, "-m", "muse_styledrop.train", "--config=configs/style_one_shot.py:runlocal"]
  out = subprocess.run(
    [*cmd, "--config.distributed.enabled=True", f"--workdir={tmp_path / 'run'}"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 2, out.stderr[-1500:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: could not start JAX's distributed runtime") and "launch/local.py" in last
  assert not (tmp_path / "run").exists()
