"""The clock of a fleet host, as `verify` sees it: which time sync service runs, whether the system
says it is synchronised, and how far this clock is from a fleet endpoint's.

A fleet cuts time into slices from the Unix epoch (docs/fleet.md), so its hosts must agree on the
time within a second or two. Nothing here fails by itself: the caller decides what a missing
service or a large offset means.

It runs as root. The Hermes user can start a process named like a time daemon, so a process of
that user's uid (root aside) is not taken for the service. The tools run are looked up on the
system's own directories only, never on a PATH the Hermes user could have shaped, each with a
timeout. The endpoint's answer is read up to the end of its headers, bounded in bytes and time;
no credentials are sent (any answer has a Date). Its URL may come from the Hermes user's
model.base_url, as the pass reads it: that user's own passes make the same request every minute.
A URL that does not parse (a port of letters, an unclosed [) is a reason for no offset, as the
pass's probe takes it for a bad URL, never an exception.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from . import endpoint as endpoints

# The name in /proc/<pid>/comm (at most 15 characters) of each time sync daemon. ntpsec and
# OpenNTPD both run as `ntpd`.
SERVICES = {
    "systemd-timesyn": "systemd-timesyncd",
    "chronyd": "chronyd",
    "ntpd": "ntpd",
    "ntpsec": "ntpd",
    "openntpd": "openntpd",
}
SERVICE_NAMES = "systemd-timesyncd, chronyd, ntpd (ntpsec) or openntpd"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
COMMAND_TIMEOUT = 5
OUTPUT_LIMIT = 16 << 10
HEADER_LIMIT = 64 << 10
# A Date header says whole seconds: an offset below this is within what it can tell.
OFFSET_WARNING = 2.0
_CHRONY_OFFSET = re.compile(r"^System time\s*:\s*([0-9.]+) seconds (fast|slow) of NTP time", re.M)
_CHRONY_LEAP = re.compile(r"^Leap status\s*:\s*(.+)$", re.M)


@dataclass
class EndpointTime:
    endpoint: str
    url: str  # as shown: no credentials
    offset_seconds: float | None = None  # the endpoint's clock minus ours; None: no Date read
    uncertainty_seconds: float | None = None  # half a second of the Date's rounding, half the round trip
    error: str = ""  # why there is no offset


@dataclass
class Clock:
    services: list[str] = field(default_factory=list)  # the time sync daemons running
    synchronised: bool | None = None  # None: nothing could say
    synchronised_from: str = ""  # timedatectl or chronyc
    offset_seconds: float | None = None  # what the service reports (chronyc), ours minus true time
    notes: list[str] = field(default_factory=list)  # what could not be read, and why
    endpoints: list[EndpointTime] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def services(proc: str = "/proc", hostile_uids: frozenset[int] = frozenset()) -> list[str]:
    """The time sync daemons that run, by process name; a process of a hostile uid is none."""
    found = set()
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            with open(f"{proc}/{pid}/comm", "rb") as handle:
                name = handle.read(64).decode("utf-8", "replace").strip()
            if name not in SERVICES:
                continue
            uid = os.stat(f"{proc}/{pid}").st_uid
        except OSError:
            continue  # gone meanwhile
        if uid != 0 and uid in hostile_uids:
            continue
        found.add(SERVICES[name])
    return sorted(found)


def _run(tool: str, *args: str) -> tuple[str | None, str]:
    """(its output, "") when a system tool ran and exited 0; (None, why) otherwise."""
    binary = shutil.which(tool, path=SYSTEM_PATH)
    if binary is None:
        return None, ""  # not installed: nothing to say
    try:
        result = subprocess.run(
            [binary, *args],
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
            env={"PATH": SYSTEM_PATH, "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{tool} {' '.join(args)}: {exc}"
    if result.returncode != 0:
        error = result.stderr[:OUTPUT_LIMIT].decode("utf-8", "replace").strip().splitlines()
        return None, f"{tool} {' '.join(args)} exited {result.returncode}" + (
            f": {error[0][:200]}" if error else ""
        )
    return result.stdout[:OUTPUT_LIMIT].decode("utf-8", "replace"), ""


def _synchronised(clock: Clock) -> None:
    """What timedatectl and chronyc say, where they are installed and answer."""
    answer, why = _run("timedatectl", "show", "-p", "NTPSynchronized", "--value")
    if answer is not None and answer.strip() in ("yes", "no"):
        clock.synchronised, clock.synchronised_from = answer.strip() == "yes", "timedatectl"
    elif why:
        clock.notes.append(why)
    answer, why = _run("chronyc", "-n", "tracking")
    if answer is None:
        clock.notes += [why] if why else []
        return
    offset, leap = _CHRONY_OFFSET.search(answer), _CHRONY_LEAP.search(answer)
    if offset:
        seconds = float(offset.group(1))
        clock.offset_seconds = seconds if offset.group(2) == "fast" else -seconds
    if leap and clock.synchronised is None:
        clock.synchronised = leap.group(1).strip() != "Not synchronised"
        clock.synchronised_from = "chronyc"


class NoDate(Exception):
    """The endpoint gave no Date header: the message says why."""


# Fixed words, as the pass's probe says it: the URL may be the Hermes user's, and is shown beside.
BAD_URL = "bad URL: needs http(s)://, a host, a numeric port"


def _target(url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port as written or None, the server root's path) of a base URL; NoDate when it
    is not an http(s) URL with a host and a numeric port (an unclosed [, a port of letters)."""
    try:
        parts = urlsplit(endpoints.root_url(url))
        port = parts.port
    except ValueError:
        raise NoDate(BAD_URL) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NoDate(BAD_URL)
    return parts.scheme, parts.hostname, port, parts.path


