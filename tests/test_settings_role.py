"""A value the settings file cannot hold unquoted stops `site.yml` before any change, naming the variable."""

from __future__ import annotations

import pytest
from test_role_input import _play

pytestmark = pytest.mark.slow

CASES = [
    (
        {"hermes_pacer_settings_dir": "/etc/hermes pacer"},
        "hermes_pacer_settings_dir=/etc/hermes pacer is invalid: expected a value without whitespace",
    ),
    (
        {"hermes_pacer_lock_dir": "/run/lock/pacer$x"},
        "hermes_pacer_lock_dir=/run/lock/pacer$x is invalid: expected a value without whitespace, quotes, $, "
        "backslash or %",
    ),
]


@pytest.mark.parametrize(("extra", "message"), CASES, ids=["settings_dir", "lock_dir"])
def test_an_unquotable_setting_stops_the_play_before_any_change(extra, message):
    play = _play(extra)
    assert play.returncode != 0
    assert message in " ".join(play.stdout.split()), play.stdout[-3000:]
    assert "changed=0" in play.stdout.split("PLAY RECAP", 1)[1]
