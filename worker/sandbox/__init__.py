"""``disburse sandbox``: a faithful local simulator of the payout provider.

Serves the payout API (seeds 000/001/002/004: disbursements, queryPayOutResult,
queryBalance; with or without a ``/{id|ar|jp|kh}`` prefix), the disbursement-details
API (seed 003: OAuth token, details, paged list), settles every accepted payout
after a delay and sends signed webhooks with the provider's retry schedule. Faults
(500s, hangs, 429s, dropped or duplicated webhooks, latency) are knobs, changeable
at runtime through ``POST /_sandbox/config``; ``/_sandbox/payouts`` and
``/_sandbox/stats`` show what it received. Several merchant accounts, each with its
own secret and rate window (the ``accounts`` knob; by default the workers' own
``VEXORA_<MARKET>_*`` accounts), are told apart by the ``merchantNo`` header.

    with Sandbox(SandboxConfig(failure_ratio=0, seed=1)) as sandbox:
        requests.post(sandbox.url + "/v1/vexora/disbursements", ...)
"""

from worker.sandbox.cli import add_arguments, config_from_args, run
from worker.sandbox.config import SandboxConfig, SandboxConfigError
from worker.sandbox.server import Sandbox

__all__ = [
    "Sandbox",
    "SandboxConfig",
    "SandboxConfigError",
    "add_arguments",
    "config_from_args",
    "run",
]
