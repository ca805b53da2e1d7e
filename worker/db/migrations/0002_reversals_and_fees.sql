-- Reversals and what a payout cost (issue 14 items 3 and 4).

-- The details API's fees and total debited are amounts with currencies of their own.
ALTER TABLE orders
    ADD COLUMN fee_currency text CHECK (fee_currency ~ '^[A-Z]{3}$'),
    ADD COLUMN total_debited_currency text CHECK (total_debited_currency ~ '^[A-Z]{3}$'),
    -- When a failure was reported for this SUCCEEDED order by anyone but the details
    -- API (a webhook, a query answer): the reconcile pass asks the details API, whose
    -- answer alone may make it REVERSED. NULL once asked.
    ADD COLUMN recheck_at timestamptz;

-- SUCCEEDED orders waiting for that lookup (rare), for the reconcile pass.
CREATE INDEX orders_recheck ON orders (recheck_at, trade_no) WHERE recheck_at IS NOT NULL;
