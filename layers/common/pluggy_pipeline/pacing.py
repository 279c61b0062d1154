"""Pacing Pluggy calls across every processor container: one slot counter per route in PacerTable.

Pluggy limits each endpoint per source IP per minute (pluggy-api.md section 7), and every Lambda behind one
NAT shares that budget, so a per-container limiter cannot keep a storm inside it. Each paced call reserves
the next free slot of its route with one atomic `ADD` (a GCRA counter: the slot moves `interval` per call)
and sleeps until that slot. Callers queue in slot order; a caller never waits longer than the calls
reserved before it, which is bounded by how many containers run (ProcessorMaxConcurrency), so waits stay
short and no message needs to leave the function to wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from pluggy_pipeline.aws import translate
from pluggy_pipeline.errors import PermanentError, RetryLater, TransientError
from pluggy_pipeline.observability import logger, metrics

# The routes the processor calls that Pluggy documents a limit for (360/min each), as "METHOD path".
PACED_ROUTES = ("POST /auth", "GET /accounts", "GET /v2/transactions", "GET /investments")
_TTL_SECONDS = 86_400


class PacingTooSlow(RetryLater):
    """The route's next free slot is further away than the caller may wait."""

    def __init__(self, route: str, retry_after: float) -> None:
        super().__init__(f"Pluggy {route}: next paced slot in {retry_after:.1f} s", retry_after=retry_after)


class SharedPacer:
    """`acquire(route)` returns once the route's next slot has come (a no-op for routes not limited)."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        table_name: str,
        limits: Mapping[str, int],
        *,
        window_seconds: float = 60.0,
        max_wait: float = 20.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        self._client_factory = client_factory
        self._table = table_name
        # Milliseconds between two calls of a route: the counter is an integer in DynamoDB.
        self._interval_ms = {route: max(1, round(window_seconds * 1000 / n)) for route, n in limits.items() if n > 0}
        self._max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self.waited = 0.0  # seconds slept, for the metrics and the benchmarks

    def acquire(self, route: str) -> None:
        interval = self._interval_ms.get(route)
        if interval is None:
            return
        now_ms = int(self._clock() * 1000)
        try:
            slot_ms = self._reserve(route, interval, now_ms)
        except PermanentError as exc:
            # A misconfigured pacer (table missing, no grant) must not park healthy messages: the call goes
            # unpaced, and a 429 still holds its message. Logged and counted so the misconfiguration shows.
            logger.error("pacing unavailable; calling Pluggy unpaced", extra={"route": route, "error": str(exc)})
            metrics.add_metric(name="PacingUnavailable", unit=MetricUnit.Count, value=1)
            return
        wait = (slot_ms - now_ms) / 1000
        if wait > self._max_wait:
            # The slot stays reserved and unused: only a crowd far larger than the function's concurrency gets here.
            raise PacingTooSlow(route, wait)
        if wait > 0:
            self.waited += wait
            self._sleep(wait)

    def _reserve(self, route: str, interval: int, now_ms: int) -> int:
        """The slot (epoch ms) this call may start at; the counter then points one interval past it."""
        key = {"route": {"S": route}}
        # A counter behind `now` (an idle route) restarts at now: idle time is not saved up as a burst.
        values = {":floor": {"N": str(now_ms)}, ":ttl": {"N": str(now_ms // 1000 + _TTL_SECONDS)}}
        client = self._client_factory()
        for _ in range(4):
            try:
                answer = client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression="ADD slotMs :i SET expiresAt = :ttl",
                    ConditionExpression="slotMs >= :floor",
                    ExpressionAttributeValues={**values, ":i": {"N": str(interval)}},
                    ReturnValues="UPDATED_NEW",
                )
                return int(answer["Attributes"]["slotMs"]["N"]) - interval
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise translate(exc, "pacing a Pluggy call") from None
            except Exception as exc:
                raise translate(exc, "pacing a Pluggy call") from None
            try:
                client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression="SET slotMs = :next, expiresAt = :ttl",
                    ConditionExpression="attribute_not_exists(slotMs) OR slotMs < :floor",
                    ExpressionAttributeValues={**values, ":next": {"N": str(now_ms + interval)}},
                )
                return now_ms
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise translate(exc, "pacing a Pluggy call") from None
                # Another container restarted the counter first: take the next slot after its.
            except Exception as exc:
                raise translate(exc, "pacing a Pluggy call") from None
        raise TransientError(f"pacing {route}: the slot counter kept changing under us")


def parse_limits(per_minute: int) -> dict[str, int]:
    """Every paced route at `per_minute` calls per window (0 turns pacing off)."""
    return {route: per_minute for route in PACED_ROUTES} if per_minute > 0 else {}
