"""Settings from the environment: the provider accounts, one per market or shared."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from schemas import MARKETS
from worker.core.accounts import Account
from worker.core.config import load_settings
from worker.core.defaults import MAX_DELAY
from worker.core.exceptions import ConfigError, MarketUnavailable
from worker.core.settings import DETAILS_SETTINGS, Rate, Settings

PLAIN = {
    "VEXORA_BASE_URL": "https://pay.example/",
    "VEXORA_MERCHANT_NO": "M-ALL",
    "VEXORA_APP_SECRET": "secret-all",
    "VEXORA_RATE_LIMIT": "20/s",
}
AR = {
    "VEXORA_AR_BASE_URL": "https://pay.example/ar",
    "VEXORA_AR_MERCHANT_NO": "M-AR",
    "VEXORA_AR_APP_SECRET": "secret-ar",
    "VEXORA_AR_RATE_LIMIT": "300/m",
}


def test_the_plain_values_alone_make_one_account_for_every_market() -> None:
    settings = load_settings(PLAIN)
    (account,) = settings.accounts
    assert account == Account(
        ("ID", "AR", "JP", "KH"), "https://pay.example", "M-ALL", "secret-all", Rate(20)
    )
    assert account.name == "ID+AR+JP+KH"
    assert all(settings.account(m) is account for m in ("ID", "AR", "JP", "KH"))


def test_a_market_with_its_own_values_is_its_own_account() -> None:
    settings = load_settings({**PLAIN, **AR})
    ar = settings.account("AR")
    assert (ar.markets, ar.base_url, ar.merchant_no, ar.app_secret) == (
        ("AR",), "https://pay.example/ar", "M-AR", "secret-ar",
    )  # fmt: skip
    assert ar.rate_limit.per_second == 5
    shared = settings.account("ID")
    assert shared.markets == ("ID", "JP", "KH") and shared.app_secret == "secret-all"


def test_what_a_market_does_not_set_falls_back_to_the_plain_value() -> None:
    env = {**PLAIN, "VEXORA_JP_MERCHANT_NO": "M-JP", "VEXORA_JP_APP_SECRET": "secret-jp"}
    jp = load_settings(env).account("JP")
    assert (jp.base_url, jp.merchant_no, jp.app_secret, jp.rate_limit) == (
        "https://pay.example", "M-JP", "secret-jp", Rate(20),
    )  # fmt: skip


def test_markets_configured_alike_share_one_account() -> None:
    own = {"BASE_URL": "https://pay.example/asia", "MERCHANT_NO": "M-ASIA", "APP_SECRET": "s-a"}
    env = {**PLAIN, **{f"VEXORA_{m}_{k}": v for m in ("JP", "KH") for k, v in own.items()}}
    settings = load_settings(env)
    assert [a.name for a in settings.accounts] == ["ID+AR", "JP+KH"]
    assert settings.account("JP") is settings.account("KH")


@pytest.mark.parametrize(
    ("env", "variable", "what"),
    [
        ({"VEXORA_AR_APP_SECRET": "other"}, "VEXORA_AR_APP_SECRET", "app secret"),
        ({"VEXORA_KH_RATE_LIMIT": "5/s"}, "VEXORA_KH_RATE_LIMIT", "rate limit"),
    ],
)
def test_one_account_configured_two_ways_is_refused(
    env: dict[str, str], variable: str, what: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**PLAIN, **env})
    message = str(caught.value)
    assert message.startswith(f"{variable}: ") and f"not the same {what}" in message
    assert "\n" not in message and "other" not in message  # one line, no secret


def test_the_variable_that_differs_is_named_even_on_the_first_market() -> None:
    with pytest.raises(ConfigError, match=r"^VEXORA_ID_APP_SECRET: "):
        load_settings({**PLAIN, "VEXORA_ID_APP_SECRET": "other"})


def test_the_same_rate_written_differently_is_the_same_rate() -> None:
    settings = load_settings({**PLAIN, "VEXORA_ID_RATE_LIMIT": "1200/m"})
    assert len(settings.accounts) == 1


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("VEXORA_AR_RATE_LIMIT", "fast", "^VEXORA_AR_RATE_LIMIT: rate 'fast'"),
        ("VEXORA_JP_BASE_URL", "pay.example/jp", "^VEXORA_JP_BASE_URL is not an http"),
        ("VEXORA_BASE_URL", "ftp://pay.example", "^VEXORA_BASE_URL is not an http"),
        ("VEXORA_IDN_MERCHANT_NO", "M-1", "^VEXORA_IDN_MERCHANT_NO: 'IDN' is not a market"),
        ("VEXORA_id_APP_SECRET", "s", "^VEXORA_id_APP_SECRET: 'id' is not a market"),
    ],
)
def test_a_malformed_value_names_its_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings({**PLAIN, name: value})


def test_a_url_is_not_repeated_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"VEXORA_ID_BASE_URL": "user:hunter2@pay.example"})
    assert "hunter2" not in str(caught.value)


def test_empty_market_values_fall_back() -> None:
    settings = load_settings({**PLAIN, "VEXORA_AR_MERCHANT_NO": "", "VEXORA_AR_BASE_URL": ""})
    assert len(settings.accounts) == 1


def test_secrets_stay_out_of_reprs() -> None:
    database = {"DATABASE_URL": "postgresql://app:secret-pw@db.example/disburse"}
    servers = {
        "REDIS_URL": "redis://:secret-redis@cache.example/0",
        "CELERY_BROKER_URL": "amqp://app:secret-mq@mq.example//",
    }
    settings = load_settings({**PLAIN, **AR, **database, **servers})
    assert settings.database_url == database["DATABASE_URL"]
    assert "secret-" not in repr(settings)
    assert "secret-" not in repr(settings.accounts)


def test_settings_built_in_code_derive_their_accounts_from_their_own_values() -> None:
    settings = dataclasses.replace(load_settings({**PLAIN, **AR}), vexora_base_url="http://x")
    assert settings.account("ID").base_url == "http://x"
    assert settings.account("AR").base_url == "https://pay.example/ar"
    with pytest.raises(ValueError, match="unknown market 'XX'"):
        settings.account("XX")


def test_no_setting_has_a_built_in_credential_or_server() -> None:
    settings = Settings()
    assert settings.accounts == () and settings.unavailable == tuple(MARKETS)
    assert not settings.details_configured
    assert settings.details_api_key == settings.details_client_secret == ""
    for name in ("database_url", "redis_url", "broker"):
        with pytest.raises(ConfigError):
            getattr(settings, name)


def test_settings_without_any_vexora_value_load_with_no_market_available() -> None:
    settings = load_settings({})
    assert settings.accounts == () and settings.unavailable == tuple(MARKETS)
    with pytest.raises(MarketUnavailable) as caught:
        settings.account("ID")
    assert str(caught.value) == (
        "market ID is not configured: set VEXORA_ID_BASE_URL, VEXORA_ID_MERCHANT_NO and "
        "VEXORA_ID_APP_SECRET (or VEXORA_BASE_URL, VEXORA_MERCHANT_NO and VEXORA_APP_SECRET "
        "for every market)"
    )


def test_a_market_of_its_own_alone_makes_only_that_market_available() -> None:
    own_id = {k.replace("_AR_", "_ID_"): v for k, v in AR.items()}
    settings = load_settings(own_id)
    (account,) = settings.accounts
    assert account.markets == ("ID",) and account.merchant_no == "M-AR"
    assert settings.unavailable == ("AR", "JP", "KH")
    with pytest.raises(MarketUnavailable, match=r"^market AR is not configured: set VEXORA_AR_"):
        settings.account("AR")


def test_a_market_missing_part_of_its_account_is_unavailable_and_told_what_is_missing() -> None:
    settings = load_settings({"VEXORA_BASE_URL": "https://pay.example", **{
        "VEXORA_KH_MERCHANT_NO": "M-KH", "VEXORA_ID_APP_SECRET": "secret-id",
    }})  # fmt: skip
    assert settings.accounts == ()
    with pytest.raises(MarketUnavailable) as caught:
        settings.account("KH")
    message = str(caught.value)
    assert message == (
        "market KH is not configured: set VEXORA_KH_APP_SECRET (or VEXORA_APP_SECRET for "
        "every market)"
    )
    assert "secret-id" not in repr(settings)


def test_the_details_api_is_all_or_nothing() -> None:
    every = {name: f"https://x.example/{name}" for name in DETAILS_SETTINGS}
    assert load_settings(every).details_configured
    assert not load_settings({}).details_configured
    with pytest.raises(ConfigError) as caught:
        load_settings({"DETAILS_BASE_URL": "https://d.example", "DETAILS_API_KEY": "k-s3cret"})
    message = str(caught.value)
    assert message.endswith("not set: DETAILS_CLIENT_ID, DETAILS_CLIENT_SECRET, DETAILS_ACCOUNT_ID")
    assert "\n" not in message and "s3cret" not in message


@pytest.mark.parametrize(
    "env",
    [{}, {"SUBMIT_BUDGET": "120"}, {"HTTP_CONNECT_TIMEOUT": "9.5", "HTTP_READ_TIMEOUT": "61"}],
)
def test_the_broker_gives_a_message_back_only_after_a_live_worker_would_have_acked_it(
    env: dict[str, str],
) -> None:
    """Longest held by a live worker: a retry's countdown, a wait for a free process
    (one task) and its own run (one task); a minute more, and not much more than that."""
    settings = load_settings(env)
    longest_held = MAX_DELAY + 2 * settings.task_time_limit
    assert longest_held + 60 <= settings.visibility_timeout < longest_held + 61
    assert isinstance(settings.visibility_timeout, int)


def test_celery_is_given_the_visibility_timeout_for_broker_and_results() -> None:
    import celeryconfig

    for options in (
        celeryconfig.broker_transport_options,
        celeryconfig.result_backend_transport_options,
    ):
        assert options["visibility_timeout"] >= MAX_DELAY + 2 * celeryconfig.task_time_limit + 60


def test_the_database_of_a_sentinel_url_is_given_to_every_sentinel() -> None:
    """kombu and Celery read it on the first part, the issue's form puts it on the last."""
    settings = load_settings(
        {"REDIS_URL": "sentinel://:pw@s1:26379;sentinel://s2:26379;sentinel://s3:26379/2"}
    )

    assert settings.redis_url == (
        "sentinel://:pw@s1:26379/2;sentinel://s2:26379/2;sentinel://s3:26379/2"
    )


