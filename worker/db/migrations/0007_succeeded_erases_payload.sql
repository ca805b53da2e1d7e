-- A SUCCEEDED order erases its payload in the update that makes it SUCCEEDED again
-- (DESIGN.md: personal data is kept only while it is needed; issue 13's check of a
-- settled batch's database). Only FAILED and REVERSED orders keep theirs for
-- FAILED_PAYLOAD_RETENTION, for a retry (issue 14); a REVERSED order was SUCCEEDED first,
-- so only one reversed before this migration still holds its payload, until the window
-- ends. 0003 as first written read so; a later edit of it let SUCCEEDED keep the payload
-- too, so a database may have either version of 0003: both end up the same here.

-- A data migration: the SUCCEEDED orders that kept their payload under that edit no longer
-- need it (a paid payout is never sent again, and a reversal of it is enqueued again from
-- the application's records). Erased here rather than left to the retention step, which
-- no longer looks at SUCCEEDED orders. Before the constraint below, which would refuse
-- them.
UPDATE orders SET payload = NULL WHERE state = 'SUCCEEDED' AND payload IS NOT NULL;

ALTER TABLE orders DROP CONSTRAINT orders_final_without_payload;
ALTER TABLE orders ADD CONSTRAINT orders_final_without_payload CHECK (
    payload IS NULL OR state NOT IN ('SUCCEEDED', 'CANCELLED')
);

-- The erasure step's index spells the kept states as worker.ledger.PAYLOAD_KEPT does (a
-- partial index serves a query only when it spells the same literals).
DROP INDEX IF EXISTS orders_payload_kept;
CREATE INDEX orders_payload_kept ON orders (state_entered_at)
    WHERE payload IS NOT NULL AND state IN ('FAILED', 'REVERSED');
