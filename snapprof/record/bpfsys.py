"""BPF maps and ring buffers from their file descriptors, with the standard library only.

The recorder compiles its probes in a short-lived child process (snapprof/record/loader.py)
so that LLVM's memory is gone before the first cycle: the recorder's memory is part of the
image it measures. What stays in the recorder is a handful of file descriptors — the maps
and the perf events that hold the attached programs — and this module reads them:

    m = Map(fd, key_size=4, value_size=8, max_entries=4)   # bpf(2) lookup/update/delete
    m.lookup(key_bytes) -> bytes | None; m.update(k, v); m.delete(k); m.keys(); m.clear()
    rb = RingBuffer(fd, size)          # BPF_MAP_TYPE_RINGBUF, mmap()ed as libbpf does
    rb.consume(callback) -> records    # callback(bytes) per record; discarded ones skipped

Ring buffer layout (kernel/bpf/ringbuf.c): page 0 is the consumer position (read-write);
from page 1 the producer position, then the data area mapped twice in a row so that a
record that wraps reads as one piece. Each record has an 8-byte header: length with
BUSY (bit 31) and DISCARD (bit 30) flags, then the page offset; records are 8-aligned.
"""

from __future__ import annotations

import ctypes as ct
import errno
import mmap
import os
import platform
import select
import struct

__all__ = ["BpfError", "Map", "RingBuffer", "map_info"]

_NR_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 1, 2, 3, 4
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_ANY = 0
RINGBUF_BUSY = 1 << 31
RINGBUF_DISCARD = 1 << 30
RINGBUF_HDR = 8

_libc = None


class BpfError(OSError):
    pass


def _sys_bpf(cmd: int, attr: ct.Structure) -> int:
    global _libc
    if _libc is None:
        _libc = ct.CDLL(None, use_errno=True)
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise BpfError(errno.ENOSYS, f"bpf(2) syscall number unknown on {platform.machine()}")
    ret = _libc.syscall(ct.c_long(nr), ct.c_int(cmd), ct.byref(attr), ct.c_uint(ct.sizeof(attr)))
    if ret < 0:
        err = ct.get_errno()
        raise BpfError(err, os.strerror(err))
    return ret


class _ElemAttr(ct.Structure):
    _fields_ = [("map_fd", ct.c_uint32), ("pad", ct.c_uint32), ("key", ct.c_uint64),
                ("value", ct.c_uint64), ("flags", ct.c_uint64)]


class _InfoAttr(ct.Structure):
    _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]


class _MapInfo(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * 16)]


def map_info(fd: int) -> dict:
    """type, id, key_size, value_size, max_entries, map_flags, name of a map fd."""
    info = _MapInfo()
    attr = _InfoAttr(fd, ct.sizeof(info), ct.addressof(info))
    _sys_bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return {"type": info.type, "id": info.id, "key_size": info.key_size,
            "value_size": info.value_size, "max_entries": info.max_entries,
            "map_flags": info.map_flags, "name": info.name.decode("ascii", "replace")}


class Map:
    """A hash or array map: keys and values are bytes of the map's sizes."""

    def __init__(self, fd: int, key_size: int, value_size: int, max_entries: int = 0):
        self.fd, self.key_size, self.value_size = fd, key_size, value_size
        self.max_entries = max_entries

    def _attr(self, key, value=None, flags=0) -> _ElemAttr:
        return _ElemAttr(self.fd, 0, ct.addressof(key) if key is not None else 0,
                         ct.addressof(value) if value is not None else 0, flags)

    def _key(self, key: bytes):
        if len(key) != self.key_size:
            raise ValueError(f"key of {len(key)} bytes, the map's are {self.key_size}")
        return ct.create_string_buffer(key, self.key_size)

    def lookup(self, key: bytes) -> bytes | None:
        k, v = self._key(key), ct.create_string_buffer(self.value_size)
        try:
            _sys_bpf(BPF_MAP_LOOKUP_ELEM, self._attr(k, v))
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return v.raw

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"value of {len(value)} bytes, the map's are {self.value_size}")
        k, v = self._key(key), ct.create_string_buffer(value, self.value_size)
        _sys_bpf(BPF_MAP_UPDATE_ELEM, self._attr(k, v, flags))

    def delete(self, key: bytes) -> bool:
        k = self._key(key)  # held: the attribute only has its address
        try:
            _sys_bpf(BPF_MAP_DELETE_ELEM, self._attr(k))
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def keys(self) -> list[bytes]:
        out: list[bytes] = []
        nxt = ct.create_string_buffer(self.key_size)
        cur = None
        while True:
            try:
                _sys_bpf(BPF_MAP_GET_NEXT_KEY, self._attr(cur, nxt))
            except BpfError as exc:
                if exc.errno == errno.ENOENT:
                    return out
                raise
            out.append(nxt.raw)
            cur = ct.create_string_buffer(nxt.raw, self.key_size)

    def items(self) -> list[tuple[bytes, bytes]]:
        out = []
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:  # deleted meanwhile
                out.append((k, v))
        return out

    def clear(self) -> None:
        """Hash maps: delete every entry. Arrays (delete gives EINVAL): zero every value."""
        zero = bytes(self.value_size)
        for k in self.keys():
            try:
                self.delete(k)
            except BpfError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.update(k, zero)


class RingBuffer:
    """The consumer side of a BPF_MAP_TYPE_RINGBUF, as libbpf's ring_buffer__consume()."""

    def __init__(self, fd: int, size: int):
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        self.fd, self.size, self.mask = fd, size, size - 1
        page = mmap.PAGESIZE
        self.page = page
        self.cons = mmap.mmap(fd, page, flags=mmap.MAP_SHARED,
                              prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self.prod = mmap.mmap(fd, page + 2 * size, flags=mmap.MAP_SHARED,
                                  prot=mmap.PROT_READ, offset=page)
        except BaseException:
            self.cons.close()
            raise

    def wait(self, timeout_ms: int) -> bool:
        """Wait until data is available (or timeout); True when there is some."""
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        return bool(p.poll(timeout_ms))

    def consume(self, callback) -> int:
        """Hand every committed record to callback(bytes), advance the consumer position;
        return how many records were handed over."""
        return consume(self.cons, self.prod, self.page, self.mask, callback)

    def close(self) -> None:
        for m in (self.prod, self.cons):
            try:
                m.close()
            except (BufferError, ValueError):
                pass


_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def consume(cons, prod, data_off: int, mask: int, callback) -> int:
    """The consumer loop over two buffers laid out like the kernel's mappings: cons[0:8] is
    the consumer position, prod[0:8] the producer position, prod[data_off:] the data area
    (mapped twice in a row). Separate from RingBuffer so it can be tested without a kernel."""
    n = 0
    cons_pos = _U64.unpack_from(cons, 0)[0]
    while True:
        prod_pos = _U64.unpack_from(prod, 0)[0]
        if cons_pos >= prod_pos:
            break
        while cons_pos < prod_pos:
            off = data_off + (cons_pos & mask)
            length = _U32.unpack_from(prod, off)[0]
            if length & RINGBUF_BUSY:
                _U64.pack_into(cons, 0, cons_pos)
                return n
            real = length & ~(RINGBUF_BUSY | RINGBUF_DISCARD)
            if not length & RINGBUF_DISCARD:
                callback(bytes(prod[off + RINGBUF_HDR: off + RINGBUF_HDR + real]))
                n += 1
            cons_pos += (real + RINGBUF_HDR + 7) & ~7
            _U64.pack_into(cons, 0, cons_pos)
    return n
