#!/usr/bin/env bash
# Build the Debian bookworm + HAProxy rootfs used for dsm-test/proxy:1 and write it as a tarball
# (for `docker import`). Needs root and debootstrap; downloads only from the Debian mirror given
# as argument (provision.sh reads it from the host's apt sources). Same recipe as the PostgreSQL
# image's rootfs (scripts/images/postgres/mkrootfs.sh), with haproxy instead of postgresql-15.
#   usage: mkrootfs.sh OUT.tar MIRROR_URL
set -euo pipefail
out=${1:?usage: mkrootfs.sh OUT.tar MIRROR_URL}
mirror=${2:?usage: mkrootfs.sh OUT.tar MIRROR_URL}
suite=${DSM_PROXY_SUITE:-bookworm}

[ "$(id -u)" -eq 0 ] || { echo "provision: proxy rootfs: must run as root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "provision: proxy rootfs: debootstrap is not installed" >&2; exit 1; }

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "${DSM_BUILD_TMP:-/var/tmp}/dsm-proxy-rootfs.XXXXXX")
root=$work/root
log=$work/debootstrap.log

# Never rm -rf a tree that still has proc/sys/dev mounted inside it.
unmount_all() {
    local m
    for _ in 1 2 3; do
        m=$(awk -v r="$root" 'index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r)
        [ -z "$m" ] && return 0
        # shellcheck disable=SC2086
        umount -l $m 2>/dev/null || true
    done
    [ -z "$(awk -v r="$root" 'index($2, r "/") == 1' /proc/mounts)" ]
}
cleanup() {
    if unmount_all; then
        rm -rf "$work"
    else
        echo "provision: proxy rootfs: left $work behind (mounts still active under it)" >&2
    fi
}
trap cleanup EXIT

echo "provision: proxy rootfs: debootstrap $suite (minbase + haproxy) from $mirror" >&2
if ! timeout 1500 debootstrap --variant=minbase --include=haproxy "$suite" "$root" "$mirror" >"$log" 2>&1; then
    tail -n 25 "$log" >&2
    echo "provision: proxy rootfs: debootstrap failed (full log was $log)" >&2
    exit 1
fi

# Package scripts must not have left a haproxy running from the chroot.
for p in /proc/[0-9]*; do
    if [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ]; then
        echo "provision: proxy rootfs: stopping leftover chroot process ${p#/proc/}" >&2
        kill "${p#/proc/}" 2>/dev/null || true
    fi
done

# Slim it down: apt caches, docs, translations.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/var/cache/debconf/*-old
[ -x "$root/usr/sbin/haproxy" ] || { echo "provision: proxy rootfs: haproxy binary missing from rootfs" >&2; exit 1; }

unmount_all || { echo "provision: proxy rootfs: could not unmount everything under $root" >&2; exit 1; }
tar --numeric-owner -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$out.tmp" .
mv -f "$out.tmp" "$out"
echo "provision: proxy rootfs: wrote $out ($(du -h "$out" | cut -f1))" >&2
