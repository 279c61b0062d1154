"""Webhook delivery worker: one background thread that POSTs notifications the way Pluggy does.

Rules (seed 003 and pluggy-api.md section 6): a JSON POST per enabled target, 2XX within the timeout is
success; anything else is retried up to 3 more times one minute apart (scaled by `time_scale`), then the
notification is dropped. A 401 is never retried. The same eventId and the same body bytes are used for
every target and every retry. A single worker keeps first attempts in emission order, and a scheduled
retry never blocks later events (retries wait in a heap, not in a sleep).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

JsonDict = dict[str, Any]

SIGNATURE_HEADER = "X-Pluggy-Signature"
USER_AGENT = "pluggy-emulator-webhooks/1.0"
MAX_RETRIES = 3  # "we retry the notification up to 3 times, with one minute in between"
RETRY_INTERVAL_SECONDS = 60.0
NEVER_RETRIED = frozenset({401})  # current docs: a 401 is never retried
_MAX_ERROR_TEXT = 200


def _iso_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class DeliveryTarget:
    """Where one notification goes: a Webhook resource (with its headers) or an item's webhookUrl."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    webhook_id: str | None = None  # None for an item's webhookUrl (which never carries custom headers)


@dataclass(frozen=True)
class Notification:
    """One event as emitted: the same eventId and payload go to every target."""

    event_id: str
    event: str
    payload: JsonDict
    targets: tuple[DeliveryTarget, ...]


@dataclass
class _Attempt:
    notification: Notification
    target: DeliveryTarget
    body: bytes
    signature: str | None
    number: int  # 1 = first attempt


class WebhookDispatcher:
    """Queue + worker thread delivering notifications, with retries and an attempt log."""

    def __init__(
        self,
        *,
        signing_key: bytes | None = None,
        time_scale: float = 1.0,
        timeout_seconds: float = 5.0,
        max_retries: int = MAX_RETRIES,
        on_final: Callable[[DeliveryTarget, bool], None] | None = None,
    ) -> None:
        if time_scale < 0 or timeout_seconds <= 0 or max_retries < 0:
            raise ValueError("time_scale >= 0, timeout_seconds > 0 and max_retries >= 0 are required")
        self._signing_key = signing_key
        self._retry_delay = RETRY_INTERVAL_SECONDS * time_scale
        self._timeout = timeout_seconds
        self._max_retries = max_retries
        self.on_final = on_final
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._log: list[JsonDict] = []
        self._log_lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pluggy-emulator-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the worker; undelivered notifications are discarded (the emulator is going away)."""
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cond.notify_all()
        if self._thread is not None:
            # An in-flight POST can take up to the delivery timeout to give up.
            self._thread.join(timeout if timeout is not None else self._timeout + 5.0)
            self._thread = None

    # --- producer side ---------------------------------------------------------------------------

    def enqueue(self, notification: Notification) -> None:
        """Schedule the first attempt to every target; returns at once (never blocks on the network)."""
        if not notification.targets:
            return
        body = json.dumps(notification.payload, separators=(",", ":"), ensure_ascii=False).encode()
        signature = (
            hmac.new(self._signing_key, body, hashlib.sha256).hexdigest() if self._signing_key is not None else None
        )
        now = time.monotonic()
        with self._cond:
            if self._stopping:
                return
            for target in notification.targets:
                attempt = _Attempt(notification, target, body, signature, 1)
                heapq.heappush(self._heap, (now, next(self._seq), attempt))
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued, scheduled for retry or in flight; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._heap and self._in_flight == 0, timeout)

    def deliveries(self) -> list[JsonDict]:
        with self._log_lock:
            return [dict(record) for record in self._log]

    def clear_deliveries(self) -> None:
        with self._log_lock:
            self._log.clear()

    # --- worker ----------------------------------------------------------------------------------

    def _next_due(self) -> _Attempt | None:
        """Pop the next due attempt, waiting as needed; None once stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        _, _, attempt = heapq.heappop(self._heap)
                        self._in_flight += 1
                        return attempt
                    self._cond.wait(wait)
                else:
                    self._cond.wait()

    def _run(self) -> None:
        # Not trusting the environment keeps HTTP(S)_PROXY settings from rerouting loopback deliveries.
        session = requests.Session()
        session.trust_env = False
        try:
            while (attempt := self._next_due()) is not None:
                retry_at: float | None = None
                try:
                    retry_at = self._deliver(session, attempt)
                finally:
                    with self._cond:
                        self._in_flight -= 1
                        if retry_at is not None and not self._stopping:
                            retry = _Attempt(
                                attempt.notification,
                                attempt.target,
                                attempt.body,
                                attempt.signature,
                                attempt.number + 1,
                            )
                            heapq.heappush(self._heap, (retry_at, next(self._seq), retry))
                        self._cond.notify_all()
        finally:
            session.close()

    def _deliver(self, session: requests.Session, attempt: _Attempt) -> float | None:
        """One POST; returns the monotonic time of the retry to schedule, or None when final."""
        target = attempt.target
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        headers.update(target.headers)
        if attempt.signature is not None:
            headers[SIGNATURE_HEADER] = attempt.signature
        started_at = _iso_now()
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        answer = ""
        try:
            resp = session.post(
                target.url, data=attempt.body, headers=headers, timeout=self._timeout, allow_redirects=False
            )
            status = resp.status_code
            answer = resp.text[:_MAX_ERROR_TEXT]  # what Pluggy's delivery log shows of the receiver's answer
            resp.close()
        except requests.Timeout:
            error = "timeout"
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {str(exc)[:_MAX_ERROR_TEXT]}"
        duration_ms = round((time.monotonic() - started) * 1000)
        ok = status is not None and 200 <= status < 300
        retryable = not ok and status not in NEVER_RETRIED and attempt.number <= self._max_retries
        retry_at = time.monotonic() + self._retry_delay if retryable else None
        outcome = "delivered" if ok else ("retrying" if retryable else "dropped")
        record: JsonDict = {
            "eventId": attempt.notification.event_id,
            "event": attempt.notification.event,
            "url": target.url,
            "webhookId": target.webhook_id,
            "attempt": attempt.number,
            "statusCode": status,
            "response": answer,
            "error": error,
            "startedAt": started_at,
            "finishedAt": _iso_now(),
            "durationMs": duration_ms,
            "outcome": outcome,
        }
        with self._log_lock:
            self._log.append(record)
        if retry_at is None and self.on_final is not None:
            self.on_final(target, ok)
        return retry_at
