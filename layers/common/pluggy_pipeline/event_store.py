"""EventsTable: the dedupe ledger and the event log, one record per Pluggy event.

Record life: RECEIVED (the receiver claimed the event and is enqueueing it, or has enqueued it)
-> PROCESSING -> PROCESSED | FAILED. The receiver writes with one conditional PutItem and never
updates afterwards, so a new event costs exactly one DynamoDB call and one SQS call.

Why a retry is never swallowed: if enqueueing fails the receiver deletes its claim (conditioned
on its own attempt token) and answers 5XX. If even that delete fails, or the function dies between
the put and the send, the claim is left RECEIVED with a lease that runs out well before Pluggy's next
retry (60 s): the put's condition lets an expired RECEIVED claim be taken over, so the retry is queued.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from pluggy_pipeline.aws import translate


class EventStatus(StrEnum):
    RECEIVED = "RECEIVED"
    PROCESSING = "PROCESSING"
    PROCESSED = "PROCESSED"
    FAILED = "FAILED"


class KeySource(StrEnum):
    EVENT_ID = "eventId"  # Pluggy's own eventId
    BODY_HASH = "bodyHash"  # derived from the body when the delivery has no eventId


class ClaimOutcome(StrEnum):
    NEW = "new"  # we own the event now and must enqueue it
    DUPLICATE = "duplicate"  # already queued (or further along): answer 2XX, queue nothing
    IN_FLIGHT = "in_flight"  # another delivery of it is being enqueued right now: answer 5XX, Pluggy retries


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    event_id: str
    token: str  # our attempt's token (NEW), needed to release the claim
    existing_status: str | None = None


@dataclass(frozen=True, slots=True)
class NewEvent:
    event_id: str
    event_type: str
    key_source: KeySource
    payload: str  # the raw body exactly as received
    item_id: str | None = None


def iso_now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_CLAIM_CONDITION = (
    "attribute_not_exists(eventId)"
    " OR (#status = :received AND leaseUntil < :now)"
    " OR (keySource = :bodyHash AND receivedAtEpoch < :windowStart AND #status <> :received)"
)


class EventStore:
    def __init__(
        self,
        client_factory: Callable[[], Any],
        table_name: str,
        *,
        ttl_days: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_factory = client_factory
        self._table = table_name
        self._ttl_seconds = ttl_days * 86400
        self._clock = clock

    def claim(self, event: NewEvent, *, lease_seconds: int, keyless_window_seconds: int) -> Claim:
        now = self._clock()
        token = uuid.uuid4().hex
        item: dict[str, Any] = {
            "eventId": {"S": event.event_id},
            "eventType": {"S": event.event_type},
            "status": {"S": EventStatus.RECEIVED.value},
            "keySource": {"S": event.key_source.value},
            "payload": {"S": event.payload},
            "receivedAt": {"S": iso_now(now)},
            "receivedAtEpoch": {"N": str(int(now))},
            "leaseUntil": {"N": str(int(now) + lease_seconds)},
            "expiresAt": {"N": str(int(now) + self._ttl_seconds)},
            "attemptToken": {"S": token},
        }
        if event.item_id:
            item["itemId"] = {"S": event.item_id}
        try:
            self._client_factory().put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression=_CLAIM_CONDITION,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":received": {"S": EventStatus.RECEIVED.value},
                    ":now": {"N": str(int(now))},
                    ":bodyHash": {"S": KeySource.BODY_HASH.value},
                    ":windowStart": {"N": str(int(now) - keyless_window_seconds)},
                },
                # The losing put returns the existing record, so a duplicate costs one call, not two.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise translate(exc, "claiming the event") from None
            existing: Mapping[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
            status = _string(existing, "status")
            outcome = ClaimOutcome.IN_FLIGHT if status == EventStatus.RECEIVED else ClaimOutcome.DUPLICATE
            return Claim(outcome, event.event_id, token="", existing_status=status)
        except Exception as exc:
            raise translate(exc, "claiming the event") from None
        return Claim(ClaimOutcome.NEW, event.event_id, token=token)

    def release(self, claim: Claim) -> bool:
        """Delete our own claim after a failed enqueue; False if that failed too (the lease covers it)."""
        try:
            self._client_factory().delete_item(
                TableName=self._table,
                Key={"eventId": {"S": claim.event_id}},
                ConditionExpression="attemptToken = :token",
                ExpressionAttributeValues={":token": {"S": claim.token}},
            )
        except Exception:
            return False
        return True


def _string(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    if isinstance(value, Mapping) and "S" in value:
        return str(value["S"])
    return None