def test_the_sentinels_master_is_mymaster_unless_named() -> None:
    assert load_settings({}).redis_sentinel_master == "mymaster"
    assert load_settings({"REDIS_SENTINEL_MASTER": "pay"}).redis_sentinel_master == "pay"


@pytest.mark.parametrize(
    ("env", "broker_master", "backend_master"),
    [
        ({"REDIS_URL": "redis://r:6379/0"}, None, None),
        ({"REDIS_URL": "sentinel://s1:26379/0;sentinel://s2:26379/0"}, "pay", "pay"),
        (
            {"REDIS_URL": "sentinel://s1:26379/0", "CELERY_BROKER_URL": "amqp://mq//"},
            None,
            "pay",
        ),
    ],
)
def test_celery_asks_the_sentinels_for_the_named_master(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    broker_master: str | None,
    backend_master: str | None,
) -> None:
    import importlib

    import celeryconfig
    from worker.core.config import get_settings

    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    for name, value in {**env, "REDIS_SENTINEL_MASTER": "pay"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        reloaded = importlib.reload(celeryconfig)
        assert reloaded.broker_transport_options.get("master_name") == broker_master
        assert reloaded.result_backend_transport_options.get("master_name") == backend_master
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        importlib.reload(celeryconfig)


def test_lookups_have_their_own_budget_and_every_task_limit_covers_it() -> None:
    default = load_settings({})
    assert default.lookup_budget == default.submit_budget == 30.0
    settings = load_settings({"LOOKUP_BUDGET": "120", "SUBMIT_BUDGET": "20"})
    assert (settings.lookup_budget, settings.submit_budget) == (120.0, 20.0)
    assert settings.task_time_limit > 120.0 + sum(settings.timeouts)
    assert settings.claim_lease > settings.task_time_limit
    with pytest.raises(ConfigError, match=r"^LOOKUP_BUDGET=.* is not a number"):
        load_settings({"LOOKUP_BUDGET": "soon"})


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("REDIS_URL", "localhost:6379", "REDIS_URL must start with redis://"),
        ("REDIS_URL", "http://user:s3cret@127.0.0.1:6379/0", "it starts with http://"),
        ("REDIS_URL", "redis://:s3cret@127.0.0.1:port/0", "REDIS_URL has a malformed"),
        ("DATABASE_URL", "127.0.0.1:5432/disburse", "DATABASE_URL must start with postgresql"),
        ("DATABASE_URL", "https://u:s3cret@db.example/disburse", "it starts with https://"),
        ("DATABASE_URL", "host=db password=s3cret =x", "DATABASE_URL is not a valid"),
        ("DATABASE_URL", "postgresql://u:s3cret@h1:5432,h2:54x/db", "malformed host list"),
        ("DATABASE_URL", "https://u:s3cret@h1:5432,h2:5432/db", "it starts with https://"),
        ("REDIS_URL", "sentinel://:s3cret@h1:26379;redis://h2:6379", "must start with sentinel"),
        ("REDIS_URL", "sentinel://:s3cret@h1:port;sentinel://h2/0", "REDIS_URL has a malformed"),
        ("REDIS_URL", "sentinel://:s3cret@:26379/0", "a Sentinel without a host"),
        ("REDIS_URL", "sentinel://:s3cret@h1:26379/0;sentinel://h2:26379/1", "two databases"),
        ("CELERY_BROKER_URL", "http://u:s3cret@mq.example", "CELERY_BROKER_URL must start"),
        ("NOTIFY_URL", "/notify?token=s3cret", "NOTIFY_URL is not an http(s) URL"),
        ("DETAILS_BASE_URL", "details.example", "DETAILS_BASE_URL is not an http(s) URL"),
        ("DETAILS_PATH", "/v1/{account}/{transaction_id}", "DETAILS_PATH may use only"),
        ("DETAILS_LIST_PATH", "v1/{account_id}", "DETAILS_LIST_PATH must be a path"),
        ("ALLOW_UNSIGNED_WEBHOOKS", "ture", "ALLOW_UNSIGNED_WEBHOOKS='ture' is not a yes/no"),
    ],
)
def test_a_malformed_server_url_is_one_line_naming_the_variable(
    name: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    message = str(caught.value)
    assert says in message and "\n" not in message
    assert "s3cret" not in message  # a URL may carry a password: never repeated


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REDIS_URL", "rediss://:pw@redis.example:6380/1"),
        ("REDIS_URL", "unix:///run/redis.sock"),
        ("REDIS_URL", "sentinel://:pw@s1:26379/0;sentinel://s2:26379/0"),
        ("REDIS_URL", "sentinel://s1:26379;sentinel://s2:26379"),
        ("CELERY_BROKER_URL", "sentinel://s1:26379/1;sentinel://s2:26379/1"),
        ("DATABASE_URL", "postgres://u:pw@db.example/disburse"),
        ("DATABASE_URL", "postgresql://u:pw@db1.example:5432,db2.example:5433/disburse"),
        ("DATABASE_URL", "postgresql://u@db1,db2/disburse?target_session_attrs=any"),
        ("DATABASE_URL", "host=/run/postgresql dbname=disburse"),
        ("CELERY_BROKER_URL", "amqp://guest:guest@mq.example:5672//"),
    ],
)
def test_well_formed_server_urls_are_kept_as_given(name: str, value: str) -> None:
    settings = load_settings({name: value})
    attribute = {"REDIS_URL": "redis_url", "DATABASE_URL": "database_url"}
    assert getattr(settings, attribute.get(name, "broker_url")) == value


