"""The events/processor corpus: SQS FIFO events, ProcessorFunction's input, for every event it handles.

`python -m pluggy_pipeline_local.processor_events` rewrites events/processor/*.json; a test checks the files
on disk equal what this module builds, so the corpus cannot drift from it. Each file has the shape
`sam local generate-event sqs receive-message` gives, with what a FIFO queue adds: `attributes.MessageGroupId`,
`MessageDeduplicationId` and `SequenceNumber`, an `eventSourceARN` ending in `.fifo`, and the message
attributes EventQueue.send sets (`eventId`, `eventType`, `groupId`). The bodies are the receiver corpus'
Pluggy payloads (webhook_examples.VALID_PAYLOADS) byte for byte as the receiver queues them; the eventId
attribute is what the receiver keys the event on (a body hash when the payload has no eventId).

Ids. The files carry fixed ids (webhook_examples.ITEM_ID, ACCOUNT_ID, TRANSACTION_IDS), Pluggy's production host
in `createdTransactionsLink` and a fixed `transactionsCreatedAtFrom`; the Pluggy emulator makes random ids.
A handler test therefore substitutes at load time::

    event = substitute(
        load_event("processor/transactions-created"),
        {
            ITEM_ID: item["id"],
            ACCOUNT_ID: account_id,
            PLUGGY_BASE_URL: emulator.base_url,
            CREATED_AT_FROM: stamp,
        },
    )

`substitute` rewrites every occurrence of each key, in the body and in every attribute (the group id
`item:<itemId>` included), and recomputes `md5OfBody`. Mapping an eventId to a new one
(`{event_id("item-updated"): "...-again"}`) makes a second, distinct delivery of the same payload.
`sqs_event`/`sqs_record` build events from any payload, e.g. the webhooks the emulator emitted
(`emulator.events()`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pluggy_pipeline.receiver import parse_delivery
from pluggy_pipeline_cli.webhook_examples import ACCOUNT_ID, ITEM_ID, TRANSACTION_IDS, VALID_PAYLOADS

from pluggy_pipeline_local.template import REPO_ROOT

PROCESSOR_EVENTS_DIR = REPO_ROOT / "events" / "processor"
REGION = "us-east-1"
ACCOUNT = "123456789012"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:pluggy-pipeline-EventQueue.fifo"
PLUGGY_BASE_URL = "https://api.pluggy.ai"
CREATED_AT_FROM = str(VALID_PAYLOADS["transactions-created"]["transactionsCreatedAtFrom"])
SENT_AT_MS = 1795341600000  # 2026-11-22T10:00:00Z, the receiver corpus' requestTimeEpoch
_MESSAGE_NAMESPACE = uuid.UUID("3f2d6c1e-8a4b-4f0e-9c7d-5b1a2e3f4d5c")

__all__ = [
    "ACCOUNT_ID",
    "CREATED_AT_FROM",
    "ITEM_ID",
    "PLUGGY_BASE_URL",
    "TRANSACTION_IDS",
    "Message",
    "batch_mixed",
    "event_id",
    "events",
    "group_for",
    "messages",
    "sqs_event",
    "sqs_record",
    "substitute",
]


def _dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def group_for(payload: Mapping[str, Any], event_id: str) -> str:
    """The FIFO message group of an event (docs/design.md): its item, connector or payment; else its own id."""
    for field_name, prefix in (
        ("itemId", "item"),
        ("connectorId", "connector"),
        ("paymentIntentId", "payment"),
        ("scheduledPaymentId", "payment"),
        ("paymentRequestId", "payment"),
    ):
        value = payload.get(field_name)
        if isinstance(value, str) and value:
            return f"{prefix}:{value}"
    return event_id


def _attribute(value: str) -> dict[str, Any]:
    return {"stringValue": value, "stringListValues": [], "binaryListValues": [], "dataType": "String"}


def sqs_record(
    body: str,
    *,
    event_id: str | None,
    event_type: str | None,
    group_id: str,
    sequence: int = 1,
    dedup_id: str | None = None,
    receive_count: int = 1,
) -> dict[str, Any]:
    """One SQS FIFO record as Lambda hands it over; eventId/eventType None means no message attributes."""
    name = f"{group_id}/{event_id}/{sequence}"
    attributes: dict[str, Any] = {}
    if event_id is not None and event_type is not None:
        attributes = {
            "eventId": _attribute(event_id),
            "eventType": _attribute(event_type),
            "groupId": _attribute(group_id),
            # The receiver marks every delivery; the processor runs pipeline/* events only without it.
            "origin": _attribute("webhook"),
        }
    return {
        "messageId": str(uuid.uuid5(_MESSAGE_NAMESPACE, name)),
        "receiptHandle": f"AQEB{hashlib.sha256(name.encode()).hexdigest()}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": str(SENT_AT_MS + sequence),
            "SenderId": "AROAEXAMPLEROLEID:pluggy-pipeline-ReceiverFunction",
            "ApproximateFirstReceiveTimestamp": str(SENT_AT_MS + sequence + 1),
            "SequenceNumber": f"{18878027350649327616 + sequence}",
            "MessageGroupId": group_id,
            "MessageDeduplicationId": dedup_id or event_id or hashlib.sha256(body.encode()).hexdigest(),
        },
        "messageAttributes": attributes,
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": REGION,
    }


def sqs_event(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": list(records)}


@dataclass(frozen=True)
class Message:
    """One queued message of the corpus; `poison` ones must be parked in the dead-letter queue."""

    name: str
    body: str
    event_id: str | None
    event_type: str | None
    group_id: str
    poison: bool = False

    def record(self, sequence: int = 1) -> dict[str, Any]:
        return sqs_record(
            self.body, event_id=self.event_id, event_type=self.event_type, group_id=self.group_id, sequence=sequence
        )


def _pluggy(name: str, source: str | None = None) -> Message:
    """A message as the receiver queues the receiver corpus' payload `source` (default: same name)."""
    body = _dumps(VALID_PAYLOADS[source or name])
    delivery = parse_delivery(body.encode())  # the receiver's own eventId rules (body hash when none)
    payload = json.loads(body)
    return Message(name, body, delivery.event_id, delivery.event_type, group_for(payload, delivery.event_id))


