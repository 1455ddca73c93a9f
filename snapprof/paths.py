"""Where snapprof's data files live, in a source tree and in an installed wheel."""

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    # Source tree (and editable installs): probes/ and reports/ beside the package.
    tree = _PKG.parent / name
    if tree.is_dir():
        return tree
    # Wheel: force-included as snapprof/_probes and snapprof/_reports.
    return _PKG / f"_{name}"


def probes_dir() -> Path:
    return _find("probes")


def reports_dir() -> Path:
    return _find("reports")


def project_root() -> Path:
    """The source tree holding this package (used by the lab to share it with guests)."""
    return _PKG.parent
