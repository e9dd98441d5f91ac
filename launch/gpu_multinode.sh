#!/usr/bin/env bash
# A multi-node GPU job under SLURM: one process per node, each seeing its node's GPUs; the coordinator is the
# first node of the allocation.
#
#   launch/gpu_multinode.sh --nodes=2 --gpus_per_node=8 [--partition=P] [--time=04:00:00] [--dry_run] \
#       -- python -m muse_styledrop.train --config=configs/style_one_shot.py:paper --config.mesh.fsdp=-1 ...
#
# Inside an allocation (salloc, or an sbatch script: SLURM_JOB_ID is set) it runs srun directly; outside one it
# submits itself with sbatch. Each process gets JAX_COORDINATOR_ADDRESS (first node, port 12355),
# JAX_NUM_PROCESSES and JAX_PROCESS_ID (from SLURM), which start JAX's distributed runtime. --dry_run prints the
# topology, the mesh, the environment and the commands exactly as they would run, and runs none.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
nodes=1 gpus=8 partition="" time="04:00:00" dry_run=0 port=12355 command=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes=*) nodes="${1#*=}" ;;
    --gpus_per_node=*) gpus="${1#*=}" ;;
    --partition=*) partition="${1#*=}" ;;
    --time=*) time="${1#*=}" ;;
    --port=*) port="${1#*=}" ;;
    --dry_run) dry_run=1 ;;
    --) shift; command=("$@"); break ;;
    *) echo "error: unknown argument $1" >&2; usage ;;
  esac
  shift
done
[[ ${#command[@]} -gt 0 ]] || { echo "error: put the command after --" >&2; usage; }
[[ "$nodes" =~ ^[1-9][0-9]*$ && "$gpus" =~ ^[1-9][0-9]*$ ]] || { echo "error: --nodes and --gpus_per_node must be positive integers" >&2; exit 2; }

devices=$((nodes * gpus))
mesh="$(python3 -c "import sys; sys.path.insert(0, '$root/muse_styledrop'); import topologies; m = topologies.mesh_for($devices, sys.argv[1:]); print(','.join(f'{a}={m[a]}' for a in topologies.MESH_AXES))" "${command[@]}")"
echo "topology: $nodes node(s) x $gpus GPU(s) = $devices devices"
echo "processes: $nodes (one per node)"
echo "mesh: $mesh"
quoted="$(printf '%q ' "${command[@]}")"

run() {
  printf '%q ' "$@"; echo
  [[ $dry_run -eq 1 ]] || "$@"
}

if [[ -n "${SLURM_JOB_ID:-}" ]]; then
  if [[ $dry_run -eq 1 ]] && ! command -v scontrol > /dev/null; then
    first="<first node of the allocation>"
  else
    first="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"  # reads it all: head would close the pipe early (SIGPIPE under pipefail)
  fi
  echo "environment: JAX_COORDINATOR_ADDRESS=$first:$port JAX_NUM_PROCESSES=$nodes JAX_PROCESS_ID=\$SLURM_PROCID"
  run srun --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 --gpus-per-node="$gpus" bash -c \
    "JAX_COORDINATOR_ADDRESS=$first:$port JAX_NUM_PROCESSES=$nodes JAX_PROCESS_ID=\$SLURM_PROCID exec $quoted"
else
  submit=(sbatch --nodes="$nodes" --ntasks-per-node=1 --gpus-per-node="$gpus" --time="$time" --job-name=muse_styledrop
    --output=runs/slurm-%j.out)
  [[ -n "$partition" ]] && submit+=(--partition="$partition")
  echo "environment: set inside the allocation (JAX_COORDINATOR_ADDRESS from its first node)"
  run "${submit[@]}" --wrap="$root/launch/gpu_multinode.sh --nodes=$nodes --gpus_per_node=$gpus --port=$port -- $quoted"
fi
