#!/bin/sh
# snapprof lab: the guest's init= (baked into the image by `snapprof lab build`).
# It only brings up what is needed to reach the run's job share, then hands over to
# the guest-init.sh that `snapprof lab run` puts there, so the per-run logic can change
# without rebuilding images. Job share: 9p tag "snapprof_job", mounted at /run/snapprof-job.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o mode=0755 tmpfs /run
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
