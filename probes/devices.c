/* snapprof: per-device PM callbacks (drivers/base/power/main.c).
 *
 * power:device_pm_callback_start / _end, paired by thread: a callback starts and ends in
 * the same thread (the hibernating task, or an async kworker), and callbacks do not nest
 * within a thread. The start is kept per thread; the end checks the device name and, if
 * it matches, writes one compact record (start, duration, error, event, thread, the start
 * of pm_ops, and a 64-bit key naming the device) to the `devcalls` ring buffer.
 *
 * Every byte here is in the image being measured, and a device has up to 8 callbacks per
 * cycle with the same names each time, so the names are not repeated in the ring: the key
 * is an FNV-1a hash of (device, driver, parent) and `devnames` maps it to those strings,
 * filled the first time a device is seen and kept for the whole recording (user space
 * reads it, never clears it). `devstart` and `devnames` are not preallocated: only the
 * callbacks in flight and the devices that have callbacks take memory. A callback whose
 * start or name cannot be stored is counted as a drop, never lost silently.
 * The PM phase of a callback (prepare, suspend, ...) is found by user space from the
 * pm:dpm_* events around it; pm_ops ("noirq bus ", "late type ", ...) only says which of
 * the noirq/late/early phases a callback outside them belongs to, so its first 3
 * characters are kept ("noi", "lat", "ear", "leg"acy, ...).
 */
#define DEV_LEN 48
#define DRV_LEN 32
#define OPS_LEN 4

struct devname {
    char device[DEV_LEN];
    char driver[DRV_LEN];
    char parent[DEV_LEN];
};

struct devstart_rec {
    u64 start;
    u64 key;
    s32 event;
    char pm_ops[OPS_LEN];
    char device[DEV_LEN];
};

struct devcall {
    u64 start;
    u64 duration;
    u64 key;
    s32 error;
    s32 event;
    u32 pid;
    char pm_ops[OPS_LEN];
};

BPF_RINGBUF_OUTPUT(devcalls, DEVCALLS_PAGES);
BPF_F_TABLE("hash", u32, struct devstart_rec, devstart, DEVSTART_MAX, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", u64, struct devname, devnames, DEVNAMES_MAX, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(devscratch, struct devname, 1);

#if defined(HAVE_TP_power__device_pm_callback_start) && defined(HAVE_TP_power__device_pm_callback_end)
int tp__power__device_pm_callback_start(struct tracepoint__power__device_pm_callback_start *args)
{
    u32 zero = 0;
    struct devname *n = devscratch.lookup(&zero);
    if (!n)
        return 0;
    __builtin_memset(n, 0, sizeof(*n));
    TP_DATA_LOC_READ_STR(n->device, device, DEV_LEN);
    TP_DATA_LOC_READ_STR(n->driver, driver, DRV_LEN);
    TP_DATA_LOC_READ_STR(n->parent, parent, DEV_LEN);

    u64 key = 0xcbf29ce484222325ULL;  /* FNV-1a, 64 bit */
    const unsigned char *b = (const unsigned char *)n;
    for (int i = 0; i < sizeof(struct devname); i++) {
        key ^= b[i];
        key *= 0x100000001b3ULL;
    }
    if (!devnames.lookup(&key) && devnames.update(&key, n)) {
        count(C_DEVCALL_DROPS);
        return 0;
    }

    struct devstart_rec d = {};
    u32 tid = (u32)bpf_get_current_pid_tgid();
    d.start = bpf_ktime_get_boot_ns();
    d.key = key;
    d.event = args->event;
    TP_DATA_LOC_READ_STR(d.pm_ops, pm_ops, OPS_LEN);
    __builtin_memcpy(d.device, n->device, DEV_LEN);
    if (devstart.update(&tid, &d))
        count(C_DEVCALL_DROPS);
    return 0;
}

int tp__power__device_pm_callback_end(struct tracepoint__power__device_pm_callback_end *args)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct devstart_rec *d = devstart.lookup(&tid);
    if (!d)
        return 0;
    char dev[DEV_LEN] = {};
    TP_DATA_LOC_READ_STR(dev, device, DEV_LEN);
    for (int i = 0; i < DEV_LEN; i++) {
        if (dev[i] != d->device[i]) {
            count(C_DEV_UNPAIRED);
            devstart.delete(&tid);
            return 0;
        }
        if (!dev[i])
            break;
    }
    struct devcall c = {};
    c.start = d->start;
    c.duration = bpf_ktime_get_boot_ns() - d->start;
    c.key = d->key;
    c.error = args->error;
    c.event = d->event;
    c.pid = tid;
    __builtin_memcpy(c.pm_ops, d->pm_ops, OPS_LEN);
    if (devcalls.ringbuf_output(&c, sizeof(c), BPF_RB_NO_WAKEUP))
        count(C_DEVCALL_DROPS);
    devstart.delete(&tid);
    return 0;
}
#endif
