"""`events list|show|replay` (EventsTable, the event log) and `dlq list|redrive` (EventDeadLetterQueue)."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pluggy_pipeline.event_queue import sqs_id
from pluggy_pipeline.event_store import EventStatus, iso_now
from pluggy_pipeline.records import JSON, from_attributes

from pluggy_pipeline_cli.commands._common import add_target_options, dumps, plain, table, target_of, truncate
from pluggy_pipeline_cli.targets import CliError, Target

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        MessageAttributeValueTypeDef,
    )

_INTERNAL = ("attemptToken",)  # the receiver's claim token: meaningless outside it
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_DLQ_MESSAGES = 1000


# -- the event log ------------------------------------------------------------------------------------


def _since(value: str | None) -> str | None:
    """An ISO timestamp, or a relative age such as 30m, 2h, 1d; normalized to the log's UTC ISO form."""
    if value is None:
        return None
    relative = _RELATIVE.match(value.strip())
    if relative:
        delta = timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        return iso_now((datetime.now(UTC) - delta).timestamp())
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError("--since must be an ISO date/date-time or an age such as 30m, 2h, 1d") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_now(moment.timestamp())


def scan_events(
    target: Target, *, event_type: str | None = None, status: str | None = None, since: str | None = None
) -> Iterator[JSON]:
    """Every event record matching the filters (a paginated Scan: the log has no secondary index)."""
    conditions, names, values = [], {}, {}
    if event_type:
        conditions.append("eventType = :type")
        values[":type"] = {"S": event_type}
    if status:
        conditions.append("#status = :status")
        names["#status"] = "status"
        values[":status"] = {"S": status}
    if since:
        conditions.append("receivedAt >= :since")
        values[":since"] = {"S": since}
    kwargs: dict[str, Any] = {"TableName": target.events_table}
    if conditions:
        kwargs["FilterExpression"] = " AND ".join(conditions)
        kwargs["ExpressionAttributeValues"] = values
    if names:
        kwargs["ExpressionAttributeNames"] = names
    client = target.dynamodb()
    while True:
        page = client.scan(**kwargs)
        for row in page.get("Items", []):
            yield from_attributes(row)
        start = page.get("LastEvaluatedKey")
        if not start:
            return
        kwargs["ExclusiveStartKey"] = start


def get_event(target: Target, event_id: str) -> JSON | None:
    row = (
        target.dynamodb()
        .get_item(TableName=target.events_table, Key={"eventId": {"S": event_id}}, ConsistentRead=True)
        .get("Item")
    )
    return from_attributes(row) if row else None


def _public(record: Mapping[str, Any], *, payload: bool) -> JSON:
    shown = {k: v for k, v in record.items() if k not in _INTERNAL and (payload or k != "payload")}
    if payload and isinstance(shown.get("payload"), str):
        with contextlib.suppress(ValueError):  # a poison message's body stays the raw string it is
            shown["payload"] = json.loads(shown["payload"])
    return shown


