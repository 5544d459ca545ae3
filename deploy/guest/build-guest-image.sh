#!/bin/sh
# Builds the QEMU guest image VMScatter's qemu backend, tests and bench boot: the host's Debian kernel plus a
# busybox initramfs whose /init prints a monotonically increasing counter on the serial console and runs a
# memory-writing workload. Only Debian packages are used (linux-image-amd64, busybox-static); nothing is downloaded.
#
#   deploy/guest/build-guest-image.sh [OUT_DIR]      (default: artifacts/guest)
#
# Writes OUT_DIR/vmlinuz, OUT_DIR/initramfs.gz (busybox: the dd workload) and OUT_DIR/initramfs-workloads.gz (the
# same plus the real programs below, ~23 MB, ~55 MB unpacked in guest RAM: give its guests 256 MiB).
# Kernel command line options read by /init:
#   vmscatter.wws_kib=N     size of the writable working set the workload keeps rewriting (default 4096 KiB)
#   vmscatter.dirty_pages=N pages of it rewritten per second (default 64; 0 = no writes, an idle guest)
#   vmscatter.tick_ms=N     counter period in milliseconds (default 200)
#   vmscatter.disk=1        load virtio_blk; every tick writes "vmscatter-disk N" (N = the serial counter), padded
#                           to 512 bytes, to sector 0 of /dev/vda and fsyncs it
#   vmscatter.net=1         load virtio_net; eth0 gets slirp's 10.0.2.15/24 (gateway 10.0.2.2), and every second a
#                           ping of 10.0.2.2 that is answered prints "vmscatter-net N" (N counts the answers)
# Without these two the guest loads no module and behaves as before. The virtio modules come from
# /lib/modules/VERSION of the same kernel (VERSION from the kernel's file name), decompressed here if they are .xz/.zst.
#   vmscatter.workload=W    what the guest runs beside the counter (default dd); each real program prints its progress:
#     dd        the dd memory-writer above (wws_kib, dirty_pages), no marker of its own; the only one in initramfs.gz
#     idle      busybox syslogd, klogd, crond and httpd; every 2 s a wget of httpd's page: "vmscatter-idle N" (N pages served)
#     compile   make -j2 with gcc over zlib's example programs (zlib1g-dev's real C sources), make clean and again, forever:
#               "vmscatter-compile N" (N files compiled or linked so far)
#     database  sqlite3 on a database in tmpfs: every 0.2 s a transaction of 20 inserts and 20 updates of 512-byte rows,
#               oldest rows deleted beyond 4000: "vmscatter-db N" (N rows inserted so far)
# The real programs are the host's Debian binaries (gcc-12, binutils, make, sqlite3) with the shared libraries ldd
# names, gcc's headers and link inputs as a trial build here lists them; a workload whose programs the host lacks is
# left out (a warning here, "vmscatter-error" on the guest's console when asked for).
set -eu

