#!/bin/sh
# PID 1 of the arm64 test VM (kernel command line init=): mount what is needed to reach
# the host's shares, then tini (which reaps orphans as init must) runs the run script the
# host shared; that script sets up the rest (it is part of the tree, not of the image).
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
modprobe -q 9pnet_virtio; modprobe -q 9p
mkdir -p /mnt/src /mnt/out
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 lsca_src /mnt/src
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 lsca_out /mnt/out
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
exec /usr/bin/tini -s -- /bin/sh /mnt/src/.lsca-vm-run.sh
