"""What one kprobe and one kretprobe cost a call under the lab's emulation: the upper bound
of what the light freezer probes add at the two edges of the freezing window they time (the
return hook on the freezer's start line printk, where t0 is read, and the entry hook on its
result line's printk, where t1 is read). Not a test: it prints figures.

Method: in the guest, time N getppid() system calls with no hook on __x64_sys_getppid, with
a kprobe, with a kretprobe; each handler does what the freezer's printk hooks do on a
thread that is not the freezer (one array lookup, a compare) and, like them on the freezer
thread, reads 16 bytes and the clock. The cost per call is the difference of the medians.

    python benchmarks/hook_edges.py --distro trixie        # host: boots the guest
    (guest side: python3 benchmarks/hook_edges.py --guest)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

PROG = r"""
#include <uapi/linux/ptrace.h>
struct st { u64 n; u64 t; };
BPF_ARRAY(state, struct st, 1);
static __always_inline int work(void *p)
{
    u32 zero = 0;
    struct st *s = state.lookup(&zero);
    if (!s)
        return 0;
    char b[16] = {};
    bpf_probe_read_kernel(&b, sizeof(b), p);
    s->n += b[0] == 'x';
    s->t = bpf_ktime_get_boot_ns();
    return 0;
}
int on_entry(struct pt_regs *ctx) { return work((void *)PT_REGS_PARM1(ctx)); }
int on_return(struct pt_regs *ctx) { return work((void *)ctx); }
"""


def _time(n: int) -> float:
    g = os.getppid
    t = time.perf_counter_ns()
    for _ in range(n):
        g()
    return (time.perf_counter_ns() - t) / n


def guest(n: int, rounds: int) -> int:
    from bcc import BPF

    fn = "__x64_sys_getppid"
    b = BPF(text=PROG)
    res: dict[str, list[float]] = {"none": [], "kprobe": [], "kretprobe": []}
    for _ in range(rounds):
        res["none"].append(_time(n))
        b.attach_kprobe(event=fn, fn_name="on_entry")
        res["kprobe"].append(_time(n))
        b.detach_kprobe(event=fn)
        b.attach_kretprobe(event=fn, fn_name="on_return")
        res["kretprobe"].append(_time(n))
        b.detach_kretprobe(event=fn)
    base = statistics.median(res["none"])
    print(f"{os.uname().release}: getppid() x {n}, {rounds} rounds; ns per call, median (range)")
    for k, v in res.items():
        extra = "" if k == "none" else f"  -> +{statistics.median(v) - base:,.0f} ns a call"
        print(f"  {k:10} {statistics.median(v):10,.0f} ({min(v):,.0f}-{max(v):,.0f}){extra}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distro", default="bookworm")
    ap.add_argument("--kernel", help="as snapprof lab run --kernel")
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.guest:
        return guest(args.n, args.rounds)
    import subprocess
    cmd = [sys.executable, "-m", "snapprof", "lab", "run", "--distro", args.distro]
    if args.kernel:
        cmd += ["--kernel", args.kernel]
    cmd += ["--", "python3", "/project/benchmarks/hook_edges.py", "--guest", "-n", str(args.n),
            "--rounds", str(args.rounds)]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
