"""PublisherFunction's work: a batch of RecordsTable stream records in, change events on the bus out.

A stream record counts as handled only once every event built from it is on the bus. PutEvents fails per
entry (throttling, an outage): failed entries are retried here with backoff, then the earliest stream record
behind any still-failed entry is reported back (ReportBatchItemFailures), and Lambda retries the batch from
that record on. A crash anywhere is a failed invocation: Lambda retries the whole batch. Either way the
checkpoint never passes a record whose events were not put, which is what makes the emit lossless; the price
is that an event may be put twice, with the same eventId (change_events.py).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pluggy_pipeline import aws
from pluggy_pipeline.change_events import SOURCE, ChangeEvent, change_events, sequence_key
from pluggy_pipeline.config import PublisherSettings
from pluggy_pipeline.observability import logger

MAX_ENTRIES_PER_CALL = 10  # PutEvents' limit
MAX_BYTES_PER_CALL = 256 * 1024


def entry_size(entry: Mapping[str, Any]) -> int:
    """EventBridge's own size rule for a PutEvents entry (Time counts 14 bytes)."""
    size = 14 if entry.get("Time") else 0
    for name in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(name, "")).encode())
    return size + sum(len(r.encode()) for r in entry.get("Resources", []))


@dataclass(frozen=True, slots=True)
class PublishResult:
    events: int
    put: int
    failed_sequence: str | None  # the first stream record to hand back to Lambda, None when all were put
    attempts: int

    def response(self) -> dict[str, list[dict[str, str]]]:
        failures = [{"itemIdentifier": self.failed_sequence}] if self.failed_sequence else []
        return {"batchItemFailures": failures}


class Publisher:
    def __init__(
        self,
        client_factory: Callable[[], Any],
        settings: PublisherSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client_factory = client_factory
        self._settings = settings
        self._sleep = sleep

    def _entry(self, event: ChangeEvent) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "Source": SOURCE,
            "DetailType": event.detail_type,
            "Detail": event.detail_json(),
            "EventBusName": self._settings.event_bus_name,
        }
        if event.time is not None:
            entry["Time"] = event.time
        return entry

    @staticmethod
    def _calls(entries: Sequence[tuple[int, dict[str, Any]]]) -> Iterator[list[tuple[int, dict[str, Any]]]]:
        call: list[tuple[int, dict[str, Any]]] = []
        size = 0
        for index, entry in entries:
            grown = size + entry_size(entry)
            if call and (len(call) == MAX_ENTRIES_PER_CALL or grown > MAX_BYTES_PER_CALL):
                yield call
                call, grown = [], entry_size(entry)
            call.append((index, entry))
            size = grown
        if call:
            yield call

    def _put(self, pending: Sequence[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
        """One round of PutEvents over the pending entries; the entries that failed, to retry."""
        failed: list[tuple[int, dict[str, Any]]] = []
        for call in self._calls(pending):
            try:
                answer = self._client_factory().put_events(Entries=[entry for _, entry in call])
            except Exception as exc:  # the whole call failed: every entry of it is retried
                logger.warning("PutEvents call failed", extra={"error": type(exc).__name__, "entries": len(call)})
                failed.extend(call)
                continue
            for (index, entry), result in zip(call, answer.get("Entries", []), strict=False):
                if result.get("ErrorCode") or not result.get("EventId"):
                    failed.append((index, entry))
            failed.extend(call[len(answer.get("Entries", [])) :])  # an answer shorter than the call
        return failed

    def publish(self, records: Sequence[Mapping[str, Any]]) -> PublishResult:
        events = change_events(records)
        pending = [(index, self._entry(event)) for index, event in enumerate(events)]
        attempts = 0
        while pending and attempts < self._settings.put_attempts:
            if attempts:
                self._sleep(min(0.2 * 2 ** (attempts - 1), 2.0))
            attempts += 1
            pending = self._put(pending)
        failed_sequence = None
        if pending:
            failed_sequence = min((events[i].first_sequence for i, _ in pending), key=sequence_key)
            logger.warning(
                "change events not put; the batch is retried from the first record behind them",
                extra={"failedEvents": len(pending), "events": len(events)},
            )
        return PublishResult(len(events), len(events) - len(pending), failed_sequence, attempts)


@functools.cache
def get_publisher() -> Publisher:
    """One publisher per container, its settings read once at cold start."""
    return Publisher(aws.events, PublisherSettings.from_env())
