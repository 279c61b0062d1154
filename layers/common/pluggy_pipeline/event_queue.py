"""EventQueue: hands an accepted event to the processor through SQS (FIFO)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pluggy_pipeline.aws import translate
from pluggy_pipeline.observability import logger

# What SQS accepts in MessageGroupId / MessageDeduplicationId: up to 128 of these characters.
_MAX_VISIBILITY = 43_200  # SQS's ceiling: 12 hours
_SQS_ID = re.compile(r"^[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}$")


def sqs_id(value: str) -> str:
    """value itself when SQS accepts it as an id, else a stable hash of it."""
    return value if _SQS_ID.match(value) else "h-" + hashlib.sha256(value.encode()).hexdigest()


class EventQueue:
    def __init__(self, client_factory: Callable[[], Any], queue_url: str) -> None:
        self._client_factory = client_factory
        self._queue_url = queue_url
        self._fifo = queue_url.endswith(".fifo")

    @property
    def url(self) -> str:
        return self._queue_url

    def send(
        self,
        *,
        event_id: str,
        event_type: str,
        body: str,
        group_id: str | None = None,
        dedup_id: str | None = None,
        extra_attributes: Mapping[str, str] | None = None,
    ) -> str:
        """Queue the raw payload; the ids ride as attributes so the body stays byte-for-byte Pluggy's.

        On a FIFO queue the deduplication id is the eventId: a second send of the same event within
        SQS's 5-minute window (a retry after a lost answer, a redelivery racing the first) is dropped
        by SQS itself, so the event is queued once.
        """
        attributes = {"eventId": event_id, "eventType": event_type, **(extra_attributes or {})}
        kwargs: dict[str, Any] = {}
        if self._fifo:
            group = sqs_id(group_id or event_id)
            kwargs = {"MessageGroupId": group, "MessageDeduplicationId": sqs_id(dedup_id or event_id)}
            attributes["groupId"] = group
        try:
            response = self._client_factory().send_message(
                QueueUrl=self._queue_url,
                MessageBody=body,
                MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
                **kwargs,
            )
        except Exception as exc:
            raise translate(exc, "queueing the event") from None
        return str(response["MessageId"])

    def hold(self, messages: Sequence[tuple[str, float]]) -> None:
        """Make received messages (receipt handle, seconds) visible again after `seconds`, not after the
        queue's visibility timeout. Best effort: a message not changed still returns after the timeout."""
        entries = [
            {"Id": str(index), "ReceiptHandle": receipt, "VisibilityTimeout": min(_MAX_VISIBILITY, math.ceil(seconds))}
            for index, (receipt, seconds) in enumerate(messages)
        ]
        for start in range(0, len(entries), 10):  # SQS's batch limit
            try:
                answer = self._client_factory().change_message_visibility_batch(
                    QueueUrl=self._queue_url, Entries=entries[start : start + 10]
                )
            except Exception as exc:
                logger.warning(
                    "could not change the messages' visibility", extra={"error": str(translate(exc, "hold"))}
                )
                continue
            if answer.get("Failed"):
                logger.warning("some messages' visibility was not changed", extra={"failed": len(answer["Failed"])})
