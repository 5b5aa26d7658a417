"""Prometheus' own tools from Debian's `prometheus` package, unpacked into the cache, not installed.

Installing the package would start a Prometheus server on the host; unpacking it gives `promtool`
(rule tests, textfile checks) and the server binary without running anything. The package comes
from the host's apt sources (`apt-get download`), so it is the release Debian ships. Done once per
cache, under a lock; an interrupted unpack is redone.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from pathlib import Path

from hermes_install import cache_dir

PACKAGE = "prometheus"


class Unavailable(RuntimeError):
    """The package cannot be fetched here (no apt, no network): the caller skips, naming why."""


def _folder() -> Path:
    return cache_dir() / "prometheus"


def tool(name: str) -> Path:
    """Path of /usr/bin/<name> of Debian's prometheus package (promtool, prometheus)."""
    folder = _folder()
    marker = folder / ".unpacked"
    if not marker.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / "prometheus.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not marker.exists():
                _unpack(folder)
    return folder / "usr" / "bin" / name


def _unpack(folder: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise Unavailable("apt-get and dpkg-deb are needed to fetch Debian's prometheus package")
    shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory() as download:
        if _download(download).returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            result = _download(download)
            if result.returncode != 0:
                raise Unavailable(f"apt-get download {PACKAGE} failed: {result.stderr.strip()[-400:]}")
        deb = next(Path(download).glob(f"{PACKAGE}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(folder)], check=True)
    (folder / ".unpacked").write_text(deb.name)


def _download(folder: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["apt-get", "download", "-qq", PACKAGE], cwd=folder, capture_output=True, text=True, timeout=600
    )
