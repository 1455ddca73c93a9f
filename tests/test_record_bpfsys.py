"""snapprof/record/bpfsys.py (the recorder's stdlib-only map and ring-buffer access) and
snapprof/record/loader.py (compile in a child, hand the descriptors over).

Map tests use real BPF maps when this kernel lets us create them (root; no kprobes needed);
the ring-buffer consumer is checked on buffers laid out like the kernel's mapping, and the
mapping itself on a real ring buffer."""

from __future__ import annotations

import ctypes as ct
import errno
import mmap
import os
import struct
import sys
import textwrap

import pytest

from snapprof.errors import SnapprofError
from snapprof.record import bpfsys, loader
from snapprof.record.resolve import KernelView
from snapprof.record.probeset import (DevcallRecord, DevnameRecord, EventRecord, ProbeSet, TaskRecord,
                                      buffer_sizes, count_pm_devices, count_threads)


class _CreateAttr(ct.Structure):
    _fields_ = [("map_type", ct.c_uint32), ("key_size", ct.c_uint32), ("value_size", ct.c_uint32),
                ("max_entries", ct.c_uint32), ("map_flags", ct.c_uint32)]


HASH, ARRAY, RINGBUF = 1, 2, 27


def create_map(kind, key_size, value_size, max_entries):
    try:
        return bpfsys._sys_bpf(0, _CreateAttr(kind, key_size, value_size, max_entries, 0))
    except bpfsys.BpfError as exc:
        pytest.skip(f"cannot create BPF maps here: {exc.strerror}")


@pytest.fixture
def hash_map():
    fd = create_map(HASH, 4, 16, 64)
    yield bpfsys.Map(fd, 4, 16, 64)
    os.close(fd)


def k(i):
    return i.to_bytes(4, "little")


def test_hash_map_roundtrip_and_clear(hash_map):
    for i in range(10):
        hash_map.update(k(i), bytes([i]) * 16)
    assert sorted(hash_map.keys()) == sorted(k(i) for i in range(10))
    assert hash_map.lookup(k(3)) == b"\x03" * 16
    assert hash_map.lookup(k(99)) is None
    assert dict(hash_map.items())[k(7)] == b"\x07" * 16
    assert hash_map.delete(k(7)) and not hash_map.delete(k(7))
    hash_map.clear()
    assert hash_map.keys() == []
    with pytest.raises(ValueError):
        hash_map.update(k(1), b"short")


def test_array_clear_zeroes_values():
    fd = create_map(ARRAY, 4, 8, 4)
    try:
        arr = bpfsys.Map(fd, 4, 8, 4)
        arr.update(k(2), (41).to_bytes(8, "little"))
        assert int.from_bytes(arr.lookup(k(2)), "little") == 41
        arr.clear()
        assert [int.from_bytes(v, "little") for _k, v in arr.items()] == [0, 0, 0, 0]
        info = bpfsys.map_info(fd)
        assert (info["type"], info["key_size"], info["value_size"], info["max_entries"]) == (ARRAY, 4, 8, 4)
    finally:
        os.close(fd)


def test_bad_fd_is_an_oserror():
    with pytest.raises(bpfsys.BpfError) as exc:
        bpfsys.Map(987654, 4, 8).lookup(k(0))
    assert exc.value.errno in (errno.EBADF, errno.EPERM)


def test_real_ring_buffer_maps_and_is_empty():
    size = 4 * mmap.PAGESIZE
    fd = create_map(RINGBUF, 0, 0, size)
    try:
        rb = bpfsys.RingBuffer(fd, size)
        got = []
        assert rb.consume(got.append) == 0 and got == []
        assert rb.wait(0) is False
        rb.close()
    finally:
        os.close(fd)
    with pytest.raises(ValueError):
        bpfsys.RingBuffer(fd, 3 * mmap.PAGESIZE)


def _fake_ring(size, records, start=0):
    """cons/prod buffers as the kernel maps them: data area twice in a row."""
    page = 64
    cons = bytearray(8)
    prod = bytearray(page + 2 * size)
    pos = start
    struct.pack_into("<Q", cons, 0, start)
    for payload, flags in records:
        hdr = struct.pack("<II", len(payload) | flags, 0)
        blob = hdr + payload
        for j, b in enumerate(blob):  # write with wrap-around, into both copies
            off = (pos + j) & (size - 1)
            prod[page + off] = b
            prod[page + size + off] = b
        pos += (len(payload) + 8 + 7) & ~7
    struct.pack_into("<Q", prod, 0, pos)
    return cons, prod, page


