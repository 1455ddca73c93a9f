#!/bin/sh
# snapprof lab: the guest side of one `snapprof lab run` / `lab shell`.
# Started by /sbin/snapprof-boot (the image's init=) from the run's job share, which holds
# this file, job.conf (MODE=run|shell, terminal size) and job.sh (the command, written
# by snapprof.lab.qemu). Kernel console: ttyS0 (the console log). Job I/O: ttyS1.
# Markers on ttyS0 for the host: SNAPPROF_START (the command starts), SNAPPROF_EXIT=<status>.
JOB=/run/snapprof-job
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
MODE=run
OUTBOX_DEV=
ROWS=
COLS=
. "$JOB/job.conf"

say() { printf '\nsnapprof-init: %s\n' "$*" > /dev/ttyS0; }

mnt() {  # mnt TYPE WHERE [OPTIONS]: mount unless something is there already
    mkdir -p "$2"
    mountpoint -q "$2" || mount -t "$1" ${3:+-o "$3"} "$1" "$2"
}
mnt devpts /dev/pts
mnt tmpfs /dev/shm
mnt tmpfs /tmp
mnt debugfs /sys/kernel/debug
mnt tracefs /sys/kernel/tracing
[ -d /sys/fs/bpf ] && mnt bpf /sys/fs/bpf
OPTS=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$OPTS,ro" snapprof_project /project || say "cannot mount the project tree"
mount -t 9p -o "$OPTS" snapprof_output /output || say "cannot mount the output folder"
hostname snapprof-lab
# The outbox: a tmpfs folder (so it is in a hibernation image), packed onto the last
# virtio disk when CMD ends; the host unpacks it into the output folder.
mkdir -p /run/snapprof-outbox
ln -sf /proc/self/fd /dev/fd 2>/dev/null

printf '\nSNAPPROF_START uptime=%s\n' "$(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
if [ "$MODE" = shell ]; then
    [ -n "$ROWS" ] && stty -F /dev/ttyS1 rows "$ROWS" cols "$COLS"
    echo "snapprof lab shell: root on $(uname -r); project at /project (read-only), output at /output; exit to power off" > /dev/ttyS1
    setsid -c /bin/sh "$JOB/job.sh" <> /dev/ttyS1 >&0 2>&1  # job.sh: exec bash -l
    rc=$?
else
    stty -F /dev/ttyS1 raw -echo
    /bin/sh "$JOB/job.sh" < /dev/null > /dev/ttyS1 2>&1
    rc=$?
fi
# The console marker is what the host reads. Everything after it must not block: after a
# hibernation and resume (a new QEMU) the 9p shares are dead -- virtio-9p has no PM
# restore -- and any access to them hangs; so no umount, and the status file (a fallback
# for the host) is written in the background.
if [ -n "$OUTBOX_DEV" ] && [ -n "$(ls -A /run/snapprof-outbox)" ]; then
    tar -cf "$OUTBOX_DEV" -C /run/snapprof-outbox . && sync "$OUTBOX_DEV" \
        || say "cannot write the outbox to $OUTBOX_DEV"
fi
printf '\nSNAPPROF_EXIT=%s\n' "$rc" > /dev/ttyS0
( echo "$rc" > "$JOB/exit-status" ) 2>/dev/null &
sync -f /
echo o > /proc/sysrq-trigger
# Wait for the power-off with shell builtins only: nothing may touch the disk now.
while :; do :; done
