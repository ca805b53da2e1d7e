-- Idempotent enqueues (issue 21 item 7). A batch may carry an idempotency key (the
-- application's, or `disburse enqueue`'s digest of the file): the same key for the same
-- market within IDEMPOTENCY_WINDOW returns that batch instead of making a second one, and
-- the same key for other rows (rows_digest differs) is refused. An enqueue with a key
-- checks for it and inserts its batch under the enqueue advisory lock; the unique index
-- is the backstop. A key older than the window is free again: the enqueue that reuses it
-- clears it from the old batch (the rows and their history stay).
ALTER TABLE batches
    ADD COLUMN idempotency_key text,
    ADD COLUMN rows_digest text;
CREATE UNIQUE INDEX batches_idempotency_key ON batches (market, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
