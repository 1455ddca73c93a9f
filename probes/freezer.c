/* snapprof: freezer probes (kernel/power/process.c, kernel/freezer.c).
 *
 * Spans: ksys_sync_helper, freeze_processes, freeze_kernel_threads, thaw_processes,
 * thaw_kernel_threads, try_to_freeze_tasks (begin value = user_only, end value = ret,
 * aux1 = sweeps (passes), aux2 = threads looked at in the first sweep, 0 = not counted).
 *
 * Nothing here runs once per thread per sweep unless asked (--freezer-probes sweep, below):
 * try_to_freeze_tasks() calls freeze_task() on every thread in every sweep, and a hook
 * there costs the freeze it measures (under the lab's emulation 0.3-1.8 ms a stage, as much
 * as the freeze). The light hooks fire a few times a stage:
 *
 * The freezing time, as the kernel's "(elapsed N seconds)" times it: try_to_freeze_tasks()
 * prints "Freezing %s" (since 6.4; 6.1 prints its start line in the caller), reads its start
 * time, for kernel threads calls freeze_workqueues_begin(), sweeps, reads its end time and
 * prints the result. So t0 is the return of that start line's printk (the freezer thread's
 * printk whose format is "Freezing %s\n"), or the entry of try_to_freeze_tasks() where it
 * prints none, or for kernel threads the entry of freeze_workqueues_begin(); t1 is the
 * freezer thread's first other printk after t0: its result line, "... completed (elapsed
 * ...)" or "... failed after ...", printed right after it reads the clock. Better still,
 * the values of those two clock reads themselves (k0/k1: leave__ktime_get_with_offset
 * below), which are the kernel's own: at its return an instant "freeze_sweeps" event gives
 * value = k1 - k0 where both were seen (str = "uc" / "kc"), else t1 - t0 ("up" / "kp"),
 * aux1/aux2 = the two times.
 *
 * Sweeps: the freezer sleeps between two sweeps (usleep_range(), 1 ms doubling to 8 ms);
 * the sweep in progress is 1 + the freezer thread's usleep_range_state() calls so far.
 *
 * Per task (map `tasks`, keyed by pid): freeze_task(p) returns true only after it sent p a
 * fake signal (user tasks: signal_wake_up_state(p, ..)) or woke it (kernel threads:
 * wake_up_state(p, TASK_NORMAL)); it returns false for a task it froze in place or that
 * needs nothing. The freezer thread's calls of those two, between t0 and t1, are the tasks
 * it had to act on: when it first did, the last sweep in which it still did, how often; and
 * when the task itself entered __refrigerator (kprobe only: no kretprobe, so no maxactive
 * limit). A task still acted on in the last sweep of a failed freeze refused.
 *
 * --freezer-probes sweep|kprobe|fentry adds the per-thread hooks on freeze_task() itself
 * (measurement freezer_sweep): the threads of the first sweep, the tasks switched straight to
 * TASK_FROZEN ("frozen in place": kept with in_place = 1 and no refrigerator time), and with
 * fentry/fexit the stack of a task still refusing late in the freeze. Their bodies are the
 * on_*() functions below, called from kprobe / kretprobe handlers (enter__/leave__<fn>) or,
 * compiled with -DSNAPPROF_FENTRY_<fn>, from fentry/fexit programs (bcc KFUNC_PROBE /
 * KRETFUNC_PROBE, BPF trampolines; the kernel's BTF gives the arguments). The loader
 * (snapprof/record/loader.py) compiles with the define where the kernel has BTF and
 * trampolines, and without it (kprobes) otherwise or if that fails; the capture says which
 * (meta probe_methods).
 */
#if !defined(TASK_FROZEN) || !defined(PF_KTHREAD)
#error "TASK_FROZEN and PF_KTHREAD come from <linux/sched.h> or the recorder's cflags"
#endif

