"""The receiver's domain logic: turn one HTTP delivery into exactly one queued event, or a clear refusal.

Order matters: cheap checks that need no secret material first (route, source IP), then the shared
secret or URL token (before the body is looked at), then size, signature, parsing. Nothing is written
or queued for any 4XX; 2XX is only answered once the event is durably in SQS (or already was).

Two routes, one pipeline:
- `POST /webhooks/pluggy` with the shared-secret header (Pluggy's Webhook resources carry custom headers);
- `POST /webhooks/pluggy/{token}` for deliveries that cannot carry a header (an item's or a Connect
  token's `webhookUrl`): the token in the path stands in for the header.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from aws_lambda_powertools.metrics import MetricUnit

from pluggy_pipeline import aws
from pluggy_pipeline.auth import Rejection, WebhookAuthenticator
from pluggy_pipeline.config import ReceiverSettings
from pluggy_pipeline.errors import ConfigurationError, PipelineError
from pluggy_pipeline.event_queue import EventQueue
from pluggy_pipeline.event_store import ClaimOutcome, EventStore, KeySource, NewEvent
from pluggy_pipeline.http import ApiRequest, ApiResponse
from pluggy_pipeline.observability import MetricSink, ensure_lambda_context, logger, logs_at
from pluggy_pipeline.secrets import provider_from_settings

WEBHOOK_PATH = "/webhooks/pluggy"
# Event names the pipeline uses for its own messages (reconciliation): never accepted from outside.
RESERVED_EVENT_PREFIX = "pipeline/"
# Ids the pipeline makes itself: keyless deliveries (sha256-), its own messages (reconcile-, sync-, sqs-).
# A Pluggy eventId starting with one of them (or with the escape) is stored as "ext:" + eventId, so an
# outside id can never take an id the pipeline will use later. Pluggy's eventIds are UUIDs: never escaped.
_INTERNAL_ID_PREFIXES = ("sha256-", "reconcile-", "sync-", "sqs-", "ext:")
# Bodies above this travel to the processor as a pointer to EventsTable: SQS counts the message
# attributes against its 256 KiB too, and the receiver accepts bodies up to 256 KiB.
INLINE_BODY_LIMIT = 192 * 1024

# Characters SQS refuses in a message body; JSON allows some of them (e.g. U+FFFF) inside strings. In ASCII
# text only the control characters; the full class costs 3 ms to compile, so only non-ASCII text compiles it.
_ASCII_NOT_SQS_SAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


@functools.cache
def _not_sqs_safe() -> re.Pattern[str]:
    return re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _sqs_unsafe(text: str) -> bool:
    pattern = _ASCII_NOT_SQS_SAFE if text.isascii() else _not_sqs_safe()
    return pattern.search(text) is not None


# Outcome and Delivery are built on every delivery: NamedTuples, immutable like a frozen dataclass and
# built in a third of its time.
class Outcome(NamedTuple):
    """What happened to a delivery: the HTTP answer plus what logs and metrics need."""

    response: ApiResponse
    result: str  # accepted | duplicate | conflict | rejected | error
    reason: str = ""
    event_id: str = ""
    event_type: str = ""


class BadPayload(ValueError):
    pass


class Delivery(NamedTuple):
    event_id: str
    event_type: str
    key_source: KeySource
    text: str
    client_id: str | None
    item_id: str | None
    group_id: str  # FIFO message group: one item's (connector's, payment's) events in order
    body_hash: str  # sha256 of the canonical JSON: one body per eventId


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Parsers disagree on which duplicate wins; a signed body must mean one thing.
        raise BadPayload("duplicate keys in JSON object")
    return obj


def _reject_constant(name: str) -> None:
    raise BadPayload(f"{name} is not valid JSON")


def _attribute_safe(value: str) -> bool:
    # A JSON escape (\uffff, a lone \ud800) passes the raw-text check but not a DynamoDB key or SQS attribute.
    return not _sqs_unsafe(value)


def _event_name(event_type: Any) -> str:
    if not isinstance(event_type, str) or not event_type.strip():
        raise BadPayload("'event' must be a non-empty string")
    if len(event_type) > 200:
        raise BadPayload("'event' is too long")
    if not _attribute_safe(event_type):
        raise BadPayload("'event' contains control or non-character code points")
    if event_type.strip().lower().startswith(RESERVED_EVENT_PREFIX):
        raise BadPayload(f"'event' names starting with {RESERVED_EVENT_PREFIX!r} are reserved for the pipeline")
    return event_type


# Built once (json.loads/dumps with options build a decoder/encoder per call); same results as those calls.
_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# JSONEncoder.encode builds a C encoder (and a closure) per call; this is that encoder, built once. No circular
# check: a decoded body cannot hold a cycle.
_make_c_encoder: Callable[..., Callable[[Any, int], tuple[str, ...]]] | None = getattr(
    json.encoder,
    "c_make_encoder",
    None,  # CPython's C accelerator (not in the typeshed stubs)
)
_C_CANONICAL = _make_c_encoder and _make_c_encoder(
    None, _CANONICAL.default, encode_basestring, None, ":", ",", True, False, True
)


def canonical_json(payload: dict[str, Any]) -> str:
    """Sorted keys, no spaces, UTF-8 as is: one text per JSON value whatever its spelling."""
    return "".join(_C_CANONICAL(payload, 0)) if _C_CANONICAL else _CANONICAL.encode(payload)


def parse_delivery(body: bytes) -> Delivery:
    """Validate a delivery's body; BadPayload carries the reason given back in the 400."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload("body is not UTF-8") from None
    if _sqs_unsafe(text):
        raise BadPayload("body contains control or non-character code points")
    try:
        payload = _DECODER.decode(text)
    except BadPayload:
        raise
    except (ValueError, RecursionError):
        raise BadPayload("body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadPayload("body must be a JSON object")
    event_type = _event_name(payload.get("event"))
    canonical = canonical_json(payload)
    # surrogatepass: an escaped lone surrogate is still a stable key, not a crash.
    body_hash = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    raw_id = payload.get("eventId")
    if raw_id is None:
        # Some deliveries (connector/status_updated in Pluggy's reference) carry no eventId:
        # key them on a canonical hash so Pluggy's retries of the same body still dedupe.
        event_id = "sha256-" + body_hash
        key_source = KeySource.BODY_HASH
    elif isinstance(raw_id, str) and raw_id.strip() and len(raw_id) <= 200 and _attribute_safe(raw_id):
        event_id = "ext:" + raw_id if raw_id.startswith(_INTERNAL_ID_PREFIXES) else raw_id
        key_source = KeySource.EVENT_ID
    else:
        raise BadPayload("'eventId' must be a non-empty string of at most 200 valid characters")
    client_id = payload.get("clientId")
    if client_id is not None and not isinstance(client_id, str):
        # Otherwise a non-string clientId would pass as "no clientId" and skip the client id check.
        raise BadPayload("'clientId' must be a string")
    item_id = payload.get("itemId")
    usable_item = item_id if isinstance(item_id, str) and len(item_id) <= 200 and _attribute_safe(item_id) else None
    return Delivery(
        event_id=event_id,
        event_type=event_type,
        key_source=key_source,
        text=text,
        client_id=client_id,
        item_id=usable_item,
        group_id=message_group(payload, usable_item, event_id),
        body_hash=body_hash,
    )


def webhook_route(path: str) -> str | None:
    """ "" for the header route, the token for the URL-token route, None for any other path."""
    clean = path.rstrip("/")
    if clean == WEBHOOK_PATH:
        return ""
    token = clean.removeprefix(WEBHOOK_PATH + "/")
    if token != clean and token and "/" not in token:
        return token
    return None


def message_group(payload: dict[str, Any], item_id: str | None, event_id: str) -> str:
    """The entity whose events must be handled in order: the item, else the connector or payment."""
    if item_id:
        return f"item:{item_id}"
    for kind, field_name in (
        ("connector", "connectorId"),
        ("payment", "paymentIntentId"),
        ("payment", "scheduledPaymentId"),
        ("payment", "paymentRequestId"),
    ):
        value = payload.get(field_name)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return f"{kind}:{value}"
    return f"event:{event_id}"


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, body, headers or {})


