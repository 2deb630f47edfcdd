# Run once in the arm64 root (chroot, qemu-user) when the cached image is built.
set -eu
echo lsca-arm64 > /etc/hostname
printf '127.0.0.1\tlocalhost lsca-arm64\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
: > /etc/fstab
passwd -d root >/dev/null                     # the interactive shell logs in as root, no password
# The kernel's postinst makes the initrd only if initramfs-tools was configured first.
ls /boot/initrd.img-* >/dev/null 2>&1 || update-initramfs -c -k all >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/* /debootstrap
