-- Issue 21 items 4, 8 and 9.
--
-- Cancel moves only an order no POST was ever started for. ``attempts`` counts claims,
-- and a claim may be given back before its POST (submissions paused, the task's budget
-- spent, the rate-limit wait too long): those are counted here, in the same statement
-- that gives the claim back. An order is cancellable while the two are equal; every
-- other way back to QUEUED (a resubmission after "no record", a claim recovered after a
-- crash, a connection that failed mid-POST) counts as a POST that may have arrived.
-- Orders from before this migration count 0: any one ever claimed stays uncancellable.
ALTER TABLE orders ADD COLUMN unposted_claims integer NOT NULL DEFAULT 0;

-- The stop switches (``disburse pause``, an account's pause on a systemic rejection or
-- by the circuit breaker): PostgreSQL holds them, Redis only caches them, so a Redis
-- wipe cannot lift one. A row is active until resumed; resumed rows stay as history.
CREATE TABLE pauses (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    since       timestamptz NOT NULL DEFAULT now(),
    resumed_at  timestamptz,
    scope       text NOT NULL CHECK (scope <> ''),  -- 'all', or a provider account's name
    reason      text NOT NULL,
    who         text NOT NULL,
    resumed_by  text
);
-- At most one active pause per scope: a second pause keeps the first's who and why.
CREATE UNIQUE INDEX pauses_active ON pauses (scope) WHERE resumed_at IS NULL;
