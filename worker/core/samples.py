"""Made-up but valid payout rows for each market: the demo's batch and the benchmarks'."""

from __future__ import annotations

import random
from typing import Any

_KATAKANA = ["ヤマダ", "タロウ", "サトウ", "ハナコ", "スズキ", "イチロー", "タナカ", "ユウコ"]
_NAMES = ["Rizky", "Pratama", "Sophea", "Chan", "Lucia", "Gomez", "Dara", "Sok"]


def sample_row(market: str, index: int, rng: random.Random) -> dict[str, Any]:
    """One valid row in ``market``'s own field names, with a unique reference."""
    reference = f"demo-{market.lower()}-{index:06d}"
    email = f"user{index}@example.com"
    if market == "ID":
        return {
            "reference": reference,
            "amount": str(rng.randrange(10_000, 5_000_000, 500)),
            "customerName": rng.choice(_NAMES),
            "mobile": "0812" + f"{rng.randrange(10**7):07d}",
            "email": email,
            "bankAccountNo": f"{rng.randrange(10**12):013d}",
            "bankCode": "0002",
        }
    if market == "AR":
        return {
            "reference": reference,
            "amount": str(rng.randrange(100, 900_000)),
            "accountNo": f"{rng.randrange(10**17):018d}",
            "mobile": "09" + f"{rng.randrange(10**8):08d}",
            "email": email,
            "firstname": rng.choice(_NAMES),
            "lastname": rng.choice(_NAMES),
        }
    if market == "JP":
        return {
            "reference": reference,
            "amount": str(rng.randrange(100, 300_000)),
            "bankCode": "0004",
            "bankNumber": f"{rng.randrange(10**7):07d}",
            "userId": f"jp_user_{index}",
            "mobile": "090" + f"{rng.randrange(10**8):08d}",
            "email": email,
            "firstname": rng.choice(_KATAKANA),
            "lastname": rng.choice(_KATAKANA),
        }
    if market == "KH":
        usd = rng.random() < 0.5
        cents = rng.randrange(100, 50_000)
        amount = f"{cents // 100}.{cents % 100:02d}" if usd else str(rng.randrange(4000, 4_000_000))
        return {
            "reference": reference,
            "currency": "USD" if usd else "KHR",
            "amount": amount,
            "firstname": rng.choice(_NAMES),
            "lastname": rng.choice(_NAMES),
            "mobile": f"{rng.randrange(10**7, 10**9)}",
            "email": email,
            "channelCode": "EWALLET",
            "wayCode": "LANTON",
            "bankCode": "LANTON",
            "bankNumber": f"{rng.randrange(10**8):08d}",
            "accountId": f"lanton_{index}",
        }
    raise ValueError(f"no samples for market {market!r}")


def sample_rows(market: str, count: int, *, seed: int = 7, start: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(f"{market}-{seed}")
    return [sample_row(market, start + i, rng) for i in range(count)]
