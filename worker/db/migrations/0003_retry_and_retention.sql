-- Retry what failed (issue 14.6). A FAILED or REVERSED order keeps its payload for
-- FAILED_PAYLOAD_RETENTION so it can be enqueued again, and so does a SUCCEEDED one,
-- which the details API may yet reverse; the reconcile pass erases it after that
-- (worker/retention.py). A CANCELLED order still erases it at once.
ALTER TABLE orders DROP CONSTRAINT orders_final_without_payload;
ALTER TABLE orders ADD CONSTRAINT orders_final_without_payload CHECK (
    payload IS NULL OR state NOT IN ('CANCELLED')
);

-- The order a retry enqueues again. UNIQUE: an order is retried at most once, so a
-- batch retried twice (or by two operators at once) pays nobody twice.
ALTER TABLE orders ADD COLUMN retry_of text UNIQUE REFERENCES orders (trade_no);

-- The payloads still kept, oldest first: what the erasure step reads on every pass,
-- the size of the retention window's failures however long the ledger grows.
CREATE INDEX orders_payload_kept ON orders (state_entered_at)
    WHERE payload IS NOT NULL AND state IN ('FAILED', 'REVERSED', 'SUCCEEDED');
