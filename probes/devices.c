/* snapprof: per-device PM callbacks (drivers/base/power/main.c).
 *
 * power:device_pm_callback_start / _end, paired by thread: a callback starts and ends in
 * the same thread (the hibernating task, or an async kworker), and callbacks do not nest
 * within a thread. The start is kept per thread; the end checks the device name and, if
 * it matches, writes one record (device, driver, parent, pm_ops, event, start, duration,
 * error) to the `devcalls` ring buffer. The PM phase of a callback (prepare, suspend, ...)
 * is found by user space from the pm:dpm_* events around it.
 */
#define DEV_LEN 48
#define DRV_LEN 32
#define OPS_LEN 24

struct devcall {
    u64 start;
    u64 duration;
    s32 error;
    s32 event;
    u32 pid;
    u32 pad;
    char device[DEV_LEN];
    char driver[DRV_LEN];
    char parent[DEV_LEN];
    char pm_ops[OPS_LEN];
};

BPF_RINGBUF_OUTPUT(devcalls, DEVCALLS_PAGES);
BPF_HASH(devstart, u32, struct devcall, DEVSTART_MAX);
BPF_PERCPU_ARRAY(devscratch, struct devcall, 1);

#if defined(HAVE_TP_power__device_pm_callback_start) && defined(HAVE_TP_power__device_pm_callback_end)
int tp__power__device_pm_callback_start(struct tracepoint__power__device_pm_callback_start *args)
{
    u32 zero = 0;
    struct devcall *d = devscratch.lookup(&zero);
    if (!d)
        return 0;
    __builtin_memset(d, 0, sizeof(*d));
    u32 tid = (u32)bpf_get_current_pid_tgid();
    d->start = bpf_ktime_get_boot_ns();
    d->event = args->event;
    d->pid = tid;
    TP_DATA_LOC_READ_STR(d->device, device, DEV_LEN);
    TP_DATA_LOC_READ_STR(d->driver, driver, DRV_LEN);
    TP_DATA_LOC_READ_STR(d->parent, parent, DEV_LEN);
    TP_DATA_LOC_READ_STR(d->pm_ops, pm_ops, OPS_LEN);
    devstart.update(&tid, d);
    return 0;
}

int tp__power__device_pm_callback_end(struct tracepoint__power__device_pm_callback_end *args)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct devcall *d = devstart.lookup(&tid);
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
    d->duration = bpf_ktime_get_boot_ns() - d->start;
    d->error = args->error;
    if (devcalls.ringbuf_output(d, sizeof(*d), BPF_RB_NO_WAKEUP))
        count(C_DEVCALL_DROPS);
    devstart.delete(&tid);
    return 0;
}
#endif
