#!/bin/sh
# Runs inside the box's root filesystem (chroot) after debootstrap, with the arguments of
# debian12/customize.sh ($1 = kernel version, $2 = mirror, $3 = security mirror, $4 = suite).
# Ubuntu (22.04 and 24.04) is customized as Debian 12 is (recipe.yml `base: debian12`: that script runs first);
# what differs follows. Nothing here touches /var/lib/apt (the base script leaves it as a fresh
# box needs it).
set -eu
mirror=$2 security=$3 suite=$4
sh /tmp/base-customize.sh "$@"

# Ubuntu's archive: ifupdown and isc-dhcp-client are in universe; security updates are a pocket.
cat > /etc/apt/sources.list <<SOURCES
deb $mirror $suite main universe
deb $mirror $suite-updates main universe
deb $security $suite-security main universe
SOURCES

# Named after the release: ubuntu2204, ubuntu2404 (ubuntu2404's recipe uses this script).
. /etc/os-release
name=ubuntu$(echo "$VERSION_ID" | tr -d .)
echo "$name" > /etc/hostname
sed -i "s/\tdebian12\$/\t$name/" /etc/hosts

# Ubuntu 24.04 starts sshd from ssh.socket; the base script's drop-in (host keys made at boot) is
# for ssh.service, which it enables, so the socket is off.
systemctl disable ssh.socket 2>/dev/null || true