def cmd_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError("--limit must be at least 1")
    target = target_of(args)
    records = sorted(
        scan_events(target, event_type=args.type, status=args.status, since=_since(args.since)),
        key=lambda r: str(r.get("receivedAt") or ""),
        reverse=True,
    )[: args.limit]
    if args.json:
        print(dumps([_public(r, payload=False) for r in records]))
        return 0
    if not records:
        print("no events")
        return 0
    rows = [
        [
            r.get("receivedAt"),
            r.get("eventId"),
            r.get("eventType"),
            r.get("status"),
            plain(r.get("attempts", 0)),
            r.get("itemId") or "",
            truncate(r.get("error") or "", 60),
        ]
        for r in records
    ]
    print(table(["RECEIVED", "EVENT ID", "TYPE", "STATUS", "ATTEMPTS", "ITEM", "ERROR"], rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    record = get_event(target_of(args), args.event_id)
    if record is None:
        raise CliError(f"no event {args.event_id} in the event log")
    shown = _public(record, payload=True)
    if args.json:
        print(dumps(shown))
        return 0
    keys = sorted(k for k in shown if k != "payload")
    width = max((len(k) for k in keys), default=0) + 1
    for key in keys:
        value = shown[key]
        text = value if isinstance(value, str) else dumps(value, indent=None)
        print(f"{key + ':':<{width}} {text}")
    print("payload:")
    payload = shown.get("payload")
    print(dumps(payload) if not isinstance(payload, str) else payload)
    return 0


def message_group(event_id: str, body: str) -> str:
    """FIFO group of a (re)queued event: its item's group, else its own id (as the pipeline groups them)."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    item_id = payload.get("itemId") if isinstance(payload, dict) else None
    return sqs_id(f"item:{item_id}" if isinstance(item_id, str) and item_id else event_id)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def replay(target: Target, record: Mapping[str, Any]) -> str:
    """Re-enqueue one logged event from its stored payload; returns the new SQS message id.

    The record goes back to RECEIVED first (conditional on the status we read, so a concurrent change
    wins), because the processor skips PROCESSED events; then the payload is sent with the original
    eventId attribute (the log record is reused) and a new deduplication id (SQS would drop a repeat).
    """
    event_id = str(record["eventId"])
    status = str(record.get("status") or "")
    body = record.get("payload")
    if not isinstance(body, str) or not body:
        raise CliError(f"{event_id}: no stored payload to replay")
    if status in (EventStatus.RECEIVED, EventStatus.PROCESSING):
        raise CliError(f"{event_id} is {status} (queued or being processed): not replayed")
    event_type = str(record.get("eventType") or "unknown")
    now = iso_now(time.time())
    dynamodb = target.dynamodb()
    try:
        dynamodb.update_item(
            TableName=target.events_table,
            Key={"eventId": {"S": event_id}},
            UpdateExpression=(
                "SET #status = :received, queuedAt = :now, replayedAt = :now,"
                " replays = if_not_exists(replays, :zero) + :one"
            ),
            ConditionExpression="#status = :old",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":received": {"S": EventStatus.RECEIVED.value},
                ":old": {"S": status},
                ":now": {"S": now},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
            },
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise CliError(f"{event_id} changed status while replaying it; not replayed") from None
        raise
    group = message_group(event_id, body)
    attributes = {"eventId": event_id, "eventType": event_type, "groupId": group, "replayedAt": now}
    try:
        response = target.sqs().send_message(
            QueueUrl=target.queue_url,
            MessageBody=body,
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
            MessageGroupId=group,
            MessageDeduplicationId=sqs_id(f"{event_id}#replay-{_stamp()}"),
        )
    except Exception:
        # Put the status back so the log does not claim a queued event that never was.
        dynamodb.update_item(
            TableName=target.events_table,
            Key={"eventId": {"S": event_id}},
            UpdateExpression="SET #status = :old",
            ConditionExpression="#status = :received AND replayedAt = :now",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":old": {"S": status},
                ":received": {"S": EventStatus.RECEIVED.value},
                ":now": {"S": now},
            },
        )
        raise
    return str(response["MessageId"])


def cmd_replay(args: argparse.Namespace) -> int:
    if bool(args.event_ids) == bool(args.status):
        raise CliError("give EVENT_ID... or --status (not both)")
    if args.type and not args.status:
        raise CliError("--type only applies with --status")
    target = target_of(args)
    if args.status:
        records = list(scan_events(target, event_type=args.type, status=args.status))
    else:
        records = []
        for event_id in args.event_ids:
            record = get_event(target, event_id)
            if record is None:
                raise CliError(f"no event {event_id} in the event log")
            records.append(record)
    replayed = failed = 0
    for record in records:
        if record.get("status") == EventStatus.FAILED and not record.get("permanent"):
            print(f"note: {record['eventId']} failed transiently; SQS may still be retrying it too", file=sys.stderr)
        try:
            message_id = replay(target, record)
        except CliError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            failed += 1
            continue
        replayed += 1
        print(f"replayed {record['eventId']} ({record.get('eventType')}, was {record.get('status')}): {message_id}")
    print(f"{replayed} event(s) re-enqueued to EventQueue" + (f", {failed} skipped" if failed else ""))
    return 1 if failed else 0


# -- the dead-letter queue ----------------------------------------------------------------------------


def _attribute(message: Mapping[str, Any], name: str) -> str | None:
    value = (message.get("MessageAttributes") or {}).get(name) or {}
    text = value.get("StringValue")
    return str(text) if text is not None else None


def peek_dlq(target: Target, limit: int = MAX_DLQ_MESSAGES) -> list[dict[str, Any]]:
    """The DLQ's messages, left in place: received briefly, then made visible again at once."""
    sqs = target.sqs()
    seen: dict[str, dict[str, Any]] = {}
    handles: list[str] = []
    try:
        while len(seen) < limit:
            batch = sqs.receive_message(
                QueueUrl=target.dlq_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=30,
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            new = [m for m in batch if m["MessageId"] not in seen]
            handles += [m["ReceiptHandle"] for m in batch]
            if not new:
                break
            for message in new:
                seen[message["MessageId"]] = dict(message)
    finally:
        for start in range(0, len(handles), 10):
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(handles[start : start + 10])
            ]
            sqs.change_message_visibility_batch(QueueUrl=target.dlq_url, Entries=entries)
    return list(seen.values())


def _dlq_row(message: Mapping[str, Any]) -> dict[str, Any]:
    attributes = message.get("Attributes") or {}
    sent = attributes.get("SentTimestamp")
    return {
        "messageId": message["MessageId"],
        "eventId": _attribute(message, "eventId"),
        "eventType": _attribute(message, "eventType"),
        "failureReason": _attribute(message, "failureReason"),
        # attempts: transient failures, redrive once the cause is fixed; permanent: the message itself is bad
        "failureKind": _attribute(message, "failureKind"),
        "receiveCount": int(attributes.get("ApproximateReceiveCount", 0)),
        "sentAt": iso_now(int(sent) / 1000) if sent else None,
        "messageGroupId": attributes.get("MessageGroupId"),
        "body": message.get("Body"),
    }


def queue_depth(target: Target, queue_url: str) -> int:
    attributes = target.sqs().get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
        attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


def cmd_dlq_list(args: argparse.Namespace) -> int:
    target = target_of(args)
    rows = [_dlq_row(m) for m in peek_dlq(target)]
    if args.json:
        print(dumps(rows))
        return 0
    if not rows:
        print("the dead-letter queue is empty")
        return 0
    print(
        table(
            ["SENT", "EVENT ID", "TYPE", "KIND", "RECEIVES", "FAILURE REASON"],
            [
                [
                    r["sentAt"],
                    r["eventId"] or "-",
                    r["eventType"] or "-",
                    r["failureKind"] or "-",
                    r["receiveCount"],
                    truncate(r["failureReason"], 60),
                ]
                for r in rows
            ],
        )
    )
    print(f"\n{len(rows)} message(s); `pluggy-pipeline dlq redrive` moves them back to EventQueue")
    return 0


def redrive_locally(target: Target) -> int:
    """moto has no StartMessageMoveTask: receive, send to EventQueue, delete only once the send succeeded."""
    sqs = target.sqs()
    moved = 0
    while True:
        batch = sqs.receive_message(
            QueueUrl=target.dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=60,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return moved
        for message in batch:
            body = message["Body"]
            event_id = _attribute(message, "eventId") or f"sqs-{message['MessageId']}"
            group = message_group(event_id, body)
            attributes: dict[str, MessageAttributeValueTypeDef] = {
                name: {"DataType": value.get("DataType", "String"), "StringValue": value["StringValue"]}
                for name, value in (message.get("MessageAttributes") or {}).items()
                if "StringValue" in value
            }
            attributes.setdefault("eventId", {"DataType": "String", "StringValue": event_id})
            attributes["groupId"] = {"DataType": "String", "StringValue": group}
            sqs.send_message(
                QueueUrl=target.queue_url,
                MessageBody=body,
                MessageAttributes=attributes,
                MessageGroupId=group,
                MessageDeduplicationId=sqs_id(f"{event_id}#redrive-{_stamp()}"),
            )
            sqs.delete_message(QueueUrl=target.dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise CliError("not a terminal: pass --yes to confirm")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    target = target_of(args)
    depth = queue_depth(target, target.dlq_url)
    if depth == 0:
        print("the dead-letter queue is empty: nothing to move")
        return 0
    if not args.yes and not _confirm(f"Move about {depth} message(s) from the DLQ back to EventQueue?"):
        print("nothing moved")
        return 1
    if target.is_local:
        moved = redrive_locally(target)
        print(f"moved {moved} message(s) from EventDeadLetterQueue back to EventQueue")
        return 0
    source, destination = target.queue_arn(target.dlq_url), target.queue_arn(target.queue_url)
    handle = target.sqs().start_message_move_task(SourceArn=source, DestinationArn=destination)["TaskHandle"]
    print(f"started an SQS message move task for about {depth} message(s) to EventQueue (handle {handle})")
    print(f"follow it with: aws sqs list-message-move-tasks --source-arn {source} --region {target.region}")
    return 0


def add_parser(commands: Any) -> None:
    events = commands.add_parser(
        "events",
        help="the event log (EventsTable): list, show, replay",
        description="The event log: one record per Pluggy event, with its status and stored payload.",
    )
    sub = events.add_subparsers(dest="events_command", required=True, metavar="{list,show,replay}")

    listing = sub.add_parser("list", help="events, newest first (a Scan of EventsTable)")
    listing.add_argument("--type", help="only this event type, e.g. item/updated")
    listing.add_argument("--status", choices=[s.value for s in EventStatus], help="only this status")
    listing.add_argument("--since", metavar="ISO|AGE", help="received at or after (ISO, or 30m, 2h, 1d)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true", help="print the records as JSON (without payloads)")
    add_target_options(listing)
    listing.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="one event with its payload (Pluggy's body: ids, no personal data)")
    show.add_argument("event_id", metavar="EVENT_ID")
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    add_target_options(show)
    show.set_defaults(func=cmd_show)

    replay_parser = sub.add_parser(
        "replay",
        help="re-enqueue events from their stored payloads",
        description=(
            "Re-enqueue logged events to EventQueue from their stored payloads. A PROCESSED or FAILED record "
            "is set back to RECEIVED (conditionally) so the processor handles it again; its attempts grow."
        ),
    )
    replay_parser.add_argument("event_ids", metavar="EVENT_ID", nargs="*")
    replay_parser.add_argument("--status", choices=["FAILED", "PROCESSED"], help="every event with this status")
    replay_parser.add_argument("--type", help="with --status: only this event type")
    add_target_options(replay_parser)
    replay_parser.set_defaults(func=cmd_replay)

    dlq = commands.add_parser(
        "dlq",
        help="the dead-letter queue: list, redrive",
        description="EventDeadLetterQueue: events that failed for good, parked with a failureReason.",
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="{list,redrive}")
    dlq_list = dlq_sub.add_parser("list", help="the parked messages (left in the queue)")
    dlq_list.add_argument("--json", action="store_true", help="print the messages as JSON (with bodies)")
    add_target_options(dlq_list)
    dlq_list.set_defaults(func=cmd_dlq_list)
    redrive = dlq_sub.add_parser(
        "redrive",
        help="move every parked message back to EventQueue",
        description=(
            "Move the DLQ's messages back to EventQueue: SQS StartMessageMoveTask on AWS; locally (moto has "
            "no move task) each message is sent to EventQueue and deleted from the DLQ only after the send."
        ),
    )
    redrive.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_target_options(redrive)
    redrive.set_defaults(func=cmd_dlq_redrive)
