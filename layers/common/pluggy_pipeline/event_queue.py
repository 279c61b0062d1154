"""EventQueue: hands an accepted event to the processor through SQS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pluggy_pipeline.aws import translate


class EventQueue:
    def __init__(self, client_factory: Callable[[], Any], queue_url: str) -> None:
        self._client_factory = client_factory
        self._queue_url = queue_url

    def send(self, *, event_id: str, event_type: str, body: str) -> str:
        """Queue the raw payload; the ids ride as attributes so the body stays byte-for-byte Pluggy's."""
        try:
            response = self._client_factory().send_message(
                QueueUrl=self._queue_url,
                MessageBody=body,
                MessageAttributes={
                    "eventId": {"DataType": "String", "StringValue": event_id},
                    "eventType": {"DataType": "String", "StringValue": event_type},
                },
            )
        except Exception as exc:
            raise translate(exc, "queueing the event") from None
        return str(response["MessageId"])
