"""struct task_struct's layout from BTF (snapprof/record/btf.py) and the defines the probes
get from it (KernelView.task_layout): offsets read as the kernel describes them, and a
clear fallback to <linux/sched.h> whenever anything is missing or odd."""

import random
import struct
from pathlib import Path

import pytest

from snapprof.record import btf
from snapprof.record.resolve import KernelView


class Blob:
    """A small BTF blob written by hand, as include/uapi/linux/btf.h lays it out."""

    def __init__(self):
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, name, kind, vlen, size_or_type, extra=b"", kflag=False) -> int:
        info = (kind << 24) | vlen | (1 << 31 if kflag else 0)
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        self.count += 1
        return self.count

    def int_(self, name, size):
        return self.add(name, btf.INT, 0, size, struct.pack("<I", size * 8))

    def array(self, elem, index, n):
        return self.add("", btf.ARRAY, 0, 0, struct.pack("<III", elem, index, n))

    def struct_(self, name, size, members, kind=btf.STRUCT, kflag=False):
        extra = b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in members)
        return self.add(name, kind, len(members), size, extra, kflag)

    def bytes(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", btf.MAGIC, 1, 0, 24, 0, len(self.types),
                          len(self.types), len(self.strings))
        return hdr + self.types + self.strings


def task_blob(state_bits=0) -> bytes:
    """A task_struct like the kernel's: __state inside an anonymous struct, pid through a
    typedef, comm a char array, a const-qualified field, and a function pointer before them."""
    b = Blob()
    uint = b.int_("unsigned int", 4)                        # 1
    int_ = b.int_("int", 4)                                 # 2
    char = b.int_("char", 1)                                # 3
    pid_t = b.add("pid_t", btf.TYPEDEF, 0, int_)            # 4
    comm = b.array(char, int_, 16)                          # 5
    cuint = b.add("", btf.CONST, 0, uint)                   # 6
    ptr = b.add("", btf.PTR, 0, 0)                          # 7
    inner = b.struct_("", 8, [("__state", uint, state_bits), ("saved_state", uint, 32)],
                      kflag=bool(state_bits))               # 8
    b.struct_("task_struct", 2048, [
        ("thread_info", ptr, 0),
        ("", inner, 128),                 # anonymous, 16 bytes in
        ("flags", cuint, 44 * 8),
        ("pid", pid_t, 1264 * 8),
        ("tgid", pid_t, 1268 * 8),
        ("comm", comm, 1752 * 8),
    ])
    b.add("task_struct", btf.FWD, 0, 0)  # a forward declaration of the same name is not it
    return b.bytes()


def test_fields_are_found_through_typedefs_arrays_and_anonymous_members():
    got = btf.struct_fields(task_blob(), "task_struct", ["pid", "tgid", "flags", "comm", "__state"])
    assert got == {"__state": btf.Field(16, 4), "flags": btf.Field(44, 4), "pid": btf.Field(1264, 4),
                   "tgid": btf.Field(1268, 4), "comm": btf.Field(1752, 16)}


def test_a_missing_field_or_struct_is_named():
    with pytest.raises(btf.BtfError, match="has no nosuch"):
        btf.struct_fields(task_blob(), "task_struct", ["pid", "nosuch"])
    with pytest.raises(btf.BtfError, match="no struct mm_struct"):
        btf.struct_fields(task_blob(), "mm_struct", ["pid"])


def test_a_bitfield_is_refused():
    # kind_flag set: the member's offset word carries a bitfield size (4 << 24)
    with pytest.raises(btf.BtfError, match="__state is a bitfield"):
        btf.struct_fields(task_blob(state_bits=(4 << 24) | 128), "task_struct", ["__state"])


