#!/bin/sh
# snapprof lab: the job starter of a systemd guest (image key SUITE+systemd), run by
# snapprof-lab.service (baked into the image by `snapprof lab build`). It is the systemd
# counterpart of /sbin/snapprof-boot: systemd has mounted /proc, /sys, /dev and /run, so
# it only waits for the boot to finish, mounts the run's 9p job share at /run/snapprof-job
# and hands over to the guest-init.sh that `snapprof lab run` puts there.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
# The job starts on a booted system, as a user's would (at most 120 s of waiting: a unit
# that hangs the boot is on the console, and the job still runs).
timeout 120 systemctl is-system-running --wait >/dev/null 2>&1
mkdir -p /run/snapprof-job
modprobe 9pnet_virtio && modprobe 9p
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 snapprof_job /run/snapprof-job \
   && [ -r /run/snapprof-job/guest-init.sh ]; then
    exec /bin/sh /run/snapprof-job/guest-init.sh
fi
echo "snapprof-boot: cannot mount the job share (9p tag snapprof_job); powering off" > /dev/console
sync
echo o > /proc/sysrq-trigger
while :; do sleep 60; done
