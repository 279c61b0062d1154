"""`send EVENT`: deliver one Pluggy-shaped webhook, authenticated like Pluggy (seed 002's test_pluggy_webhook)."""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import requests
from pluggy_pipeline.auth import sign
from pluggy_pipeline.event_store import EventStatus
from pluggy_pipeline.events import EventName

from pluggy_pipeline_cli.commands._common import add_target_options, dumps, plain, target_of
from pluggy_pipeline_cli.commands.events import get_event
from pluggy_pipeline_cli.targets import (
    DEFAULT_PLUGGY_URL,
    DEFAULT_SECRET_HEADER,
    SIGNATURE_HEADER,
    CliError,
    Target,
)
from pluggy_pipeline_cli.webhook_examples import ACCOUNT_ID, ITEM_ID, PAYMENT_ID, PAYMENT_REQUEST_ID, VALID_PAYLOADS

SECRET_ENV = "PLUGGY_WEBHOOK_SECRET"  # noqa: S105 - seed 002's environment variable name
SIGNING_KEY_ENV = "PLUGGY_WEBHOOK_SIGNING_KEY"
ITEM_STATUS_NOTE = (
    "note: Pluggy's item/* webhooks carry no status, so --status is not sent: the processor re-fetches "
    "GET /items/{{id}} and stores the status Pluggy reports{where}."
)


def _template(event: str) -> dict[str, Any]:
    """Pluggy's example of this event (webhook_examples), or a shape built from its family."""
    for example in VALID_PAYLOADS.values():
        if example.get("event") == event:
            return copy.deepcopy(example)
    family, _, action = event.partition("/")
    payload: dict[str, Any] = {"event": event, "eventId": "x"}
    if family == "item":
        payload.update(itemId=ITEM_ID, triggeredBy="USER")
    elif family in ("transactions", "account"):
        payload.update(itemId=ITEM_ID, accountId=ACCOUNT_ID, triggeredBy="SYNC")
    elif family == "connector":
        payload = {"event": event, "connectorId": "201", "id": "201", "data": {}}
    elif family == "payment_intent":
        payload.update(paymentRequestId=PAYMENT_REQUEST_ID, paymentIntentId=PAYMENT_ID)
    elif family == "scheduled_payment" and not action.startswith("all_"):
        payload.update(paymentRequestId=PAYMENT_REQUEST_ID, scheduledPaymentId=PAYMENT_ID)
    elif family in ("scheduled_payment", "payment_request"):
        payload.update(paymentRequestId=PAYMENT_REQUEST_ID)
    return payload


def _iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class PayloadOptions:
    """What `send`'s options put into the payload (None: the template's value)."""

    item_id: str | None = None
    account_id: str | None = None
    status: str | None = None
    connector_id: str | None = None
    payment_id: str | None = None
    event_id: str | None = None
    transaction_ids: list[str] | None = None


def _apply_ids(event: str, payload: dict[str, Any], options: PayloadOptions, notes: list[str]) -> None:
    def override(field: str, value: Any, option: str) -> None:
        if value is None:
            return
        if field in payload:
            payload[field] = value
        else:
            notes.append(f"note: {event} has no {field}; {option} ignored")

    if options.item_id is None and "itemId" in payload:
        notes.append(f"note: no --item-id: sending the example item {ITEM_ID}, unknown to Pluggy (stored as deleted)")
    override("itemId", options.item_id, "--item-id")
    override("accountId", options.account_id, "--account-id")
    override("transactionIds", options.transaction_ids or None, "--transaction-id")
    if options.connector_id is not None:
        if "connectorId" in payload:
            payload["connectorId"] = payload["id"] = options.connector_id
        else:
            notes.append(f"note: {event} has no connector id; --connector-id ignored")
    if options.payment_id is not None:
        field = next((f for f in ("paymentIntentId", "scheduledPaymentId", "paymentRequestId") if f in payload), None)
        override(field or "paymentId", options.payment_id, "--payment-id")


def _apply_status(event: str, payload: dict[str, Any], status: str, pluggy_base_url: str, notes: list[str]) -> None:
    family = event.partition("/")[0]
    if family == "item":
        where = "" if pluggy_base_url == DEFAULT_PLUGGY_URL else f" ({pluggy_base_url})"
        notes.append(ITEM_STATUS_NOTE.format(where=where))
        return
    data = payload.get("data")
    payload["data"] = {**(data if isinstance(data, dict) else {}), "status": status}
    if family not in ("connector", "payment_intent", "scheduled_payment", "payment_request"):
        notes.append(f"note: status sent as data.status; the processor does not read it for {event}")


