"""Rate limits: Pluggy's 429 with its headers, as a fixed window per route for all callers together.

Pluggy documents per-endpoint limits per minute (pluggy-api.md section 7) and counts per source IP; it does
not say how its window moves, so the emulator keeps one fixed window per "METHOD /template" route
(DELIBERATE_DIFFERENCES "rate-limits"). The window is measured on the emulator's clock in timed mode
(Pluggy's minute takes 60 x time_scale wall seconds) and on the wall clock in instant mode.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Literal

from pluggy_emulator.common import JsonDict

RateLimits = int | Mapping[str, int] | Literal["auto", "pluggy"] | None

# Pluggy's documented per-endpoint limits, per minute (pluggy-api.md section 7); the docs do not mention
# /v2/transactions separately, so it gets the transactions budget of its own.
PLUGGY_RATE_LIMITS: dict[str, int] = {
    "POST /auth": 360,
    "GET /accounts": 360,
    "GET /accounts/{id}": 360,
    "GET /transactions": 360,
    "GET /transactions/{id}": 360,
    "GET /v2/transactions": 360,
    "GET /investments": 360,
    "GET /investments/{id}": 360,
    "GET /investments/{id}/transactions": 360,
    "PATCH /items/{id}": 20,
}


def resolve_limits(given: RateLimits, *, timed: bool) -> int | dict[str, int] | None:
    """`rate_limit_per_minute` as the limits in force: "auto" is Pluggy's in timed mode and none otherwise."""
    if given == "auto":
        given = "pluggy" if timed else None
    if given == "pluggy":
        return dict(PLUGGY_RATE_LIMITS)
    if given is None:
        return None
    if isinstance(given, int):
        if given < 1:
            raise ValueError("rate_limit_per_minute must be >= 1")
        return given
    if isinstance(given, str) or any(limit < 1 for limit in given.values()):
        raise ValueError('rate_limit_per_minute: "auto", "pluggy", None, an int >= 1 or a mapping of them')
    return dict(given)


class RateLimiter:
    """Counts calls per route in fixed windows of `window_seconds` (on `now`, seconds)."""

    def __init__(
        self,
        limits: int | dict[str, int] | None,
        *,
        window_seconds: float,
        now: Callable[[], float],
        lock: threading.RLock,
        wall_seconds: float | None,
    ) -> None:
        """`wall_seconds`: wall seconds per `now` second when the headers give scaled seconds (timed mode with a
        time_scale other than 1), else None: whole seconds, as Pluggy sends them."""
        if window_seconds <= 0:
            raise ValueError("rate_limit_window_seconds must be > 0")
        self.limits = limits
        self.window = window_seconds
        self._now = now
        self._lock = lock
        self._wall_seconds = wall_seconds
        self.counters: dict[str, tuple[float, int]] = {}  # route -> (window start, calls in it)

    def limit_for(self, route: str) -> int | None:
        limits = self.limits
        if limits is None or isinstance(limits, int):
            return limits
        return limits.get(route, limits.get("*"))

    def check(self, route: str) -> tuple[dict[str, str], bool]:
        """Count a call: (RateLimit-* headers, over the limit?)."""
        limit = self.limit_for(route)
        if limit is None:
            return {}, False
        now = self._now()
        with self._lock:
            start, count = self.counters.get(route, (now, 0))
            if now - start >= self.window:
                start, count = now, 0
            count += 1
            self.counters[route] = (start, count)
        headers = {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(max(0, limit - count)),
            "RateLimit-Reset": self.header_seconds(start + self.window - now),
        }
        if count > limit:
            # Pluggy's Retry-After is always the window length (60 s); RateLimit-Reset is the time left.
            headers["Retry-After"] = self.header_seconds(self.window)
            return headers, True
        return headers, False

    def header_seconds(self, seconds: float) -> str:
        """Whole seconds (at least 1) as Pluggy sends them; scaled to wall seconds (3 decimals) in timed mode."""
        if self._wall_seconds is None:
            return str(max(1, math.ceil(seconds)))
        return f"{max(0.001, seconds * self._wall_seconds):.3f}"

    def _require_limit(self, route: str) -> int:
        limit = self.limit_for(route)
        if limit is None:
            raise ValueError(f"{route!r} has no rate limit (the limits in force: {self.limits!r})")
        return limit

    def budget(self, route: str) -> JsonDict:
        """{route, limit, used, remaining, resetSeconds}: calls counted in the route's current window and the
        seconds until it ends (emulator seconds in timed mode; 0 and the full budget when no window is open)."""
        limit = self._require_limit(route)
        now = self._now()
        with self._lock:
            start, count = self.counters.get(route, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        reset = start + self.window - now if count else 0.0
        return {
            "route": route,
            "limit": limit,
            "used": count,
            "remaining": max(0, limit - count),
            "resetSeconds": round(reset, 3),
        }

    def use_up(self, route: str, *, leave: int = 0) -> JsonDict:
        """Another caller used the budget: a window opens now with only `leave` calls left; returns the budget."""
        limit = self._require_limit(route)
        if leave < 0:
            raise ValueError("leave must be >= 0")
        now = self._now()
        with self._lock:
            self.counters[route] = (now, max(0, limit - leave))
        return self.budget(route)

    def reset(self, route: str | None = None) -> None:
        """Forget the calls counted (on one route, or all): the next call opens a fresh window."""
        with self._lock:
            if route is None:
                self.counters.clear()
            else:
                self.counters.pop(route, None)