def _connect(scheme: str, host: str, port: int | None, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port or (443 if scheme == "https" else 80)), timeout=timeout)
    if scheme == "https":
        return ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    return sock


def endpoint_date(url: str, timeout: float) -> tuple[float, float, float]:
    """(the endpoint's Date, when our request went, when its answer began), all epoch seconds, from
    one GET of {root}/v1/models (any answer has a Date, even 401 or 404). NoDate says why not."""
    scheme, host, port, path = _target(url)
    deadline = time.monotonic() + timeout
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port else ""
    request = (
        f"GET {path.rstrip('/')}/v1/models HTTP/1.1\r\nHost: {netloc}\r\n"
        "User-Agent: hermes-pacer\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii", "replace")
    try:
        with _connect(scheme, host, port, timeout) as sock:
            sent = time.time()
            sock.sendall(request)
            head, began = b"", None
            while b"\r\n\r\n" not in head and len(head) < HEADER_LIMIT:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                began = began or time.time()
                head += chunk
    except Exception as error:  # every failure is a finding, never a traceback
        raise NoDate(endpoints._failure(error)) from None
    if began is None:
        raise NoDate("connection closed without an answer")
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        raise NoDate("not an HTTP answer")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "date":
            try:
                return parsedate_to_datetime(value.strip()).timestamp(), sent, began
            except (TypeError, ValueError, IndexError):
                raise NoDate(f"its Date header is not a date: {value.strip()[:60]!r}") from None
    raise NoDate(f"its answer ({lines[0][:40]}) has no Date header")


def endpoint_offset(name: str, url: str, shown: str, timeout: float) -> EndpointTime:
    """The endpoint's clock minus ours, read at the midpoint of the request. A Date is whole
    seconds, cut down: the endpoint's time was half a second past it on average."""
    try:
        date, sent, began = endpoint_date(url, timeout)
    except NoDate as exc:
        return EndpointTime(name, shown, error=str(exc))
    middle = (sent + began) / 2
    return EndpointTime(
        name,
        shown,
        offset_seconds=round(date + 0.5 - middle, 2),
        uncertainty_seconds=round(0.5 + (began - sent) / 2, 2),
    )


def read(
    fleet_endpoints: list[tuple[str, str, str, float]],
    proc: str = "/proc",
    hostile_uids: frozenset[int] = frozenset(),
) -> Clock:
    """The clock of a fleet host; `fleet_endpoints`: (name, url, url as shown, timeout) of each
    fleet endpoint whose url is known."""
    clock = Clock(services=services(proc, hostile_uids))
    _synchronised(clock)
    clock.endpoints = [endpoint_offset(*item) for item in fleet_endpoints]
    return clock
