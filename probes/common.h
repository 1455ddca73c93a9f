/* snapprof: shared definitions for the hibernation probes (bcc).
 *
 * The recorder's own threads are frozen during a hibernation cycle, so nothing is read
 * while it runs: every probe writes into a ring buffer sized for a whole cycle, or into
 * maps, and user space drains them after thaw. Ring-buffer records are submitted with
 * BPF_RB_NO_WAKEUP (no irq_work while interrupts are off in the atomic copy); a record
 * that does not fit is counted in `counters`, never silently lost.
 *
 * Timestamps are bpf_ktime_get_boot_ns() (CLOCK_BOOTTIME). All BPF clocks stand still
 * between syscore_suspend and syscore_resume: the copy window comes from the kernel's own
 * sleep-time report (tk_debug_account_sleep_time), never from a timestamp difference.
 *
 * Defines passed by snapprof/record/probeset.py (cflags):
 *   EVENTS_PAGES, DEVCALLS_PAGES, TASKS_MAX,       buffer and map sizes (the recorder
 *   DEVSTART_MAX, DEVNAMES_MAX                     fits them to the machine)
 *   ADDR_<symbol>=0x...                            address of a kernel static (/proc/kallsyms)
 *   HAVE_TP_<sys>__<event>                         the tracepoint exists in this kernel
 *   TASK_OFF_<field>=N, TASK_FROZEN, PF_KTHREAD    struct task_struct's layout from the
 *                                                  kernel's BTF, the two flags from its
 *                                                  <linux/sched.h> read as text (btf.py);
 *                                                  without them the header is compiled
 */
#include <uapi/linux/ptrace.h>

/* The task_struct fields the probes read: TASK_FIELD(p, f) is the address of p->f.
 * Compiling <linux/sched.h> costs bcc 17-20 s under the lab's emulation, most of a
 * recorder's start, so the offsets come from the kernel's BTF when it has one. */
#ifdef TASK_OFF_pid
struct task_struct;
#define TASK_FIELD(p, f) ((void *)((char *)(p) + TASK_OFF_##f))
#else
#include <linux/sched.h>
#define TASK_FIELD(p, f) ((void *)&(p)->f)
#endif

#ifndef EVENTS_PAGES
#define EVENTS_PAGES 16
#endif
#ifndef DEVCALLS_PAGES
#define DEVCALLS_PAGES 64
#endif
#ifndef TASKS_MAX
#define TASKS_MAX 1024
#endif
#ifndef DEVSTART_MAX
#define DEVSTART_MAX 256
#endif
#ifndef DEVNAMES_MAX
#define DEVNAMES_MAX 1024
#endif

#define NAME_LEN 32
#define STR_LEN 32

#define EV_BEGIN 0
#define EV_END 1
#define EV_INSTANT 2

/* counters[] indexes (mirrored in snapprof/record/derive.py COUNTERS) */
#define C_EVENT_DROPS 0
#define C_DEVCALL_DROPS 1
#define C_TASKS_FULL 2
#define C_DEV_UNPAIRED 3
#define NCOUNTERS 4

struct event {
    u64 ts;
    s64 value;
    u64 aux1;
    u64 aux2;
    u32 pid;        /* thread id */
    u32 tgid;
    u32 cpu;
    u8 kind;        /* EV_BEGIN / EV_END / EV_INSTANT */
    u8 has_value;
    u8 has_aux;
    u8 pad;
    char comm[16];
    char name[NAME_LEN];
    char str[STR_LEN];
};

BPF_RINGBUF_OUTPUT(events, EVENTS_PAGES);
BPF_ARRAY(counters, u64, NCOUNTERS);

static __always_inline void count(u32 idx)
{
    u64 *c = counters.lookup(&idx);
    if (c)
        __sync_fetch_and_add(c, 1);
}

/* Reserve a zeroed event with the common fields set, or count a drop and return NULL. */
static __always_inline struct event *ev_new(u8 kind)
{
    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        count(C_EVENT_DROPS);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    u64 id = bpf_get_current_pid_tgid();
    e->ts = bpf_ktime_get_boot_ns();
    e->pid = (u32)id;
    e->tgid = id >> 32;
    e->cpu = bpf_get_smp_processor_id();
    e->kind = kind;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    return e;
}

