"""`watch`: tail the change events of a stack's EventBridge bus (docs/events/README.md).

A bus cannot be read, only subscribed to: the command creates a queue of its own and a rule sending the bus's
events to it, prints each event as it arrives, and removes both when it ends (Ctrl-C, --count or --timeout).
A watch killed outright leaves them behind: their names start with `pluggy-pipeline-watch-`, and the queue
drops its messages after an hour.
It sees events put after it started.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pluggy_pipeline_cli.commands._common import add_target_options, target_of
from pluggy_pipeline_cli.targets import CliError, Target

SOURCE = "pluggy-pipeline"


@dataclass
class Tap:
    """A rule on the bus and the queue it fills."""

    target: Target
    name: str
    queue_url: str

    def receive(self, wait_seconds: int) -> list[dict[str, Any]]:
        sqs = self.target.sqs()
        messages = sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
        ).get("Messages", [])
        events = []
        for message in messages:
            events.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return events


@contextmanager
def subscription(sqs: Any, events: Any, bus: str, name: str, detail_types: list[str] | None = None) -> Iterator[str]:
    """A queue named `name` that a rule of the same name on `bus` fills with the pipeline's change events; its
    URL. Rule, target and queue are removed on exit, and whatever was created before a failure too."""
    queue_url: str = sqs.create_queue(QueueName=name, Attributes={"MessageRetentionPeriod": "3600"})["QueueUrl"]
    try:
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        pattern: dict[str, Any] = {"source": [SOURCE]}
        if detail_types:
            pattern["detail-type"] = detail_types
        rule_arn = events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern), State="ENABLED")[
            "RuleArn"
        ]
        try:
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": queue_arn,
                        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
                    }
                ],
            }
            sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
            events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "watch", "Arn": queue_arn}])
            try:
                yield queue_url
            finally:
                events.remove_targets(Rule=name, EventBusName=bus, Ids=["watch"])
        finally:
            events.delete_rule(Name=name, EventBusName=bus)
    finally:
        sqs.delete_queue(QueueUrl=queue_url)


@contextmanager
def tap(target: Target, detail_types: list[str] | None = None) -> Iterator[Tap]:
    """A temporary queue subscribed to the stack's bus; removed on exit, whatever happens."""
    if not target.event_bus:
        raise CliError(f"{target.label} has no change event bus (deployed before the app's side? redeploy)")
    name = f"pluggy-pipeline-watch-{uuid.uuid4().hex[:10]}"
    with subscription(target.sqs(), target.events(), target.event_bus, name, detail_types) as queue_url:
        yield Tap(target, name, queue_url)


def _product_counts(detail: dict[str, Any]) -> str:
    """Ids per product and operation ("investments 2 added"); the identity by what happened to it alone."""
    parts = []
    for name in ("bills", "investments", "investmentTransactions", "loans", "consents"):
        value = detail.get(name)
        if not isinstance(value, dict):
            continue
        groups = value.values() if name in ("bills", "investmentTransactions") else [value]
        counts = {op: sum(len(g.get(op) or []) for g in groups) for op in ("added", "modified", "removed")}
        parts.append(f"{name} " + " ".join(f"{n} {op}" for op, n in counts.items() if n))
    if detail.get("identity"):
        parts.append(f"identity {detail['identity']}")
    return ", ".join(parts)


def summary(event: dict[str, Any]) -> str:
    """One line per event, for people; --json prints the events themselves."""
    detail, kind = event.get("detail") or {}, event.get("detail-type", "?")
    if kind == "Item Status Changed":
        before = (detail.get("previous") or {}).get("status") or "-"
        now = detail.get("current") or {}
        flags = " needs user" if detail.get("needsUserAction") else ""
        flags += " pending" if detail.get("pending") else ""
        code = f" ({now.get('errorCode')})" if now.get("errorCode") else ""
        change = f"{before} -> {now.get('status')}{code}{flags}"
        return f"{kind}: item {detail.get('itemId')} {change}: {detail.get('reason')}"
    if kind == "Transactions Changed":
        counts = ", ".join(f"{len(detail.get(op) or [])} {op}" for op in ("added", "modified", "removed"))
        return f"{kind}: account {detail.get('accountId')} of item {detail.get('itemId')}: {counts}"
    if kind == "Item Deleted":
        return f"{kind}: item {detail.get('itemId')} at {detail.get('deletedAt')}"
    if kind == "Payment Status Changed":
        return (
            f"{kind}: {detail.get('paymentType')} {detail.get('paymentId')} "
            f"{detail.get('previousStatus') or '-'} -> {detail.get('status')}"
        )
    if kind == "Connector Status Changed":
        change = f"{detail.get('previousStatus') or '-'} -> {detail.get('status')}"
        return f"{kind}: connector {detail.get('connectorId')} {change}"
    if kind == "Products Changed":
        return f"{kind}: item {detail.get('itemId')}: {_product_counts(detail)}"
    if kind == "Consent Changed":
        return (
            f"{kind}: consent {detail.get('consentId')} of item {detail.get('itemId')} {detail.get('change')}, "
            f"expires {detail.get('expiresAt') or '-'}"
        )
    return f"{kind}: {json.dumps(detail, sort_keys=True)}"


def follow(
    target: Target,
    *,
    count: int | None,
    timeout: float | None,
    detail_types: list[str] | None,
    emit: Callable[[dict[str, Any]], None],
    started: Callable[[], None] = lambda: None,
) -> int:
    """Print events until `count` of them or `timeout` seconds; how many were printed."""
    seen = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    with tap(target, detail_types) as watcher:
        started()
        while count is None or seen < count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            for event in watcher.receive(int(min(left if left is not None else 5, 5))):
                emit(event)
                seen += 1
    return seen


def cmd_watch(args: argparse.Namespace) -> int:
    target = target_of(args)
    try:
        follow(
            target,
            count=args.count,
            timeout=args.timeout,
            detail_types=args.detail_type or None,
            emit=lambda e: print(json.dumps(e, sort_keys=True) if args.json else summary(e), flush=True),
            started=lambda: print(f"watching {target.label}'s change events (Ctrl-C stops)", file=sys.stderr),
        )
    except KeyboardInterrupt:  # Ctrl-C: the tap's rule and queue are removed on the way out
        print("stopped", file=sys.stderr)
    return 0


def add_parser(commands: Any) -> None:
    watch = commands.add_parser(
        "watch",
        help="tail the change events (Item Status Changed, Transactions Changed, ...) as they are put",
        description=(
            "Subscribe a temporary queue to the stack's change event bus and print each event as it arrives; "
            "the queue and its rule are removed when the command ends."
        ),
    )
    watch.add_argument("--json", action="store_true", help="print the events as JSON lines")
    watch.add_argument("--count", type=int, help="stop after this many events")
    watch.add_argument("--timeout", type=float, help="stop after this many seconds")
    watch.add_argument(
        "--detail-type", action="append", metavar="TYPE", help='only this detail-type (repeatable), e.g. "Item Deleted"'
    )
    add_target_options(watch)
    watch.set_defaults(func=cmd_watch)
