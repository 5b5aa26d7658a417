"""Hermes' emergency stop as the pass reads it: every shape `hermes pause` or a hand leaves behind.

The rules are agent/estop.py's (Hermes 0.20+): a sentinel holds unless its `expires_at` parses and
is past; the root's ESTOP binds a profile home; nothing is hung on or read past 64 KiB.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone

import pytest
from hermes_pacer import pause

pytestmark = pytest.mark.fast

NOW = datetime(2026, 11, 30, 18, 0, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def native(tmp_path):
    """The user's ~/.hermes: the root home."""
    folder = tmp_path / ".hermes"
    folder.mkdir()
    return folder


def arm(home, body):
    path = home / "ESTOP"
    path.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
    return path


def held(home, native, now=NOW):
    return pause.paused(home, now=now, native=native)


def test_no_sentinel_is_no_pause(native):
    assert held(native, native) is None


def test_estop_path_is_in_the_home(native):
    assert pause.estop_path(native) == native / "ESTOP"


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b"null", b"\xff\xfe{", b"{" * 5000])
def test_a_sentinel_without_a_json_object_holds_forever(native, body):
    arm(native, body)
    phrase = held(native, native)
    assert phrase.startswith(str(native / "ESTOP"))
    assert "expires never" in phrase


def test_what_hermes_pause_writes_holds_and_says_since_when_and_why(native):
    arm(native, {"generation": "ab12", "engaged_at": "2026-11-30T17:00:00+00:00", "reason": "GPU swap"})
    assert held(native, native) == f"{native / 'ESTOP'} since 2026-11-30T17:00:00Z, expires never (GPU swap)"


def test_a_deadman_in_the_future_holds_until_then(native):
    arm(native, {"engaged_at": "2026-11-30T17:00:00+00:00", "expires_at": "2026-11-30T20:00:00+02:00"})
    # 20:00 at +02:00 is NOW itself: up to then the pause holds, from that instant on it is lifted
    expected = f"{native / 'ESTOP'} since 2026-11-30T17:00:00Z, expires 2026-11-30T18:00:00Z"
    assert held(native, native, NOW - 1) == expected
    assert held(native, native, NOW) is None


@pytest.mark.parametrize(
    "stamp", ["2026-11-30T17:59:59Z", "2026-11-30T17:59:59", "2026-11-30 17:59:59+00:00"]
)
def test_an_expired_sentinel_is_no_pause(native, stamp):
    arm(native, {"reason": "window", "expires_at": stamp})
    assert held(native, native) is None
    assert held(native, native, NOW - 3600) is not None


def test_a_naive_deadman_is_utc(native):
    arm(native, {"expires_at": "2026-11-30T18:30:00"})
    assert "expires 2026-11-30T18:30:00Z" in held(native, native)
    assert held(native, native, NOW + 1800) is None


@pytest.mark.parametrize(
    "stamp", ["tomorrow", "", "  ", 1798000000, None, ["2026-01-01"], "2026-13-01T00:00:00"]
)
def test_a_deadman_that_does_not_parse_never_lifts_the_pause(native, stamp):
    arm(native, {"expires_at": stamp})
    assert "expires never" in held(native, native, NOW + 10 * 365 * 86400)


def test_a_byte_order_mark_is_no_reason_to_ignore_the_deadman(native):
    arm(native, b"\xef\xbb\xbf" + json.dumps({"expires_at": "2026-11-30T17:00:00Z"}).encode())
    assert held(native, native) is None


def test_the_reason_is_printable_and_short(native):
    arm(native, {"reason": "a\nb\x1b[31m" + "x" * 500})
    phrase = held(native, native)
    assert "\n" not in phrase and "\x1b" not in phrase
    assert len(phrase) < len(str(native)) + 150


def test_the_roots_sentinel_pauses_a_profile_home(native):
    profile = native / "profiles" / "coder"
    profile.mkdir(parents=True)
    arm(native, {"reason": "fleet"})
    assert held(profile, native).startswith(str(native / "ESTOP"))


def test_a_profiles_sentinel_does_not_pause_the_root_home(native):
    profile = native / "profiles" / "coder"
    profile.mkdir(parents=True)
    arm(profile, {})
    assert held(native, native) is None
    assert held(profile, native).startswith(str(profile / "ESTOP"))


