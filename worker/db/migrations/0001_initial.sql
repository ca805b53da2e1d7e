-- The ledger: every payout's state, its history, and (only until it is final) the
-- exact fields sent to the provider. Money is numeric, time is timestamptz.
-- Fixed-width columns come first in each table, so rows carry no alignment padding.

-- The states of worker/states.py.
CREATE DOMAIN order_state AS text CHECK (VALUE IN (
    'HELD', 'QUEUED', 'SUBMITTING', 'PROCESSING', 'UNKNOWN',
    'SUCCEEDED', 'FAILED', 'CANCELLED', 'REVIEW', 'REVERSED'
));

CREATE TABLE batches (
    created_at   timestamptz NOT NULL DEFAULT now(),
    approved_at  timestamptz,
    row_count    integer NOT NULL CHECK (row_count >= 0),
    id           text PRIMARY KEY,
    market       text NOT NULL,
    created_by   text,
    hold_reason  text,  -- why the batch waits for approval; NULL when it does not
    approved_by  text
);

-- What a batch was enqueued to pay, per currency (one market may pay in two).
CREATE TABLE batch_totals (
    row_count  integer NOT NULL CHECK (row_count >= 0),
    batch_id   text NOT NULL REFERENCES batches (id),
    currency   text NOT NULL,
    amount     numeric NOT NULL,
    PRIMARY KEY (batch_id, currency)
);

CREATE TABLE orders (
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    state_entered_at   timestamptz NOT NULL DEFAULT now(),
    -- When a lookup first showed no record of the latest POST; cleared by the next claim.
    unseen_at          timestamptz,
    row_no             integer NOT NULL,  -- the row of the batch's input it came from
    attempts           integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Resubmissions because the provider had no record of the payout.
    resubmits          integer NOT NULL DEFAULT 0 CHECK (resubmits >= 0),
    -- ours, sent as the provider's tradeNo: made once, reused on every attempt
    trade_no           text PRIMARY KEY CHECK (trade_no ~ '^[A-Za-z0-9]{1,32}$'),
    batch_id           text NOT NULL REFERENCES batches (id),
    market             text NOT NULL,
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount             numeric NOT NULL CHECK (amount > 0),
    reference          text UNIQUE,  -- the application's; one order per reference
    state              order_state NOT NULL,
    platform_trade_no  text,
    provider_status    text,
    provider_message   text,
    reason             text,
    discrepancy        text,  -- the latest provider report contradicting a final state
    fee                numeric,  -- from the details API
    total_debited      numeric,  -- from the details API
    payload            jsonb,  -- the exact fields to send: the only full personal data
    masked             jsonb NOT NULL,  -- the same fields masked, for display and export
    UNIQUE (batch_id, row_no),  -- a batch's orders in row order, and its counts per state
    -- Personal data is kept only while the payout may still be sent or queried.
    CONSTRAINT orders_final_without_payload CHECK (
        payload IS NULL OR state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'REVERSED')
    )
);

-- Append-only: one row per change of an order (from_state = to_state for a report
-- recorded but not applied, its facts holding 'discrepancy', and for a message the
-- sweeper republished). The id is the cursor of the application's
-- event feed. Ids are drawn at insert, not at commit: a feed reader must not move
-- its cursor past an id whose transaction may still be in flight.
CREATE TABLE order_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    trade_no    text NOT NULL REFERENCES orders (trade_no),
    source      text NOT NULL CHECK (source IN (
        'producer', 'submit', 'webhook', 'lookup', 'reconcile', 'operator', 'sweeper'
    )),
    from_state  order_state,  -- NULL for the order's creation
    to_state    order_state NOT NULL,
    facts       jsonb  -- what the source saw (provider status, ids, message, discrepancy)
);

-- The hot queries. A partial index serves a query only when the query spells the
-- same states as literals (not as a bound parameter).

-- Orders still on their way (or waiting for a person), per state, oldest first: the
-- reconcile pass, the sweeper, counts of open orders. Final orders leave it, so it stays
-- the size of the work in progress however long the ledger grows. tradeNo breaks ties
-- (a whole batch enters QUEUED at one instant) for scans that page by key.
CREATE INDEX orders_open ON orders (state, state_entered_at, trade_no)
    WHERE state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'REVERSED');
-- An order's history.
CREATE INDEX order_events_trade_no ON order_events (trade_no);
-- Reports recorded but not applied because they contradict a final state (rare).
CREATE INDEX order_events_discrepancy ON order_events (id) WHERE facts ? 'discrepancy';
