"""The circuit breaker's count (worker.coordination.breaker), on fakeredis and a real server."""

from __future__ import annotations

from collections import Counter

import pytest
import redis

from worker.coordination.breaker import Breaker, codes_text
from worker.core.config import load_settings
from worker.core.exceptions import ConfigError
from worker.core.settings import DEFAULT_SYSTEMIC_CODES
from worker.provider.answers import SYSTEMIC_CODES


def test_the_breaker_trips_at_the_nth_refusal_with_the_codes_seen(any_redis: redis.Redis) -> None:
    breaker = Breaker(any_redis, "t", "AR", rejections=3, window=30.0)
    assert breaker.refused("a1", "9001") is None
    assert breaker.refused("a2", "9002") is None
    tripped = breaker.refused("a3", "9001")
    assert tripped == Counter({"9001": 2, "9002": 1})
    assert codes_text(tripped) == "9001 x2, 9002 x1"
    assert breaker.refused("a4", "9001") is not None  # while the window lasts, again
    assert 0 < any_redis.pttl("t:breaker:AR") <= 30_000  # left to expire


def test_each_account_counts_its_own(any_redis: redis.Redis) -> None:
    ar = Breaker(any_redis, "t", "AR", rejections=2, window=30.0)
    jp = Breaker(any_redis, "t", "JP", rejections=2, window=30.0)
    assert ar.refused("a1", "9001") is None
    assert jp.refused("j1", "9001") is None
    assert ar.refused("a2", "9001") is not None


def test_no_breaker_with_zero_rejections(fake_redis: redis.Redis) -> None:
    breaker = Breaker(fake_redis, "t", "AR", rejections=0, window=30.0)
    assert all(breaker.refused(f"a{i}", "9001") is None for i in range(10))


def test_the_settings_of_the_breaker_and_the_systemic_codes() -> None:
    assert DEFAULT_SYSTEMIC_CODES == SYSTEMIC_CODES  # the client's own, by default
    default = load_settings({})
    assert default.systemic_codes == SYSTEMIC_CODES
    assert (default.breaker_rejections, default.breaker_window) == (5, 30.0)
    settings = load_settings(
        {"SYSTEMIC_CODES": "4001, 9100", "BREAKER_REJECTIONS": "0", "BREAKER_WINDOW": "60"}
    )
    assert settings.systemic_codes == {"4001", "9100"}
    assert (settings.breaker_rejections, settings.breaker_window) == (0, 60.0)
    assert load_settings({"SYSTEMIC_CODES": "none"}).systemic_codes == frozenset()


def test_a_malformed_code_list_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"SYSTEMIC_CODES='4001,,4003': '' is not a provider"):
        load_settings({"SYSTEMIC_CODES": "4001,,4003"})
