"""The error tree (worker.exceptions): how it answers "could money have moved?", and every
error survives pickling (Celery result backends, multiprocessing)."""

from __future__ import annotations

import pickle

import pytest

from worker.exceptions import (
    AlreadySubmitted,
    ConfigurationRejected,
    NotFound,
    NotSent,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    Rejected,
)


@pytest.mark.parametrize(
    "exc",
    [
        Rejected("8000", "invalid", status_code=200),
        ConfigurationRejected("4001", "sign error"),
        RateLimited(retry_after=3.0),
        AlreadySubmitted("dup", code="4005"),
        NotFound("gone", status_code=404),
    ],
)
def test_exceptions_survive_pickling(exc: ProviderError) -> None:
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own bytes)
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert copy.__dict__ == exc.__dict__


def test_provider_errors_answer_could_money_have_moved() -> None:
    assert issubclass(RateLimited, NotSent)
    assert issubclass(AlreadySubmitted, OutcomeUnknown)
    assert issubclass(ConfigurationRejected, Rejected)
    for cls in (NotSent, OutcomeUnknown, Rejected, NotFound):
        assert issubclass(cls, ProviderError)
    assert not issubclass(NotSent, OutcomeUnknown)
    assert not issubclass(Rejected, OutcomeUnknown)
