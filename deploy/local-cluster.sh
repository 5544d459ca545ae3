#!/usr/bin/env bash
# A VMScatter cluster of separate processes on this machine: scheduler, one source, N targets, then one migration
# submitted by the console. What `vmscatter demo` does in one process, here as a deployment would run it.
#   deploy/local-cluster.sh [targets] [vms] [vm-memory]
#   VMSCATTER_BACKEND=qemu deploy/local-cluster.sh 2 3 256MiB     (real QEMU guests on the source, QEMU on the targets)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
targets=${1:-3}; vms=${2:-6}; memory=${3:-64MiB}; backend=${VMSCATTER_BACKEND:-synthetic}
work=$(mktemp -d); port=4053
dotnet build "$here/src/VMScatter.Cli/VMScatter.Cli.csproj" -c Release --nologo -v quiet -clp:NoSummary
cli=(dotnet "$here/src/VMScatter.Cli/bin/Release/net10.0/vmscatter.dll")
pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; echo "logs in $work"; }
trap cleanup EXIT
"${cli[@]}" node --role scheduler --port $port --journal "$work/journal.db" --config "$here/deploy/node-example.conf" > "$work/scheduler.log" 2>&1 & pids+=($!)
"${cli[@]}" node --role source --seeds 127.0.0.1:$port --host-id source-1 --backend "$backend" --vms "$vms" --vm-memory "$memory" > "$work/source.log" 2>&1 & pids+=($!)
for i in $(seq 1 "$targets"); do
  "${cli[@]}" node --role target --seeds 127.0.0.1:$port --host-id "target-$i" --backend "$backend" --capacity 1GiB > "$work/target-$i.log" 2>&1 & pids+=($!)
done
"${cli[@]}" migrate --seeds 127.0.0.1:$port --wait-seconds 60 --json "$work/report.json"
