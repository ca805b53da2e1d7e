"""Signed webhook delivery with the provider's retry schedule, loopback-only by default.

A delivery succeeds only when the receiver answers 2xx with the body exactly ``OK``
within ``webhook_timeout``; otherwise it is retried after each delay of
``webhook_retry_schedule`` (times ``webhook_time_scale``) and then given up. A
small pool of daemon threads does the HTTP; the scheduler times the retries.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from worker.sandbox.config import SandboxConfig
from worker.sandbox.protocol import SIGN_FIELD, sign
from worker.sandbox.scheduler import Scheduler
from worker.sandbox.state import Payout, State

log = logging.getLogger(__name__)

URL_OK = "ok"
URL_REMOTE = "remote"
URL_INVALID = "invalid"


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, allow_remote: bool) -> str:
    """``ok`` to call, ``remote`` (not loopback and not allowed) or ``invalid``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return URL_INVALID
    if parts.scheme not in ("http", "https") or not host:
        return URL_INVALID
    if not allow_remote and not is_loopback(host):
        return URL_REMOTE
    return URL_OK


def webhook_body(payout: Payout, secret: str) -> dict[str, str]:
    body = {
        "platFormTradeNo": payout.platform_trade_no,
        "tradeNo": payout.trade_no,
        "amount": payout.amount,
        "status": payout.status,
        "message": payout.message,
        "timestamp": str(int(time.time() * 1000)),
    }
    if payout.remark:
        body["remark"] = payout.remark
    body[SIGN_FIELD] = sign(body, secret)
    return body


@dataclass
class Delivery:
    """One webhook (a duplicate is a second Delivery) and how many attempts it has had."""

    trade_no: str
    generation: int
    notify_url: str
    body: dict[str, str]
    attempts: int = 0


class WebhookSender:
    def __init__(
        self, config: SandboxConfig, state: State, scheduler: Scheduler, workers: int = 8
    ) -> None:
        self._config = config
        self._state = state
        self._scheduler = scheduler
        self._workers = workers
        self._lock = threading.Lock()
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._local = threading.local()

    # --- entry points -------------------------------------------------------------------

    def payout_settled(self, payout: Payout, generation: int) -> None:
        """Send (or drop) the webhook for a payout that just reached its final status."""
        config = self._config
        if not config.webhooks:
            self._state.count("webhooks_suppressed")
            return
        if payout.fate.drop_webhook:
            self._state.count("webhooks_dropped")
            return
        notify_url = payout.fields.get("notifyUrl", "")
        # Signed with the secret of the merchant account that paid it.
        secret = config.secret_of(payout.merchant_no) or config.app_secret
        self._submit(
            Delivery(payout.trade_no, generation, notify_url, webhook_body(payout, secret))
        )
        if payout.fate.duplicate_webhook:
            self._state.count("webhooks_duplicated")
            second = Delivery(payout.trade_no, generation, notify_url, webhook_body(payout, secret))
            first_retry = config.webhook_retry_schedule[:1] or (2.0,)
            self._scheduler.call_later(
                first_retry[0] * config.webhook_time_scale, lambda: self._submit(second)
            )

    def reopen(self) -> None:
        with self._lock:
            self._closed = False

    def stop(self, timeout: float = 0.5) -> None:
        """Stop the pool; deliveries in flight finish on their own (daemon threads)."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
            old, self._queue = self._queue, queue.Queue()
        for _ in threads:
            old.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- the pool -----------------------------------------------------------------------

    def _submit(self, delivery: Delivery) -> None:
        with self._lock:
            if self._closed:
                return
            if not self._threads:
                for i in range(self._workers):
                    thread = threading.Thread(
                        target=self._work,
                        args=(self._queue,),
                        name=f"sandbox-webhook-{i}",
                        daemon=True,
                    )
                    thread.start()
                    self._threads.append(thread)
            self._queue.put(delivery)

    def _work(self, jobs: queue.Queue[Delivery | None]) -> None:
        while True:
            delivery = jobs.get()
            if delivery is None:
                return
            try:
                self._attempt(delivery)
            except Exception:
                log.exception("sandbox webhook delivery crashed")

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # never through a proxy: loopback means loopback
            self._local.session = session
        return session

    def _attempt(self, delivery: Delivery) -> None:
        config, state = self._config, self._state
        if delivery.generation != state.generation:
            return  # the sandbox was reset
        if not config.webhooks:
            state.count("webhooks_suppressed")
            return
        url = config.webhook_target or delivery.notify_url
        verdict = check_url(url, config.allow_remote_webhooks)
        if verdict == URL_REMOTE:
            state.count("webhooks_skipped_remote")
            log.warning(
                "sandbox webhook for %s not sent: %s is not on a loopback address "
                "(--webhook-target URL delivers every webhook to a local receiver)",
                delivery.trade_no,
                _path(url),
            )
            return
        if verdict == URL_INVALID:
            state.count("webhooks_skipped_invalid")
            log.warning("sandbox webhook for %s not sent: no http(s) URL", delivery.trade_no)
            return
        state.count("webhooks_sent")
        delivery.attempts += 1
        failure = self._post(url, delivery.body, config.webhook_timeout)
        if delivery.generation != state.generation:
            return  # reset while the POST was in flight: count nothing
        state.webhook_attempted(delivery.trade_no, delivery.generation, failure is None)
        if failure is None:
            state.count("webhooks_delivered")
            return
        schedule = config.webhook_retry_schedule
        retry = delivery.attempts - 1
        given_up = retry >= len(schedule)
        # The path only: a notify URL's host and query may be private.
        log.warning(
            "sandbox webhook for %s to %s failed (attempt %d: %s); %s",
            delivery.trade_no,
            _path(url),
            delivery.attempts,
            failure,
            "given up"
            if given_up
            else f"next try in {schedule[retry] * config.webhook_time_scale:g} s",
        )
        if given_up:
            state.count("webhooks_failed")
            return
        state.count("webhooks_retried")
        self._scheduler.call_later(
            schedule[retry] * config.webhook_time_scale, lambda: self._submit(delivery)
        )

    def _post(self, url: str, body: dict[str, str], timeout: float) -> str | None:
        """None once delivered; else what went wrong, in a few words."""
        try:
            # No redirects: a loopback receiver must not be able to send us elsewhere.
            response = self._session().post(url, json=body, timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            return type(exc).__name__  # its text repeats the URL
        if not 200 <= response.status_code < 300:
            return f"HTTP {response.status_code}"
        if response.content != b"OK":
            return f"HTTP {response.status_code} without the body OK"
        return None


def _path(url: str) -> str:
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return "(unparseable URL)"
