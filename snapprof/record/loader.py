"""Compile, load and attach the probes in a short-lived child process.

Why: compiling with bcc runs clang/LLVM inside the compiling process, and glibc keeps most
of that memory afterwards — measured in the lab, a recorder that compiled in-process made
the hibernation image it measured ~40,000 pages (160 MiB) larger than one without probes.
The recorder's memory is part of the image. So the recorder starts this module as a child
(`python3 -m snapprof.record.loader FD`), sends it the program over a socket pair, and the
child compiles with bcc, attaches every hook, and sends back — with SCM_RIGHTS — the file
descriptors that keep the work alive: the maps the recorder reads, and the perf events
that hold the attached programs. Then the child exits without bcc's clean-up (os._exit),
and LLVM's memory goes with it. The recorder itself never imports bcc; it reads the maps
with snapprof/record/bpfsys.py. Closing those fds detaches everything.

    loaded = load(source, cflags, hooks, maps, timeout_s=900)
    loaded.attach_errors[(kind, target, handler)] -> one-line reason or None
    loaded.fentry_used, loaded.fentry_error   # see fentry= below
    loaded.maps["events"] -> {"fd", "key_size", "value_size", "max_entries"}
    loaded.close()                      # detaches: closes the perf events and map fds

fentry={"targets": [fn...], "defines": [macro...], "required": bool}: compile first with
those -D macros, which add fentry/fexit twins of those functions' handlers (bcc attaches
kfunc programs when it loads them), and leave those functions' kprobe/kretprobe hooks out;
if that fails, everything the failed attempt opened is closed and the plain program is
compiled and attached with kprobes, the reason in fentry_error (unless required: then the
load fails with it).

The child dies with the recorder (PR_SET_PDEATHSIG), so a killed recorder never leaves a
compiler running or probes attached.
"""

from __future__ import annotations

import ctypes as ct
import gc
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from snapprof.errors import SnapprofError, first_line

__all__ = ["Loaded", "load", "main"]

_LEN = struct.Struct("<I")
MAX_FDS = 250  # SCM_MAX_FD is 253 per message
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


@dataclass
class Loaded:
    """What the child left behind, owned by the recorder."""

    maps: dict[str, dict] = field(default_factory=dict)
    links: list[int] = field(default_factory=list)  # perf event fds holding attached programs
    attach_errors: dict[tuple, str | None] = field(default_factory=dict)
    compile_s: float = 0.0
    attach_s: float = 0.0
    loader_pid: int = 0
    loader_peak_rss_kb: int | None = None
    tracefs_events: list[str] = field(default_factory=list)
    cache_dropped_kb: int | None = None  # page cache the compile left, given back
    bpf_memlock_kb: dict | None = None  # the kernel's own accounting of the maps and programs
    fentry_used: list[str] = field(default_factory=list)  # functions hooked with fentry/fexit
    fentry_error: str | None = None  # why the fentry/fexit attempt fell back to kprobes

    def close(self) -> None:
        for fd in self.links:
            _close(fd)
        self.links = []
        for m in self.maps.values():
            if m.get("fd") is not None:
                _close(m["fd"])
                m["fd"] = None
        remove_tracefs_events(self.tracefs_events)
        self.tracefs_events = []


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def remove_tracefs_events(names: list[str]) -> None:
    """kprobe events bcc created through tracefs (only when the kprobe PMU is missing or a
    kretprobe asks for maxactive): remove them once their perf events are closed."""
    if not names:
        return
    for root in TRACEFS:
        path = os.path.join(root, "kprobe_events")
        if os.path.exists(path):
            for name in names:
                try:
                    with open(path, "a", encoding="ascii") as f:
                        f.write(f"-:{name}\n")
                except OSError:
                    pass
            return


