"""DetailsClient against a real local HTTP server (werkzeug): details, paged list, and the
bearer token's use (its fetch and shared cache are tests/unit/provider/test_token.py's)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import fakeredis
import pytest
import requests
from werkzeug.wrappers import Response

from tests.support.details import every_row
from tests.unit.fake_provider import (
    ACCOUNT,
    API_KEY,
    CLIENT_ID,
    CLIENT_SECRET,
    FakeProvider,
    Seen,
    SpySession,
    error,
    json_response,
    serving,
)
from worker.core.exceptions import (
    AuthenticationFailed,
    NotFound,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    TokenUnavailable,
)
from worker.core.settings import Settings
from worker.core.states import State
from worker.provider.details import DetailsClient
from worker.provider.disbursements import Disbursement, parse_disbursement
from worker.provider.token import TokenCache, TokenFetcher

# The paths every client here asks for: the defaults, from the one place they are set.
DEFAULTS = Settings()

# Seed 003's own example answer: data nested inside data.
SEED_ANSWER = {
    "status": 200,
    "success": True,
    "data": {
        "status": 200,
        "success": True,
        "data": {
            "transaction_id": "4565456565",
            "status": "success",
            "amount": {"value": "11000.00", "currency": "IDR"},
            "fees": [{"name": "transfer service fee name", "value": "2000.00", "currency": "IDR"}],
            "total_amount": {"value": "13000.00", "currency": "IDR"},
            "bank": {"code": "BRI", "account_number": "63434554", "account_name": "John Doe"},
            "processed_timestamp": "1714618220440",
            "post_timestamp": "1714618220440",
            "notes": "lorem ipsum",
        },
        "balance_after": {"value": "11000.00", "currency": "IDR"},
    },
}


# --- a fake provider on a real port ---------------------------------------------------


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with serving() as fake:
        yield fake


class FakeTokens:
    """A TokenProvider that hands out scripted tokens and records invalidations."""

    def __init__(self, *tokens: str) -> None:
        self.queue = list(tokens)
        self.current = self.queue.pop(0)
        self.gets = 0
        self.invalidated: list[str] = []
        self.backed_off: list[str] = []

    def get(self) -> str:
        self.gets += 1
        return self.current

    def invalidate(self, token: str) -> None:
        self.invalidated.append(token)
        if token == self.current and self.queue:
            self.current = self.queue.pop(0)

    def back_off(self, token: str) -> None:
        self.backed_off.append(token)


def make_client(provider: FakeProvider, tokens: Any = None, **kwargs: Any) -> DetailsClient:
    """A client of ``provider`` on the configured paths (``kwargs`` override)."""
    paths = {"details_path": DEFAULTS.details_path, "list_path": DEFAULTS.details_list_path}
    return DetailsClient(
        provider.url,
        api_key=API_KEY,
        account_id=ACCOUNT,
        timeouts=(1.0, 2.0),
        tokens=tokens if tokens is not None else FakeTokens("tok-1", "tok-2", "tok-3"),
        **{**paths, **kwargs},
    )


def shared_tokens(url: str) -> TokenCache:
    """The production token provider: a TokenCache (on fakeredis) over a TokenFetcher."""
    fetch = TokenFetcher(
        url, api_key=API_KEY, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, timeouts=(1.0, 2.0)
    )
    return TokenCache(fakeredis.FakeRedis(decode_responses=True), fetch)


def row(tid: str, status: str = "pending", value: str = "10.00") -> dict[str, Any]:
    return {
        "transaction_id": tid,
        "status": status,
        "amount": {"value": value, "currency": "IDR"},
        "fees": [],
        "total_amount": {"value": value, "currency": "IDR"},
        "post_timestamp": "1714618220440",
    }


def rows(prefix: str, count: int) -> list[dict[str, Any]]:
    return [row(f"{prefix}{i}") for i in range(count)]


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


# --- details --------------------------------------------------------------------------

EXPECTED_SEED = Disbursement(
    transaction_id="4565456565",
    status="success",
    state=State.SUCCEEDED,
    amount=Decimal("11000.00"),
    currency="IDR",
    total_amount=Decimal("13000.00"),
    fees=(Decimal("2000.00"),),
    posted_at_ms=1714618220440,
    processed_at_ms=1714618220440,
    notes="lorem ipsum",
    total_currency="IDR",
    fee_currency="IDR",
)


def test_details_nested_seed_shape_and_request(provider: FakeProvider) -> None:
    provider.reply(SEED_ANSWER)
    spy = SpySession()
    client = make_client(provider, session=spy)
    found = client.details("4565456565")
    assert found == EXPECTED_SEED
    assert str(found.amount) == "11000.00"
    (seen,) = provider.seen
    assert (seen.method, seen.path) == ("GET", f"/api/v1.0/disbursements/{ACCOUNT}/4565456565")
    assert seen.args == {}
    assert seen.headers["X-Partner-Id"] == API_KEY
    assert seen.headers["Accept"] == "application/json"
    assert seen.headers["Authorization"] == "Bearer tok-1"
    assert [kw["timeout"] for kw in spy.sent] == [(1.0, 2.0)]
    assert "63434554" not in repr(found)  # the account number is not even parsed


def test_details_flat_shape_with_page_and_singular_path(provider: FakeProvider) -> None:
    flat = {"status": 200, "success": True, "data": SEED_ANSWER["data"]["data"]}  # type: ignore[index]
    provider.reply(flat)
    client = make_client(
        provider, details_path="/api/v1.0/disbursement/{account_id}/{transaction_id}"
    )
    assert client.details("4565456565", page=2) == EXPECTED_SEED
    (seen,) = provider.seen
    assert seen.path == f"/api/v1.0/disbursement/{ACCOUNT}/4565456565"
    assert seen.args == {"page": "2"}


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("success", State.SUCCEEDED),
        ("failed", State.FAILED),
        ("pending", State.PROCESSING),
        ("FAILED", State.FAILED),
        ("reversed", None),
        ("", None),
    ],
)
def test_details_status_to_state(provider: FakeProvider, status: str, state: State | None) -> None:
    provider.reply(
        {"status": 200, "success": True, "data": {"transaction_id": 77, "status": status}}
    )
    found = make_client(provider).details("77")
    assert (found.transaction_id, found.status, found.state) == ("77", status, state)
    assert (found.amount, found.fees, found.posted_at_ms, found.notes) == (None, (), None, None)


def test_fees_and_total_keep_their_currency() -> None:
    usd = {"transaction_id": "t1", "status": "ok", "amount": {"value": "10", "currency": "USD"}}
    # A fee or total without a currency is in the amount's; fees in one currency add up.
    one = parse_disbursement(
        {**usd, "fees": [{"value": "1.5", "currency": "USD"}, {"value": "0.25"}],
         "total_amount": {"value": "11.75"}}
    )  # fmt: skip
    assert (one.fees, one.fee_currency) == ((Decimal("1.5"), Decimal("0.25")), "USD")
    assert (one.total_amount, one.total_currency) == (Decimal("11.75"), "USD")
    khr = parse_disbursement(
        {**usd, "fees": [{"value": "4000", "currency": "KHR"}],
         "total_amount": {"value": "10", "currency": "USD"}}
    )  # fmt: skip
    assert (khr.fee_currency, khr.total_currency) == ("KHR", "USD")
    # Fees in two currencies have no one currency: no sum can be made of them.
    mixed = parse_disbursement(
        {**usd, "fees": [{"value": "1", "currency": "USD"}, {"value": "4000", "currency": "KHR"}]}
    )
    assert mixed.fee_currency is None


def test_details_transaction_id_is_url_quoted(provider: FakeProvider) -> None:
    provider.reply({"status": 200, "success": True, "data": row("a/b?c")})
    make_client(provider).details("a/b?c")
    assert provider.seen[0].raw_uri == f"/api/v1.0/disbursements/{ACCOUNT}/a%2Fb%3Fc"
    assert provider.seen[0].args == {}


def test_details_about_another_transaction_is_not_trusted(provider: FakeProvider) -> None:
    provider.reply({"status": 200, "success": True, "data": row("999")})
    with pytest.raises(OutcomeUnknown, match="another transaction"):
        make_client(provider).details("123")


def test_details_malformed_amount_is_outcome_unknown(provider: FakeProvider) -> None:
    provider.reply({"status": 200, "data": row("1", value="eleven")})
    with pytest.raises(OutcomeUnknown, match="amount"):
        make_client(provider).details("1")


def test_details_answer_without_a_disbursement(provider: FakeProvider) -> None:
    provider.reply({"status": 200, "success": True, "data": {"something": "else"}})
    with pytest.raises(OutcomeUnknown):
        make_client(provider).details("1")


def test_401_then_success_refreshes_exactly_once(provider: FakeProvider) -> None:
    provider.reply(error(401, "Unauthorized partner, please sign in"), status=401)
    provider.reply(SEED_ANSWER)
    tokens = FakeTokens("old", "new")
    assert make_client(provider, tokens).details("4565456565") == EXPECTED_SEED
    assert tokens.invalidated == ["old"]
    assert tokens.gets == 2
    assert [s.headers["Authorization"] for s in provider.seen] == ["Bearer old", "Bearer new"]


def test_401_in_the_body_of_a_200_counts_as_401(provider: FakeProvider) -> None:
    provider.reply(error(401, "token expired"))
    provider.reply(SEED_ANSWER)
    tokens = FakeTokens("old", "new")
    assert make_client(provider, tokens).details("4565456565") == EXPECTED_SEED
    assert tokens.invalidated == ["old"]


def test_401_twice_is_authentication_failed(provider: FakeProvider) -> None:
    provider.reply(error(401, "Unauthorized partner, please sign in"), status=401)
    provider.reply(error(401, "Unauthorized partner, please sign in"), status=401)
    provider.reply(SEED_ANSWER)  # must never be asked for
    tokens = FakeTokens("old", "new", "newer")
    with pytest.raises(AuthenticationFailed, match="please sign in") as caught:
        make_client(provider, tokens).details("4565456565")
    assert caught.value.status_code == 401
    assert tokens.invalidated == ["old"]
    # The fresh token refused too: the token provider backs off (cluster-wide).
    assert tokens.backed_off == ["new"]
    assert len(provider.seen) == 2


def test_a_refused_fresh_token_stops_every_caller_until_the_back_off_ends(
    provider: FakeProvider,
) -> None:
    """With the shared cache: two 401s back off the cluster; no request, no fetch, after."""

    def handler(seen: Seen) -> Response:
        if seen.path.endswith("/access-token/b2b"):
            return json_response({"data": {"access_token": "t", "expires_in": "3600"}})
        return json_response(error(401, "Unauthorized partner"), 401)

    provider.handler = handler
    client = make_client(provider, shared_tokens(provider.url))
    with pytest.raises(AuthenticationFailed):
        client.details("5")
    paths = [s.path.rsplit("/", 1)[-1] for s in provider.seen]
    assert paths == ["b2b", "5", "b2b", "5"]
    for _ in range(3):
        with pytest.raises(TokenUnavailable, match="a fresh token was refused"):
            client.details("5")
    assert len(provider.seen) == 4


def test_shared_token_is_cached_and_refreshed_on_401(provider: FakeProvider) -> None:
    def handler(seen: Seen) -> Response:
        if seen.path.endswith("/access-token/b2b"):
            number = sum(s.path.endswith("/b2b") for s in provider.seen)
            return json_response({"data": {"access_token": f"t{number}", "expires_in": "3600"}})
        if seen.headers["Authorization"] == "Bearer t1" and len(provider.seen) > 3:
            return json_response(error(401, "expired"), 401)
        return json_response({"status": 200, "data": row("5")})

    provider.handler = handler
    client = make_client(provider, shared_tokens(provider.url))
    slots: list[int] = []

    def throttle() -> None:  # a rate limiter's acquire: before every details request
        slots.append(len(provider.seen))

    client.details("5", throttle=throttle)
    client.details("5", throttle=throttle)
    client.details("5", throttle=throttle)  # t1 now gets a 401: fetch t2, retry
    paths = [s.path.rsplit("/", 1)[-1] for s in provider.seen]
    assert paths == ["b2b", "5", "5", "5", "b2b", "5"]
    assert provider.seen[-1].headers["Authorization"] == "Bearer t2"
    # The retry after the 401 took its own slot, right before it was sent.
    assert slots == [1, 2, 3, 5]


@pytest.mark.parametrize(
    ("status", "body", "error_type", "text"),
    [
        (404, error(404, "Transaction not found"), NotFound, "Transaction not found"),
        (403, error(403, "Forbidden"), ProviderError, "IP registered"),
        (
            422,
            error(422, "Validation failed", errors={"page": ["must be a number"]}),
            ProviderError,
            "page: must be a number",
        ),
        (400, error(400, "Bad request"), ProviderError, "Bad request"),
        (500, error(500, "Internal"), OutcomeUnknown, "HTTP 500"),
        (503, "<html>down</html>", OutcomeUnknown, "HTTP 503"),
        (200, "not json", OutcomeUnknown, "not a JSON object"),
        (200, {"status": 200, "success": False, "data": None}, ProviderError, "success=false"),
    ],
)
def test_details_errors(
    provider: FakeProvider, status: int, body: Any, error_type: type[Exception], text: str
) -> None:
    provider.reply(body, status=status)
    tokens = FakeTokens("tok")
    with pytest.raises(error_type, match=text) as caught:
        make_client(provider, tokens).details("1")
    assert type(caught.value) is error_type
    assert tokens.invalidated == []


def test_details_429_is_rate_limited(provider: FakeProvider) -> None:
    provider.reply(error(429, "Too many"), status=429, headers={"Retry-After": "4"})
    with pytest.raises(RateLimited) as caught:
        make_client(provider).details("1")
    assert caught.value.retry_after == 4.0


def test_details_read_timeout_is_outcome_unknown() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (in the kernel) and never answers
    try:
        client = DetailsClient(
            f"http://127.0.0.1:{listener.getsockname()[1]}",
            api_key=API_KEY,
            account_id=ACCOUNT,
            details_path=DEFAULTS.details_path,
            list_path=DEFAULTS.details_list_path,
            timeouts=(1.0, 0.2),
            tokens=FakeTokens("tok"),
        )
        with pytest.raises(OutcomeUnknown) as caught:
            client.details("1")
        assert isinstance(caught.value.__cause__, requests.ReadTimeout)
    finally:
        listener.close()


def test_from_settings(provider: FakeProvider) -> None:
    settings = Settings(
        details_base_url=provider.url,
        details_api_key="key-x",
        details_client_id="cid-x",
        details_client_secret="csecret-x",
        details_account_id="acc-x",
        details_path="/custom/{account_id}/tx/{transaction_id}",
        details_list_path="/custom/{account_id}/list",
        connect_timeout=0.7,
        read_timeout=3.5,
    )
    tokens = FakeTokens("tk")
    client = DetailsClient.from_settings(settings, tokens)
    assert client.timeouts == (0.7, 3.5)
    assert "csecret-x" not in repr(client) and "key-x" not in repr(client)
    provider.reply({"data": row("9")})
    provider.reply({"data": [row("9")]})
    client.details("9")
    every_row(client)
    assert [s.path for s in provider.seen] == ["/custom/acc-x/tx/9", "/custom/acc-x/list"]
    assert provider.seen[0].headers["X-Partner-Id"] == "key-x"
    assert provider.seen[0].headers["Authorization"] == "Bearer tk"


# --- the paged list -------------------------------------------------------------------


def serve_pages(provider: FakeProvider, pages: dict[int, Any]) -> None:
    def handler(seen: Seen) -> Response:
        page = int(seen.args.get("page", "1"))
        return json_response(pages.get(page, {"status": 200, "success": True, "data": []}))

    provider.handler = handler


def listed(provider: FakeProvider, start_page: int = 1) -> list[str]:
    return [d.transaction_id for d in every_row(make_client(provider), start_page)]


def test_list_pagination_snake_case(provider: FakeProvider) -> None:
    # total_pages is known, so a short page 2 does not end the walk early.
    def page(n: int, count: int) -> dict[str, Any]:
        meta = {"current_page": n, "total_pages": 3, "per_page": 2}
        return {"status": 200, "success": True, "data": rows(f"p{n}-", count), "pagination": meta}

    serve_pages(provider, {1: page(1, 2), 2: page(2, 1), 3: page(3, 2), 4: page(4, 2)})
    assert listed(provider) == ["p1-0", "p1-1", "p2-0", "p3-0", "p3-1"]
    assert provider.pages_requested() == [1, 2, 3]


def test_list_throttles_every_page(provider: FakeProvider) -> None:
    def page(n: int) -> dict[str, Any]:
        meta = {"current_page": n, "total_pages": 3, "per_page": 1}
        return {"status": 200, "success": True, "data": rows(f"p{n}-", 1), "pagination": meta}

    serve_pages(provider, {n: page(n) for n in (1, 2, 3)})
    slots: list[int] = []
    found = every_row(make_client(provider), throttle=lambda: slots.append(len(provider.seen)))
    assert [d.transaction_id for d in found] == ["p1-0", "p2-0", "p3-0"]
    assert slots == [0, 1, 2]  # one slot right before each page


def test_list_pagination_meta_camel_case_inside_data(provider: FakeProvider) -> None:
    def page(n: int) -> dict[str, Any]:
        meta = {"currentPage": n, "totalPages": 2, "perPage": 3}
        return {"status": 200, "data": {"items": rows(f"m{n}-", 3), "meta": meta}}

    serve_pages(provider, {1: page(1), 2: page(2), 3: page(3)})
    assert listed(provider) == ids("m1-", 3) + ids("m2-", 3)
    assert provider.pages_requested() == [1, 2]


def test_list_pagination_top_level_meta_with_last_page(provider: FakeProvider) -> None:
    def page(n: int) -> dict[str, Any]:
        meta = {"current_page": n, "last_page": 3, "per_page": 25}
        return {"data": rows(f"l{n}-", 1), "meta": meta}

    serve_pages(provider, {n: page(n) for n in range(1, 6)})
    assert listed(provider) == ["l1-0", "l2-0", "l3-0"]
    assert provider.pages_requested() == [1, 2, 3]


def test_list_pagination_camel_case_last_page_and_nested_data(provider: FakeProvider) -> None:
    def page(n: int) -> dict[str, Any]:
        inner = {"status": 200, "success": True, "data": rows(f"c{n}-", 2)}
        return {"status": 200, "success": True, "data": {**inner, "pagination": {"lastPage": 2}}}

    serve_pages(provider, {1: page(1), 2: page(2), 3: page(3)})
    assert listed(provider) == ids("c1-", 2) + ids("c2-", 2)
    assert provider.pages_requested() == [1, 2]


def test_list_empty_pagination_object_is_a_single_page(provider: FakeProvider) -> None:
    serve_pages(provider, {1: {"data": rows("s", 3), "pagination": {}}, 2: {"data": rows("x", 3)}})
    assert listed(provider) == ids("s", 3)
    assert provider.pages_requested() == [1]


def test_list_without_metadata_follows_full_pages(provider: FakeProvider) -> None:
    serve_pages(
        provider,
        {1: {"data": rows("a", 25)}, 2: {"data": rows("b", 25)}, 3: {"data": rows("c", 7)}},
    )
    assert listed(provider) == ids("a", 25) + ids("b", 25) + ids("c", 7)
    assert provider.pages_requested() == [1, 2, 3]


def test_list_without_metadata_uses_per_page_when_given(provider: FakeProvider) -> None:
    def page(prefix: str, count: int) -> dict[str, Any]:
        return {"data": rows(prefix, count), "pagination": {"per_page": "10"}}

    serve_pages(provider, {1: page("a", 10), 2: page("b", 10), 3: page("c", 9), 4: page("d", 10)})
    assert listed(provider) == ids("a", 10) + ids("b", 10) + ids("c", 9)
    assert provider.pages_requested() == [1, 2, 3]


def test_list_stops_on_an_empty_page(provider: FakeProvider) -> None:
    serve_pages(provider, {1: {"data": rows("a", 25)}, 2: {"data": []}, 3: {"data": rows("z", 25)}})
    assert listed(provider) == ids("a", 25)
    assert provider.pages_requested() == [1, 2]


def test_list_stops_on_an_empty_page_even_before_the_announced_last(
    provider: FakeProvider,
) -> None:
    def meta(n: int) -> dict[str, int]:
        return {"current_page": n, "total_pages": 9}

    serve_pages(
        provider,
        {
            1: {"data": rows("a", 2), "pagination": meta(1)},
            2: {"data": [], "pagination": meta(2)},
            3: {"data": rows("c", 2), "pagination": meta(3)},
        },
    )
    assert listed(provider) == ids("a", 2)
    assert provider.pages_requested() == [1, 2]


def test_list_from_a_start_page(provider: FakeProvider) -> None:
    serve_pages(provider, {1: {"data": rows("a", 25)}, 3: {"data": rows("c", 25)}, 4: {"data": []}})
    assert listed(provider, start_page=3) == ids("c", 25)
    assert provider.pages_requested() == [3, 4]


def test_list_refreshes_the_token_once_on_a_401(provider: FakeProvider) -> None:
    def handler(seen: Seen) -> Response:
        page = int(seen.args["page"])
        if page == 2 and seen.headers["Authorization"] == "Bearer old":
            return json_response(error(401, "expired"), 401)
        return json_response({"data": rows(f"p{page}-", 25 if page == 1 else 3)})

    provider.handler = handler
    tokens = FakeTokens("old", "new")
    found = [d.transaction_id for d in every_row(make_client(provider, tokens))]
    assert found == ids("p1-", 25) + ids("p2-", 3)
    assert provider.pages_requested() == [1, 2, 2]
    assert tokens.invalidated == ["old"]


def test_list_row_details_are_parsed(provider: FakeProvider) -> None:
    serve_pages(provider, {1: {"data": [SEED_ANSWER["data"]["data"]]}})  # type: ignore[index]
    assert every_row(make_client(provider)) == [EXPECTED_SEED]


def test_list_refuses_an_answer_for_another_page(provider: FakeProvider) -> None:
    provider.handler = lambda seen: json_response(
        {"data": rows(f"p{seen.args['page']}", 25), "meta": {"current_page": 1}}
    )
    with pytest.raises(ProviderError, match="answered page 1"):
        listed(provider)
    assert provider.pages_requested() == [1, 2]


def test_list_without_rows_is_outcome_unknown(provider: FakeProvider) -> None:
    serve_pages(provider, {1: {"status": 200, "success": True, "data": {"meta": {}}}})
    with pytest.raises(OutcomeUnknown):
        listed(provider)


def test_malformed_rows_are_skipped_and_named_the_rest_listed(provider: FakeProvider) -> None:
    no_id = {k: v for k, v in row("x").items() if k != "transaction_id"}
    bad_amount = row("4", value="ten")
    page_1 = [row("1"), "2", no_id, bad_amount, row("5"), *rows("f", 20)]  # 25: full
    serve_pages(provider, {1: {"data": page_1}, 2: {"data": [row("6")]}})
    client = make_client(provider)
    first = client.page(1)
    assert [d.transaction_id for d in first.rows] == ["1", "5", *ids("f", 20)]
    assert first.skipped == (
        "list page 1, row 2: a row that is not an object",
        "list page 1, row 3: a disbursement without transaction_id",
        "list page 1, row 4: amount is not a number",
    )
    assert first.more  # 25 rows came back, 3 of them skipped: the page was full
    assert listed(provider) == ["1", "5", *ids("f", 20), "6"]


def test_list_metadata_numbers_as_strings_and_decimals(provider: FakeProvider) -> None:
    def page(n: int) -> str:
        meta = f'{{"current_page": "{n}", "total_pages": 2.0, "per_page": "abc"}}'
        return f'{{"data": {json.dumps(rows(f"n{n}-", 1))}, "pagination": {meta}}}'

    serve_pages(provider, {1: page(1), 2: page(2), 3: page(3)})
    assert listed(provider) == ["n1-0", "n2-0"]
    assert provider.pages_requested() == [1, 2]
