-- Cheaper ledger writes (issue 13 item 10). The two foreign keys that every enqueue and
-- every transition paid for go: each checked one row at a time (100,000 lookups, and for
-- an event a lock written on its order, per 100,000-order batch; one per change of state).
-- What they guarded holds by construction, in worker/ledger.py:
-- - an order's batch is inserted by the same statement as the order (create_orders), and
--   no order ever changes batch;
-- - an event is inserted only by the statement that inserts or changes its order, from
--   the rows that statement returned;
-- - no code deletes an order or a batch.
-- tests/unit/ledger/test_ledger.py checks that every event and every order has its parent after
-- every kind of change.
ALTER TABLE order_events DROP CONSTRAINT order_events_trade_no_fkey;
ALTER TABLE orders DROP CONSTRAINT orders_batch_id_fkey;

-- Every change of state rewrites the order's row in every index of orders (state is
-- indexed, so no update is HOT), and a unique constraint indexes NULLs too: the one on
-- retry_of took an entry for every order, of which few are retries. Only the retries now,
-- under the same name (a violation still names orders_retry_of_key).
ALTER TABLE orders DROP CONSTRAINT orders_retry_of_key;
CREATE UNIQUE INDEX orders_retry_of_key ON orders (retry_of) WHERE retry_of IS NOT NULL;
