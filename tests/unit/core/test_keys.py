"""Redis keys: one module builds them, and their names hold across upgrades (a worker of
the next version must find the pause switch and the token the running ones wrote)."""

from __future__ import annotations

from worker.core import keys


def test_the_keys_of_a_deployment_keep_their_names() -> None:
    assert keys.paused("d") == "d:paused"
    assert keys.paused_account("d", "AR") == "d:paused:AR"
    assert keys.rate_limit("d", "submit:AR") == "d:ratelimit:submit:AR"
    assert keys.oauth_token("d") == "d:oauth:token"
    assert keys.submit_leases("d") == "d:submit:leases"
    assert keys.lookup_in_flight("d", "t1") == "d:reconcile:inflight:t1"
    assert keys.reconcile("d", "lock") == "d:reconcile:lock"
    assert keys.metrics("d") == "d:metrics"


def test_two_deployments_sharing_one_redis_never_share_a_key() -> None:
    def every_key(prefix: str) -> set[str]:
        return {
            keys.paused(prefix),
            keys.paused_account(prefix, "ID"),
            keys.rate_limit(prefix, "details"),
            keys.oauth_token(prefix),
            keys.submit_leases(prefix),
            keys.lookup_in_flight(prefix, "t1"),
            keys.reconcile(prefix, "gate"),
            keys.metrics(prefix),
        }

    first, second = every_key("a"), every_key("b")
    assert len(first) == 8 and not first & second
    assert all(key.startswith("a:") for key in first)
