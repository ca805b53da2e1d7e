-- Issue 25: who may release how much (DISBURSE_POLICY), four eyes, schedules, the audit trail.

-- A batch records who enqueued it (created_by, from 0001), how many approvals it needs
-- (the policy's band, or 1 for --hold), when it may be released at the earliest, and when
-- it was released (QUEUED): the daily limit sums what was released in the market's local
-- day. An approver may let a batch past the daily limit with a note.
ALTER TABLE batches
    ADD COLUMN approvals_needed integer NOT NULL DEFAULT 0 CHECK (approvals_needed >= 0),
    ADD COLUMN not_before timestamptz,
    ADD COLUMN released_at timestamptz,
    ADD COLUMN limit_override text;
-- Batches from before this migration: released when enqueued, unless still held; one
-- still held waits for its approval (`disburse approve`), as before.
UPDATE batches b SET released_at = b.created_at
WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.batch_id = b.id AND o.state = 'HELD');
UPDATE batches SET approvals_needed = 1 WHERE released_at IS NULL;
CREATE INDEX batches_released ON batches (market, released_at) WHERE released_at IS NOT NULL;

-- One row per approval: N approvals are N different people (the key); the statement that
-- inserts one refuses the batch's creator (worker.ledger.approvals).
CREATE TABLE batch_approvals (
    at        timestamptz NOT NULL DEFAULT now(),
    batch_id  text NOT NULL REFERENCES batches (id),
    who       text NOT NULL CHECK (who <> ''),
    PRIMARY KEY (batch_id, who)
);

-- The beneficiary daily limit: a keyed digest of the beneficiary's account (never the
-- account), per order; the key is this database's own, drawn here once.
ALTER TABLE orders ADD COLUMN beneficiary text;
CREATE INDEX orders_beneficiary ON orders (beneficiary, created_at) WHERE beneficiary IS NOT NULL;
CREATE TABLE ledger_keys (
    name  text PRIMARY KEY,
    key   text NOT NULL
);
INSERT INTO ledger_keys (name, key) VALUES ('beneficiary', gen_random_uuid()::text);

-- Every operator action: who, what, which batch or payout, when, from where, the note.
-- Append-only: UPDATE, DELETE and TRUNCATE are refused for everyone.
CREATE TABLE audit_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    who       text NOT NULL,
    action    text NOT NULL,
    batch_id  text,
    trade_no  text,
    origin    text NOT NULL,  -- the CLI's host, the API's process, the console's client
    note      text,
    facts     jsonb
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_batch ON audit_events (batch_id) WHERE batch_id IS NOT NULL;
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
