#!/bin/sh
# Runs inside the box's root filesystem (chroot) after debootstrap, with the arguments of
# debian12/customize.sh ($1 = kernel version, $2 = mirror, $3 = security mirror, $4 = suite).
# Debian 13 is customized as Debian 12 is (recipe.yml `base: debian12`: that script runs first, and
# it writes the sources.list for $4); this names the box after itself. Nothing here touches
# /var/lib/apt (the base script leaves it as a fresh box needs it).
set -eu
sh /tmp/base-customize.sh "$@"
echo debian13 > /etc/hostname
sed -i 's/\tdebian12$/\tdebian13/' /etc/hosts