def _poison(name: str, body: str, event_type: str, n: int) -> Message:
    event_id = f"5e1f0c3a-9b2d-4e6f-8a7c-0000000000{n:02d}"
    return Message(name, body, event_id, event_type, f"item:{ITEM_ID}", poison=True)


def messages() -> list[Message]:
    """Every single-message file of the corpus, by file name."""
    pluggy_names = [
        "item-created",
        "item-updated",
        "item-login-succeeded",
        "item-waiting-user-input",
        "item-waiting-user-action",
        "item-deleted",
        "transactions-created",
        "transactions-updated",
        "transactions-deleted",
        "connector-status-updated",
        "payment-intent-created",
        "payment-intent-completed",
        "payment-intent-error",
        "payment-intent-waiting-payer-authorization",
        "scheduled-payment-created",
        "scheduled-payment-completed",
        "scheduled-payment-error",
        "scheduled-payment-canceled",
        "unknown-event",
    ]
    result = [_pluggy(name) for name in pluggy_names]
    # item/error as Caixa sends it while the user has not authorized yet (seed 001).
    result.append(_pluggy("item-error", "item-error-authorization-pending"))
    # The hourly EventBridge rule: group "reconcile", content-based deduplication, no message attributes.
    reconcile_body = '{"event": "pipeline/reconcile", "eventId": "reconcile-2026-11-22T10:00:00Z", ' + (
        '"scheduledAt": "2026-11-22T10:00:00Z"}'
    )
    result.append(Message("reconcile", reconcile_body, None, None, "reconcile"))
    result += [
        _poison("poison-not-json", '{"event": "item/updated", "eventId": ', "item/updated", 1),
        _poison("poison-no-event", _dumps({"eventId": "e-1", "itemId": ITEM_ID}), "unknown", 2),
        _poison("poison-not-object", _dumps([VALID_PAYLOADS["item-updated"]]), "item/updated", 3),
        # Valid JSON with a known event but without the id its handler needs.
        _poison(
            "poison-no-item-id",
            _dumps({k: v for k, v in VALID_PAYLOADS["item-updated"].items() if k != "itemId"}),
            "item/updated",
            4,
        ),
    ]
    return result