def test_the_oauth_refresh_lock_outlasts_the_slowest_token_fetch() -> None:
    settings = load_settings({"HTTP_CONNECT_TIMEOUT": "4", "HTTP_READ_TIMEOUT": "30"})

    assert settings.token_lock_timeout > 4 + 30


@pytest.mark.parametrize(("value", "allowed"), [("", False), ("0", False), ("Yes", True)])
def test_a_flag_reads_yes_and_no(value: str, allowed: bool) -> None:
    assert load_settings({"ALLOW_UNSIGNED_WEBHOOKS": value}).allow_unsigned_webhooks is allowed


def test_notify_url_defaults_to_the_local_web_process_over_https() -> None:
    # Not a credential: it keeps a default, and every process warns at start (startup).
    assert load_settings({}).notify_url == "https://127.0.0.1:8701/notify"
    assert not load_settings({}).notify_url_set
    assert load_settings({"NOTIFY_URL": "https://pay.example/n"}).notify_url_set


def test_a_dotenv_in_the_working_directory_fills_gaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.core.config import get_settings

    (tmp_path / ".env").write_text("REDIS_URL=redis://127.0.0.1:1/5\nSWEEP_AFTER=77\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", "")  # so that the value the .env sets is undone too
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("SWEEP_AFTER", "99")  # the environment wins over the file
    get_settings.cache_clear()
    try:
        settings = get_settings()
    finally:
        get_settings.cache_clear()
    assert settings.redis_url == "redis://127.0.0.1:1/5"
    assert settings.sweep_after == 99.0


