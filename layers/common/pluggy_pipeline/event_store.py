"""EventsTable: the dedupe ledger and the event log, one record per Pluggy event.

Record life: RECEIVED (claimed by the receiver; queued, or being queued) -> PROCESSING -> PROCESSED |
FAILED. The receiver writes one conditional PutItem and never updates afterwards, so a new event costs
one DynamoDB call and one SQS call.

Why a retry is never swallowed and never queued twice: a delivery that finds its event still RECEIVED
cannot know whether the earlier attempt reached SQS (it may have died between the put and the send), so
it sends again. EventQueue is FIFO with the eventId as deduplication id: if the first send did land, SQS
drops the second (5-minute window, longer than Pluggy's retry schedule); if it did not, this one is the
send. Only an event the processor has picked up (PROCESSING or later) is a plain duplicate.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from pluggy_pipeline.aws import translate
from pluggy_pipeline.errors import PermanentError


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
    PENDING = "pending"  # claimed before, maybe not queued yet: send again, SQS drops it if it was
    DUPLICATE = "duplicate"  # the processor has it already: answer 2XX, queue nothing
    CONFLICT = "conflict"  # the eventId is known with another body: answer 2XX, queue nothing


# Claim and NewEvent are built for every delivery: NamedTuples, immutable and built in half a dataclass's time.
class Claim(NamedTuple):
    outcome: ClaimOutcome
    event_id: str
    token: str  # our attempt's token (NEW), needed to release the claim
    existing_status: str | None = None


class NewEvent(NamedTuple):
    event_id: str
    event_type: str
    key_source: KeySource
    payload: str  # the raw body exactly as received
    item_id: str | None = None
    body_hash: str | None = None  # sha256 of the canonical JSON body


def iso_now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_CLAIM_CONDITION = (
    "attribute_not_exists(eventId)"
    # A keyless event seen long enough ago that the same body now means a new event.
    " OR (keySource = :bodyHash AND receivedAtEpoch < :windowStart)"
)


class _EventsTable:
    """What both sides of EventsTable share: the table, the clock and the records' time to live."""

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