def build_payload(
    event: str, options: PayloadOptions, *, client_id: str | None, pluggy_base_url: str
) -> tuple[dict[str, Any], list[str]]:
    """(payload, notes for the user) for any event name, in the shapes of Pluggy's webhook reference."""
    if not event or "/" not in event:
        raise CliError(f"{event!r} is not a Pluggy event name (e.g. item/updated, transactions/created)")
    notes: list[str] = []
    payload = _template(event)
    # A fresh eventId each time (Pluggy's are UUIDs); connector/status_updated has none in Pluggy's reference.
    if options.event_id is not None:
        payload["eventId"] = options.event_id
    elif "eventId" in payload:
        payload["eventId"] = str(uuid.uuid4())
    payload.pop("clientId", None)
    if client_id:
        payload["clientId"] = client_id
    _apply_ids(event, payload, options, notes)
    if "transactionsCreatedAtFrom" in payload or "createdTransactionsLink" in payload:
        created_from = _iso_ms(datetime.now(UTC) - timedelta(days=1))
        query = urlencode({"accountId": payload.get("accountId", ACCOUNT_ID), "createdAtFrom": created_from})
        payload["transactionsCreatedAtFrom"] = created_from
        # The processor only follows links to its own Pluggy host, so the link points at the target's.
        payload["createdTransactionsLink"] = f"{pluggy_base_url.rstrip('/')}/v2/transactions?{query}"
    if options.status is not None:
        _apply_status(event, payload, options.status, pluggy_base_url, notes)
    if EventName.parse(event) is None:
        notes.append(f"note: {event} is not an event this pipeline knows; it is logged, not processed")
    return payload, notes


def _env(name: str) -> str | None:
    value = os.environ.get(name, "")
    return value or None


def wait_for(target: Target, event_id: str, timeout: float) -> dict[str, Any] | None:
    """The event's record once PROCESSED or failed for good; on timeout, whatever it is then (or None)."""
    deadline = time.monotonic() + timeout
    while True:
        record = get_event(target, event_id)
        status = record.get("status") if record else None
        if status == EventStatus.PROCESSED or (status == EventStatus.FAILED and record and record.get("permanent")):
            return record
        if time.monotonic() >= deadline:
            return record
        time.sleep(0.2)


@dataclass(frozen=True)
class Delivery:
    """Where and how `send` delivers: the URL, the header and the credentials to authenticate with."""

    url: str
    header: str
    pluggy_base_url: str
    client_id: str | None
    target: Target | None  # None with --url alone: nothing to watch afterwards
    secret: str | None = field(default=None, repr=False)
    signing_key: str | None = field(default=None, repr=False)


def _target(args: argparse.Namespace) -> Target | None:
    if args.url and not args.stack:
        if args.region or args.profile:
            raise CliError("--region and --profile only apply with --stack")
        return None
    try:
        return target_of(args)
    except CliError:
        if args.dry_run and not args.stack:
            return None  # a dry run needs no running stack
        raise


def _delivery(args: argparse.Namespace) -> Delivery:
    target = _target(args)
    if args.wait is not None and target is None:
        raise CliError("--wait needs a pipeline to watch (the local stack or --stack), not only --url")
    secret, signing_key = args.secret, args.signing_key
    if target is not None and not args.dry_run and (secret is None or signing_key is None):
        stored = target.webhook_secret()
        secret = secret if secret is not None else stored.current
        signing_key = signing_key if signing_key is not None else stored.signing_key
    return Delivery(
        url=args.url or (target.webhook_url if target else ""),
        header=args.header_name or (target.secret_header if target else DEFAULT_SECRET_HEADER),
        pluggy_base_url=target.pluggy_base_url if target else (args.pluggy_url or DEFAULT_PLUGGY_URL),
        client_id=args.client_id or (target.pluggy_client_id if target else _env("PLUGGY_CLIENT_ID")),
        target=target,
        secret=secret if secret is not None else _env(SECRET_ENV),
        signing_key=signing_key if signing_key is not None else _env(SIGNING_KEY_ENV),
    )


def _post(delivery: Delivery, body: bytes) -> requests.Response:
    headers = {"Content-Type": "application/json", "User-Agent": "pluggy-pipeline-cli"}
    if delivery.secret:
        headers[delivery.header] = delivery.secret
    else:
        print(
            f"note: no webhook secret (--secret or ${SECRET_ENV}): sending without {delivery.header}", file=sys.stderr
        )
    if delivery.signing_key:
        headers[SIGNATURE_HEADER] = sign(body, delivery.signing_key.encode())
    try:
        return requests.post(delivery.url, data=body, headers=headers, timeout=(5, 30), allow_redirects=False)
    except requests.RequestException as exc:
        raise CliError(f"could not deliver to {delivery.url}: {type(exc).__name__}") from None


