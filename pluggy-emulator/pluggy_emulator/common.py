"""What every emulated resource shares: the JSON type, Pluggy's error body, its date format and the clock."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

JsonDict = dict[str, Any]

DAY_MS = 86_400_000
BRT_OFFSET_MS = 3 * 3_600_000  # Sao Paulo is UTC-3: transaction dates are midnight there (03:00Z)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PluggyApiError(Exception):
    """An API error rendered as Pluggy's body `{code, message, codeDescription?, ...}`."""

    def __init__(self, status: int, message: str, code_description: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code_description = code_description
        self.extra = extra

    def body(self) -> JsonDict:
        body: JsonDict = {"code": self.status, "message": self.message}
        if self.code_description is not None:
            body["codeDescription"] = self.code_description
        body.update(self.extra)
        return body


def iso_from_ms(ms: int) -> str:
    """Pluggy's date format `YYYY-MM-DDTHH:mm:ss.sssZ`."""
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def money(value: float) -> float:
    """An amount in reais, to the cent (and never -0.0)."""
    return round(value + 0.0, 2)


def parse_iso_ms(value: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 timestamp (naive means UTC); ValueError if invalid."""
    text = value.strip()
    if _DATE.fullmatch(text):
        text += "T00:00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    # Integer arithmetic: float timestamps can be off by one millisecond.
    delta = dt - _EPOCH
    return delta.days * DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000


def sao_paulo_midnight_ms(now_ms: int) -> int:
    """Midnight in Sao Paulo of the day `now_ms` falls on there, as UTC milliseconds."""
    local_day = (now_ms - BRT_OFFSET_MS) // DAY_MS
    return local_day * DAY_MS + BRT_OFFSET_MS


class Clock:
    """The emulator's "now": milliseconds that strictly increase, so every change gets a later `updatedAt`.

    `source` gives seconds since the epoch (default: the wall clock); a test can pass another to put the
    emulator on another date. In timed mode it is the scaled clock of timeline.py. It drives resource
    timestamps and dated rules (the legacy /transactions sunset), not API key lifetimes, which always run on
    real time, nor webhook retries (60 s x time_scale of wall time).

    `pause`, `resume` and `advance` move this clock against its source (`PluggyEmulator.pause_clock` and
    friends); untouched, it reads the source as is.
    """

    def __init__(self, source: Callable[[], float] | None = None) -> None:
        self._source = source
        self._last = 0
        self._control = threading.Lock()
        # (milliseconds added to the source, the source's reading when paused or None): replaced as a whole,
        # so a reader never sees half of a change.
        self._shift: tuple[int, int | None] = (0, None)

    def _source_ms(self) -> int:
        if self._source is None:
            return time.time_ns() // 1_000_000
        return int(self._source() * 1000)

    def wall_ms(self) -> int:
        """The current time in milliseconds (not forced to increase)."""
        offset, paused_at = self._shift
        return (self._source_ms() if paused_at is None else paused_at) + offset

    def now_ms(self) -> int:
        self._last = max(self.wall_ms(), self._last + 1)
        return self._last

    @property
    def paused(self) -> bool:
        return self._shift[1] is not None

    def pause(self) -> bool:
        """Stand still from now on; False if it already did."""
        with self._control:
            offset, paused_at = self._shift
            if paused_at is not None:
                return False
            self._shift = (offset, self._source_ms())
            return True

    def resume(self) -> bool:
        """Run on from where it stood (the paused span never happened); False if it was not paused."""
        with self._control:
            offset, paused_at = self._shift
            if paused_at is None:
                return False
            self._shift = (offset - (self._source_ms() - paused_at), None)
            return True

    def advance(self, ms: int) -> None:
        """Jump forward (paused or not)."""
        if ms < 0:
            raise ValueError("the clock only moves forward")
        with self._control:
            offset, paused_at = self._shift
            self._shift = (offset + ms, paused_at)