def test_a_profile_of_a_custom_root_honours_that_root(tmp_path, native):
    root = tmp_path / "opt-data"
    profile = root / "profiles" / "coder"
    profile.mkdir(parents=True)
    arm(root, {})
    assert pause.hermes_root(profile, native) == root
    assert held(profile, native).startswith(str(root / "ESTOP"))
    arm(native, {})  # another user's root is none of its business
    (root / "ESTOP").unlink()
    assert held(profile, native) is None


def test_a_custom_home_is_its_own_root(tmp_path, native):
    home = tmp_path / "srv-hermes"
    home.mkdir()
    arm(native, {})
    assert pause.hermes_root(home, native) == home
    assert held(home, native) is None


def test_an_expired_home_sentinel_does_not_hide_the_roots(native):
    profile = native / "profiles" / "coder"
    profile.mkdir(parents=True)
    arm(profile, {"expires_at": "2026-01-01T00:00:00Z"})
    arm(native, {"expires_at": "2027-01-01T00:00:00Z"})
    assert held(profile, native).startswith(str(native / "ESTOP"))


def test_the_kanban_only_pause_holds_while_it_exists(native):
    (native / "ESTOP_KANBAN").write_text(json.dumps({"reason": "boards only", "expires_at": "2026-01-01"}))
    assert held(native, native) == f"{native / 'ESTOP_KANBAN'} (boards only)"


def test_a_fifo_holds_without_hanging_the_pass(native):
    os.mkfifo(native / "ESTOP")
    result = []
    reader = threading.Thread(target=lambda: result.append(held(native, native)), daemon=True)
    reader.start()
    reader.join(10)
    assert result and "not a regular file" in result[0] and "held" in result[0]


@pytest.mark.parametrize("shape", ["directory", "device", "dangling link", "link loop", "too large"])
def test_a_sentinel_that_cannot_be_read_holds(native, shape):
    path = native / "ESTOP"
    if shape == "directory":
        path.mkdir()
    elif shape == "device":
        path.symlink_to("/dev/zero")
    elif shape == "dangling link":
        path.symlink_to(native / "gone")
    elif shape == "link loop":
        path.symlink_to(path)
    else:
        body = json.dumps({"expires_at": "2026-01-01T00:00:00Z", "pad": " " * pause.LIMIT})
        path.write_text(body)
    phrase = held(native, native)
    assert phrase.startswith(str(path)) and phrase.endswith("held")


def test_a_sentinel_reached_through_a_link_is_read_as_hermes_reads_it(tmp_path, native):
    target = tmp_path / "estop.json"
    target.write_text(json.dumps({"expires_at": "2026-01-01T00:00:00Z"}))
    (native / "ESTOP").symlink_to(target)
    assert held(native, native) is None
    target.write_text(json.dumps({"expires_at": "2027-01-01T00:00:00Z"}))
    assert "expires 2027-01-01T00:00:00Z" in held(native, native)


def test_a_deadman_long_past_is_no_pause(native):
    arm(native, {"expires_at": "0001-01-01T00:00:00+01:00"})
    assert held(native, native) is None


def test_now_defaults_to_the_clock(native):
    arm(native, {"expires_at": "2000-01-01T00:00:00Z"})
    assert pause.paused(native, native=native) is None
    arm(native, {"expires_at": "9999-01-01T00:00:00Z"})
    assert pause.paused(native, native=native) is not None


def test_the_pass_environment_names_the_home(tmp_path, native):
    profile = native / "profiles" / "coder"
    profile.mkdir(parents=True)
    arm(native, {})
    home = {"HOME": str(tmp_path)}
    assert pause.paused_env(home, NOW).startswith(str(native / "ESTOP"))
    assert pause.paused_env({**home, "HERMES_HOME": " "}, NOW).startswith(str(native / "ESTOP"))
    assert pause.paused_env({**home, "HERMES_HOME": str(profile)}, NOW).startswith(str(native / "ESTOP"))
    (native / "ESTOP").unlink()
    arm(profile, {})
    assert pause.paused_env(home, NOW) is None
    assert pause.paused_env({**home, "HERMES_HOME": str(profile)}, NOW).startswith(str(profile / "ESTOP"))