struct taskrec {
    u64 t_true;       /* first freeze_task(p) == true */
    u64 t_refrig;     /* p entered __refrigerator */
    u32 tgid;
    u32 pass_true;    /* last sweep in which freeze_task(p) returned true */
    u32 n_true;
    u8 stage;         /* 1 user, 2 kernel */
    u8 kthread;
    u8 in_place;
    u8 pad;
    char comm[16];
};
/* Preallocated (TASKS_MAX entries, ~100 B each: tens of kB, a dozen image pages): an entry
 * is made inside the freezer's sweep, under its locks with interrupts off, and allocating it
 * there instead (BPF_F_NO_PREALLOC) took 1.1 ms under the lab's emulation on 6.1 (bpf_stats
 * run time of the wake-up hook), as much as the whole freeze. A task that cannot be stored
 * is counted (C_TASKS_FULL). */
BPF_TABLE("hash", u32, struct taskrec, tasks, TASKS_MAX);

/* The stack of a task still refusing to freeze STUCK_NS into the freeze (first sweep's
 * start), taken at every sweep from then on so the last sweep's stays: fentry/fexit only
 * (bpf_get_task_stack() needs a BTF task pointer, which a kprobe does not have). The
 * recorder names the addresses from /proc/kallsyms after the thaw. STUCK_NS: the recorder
 * passes half the freeze timeout, at most 1 s (normal freezes take milliseconds). */
