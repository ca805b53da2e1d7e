"""Forged provider notifications, posted to the web receiver while the chaos runs.

The two forgers a payments auditor worries about (issue 21): someone who read the
sandbox's secret in this repository, and someone who holds one provider account's
secret and signs notifications for another account's orders. Each forgery claims a real
tradeNo paid or failed, under a provider id of its own. Every one must be refused (401,
or 503 while PostgreSQL is away and the order's account cannot be looked up), and none
may move a payout: the test then checks the ledger against the sandbox's own record.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence

import requests

from worker.sandbox.protocol import SIGN_FIELD, sign

WELL_KNOWN = "well-known secret"
OTHER_ACCOUNT = "another account's secret"
# What the receiver may answer a forgery: refused; "try later", or no answer in time,
# while PostgreSQL is away (the order's account cannot be looked up). Never a 2xx.
REFUSALS: frozenset[int | str] = frozenset({401, 503, "no answer"})


class Forger(threading.Thread):
    """Posts a forged notification every 0.1-0.3 s until :meth:`stop`; ``answers`` counts
    the receiver's answers by kind of forgery and HTTP status ("no answer" for none)."""

    def __init__(
        self,
        url: str,
        targets: Sequence[tuple[str, str]],
        secrets: Mapping[str, str],
        well_known: str,
        seed: int,
    ) -> None:
        super().__init__(name="forger", daemon=True)
        self.url = url
        self.targets = list(targets)  # (tradeNo, market)
        self.secrets = dict(secrets)  # market -> its account's secret
        self.well_known = well_known
        self.rng = random.Random(seed)
        self.answers: dict[str, Counter[int | str]] = {
            WELL_KNOWN: Counter(),
            OTHER_ACCOUNT: Counter(),
        }
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)

    def run(self) -> None:
        with requests.Session() as session:
            sent = 0
            while not self._stopped.wait(self.rng.uniform(0.1, 0.3)):
                trade_no, market = self.rng.choice(self.targets)
                kind, secret = self._secret(market)
                sent += 1
                body = forged(trade_no, self.rng.choice(("0000", "00029")), secret, sent)
                try:
                    answer: int | str = session.post(self.url, json=body, timeout=15).status_code
                except requests.RequestException:
                    answer = "no answer"
                self.answers[kind][answer] += 1

    def _secret(self, market: str) -> tuple[str, str]:
        if self.rng.random() < 0.5:
            return WELL_KNOWN, self.well_known
        others = sorted({s for m, s in self.secrets.items() if s != self.secrets[market]})
        return OTHER_ACCOUNT, self.rng.choice(others)


def forged(trade_no: str, status: str, secret: str, n: int) -> dict[str, str]:
    """A notification as the provider sends it (worker.sandbox.webhooks), signed with
    ``secret``, naming a provider id the provider never gave."""
    body = {
        "platFormTradeNo": f"FORGED{n:08d}",
        "tradeNo": trade_no,
        "amount": "1",
        "status": status,
        "message": "forged",
        "timestamp": str(int(time.time() * 1000)),
    }
    body[SIGN_FIELD] = sign(body, secret)
    return body