# -- the recorder's side --------------------------------------------------------------------
def load(source: str, cflags: list[str], hooks: list[tuple], maps: list[str],
         timeout_s: float = 900.0, fentry: dict | None = None) -> Loaded:
    """Run the child, return what it attached. SnapprofError with one line if it failed."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    errlog = tempfile.TemporaryFile(mode="w+b")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "snapprof.record.loader", str(child.fileno())],
                                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=errlog, env=env)
    except OSError as exc:
        parent.close()
        child.close()
        errlog.close()
        raise SnapprofError(f"cannot start the probe loader: {exc.strerror}") from None
    child.close()
    received: list[int] = []
    try:
        parent.settimeout(timeout_s)
        _send_msg(parent, {"source": source, "cflags": cflags, "hooks": [list(h) for h in hooks],
                           "maps": maps, "fentry": fentry or {}})
        reply, received = _recv_msg(parent)
        if reply is None:
            raise SnapprofError("the probe loader died before answering: " + _tail(proc, errlog))
        if reply.get("error"):
            raise SnapprofError(reply["error"])
        parent.sendall(b"k")  # received: the child may exit now
        loaded = _loaded(reply, received)
    except socket.timeout:
        _close_all(received)
        raise SnapprofError(f"the probe loader did not finish within {timeout_s:.0f} s") from None
    except BaseException:
        _close_all(received)
        raise
    finally:
        parent.close()
        if proc.poll() is None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        errlog.close()
    loaded.loader_pid = proc.pid
    libs = drop_compiler_cache(reply.get("mapped_files", []), [])
    headers = reply.get("headers_dropped_kb")
    loaded.cache_dropped_kb = None if libs is None and headers is None else (libs or 0) + (headers or 0)
    return loaded


def _own_mapped_files() -> set[str]:
    out = set()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    out.add(parts[5].strip())
    except OSError:
        pass
    return out


def _proc_kb(path: str, key: str) -> int | None:
    """The kB figure of a "Key:  N kB" line in a /proc file (meminfo, status), or None."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cached_kb() -> int | None:
    return _proc_kb("/proc/meminfo", "Cached")