def test_consume_reads_records_in_order_skips_discarded_and_wraps():
    size = 256
    recs = [(b"a" * 20, 0), (b"b" * 5, bpfsys.RINGBUF_DISCARD), (b"c" * 40, 0), (b"d" * 30, 0)]
    cons, prod, page = _fake_ring(size, recs, start=200)  # "c" wraps: 248..256, then 0..40
    got = []
    n = bpfsys.consume(cons, prod, page, size - 1, got.append)
    assert got == [b"a" * 20, b"c" * 40, b"d" * 30] and n == 3
    assert struct.unpack_from("<Q", cons)[0] == struct.unpack_from("<Q", prod)[0]
    assert bpfsys.consume(cons, prod, page, size - 1, got.append) == 0  # nothing new


def test_consume_stops_at_a_busy_record():
    size = 128
    cons, prod, page = _fake_ring(size, [(b"x" * 8, 0), (b"y" * 8, bpfsys.RINGBUF_BUSY), (b"z" * 8, 0)])
    got = []
    assert bpfsys.consume(cons, prod, page, size - 1, got.append) == 1
    assert got == [b"x" * 8]
    assert struct.unpack_from("<Q", cons)[0] == 16  # stopped before the busy one


def test_record_layouts_match_the_c_structs():
    # sizes of struct event (common.h), struct devcall and struct devname (devices.c),
    # struct taskrec (freezer.c)
    assert ct.sizeof(EventRecord) == 8 * 4 + 4 * 3 + 4 + 16 + 32 + 32
    assert ct.sizeof(DevcallRecord) == 8 * 3 + 4 * 3 + 4
    assert ct.sizeof(DevnameRecord) == 48 + 32 + 48
    assert ct.sizeof(TaskRecord) == 8 * 2 + 4 * 3 + 4 + 16


def test_buffer_sizes_fit_the_machine():
    # 90 devices x 4 callbacks x 48 B = 4.2 pages; 200 events x 144 B = 7 pages
    small = buffer_sizes(n_devices=90, n_threads=100)
    assert small == {"EVENTS_PAGES": 8, "DEVCALLS_PAGES": 8, "TASKS_MAX": 512,
                     "DEVSTART_MAX": 128, "DEVNAMES_MAX": 128}
    # the lab's guests: ~300 devices under /sys/devices -> 16 pages (the records of ~1,360
    # callbacks; a cycle has ~700), 32 sized for the worst case of 8 a device
    lab = buffer_sizes(n_devices=300, n_threads=130)
    assert lab["DEVCALLS_PAGES"] == 16 and lab["DEVNAMES_MAX"] == 512 and lab["TASKS_MAX"] == 512
    assert buffer_sizes(n_devices=300, n_threads=130, callbacks_per_device=8)["DEVCALLS_PAGES"] == 32
    big = buffer_sizes(n_devices=1500, n_threads=3000)
    assert big["DEVCALLS_PAGES"] == 128 and big["TASKS_MAX"] == 4096
    assert big["DEVSTART_MAX"] == 2048 and big["DEVNAMES_MAX"] == 2048
    for v in (*small.values(), *lab.values(), *big.values()):
        assert v & (v - 1) == 0  # powers of two
    # a huge machine is capped at 16 MiB of device-callback buffer
    assert buffer_sizes(n_devices=400000, n_threads=10, callbacks_per_device=8)["DEVCALLS_PAGES"] == 4096


def test_counting_devices_and_threads(tmp_path):
    sysd = tmp_path / "sys" / "devices"
    for d in ("platform/a/power", "platform/a/b/power", "pci0000:00/power", "virtual/x"):
        (sysd / d).mkdir(parents=True)
    assert count_pm_devices(str(tmp_path / "sys")) == 3
    proc = tmp_path / "proc"
    for pid, tids in (("1", ("1",)), ("20", ("20", "21", "22")), ("self", ("1",))):
        for t in tids:
            (proc / pid / "task" / t).mkdir(parents=True)
    assert count_threads(str(proc)) == 4
    assert count_threads(str(tmp_path / "nothing")) == 0


