/* snapprof: freezer probes (kernel/power/process.c, kernel/freezer.c).
 *
 * Spans: ksys_sync_helper, freeze_processes, freeze_kernel_threads, thaw_processes,
 * thaw_kernel_threads, try_to_freeze_tasks (begin value = user_only, end value = ret,
 * aux1 = sweeps (passes), aux2 = tasks looked at in the first sweep).
 *
 * The freezing time as the kernel's "(elapsed N seconds)" times it: try_to_freeze_tasks()
 * reads the clock after its "Freezing ..." log line and before its "... completed" one, and
 * in between only sweeps (freeze_task() on every thread, a sleep between sweeps). The span
 * of the whole call also holds those two log lines, written to the console before it
 * returns (0.5-2 ms in the lab, 7.6 ms once on 6.1's serial console), so at its return an
 * instant "freeze_sweeps" event gives value = t1 - t0, aux1/aux2 = those two times,
 * str = "u" / "k": t0 the first freeze_task() call (kernel threads: the entry of
 * freeze_workqueues_begin(), which comes between the kernel's start time and the first
 * sweep), t1 the freezer thread's first printk
 * after it (the result line, "... completed (elapsed ...)" or "... failed after ..."), which
 * the kernel prints right after it reads the clock. So no clock is read on the ~100
 * freeze_task() calls of each sweep.
 *
 * Per task (map `tasks`, keyed by pid): try_to_freeze_tasks() sweeps every thread with
 * freeze_task(p); a sweep starts again when its first task comes round again. For each
 * task the freezer had to act on we keep when freeze_task(p) first returned true (a fake
 * signal was sent or the kthread woken), the last sweep in which it still did, and when
 * the task itself entered __refrigerator (kprobe only: no kretprobe, so no maxactive
 * limit). Tasks switched straight to TASK_FROZEN by freeze_task ("frozen in place") are
 * kept with in_place = 1 and no refrigerator time.
 *
 * Attachment: the handlers' bodies are the on_*() functions below, called from kprobe /
 * kretprobe handlers (enter__/leave__<fn>) or, compiled with -DSNAPPROF_FENTRY_<fn>, from
 * fentry/fexit programs (bcc KFUNC_PROBE / KRETFUNC_PROBE, BPF trampolines; the kernel's
 * BTF gives the arguments). freeze_task() runs once per thread per sweep, so its hooks are
 * what the freezer pays for: on hardware a trampoline is published at a fraction of a
 * kprobe's cost, and a kretprobe costs more; under the lab's emulation the trampolines were
 * not cheaper (docs/record.md, "what the probes cost").
 * The loader (snapprof/record/loader.py) compiles with the define where the kernel has
 * BTF and trampolines, and without it (kprobes) otherwise or if that fails; the capture
 * says which (meta probe_methods). bcc attaches the kfunc programs when it loads them.
 */
#ifndef TASK_FROZEN
#define TASK_FROZEN 0x00008000
#endif
#ifndef PF_KTHREAD
#define PF_KTHREAD 0x00200000
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
/* Allocated as used (a cycle has ~10 such tasks on 6.1+, where sleeping tasks are frozen in
 * place; older freezers act on every task): only its bucket array is taken up front. A task
 * that cannot be stored is counted (C_TASKS_FULL). */
BPF_F_TABLE("hash", u32, struct taskrec, tasks, TASKS_MAX, BPF_F_NO_PREALLOC);

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
    s->fz_first = 0;
    s->fz_cur = 0;
    s->fz_passes = 0;
    s->fz_swept = 0;
    s->fz_t0 = 0;
    s->fz_t1 = 0;
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
    if (s->fz_t0 && s->fz_t1 >= s->fz_t0) {
        struct event *w = ev_new(EV_INSTANT);
        if (w) {
            ev_name(w, "freeze_sweeps");
            w->has_value = 1;
            w->value = s->fz_t1 - s->fz_t0;
            w->has_aux = 1;
            w->aux1 = s->fz_t0;
            w->aux2 = s->fz_t1;
            w->str[0] = s->fz_stage == 1 ? 'u' : 'k';
            ev_submit(w);
        }
    }
    s->fz_stage = 0;
    s->fz_tid = 0;
    return 0;
}

/* The cycle state if the current thread is the one running try_to_freeze_tasks(), else
 * NULL: freeze_task() is also called from elsewhere (the cgroup v1 freezer). */
