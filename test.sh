#!/usr/bin/env bash
# The tests, with everything they need: on a fresh Debian machine with the .NET SDK, installs QEMU, a static busybox
# and a kernel (the QEMU guests), tmux (a real terminal for the progress view), openssl (deploy/make-certs.sh, for the
# control plane's TLS tests), iproute2 (the network-namespace tests), sqlite3, gcc, make, libc6-dev and zlib1g-dev (the
# guests' real workloads) and PostgreSQL 15 (the shared scheduler journal),
# starts PostgreSQL with a test role and database, then runs the whole suite. `.ci/run` calls exactly this.
# Needs root for apt-get (as CI and the dev machines here are); without root, install those packages yourself and set
# VMSCATTER_TEST_POSTGRES.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export DEBIAN_FRONTEND=noninteractive DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
command -v dotnet >/dev/null || { echo "error: the .NET SDK (dotnet) is required and not installed" >&2; exit 1; }

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
[[ -x /bin/busybox ]] || need+=(busybox-static)
compgen -G "/boot/vmlinuz-*" >/dev/null || need+=(linux-image-amd64)
command -v pg_ctlcluster >/dev/null && [[ -d /usr/lib/postgresql/15 ]] || need+=(postgresql)
command -v tmux >/dev/null || need+=(tmux) # the live progress is tested in a real terminal
command -v openssl >/dev/null || need+=(openssl) # deploy/make-certs.sh, for the control plane's TLS tests
command -v ip >/dev/null && command -v tc >/dev/null || need+=(iproute2) # NetLab: namespaces, bridge, veths, tc tbf
# The guest image's real workloads (deploy/guest/build-guest-image.sh): sqlite3 (database), gcc, make, libc6-dev and
# zlib's example sources from zlib1g-dev (compile).
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v gcc >/dev/null && command -v make >/dev/null && [[ -f /usr/include/stdio.h ]] || need+=(gcc make libc6-dev)
[[ -f /usr/share/doc/zlib1g-dev/examples/zpipe.c ]] || need+=(zlib1g-dev)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# PostgreSQL 15 (Debian's postgresql package): the cluster 15/main, a role and a database for the tests.
deploy/postgres-journal.sh vmscatter vmscatter vmscatter_test >/dev/null
export VMSCATTER_TEST_POSTGRES=${VMSCATTER_TEST_POSTGRES:-"Host=127.0.0.1;Port=5432;Username=vmscatter;Password=vmscatter;Database=vmscatter_test"}

dotnet --version
log=$(mktemp)
set +e
results=$(mktemp -d)
dotnet test VMScatter.sln -c Release --logger "trx;LogFilePrefix=tests" --results-directory "$results" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# The slowest tests (the suite must stay well under 15 minutes on 2 cores): where to look first when it grows.
if command -v python3 >/dev/null; then
  python3 - "$results" <<'PY' || true
import glob, re, sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
rows = []
for f in glob.glob(sys.argv[1] + "/*.trx"):
    for r in ET.parse(f).getroot().iterfind(".//t:UnitTestResult", ns):
        h, m, s = r.get("duration", "0:0:0").split(":")
        rows.append((int(h) * 3600 + int(m) * 60 + float(s), re.sub(r"^VMScatter\.\w+\.Tests\.", "", r.get("testName", ""))))
print("slowest tests:")
for d, name in sorted(rows, reverse=True)[:12]:
    print(f"  {d:6.1f} s  {name[:140]}")
# Classes run side by side (two at a time on 2 cores): a class's total is what it adds to the run's length.
classes = {}
for d, name in rows:
    c = name.rsplit(".", 1)[0]
    classes[c] = classes.get(c, 0) + d
print(f"slowest classes (all tests: {sum(d for d, _ in rows):.0f} s):")
for c, d in sorted(classes.items(), key=lambda kv: -kv[1])[:15]:
    print(f"  {d:6.1f} s  {c}")
PY
fi
rm -rf "$results"
# A plain closing line: totals over both test assemblies.
awk '/(Passed|Failed)!/ { for (i = 1; i <= NF; i++) { if ($i == "Failed:") f += $(i+1); if ($i == "Passed:") p += $(i+1) } } END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
