#!/bin/sh
# Builds the QEMU guest image VMScatter's qemu backend, tests and bench boot: the host's Debian kernel plus a
# busybox initramfs whose /init prints a monotonically increasing counter on the serial console and runs a
# memory-writing workload. Only Debian packages are used (linux-image-amd64, busybox-static); nothing is downloaded.
#
#   deploy/guest/build-guest-image.sh [OUT_DIR]      (default: artifacts/guest)
#
# Writes OUT_DIR/vmlinuz and OUT_DIR/initramfs.gz. Kernel command line options read by /init:
#   vmscatter.wws_kib=N     size of the writable working set the workload keeps rewriting (default 4096 KiB)
#   vmscatter.dirty_pages=N pages of it rewritten per second (default 64; 0 = no writes, an idle guest)
#   vmscatter.tick_ms=N     counter period in milliseconds (default 200)
#   vmscatter.disk=1        load virtio_blk; every tick writes "vmscatter-disk N" (N = the serial counter), padded
#                           to 512 bytes, to sector 0 of /dev/vda and fsyncs it
#   vmscatter.net=1         load virtio_net; eth0 gets slirp's 10.0.2.15/24 (gateway 10.0.2.2), and every second a
#                           ping of 10.0.2.2 that is answered prints "vmscatter-net N" (N counts the answers)
# Without these two the guest loads no module and behaves as before. The virtio modules come from
# /lib/modules/VERSION of the same kernel (VERSION from the kernel's file name), decompressed here if they are .xz/.zst.
set -eu

out=${1:-artifacts/guest}
kernel=${VMSCATTER_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
busybox=${VMSCATTER_BUSYBOX:-/bin/busybox}

[ -n "$kernel" ] && [ -r "$kernel" ] || { echo "error: no readable kernel in /boot (apt-get install linux-image-amd64)" >&2; exit 2; }
[ -x "$busybox" ] || { echo "error: $busybox missing (apt-get install busybox-static)" >&2; exit 2; }
if command -v file >/dev/null 2>&1 && ! file -L "$busybox" | grep -q 'statically linked'; then
    echo "error: $busybox is not statically linked (apt-get install busybox-static)" >&2; exit 2
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT INT TERM
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/run"
cp "$busybox" "$root/bin/busybox"

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

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=90% run /run

wws_kib=4096; dirty_pages=64; tick_ms=200; disk=0; net=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vmscatter.disk=*) disk=${arg#*=} ;;
        vmscatter.net=*) net=${arg#*=} ;;
        vmscatter.wws_kib=*) wws_kib=${arg#*=} ;;
        vmscatter.dirty_pages=*) dirty_pages=${arg#*=} ;;
        vmscatter.tick_ms=*) tick_ms=${arg#*=} ;;
    esac
done
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

echo "vmscatter-ready wws_kib=$wws_kib dirty_pages=$dirty_pages" > /dev/ttyS0
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
mv "$out/initramfs.gz.tmp" "$out/initramfs.gz"
echo "guest image: $out/vmlinuz ($(basename "$kernel")), $out/initramfs.gz ($(wc -c < "$out/initramfs.gz") bytes)"
