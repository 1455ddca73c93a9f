"""Other snapprof recorders on this machine (a user's `snapprof record` beside the
`snapprof service` one): each running recorder leaves a note in /run/snapprof, and a new one
names the others that are still alive. Both go on recording; the note only says so.
Standard library only."""

from __future__ import annotations

import json
import os

RUN_DIR = "/run/snapprof"


def _note_path(pid: int) -> str:
    return os.path.join(RUN_DIR, f"recorder-{pid}.json")


def _alive_recorder(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"snapprof" in f.read()
    except OSError:
        return False


def announce(output: str, trigger: str) -> list[str]:
    """Leave this recorder's note; return a line for each other live recorder."""
    out = []
    try:
        names = os.listdir(RUN_DIR)
    except OSError:
        names = []
    for name in sorted(names):
        if not (name.startswith("recorder-") and name.endswith(".json")):
            continue
        try:
            pid = int(name[len("recorder-"):-len(".json")])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        if not _alive_recorder(pid):
            try:
                os.unlink(os.path.join(RUN_DIR, name))  # a recorder that died without withdrawing
            except OSError:
                pass
            continue
        try:
            with open(os.path.join(RUN_DIR, name), encoding="utf-8") as f:
                note = json.load(f)
            out.append(f"pid {pid}: --trigger {note.get('trigger')} into {note.get('output')}")
        except (OSError, ValueError, AttributeError):
            out.append(f"pid {pid}")
    try:
        os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
        with open(_note_path(os.getpid()), "w", encoding="utf-8") as f:
            json.dump({"output": os.path.abspath(output), "trigger": trigger}, f)
    except OSError:
        pass  # best effort: the note is a courtesy to the next recorder
    return out


def withdraw() -> None:
    try:
        os.unlink(_note_path(os.getpid()))
    except OSError:
        pass