@pytest.mark.parametrize("value", [None, ""])
def test_a_server_not_set_says_which_and_where_it_looked(
    value: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the nearest .env above either: that one may be another project's."""
    from worker.core.config import get_settings

    folder = tmp_path / "project" / "inner"
    folder.mkdir(parents=True)
    (folder.parent / ".env").write_text("DATABASE_URL=postgresql://127.0.0.1:1/theirs\n")
    monkeypatch.chdir(folder)
    for name in ("DATABASE_URL", "REDIS_URL"):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        settings = get_settings()
    finally:
        get_settings.cache_clear()
    for name, attribute in (("DATABASE_URL", "database_url"), ("REDIS_URL", "redis_url")):
        with pytest.raises(ConfigError) as caught:
            getattr(settings, attribute)
        assert str(caught.value).startswith(
            f"{name} is not set (looked in the environment and {folder / '.env'} (no such "
            "file)): set it to "
        )


def test_the_query_delay_and_lease_ttl_are_settings_the_workers_use() -> None:
    d = load_settings({})
    assert (d.query_delay, d.lease_ttl) == (5.0, 15.0)
    set_ = load_settings({"QUERY_DELAY": "0.5", "LEASE_TTL": "3"})
    assert (set_.query_delay, set_.lease_ttl) == (0.5, 3.0)
    with pytest.raises(ConfigError, match="LEASE_TTL"):
        load_settings({"LEASE_TTL": "0"})


def test_the_console_settings() -> None:
    settings = load_settings(PLAIN)
    assert (settings.console_host, settings.console_port) == ("127.0.0.1", 8702)
    assert settings.console_trusted_header is None and not settings.console_trusted_proxies
    given = load_settings(
        {
            **PLAIN,
            "CONSOLE_PORT": "9000",
            "CONSOLE_HOST": "10.0.0.2",
            "CONSOLE_TRUSTED_HEADER": "X-Remote-User",
            "CONSOLE_TRUSTED_PROXIES": "10.0.0.1, ::1",
        }
    )
    assert (given.console_host, given.console_port) == ("10.0.0.2", 9000)
    assert given.console_trusted_proxies == {"10.0.0.1", "::1"}
    with pytest.raises(ConfigError, match="CONSOLE_PORT='x' is not a TCP port"):
        load_settings({**PLAIN, "CONSOLE_PORT": "x"})
    with pytest.raises(ConfigError, match="CONSOLE_TRUSTED_PROXIES: 'proxy' is not an IP"):
        load_settings({**PLAIN, "CONSOLE_TRUSTED_PROXIES": "proxy"})


def test_submit_concurrency_is_a_whole_number_of_one_at_least() -> None:
    assert load_settings({}).submit_concurrency == 32
    assert load_settings({"SUBMIT_CONCURRENCY": "8"}).submit_concurrency == 8
    for wrong in ("0", "-1", "2.5", "many"):
        with pytest.raises(ConfigError, match=r"^SUBMIT_CONCURRENCY"):
            load_settings({"SUBMIT_CONCURRENCY": wrong})
