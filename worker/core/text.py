"""Counts in messages for people: what the commands print and what controls report."""


def plural(n: int, noun: str) -> str:
    """``1 payout``, ``2 payouts``: a count for people."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