def test_cflags_carry_the_sizes():
    ps = ProbeSet()
    flags = ps.cflags()
    for name, value in ps.sizes.items():
        assert f"-D{name}={value}" in flags


def test_callbacks_per_device_sizes_the_device_ring(tmp_path):
    for i in range(100):
        (tmp_path / "sys" / "devices" / "platform" / f"d{i}" / "power").mkdir(parents=True)
    (tmp_path / "proc").mkdir()
    view = KernelView(root=str(tmp_path))
    # 100 devices x 4 x 48 B = 4.7 pages -> 8; x 16 = 18.75 pages -> 32
    assert ProbeSet(view=view).sizes["DEVCALLS_PAGES"] == 8
    wide = ProbeSet(view=view, callbacks_per_device=16)
    assert wide.sizes["DEVCALLS_PAGES"] == 32 and "-DDEVCALLS_PAGES=32" in wide.cflags()


# -- loader: the child process, with a stand-in bcc that creates real maps ------------------
FAKE_BCC = textwrap.dedent('''
    import ctypes as ct, json, os
    from snapprof.record import bpfsys

    class _A(ct.Structure):
        _fields_ = [("t", ct.c_uint32), ("k", ct.c_uint32), ("v", ct.c_uint32), ("n", ct.c_uint32),
                    ("f", ct.c_uint32)]

    class _Table:
        def __init__(self, kind, ks, vs, n):
            self.map_fd = bpfsys._sys_bpf(0, _A(kind, ks, vs, n, 0))
            self.Key = ct.c_char * ks if ks else None
            self.Leaf = ct.c_char * vs if vs else None
            self.max_entries = n

    class BPF:
        def __init__(self, text, cflags):
            if "BROKEN" in text:
                import sys
                sys.stderr.write("x.c:3:1: error: expected ';'\\n")
                raise Exception("Failed to compile BPF module")
            self.tables = {"counters": _Table(2, 4, 8, 4), "tasks": _Table(1, 4, 48, 64)}
            self.kprobe_fds, self.tracepoint_fds = {}, {}
            self.log = []

        def get_table(self, name):
            return self.tables[name]

        def attach_kprobe(self, event, fn_name):
            if event == "missing_fn":
                raise Exception("cannot attach kprobe, probe entry may not exist")
            r, w = os.pipe()  # stands for a perf event fd
            os.close(w)
            self.kprobe_fds.setdefault(b"p_" + event.encode(), {})[fn_name.encode()] = r

        def attach_tracepoint(self, tp, fn_name):
            r, w = os.pipe()
            os.close(w)
            self.tracepoint_fds[tp.encode()] = r
''')


@pytest.fixture
def fake_bcc(tmp_path, monkeypatch):
    create_map(ARRAY, 4, 8, 1)  # skip when maps cannot be created here
    pkg = tmp_path / "fakebcc" / "bcc"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_BCC)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fakebcc") + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_loader_hands_over_maps_and_links(fake_bcc):
    hooks = [("kprobe", "freeze_task", "enter__freeze_task", 0),
             ("kprobe", "missing_fn", "enter__missing_fn", 0),
             ("tracepoint", "power:suspend_resume", "tp__power__suspend_resume", 0)]
    loaded = loader.load("int x;", [], hooks, ["counters", "tasks", "no_such_map"], timeout_s=60)
    try:
        assert set(loaded.maps) == {"counters", "tasks"}
        assert loaded.attach_errors[hooks[0][:3]] is None
        assert "probe entry may not exist" in loaded.attach_errors[hooks[1][:3]]
        assert loaded.attach_errors[hooks[2][:3]] is None
        assert len(loaded.links) == 2
        assert loaded.loader_peak_rss_kb and loaded.loader_peak_rss_kb > 1000
        # the kernel's accounting of the real maps the fake made (no programs here)
        assert loaded.bpf_memlock_kb["maps"] > 0
        assert loaded.bpf_memlock_kb["programs"] == loaded.bpf_memlock_kb["n_programs"] == 0
        # the maps outlive the child: use them from here
        m = loaded.maps["counters"]
        arr = bpfsys.Map(m["fd"], m["key_size"], m["value_size"], m["max_entries"])
        arr.update(k(1), (5).to_bytes(8, "little"))
        assert int.from_bytes(arr.lookup(k(1)), "little") == 5
        with pytest.raises(ProcessLookupError):
            os.kill(loaded.loader_pid, 0)  # the child is gone (and reaped)
    finally:
        loaded.close()
    assert loaded.links == [] and all(m["fd"] is None for m in loaded.maps.values())


