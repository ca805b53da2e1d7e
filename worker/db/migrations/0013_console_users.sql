-- Issue 26: the operations console's people. A user signs in with a password (argon2id,
-- never stored in clear); the role says what they may do: viewer reads, operator
-- cancels, pauses, retries and resolves, approver approves, admin manages users.
CREATE TABLE console_users (
    name           text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._@-]{1,64}$'),
    role           text NOT NULL CHECK (role IN ('viewer', 'operator', 'approver', 'admin')),
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL
);

-- Failed sign-ins, per name and address: sign-in is refused for a while after too many
-- (worker.flows.users). Rows older than the window are deleted by the next failure.
CREATE TABLE console_signin_failures (
    at       timestamptz NOT NULL DEFAULT now(),
    name     text NOT NULL,
    address  text NOT NULL
);
CREATE INDEX console_signin_failures_key ON console_signin_failures (name, address, at);

-- The key that signs the console's session cookies: one per database, so every console
-- process behind a load balancer accepts the others' sessions.
INSERT INTO ledger_keys (name, key)
VALUES ('console_session', gen_random_uuid()::text || gen_random_uuid()::text);
