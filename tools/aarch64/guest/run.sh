# In the arm64 VM, under tini: a system as the tests expect it (devpts, shm, tmpfs /run
# and /tmp, /dev/std*, loopback up), then copy the shared tree, install it, run the host's
# command, report its exit status through the output share and power off.
cd /
finish() {
    echo "$1" > /mnt/out/rc
    sync
    echo o > /proc/sysrq-trigger
    sleep 60
}
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mountpoint -q /dev/shm || mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mountpoint -q /run || mount -t tmpfs -o mode=755 tmpfs /run
mountpoint -q /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
for n in 0:stdin 1:stdout 2:stderr; do [ -e /dev/${n#*:} ] || ln -s /proc/self/fd/${n%%:*} /dev/${n#*:}; done
hostname lsca-arm64
ip link set lo up
export TERM="${TERM:-vt100}"
echo "lsca-arm64: up in $(cut -d' ' -f1 /proc/uptime) s: $(uname -srm), $(nproc) CPUs"
rm -rf /srv/lsca && cp -a /mnt/src /srv/lsca && cd /srv/lsca || finish 3
. /opt/lsca-venv/bin/activate
started=$(date +%s)
if ! pip install -q --no-index --find-links /opt/lsca-wheels --no-build-isolation ".[test]" >/tmp/pip.log 2>&1; then
    cat /tmp/pip.log
    finish 3
fi
echo "lsca-arm64: installed in $(( $(date +%s) - started )) s; running: $(cat .lsca-vm-command)"
if [ "$(cat .lsca-vm-mode)" = shell ]; then
    setsid -c bash -i </dev/ttyAMA0 >/dev/ttyAMA0 2>&1
    finish $?
fi
# The console is a terminal, the host's reader usually is not: plain output.
PY_COLORS=0 sh -c "$(cat .lsca-vm-command)" </dev/null
finish $?