def _dontneed(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def drop_compiler_cache(mapped_files: list[str], header_dirs: list[str]) -> int | None:
    """Give back the page cache the compile filled: the compiler's libraries (those this
    process does not map itself) and the kernel headers, with POSIX_FADV_DONTNEED, which
    drops only clean pages nobody maps. The loader child drops the headers before it
    exits (walking them costs memory the recorder should not keep); the recorder drops
    the libraries once the child, which mapped them, is gone. Without this, every image taken after the compile
    carries ~100 MiB of libLLVM and headers (measured in the lab: +57 % image pages on an
    idle 2 GiB guest). Returns how much the page cache shrank (kB), or None."""
    before = _cached_kb()
    mine = _own_mapped_files()
    paths = [p for p in mapped_files if p not in mine]
    for path in paths:
        _dontneed(path)
    for d in header_dirs:  # streamed: tens of thousands of files, no list kept
        for dirpath, _dirs, files in os.walk(d):
            for n in files:
                if n.endswith(".h"):
                    _dontneed(os.path.join(dirpath, n))
    after = _cached_kb()
    return before - after if before is not None and after is not None else None


def _close_all(fds) -> None:
    for fd in fds:
        _close(fd)


def _tail(proc, errlog) -> str:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    errlog.seek(0)
    lines = [ln.strip() for ln in errlog.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    why = lines[-1] if lines else "no message"
    return f"exit {proc.returncode}: {why}"


def _loaded(reply: dict, fds: list[int]) -> Loaded:
    if len(fds) != reply.get("nfds"):
        raise SnapprofError(f"the probe loader sent {len(fds)} descriptors, expected {reply.get('nfds')}")
    maps = {}
    for name, m in reply["maps"].items():
        maps[name] = dict(m, fd=fds[m["index"]])
    links = [fds[i] for i in reply["links"]]
    errors = {tuple(k.split("|", 2)): v for k, v in reply["attach"].items()}
    return Loaded(maps=maps, links=links, attach_errors=errors, compile_s=reply["compile_s"],
                  attach_s=reply["attach_s"], loader_peak_rss_kb=reply.get("peak_rss_kb"),
                  tracefs_events=reply.get("tracefs_events", []),
                  bpf_memlock_kb=reply.get("bpf_memlock_kb"),
                  fentry_used=list(reply.get("fentry_used") or []),
                  fentry_error=reply.get("fentry_error"))


def _send_msg(sock, obj, fds=()) -> None:
    data = json.dumps(obj).encode()
    msg = _LEN.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [msg[:4096]], list(fds))
        if len(msg) > 4096:
            sock.sendall(msg[4096:])
    else:
        sock.sendall(msg)


def _recv_msg(sock) -> tuple[dict | None, list[int]]:
    buf, fds, _flags, _addr = socket.recv_fds(sock, 65536, MAX_FDS)
    if not buf:
        return None, list(fds)
    while len(buf) < 4:
        more = sock.recv(65536)
        if not more:
            return None, list(fds)
        buf += more
    (size,) = _LEN.unpack_from(buf)
    while len(buf) < 4 + size:
        more = sock.recv(65536)
        if not more:
            return None, list(fds)
        buf += more
    return json.loads(buf[4:4 + size]), list(fds)


# -- the child's side -----------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    sock = socket.socket(fileno=int(argv[0]))
    req, _ = _recv_msg(sock)
    if req is None:
        return 1
    fds: list[int] = []
    try:
        reply, fds = _compile_and_attach(req)
    except SnapprofError as exc:
        reply = {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 (any failure is one line for the recorder)
        reply = {"error": f"probe loader: {type(exc).__name__}: {first_line(str(exc))}"}
    reply["nfds"] = len(fds)
    reply["peak_rss_kb"] = _peak_rss_kb()
    if fds:
        reply["bpf_memlock_kb"] = bpf_memlock_kb()
    try:
        _send_msg(sock, reply, fds)
        sock.recv(1)  # the recorder holds the descriptors now
    except OSError:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no bcc clean-up: it would detach what the recorder now holds


def _die_with_parent() -> None:
    try:
        libc = ct.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def bpf_memlock_kb(fdinfo: str = "/proc/self/fdinfo") -> dict | None:
    """What the kernel charges for this process's BPF maps and programs (`memlock:` in each
    descriptor's fdinfo, bytes; 6.4+ measures maps, older kernels estimate them from their
    sizes): {"maps": kB, "programs": kB, "n_programs": N}, or None if it cannot be read."""
    out = {"maps": 0, "programs": 0, "n_programs": 0}
    try:
        names = os.listdir(fdinfo)
    except OSError:
        return None
    for name in names:
        fields = {}
        try:
            with open(os.path.join(fdinfo, name), encoding="ascii", errors="replace") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    fields[key] = value.strip()
        except OSError:
            continue
        if "memlock" not in fields:
            continue
        try:
            kb = int(fields["memlock"]) // 1024
        except ValueError:
            continue
        if "prog_type" in fields:
            out["programs"] += kb
            out["n_programs"] += 1
        elif "map_type" in fields:
            out["maps"] += kb
    return out


def _peak_rss_kb() -> int | None:
    return _proc_kb("/proc/self/status", "VmHWM")


def _compile_and_attach(req: dict) -> tuple[dict, list[int]]:
    try:
        import bcc  # noqa: PLC0415
    except ImportError as exc:
        raise SnapprofError(f"bcc missing ({exc}); install python3-bpfcc") from None
    t0 = time.monotonic()
    bpf, used, fentry_error = _compile_fentry_or_plain(bcc, req)
    t1 = time.monotonic()
    attach: dict[str, str | None] = {}
    for kind, target, handler, maxactive in req["hooks"]:
        key = f"{kind}|{target}|{handler}"
        if key in attach:
            continue
        if target in used and kind in ("kprobe", "kretprobe"):
            attach[key] = None  # hooked by its fentry/fexit twin, attached at load
        else:
            attach[key] = _attach_one(bpf, kind, target, handler, maxactive)
    t2 = time.monotonic()
    fds: list[int] = []
    maps = {}
    for name in req["maps"]:
        try:
            table = bpf.get_table(name)
        except KeyError:
            continue
        key_size = ct.sizeof(table.Key) if getattr(table, "Key", None) is not None else 0
        leaf_size = ct.sizeof(table.Leaf) if getattr(table, "Leaf", None) is not None else 0
        maps[name] = {"index": len(fds), "key_size": key_size, "value_size": leaf_size,
                      "max_entries": int(table.max_entries)}
        fds.append(table.map_fd)
    links = []
    for per_fn in bpf.kprobe_fds.values():
        for fd in per_fn.values():
            links.append(len(fds))
            fds.append(fd)
    for fd in bpf.tracepoint_fds.values():
        links.append(len(fds))
        fds.append(fd)
    for table in (getattr(bpf, "kfunc_entry_fds", {}), getattr(bpf, "kfunc_exit_fds", {})):
        for fd in table.values():  # the BPF links (raw tracepoint fds) holding the trampolines
            links.append(len(fds))
            fds.append(fd)
    if len(fds) > MAX_FDS:
        raise SnapprofError(f"{len(fds)} descriptors to hand over, at most {MAX_FDS}")
    reply = {"maps": maps, "links": links, "attach": attach, "compile_s": t1 - t0,
             "fentry_used": used, "fentry_error": fentry_error,
             "attach_s": t2 - t1, "tracefs_events": _our_tracefs_events(),
             "mapped_files": sorted(_own_mapped_files()),
             "headers_dropped_kb": drop_compiler_cache([], _header_dirs())}
    return reply, fds


def _open_fds() -> set[int]:
    try:
        return {int(n) for n in os.listdir("/proc/self/fd")}
    except OSError:
        return set()


def _compile_fentry_or_plain(bcc, req: dict):
    """(bpf, functions hooked by fentry/fexit, why not where asked). First with the fentry
    macros (bcc loads and attaches the kfunc programs in BPF()); if that fails, the failed
    object is collected (bcc's clean-up closes what it opened) and whatever it left open is
    closed, so no trampoline stays attached beside the kprobes that replace it."""
    fentry = req.get("fentry") or {}
    targets = list(fentry.get("targets") or [])
    if targets:
        before = _open_fds()
        try:
            bpf = _compile(bcc, req["source"], req["cflags"] + [f"-D{d}" for d in fentry["defines"]])
        except SnapprofError as exc:
            why = f"fentry/fexit failed, kprobes used: {exc}"
            if fentry.get("required"):
                raise SnapprofError(f"--freezer-probes fentry: {exc}") from None
        else:
            kfuncs = len(getattr(bpf, "kfunc_entry_fds", {})) + len(getattr(bpf, "kfunc_exit_fds", {}))
            if kfuncs:
                return bpf, targets, None
            why = "fentry/fexit programs did not attach (bcc attached no kfunc), kprobes used"
            bpf.cleanup()
            del bpf
        gc.collect()
        for fd in _open_fds() - before:
            _close(fd)
        return _compile(bcc, req["source"], req["cflags"]), [], why
    return _compile(bcc, req["source"], req["cflags"]), [], None


def _header_dirs() -> list[str]:
    """The kernel header trees clang read: /lib/modules/<release>/build and, on Debian,
    the -common tree its top-level symlinks point into."""
    build = f"/lib/modules/{os.uname().release}/build"
    if not os.path.isdir(build):
        return []
    out = {os.path.realpath(build)}
    for name in os.listdir(build):
        p = os.path.join(build, name)
        if os.path.islink(p) and os.path.isdir(p):
            out.add(os.path.dirname(os.path.realpath(p)))
    return sorted(out)


def _our_tracefs_events() -> list[str]:
    """kprobe events this process created through tracefs (bcc names them *_bcc_<pid>)."""
    suffix = f"_bcc_{os.getpid()}"
    for root in TRACEFS:
        try:
            with open(os.path.join(root, "kprobe_events"), encoding="ascii", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        out = []
        for line in lines:
            parts = line.split()
            if parts and ":" in parts[0] and parts[0].endswith(suffix):
                out.append(parts[0].split(":", 1)[1])  # group/event
        return out
    return []


def _compile(bcc, text: str, cflags: list[str]):
    """bcc.BPF(text) with the compiler's stderr captured, so a failure is one line."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as errf:
        os.dup2(errf.fileno(), 2)
        try:
            bpf = bcc.BPF(text=text, cflags=cflags)
            err = None
        except Exception as exc:  # noqa: BLE001 (bcc raises plain Exception)
            bpf, err = None, exc
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        if err is not None:
            errf.seek(0)
            log = errf.read().decode("utf-8", "replace")
            sys.stderr.write(log)
            line = next((ln for ln in log.splitlines() if "error:" in ln), first_line(str(err)))
            raise SnapprofError(f"BPF compile failed: {line.strip()}")
    return bpf


def _attach_one(bpf, kind: str, target: str, handler: str, maxactive: int) -> str | None:
    """Attach one handler; None if it worked, else a one-line reason."""
    try:
        if kind == "kprobe":
            bpf.attach_kprobe(event=target, fn_name=handler)
        elif kind == "kretprobe":
            bpf.attach_kretprobe(event=target, fn_name=handler, maxactive=maxactive)
        else:
            bpf.attach_tracepoint(tp=target, fn_name=handler)
    except Exception as exc:  # noqa: BLE001 (bcc raises plain Exception with a message)
        return f"{kind} {target}: {first_line(str(exc))}"
    return None


if __name__ == "__main__":
    sys.exit(main())
