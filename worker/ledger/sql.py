"""The ledger's statement text: the columns of an order, the transition engine's one
statement, enqueue's COPY and batch insert, and the reads that an index must serve."""

from __future__ import annotations

from psycopg import sql

from worker.core.states import FINAL_STATES, State
from worker.ledger.model import PAYLOAD_KEPT

ORDER_COLUMNS = sql.SQL(
    "trade_no, batch_id, market, currency, amount, reference, state, created_at, updated_at, "
    "attempts, platform_trade_no, provider_status, provider_message, reason, discrepancy, "
    "unseen_at, resubmits, row_no, state_entered_at, fee, total_debited, masked, "
    "fee_currency, total_debited_currency, recheck_at, retry_of"
)


def literals(states: frozenset[State]) -> sql.Composable:
    """States as SQL literals, sorted: a partial index (orders_payload_kept) serves a query
    only when it spells them the same way."""
    return sql.SQL(", ").join(sql.Literal(str(state)) for state in sorted(states))


KEPT = literals(PAYLOAD_KEPT)

# One statement per change of state, for one order or many, each its own change
# (``transitions.move_row``): lock the orders (in one order, so two such statements
# never deadlock), decide each one's action from its state, apply it, and record an
# event for every move and every discrepancy. The actions: ``move`` (the table allows
# it), ``refresh`` (already there: the provider's facts are stored), ``discrepancy`` (a
# provider report contradicting a final state: recorded on the order and as an event,
# never applied). A row without an action is left alone; the caller names why from its
# state. A claim (a move to SUBMITTING) also returns the fields to send: no second round
# trip for them.
MOVE = """
WITH want AS (
    SELECT * FROM jsonb_to_recordset(%(moves)s::jsonb) AS w(
        trade_no text, target text, allowed text[], discrepant text[], refresh boolean,
        attempt boolean, erase boolean, source text, facts jsonb, discrepancy text,
        discrepancy_facts jsonb, platform_trade_no text, provider_status text,
        provider_message text, reason text, resubmits integer, report boolean,
        review_from text[], attempts integer, unposted boolean, unposted_only boolean,
        abandoned_only boolean)
), old AS (
    -- By the primary key (the array, not a join: the index, whatever the estimates).
    SELECT trade_no, state, attempts AS tries, platform_trade_no AS stored_id,
        unposted_claims, CASE WHEN claim_attempt = attempts THEN claim_expires_at END AS lease
    FROM orders WHERE trade_no = ANY(%(trade_nos)s::text[])
    ORDER BY trade_no FOR UPDATE
), act AS (
    SELECT w.*, old.state AS before, old.stored_id, CASE
        -- A report naming another provider id than the stored one (worker.confirm): a
        -- pending order goes to REVIEW, any other records it; the stored id stays.
        WHEN w.report AND w.platform_trade_no <> old.stored_id THEN
            CASE WHEN old.state = ANY(w.review_from) THEN 'review' ELSE 'discrepancy' END
        -- A cancel (unposted_only) moves only an order no POST was ever started for
        -- (every claim given back before its POST), decided on the row as locked, so a
        -- claim cannot slip between.
        -- A claim taken from its holder (abandoned_only) moves only while its lease is
        -- expired, decided on the row as locked: a late renewal keeps the claim alive.
        -- A claim from before migration 0011 (no lease) was judged by its age.
        WHEN old.state = ANY(w.allowed) AND (w.attempts IS NULL OR old.tries = w.attempts)
            AND (NOT w.unposted_only OR old.tries = old.unposted_claims)
            AND (NOT w.abandoned_only OR old.lease IS NULL OR old.lease < now()) THEN 'move'
        WHEN old.state = w.target AND w.refresh THEN 'refresh'
        WHEN old.state = ANY(w.discrepant) THEN 'discrepancy'
    END AS act
    FROM old JOIN want w USING (trade_no)
), changed AS (
    UPDATE orders o SET
        state = CASE WHEN a.act = 'move' THEN a.target
            WHEN a.act = 'review' THEN 'REVIEW' ELSE o.state END,
        updated_at = CASE WHEN a.act IN ('move', 'review') THEN now() ELSE o.updated_at END,
        state_entered_at = CASE WHEN a.act IN ('move', 'review') THEN now()
            ELSE o.state_entered_at END,
        attempts = o.attempts + CASE WHEN a.act = 'move' AND a.attempt THEN 1 ELSE 0 END,
        -- A claim given back before its POST was started (see migration 0009).
        unposted_claims = o.unposted_claims
            + CASE WHEN a.act = 'move' AND a.unposted THEN 1 ELSE 0 END,
        -- A mark left on an earlier POST is no mark.
        unseen_at = CASE WHEN a.act = 'move' AND a.attempt THEN NULL ELSE o.unseen_at END,
        -- A claim is leased (see migration 0011); leaving SUBMITTING ends the lease.
        claim_expires_at = CASE
            WHEN a.act = 'move' AND a.attempt THEN now() + %(claim_ttl)s * interval '1 second'
            WHEN a.act IN ('move', 'review') THEN NULL ELSE o.claim_expires_at END,
        claim_attempt = CASE WHEN a.act = 'move' AND a.attempt THEN o.attempts + 1
            WHEN a.act IN ('move', 'review') THEN NULL ELSE o.claim_attempt END,
        -- Personal data goes in the same update that makes the order final.
        payload = CASE WHEN a.act = 'move' AND a.erase THEN NULL ELSE o.payload END,
        -- The first id the provider gave is kept: a report naming another never gets here.
        platform_trade_no = coalesce(o.platform_trade_no, a.platform_trade_no),
        provider_status = CASE WHEN a.act IN ('discrepancy', 'review') THEN o.provider_status
            ELSE coalesce(a.provider_status, o.provider_status) END,
        provider_message = CASE WHEN a.act IN ('discrepancy', 'review')
            THEN o.provider_message ELSE coalesce(a.provider_message, o.provider_message) END,
        reason = CASE WHEN a.act = 'discrepancy' THEN o.reason
            WHEN a.act = 'review' THEN 'the provider named another payout id: stored '
                || a.stored_id || ', reported ' || a.platform_trade_no
            ELSE coalesce(a.reason, o.reason) END,
        resubmits = CASE WHEN a.act IN ('discrepancy', 'review') THEN o.resubmits
            ELSE coalesce(a.resubmits, o.resubmits) END,
        discrepancy = CASE WHEN a.act IN ('discrepancy', 'review') THEN a.discrepancy
            || CASE WHEN a.platform_trade_no <> a.stored_id
                THEN ' naming platFormTradeNo ' || a.platform_trade_no ELSE '' END
            ELSE o.discrepancy END
    FROM act a
    -- The array again: the primary key's index finds the rows even where the planner's
    -- statistics are stale (a table just filled by a big enqueue, before ANALYZE).
    WHERE o.trade_no = ANY(%(trade_nos)s::text[]) AND o.trade_no = a.trade_no
        AND a.act IS NOT NULL
    RETURNING o.trade_no, a.act, a.before, a.target, a.source, a.facts, a.discrepancy_facts,
        a.stored_id, CASE WHEN a.attempt AND a.act = 'move' THEN o.payload END AS payload
), events AS (
    INSERT INTO order_events (trade_no, source, from_state, to_state, facts)
    SELECT trade_no, source, before,
        CASE WHEN act = 'move' THEN target WHEN act = 'review' THEN 'REVIEW' ELSE before END,
        CASE WHEN act = 'move' THEN facts
            -- Both ids; the order's own stays its platform_trade_no (the feed reads it).
            WHEN facts ->> 'platform_trade_no' <> stored_id THEN discrepancy_facts
                || jsonb_build_object('platform_trade_no', stored_id,
                    'reported_platform_trade_no', facts ->> 'platform_trade_no')
            ELSE discrepancy_facts END
    FROM changed WHERE act <> 'refresh'
)
SELECT a.trade_no, a.before, c.act, c.payload
FROM act a LEFT JOIN changed c USING (trade_no)
"""
# Enqueue: the orders are COPYed straight into ``orders`` as the caller hands them over
# (the server stores each one while the caller validates the next), then one statement
# adds their batch, its totals (summed as they went in) and their creation events. The
# unique reference decides which order a reference maps to, also against a concurrent
# enqueue of the same reference: the COPY waits for that one's outcome and fails if it
# committed (Ledger.create_orders then starts over with that order known). Rows go in as
# they come, in no particular order of references, so two enqueues of overlapping
# references could each wait on the other: enqueues of more than one order take turns
# under this transaction-scoped advisory lock, and so never deadlock.
ENQUEUE_LOCK = 0x64697362_656E7175  # "disbenqu"
COPY_ORDERS = (
    "COPY orders (trade_no, batch_id, row_no, market, currency, amount, reference, state, "
    "payload, masked, retry_of, beneficiary) FROM STDIN"
)
# A batch not held is released as it is stored (the daily limit counts it from then).
CREATED = """
WITH batch AS (
    INSERT INTO batches (id, market, row_count, idempotency_key, rows_digest, created_by,
        approvals_needed, not_before, hold_reason, released_at)
    VALUES (%(batch)s, %(market)s, %(count)s, %(key)s, %(digest)s, %(created_by)s,
        %(needed)s, %(not_before)s, %(held)s,
        CASE WHEN %(released)s THEN now() END)
), totals AS (
    INSERT INTO batch_totals (batch_id, currency, row_count, amount)
    SELECT %(batch)s, currency, row_count, amount
    FROM unnest(%(currencies)s::text[], %(counts)s::integer[], %(amounts)s::numeric[])
        AS t (currency, row_count, amount)
)
INSERT INTO order_events (trade_no, source, to_state, facts)
SELECT trade_no, 'producer', %(state)s,
    CASE WHEN retry_of IS NOT NULL THEN jsonb_build_object('retry_of', retry_of) END
FROM orders WHERE batch_id = %(batch)s
"""
# When a SUBMITTING order's claim stops being alive: the end of its lease (one its own
# attempt set: migration 0011) or, without one, %(lease)s seconds after the claim.
_CLAIM_END = sql.SQL(
    "coalesce(CASE WHEN claim_attempt = attempts THEN claim_expires_at END, "
    "state_entered_at + %(lease)s * interval '1 second')"
)
CLAIM_END = sql.SQL(
    "SELECT {} FROM orders WHERE trade_no = %(trade_no)s AND state = 'SUBMITTING'"
).format(_CLAIM_END)
# The SUBMITTING orders whose claim is abandoned at %(now)s (the server's clock, read by
# the caller), oldest first: the lease expired or, without one (claimed before migration
# 0011), claimed more than %(lease)s seconds ago. The state as a literal: the partial
# index orders_open finds the (few) SUBMITTING rows.
ABANDONED_CLAIMS = sql.SQL(
    "SELECT trade_no, state_entered_at FROM orders "
    "WHERE state = 'SUBMITTING' AND {} < %(now)s ORDER BY state_entered_at, trade_no"
).format(_CLAIM_END)
# A page of the orders in one state since before some time, oldest first, after a key
# (entered, tradeNo). The state is spelled as a literal: the partial index orders_open
# serves only such a query.
STATE_PAGE = """
SELECT trade_no, state_entered_at FROM orders
WHERE state = {state} AND state_entered_at < %(before)s
  AND (state_entered_at, trade_no) > (%(after_at)s, %(after)s)
ORDER BY state_entered_at, trade_no
LIMIT %(limit)s
"""