class EventStore(_EventsTable):
    """The receiver's side of EventsTable: claim an event once, release the claim if enqueueing failed."""

    def claim(self, event: NewEvent, *, keyless_window_seconds: int) -> Claim:
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
            "expiresAt": {"N": str(int(now) + self._ttl_seconds)},
            "attemptToken": {"S": token},
        }
        if event.item_id:
            item["itemId"] = {"S": event.item_id}
        if event.body_hash:
            item["bodyHash"] = {"S": event.body_hash}
        try:
            self._client_factory().put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression=_CLAIM_CONDITION,
                ExpressionAttributeValues={
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
            stored_hash = _string(existing, "bodyHash")
            if event.body_hash and stored_hash and stored_hash != event.body_hash:
                return Claim(ClaimOutcome.CONFLICT, event.event_id, token="", existing_status=status)
            outcome = ClaimOutcome.PENDING if status == EventStatus.RECEIVED else ClaimOutcome.DUPLICATE
            return Claim(outcome, event.event_id, token="", existing_status=status)
        except Exception as exc:
            raise translate(exc, "claiming the event") from None
        return Claim(ClaimOutcome.NEW, event.event_id, token=token)

    def release(self, claim: Claim) -> bool:
        """Delete our own claim after a failed enqueue; False if that failed too.

        Not needed for correctness (a RECEIVED claim makes the retry send again), but it keeps the
        event log free of events that never reached the queue.
        """
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


class StartOutcome(StrEnum):
    STARTED = "started"
    ALREADY_PROCESSED = "already_processed"
    IN_PROGRESS = "in_progress"  # another invocation holds the event's lease


# The processor's own copy of a body is bounded: EventsTable already holds what the receiver accepted
# (up to 256 KiB), and writing it again would count twice against DynamoDB's 400 KB item limit.
PAYLOAD_COPY_LIMIT = 16 * 1024


_NAMES = {"#status": "status", "#error": "error"}


class ProcessingLog(_EventsTable):
    """The processor's side of EventsTable: PROCESSING -> PROCESSED (with counts) or FAILED (with the error)."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        table_name: str,
        *,
        ttl_days: int = 30,
        lease_seconds: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(client_factory, table_name, ttl_days=ttl_days, clock=clock)
        self._lease_seconds = lease_seconds

    def start(self, event_id: str, event_type: str, payload: str, *, copy_payload: bool = True) -> StartOutcome:
        return self.start_attempt(event_id, event_type, payload, copy_payload=copy_payload)[0]

    def start_attempt(
        self, event_id: str, event_type: str, payload: str, *, copy_payload: bool = True
    ) -> tuple[StartOutcome, int]:
        """Mark the event PROCESSING under a lease, unless it was PROCESSED or another invocation holds it;
        with the attempts made so far, this one included (holds for a rate limit do not count).

        Creates the record when missing: the processor's own messages (reconciliation) never
        passed through the receiver, and a record may have expired while its message waited in a DLQ.
        The lease (longer than the function's timeout, shorter than the queue's visibility timeout) is
        what keeps one eventId from running twice at once: two messages can carry one eventId when
        SQS deduplicates per message group.
        """
        now = self._clock()
        # Only for the pipeline's own messages: a delivery's record holds its body since the receiver's claim,
        # and rewriting it (even to itself) counts old plus new value against the item limit in moto.
        wanted = copy_payload and len(payload) <= PAYLOAD_COPY_LIMIT
        copy = ", payload = if_not_exists(payload, :payload)" if wanted else ""
        values: dict[str, Any] = {
            ":processing": {"S": EventStatus.PROCESSING.value},
            ":processed": {"S": EventStatus.PROCESSED.value},
            ":now": {"S": iso_now(now)},
            ":nowMs": {"N": str(int(now * 1000))},
            ":lease": {"N": str(int((now + self._lease_seconds) * 1000))},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":type": {"S": event_type},
            ":ttl": {"N": str(int(now) + self._ttl_seconds)},
        }
        if copy:
            values[":payload"] = {"S": payload}
        try:
            answer = self._client_factory().update_item(
                TableName=self._table,
                Key={"eventId": {"S": event_id}},
                UpdateExpression=(
                    "SET #status = :processing, startedAt = :now, leaseUntilMs = :lease,"
                    " attempts = if_not_exists(attempts, :zero) + :one, eventType = if_not_exists(eventType, :type),"
                    " receivedAt = if_not_exists(receivedAt, :now), expiresAt = if_not_exists(expiresAt, :ttl)" + copy
                ),
                ConditionExpression=(
                    "attribute_not_exists(eventId) OR (#status <> :processed AND (#status <> :processing"
                    " OR attribute_not_exists(leaseUntilMs) OR leaseUntilMs < :nowMs))"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                existing: Mapping[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
                if _string(existing, "status") == EventStatus.PROCESSING:
                    return StartOutcome.IN_PROGRESS, 0
                return StartOutcome.ALREADY_PROCESSED, 0
            raise translate(exc, "starting the event") from None
        except Exception as exc:
            raise translate(exc, "starting the event") from None
        attempts = ((answer.get("Attributes") or {}).get("attempts") or {}).get("N", "1")
        return StartOutcome.STARTED, int(attempts)

    def stored_payload(self, event_id: str) -> str:
        """The body the receiver stored (large deliveries travel through SQS as a pointer to it)."""
        try:
            item = (
                self._client_factory()
                .get_item(TableName=self._table, Key={"eventId": {"S": event_id}}, ConsistentRead=True)
                .get("Item")
            )
        except Exception as exc:
            raise translate(exc, "reading the stored payload") from None
        payload = _string(item or {}, "payload")
        if payload is None:
            raise PermanentError("the event's payload is no longer in EventsTable")
        return payload

    def finish(self, event_id: str, counts: Mapping[str, int], *, handled: bool = True) -> None:
        self._set(
            event_id,
            "SET #status = :s, processedAt = :now, counts = :counts, handled = :handled REMOVE #error, leaseUntilMs",
            {
                ":s": {"S": EventStatus.PROCESSED.value},
                ":counts": {"M": {k: {"N": str(v)} for k, v in counts.items()}},
                ":handled": {"BOOL": handled},
            },
        )

    def fail(self, event_id: str, error: str, *, permanent: bool) -> None:
        self._set(
            event_id,
            "SET #status = :s, failedAt = :now, #error = :error, permanent = :permanent REMOVE leaseUntilMs",
            {
                ":s": {"S": EventStatus.FAILED.value},
                ":error": {"S": error[:1000]},
                ":permanent": {"BOOL": permanent},
            },
        )

    def give_up(self, event_id: str) -> None:
        """Parked after too many failed attempts: the last error stays, the count starts again for a redrive."""
        self._set(
            event_id,
            "SET #status = :s, failedAt = :now, permanent = :false, parkedAfterAttempts = attempts - :one,"
            " attempts = :zero REMOVE leaseUntilMs",
            {
                ":s": {"S": EventStatus.FAILED.value},
                ":false": {"BOOL": False},
                ":one": {"N": "1"},
                ":zero": {"N": "0"},
            },
        )

    def hold(self, event_id: str, reason: str) -> None:
        """A started attempt handed back unharmed (a rate limit): it does not count as an attempt."""
        self._set(
            event_id,
            "SET #status = :s, failedAt = :now, #error = :error, permanent = :false REMOVE leaseUntilMs"
            " ADD attempts :minusOne, holds :one",
            {
                ":s": {"S": EventStatus.FAILED.value},
                ":error": {"S": reason[:1000]},
                ":false": {"BOOL": False},
                ":minusOne": {"N": "-1"},
                ":one": {"N": "1"},
            },
        )

    def _set(self, event_id: str, expression: str, values: dict[str, Any]) -> None:
        try:
            self._client_factory().update_item(
                TableName=self._table,
                Key={"eventId": {"S": event_id}},
                UpdateExpression=expression,
                # Only the names the expression uses: DynamoDB refuses unused ones.
                ExpressionAttributeNames={k: v for k, v in _NAMES.items() if k in expression},
                ExpressionAttributeValues={":now": {"S": iso_now(self._clock())}, **values},
            )
        except Exception as exc:
            raise translate(exc, "updating the event log") from None
