"""What every emulated resource shares: the JSON type, Pluggy's error body and the clock behind `updatedAt`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

JsonDict = dict[str, Any]


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


class Clock:
    """The emulator's "now": milliseconds that strictly increase, so every change gets a later `updatedAt`.

    `source` gives seconds since the epoch (default: the wall clock); a test can pass another to put the
    emulator on another date. In timed mode it is the scaled clock of timeline.py. It drives resource
    timestamps and dated rules (the legacy /transactions sunset), not API key lifetimes, which always run on
    real time, nor webhook retries (60 s x time_scale of wall time).
    """

    def __init__(self, source: Callable[[], float] | None = None) -> None:
        self._source = source
        self._last = 0

    def wall_ms(self) -> int:
        """The source's current time in milliseconds (not forced to increase)."""
        if self._source is None:
            return time.time_ns() // 1_000_000
        return int(self._source() * 1000)

    def now_ms(self) -> int:
        self._last = max(self.wall_ms(), self._last + 1)
        return self._last
