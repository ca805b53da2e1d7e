"""PostgreSQL plumbing of the ledger: schema migrations and the per-process pool."""