def _rejected(rejection: Rejection) -> Outcome:
    body = {"error": rejection.reason, "message": rejection.message}
    return Outcome(_json(rejection.status, body), "rejected", rejection.reason)


class WebhookReceiver:
    def __init__(
        self,
        settings: ReceiverSettings,
        authenticator: WebhookAuthenticator,
        store: EventStore,
        queue: EventQueue,
    ) -> None:
        self._settings = settings
        self._auth = authenticator
        self._store = store
        self._queue = queue

    def handle(self, request: ApiRequest) -> Outcome:
        try:
            return self._handle(request)
        except ConfigurationError as exc:
            # Fail closed but retryable: Pluggy keeps the event while an operator fixes the config.
            logger.error("receiver misconfigured", extra={"error": str(exc)})
            return Outcome(_json(503, {"error": "not_configured"}), "error", "not_configured")
        except PipelineError as exc:
            logger.warning("transient failure", extra={"error": str(exc)})
            return Outcome(_json(503, {"error": "unavailable"}, {"Retry-After": "60"}), "error", "transient")

    def _handle(self, request: ApiRequest) -> Outcome:
        route = webhook_route(request.path)
        if route is None:
            return _rejected(Rejection(404, "not_found", "no such resource"))
        if request.method != "POST":
            outcome = _rejected(Rejection(405, "method_not_allowed", "only POST is allowed"))
            return Outcome(_json(405, dict(outcome.response.body), {"Allow": "POST"}), "rejected", outcome.reason)
        if (rejection := self._auth.check_source(request)) is not None:
            return _rejected(rejection)
        # The URL token is never logged, never echoed, never part of a metric: only compared.
        check = self._auth.check_secret(request) if route == "" else self._auth.check_url_token(route)
        if check is not None:
            return _rejected(check)
        body = request.body
        if body is None:
            return _rejected(Rejection(400, "malformed_body", "body could not be decoded"))
        if len(body) > self._settings.max_body_bytes:
            limit = self._settings.max_body_bytes
            return _rejected(Rejection(413, "body_too_large", f"body exceeds {limit} bytes"))
        if (rejection := self._auth.check_signature(request, body)) is not None:
            return _rejected(rejection)
        try:
            delivery = parse_delivery(body)
        except BadPayload as exc:
            return _rejected(Rejection(400, "malformed_body", str(exc)))
        configured_client = self._settings.pluggy_client_id
        if configured_client and delivery.client_id is not None and delivery.client_id != configured_client:
            return _rejected(Rejection(403, "client_id_mismatch", "clientId does not match this receiver"))
        return self._accept(delivery)

    def _accept(self, delivery: Delivery) -> Outcome:
        claim = self._store.claim(
            NewEvent(
                event_id=delivery.event_id,
                event_type=delivery.event_type,
                key_source=delivery.key_source,
                payload=delivery.text,
                item_id=delivery.item_id,
                body_hash=delivery.body_hash,
            ),
            keyless_window_seconds=self._settings.keyless_dedupe_seconds,
        )
        ids = {"eventId": delivery.event_id}
        if claim.outcome is ClaimOutcome.CONFLICT:
            # Another body under a known eventId: a forgery or a sender bug. 2XX so it is not retried,
            # never queued (the first body is the event), logged and counted so someone looks.
            logger.warning("eventId reused with a different body: not queued", extra=ids)
            body = {"status": "conflict", **ids}
            return Outcome(_json(200, body), "conflict", "body_mismatch", delivery.event_id, delivery.event_type)
        if claim.outcome is ClaimOutcome.DUPLICATE:
            body = {"status": "duplicate", **ids}
            return Outcome(_json(200, body), "duplicate", "", delivery.event_id, delivery.event_type)
        if claim.outcome is ClaimOutcome.PENDING:
            # Claimed before but not picked up yet: the earlier attempt may have died before its send.
            # Send again; FIFO deduplication on the eventId drops this copy if the first one landed.
            self._send(delivery)
            body = {"status": "duplicate", **ids}
            return Outcome(_json(200, body), "duplicate", "resent", delivery.event_id, delivery.event_type)
        try:
            self._send(delivery)
        except PipelineError:
            if not self._store.release(claim):
                logger.error("could not release the claim; Pluggy's retry will send again", extra=ids)
            raise
        response = _json(202, {"status": "accepted", **ids})
        return Outcome(response, "accepted", "", delivery.event_id, delivery.event_type)

    def _send(self, delivery: Delivery) -> None:
        # `origin` marks every message a delivery produced: the processor runs pipeline/* events only from
        # messages without it (a delivery cannot choose its message attributes, only its body).
        attributes = {"receivedAt": received_at(), "origin": "webhook"}
        body = delivery.text
        # At most 4 bytes per character: only a body that long can be over the limit.
        if len(body) * 4 > INLINE_BODY_LIMIT and len(body.encode("utf-8", "surrogatepass")) > INLINE_BODY_LIMIT:
            # The whole body is in EventsTable (the claim): send a pointer the processor resolves there.
            attributes["payload"] = "eventsTable"
            body = json.dumps({"event": delivery.event_type, "payloadInEventsTable": True})
        self._queue.send(
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            body=body,
            group_id=delivery.group_id,
            extra_attributes=attributes,
        )