#ifndef STUCK_NS
#define STUCK_NS 1000000000ULL
#endif
#define STUCK_DEPTH 32
struct stuckrec {
    u64 since_t0;     /* ns after the first sweep began */
    u32 pass;         /* the sweep */
    s32 nbytes;       /* bpf_get_task_stack(): bytes written, or -errno */
    u64 ips[STUCK_DEPTH];
};
BPF_F_TABLE("hash", u32, struct stuckrec, stuck, 64, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(stuck_scratch, struct stuckrec, 1);

SPAN_INT(ksys_sync_helper)
SPAN_INT(pm_sleep_fs_sync)
SPAN_INT(freeze_processes)
SPAN_INT(freeze_kernel_threads)
SPAN_VOID(thaw_processes)
SPAN_VOID(thaw_kernel_threads)

static __always_inline int on_ttft_enter(int user_only)
{
    struct cycle_state *s = state();
    if (!s)
        return 0;
    s->fz_tid = bpf_get_current_pid_tgid();
    s->fz_stage = user_only ? 1 : 2;
    s->fz_startline = 0;
    s->fz_cur = 0;
    s->fz_passes = 1;
    s->fz_swept = 0;
    /* where it prints no start line (6.1) it reads its start time first; else the start
     * line's printk return (on_printk_return) or freeze_workqueues_begin() moves t0 on */
    s->fz_t0 = bpf_ktime_get_boot_ns();
    s->fz_t1 = 0;
    s->fz_k0 = 0;
    s->fz_k1 = 0;
    EMIT("try_to_freeze_tasks", EV_BEGIN, 1, user_only);
    return 0;
}

static __always_inline int on_ttft_leave(int ret)
{
    struct cycle_state *s = state();
    if (!s)
        return 0;
    struct event *e = ev_new(EV_END);
    if (e) {
        ev_name(e, "try_to_freeze_tasks");
        e->has_value = 1;
        e->value = ret;
        e->has_aux = 1;
        e->aux1 = s->fz_passes;
        e->aux2 = s->fz_swept;
        e->str[0] = s->fz_stage == 1 ? 'u' : 'k';
        ev_submit(e);
    }
    /* the kernel's own two clock reads where both were seen (str[1] 'c'), else the window
     * between its two log lines (str[1] 'p') */
    u64 a = s->fz_t0, b = s->fz_t1;
    char how = 'p';
    if (s->fz_k0 && s->fz_k1 > s->fz_k0 && s->fz_t1) {
        a = s->fz_k0;
        b = s->fz_k1;
        how = 'c';
    }
    if (a && b >= a) {
        struct event *w = ev_new(EV_INSTANT);
        if (w) {
            ev_name(w, "freeze_sweeps");
            w->has_value = 1;
            w->value = b - a;
            w->has_aux = 1;
            w->aux1 = a;
            w->aux2 = b;
            w->str[0] = s->fz_stage == 1 ? 'u' : 'k';
            w->str[1] = how;
            ev_submit(w);
        }
    }
    s->fz_stage = 0;
    s->fz_tid = 0;
    return 0;
}

/* The cycle state if the current thread is the one running try_to_freeze_tasks(), else
 * NULL: freeze_task() and the wake-up functions are also called from elsewhere. */
static __always_inline struct cycle_state *freezer_state(void)
{
    struct cycle_state *s = state();
    if (!s || !s->fz_stage || s->fz_tid != bpf_get_current_pid_tgid())
        return 0;
    return s;
}

/* The taskrec of p (made on first sight), or NULL if the map is full (counted). */
static __always_inline struct taskrec *task_of(struct cycle_state *s, struct task_struct *p)
{
    u32 pid = 0;
    bpf_probe_read_kernel(&pid, sizeof(pid), TASK_FIELD(p, pid));
    struct taskrec *r = tasks.lookup(&pid);
    if (!r) {
        struct taskrec z = {};
        unsigned int flags = 0;
        bpf_probe_read_kernel(&flags, sizeof(flags), TASK_FIELD(p, flags));
        bpf_probe_read_kernel(&z.tgid, sizeof(z.tgid), TASK_FIELD(p, tgid));
        bpf_probe_read_kernel(&z.comm, sizeof(z.comm), TASK_FIELD(p, comm));
        z.stage = s->fz_stage;
        z.kthread = (flags & PF_KTHREAD) ? 1 : 0;
        if (tasks.update(&pid, &z)) {
            count(C_TASKS_FULL);
            return 0;
        }
        r = tasks.lookup(&pid);
    }
    return r;
}

/* freeze_task(p) is about to return true: it sent p a fake signal or woke it. Called from
 * the freezer thread's signal_wake_up_state() / wake_up_state() calls during the sweeps. */
static __always_inline int on_woken(struct task_struct *p)
{
    struct cycle_state *s = freezer_state();
    if (!s || !s->fz_t0 || s->fz_t1)
        return 0;
    struct taskrec *r = task_of(s, p);
    if (!r)
        return 0;
    if (!r->t_true)
        r->t_true = bpf_ktime_get_boot_ns();
    r->n_true++;
    r->pass_true = s->fz_passes;
    return 0;
}

int enter__signal_wake_up_state(struct pt_regs *ctx)
{
    return on_woken((struct task_struct *)PT_REGS_PARM1(ctx));
}

int enter__wake_up_state(struct pt_regs *ctx)
{
    return on_woken((struct task_struct *)PT_REGS_PARM1(ctx));
}

/* The freezer's sleep between two sweeps: the next sweep begins after it. */
int enter__usleep_range_state(struct pt_regs *ctx)
{
    struct cycle_state *s = freezer_state();
    if (s && s->fz_t0 && !s->fz_t1)
        s->fz_passes++;
    return 0;
}

/* Sweep hooks (--freezer-probes sweep|kprobe|fentry): once per thread per sweep.
 * st: p->__state at entry (a kprobe reads it with a helper, fentry directly) */
static __always_inline int on_freeze_task_enter(struct cycle_state *s, struct task_struct *p,
                                                unsigned int st)
{
    if (s->fz_passes == 1)
        s->fz_swept++;
    s->fz_cur = (u64)p;
    s->fz_cur_state = st;
    return 0;
}

/* after: p->__state at return. Nothing but this comparison unless p was frozen in place
 * (a true return is the wake-up hooks' to record). */
static __always_inline int on_freeze_task_leave(struct cycle_state *s, struct task_struct *p,
                                                int ret, unsigned int after)
{
    s->fz_cur = 0;
    if (ret || (s->fz_cur_state & TASK_FROZEN) || !(after & TASK_FROZEN))
        return 0;
    struct taskrec *r = task_of(s, p);
    if (r)
        r->in_place = 1;
    return 0;
}

/* Runs in the freezing task itself: the moment it enters the refrigerator. */
static __always_inline int on_refrigerator(void)
{
    u32 pid = (u32)bpf_get_current_pid_tgid();
    struct taskrec *r = tasks.lookup(&pid);
    if (r) {
        if (!r->t_refrig)
            r->t_refrig = bpf_ktime_get_boot_ns();
        return 0;
    }
    struct cycle_state *s = state();
    if (!s || !s->fz_stage)
        return 0;
    /* froze by itself while the freezer was running, before freeze_task() reached it */
    struct taskrec z = {};
    struct task_struct *cur = (struct task_struct *)bpf_get_current_task();
    unsigned int flags = 0;
    bpf_probe_read_kernel(&flags, sizeof(flags), TASK_FIELD(cur, flags));
    z.tgid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&z.comm, sizeof(z.comm));
    z.stage = s->fz_stage;
    z.kthread = (flags & PF_KTHREAD) ? 1 : 0;
    z.t_refrig = bpf_ktime_get_boot_ns();
    if (tasks.update(&pid, &z))
        count(C_TASKS_FULL);
    return 0;
}

