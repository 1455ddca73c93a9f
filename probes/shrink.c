/* snapprof: page shrinking and preallocation probes (kernel/power/snapshot.c, mm/vmscan.c).
 *
 * hibernate_preallocate_memory: span, end value = ret (0 / -ENOMEM).
 * count_data_pages: span, end value = saveable pages; aux1 says which call it was:
 *     1 = first call in the preallocation (before shrinking),
 *     2 = second call in the preallocation (slow path, free_unnecessary_pages),
 *     3 = inside swsusp_save (pages to copy), 0 = anywhere else.
 * preallocate_image_memory: begin value = nr_pages requested, aux1 = avail_normal;
 *     end value = pages allocated.
 * shrink_all_memory: begin value = nr_to_reclaim, end value = pages reclaimed.
 * swsusp_show_speed: instant, value = pages, aux1 = stop - start in ns (the kernel's own
 *     ktime_get measure), str = "Allocated" / "Wrote" / "Read".
 */

int enter__hibernate_preallocate_memory(struct pt_regs *ctx)
{
    struct cycle_state *s = state();
    if (s) {
        s->in_prealloc = 1;
        s->cdp_calls = 0;
    }
    EMIT("hibernate_preallocate_memory", EV_BEGIN, 0, 0);
    return 0;
}

int leave__hibernate_preallocate_memory(struct pt_regs *ctx)
{
    struct cycle_state *s = state();
    if (s)
        s->in_prealloc = 0;
    EMIT("hibernate_preallocate_memory", EV_END, 1, (int)PT_REGS_RC(ctx));
    return 0;
}

int enter__count_data_pages(struct pt_regs *ctx)
{
    struct cycle_state *s = state();
    if (s && s->in_prealloc && !s->in_save)
        s->cdp_calls++;
    EMIT("count_data_pages", EV_BEGIN, 0, 0);
    return 0;
}

int leave__count_data_pages(struct pt_regs *ctx)
{
    struct cycle_state *s = state();
    u64 which = 0;
    if (s) {
        if (s->in_save)
            which = 3;
        else if (s->in_prealloc)
            which = s->cdp_calls;
    }
    struct event *e = ev_new(EV_END);
    if (e) {
        ev_name(e, "count_data_pages");
        e->has_value = 1;
        e->value = (unsigned int)PT_REGS_RC(ctx);
        e->has_aux = 1;
        e->aux1 = which;
        ev_submit(e);
    }
    return 0;
}

int enter__preallocate_image_memory(struct pt_regs *ctx)
{
    struct event *e = ev_new(EV_BEGIN);
    if (e) {
        ev_name(e, "preallocate_image_memory");
        e->has_value = 1;
        e->value = PT_REGS_PARM1(ctx);
        e->has_aux = 1;
        e->aux1 = PT_REGS_PARM2(ctx);
        ev_submit(e);
    }
    return 0;
}
LEAVE_ULONG(preallocate_image_memory)

ENTER_ARG(shrink_all_memory, 1)
LEAVE_ULONG(shrink_all_memory)

int enter__swsusp_show_speed(struct pt_regs *ctx)
{
    struct event *e = ev_new(EV_INSTANT);
    if (e) {
        ev_name(e, "swsusp_show_speed");
        e->has_value = 1;
        e->value = (unsigned int)PT_REGS_PARM3(ctx);
        e->has_aux = 1;
        e->aux1 = (s64)PT_REGS_PARM2(ctx) - (s64)PT_REGS_PARM1(ctx);
        bpf_probe_read_kernel_str(&e->str, sizeof(e->str), (void *)PT_REGS_PARM4(ctx));
        ev_submit(e);
    }
    return 0;
}
