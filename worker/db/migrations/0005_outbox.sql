-- Outcomes to the application (worker/outbox.py): the event feed's guarantee, and the
-- signed webhooks' deliveries and attempts.

-- The feed reads order_events by id, and must never pass an id a transaction still
-- open may commit later. It takes the last id drawn, then a transaction id of its own:
-- once every transaction older than that one has ended, no id up to the last can appear
-- any more. That holds only if a transaction has its id before it draws an event id; an
-- INSERT that is its transaction's first write would draw (nextval) first. A statement
-- trigger runs before the statement draws any id, and takes the transaction id there.
CREATE FUNCTION order_events_take_xid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN NULL;
END
$$;
CREATE TRIGGER order_events_take_xid BEFORE INSERT ON order_events
    FOR EACH STATEMENT EXECUTE FUNCTION order_events_take_xid();

-- Where the webhook sender stands: the feed position it has taken events up to, and the
-- endpoint's state (after a failed attempt it gets one request at a time, at retry_at).
CREATE TABLE outbox_state (
    name        text PRIMARY KEY,
    position    bigint NOT NULL,
    failures    integer NOT NULL DEFAULT 0,
    retry_at    timestamptz
);
-- Webhooks carry the events written after this upgrade; older ones stay in the feed, and
-- `disburse events redeliver --since T` sends them on request.
INSERT INTO outbox_state (name, position)
SELECT 'webhook', coalesce(max(id), 0) FROM order_events;

-- One row per event to send, with its exact body (the same bytes on every attempt).
-- pending -> delivered (a 2xx), or failed (given up: refused days after it was written).
CREATE TABLE outbox_deliveries (
    created_at    timestamptz NOT NULL DEFAULT now(),
    next_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz,
    event_id      bigint PRIMARY KEY REFERENCES order_events (id) ON DELETE CASCADE,
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_status   integer,
    trade_no      text NOT NULL,
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'delivered', 'failed')),
    last_error    text,
    body          text NOT NULL
);
-- The sender's scan: pending events oldest first, and each payout's oldest pending one
-- (a payout's events go out in order: a later one waits for the earlier).
CREATE INDEX outbox_deliveries_pending ON outbox_deliveries (event_id) WHERE state = 'pending';
CREATE INDEX outbox_deliveries_payout ON outbox_deliveries (trade_no, event_id)
    WHERE state = 'pending';
CREATE INDEX outbox_deliveries_failed ON outbox_deliveries (event_id) WHERE state = 'failed';

-- Every attempt: the HTTP status (NULL when no answer came), latency and error.
CREATE TABLE outbox_attempts (
    at          timestamptz NOT NULL DEFAULT now(),
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    bigint NOT NULL REFERENCES outbox_deliveries (event_id) ON DELETE CASCADE,
    latency_ms  integer NOT NULL,
    status      integer,
    error       text
);
CREATE INDEX outbox_attempts_event ON outbox_attempts (event_id);