static __always_inline void ev_submit(struct event *e)
{
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/* bcc refuses map calls written inside macros: the macros below only call functions. */
#define ev_name(e, lit) __builtin_memcpy((e)->name, lit, sizeof(lit) < NAME_LEN ? sizeof(lit) : NAME_LEN)

/* Emit one event named `lit`; has_value says whether `val` means something. */
#define EMIT(lit, kind, has_val, val)                 \
    do {                                              \
        struct event *__e = ev_new(kind);             \
        if (__e) {                                    \
            ev_name(__e, lit);                        \
            __e->has_value = (has_val);               \
            __e->value = (s64)(val);                  \
            ev_submit(__e);                           \
        }                                             \
    } while (0)

/* Span handlers for a kernel function: enter__<fn> (kprobe) and leave__<fn> (kretprobe).
 * SPAN_VOID:     no value at either end
 * SPAN_INT:      end value = int return (0 / -errno)
 * SPAN_ULONG:    end value = unsigned long return
 * SPAN_ARG_INT:  begin value = argument N (u64), end value = int return
 */
#define ENTER_PLAIN(fn) \
    int enter__##fn(struct pt_regs *ctx) { EMIT(#fn, EV_BEGIN, 0, 0); return 0; }
#define ENTER_ARG(fn, N) \
    int enter__##fn(struct pt_regs *ctx) { EMIT(#fn, EV_BEGIN, 1, PT_REGS_PARM##N(ctx)); return 0; }
#define LEAVE_VOID(fn) \
    int leave__##fn(struct pt_regs *ctx) { EMIT(#fn, EV_END, 0, 0); return 0; }
#define LEAVE_INT(fn) \
    int leave__##fn(struct pt_regs *ctx) { EMIT(#fn, EV_END, 1, (int)PT_REGS_RC(ctx)); return 0; }
#define LEAVE_ULONG(fn) \
    int leave__##fn(struct pt_regs *ctx) { EMIT(#fn, EV_END, 1, (unsigned long)PT_REGS_RC(ctx)); return 0; }

#define SPAN_VOID(fn) ENTER_PLAIN(fn) LEAVE_VOID(fn)
#define SPAN_INT(fn) ENTER_PLAIN(fn) LEAVE_INT(fn)
#define SPAN_ULONG(fn) ENTER_PLAIN(fn) LEAVE_ULONG(fn)
#define SPAN_ARG_INT(fn, N) ENTER_ARG(fn, N) LEAVE_INT(fn)

/* Per-cycle state shared by the areas (one element; reset by user space after each cycle). */
struct cycle_state {
    u64 fz_tid;          /* thread running try_to_freeze_tasks() */
    u64 fz_startline;    /* 1 while the freezer thread prints its "Freezing %s" line */
    u64 fz_cur;          /* task passed to the freeze_task() in flight (sweep hooks) */
    u32 fz_stage;        /* 1 = user space, 2 = kernel threads, 0 = not freezing */
    u32 fz_passes;       /* the sweep in progress: 1 + the sleeps between sweeps so far */
    u32 fz_swept;        /* freeze_task() calls in the first sweep (sweep hooks only) */
    u32 fz_cur_state;    /* p->__state at freeze_task() entry */
    u32 in_prealloc;
    u32 cdp_calls;       /* count_data_pages() calls inside the preallocation */
    u32 in_save;         /* inside swsusp_save() */
    u32 pad;
    u64 fz_t0;           /* where try_to_freeze_tasks() reads its start time (freezer.c) */
    u64 fz_t1;           /* the freezer's result line (its first printk after the sweeps) */
    u64 fz_k0;           /* the kernel's own start read (ktime_get_boottime()'s return) */
    u64 fz_k1;           /* its last read before the result line: the end read */
};
BPF_ARRAY(cycle, struct cycle_state, 1);

static __always_inline struct cycle_state *state(void)
{
    u32 zero = 0;
    return cycle.lookup(&zero);
}
