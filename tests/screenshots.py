"""The docs' pictures of what a reader sees first: a report and a comparison at 1280x900 in
headless Chromium, made from the real lab captures in tests/data with the commands a user
runs (`snapprof report`, `snapprof compare -o compare.html`).

    ./scripts/screenshots [DIR]        # writes DIR (default docs/img)/report-first-screen.png, ...
    python tests/screenshots.py [DIR]  # the same

tests/test_report_browser.py makes the same pictures on every run, into a temporary folder,
and writes them into docs/img only when SNAPPROF_WRITE_SCREENSHOTS=1.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from chromium import screenshot

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
DOCS_IMG = ROOT / "docs" / "img"
WIDTH, HEIGHT = 1280, 900
#: the report's picture: trixie's 6.12 kernel, 3 /dev/snapshot cycles
REPORT_CAPTURE = DATA / "trixie-6.12-snapshot.snap"
#: the comparison's picture: 6.1 (bookworm) against 6.12 (trixie), the captures as recorded
COMPARE_CAPTURES = (DATA / "bookworm-6.1-snapshot.snap", DATA / "trixie-6.12-snapshot.snap")
NAMES = {"report": "report-first-screen.png", "compare": "compare-first-screen.png"}
ENV_WRITE = "SNAPPROF_WRITE_SCREENSHOTS"


def snapprof(*args) -> None:
    res = subprocess.run([sys.executable, "-m", "snapprof", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"snapprof {args[0]} failed ({res.returncode}): {res.stderr.strip()}")


def pages(work: Path) -> dict[str, Path]:
    """The two pages, written into ``work`` by the snapprof commands."""
    report, compare = work / "report.html", work / "compare.html"
    snapprof("report", REPORT_CAPTURE, "-o", report, "--force")
    snapprof("compare", *COMPARE_CAPTURES, "-o", compare, "--force")
    return {"report": report, "compare": compare}


def make(out_dir: Path, work: Path | None = None) -> dict[str, Path]:
    """Both pictures into ``out_dir`` (the pages are written to ``work``, or a temporary
    folder); returns {"report": png, "compare": png}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="snapprof-pages-") as tmp:
        found = pages(Path(work or tmp))
        return {k: screenshot(p.resolve().as_uri(), out_dir / NAMES[k], WIDTH, HEIGHT)
                for k, p in found.items()}


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DOCS_IMG
    for png in make(out).values():
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
