"""Pinned hermes-agent releases in virtualenvs of their own, cached between runs.

The cache lives in $HERMES_PACER_CACHE (default ~/.cache/hermes-pacer). A virtualenv counts only
once its marker is written, so an interrupted install is redone, never half-used.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

# The oldest release the project supports (no native caps) and the newest.
VERSIONS = ("0.14.0", "0.19.0")


def cache_dir() -> Path:
    return Path(os.environ.get("HERMES_PACER_CACHE") or Path.home() / ".cache" / "hermes-pacer")


def versions() -> tuple[str, ...]:
    """The releases to test: all pinned ones, or those named in HERMES_VERSIONS (comma-separated)."""
    chosen = os.environ.get("HERMES_VERSIONS", "").strip()
    return tuple(v.strip() for v in chosen.split(",") if v.strip()) if chosen else VERSIONS


def newest() -> str:
    """The newest release of those to test: for tests of the pacer's own logic, which reads Hermes
    through the same CLI calls the per-release tests prove on every release."""
    return max(versions(), key=lambda v: tuple(int(part) for part in v.split(".")))


def ensure(version: str) -> Path:
    """Path of the `hermes` executable of `version`, installing it first when needed."""
    venv = cache_dir() / f"hermes-{version}"
    marker = venv / ".installed"
    if marker.exists():
        return venv / "bin" / "hermes"
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / f"hermes-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            shutil.rmtree(venv, ignore_errors=True)
            print(f"installing hermes-agent=={version} into {venv}", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [
                    str(venv / "bin" / "pip"),
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    f"hermes-agent=={version}",
                ],
                check=True,
            )
            marker.write_text(version + "\n")
    return venv / "bin" / "hermes"


if __name__ == "__main__":
    for release in sys.argv[1:] or versions():
        print(ensure(release))
