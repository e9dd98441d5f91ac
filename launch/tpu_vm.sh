#!/usr/bin/env bash
# A Cloud TPU VM or pod slice: create it, set the project up on every worker, run a command on all workers at
# once, delete it.
#
#   launch/tpu_vm.sh create --name=NAME --zone=ZONE --type=v5litepod-16 [--project=P] [--dry_run]
#   launch/tpu_vm.sh setup  --name=NAME --zone=ZONE --type=v5litepod-16 [--dry_run]
#   launch/tpu_vm.sh run    --name=NAME --zone=ZONE --type=v5litepod-16 [--dry_run] -- python -m muse_styledrop.train ...
#   launch/tpu_vm.sh delete --name=NAME --zone=ZONE [--dry_run]
#
# --dry_run prints the topology, the mesh the command would build, the environment and every gcloud command
# exactly as it would run, and runs none. On a multi-host slice `run` sets MUSE_DISTRIBUTED=1, so the command
# starts JAX's distributed runtime (which finds its peers on a TPU VM); each worker's output is also kept in
# ~/muse_styledrop/runs/logs/<worker hostname>.log there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 ]] || usage
action="$1"; shift
name="" zone="" type="" project="" dry_run=0 command=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --type=*) type="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --dry_run) dry_run=1 ;;
    --) shift; command=("$@"); break ;;
    *) echo "error: unknown argument $1" >&2; usage ;;
  esac
  shift
done
case "$action" in create|setup|run|delete) ;; *) echo "error: unknown action '$action'" >&2; usage ;; esac
[[ -n "$name" && -n "$zone" ]] || { echo "error: --name and --zone are required" >&2; exit 2; }
[[ "$action" != run || ${#command[@]} -gt 0 ]] || { echo "error: run needs a command after --" >&2; exit 2; }

gcloud_args=(--zone="$zone")
[[ -n "$project" ]] && gcloud_args+=(--project="$project")
hosts=1
if [[ -n "$type" ]]; then
  plan="$(python3 "$root/muse_styledrop/topologies.py" "$type" -- "${command[@]}")" || exit 2
  eval "$plan"  # NAME, ACCELERATOR_TYPE, TOPOLOGY, CHIPS, HOSTS, HBM_GIB, RUNTIME, MESH
  hosts="$HOSTS"
  echo "topology: $ACCELERATOR_TYPE ($TOPOLOGY): $CHIPS chips on $HOSTS host(s), $HBM_GIB GiB each; software $RUNTIME"
  echo "processes: $HOSTS (one per worker)"
  [[ ${#command[@]} -gt 0 ]] && echo "mesh: $MESH"
elif [[ "$action" != delete ]]; then
  echo "error: --type is required for $action (one of: $(python3 "$root/muse_styledrop/topologies.py" | awk 'NR>1{print $2}' | tr '\n' ' '))" >&2
  exit 2
fi

do_run() {
  printf '%q ' "$@"; echo
  [[ $dry_run -eq 1 ]] || "$@"
}

remote_env="JAX_PLATFORMS=tpu"
[[ $hosts -gt 1 ]] && remote_env="$remote_env MUSE_DISTRIBUTED=1"
case "$action" in
  create)
    do_run gcloud compute tpus tpu-vm create "$name" "${gcloud_args[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
      --version="$RUNTIME"
    ;;
  setup)
    archive="${TMPDIR:-/tmp}/muse_styledrop-$name.tar.gz"
    do_run git -C "$root" archive --format=tar.gz --prefix=muse_styledrop/ -o "$archive" HEAD
    do_run gcloud compute tpus tpu-vm scp "$archive" "$name:muse_styledrop.tar.gz" "${gcloud_args[@]}" --worker=all
    do_run gcloud compute tpus tpu-vm ssh "$name" "${gcloud_args[@]}" --worker=all --command="tar -xzf muse_styledrop.tar.gz && python3 -m venv ~/venv && ~/venv/bin/pip install -q -e './muse_styledrop[tpu,gcs]'"
    ;;
  run)
    echo "environment: $remote_env"
    quoted="$(printf '%q ' "${command[@]}")"
    do_run gcloud compute tpus tpu-vm ssh "$name" "${gcloud_args[@]}" --worker=all --command="cd ~/muse_styledrop && source ~/venv/bin/activate && mkdir -p runs/logs && (export $remote_env; $quoted) 2>&1 | tee runs/logs/\$(hostname).log"
    ;;
  delete)
    do_run gcloud compute tpus tpu-vm delete "$name" "${gcloud_args[@]}" --quiet
    ;;
esac
