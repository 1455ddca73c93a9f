/* snapprof: phase probes.
 *
 * power:suspend_resume -> event "pm:<action>", begin/end from `start`, value = `val`
 * (dpm_* phases with the PM event, CPU_OFF/CPU_ON with the CPU, syscore_*, machine_suspend,
 * thaw_processes). `action` is a pointer to a constant string.
 * Spans: hibernate (sysfs entry), hibernation_snapshot (the whole snapshot, returns twice
 * in a real hibernation), snapshot_ioctl (/dev/snapshot; begin value = ioctl command,
 * end value = ret).
 */
#ifdef HAVE_TP_power__suspend_resume
int tp__power__suspend_resume(struct tracepoint__power__suspend_resume *args)
{
    struct event *e = ev_new(args->start ? EV_BEGIN : EV_END);
    if (!e)
        return 0;
    e->name[0] = 'p';
    e->name[1] = 'm';
    e->name[2] = ':';
    bpf_probe_read_kernel_str(&e->name[3], NAME_LEN - 3, (void *)args->action);
    e->has_value = 1;
    e->value = args->val;
    ev_submit(e);
    return 0;
}
#endif

SPAN_INT(hibernate)
SPAN_INT(hibernation_snapshot)
ENTER_ARG(snapshot_ioctl, 2)
LEAVE_INT(snapshot_ioctl)
