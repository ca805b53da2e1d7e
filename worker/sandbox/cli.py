"""``disburse sandbox`` / ``python -m worker.sandbox``: serve the simulator in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from worker.sandbox.config import (
    ACCOUNT_ID,
    MERCHANT_NO,
    PAGINATION_STYLES,
    SandboxConfig,
    SandboxConfigError,
)
from worker.sandbox.server import Sandbox

DEFAULT_PORT = 8700

# argparse dest -> SandboxConfig knob (only options given on the command line are applied)
_KNOBS = (
    "failure_ratio",
    "settle_delay",
    "latency",
    "latency_median",
    "latency_sigma",
    "error_ratio",
    "error_after_record_share",
    "hang_ratio",
    "hang_seconds",
    "not_found_code",
    "repeat_code",
    "query_lag",
    "drop_webhook_ratio",
    "duplicate_webhook_ratio",
    "webhook_target",
    "webhook_time_scale",
    "webhook_retry_schedule",
    "rate_ceiling",
    "token_lifetime",
    "page_size",
    "pagination_style",
    "balance",
    "seed",
    "merchant_no",
    "account_id",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox's command-line options (every knob of :class:`SandboxConfig`)."""
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    add("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: free)")
    add("--failure-ratio", type=float, help="share of payouts that settle FAILED (default 0.1)")
    add(
        "--settle-delay",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="seconds from acceptance to settlement, uniform (default 0.2 1.0)",
    )
    add("--latency", type=float, help="seconds added before answering any API call")
    add(
        "--latency-median",
        type=float,
        metavar="SECONDS",
        help="plus a lognormal wait per request like a real provider's: median * exp(sigma * "
        "N(0,1)), at most 10 medians (default 0: none; e.g. 0.25)",
    )
    add(
        "--latency-sigma",
        type=float,
        metavar="SIGMA",
        help="the spread of that wait (default 0.6: p90 about 2.2x, p99 4x the median)",
    )
    add("--error-ratio", type=float, help="share of payout POSTs answered HTTP 500")
    add(
        "--error-after-record-share",
        type=float,
        help="share of those HTTP 500s sent after recording the payout (default 0.5)",
    )
    add(
        "--hang-ratio",
        type=float,
        help="share of payout POSTs recorded but never answered (connection closed later)",
    )
    add("--hang-seconds", type=float, help="how long a hung request is held (default 30)")
    add(
        "--not-found-code",
        metavar="CODE",
        help="top-level code answering a query for an unknown tradeNo (default 4004)",
    )
    add(
        "--repeat-code",
        metavar="CODE",
        help="top-level code answering a POST that repeats a known tradeNo (default 4005)",
    )
    add(
        "--query-lag",
        type=float,
        metavar="SECONDS",
        help="queryPayOutResult shows a payout only this long after recording it",
    )
    add("--drop-webhook-ratio", type=float, help="share of payouts whose webhook is never sent")
    add(
        "--duplicate-webhook-ratio",
        type=float,
        help="share of payouts whose webhook is delivered twice",
    )
    add("--no-webhooks", action="store_true", help="send no webhooks at all")
    add(
        "--webhook-target",
        metavar="URL",
        help="deliver every webhook here instead of the payout's notifyUrl",
    )
    add(
        "--allow-remote-webhooks",
        action="store_true",
        help="also call non-loopback webhook URLs (default: loopback only)",
    )
    add("--webhook-time-scale", type=float, help="multiply the webhook retry schedule")
    add(
        "--webhook-retry-schedule",
        type=float,
        nargs="+",
        metavar="SECONDS",
        help="delays between webhook retries (default 2 5 10 30 3600 10800 10800 10800)",
    )
    add(
        "--rate-ceiling",
        type=float,
        metavar="PER_SECOND",
        help="payout POSTs per second (sliding 1 s) above which HTTP 429 is answered",
    )
    add("--token-lifetime", type=float, help="access token lifetime in seconds (default 3600)")
    add("--page-size", type=int, help="rows per page of the disbursement list (default 25)")
    add("--pagination-style", choices=PAGINATION_STYLES, help="list metadata spelling")
    add(
        "--flat-details",
        action="store_true",
        help="answer details as data{...} instead of the seed's nested data{data{...}}",
    )
    add("--balance", help="starting available balance (default 1000000000000)")
    add("--merchant-no", help=f"merchantNo to accept (default {MERCHANT_NO})")
    add("--account-id", help=f"details account id (default {ACCOUNT_ID})")
    add("--seed", type=int, help="seed for reproducible outcomes and faults")


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    knobs: dict[str, Any] = {}
    for name in _KNOBS:
        value = getattr(args, name, None)
        if value is not None:
            knobs[name] = value
    if getattr(args, "no_webhooks", False):
        knobs["webhooks"] = False
    if getattr(args, "allow_remote_webhooks", False):
        knobs["allow_remote_webhooks"] = True
    if getattr(args, "flat_details", False):
        knobs["nested_details"] = False
    config = SandboxConfig()
    config.update(knobs)
    return config


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; prints the URL first. Returns the exit status."""
    try:
        config = config_from_args(args)
    except SandboxConfigError as exc:
        print(f"disburse sandbox: {exc}", file=sys.stderr)
        return 2
    sandbox = Sandbox(config)
    try:
        sandbox.start(args.host, args.port)
    except OSError as exc:
        print(f"disburse sandbox: {exc}", file=sys.stderr)
        return 1
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _stop)
    print(f"disburse sandbox listening on {sandbox.url}", flush=True)
    print(
        f"  merchantNo={config.merchant_no} account_id={config.account_id} "
        + (f"more merchants={','.join(config.accounts)} " if config.accounts else "")
        + f"failure_ratio={config.failure_ratio} settle_delay={list(config.settle_delay)} "
        f"webhooks={'on' if config.webhooks else 'off'}"
        + (
            f" latency_median={config.latency_median:g} latency_sigma={config.latency_sigma:g}"
            if config.latency_median
            else ""
        )
        + (f" webhook_target={config.webhook_target}" if config.webhook_target else ""),
        flush=True,
    )
    # Its own credentials (public: it is no place for real money), for the workers.
    from worker.dev.credentials import sandbox_env

    settings = " ".join(f"{k}={v}" for k, v in sandbox_env(sandbox.url, config).items())
    print(f"  workers' settings: {settings}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.sandbox", description="The local payout provider simulator."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
