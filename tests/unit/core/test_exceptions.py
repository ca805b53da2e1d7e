"""The error tree (worker.core.exceptions): one base, the built-in kinds callers catch, and
every error survives pickling (Celery result backends, multiprocessing)."""

from __future__ import annotations

import pickle

import pytest

import worker
from worker.core.exceptions import (
    AlreadySubmitted,
    AuthenticationFailed,
    BatchNotFound,
    ConfigError,
    ConfigurationRejected,
    DisburseError,
    InputError,
    InvalidFile,
    InvalidPayout,
    NotFound,
    NotSent,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    RateLimitTimeout,
    Rejected,
    SchemaBehind,
    TokenUnavailable,
    UnknownMarket,
)


@pytest.mark.parametrize(
    "exc",
    [
        Rejected("8000", "invalid", status_code=200),
        ConfigurationRejected("4001", "sign error"),
        RateLimited(retry_after=3.0),
        AlreadySubmitted("dup", code="4005"),
        NotFound("gone", status_code=404),
        TokenUnavailable("no token"),
        InvalidPayout({"amount": ["Not a number."]}),
        UnknownMarket("XX", ["ID", "AR"]),
        InvalidFile("the file has no rows"),
        BatchNotFound("b123"),
        ConfigError("VEXORA_RATE_LIMIT: bad"),
        SchemaBehind([2, 1], "disburse db upgrade"),
        RateLimitTimeout("no slot"),
    ],
)
def test_exceptions_survive_pickling(exc: DisburseError) -> None:
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own bytes)
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert copy.__dict__ == exc.__dict__


def test_provider_errors_answer_could_money_have_moved() -> None:
    assert issubclass(RateLimited, NotSent)
    assert issubclass(AlreadySubmitted, OutcomeUnknown)
    assert issubclass(ConfigurationRejected, Rejected)
    for cls in (NotSent, OutcomeUnknown, Rejected, NotFound, AuthenticationFailed):
        assert issubclass(cls, ProviderError)
    assert issubclass(TokenUnavailable, ProviderError)
    assert not issubclass(TokenUnavailable, (NotSent, OutcomeUnknown))
    assert not issubclass(NotSent, OutcomeUnknown)
    assert not issubclass(Rejected, OutcomeUnknown)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (InvalidPayout, ValueError),
        (UnknownMarket, ValueError),
        (InvalidFile, ValueError),
        (BatchNotFound, LookupError),
        (ConfigError, ValueError),
        (SchemaBehind, ValueError),
        (RateLimitTimeout, TimeoutError),
    ],
)
def test_every_error_is_a_disburse_error_and_keeps_its_builtin_kind(
    cls: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(cls, DisburseError)
    assert issubclass(cls, builtin)


def test_input_errors_are_told_apart_from_configuration_and_provider_errors() -> None:
    for cls in (InvalidPayout, UnknownMarket, InvalidFile, BatchNotFound):
        assert issubclass(cls, InputError)
        assert not issubclass(cls, (ConfigError, ProviderError))
    assert issubclass(SchemaBehind, ConfigError)
    assert not issubclass(ConfigError, (InputError, ProviderError))
    assert not issubclass(RateLimitTimeout, (InputError, ConfigError, ProviderError))


def test_messages() -> None:
    assert str(UnknownMarket("XX", ["KH", "ID"])) == "unknown market 'XX': expected one of ID, KH"
    assert str(InvalidPayout({"amount": ["Not a number."], "bankCode": ["Missing.", "Bad."]})) == (
        "invalid payout: amount: Not a number.; bankCode: Missing. Bad."
    )
    behind = SchemaBehind({3, 1}, "disburse db upgrade")
    assert behind.missing == [1, 3]
    assert "0001, 0003" in str(behind) and "`disburse db upgrade`" in str(behind)


def test_the_public_api_exports_the_errors_an_application_sees() -> None:
    seen = ("DisburseError", "InputError", "InvalidPayout", "UnknownMarket", "ConfigError")
    for name in (*seen, "BatchNotFound"):
        assert name in worker.__all__
        assert getattr(worker, name) is getattr(worker.core.exceptions, name)