# Open orders per state, and the oldest's entry: served by the partial index orders_open,
# whose predicate it spells (with literals), so it reads work in progress only.
OPEN_STATES = sql.SQL(
    "SELECT state, count(*), min(state_entered_at) FROM orders "
    "WHERE state NOT IN ({}) GROUP BY state"
).format(sql.SQL(", ").join(sql.Literal(str(state)) for state in sorted(FINAL_STATES)))

# A batch's fees and totals debited per state and currency (each in its own currency).
COSTS = """
SELECT 'fee', state, fee_currency, sum(fee) FROM orders
WHERE batch_id = %(batch)s AND fee IS NOT NULL GROUP BY state, fee_currency
UNION ALL
SELECT 'debited', state, total_debited_currency, sum(total_debited) FROM orders
WHERE batch_id = %(batch)s AND total_debited IS NOT NULL GROUP BY state, total_debited_currency
"""
# The retries of an order, and theirs in turn (each order is retried at most once).
RETRIES = """
WITH RECURSIVE chain (trade_no, state, depth) AS (
    SELECT trade_no, state, 1 FROM orders WHERE retry_of = %s
    UNION ALL
    SELECT o.trade_no, o.state, c.depth + 1 FROM orders o JOIN chain c ON o.retry_of = c.trade_no
    WHERE c.depth < 100
)
SELECT trade_no, state FROM chain ORDER BY depth
"""
