"""The test ledger's rows read and changed directly: moving time back (no code path
does), and every text the database holds (for personal data left behind)."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from worker.ledger import Ledger

# The fields holding account and phone numbers, in every market's payouts.
PERSONAL_NUMBERS = ("bankAccountNo", "accountNo", "bankNumber", "mobile")


def set_entered(ledger: Ledger, trade_nos: Sequence[str], ms: int) -> None:
    """Pretend the orders entered their states at ``ms`` (server ms); a claim's lease, as
    if it was never renewed since."""
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    with ledger.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET state_entered_at = %s, claim_expires_at = CASE "
            "WHEN claim_expires_at IS NOT NULL THEN %s + %s * interval '1 second' END "
            "WHERE trade_no = ANY(%s)",
            (at, at, ledger.claim_ttl, list(trade_nos)),
        )


def backdate(ledger: Ledger, trade_no: str, seconds: float) -> None:
    """Pretend the order entered its state (and its claim's lease ran out), and its events
    happened, ``seconds`` earlier."""
    ago = timedelta(seconds=seconds)
    with ledger.pool.connection() as conn:
        conn.execute(
            "UPDATE orders SET state_entered_at = state_entered_at - %s, "
            "claim_expires_at = claim_expires_at - %s WHERE trade_no = %s",
            (ago, ago, trade_no),
        )
        conn.execute("UPDATE order_events SET at = at - %s WHERE trade_no = %s", (ago, trade_no))


def events(ledger: Ledger, trade_no: str) -> list[tuple[str, str | None, str, dict[str, Any]]]:
    """The order's event rows, oldest first: (source, from, to, facts)."""
    with ledger.pool.connection() as conn:
        rows = conn.execute(
            "SELECT source, from_state, to_state, facts FROM order_events "
            "WHERE trade_no = %s ORDER BY id",
            (trade_no,),
        ).fetchall()
    return [(source, before, after, facts or {}) for source, before, after, facts in rows]


def text_in_the_database(url: str) -> str:
    """Every text and jsonb value of every table, as one string."""
    parts: list[str] = []
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN ('text', 'jsonb', 'character varying')"
        ).fetchall()
        for table, column in columns:
            query = sql.SQL("SELECT {}::text FROM {}").format(
                sql.Identifier(column), sql.Identifier(table)
            )
            parts += [value for (value,) in conn.execute(query) if value is not None]
    return "\n".join(parts)


def numbers_in_the_database(url: str, numbers: Collection[str]) -> list[str]:
    """The ``numbers`` found anywhere in the database (see :func:`found_whole`)."""
    return found_whole(text_in_the_database(url), numbers)


def found_whole(text: str, numbers: Collection[str]) -> list[str]:
    """The ``numbers`` found in ``text`` whole: not inside a longer run of letters and
    digits, such as a tradeNo's hex or a time in milliseconds, where a 7-digit number
    turns up by chance now and then."""
    return sorted(
        number
        for number in numbers
        if re.search(rf"(?<![0-9A-Za-z]){re.escape(number)}(?![0-9A-Za-z])", text)
    )