/* Kernel threads: try_to_freeze_tasks(false) reads its start time, then calls
 * freeze_workqueues_begin() (every workqueue's max_active adjusted under its mutex: 1.3 ms
 * once under the lab's emulation), then sweeps. That call is inside the kernel's
 * "(elapsed ...)", so t0 is taken at its entry. Once per cycle, in the freezer thread. */
static __always_inline int on_wq_freeze_begin(void)
{
    struct cycle_state *s = freezer_state();
    if (s && !s->fz_t1)
        s->fz_t0 = bpf_ktime_get_boot_ns();
    return 0;
}

int enter__freeze_workqueues_begin(struct pt_regs *ctx)
{
    return on_wq_freeze_begin();
}

/* The freezer thread's printks inside try_to_freeze_tasks(): its start line ("Freezing %s\n",
 * 6.4 on; its format tells it apart), whose return is t0, then its result line, printed right
 * after it reads the clock for "(elapsed ...)": t1. */
static __always_inline int is_start_line(const char *fmt)
{
    char b[16] = {};
    bpf_probe_read_kernel(&b, sizeof(b), fmt);
    if (b[0] == 1)  /* KERN_SOH and the level: the text starts 2 bytes on (constant indexes
                     * only: the verifier refuses a variable offset into the stack) */
        bpf_probe_read_kernel(&b, sizeof(b), fmt + 2);
    return b[0] == 'F' && b[1] == 'r' && b[2] == 'e' && b[3] == 'e' && b[4] == 'z' &&
           b[5] == 'i' && b[6] == 'n' && b[7] == 'g' && b[8] == ' ' && b[9] == '%' &&
           b[10] == 's' && b[11] == '\n';
}

static __always_inline int on_printk(const char *fmt)
{
    struct cycle_state *s = freezer_state();
    if (!s || s->fz_t1)
        return 0;
    if (is_start_line(fmt))
        s->fz_startline = 1;
    else
        s->fz_t1 = bpf_ktime_get_boot_ns();
    return 0;
}

/* try_to_freeze_tasks() times its "(elapsed ...)" with two ktime_get_boottime() calls, an
 * inline wrapper of ktime_get_with_offset(TK_OFFS_BOOT): the freezer thread's first return of
 * it after the start line (after the entry where there is none) is the kernel's start, its
 * last before the result line the kernel's end. Their values are the kernel's own readings,
 * so their difference is its elapsed time to the nanosecond. A read of another offset
 * (CLOCK_REALTIME: ~1.7e18 ns) is told apart by its value. Called a few times a second in
 * an idle lab guest (none in 5 s), so the return probe costs nothing measurable. */
int leave__ktime_get_with_offset(struct pt_regs *ctx)
{
    struct cycle_state *s = freezer_state();
    if (!s || s->fz_t1 || s->fz_startline)
        return 0;
    u64 v = PT_REGS_RC(ctx);
    u64 now = bpf_ktime_get_boot_ns();
    if (v > now + 1000000ULL || v + 1000000000ULL < now)  /* not CLOCK_BOOTTIME */
        return 0;
    if (!s->fz_k0)
        s->fz_k0 = v;
    s->fz_k1 = v;
    return 0;
}

static __always_inline int on_printk_return(void)
{
    struct cycle_state *s = freezer_state();
    if (s && s->fz_startline && !s->fz_t1) {
        s->fz_t0 = bpf_ktime_get_boot_ns();
        s->fz_startline = 0;
    }
    return 0;
}