@functools.lru_cache(maxsize=1)
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def received_at() -> str:
    """Now, written as iso_now() writes it (UTC, milliseconds, "Z"): one clock read, each second's text built once."""
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return f"{_utc_second(seconds)}.{nanoseconds // 1_000_000:03d}Z"


@functools.cache
def get_receiver() -> WebhookReceiver:
    """Built once per container on first use; cleared by tests with get_receiver.cache_clear()."""
    settings = ReceiverSettings.from_env()
    secrets = settings.secrets
    if not (secrets.secret_arn or secrets.env_secret or secrets.env_signing_key):
        if not settings.insecure_local_dev:
            raise ConfigurationError("no webhook authentication configured (WEBHOOK_SECRET_ARN or WEBHOOK_SECRET)")
        logger.warning("INSECURE_LOCAL_DEV_NO_AUTH is set: deliveries are accepted without authentication")
    return WebhookReceiver(
        settings,
        WebhookAuthenticator(settings, provider_from_settings(secrets, aws.secretsmanager)),
        EventStore(aws.dynamodb, settings.events_table, ttl_days=settings.event_ttl_days),
        EventQueue(aws.sqs, settings.queue_url),
    )


def receive(event: dict[str, Any]) -> Outcome:
    """Entry point of the Lambda handler: an API Gateway proxy event in, an outcome out."""
    try:
        receiver = get_receiver()
    except ConfigurationError as exc:
        logger.error("receiver misconfigured: refusing deliveries", extra={"error": str(exc)})
        return Outcome(_json(503, {"error": "not_configured"}), "error", "not_configured")
    return receiver.handle(ApiRequest.from_proxy_event(event))