static __always_inline struct cycle_state *freezer_state(void)
{
    struct cycle_state *s = state();
    if (!s || !s->fz_stage || s->fz_tid != bpf_get_current_pid_tgid())
        return 0;
    return s;
}

/* st: p->__state at entry (a kprobe reads it with a helper, fentry directly) */
static __always_inline int on_freeze_task_enter(struct cycle_state *s, struct task_struct *p,
                                                unsigned int st)
{
    if (!s->fz_first) {
        if (!s->fz_t0)  /* user space: no freeze_workqueues_begin() came first */
            s->fz_t0 = bpf_ktime_get_boot_ns();
        s->fz_first = (u64)p;
        s->fz_passes = 1;
    } else if (s->fz_first == (u64)p) {
        s->fz_passes++;
    }
    if (s->fz_passes == 1)
        s->fz_swept++;
    s->fz_cur = (u64)p;
    s->fz_cur_state = st;
    return 0;
}

/* after: p->__state at return. Runs on every thread in every sweep: nothing but this
 * comparison unless the freezer had to act on p. */
static __always_inline int on_freeze_task_leave(struct cycle_state *s, struct task_struct *p,
                                                int ret, unsigned int after)
{
    s->fz_cur = 0;
    int in_place = !ret && !(s->fz_cur_state & TASK_FROZEN) && (after & TASK_FROZEN);
    if (!ret && !in_place)
        return 0;

    u32 pid = 0;
    bpf_probe_read_kernel(&pid, sizeof(pid), &p->pid);
    struct taskrec *r = tasks.lookup(&pid);
    if (!r) {
        struct taskrec z = {};
        unsigned int flags = 0;
        bpf_probe_read_kernel(&flags, sizeof(flags), &p->flags);
        bpf_probe_read_kernel(&z.tgid, sizeof(z.tgid), &p->tgid);
        bpf_probe_read_kernel(&z.comm, sizeof(z.comm), &p->comm);
        z.stage = s->fz_stage;
        z.kthread = (flags & PF_KTHREAD) ? 1 : 0;
        if (tasks.update(&pid, &z)) {
            count(C_TASKS_FULL);
            return 0;
        }
        r = tasks.lookup(&pid);
        if (!r)
            return 0;
    }
    if (ret) {
        if (!r->t_true)
            r->t_true = bpf_ktime_get_boot_ns();
        r->n_true++;
        r->pass_true = s->fz_passes;
    } else {
        r->in_place = 1;
    }
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
    bpf_probe_read_kernel(&flags, sizeof(flags), &cur->flags);
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
    if (s && !s->fz_t0)
        s->fz_t0 = bpf_ktime_get_boot_ns();
    return 0;
}

int enter__freeze_workqueues_begin(struct pt_regs *ctx)
{
    return on_wq_freeze_begin();
}

/* The freezer thread's first printk after its first sweep began: its result line, printed
 * right after try_to_freeze_tasks() reads the clock for "(elapsed ...)". */
static __always_inline int on_printk(void)
{
    struct cycle_state *s = freezer_state();
    if (s && s->fz_t0 && !s->fz_t1)
        s->fz_t1 = bpf_ktime_get_boot_ns();
    return 0;
}

int enter___printk(struct pt_regs *ctx)
{
    return on_printk();
}

int enter__printk(struct pt_regs *ctx)
{
    return on_printk();
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
    bpf_probe_read_kernel(&st, sizeof(st), &p->__state);
    return on_freeze_task_enter(s, p, st);
}

int leave__freeze_task(struct pt_regs *ctx)
{
    struct cycle_state *s = freezer_state();
    if (!s || !s->fz_cur)
        return 0;
    struct task_struct *p = (struct task_struct *)s->fz_cur;
    unsigned int after = 0;
    bpf_probe_read_kernel(&after, sizeof(after), &p->__state);
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
/* p is a BTF pointer here: p->__state is a plain load, no helper call */
KFUNC_PROBE(freeze_task, struct task_struct *p)
{
    struct cycle_state *s = freezer_state();
    if (!s)
        return 0;
    return on_freeze_task_enter(s, p, p->__state);
}

KRETFUNC_PROBE(freeze_task, struct task_struct *p, bool ret)
{
    struct cycle_state *s = state();  /* fz_cur == p: set by the freezer thread's own entry */
    if (!s || !s->fz_stage || s->fz_cur != (u64)p)
        return 0;
    on_freeze_task_leave(s, p, ret, p->__state);
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
    u32 pid = p->pid;
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
