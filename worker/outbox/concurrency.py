"""How many requests the sender keeps in flight to the application: additive increase,
multiplicative decrease (AIMD), as TCP paces a connection.

The limit starts at :data:`OUTBOX_CONCURRENCY`. Each success of a request sent while the
limit was at least half used raises it by one, up to :data:`OUTBOX_MAX_CONCURRENCY` (an
idle sender learns nothing about what the endpoint can take). A failure that says the
endpoint is overloaded halves it: no answer (timed out, connection lost), a 429, or any
failure while most recent attempts fail (the breaker's window). Only once per round: a
failure of a request sent before the last halving does not halve again, so the requests
a slow spell caught in flight together count once. A flaky endpoint's plain refusals
among successes (a 500 to a third of the requests) are the breaker's business, not a
reason to send fewer.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.core.defaults import OUTBOX_CONCURRENCY, OUTBOX_MAX_CONCURRENCY


@dataclass(frozen=True, slots=True)
class Ticket:
    """What the limit was when a request was sent."""

    round: int  # halvings before it
    using: bool  # the limit at least half used, this request counted


class Concurrency:
    """The sender's limit of requests in flight (AIMD)."""

    def __init__(self, start: int = OUTBOX_CONCURRENCY, cap: int = OUTBOX_MAX_CONCURRENCY) -> None:
        self.cap = cap
        self.limit = min(start, cap)
        self.round = 0

    def room(self, in_flight: int) -> int:
        """Requests that may be sent now."""
        return max(0, self.limit - in_flight)

    def sent(self, in_flight: int) -> Ticket:
        """A request is sent, ``in_flight`` others being in flight."""
        return Ticket(self.round, 2 * (in_flight + 1) >= self.limit)

    def succeeded(self, ticket: Ticket) -> None:
        if ticket.using:
            self.limit = min(self.cap, self.limit + 1)

    def failed(self, ticket: Ticket, *, overloaded: bool) -> None:
        """A failed request; ``overloaded``: the failure says to send fewer."""
        if overloaded and ticket.round == self.round:
            self.limit = max(1, self.limit // 2)
            self.round += 1

    def restart(self) -> None:
        """From one request (the endpoint answers again after a dead spell)."""
        self.limit = 1
        self.round += 1
