"""Where a kernel struct's fields lie, read from the kernel's own BTF (standard library).

The probes read five fields of ``struct task_struct``. Taking that struct from
``<linux/sched.h>`` costs bcc 17-20 s of every compile under the lab's emulation (most of a
recorder's start), while the running kernel describes its own layout in
/sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF). ``struct_fields()`` reads that description:
the byte offset and size of each field asked for, following anonymous structs and unions
as the compiler does. Nothing is guessed: a field that is missing, a bitfield, or a blob
that does not parse raises BtfError with one line saying why, and the caller falls back to
the header.

Format: include/uapi/linux/btf.h and Documentation/bpf/btf.rst (a header, then the type
section, then the string section; type ids count from 1, id 0 is void).
"""

from __future__ import annotations

import array
import struct
from dataclasses import dataclass
from typing import Iterable

MAGIC = 0xEB9F
HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off/len, str_off/len

# kinds (BTF_KIND_*) and the bytes each adds after its 12-byte common part (per vlen where
# the second figure is set)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_EXTRA = {INT: (4, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8),
          FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12), DECL_TAG: (4, 0), ENUM64: (0, 12)}
for _k in (PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG):
    _EXTRA[_k] = (0, 0)
_SIZED = {INT, STRUCT, UNION, ENUM, FLOAT, ENUM64}
_ALIASES = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}
POINTER_SIZE = 8  # every architecture snapprof supports (x86-64)
MAX_NESTING = 8   # anonymous members inside anonymous members: real kernels use 2-3


class BtfError(ValueError):
    """The BTF cannot give the layout asked for (one line)."""


@dataclass(frozen=True)
class Field:
    offset: int  # bytes from the start of the struct
    size: int    # bytes


class _Types:
    def __init__(self, blob: bytes):
        if len(blob) < HEADER.size:
            raise BtfError("BTF shorter than its header")
        fmt = "<"
        magic = struct.unpack_from("<H", blob)[0]
        if magic != MAGIC:
            if struct.unpack_from(">H", blob)[0] != MAGIC:
                raise BtfError("not BTF (bad magic)")
            fmt = ">"
        self.fmt = fmt
        _m, version, _f, hdr_len, type_off, type_len, str_off, str_len = \
            struct.unpack_from(fmt + HEADER.format[1:], blob)
        if version != 1:
            raise BtfError(f"BTF version {version} (this reader knows 1)")
        if hdr_len < HEADER.size or hdr_len > len(blob):
            raise BtfError("BTF header length out of range")
        self.types = memoryview(blob)[hdr_len + type_off: hdr_len + type_off + type_len]
        self.strings = blob[hdr_len + str_off: hdr_len + str_off + str_len]
        if len(self.types) != type_len or len(self.strings) != str_len:
            raise BtfError("BTF sections run past the end of the file")
        self.starts = self._index()

    def _index(self) -> array.array:
        """Byte offset of each type in the type section, by id (index 0: void). An array,
        not a list: the recorder's memory is in the image, and a list of 150,000 ints would
        leave a megabyte of the allocator's arenas behind."""
        starts = array.array("L", [0])
        head = struct.Struct(self.fmt + "III")
        types, end, pos = self.types, len(self.types), 0
        extra = _EXTRA
        while pos < end:
            if pos + 12 > end:
                raise BtfError("BTF type section ends inside a type")
            info = head.unpack_from(types, pos)[1]
            kind = (info >> 24) & 0x1F
            fixed, per = extra.get(kind, (None, None))
            if fixed is None:
                raise BtfError(f"BTF type {len(starts)} has unknown kind {kind}")
            starts.append(pos)
            pos += 12 + fixed + per * (info & 0xFFFF)
        if pos != end:
            raise BtfError("BTF type section ends inside a type")
        return starts

    def name(self, off: int) -> str:
        if off >= len(self.strings):
            raise BtfError("BTF name offset out of range")
        end = self.strings.find(b"\0", off)
        if end < 0:
            raise BtfError("BTF name not terminated")
        return self.strings[off:end].decode("ascii", "replace")

    def head(self, tid: int) -> tuple[int, int, int, bool, int, int]:
        """(name_off, kind, vlen, kind_flag, size_or_type, offset of what follows)."""
        if not 0 < tid < len(self.starts):
            raise BtfError(f"BTF type id {tid} out of range")
        pos = self.starts[tid]
        name_off, info, st = struct.unpack_from(self.fmt + "III", self.types, pos)
        return name_off, (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31), st, pos + 12

    def find(self, kind: int, name: str) -> int:
        want = name.encode("ascii")
        strings = self.strings
        for tid in range(1, len(self.starts)):
            name_off, k, *_ = self.head(tid)
            if k == kind and strings.startswith(want, name_off) \
                    and strings[name_off + len(want): name_off + len(want) + 1] == b"\0":
                return tid
        raise BtfError(f"no struct {name} in the kernel's BTF")

    def size(self, tid: int, depth: int = 0) -> int:
        if depth > 32:
            raise BtfError("BTF type chain too long")
        _n, kind, _v, _kf, st, after = self.head(tid)
        if kind in _SIZED:
            return st
        if kind == PTR:
            return POINTER_SIZE
        if kind in _ALIASES:
            return self.size(st, depth + 1)
        if kind == ARRAY:
            elem, _index, nelems = struct.unpack_from(self.fmt + "III", self.types, after)
            return nelems * self.size(elem, depth + 1)
        raise BtfError(f"BTF type {tid} (kind {kind}) has no size")

    def members(self, tid: int):
        """(name, type id, bit offset, bitfield size or 0) of a struct or union."""
        _n, kind, vlen, kflag, _st, after = self.head(tid)
        if kind not in (STRUCT, UNION):
            raise BtfError(f"BTF type {tid} is not a struct or union")
        for i in range(vlen):
            name_off, mtype, off = struct.unpack_from(self.fmt + "III", self.types, after + 12 * i)
            bits = (off >> 24) if kflag else 0
            yield self.name(name_off), mtype, (off & 0xFFFFFF) if kflag else off, bits

    def strip(self, tid: int, depth: int = 0) -> int:
        """tid without typedefs and qualifiers."""
        if depth > 32:
            raise BtfError("BTF type chain too long")
        _n, kind, _v, _kf, st, _a = self.head(tid)
        return self.strip(st, depth + 1) if kind in _ALIASES else tid

    def collect(self, tid: int, base_bits: int, want: set[str], out: dict, depth: int = 0):
        if depth > MAX_NESTING:
            raise BtfError("BTF anonymous members nested too deep")
        for name, mtype, bit_off, bits in self.members(tid):
            bit = base_bits + bit_off
            if not name:  # anonymous struct or union: its fields are the outer struct's
                inner = self.strip(mtype)
                if self.head(inner)[1] in (STRUCT, UNION):
                    self.collect(inner, bit, want, out, depth + 1)
                continue
            if name not in want or name in out:
                continue
            if bits or bit % 8:
                raise BtfError(f"field {name} is a bitfield")
            out[name] = Field(bit // 8, self.size(mtype))


def struct_fields(blob: bytes, struct_name: str, fields: Iterable[str]) -> dict[str, Field]:
    """Offset and size of each of ``fields`` in ``struct struct_name``; BtfError if any is
    missing or the blob is not BTF."""
    types = _Types(blob)
    want = set(fields)
    out: dict[str, Field] = {}
    types.collect(types.find(STRUCT, struct_name), 0, want, out)
    missing = sorted(want - set(out))
    if missing:
        raise BtfError(f"struct {struct_name} has no {', '.join(missing)} in the kernel's BTF")
    return out
