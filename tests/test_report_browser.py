"""The HTML report in headless Chromium, network off: no console error, no request beyond the
file itself, every section present, hostile task/device names shown as text and never run.

Two pages: the real 6.12 lab capture with its slowest task and device renamed to
``<script>alert(1)</script>``, and the synthetic capture with a failed and an incomplete run.

Chromium is driven over the DevTools protocol through --remote-debugging-pipe (fds 3/4,
NUL-separated JSON), standard library only. The network is off twice over: Chromium runs in
a new network namespace when `unshare -n` is allowed (root), and the page is emulated
offline. A screenshot of the whole page is saved (set SNAPPROF_SCREENSHOT_DIR to keep it).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from report_fixtures import HOSTILE, copy_with_hostile_names, write_capture
from snapprof.analysis.frames import load_capture
from snapprof.report.html import render_html
from snapprof.report.model import build_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECTIONS = ["header", "headline", "problems", "timeline", "runs", "time", "freezer", "memory",
            "devices", "io", "kernel-log", "details"]
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                                "(apt-get install -y --no-install-recommends chromium)")


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
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe",
               "about:blank"]
        self.netns = _can_unshare()
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


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


REAL = Path(__file__).parent / "data" / "trixie-6.12-snapshot.snap"


@pytest.fixture(scope="module", params=["real-6.12", "fixture-failed-incomplete"])
def page(request, tmp_path_factory):
    """Load a report in Chromium; collect what the page did."""
    tmp = tmp_path_factory.mktemp("browser")
    if request.param == "real-6.12":
        if not REAL.exists():
            pytest.skip(f"{REAL} missing")
        cap = copy_with_hostile_names(REAL, tmp / "hostile.snap")
    else:
        cap = write_capture(tmp / "hostile.snap", hostile=True)
    html_path = tmp / "report.html"
    html_path.write_text(render_html(build_model(load_capture(cap))), encoding="utf-8")
    url = html_path.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="snapprof-chromium-") as profile:
        b = Browser(profile)
        try:
            targets = b.send("Target.getTargets")["targetInfos"]
            target = next(t for t in targets if t["type"] == "page")
            s = b.send("Target.attachToTarget", {"targetId": target["targetId"],
                                                 "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                b.send(f"{domain}.enable", session=s)
            b.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                   "downloadThroughput": -1, "uploadThroughput": -1}, session=s)
            b.events.clear()
            b.send("Page.navigate", {"url": url}, session=s)
            b.wait_event("Page.loadEventFired")
            time.sleep(0.5)  # let late console messages or requests arrive

            def js(expr):
                res = b.send("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                             session=s)
                return res["result"].get("value")

            found = {
                "sections": js("[...document.querySelectorAll('main > section')].map(s => s.id)"),
                "text": js("document.body.innerText"),
                "scripts": js("document.scripts.length"),
                "svgs": js("document.querySelectorAll('svg').length"),
                "height": js("document.documentElement.scrollHeight"),
            }
            b.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": found["height"],
                   "deviceScaleFactor": 1, "mobile": False}, session=s)
            shot = b.send("Page.captureScreenshot", {"format": "png"}, session=s)
            png = tmp / "report.png"
            png.write_bytes(base64.b64decode(shot["data"]))
            keep = os.environ.get("SNAPPROF_SCREENSHOT_DIR")
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(png, Path(keep) / f"report-{request.param}.png")
            found.update(events=list(b.events), url=url, png=png, netns=b.netns,
                         kind=request.param)
        finally:
            b.close()
    return found


def test_every_section_is_there(page):
    assert page["sections"] == SECTIONS
    assert page["svgs"] >= 4  # timelines, stacked phases, memory, tasks/devices


def test_no_console_error_and_no_dialog(page):
    bad = [e for e in page["events"]
           if e["method"] in ("Runtime.exceptionThrown", "Page.javascriptDialogOpening")
           or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
           or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert bad == []


def test_no_request_but_the_file_itself(page):
    urls = [e["params"]["request"]["url"] for e in page["events"]
            if e["method"] == "Network.requestWillBeSent"]
    assert urls == [page["url"]]
    assert not [e for e in page["events"] if e["method"] == "Network.loadingFailed"]


def test_hostile_names_are_text_and_run_nothing(page):
    assert HOSTILE in page["text"]  # shown literally, as text
    assert page["scripts"] == 0  # and no <script> element came out of it


def test_run_statuses_shown(page):
    if page["kind"] == "real-6.12":
        assert "3: 3 complete, 0 failed, 0 incomplete" in page["text"]
    else:  # a failed and a stopped run are shown as such, with why
        assert "5: 3 complete, 1 failed, 1 incomplete" in page["text"]
        assert "freeze_processes returned -16 (EBUSY)" in page["text"]
        assert "(no end recorded)" in page["text"]


def test_screenshot_saved(page):
    data = page["png"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
