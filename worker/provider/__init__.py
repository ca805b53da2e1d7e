"""The payout provider: HTTP transport, payout client, details client, OAuth token, and
the provider-neutral report type."""
