-- `disburse batches` lists the newest batches first, and `--since` reads a time range:
-- every single `enqueue` makes a batch, so the table grows with the payouts.
CREATE INDEX batches_created_at ON batches (created_at);
