#!/usr/bin/env bash
# Build the rootfs of dsm-test/busybox:1 from a statically linked busybox and write it as a
# tar stream to stdout (feed it to `docker import`).
#   usage: mkrootfs.sh /path/to/static/busybox > rootfs.tar
set -euo pipefail
bb=${1:?usage: mkrootfs.sh /path/to/static/busybox}
root=$(mktemp -d "${TMPDIR:-/tmp}/dsm-busybox-rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,www,var/run,var/log,proc,sys,dev}
chmod 1777 "$root/tmp"
install -m 0755 "$bb" "$root/bin/busybox"

# One symlink per applet, at the place busybox itself would install it.
if "$bb" --list-full >/dev/null 2>&1; then
    "$bb" --list-full | while read -r path; do
        [ "$path" = bin/busybox ] && continue
        mkdir -p "$root/$(dirname "$path")"
        ln -sf /bin/busybox "$root/$path"
    done
else
    "$bb" --list | while read -r applet; do
        [ "$applet" = busybox ] && continue
        ln -sf /bin/busybox "$root/bin/$applet"
    done
fi
for applet in sh httpd wget nc sleep cat echo; do
    if [ ! -e "$root/bin/$applet" ] && [ ! -e "$root/usr/bin/$applet" ] && [ ! -e "$root/sbin/$applet" ] && [ ! -e "$root/usr/sbin/$applet" ]; then
        echo "provision: busybox rootfs: busybox at $bb lacks the '$applet' applet" >&2
        exit 1
    fi
done

cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
www-data:x:33:
nogroup:x:65534:
GROUP
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"

tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - .
