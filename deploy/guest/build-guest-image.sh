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

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=90% run /run

wws_kib=4096; dirty_pages=64; tick_ms=200
for arg in $(cat /proc/cmdline); do
    case "$arg" in
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

echo "vmscatter-ready wws_kib=$wws_kib dirty_pages=$dirty_pages" > /dev/ttyS0
tick=$(printf '%d.%03d' $((tick_ms / 1000)) $((tick_ms % 1000)))
i=0
while :; do
    i=$((i + 1))
    echo "vmscatter-counter $i" > /dev/ttyS0
    sleep "$tick"
done
INIT
chmod 755 "$root/init"

mkdir -p "$out"
cp "$kernel" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
(cd "$root" && find . | sort | "$root/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -9 > "$out/initramfs.gz.tmp"
mv "$out/initramfs.gz.tmp" "$out/initramfs.gz"
echo "guest image: $out/vmlinuz ($(basename "$kernel")), $out/initramfs.gz ($(wc -c < "$out/initramfs.gz") bytes)"
