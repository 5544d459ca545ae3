#!/usr/bin/env bash
# A VMScatter cluster of separate processes on this machine: scheduler, one source, N targets, then one migration
# submitted by the console. What `vmscatter demo` does in one process, here as a deployment would run it.
#   deploy/local-cluster.sh [targets] [vms] [vm-memory]
#   deploy/local-cluster.sh --serve [targets] [vms] [vm-memory]   start the cluster, print its seed, keep it until
#                                                                  SIGTERM or Ctrl+C (for `vmscatter status|migrate|...`)
#   VMSCATTER_BACKEND=qemu deploy/local-cluster.sh 2 3 256MiB     (real QEMU guests on the source, QEMU on the targets)
# Environment: VMSCATTER_PORT (the scheduler's port, the seed; 4053), VMSCATTER_DLL (a built vmscatter.dll to run
# instead of building Release here), VMSCATTER_WORK (the directory for the logs and the journal; a new one by default).
# Every node it started is stopped (SIGTERM, they leave the cluster) when it exits, whether it ends, fails or is stopped.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
serve=0
if [[ ${1:-} == --serve ]]; then serve=1; shift; fi
targets=${1:-3}; vms=${2:-6}; memory=${3:-64MiB}; backend=${VMSCATTER_BACKEND:-synthetic}
port=${VMSCATTER_PORT:-4053}
work=${VMSCATTER_WORK:-$(mktemp -d)}
mkdir -p "$work"
if [[ -n ${VMSCATTER_DLL:-} ]]; then
  cli=(dotnet "$VMSCATTER_DLL")
else
  dotnet build "$here/src/VMScatter.Cli/VMScatter.Cli.csproj" -c Release --nologo -v quiet -clp:NoSummary
  cli=(dotnet "$here/src/VMScatter.Cli/bin/Release/net10.0/vmscatter.dll")
fi
pids=()
cleanup() {
  trap - EXIT TERM INT
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  echo "logs in $work" >&2
}
trap cleanup EXIT
# A signal ends the script through its EXIT trap (bash alone would not run it when killed by a signal).
trap 'exit 143' TERM
trap 'exit 130' INT

# Waits until a node's log says it is up; an exited node or two minutes without it is an error (and the EXIT trap stops the rest).
wait_up() {
  local name=$1 pid=$2 deadline=$((SECONDS + 120))
  until grep -q " up at " "$work/$name.log"; do
    kill -0 "$pid" 2>/dev/null || { echo "error: node $name exited before it was up (see $work/$name.log)" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "error: node $name not up within 120 s (see $work/$name.log)" >&2; exit 1; }
    sleep 0.5
  done
}

"${cli[@]}" node --role scheduler --host-id scheduler-1 --port "$port" --journal "$work/journal.db" --config "$here/deploy/node-example.conf" > "$work/scheduler.log" 2>&1 & pids+=($!)
wait_up scheduler "${pids[-1]}"
"${cli[@]}" node --role source --seeds 127.0.0.1:"$port" --host-id source-1 --backend "$backend" --vms "$vms" --vm-memory "$memory" > "$work/source-1.log" 2>&1 & pids+=($!)
names=(source-1)
for i in $(seq 1 "$targets"); do
  "${cli[@]}" node --role target --seeds 127.0.0.1:"$port" --host-id "target-$i" --backend "$backend" --capacity 1GiB > "$work/target-$i.log" 2>&1 & pids+=($!)
  names+=("target-$i")
done
for i in "${!names[@]}"; do wait_up "${names[$i]}" "${pids[$((i + 1))]}"; done

if ((serve)); then
  echo "cluster up: seeds 127.0.0.1:$port (scheduler, source-1 with $vms VMs, $targets targets); logs in $work"
  # Until stopped, or until a node exits by itself (an error: the rest are stopped too).
  wait -n "${pids[@]}" || true
  echo "error: a node exited (see the logs in $work)" >&2
  exit 1
fi
"${cli[@]}" migrate --seeds 127.0.0.1:"$port" --wait-seconds 60 --json "$work/report.json"
