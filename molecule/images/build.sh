#!/bin/bash
# build.sh: build (once) the systemd-booting Debian image the Molecule scenarios run in.
#
#   molecule/images/build.sh [bookworm]    -> prints the image name, e.g. localhost/hermes-pacer-bookworm:3f2a…
#
# No registry is needed: debootstrap makes a minimal root filesystem from Debian's mirror and
# podman imports it. The tag is a hash of this script, so a changed package list builds anew and
# an unchanged one is reused.
set -euo pipefail

suite=${1:-bookworm}
tag=$(sha256sum "$0" | cut -c1-12)
image=localhost/hermes-pacer-$suite:$tag

if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
if [ -z "$mirror" ]; then
  mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

# python3-apt: as on a standard Debian install; Ansible's apt module needs it for check mode.
packages=systemd,systemd-sysv,dbus,cron,logrotate,python3,python3-apt,python3-venv,python3-yaml,sudo,procps,ca-certificates,curl
rootfs=$(mktemp -d /var/tmp/hermes-pacer-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "building $image from $mirror (about a minute)" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >&2
: > "$rootfs/etc/machine-id"
# Units that cannot work in a container only slow the boot down.
for unit in systemd-remount-fs.service getty.target console-getty.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
# Package lists, as on any installed Debian host (check mode cannot fetch them).
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
chroot "$rootfs" apt-get update -qq >&2
rm -rf "$rootfs/var/cache/apt/archives/"*.deb
tar -C "$rootfs" -c . | podman import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=podman' \
  --change 'STOPSIGNAL SIGRTMIN+3' - "$image" >&2
echo "$image"
