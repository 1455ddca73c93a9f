"""Headless Chromium for the browser tests and the docs' screenshots, standard library only.

``Browser`` drives Chromium over the DevTools protocol through --remote-debugging-pipe
(fds 3/4, NUL-separated JSON); ``Tab`` is one page of it: load a file at a window size,
evaluate JavaScript, collect what the page did (console, requests, dialogs).
``screenshot`` is Chromium's own ``--screenshot`` at a window size: what a reader sees
first, the picture the README shows. The network is off for the browser when `unshare -n`
is allowed (root); the tests also emulate the page offline.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SKIP_REASON = "chromium not installed (apt-get install -y --no-install-recommends chromium)"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--force-device-scale-factor=1"]


class Browser:
    """Minimal DevTools-protocol client over --remote-debugging-pipe."""

    def __init__(self, user_data_dir: str):
        # The browser reads commands on fd 3 and answers on fd 4. Pipe ends are first moved
        # above fd 10 so bash's redirections cannot clobber one another.
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        child_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
        child_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.close(to_child_r)
        os.close(from_child_w)
        cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe",
               "about:blank"]
        self.netns = can_unshare()
        if self.netns:
            cmd = ["unshare", "-n", "--"] + cmd
        shell = ["bash", "-c", f'exec "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-',
                 "bash", *cmd]
        self.proc = subprocess.Popen(shell, pass_fds=(child_r, child_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(child_r)
        os.close(child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._id += 1
        my_id = self._id
        msg = {"id": my_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == my_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._note(reply)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while True:
            ev = self._read(deadline)
            self._note(ev)
            if ev.get("method") == method:
                return ev

    def _note(self, msg: dict) -> None:
        """Keep an event; dismiss a JavaScript dialog at once (it would block the page)."""
        if "method" not in msg:
            return  # the answer to a command sent without waiting
        self.events.append(msg)
        if msg["method"] == "Page.javascriptDialogOpening":
            self._id += 1
            cmd = {"id": self._id, "method": "Page.handleJavaScriptDialog",
                   "params": {"accept": False}, "sessionId": msg.get("sessionId")}
            os.write(self._to_child, json.dumps(cmd).encode() + b"\0")

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)


def can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


class Tab:
    """One page of a ``Browser``: ``load`` a URL at a window size, ``js`` to evaluate."""

    def __init__(self, browser: Browser, offline: bool = True):
        self.b = browser
        targets = browser.send("Target.getTargets")["targetInfos"]
        target = next(t for t in targets if t["type"] == "page")
        self.s = browser.send("Target.attachToTarget", {"targetId": target["targetId"],
                                                        "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=self.s)
        if offline:
            browser.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                         "downloadThroughput": -1, "uploadThroughput": -1}, session=self.s)

    def size(self, width: int, height: int) -> None:
        """The window's size in CSS pixels (scale 1, a desktop page)."""
        self.b.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                    "deviceScaleFactor": 1, "mobile": False}, session=self.s)

    def load(self, url: str, width: int = 1280, height: int = 900, settle: float = 0.3) -> None:
        self.size(width, height)
        self.b.events.clear()
        self.b.send("Page.navigate", {"url": url}, session=self.s)
        self.b.wait_event("Page.loadEventFired")
        time.sleep(settle)  # let late console messages or requests arrive

    def js(self, expr: str):
        res = self.b.send("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                          session=self.s)
        if "exceptionDetails" in res:
            raise RuntimeError(f"javascript failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def png(self) -> bytes:
        import base64

        shot = self.b.send("Page.captureScreenshot", {"format": "png"}, session=self.s)
        return base64.b64decode(shot["data"])


def screenshot(url: str, png: Path, width: int = 1280, height: int = 900,
               timeout: float = 120.0) -> Path:
    """Chromium's own ``--screenshot`` of ``url`` in a ``width`` x ``height`` window: the
    first screen as a reader sees it. Raises when Chromium writes no PNG."""
    png = Path(png).resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="snapprof-chromium-") as profile:
        cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={width},{height}", url]
        if can_unshare():
            cmd = ["unshare", "-n", "--"] + cmd
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    if not png.exists() or png.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise RuntimeError(f"chromium wrote no screenshot (exit {res.returncode}): "
                           f"{res.stderr.strip()[-500:]}")
    return png
