"""Redis coordination: rate limiter, circuit breaker, pause switches, leases, in-flight
markers, metrics."""