def event_id(name: str) -> str | None:
    """The eventId of a corpus message (None for the reconcile message, which has no attributes)."""
    return {m.name: m.event_id for m in messages()}[name]


def batch_mixed() -> list[Message]:
    """One Lambda batch: two groups of the item, a payment, a connector and a poison message."""
    by_name = {m.name: m for m in messages()}
    return [
        by_name[name]
        for name in (
            "item-updated",
            "payment-intent-created",
            "poison-not-json",
            "connector-status-updated",
            "transactions-deleted",
        )
    ]


def events() -> dict[str, dict[str, Any]]:
    """File name -> SQS event."""
    corpus = {m.name: sqs_event([m.record()]) for m in messages()}
    corpus["batch-mixed"] = sqs_event(m.record(n) for n, m in enumerate(batch_mixed(), start=1))
    return dict(sorted(corpus.items()))


def _replace(value: Any, replacements: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_replace(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: _replace(v, replacements) for k, v in value.items()}
    return value


def substitute(event: Mapping[str, Any], replacements: Mapping[str, str]) -> dict[str, Any]:
    """The event with every occurrence of each key replaced (body, attributes, group ids); md5OfBody redone."""
    result: dict[str, Any] = _replace(dict(event), replacements)
    for record in result.get("Records", []):
        record["md5OfBody"] = hashlib.md5(record["body"].encode(), usedforsecurity=False).hexdigest()
    return result


# What each file does when invoked alone against an empty local stack (`make invoke`, or `sam local invoke` with
# the env file of `pluggy-pipeline local`): the emulator knows none of the files' items or payments, so Pluggy
# answers 404 and the processor stores what Pluggy says (a tombstone for the item, nothing for a payment).
# Event-log status, then its counts (or error prefix); poison files are parked in the DLQ.
DOCUMENTED_OUTCOMES: dict[str, tuple[str, dict[str, int] | str]] = {
    **{
        name: ("PROCESSED", {"itemsDeleted": 1})
        for name in (
            "item-created",
            "item-updated",
            "item-deleted",
            "item-error",
            "item-login-succeeded",
            "item-waiting-user-action",
            "item-waiting-user-input",
            "transactions-created",  # an item never stored is synced whole: 404
            "transactions-updated",
        )
    },
    "transactions-deleted": ("PROCESSED", {"transactionsDeleted": 2}),  # Pluggy has no such account: gone
    "connector-status-updated": ("PROCESSED", {"connectors": 1}),
    **{
        name: ("PROCESSED", {"paymentsNotFound": 2})  # the intent and its request
        for name in (
            "payment-intent-created",
            "payment-intent-completed",
            "payment-intent-error",
            "payment-intent-waiting-payer-authorization",
        )
    },
    **{
        name: ("PROCESSED", {"paymentsNotFound": 1})
        for name in (
            "scheduled-payment-created",
            "scheduled-payment-completed",
            "scheduled-payment-error",
            "scheduled-payment-canceled",
        )
    },
    "reconcile": ("PROCESSED", {}),  # nothing synced long ago: nothing queued
    "unknown-event": ("PROCESSED", {}),  # recorded with handled: false
    "poison-not-json": ("FAILED", "PermanentError: message body is not JSON"),
    "poison-no-event": ("FAILED", "PermanentError: message has no event name"),
    "poison-not-object": ("FAILED", "PermanentError: message body is not a JSON object"),
    "poison-no-item-id": ("FAILED", "PermanentError: event has no itemId"),
}


def write(directory: Path = PROCESSOR_EVENTS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, event in events().items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(event, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write():
        print(written_path.relative_to(REPO_ROOT))
