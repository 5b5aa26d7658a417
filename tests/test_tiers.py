"""Every test is in exactly one tier, and the fast tier's tests start no Hermes home, no fake
endpoint and no fetched tool (tests/conftest.py: TIERS, SLOW_FIXTURES)."""

from __future__ import annotations

import pytest
from conftest import TIER_PROBLEMS

pytestmark = pytest.mark.fast


def test_every_test_has_a_tier_that_fits_it(request):
    problems = request.config.stash[TIER_PROBLEMS]
    assert not problems, "\n".join(problems)