out=${1:-artifacts/guest}
kernel=${VMSCATTER_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
busybox=${VMSCATTER_BUSYBOX:-/bin/busybox}

[ -n "$kernel" ] && [ -r "$kernel" ] || { echo "error: no readable kernel in /boot (apt-get install linux-image-amd64)" >&2; exit 2; }
[ -x "$busybox" ] || { echo "error: $busybox missing (apt-get install busybox-static)" >&2; exit 2; }
if command -v file >/dev/null 2>&1 && ! file -L "$busybox" | grep -q 'statically linked'; then
    echo "error: $busybox is not statically linked (apt-get install busybox-static)" >&2; exit 2
fi

root=$(mktemp -d); extra=$(mktemp -d)
trap 'rm -rf "$root" "$extra"' EXIT INT TERM
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/run"
cp "$busybox" "$root/bin/busybox"
# /lib and /lib64 are links into /usr as on a merged-/usr Debian (the real programs below live at their Debian paths).
mkdir -p "$root/usr/lib" "$root/usr/lib64" "$root/usr/bin"
ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"
echo dd > "$root/workloads"

# virtio modules, in load order (dependencies first); missing ones are left out and /init says so when asked for them.
kver=$(basename "$kernel"); kver=${kver#vmlinuz-}
mods=/lib/modules/$kver/kernel
mkdir -p "$root/lib/modules"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
         drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk \
         net/core/failover drivers/net/net_failover drivers/net/virtio_net; do
    name=$(basename "$m")
    if [ -f "$mods/$m.ko" ]; then cp "$mods/$m.ko" "$root/lib/modules/$name.ko"
    elif [ -f "$mods/$m.ko.xz" ]; then xz -dc "$mods/$m.ko.xz" > "$root/lib/modules/$name.ko"
    elif [ -f "$mods/$m.ko.zst" ]; then zstd -qdc "$mods/$m.ko.zst" > "$root/lib/modules/$name.ko"
    fi
done

place() { # copies each file (dereferenced) to its normalised path in the image, /lib and /lib64 folded into /usr
    for f in "$@"; do
        [ -e "$f" ] || continue
        p=$(realpath -s "$f"); case "$p" in /lib/*|/lib64/*) p=/usr$p ;; esac
        [ -e "$extra$p" ] && continue
        mkdir -p "$extra$(dirname "$p")" && cp -L "$f" "$extra$p"
    done
}
with_libraries() { # the files and every shared library ldd names for them
    for f in "$@"; do
        echo "$f"
        ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
    done
}
# The real programs go into a second archive ($extra): initramfs-workloads.gz is initramfs.gz with it appended (the
# kernel unpacks concatenated archives in order). The dd guests keep the small image: 128 MiB guests cannot unpack
# the big one ("Initramfs unpacking failed: write error"), and a small image boots faster under TCG.
mkdir -p "$extra/usr/src"
workloads=dd
if command -v busybox >/dev/null 2>&1 || [ -x "$busybox" ]; then workloads="$workloads idle"; fi
if command -v sqlite3 >/dev/null 2>&1; then
    place $(with_libraries "$(command -v sqlite3)")
    workloads="$workloads database"
else echo "warning: no sqlite3 on this host (apt-get install sqlite3): the database workload is left out" >&2; fi
src=/usr/share/doc/zlib1g-dev/examples
if command -v gcc >/dev/null 2>&1 && command -v make >/dev/null 2>&1 && [ -f "$src/zpipe.c" ]; then
    tree="$extra/usr/src/zlib-examples"
    mkdir -p "$tree"
    # zlib's example programs, less infcover.c (it needs zlib's private headers): nine programs and two modules.
    for f in enough example fitblk gun gzappend gzjoin gzlog gznorm minigzip zpipe zran; do cp "$src/$f.c" "$tree/"; done
    cp "$src/gzlog.h" "$src/zran.h" "$tree/"
    cat > "$tree/Makefile" <<'MAKE'
CFLAGS = -O2
PROGRAMS = enough example fitblk gun gzappend gzjoin gznorm minigzip zpipe
# Each file made prints its running count on the serial console (appends are atomic, so -j2 never loses one).
done = @echo "vmscatter-compile $$(echo $@ >> /run/compiled; wc -l < /run/compiled)" > /dev/ttyS0
all: $(PROGRAMS) zran.o gzlog.o
%.o: %.c
	$(CC) $(CFLAGS) -c $< -o $@
	$(done)
$(PROGRAMS): %: %.o
	$(CC) -o $@ $< -lz
	$(done)
clean:
	rm -f $(PROGRAMS) *.o
.PHONY: all clean
MAKE
    # A trial build here names what gcc needs: its programs, the headers (-M, with the Makefile's -O2: it pulls in more) and the link inputs (-Wl,-t).
    trial=$(mktemp -d); cp "$tree"/*.c "$tree"/*.h "$trial/"
    headers=$(cd "$trial" && gcc -O2 -M ./*.c | tr ' \\' '\n\n' | grep '^/' | sort -u)
    (cd "$trial" && gcc -O2 -c zpipe.c && gcc -o zpipe zpipe.o -lz -Wl,-t > inputs 2>&1)
    inputs=$(grep '^/' "$trial/inputs" | sort -u)
    rm -rf "$trial"
    plugin=$(gcc -print-file-name=liblto_plugin.so)
    place $(with_libraries "$(command -v gcc)" "$(command -v make)" "$(gcc -print-prog-name=cc1)" "$(gcc -print-prog-name=collect2)" \
        "$(command -v as)" "$(command -v ld)" "$plugin" $(echo "$inputs" | grep '\.so') | sort -u)
    place $headers $inputs
    # gcc looks for as and ld by these names; make finds gcc as cc.
    ln -sf gcc "$extra/usr/bin/cc"
    workloads="$workloads compile"
else echo "warning: no gcc, make or zlib1g-dev on this host (apt-get install gcc make libc6-dev zlib1g-dev): the compile workload is left out" >&2; fi
echo "$workloads" > "$extra/workloads"

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=90% run /run

export PATH=/usr/bin:/bin HOME=/run TMPDIR=/run
wws_kib=4096; dirty_pages=64; tick_ms=200; disk=0; net=0; workload=dd
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vmscatter.workload=*) workload=${arg#*=} ;;
        vmscatter.disk=*) disk=${arg#*=} ;;
        vmscatter.net=*) net=${arg#*=} ;;
        vmscatter.wws_kib=*) wws_kib=${arg#*=} ;;
        vmscatter.dirty_pages=*) dirty_pages=${arg#*=} ;;
        vmscatter.tick_ms=*) tick_ms=${arg#*=} ;;
    esac
done
case " $(cat /workloads) " in
    *" $workload "*) ;;
    *) if dmesg | grep -q 'Initramfs unpacking failed'; then
           echo "vmscatter-error workload $workload: the initramfs did not fit in guest RAM (give it 256 MiB)" > /dev/ttyS0
       else echo "vmscatter-error workload $workload is not in this image (it has: $(cat /workloads))" > /dev/ttyS0; fi
       workload=none ;;
esac
# Only the dd workload writes the working set; the real programs dirty what they dirty.
[ "$workload" = dd ] || { wws_kib=0; dirty_pages=0; }
wws_pages=$((wws_kib / 4))
[ "$dirty_pages" -gt "$wws_pages" ] && dirty_pages=$wws_pages

# The working set lives in tmpfs, i.e. in guest RAM; rewriting a run of it dirties those pages.
if [ "$wws_pages" -gt 0 ]; then
    dd if=/dev/urandom of=/run/wws bs=4096 count="$wws_pages" 2>/dev/null
fi
if [ "$dirty_pages" -gt 0 ]; then
    (
        while :; do
            seek=$((RANDOM * 32768 + RANDOM))
            seek=$((seek % (wws_pages - dirty_pages + 1)))
            dd if=/dev/urandom of=/run/wws bs=4096 count="$dirty_pages" seek="$seek" conv=notrunc 2>/dev/null
            sleep 1
        done
    ) &
fi

load() {
    for m in "$@"; do
        [ -f "/lib/modules/$m.ko" ] || { echo "vmscatter-error module $m is not in this image" > /dev/ttyS0; return 1; }
        insmod "/lib/modules/$m.ko" 2>/dev/null || grep -q "^$m " /proc/modules || { echo "vmscatter-error insmod $m failed" > /dev/ttyS0; return 1; }
    done
}
if [ "$disk" = 1 ] || [ "$net" = 1 ]; then
    load virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
fi
if [ "$disk" = 1 ]; then
    load virtio_blk
    n=0; while [ ! -b /dev/vda ] && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    [ -b /dev/vda ] || { echo "vmscatter-error no /dev/vda" > /dev/ttyS0; disk=0; }
fi
if [ "$net" = 1 ]; then
    load failover net_failover virtio_net
    n=0; while [ ! -e /sys/class/net/eth0 ] && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    ip link set lo up
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 \
        || echo "vmscatter-error eth0 did not come up" > /dev/ttyS0
    (
        answered=0
        while :; do
            if ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1; then
                answered=$((answered + 1))
                echo "vmscatter-net $answered" > /dev/ttyS0
            fi
            sleep 1
        done
    ) &
fi

case "$workload" in
    idle)
        ip link set lo up
        mkdir -p /var/log /var/spool/cron/crontabs /www
        echo '<html><body>vmscatter idle guest</body></html>' > /www/index.html
        echo '*/1 * * * * logger -t cron "uptime: $(uptime)"' > /var/spool/cron/crontabs/root
        syslogd -O /var/log/messages; klogd; crond -c /var/spool/cron/crontabs; httpd -h /www -p 127.0.0.1:80
        (
            served=0
            while :; do
                if wget -q -O /dev/null http://127.0.0.1/; then served=$((served + 1)); echo "vmscatter-idle $served" > /dev/ttyS0; fi
                sleep 2
            done
        ) &
        ;;
    compile)
        cp -r /usr/src/zlib-examples /run/build
        ( cd /run/build && while :; do make -s clean; make -s -j2 >/dev/null 2>/run/make.err || { echo "vmscatter-error make: $(tail -n 1 /run/make.err)" > /dev/ttyS0; sleep 5; }; done ) &
        ;;
    database)
        (
            echo "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, k INTEGER, v BLOB);"
            n=0
            while :; do
                echo "BEGIN;"
                j=0; while [ "$j" -lt 20 ]; do echo "INSERT INTO t (k, v) VALUES (abs(random()) % 1000, randomblob(512));"; j=$((j + 1)); done
                echo "UPDATE t SET k = k + 1, v = randomblob(512) WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 20);"
                echo "DELETE FROM t WHERE id <= (SELECT max(id) FROM t) - 4000;"
                echo "COMMIT;"
                echo "SELECT 'vmscatter-db ' || max(id) FROM t;"
                sleep 0.2
            done
        ) | sqlite3 /run/db.sqlite > /dev/ttyS0 2>&1 &
        ;;
esac

echo "vmscatter-ready wws_kib=$wws_kib dirty_pages=$dirty_pages workload=$workload" > /dev/ttyS0
tick=$(printf '%d.%03d' $((tick_ms / 1000)) $((tick_ms % 1000)))
i=0
while :; do
    i=$((i + 1))
    echo "vmscatter-counter $i" > /dev/ttyS0
    [ "$disk" = 1 ] && printf 'vmscatter-disk %d\n' "$i" | dd of=/dev/vda bs=512 count=1 conv=notrunc,sync,fsync 2>/dev/null
    sleep "$tick"
done
INIT
chmod 755 "$root/init"

mkdir -p "$out"
cp "$kernel" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
(cd "$root" && find . | sort | "$root/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -9 > "$out/initramfs.gz.tmp"
(cd "$extra" && find . | sort | "$root/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -9 > "$out/extra.gz.tmp"
cat "$out/initramfs.gz.tmp" "$out/extra.gz.tmp" > "$out/initramfs-workloads.gz.tmp" && rm -f "$out/extra.gz.tmp"
mv "$out/initramfs.gz.tmp" "$out/initramfs.gz"
mv "$out/initramfs-workloads.gz.tmp" "$out/initramfs-workloads.gz"
echo "guest image: $out/vmlinuz ($(basename "$kernel")), $out/initramfs.gz ($(wc -c < "$out/initramfs.gz") bytes)," \
    "$out/initramfs-workloads.gz ($(wc -c < "$out/initramfs-workloads.gz") bytes: $workloads)"
