"""Dev tooling, not the domain: the demo, a local cluster of the Procfile's processes,
embedded Redis and PostgreSQL servers on free ports, and sample payout rows (for the
demo, the tests and the benchmarks)."""