int enter___printk(struct pt_regs *ctx)
{
    return on_printk((const char *)PT_REGS_PARM1(ctx));
}

int leave___printk(struct pt_regs *ctx)
{
    return on_printk_return();
}

int enter__printk(struct pt_regs *ctx)
{
    return on_printk((const char *)PT_REGS_PARM1(ctx));
}

int leave__printk(struct pt_regs *ctx)
{
    return on_printk_return();
}

/* kprobes (always compiled; bcc loads only those attached) */
int enter__try_to_freeze_tasks(struct pt_regs *ctx)
{
    return on_ttft_enter((u8)PT_REGS_PARM1(ctx));
}

int leave__try_to_freeze_tasks(struct pt_regs *ctx)
{
    return on_ttft_leave((int)PT_REGS_RC(ctx));
}

int enter__freeze_task(struct pt_regs *ctx)
{
    struct cycle_state *s = freezer_state();
    if (!s)
        return 0;
    struct task_struct *p = (struct task_struct *)PT_REGS_PARM1(ctx);
    unsigned int st = 0;
    bpf_probe_read_kernel(&st, sizeof(st), TASK_FIELD(p, __state));
    return on_freeze_task_enter(s, p, st);
}

int leave__freeze_task(struct pt_regs *ctx)
{
    struct cycle_state *s = freezer_state();
    if (!s || !s->fz_cur)
        return 0;
    struct task_struct *p = (struct task_struct *)s->fz_cur;
    unsigned int after = 0;
    bpf_probe_read_kernel(&after, sizeof(after), TASK_FIELD(p, __state));
    return on_freeze_task_leave(s, p, (u8)PT_REGS_RC(ctx), after);
}

int enter____refrigerator(struct pt_regs *ctx)
{
    return on_refrigerator();
}

/* fentry/fexit: the same bodies through BPF trampolines, each pair compiled only with
 * -DSNAPPROF_FENTRY_<function> (bcc attaches kfunc programs when it loads them) */
#ifdef SNAPPROF_FENTRY_try_to_freeze_tasks
KFUNC_PROBE(try_to_freeze_tasks, bool user_only)
{
    return on_ttft_enter(user_only);
}

KRETFUNC_PROBE(try_to_freeze_tasks, bool user_only, int ret)
{
    return on_ttft_leave(ret);
}
#endif

#ifdef SNAPPROF_FENTRY_freeze_task
/* p is a BTF pointer here: p->__state is a plain load, no helper call (the verifier
 * checks the offset against the kernel's BTF) */
KFUNC_PROBE(freeze_task, struct task_struct *p)
{
    struct cycle_state *s = freezer_state();
    if (!s)
        return 0;
    return on_freeze_task_enter(s, p, *(unsigned int *)TASK_FIELD(p, __state));
}

KRETFUNC_PROBE(freeze_task, struct task_struct *p, bool ret)
{
    struct cycle_state *s = state();  /* fz_cur == p: set by the freezer thread's own entry */
    if (!s || !s->fz_stage || s->fz_cur != (u64)p)
        return 0;
    on_freeze_task_leave(s, p, ret, *(unsigned int *)TASK_FIELD(p, __state));
    if (!ret || !s->fz_t0)
        return 0;
    /* still refusing: only past STUCK_NS is the clock read further, and a stack taken */
    u64 since = bpf_ktime_get_boot_ns() - s->fz_t0;
    if (since < STUCK_NS)
        return 0;
    u32 zero = 0;
    struct stuckrec *b = stuck_scratch.lookup(&zero);
    if (!b)
        return 0;
    b->since_t0 = since;
    b->pass = s->fz_passes;
    b->nbytes = bpf_get_task_stack(p, b->ips, sizeof(b->ips), 0);
    u32 pid = *(u32 *)TASK_FIELD(p, pid);
    stuck.update(&pid, b);
    return 0;
}
#endif

#ifdef SNAPPROF_FENTRY___refrigerator
KFUNC_PROBE(__refrigerator, bool check_kthr_stop)
{
    return on_refrigerator();
}
#endif
