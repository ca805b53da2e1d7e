"""The sandbox's randomness: the latency distribution drawn per request."""

from __future__ import annotations

import argparse
import math
import random
import statistics

import pytest

from worker.sandbox import SandboxConfig, SandboxConfigError, add_arguments, config_from_args
from worker.sandbox.chance import LATENCY_CAP_MEDIANS, Latency, lognormal_delay

DRAWS = 20_000


def test_lognormal_delay_has_the_asked_median_and_tail() -> None:
    rng = random.Random(23)
    draws = [lognormal_delay(0.25, 0.6, rng) for _ in range(DRAWS)]
    assert statistics.median(draws) == pytest.approx(0.25, rel=0.03)
    # One sigma above the median: exp(0.6) medians, passed by 15.9 % of N(0, 1).
    above = sum(draw > 0.25 * math.exp(0.6) for draw in draws) / DRAWS
    assert above == pytest.approx(0.159, abs=0.01)
    # The mean of a lognormal is median * exp(sigma^2 / 2): the tail pulls it up.
    assert statistics.fmean(draws) == pytest.approx(0.25 * math.exp(0.18), rel=0.03)
    assert min(draws) > 0


def test_a_draw_never_passes_the_cap() -> None:
    rng = random.Random(5)
    draws = [lognormal_delay(0.1, 3.0, rng) for _ in range(DRAWS)]
    cap = LATENCY_CAP_MEDIANS * 0.1
    assert max(draws) == cap  # sigma 3: a few percent of the draws reach it
    assert sum(draw == cap for draw in draws) / DRAWS == pytest.approx(0.222, abs=0.02)


def test_no_median_is_no_wait() -> None:
    assert lognormal_delay(0.0, 0.6, random.Random(1)) == 0.0


def test_each_request_draws_anew_and_a_seed_repeats_the_draws() -> None:
    config = SandboxConfig(seed=9, latency=0.1, latency_median=0.25, latency_sigma=0.6)
    first = Latency(config, "nonce-a")
    draws = [first.draw() for _ in range(50)]
    assert len(set(draws)) == 50  # independent per request, not one value per sandbox
    assert min(draws) > 0.1  # the fixed latency comes on top
    again = Latency(SandboxConfig(seed=9, latency=0.1, latency_median=0.25), "nonce-b")
    assert [again.draw() for _ in range(50)] == draws  # the seed, not the nonce, decides


def test_without_a_median_the_fixed_latency_alone() -> None:
    config = SandboxConfig(latency=0.2)
    latency = Latency(config, "n")
    assert {latency.draw() for _ in range(10)} == {0.2}
    config.update({"latency_median": 0.05, "latency_sigma": 0})  # changeable at runtime
    assert latency.draw() == pytest.approx(0.25)


@pytest.mark.parametrize("knobs", [{"latency_median": -0.1}, {"latency_sigma": -1}])
def test_negative_latency_knobs_are_refused(knobs: dict[str, float]) -> None:
    with pytest.raises(SandboxConfigError):
        SandboxConfig(**knobs)


def test_the_command_line_sets_the_distribution() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(
        parser.parse_args(["--latency-median", "0.25", "--latency-sigma", "0.8"])
    )
    assert (config.latency_median, config.latency_sigma) == (0.25, 0.8)
    assert config_from_args(parser.parse_args([])).latency_median == 0.0
