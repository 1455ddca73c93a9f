/* snapprof: atomic copy probes (kernel/power/snapshot.c, kernel/time/timekeeping_debug.c).
 *
 * swsusp_save runs on one CPU with interrupts off after syscore_suspend: timekeeping is
 * suspended, so its begin and end timestamps are equal. At its return the kernel statics
 * nr_copy_pages, nr_meta_pages (and nr_zero_pages, 6.6+) hold the image's make-up; their
 * addresses come from /proc/kallsyms as ADDR_<name> defines, and each is emitted as an
 * instant event named after the static.
 * tk_debug_account_sleep_time(const struct timespec64 *t): the time the clocks stood
 * still, as measured by the kernel on resume; instant "sleep_time", value = ns.
 * snapshot_get_image_size: end value = image pages (copy + meta + 1).
 */
/* struct timespec64 as include/linux/time64.h has it since 3.17 (time64_t, long), written
 * out so that the probes include no kernel header but uapi/linux/ptrace.h (common.h) */
struct snap_timespec64 {
    s64 tv_sec;
    long tv_nsec;
};

int enter__swsusp_save(struct pt_regs *ctx)
{
    struct cycle_state *s = state();
    if (s)
        s->in_save = 1;
    EMIT("swsusp_save", EV_BEGIN, 0, 0);
    return 0;
}

#define EMIT_STATIC_U32(sym)                                          \
    do {                                                              \
        unsigned int __v = 0;                                         \
        if (!bpf_probe_read_kernel(&__v, sizeof(__v), (void *)ADDR_##sym)) \
            EMIT(#sym, EV_INSTANT, 1, __v);                           \
    } while (0)

int leave__swsusp_save(struct pt_regs *ctx)
{
    struct cycle_state *s = state();
    if (s)
        s->in_save = 0;
    EMIT("swsusp_save", EV_END, 1, (int)PT_REGS_RC(ctx));
#ifdef ADDR_nr_copy_pages
    EMIT_STATIC_U32(nr_copy_pages);
#endif
#ifdef ADDR_nr_meta_pages
    EMIT_STATIC_U32(nr_meta_pages);
#endif
#ifdef ADDR_nr_zero_pages
    EMIT_STATIC_U32(nr_zero_pages);
#endif
    return 0;
}

int enter__tk_debug_account_sleep_time(struct pt_regs *ctx)
{
    struct snap_timespec64 t = {};
    if (bpf_probe_read_kernel(&t, sizeof(t), (void *)PT_REGS_PARM1(ctx)))
        return 0;
    EMIT("sleep_time", EV_INSTANT, 1, (s64)t.tv_sec * 1000000000LL + t.tv_nsec);
    return 0;
}

SPAN_ULONG(snapshot_get_image_size)