def test_loader_compile_error_is_one_line(fake_bcc):
    with pytest.raises(SnapprofError, match=r"^BPF compile failed: x.c:3:1: error: expected ';'$"):
        loader.load("BROKEN", [], [], ["counters"], timeout_s=60)


def test_loader_that_dies_says_why(tmp_path, monkeypatch):
    pkg = tmp_path / "bcc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import os\nos._exit(7)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with pytest.raises(SnapprofError, match=r"^the probe loader died before answering: exit 7"):
        loader.load("int x;", [], [], [], timeout_s=60)


def test_the_recorder_side_never_imports_bcc():
    import subprocess
    code = ("import sys; import snapprof.record.probeset, snapprof.record.loader, "
            "snapprof.record.recorder; print('bcc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _resident_pages(path) -> int:
    """How many of the file's pages are in the page cache (mincore on a fresh mapping)."""
    libc = ct.CDLL(None, use_errno=True)
    libc.mmap.restype = ct.c_void_p
    libc.mmap.argtypes = (ct.c_void_p, ct.c_size_t, ct.c_int, ct.c_int, ct.c_int, ct.c_long)
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        pages = -(-size // mmap.PAGESIZE)
        vec = (ct.c_ubyte * pages)()
        assert libc.mincore(ct.c_void_p(addr), ct.c_size_t(size), vec) == 0
        libc.munmap(ct.c_void_p(addr), ct.c_size_t(size))
        return sum(b & 1 for b in vec)
    finally:
        os.close(fd)


def test_dropping_the_compilers_cache(tmp_path):
    hdr = tmp_path / "headers" / "include"
    hdr.mkdir(parents=True)
    lib, h, other = tmp_path / "libfake.so", hdr / "a.h", hdr / "keep.c"
    for f in (lib, h, other):
        f.write_bytes(os.urandom(64 * 1024))
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)  # clean pages, as a library's or a header's are
        os.close(fd)
        f.read_bytes()  # now cached
    if _resident_pages(h) == 0:
        pytest.skip("this file system does not keep the test files in the page cache")
    got = loader.drop_compiler_cache([str(lib), str(tmp_path / "gone.so")],
                                     [str(tmp_path / "headers"), str(tmp_path / "nothing")])
    assert isinstance(got, int)  # how the page cache changed, kB
    assert _resident_pages(lib) == 0 and _resident_pages(h) == 0  # dropped
    assert _resident_pages(other) == 16  # not a header: kept


def test_bpf_memlock_sums_maps_and_programs_from_fdinfo(tmp_path):
    (tmp_path / "3").write_text("pos:\t0\nflags:\t02000002\nmap_type:\t27\nkey_size:\t0\n"
                                "memlock:\t135168\n")
    (tmp_path / "4").write_text("pos:\t0\nmap_type:\t1\nmemlock:\t12288\n")
    (tmp_path / "5").write_text("pos:\t0\nprog_type:\t5\nprog_jited:\t1\nmemlock:\t4096\n")
    (tmp_path / "6").write_text("pos:\t0\nprog_type:\t2\nmemlock:\t8192\n")
    (tmp_path / "7").write_text("pos:\t0\nflags:\t02\n")  # not BPF: no memlock
    (tmp_path / "8").write_text("pos:\t0\nmap_type:\t1\nmemlock:\tgarbage\n")
    assert loader.bpf_memlock_kb(str(tmp_path)) == {"maps": 132 + 12, "programs": 12, "n_programs": 2}
    assert loader.bpf_memlock_kb(str(tmp_path / "missing")) is None


# -- collect(): device callbacks named through the devnames map --------------------------------
class _Ring:
    def __init__(self, records):
        self.records = list(records)

    def wait(self, timeout_ms):
        return bool(self.records)

    def consume(self, callback):
        n = len(self.records)
        for r in self.records:
            callback(r)
        self.records = []
        return n


class _Map:
    def __init__(self, entries=None):
        self.entries = dict(entries or {})
        self.lookups = []

    def lookup(self, key):
        self.lookups.append(key)
        return self.entries.get(key)

    def update(self, key, value, flags=0):
        self.entries[key] = value

    def items(self):
        return list(self.entries.items())

    def clear(self):
        self.entries.clear()


def _devcall(start, key, event=1, error=0, ops=b"bus"):
    return bytes(DevcallRecord(start=start, duration=700, key=key, error=error, event=event,
                               pid=42, pm_ops=ops))


def _devname(device, driver, parent):
    return bytes(DevnameRecord(device=device, driver=driver, parent=parent))


def test_collect_names_device_callbacks_by_key_and_counts_a_nameless_one():
    ps = ProbeSet()
    ps.loaded = object()  # attached, as far as collect() cares
    k1, k2, lost = 0x1111, 0x2222, 0x3333
    names = _Map({k1.to_bytes(8, "little"): _devname(b"0000:00:05.0", b"virtio-pci", b"pci0000:00"),
                  k2.to_bytes(8, "little"): _devname(b"card0", b"", b"none")})
    ps._rings = {"events": _Ring([]),
                 "devcalls": _Ring([_devcall(100, k1), _devcall(200, k2, error=-5, ops=b"noi"),
                                    _devcall(300, k1, event=0x20), _devcall(400, lost)])}
    ps._maps = {"tasks": _Map(), "counters": _Map(), "cycle": _Map(), "devstart": _Map(),
                "devnames": names, "stuck": _Map()}
    data = ps.collect()
    rows = [(d[0], d[1], d[2], d[3], d[5], d[7]) for d in data.devices]
    assert rows == [("0000:00:05.0", "virtio-pci", "pci0000:00", "freeze", 100, 0),
                    ("card0", None, None, "freeze", 200, -5),
                    ("0000:00:05.0", "virtio-pci", "pci0000:00", "thaw", 300, 0)]
    # no dpm_* window around them: "noi" puts the second in a noirq phase
    assert data.devices[1][4] == "suspend_noirq"
    # the callback whose key names nothing is lost, and counted as such
    assert data.counters["devcall_drops"] == 1 and data.drops == 1
    # each key is read from the map once; known names are remembered across cycles
    assert sorted(names.lookups) == sorted(k.to_bytes(8, "little") for k in (k1, k2, lost))
    ps._rings["devcalls"] = _Ring([_devcall(500, k1)])
    names.lookups.clear()
    again = ps.collect()
    assert [d[0] for d in again.devices] == ["0000:00:05.0"] and names.lookups == []
    assert again.counters["devcall_drops"] == 0 and names.entries  # never cleared


def test_collect_reads_the_stacks_of_tasks_still_refusing_and_clears_them():
    from snapprof.record.probeset import StuckRecord

    ps = ProbeSet()
    ps.loaded = object()
    ok = StuckRecord(since_t0=1_500_000_000, pass_=180, nbytes=3 * 8)
    for i, a in enumerate((0xffffffff81001000, 0xffffffff81002000, 0xffffffffc0001000)):
        ok.ips[i] = a
    failed = StuckRecord(since_t0=1_200_000_000, pass_=150, nbytes=-14)
    stuck = _Map({(273).to_bytes(4, "little"): bytes(ok), (274).to_bytes(4, "little"): bytes(failed)})
    ps._rings = {"events": _Ring([]), "devcalls": _Ring([])}
    ps._maps = {"tasks": _Map(), "counters": _Map(), "cycle": _Map(), "devstart": _Map(),
                "devnames": _Map(), "stuck": stuck}
    data = ps.collect()
    a, b = data.stuck[273], data.stuck[274]
    assert (a.pid, a.sweep, a.ms_into_freeze, a.error) == (273, 180, 1500.0, None)
    assert a.addresses == [0xffffffff81001000, 0xffffffff81002000, 0xffffffffc0001000]
    assert (b.addresses, b.error) == ([], -14)
    assert stuck.entries == {}  # per cycle
    assert ps.collect().stuck == {}