def test_not_btf_and_truncated_blobs_say_so():
    with pytest.raises(btf.BtfError, match="bad magic"):
        btf.struct_fields(b"\x7fELF" + bytes(40), "task_struct", ["pid"])
    with pytest.raises(btf.BtfError, match="shorter than its header"):
        btf.struct_fields(b"\x9f\xeb", "task_struct", ["pid"])
    blob = task_blob()
    with pytest.raises(btf.BtfError, match="past the end"):
        btf.struct_fields(blob[:-10], "task_struct", ["pid"])


def test_a_typedef_loop_ends_in_an_error():
    b = Blob()
    b.add("loop", btf.TYPEDEF, 0, 1)  # type 1 is a typedef of itself
    b.struct_("task_struct", 8, [("pid", 1, 0)])
    with pytest.raises(btf.BtfError, match="chain too long"):
        btf.struct_fields(b.bytes(), "task_struct", ["pid"])


def test_damaged_blobs_give_a_layout_or_btferror_and_nothing_else():
    blob = task_blob()
    rng = random.Random(7)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(2000):
        damaged = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        cut = rng.choice([len(damaged), rng.randrange(len(damaged))])
        try:
            btf.struct_fields(bytes(damaged[:cut]), "task_struct", ["pid", "comm", "__state"])
            outcomes["ok"] += 1
        except btf.BtfError:
            outcomes["error"] += 1
    assert outcomes["ok"] and outcomes["error"]


SCHED_H = """\
#define TASK_RUNNING			0x00000000
#define TASK_FROZEN			0x00008000
#define PF_KTHREAD		0x00200000	/* I am a kernel thread */
"""


def _tree(root: Path, blob: bytes | None = None, header: str | None = SCHED_H, where="source"):
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text("6.12.0-test\n")
    if blob is not None:
        (root / "sys/kernel/btf").mkdir(parents=True)
        (root / "sys/kernel/btf/vmlinux").write_bytes(blob)
    if header is not None:
        inc = root / f"lib/modules/6.12.0-test/{where}/include/linux"
        inc.mkdir(parents=True)
        (inc / "sched.h").write_text(header)
    return KernelView(root=str(root), euid=0, bcc=True)


def test_task_layout_gives_offsets_and_the_headers_flags(tmp_path):
    defines, how = _tree(tmp_path, task_blob()).task_layout()
    assert defines == {"TASK_OFF_pid": 1264, "TASK_OFF_tgid": 1268, "TASK_OFF_flags": 44,
                       "TASK_OFF_comm": 1752, "TASK_OFF___state": 16,
                       "TASK_FROZEN": 0x8000, "PF_KTHREAD": 0x200000}
    assert "kernel's BTF" in how and "pid@1264" in how and "TASK_FROZEN=0x8000" in how
    assert "lib/modules/6.12.0-test/source/include/linux/sched.h" in how


def test_task_layout_reads_the_build_tree_when_there_is_no_source_link(tmp_path):
    defines, _how = _tree(tmp_path, task_blob(), where="build").task_layout()
    assert defines["PF_KTHREAD"] == 0x200000


@pytest.mark.parametrize("case, expect", [
    ("no btf", "no kernel BTF"),
    ("no header", "cannot read"),
    ("flag missing", "defines no plain PF_KTHREAD"),
    ("flag an expression", "defines no plain TASK_FROZEN"),
    ("wrong size", "task_struct.comm is 8 bytes"),
])
def test_task_layout_falls_back_to_the_header_with_a_reason(tmp_path, case, expect):
    blob, header = task_blob(), SCHED_H
    if case == "no btf":
        blob = None
    elif case == "no header":
        header = None
    elif case == "flag missing":
        header = SCHED_H.replace("PF_KTHREAD", "PF_OTHER")
    elif case == "flag an expression":
        header = SCHED_H.replace("0x00008000", "(1 << 15)")
    elif case == "wrong size":
        blob = blob.replace(struct.pack("<III", 3, 2, 16), struct.pack("<III", 3, 2, 8))
    defines, how = _tree(tmp_path, blob, header).task_layout()
    assert defines == {}
    assert how.startswith("<linux/sched.h> compiled: ") and expect in how, how
