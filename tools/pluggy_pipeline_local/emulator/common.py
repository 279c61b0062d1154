"""What every emulated resource shares: the JSON type, Pluggy's error body and the clock behind `updatedAt`."""

from __future__ import annotations

import time
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
    """Wall-clock milliseconds that strictly increase, so every change gets a later `updatedAt`."""

    def __init__(self) -> None:
        self._last = 0

    def now_ms(self) -> int:
        now = time.time_ns() // 1_000_000
        self._last = max(now, self._last + 1)
        return self._last
