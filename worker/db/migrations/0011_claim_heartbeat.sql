-- Issue 23 item 4: a killed worker's claimed payouts come back within seconds.
--
-- A claim (QUEUED -> SUBMITTING) is leased until ``claim_expires_at``, by the server's
-- clock: set to now() + LEASE_TTL by the claim, renewed every third of that by the
-- claiming process's heartbeat (worker.flows.heartbeat) while the claim is held, and
-- cleared when the order leaves SUBMITTING. A SUBMITTING order whose lease expired is
-- abandoned: its worker stopped renewing, so the lookups take it up. The lease lives in
-- PostgreSQL, not Redis: losing Redis must never make a live claim look abandoned.
-- The lease is the claim's whose attempt ``claim_attempt`` names: read only while that
-- is the order's ``attempts``, so a value left by an earlier claim (a process of the
-- version before this one moved the order on without clearing it, then claimed it
-- again) never counts. A claim without a lease of its own (made before this migration,
-- or by that version during an upgrade) is judged by its age, as before
-- (Settings.claim_lease). Nullable columns without a default are added without
-- rewriting the table; SUBMITTING orders are few and the index of open orders
-- (orders_open) finds them, so no index of their own.
ALTER TABLE orders
    ADD COLUMN claim_expires_at timestamptz,
    ADD COLUMN claim_attempt integer;