_COUNT = MetricUnit.Count
_METRIC_BY_RESULT = {
    "accepted": "WebhookAccepted",
    "duplicate": "WebhookDuplicate",
    "conflict": "WebhookConflict",
    "rejected": "WebhookRejected",
    "error": "WebhookFailed",
}


def record(outcome: Outcome, metrics: MetricSink) -> None:
    """One log line and one metric per delivery; never the payload, never a header value."""
    if outcome.result == "error":
        level = logging.WARNING
    elif outcome.result == "rejected":
        level = logging.INFO
    else:
        # Accepted and duplicate deliveries are already in EventsTable (the event log) and in the metrics;
        # a log line costs more than the rest of the receiver's own work, so it is DEBUG (or sampled with
        # POWERTOOLS_LOGGER_SAMPLE_RATE).
        level = logging.DEBUG
    if logs_at(level):
        fields = {"result": outcome.result, "status": outcome.response.status, "reason": outcome.reason}
        # The event's keys only matter to a line that is written: set them only then.
        if outcome.event_id:
            ensure_lambda_context()
            logger.append_keys(eventId=outcome.event_id, event=outcome.event_type)
            logger.set_correlation_id(outcome.event_id)
        if level == logging.WARNING:
            logger.warning("delivery " + outcome.result, extra=fields)
        elif level == logging.INFO:
            logger.info("delivery " + outcome.result, extra=fields)
        else:
            logger.debug("delivery " + outcome.result, extra=fields)
    name = _METRIC_BY_RESULT[outcome.result]
    metrics.add_metric(name=name, unit=_COUNT, value=1)
    if outcome.reason:
        # A separate metric per reason: alarms and dashboards can watch one reason (e.g. bad_secret).
        metrics.add_metric(name=f"{name}_{outcome.reason}", unit=_COUNT, value=1)
