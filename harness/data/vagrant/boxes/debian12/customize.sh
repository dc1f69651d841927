#!/bin/sh
# Runs inside the box's root filesystem (chroot) after debootstrap.
# Arguments: $1 = kernel version, $2 = mirror URL, $3 = security mirror URL, $4 = suite.
# Facts this encodes (see README "Box recipe"): every VM must get its own machine-id and SSH
# host keys; Vagrant's Debian guest plugin writes ifupdown files, so ifupdown with eth0/eth1;
# systemctl needs dbus; no default passwords.
set -eu
kver=$1 mirror=$2 security=$3 suite=$4

cat > /etc/apt/sources.list <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
SOURCES

echo debian12 > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian12\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
echo 'LABEL=harnessroot / ext4 errors=remount-ro 0 1' > /etc/fstab
ln -sf /usr/share/zoneinfo/Etc/UTC /etc/localtime
echo Etc/UTC > /etc/timezone

cat > /etc/network/interfaces <<'NET'
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp

source /etc/network/interfaces.d/*
NET
mkdir -p /etc/network/interfaces.d

# A fresh machine-id per VM: systemd makes one at first boot when the file is empty.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
ln -s /etc/machine-id /var/lib/dbus/machine-id

# Host keys per VM, generated at boot. Debian's unit runs `sshd -t` in ExecStartPre, which fails
# without keys, so the drop-in clears ExecStartPre first.
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
cat > /etc/systemd/system/ssh.service.d/10-hostkeys.conf <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
cat > /etc/ssh/sshd_config.d/10-harness.conf <<'SSHD'
UseDNS no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
SSHD

# Grow the root partition and filesystem to the disk the VM was given.
cat > /usr/local/sbin/harness-growroot <<'GROW'
#!/bin/sh
set -u
src=$(findmnt -no SOURCE /)
disk=/dev/$(lsblk -no PKNAME "$src")
part=$(cat /sys/class/block/$(basename "$src")/partition)
growpart "$disk" "$part" || true
resize2fs "$src"
GROW
chmod 0755 /usr/local/sbin/harness-growroot
cat > /etc/systemd/system/harness-growroot.service <<'UNIT'
[Unit]
Description=Grow the root filesystem to fill its disk
After=local-fs.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/harness-growroot
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable harness-growroot.service ssh.service

# The vagrant user: key login only (Vagrant's well-known key, replaced by a per-machine key at
# the first `vagrant up`), passwordless sudo, no password at all.
useradd -m -s /bin/bash vagrant
usermod -p '*' vagrant
usermod -p '*' root
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 0600 -o vagrant -g vagrant /tmp/vagrant.pub /home/vagrant/.ssh/authorized_keys
rm -f /tmp/vagrant.pub
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant

# Serial console for the boot loader, the kernel and a login prompt.
mkdir -p /boot/extlinux
cat > /boot/extlinux/extlinux.conf <<BOOT
SERIAL 0 115200
DEFAULT debian
TIMEOUT 1
PROMPT 0
LABEL debian
  KERNEL /boot/vmlinuz-$kver
  APPEND root=LABEL=harnessroot ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0 quiet
  INITRD /boot/initrd.img-$kver
BOOT
systemctl enable serial-getty@ttyS0.service

# A small initramfs: what a libvirt guest's root needs (a virtio disk, ext4), not every storage
# driver Debian knows (MODULES=most: 36 MB, read through the firmware and unpacked at every boot,
# slowly under TCG). Guests boot from a virtio disk (the Vagrantfile's disk_bus); a kernel or
# driver package that rebuilds the initramfs later keeps this list.
sed -i 's/^MODULES=.*/MODULES=list/' /etc/initramfs-tools/initramfs.conf
cat > /etc/initramfs-tools/modules <<'MODULES'
virtio_pci
virtio_blk
virtio_scsi
sd_mod
ext4
MODULES
update-initramfs -u -k "$kver"

# Boot on a loaded host. systemd gives a device 90 s to appear and a service 90 s to start; a TCG
# guest on a host with many VMs per core gets a fraction of a core, and then generating the SSH host
# keys (ssh.service) outlived its 90 s, was killed, started again from scratch, and sshd never came
# up (14 VMs on 2 cores). The harness bounds the whole boot itself (Vagrant's boot_timeout, stretched
# with the host's load), so units here wait as long as it takes.
mkdir -p /etc/systemd/system.conf.d
cat > /etc/systemd/system.conf.d/10-harness-loaded-host.conf <<'CONF'
[Manager]
DefaultTimeoutStartSec=20min
DefaultDeviceTimeoutSec=20min
CONF

# Boot faster under TCG: no periodic jobs or filesystem scrubs in a throwaway test VM.
for unit in e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer fstrim.timer; do
  systemctl mask "$unit"
done

apt-get clean
rm -rf /var/log/*.log /tmp/* /var/tmp/*

# apt state: the box ships with NO package lists and nothing that looks like a fresh `apt-get
# update`. Ansible's apt module (`update_cache: true, cache_valid_time: N`) skips the update when
# /var/lib/apt/periodic/update-success-stamp, or else the /var/lib/apt/lists directory itself, has
# an mtime within N seconds; removing the lists bumps that directory's mtime to the build time, so
# a box used within an hour of its build skipped the update and then found no packages at all
# ("No package matching ..."). So: empty lists (with apt's own partial/ and lock), no binary caches
# (apt-get clean above leaves the lists and may recreate the lock), no success stamp, and the lists
# directory's mtime at the epoch. This runs last: nothing after it may touch /var/lib/apt
# (mke2fs -d keeps these mtimes in the image).
rm -rf /var/lib/apt/lists /var/cache/apt/pkgcache.bin /var/cache/apt/srcpkgcache.bin \
  /var/lib/apt/periodic/update-success-stamp
install -d -m 0755 -o root -g root /var/lib/apt/lists
install -d -m 0700 -o _apt -g root /var/lib/apt/lists/partial
install -m 0640 -o root -g root /dev/null /var/lib/apt/lists/lock
touch -d @0 /var/lib/apt/lists/partial /var/lib/apt/lists