def _report_processing(target: Target, event_id: str, timeout: float) -> int:
    record = wait_for(target, event_id, timeout) if event_id else None
    status = record.get("status") if record else None
    if record is not None and status == EventStatus.PROCESSED:
        print(f"PROCESSED (attempts: {plain(record.get('attempts', 0))})")
        return 0
    error = f": {record['error']}" if record and record.get("error") else ""
    print(f"{status or 'not logged'} after {timeout:g} s{error} (see `pluggy-pipeline events show {event_id}`)")
    return 1


def cmd_send(args: argparse.Namespace) -> int:
    delivery = _delivery(args)
    options = PayloadOptions(
        item_id=args.item_id,
        account_id=args.account_id,
        status=args.status,
        connector_id=args.connector_id,
        payment_id=args.payment_id,
        event_id=args.event_id,
        transaction_ids=args.transaction_id,
    )
    payload, notes = build_payload(
        args.event, options, client_id=delivery.client_id, pluggy_base_url=delivery.pluggy_base_url
    )
    for note in notes:
        print(note, file=sys.stderr)
    if args.dry_run:
        print(dumps(payload))
        return 0
    print(f"POST {delivery.url}  {args.event}  eventId {payload.get('eventId', '(none: keyed on the body hash)')}")
    response = _post(delivery, dumps(payload, indent=None).encode())
    print(f"HTTP {response.status_code}")
    print(response.text)
    if not 200 <= response.status_code < 300:
        return 1
    if args.wait is None or delivery.target is None:
        return 0
    try:
        answered = response.json()
    except ValueError:
        answered = {}
    event_id = answered.get("eventId") if isinstance(answered, dict) else None
    return _report_processing(delivery.target, str(event_id or payload.get("eventId") or ""), args.wait)


def add_parser(commands: Any) -> None:
    send = commands.add_parser(
        "send",
        help="deliver one Pluggy webhook (any event name) to the pipeline, authenticated",
        description=(
            "Build a Pluggy-shaped payload for EVENT (the shapes of Pluggy's webhook reference, a fresh eventId) "
            "and POST it with the webhook secret header and, when a signing key is known, X-Pluggy-Signature. "
            "Default: the local stack. --stack: the stack's WebhookUrl and secret. --url: any URL, with --secret "
            f"or ${SECRET_ENV} (and --signing-key or ${SIGNING_KEY_ENV}). Exits non-zero on a non-2XX answer."
        ),
        epilog="examples: send item/updated --item-id <id> --wait 10;  send connector/status_updated --status OFFLINE",
    )
    send.add_argument("event", metavar="EVENT", help="event name, e.g. item/updated, transactions/created")
    send.add_argument("--item-id", help="itemId of item/*, transactions/* and account/* events")
    send.add_argument("--account-id", help="accountId of transactions/* and account/* events")
    send.add_argument("--transaction-id", action="append", help="transactionIds (repeat the option)")
    send.add_argument("--status", help="data.status of connector and payment events (item/* payloads carry no status)")
    send.add_argument("--connector-id", help="connector id of connector/status_updated")
    send.add_argument("--payment-id", help="payment intent / scheduled payment / payment request id")
    send.add_argument("--event-id", help="use this eventId (default: a new UUID; Pluggy retries reuse one)")
    send.add_argument("--client-id", help="clientId to put in the payload (default: the target's)")
    send.add_argument("--url", help="deliver here instead of the target's webhook URL")
    send.add_argument("--secret", help=f"shared secret to send (default: the target's, or ${SECRET_ENV})")
    send.add_argument(
        "--signing-key", help=f"HMAC key for X-Pluggy-Signature (default: the target's, or ${SIGNING_KEY_ENV})"
    )
    send.add_argument("--header-name", help="secret header name (default: the target's, or X-Webhook-Secret)")
    send.add_argument("--pluggy-url", help="with --url only: Pluggy API base for createdTransactionsLink")
    send.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=15.0,
        metavar="SECONDS",
        help="then wait until the event is processed (default 15 s); exit 1 if it failed or did not finish",
    )
    send.add_argument("--dry-run", action="store_true", help="print the payload, send nothing")
    add_target_options(send)
    send.set_defaults(func=cmd_send)
