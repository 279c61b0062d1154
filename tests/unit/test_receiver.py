"""parse_delivery and WebhookReceiver with in-memory fakes of the event store, the queue and the secrets."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pluggy_pipeline import receiver as receiver_module
from pluggy_pipeline.auth import WebhookAuthenticator, sign
from pluggy_pipeline.config import ReceiverSettings
from pluggy_pipeline.errors import ConfigurationError, PermanentError, TransientError
from pluggy_pipeline.event_store import Claim, ClaimOutcome, KeySource, NewEvent, iso_now
from pluggy_pipeline.http import ApiRequest
from pluggy_pipeline.receiver import (
    BadPayload,
    Outcome,
    WebhookReceiver,
    get_receiver,
    parse_delivery,
    receive,
    received_at,
    record,
)
from pluggy_pipeline.secrets import StaticSecretProvider, WebhookSecrets

SECRET = "the-shared-secret"
PREVIOUS = "the-previous-secret"
KEY = "the-signing-key"
CLIENT_ID = "4552bee0-b87f-48b5-896b-c23113839319"
PLUGGY_IP = "177.71.238.212"
HASH_KEY = re.compile(r"^sha256-[0-9a-f]{64}$")


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def item_event(n: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "event": "item/updated",
        "eventId": f"evt-{n}",
        "clientId": CLIENT_ID,
        "itemId": "item-1",
        "triggeredBy": "SYNC",
        **extra,
    }


KEYLESS = {
    "event": "connector/status_updated",
    "clientId": CLIENT_ID,
    "connectorId": "201",
    "id": "201",
    "data": {"status": "UNSTABLE"},
}


# =============================================================================== parse_delivery


def test_parse_with_event_id() -> None:
    text = dumps(item_event(7))
    delivery = parse_delivery(text.encode())
    assert delivery.event_id == "evt-7"
    assert delivery.event_type == "item/updated"
    assert delivery.key_source is KeySource.EVENT_ID
    assert delivery.text == text
    assert delivery.client_id == CLIENT_ID
    assert delivery.item_id == "item-1"


def test_parse_without_event_id_keys_on_the_body_hash() -> None:
    delivery = parse_delivery(dumps(KEYLESS).encode())
    assert HASH_KEY.match(delivery.event_id)
    assert delivery.key_source is KeySource.BODY_HASH
    assert delivery.item_id is None
    other = parse_delivery(dumps({**KEYLESS, "data": {"status": "ONLINE"}}).encode())
    assert other.event_id != delivery.event_id


def test_body_hash_is_stable_across_key_order_and_whitespace() -> None:
    compact = parse_delivery(dumps(KEYLESS).encode()).event_id
    pretty = json.dumps(dict(reversed(list(KEYLESS.items()))), indent=4)
    assert parse_delivery(pretty.encode()).event_id == compact
    spaced = ' {\n "data" : { "status" :"UNSTABLE" } , "id":"201","connectorId":"201",\t"clientId":"CLIENT",'
    spaced = spaced.replace("CLIENT", CLIENT_ID) + '"event":"connector/status_updated"}\r\n'
    assert parse_delivery(spaced.encode()).event_id == compact
    escaped = dumps(KEYLESS).replace("UNSTABLE", "\\u0055NSTABLE")  # same string, different bytes
    assert parse_delivery(escaped.encode()).event_id == compact


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(
    extra=st.dictionaries(st.text(max_size=6).filter(lambda k: k not in {"event", "eventId"}), json_values, max_size=5),
    seed=st.integers(0, 2**32),
    indent=st.sampled_from([None, 0, 2, "\t"]),
)
def test_body_hash_property(extra: dict[str, Any], seed: int, indent: Any) -> None:
    payload = {"event": "connector/status_updated", **extra}
    items = list(payload.items())
    random.Random(seed).shuffle(items)
    compact = json.dumps(payload, separators=(",", ":")).encode()
    shuffled = json.dumps(dict(items), indent=indent, ensure_ascii=bool(seed % 2)).encode()
    try:
        key = parse_delivery(compact).event_id
    except BadPayload:  # e.g. hypothesis produced a non-character: both spellings must agree
        with pytest.raises(BadPayload):
            parse_delivery(shuffled)
        return
    assert HASH_KEY.match(key)
    assert parse_delivery(shuffled).event_id == key


def test_event_id_of_200_characters_is_accepted() -> None:
    assert parse_delivery(dumps(item_event(eventId="e" * 200)).encode()).event_id == "e" * 200


def test_unknown_event_name_is_parsed() -> None:
    assert parse_delivery(dumps({"event": "boleto/updated", "eventId": "b-1"}).encode()).event_type == "boleto/updated"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"event":"item/updated","eventId":"\xc3"}', "UTF-8"),
        (b'{"event": "item/updated", "eventId": ', "valid JSON"),
        (b"", "valid JSON"),
        (b"   ", "valid JSON"),
        (b"[]", "JSON object"),
        (dumps([item_event()]).encode(), "JSON object"),
        (b'"item/updated"', "JSON object"),
        (b"42", "JSON object"),
        (b"null", "JSON object"),
        (b'{"eventId":"e-1"}', "'event'"),
        (b'{"event":"","eventId":"e-1"}', "'event'"),
        (b'{"event":"   ","eventId":"e-1"}', "'event'"),
        (b'{"event":123,"eventId":"e-1"}', "'event'"),
        (b'{"event":null,"eventId":"e-1"}', "'event'"),
        (b'{"event":["item/updated"],"eventId":"e-1"}', "'event'"),
        (dumps({"event": "x" * 201, "eventId": "e"}).encode(), "'event'"),
        (b'{"event":"item/updated","eventId":""}', "'eventId'"),
        (b'{"event":"item/updated","eventId":"  "}', "'eventId'"),
        (b'{"event":"item/updated","eventId":123}', "'eventId'"),
        (b'{"event":"item/updated","eventId":["e-1"]}', "'eventId'"),
        (b'{"event":"item/updated","eventId":{"id":"e-1"}}', "'eventId'"),
        (dumps({"event": "item/updated", "eventId": "e" * 201}).encode(), "'eventId'"),
        (b'{"event":"item/updated","eventId":"e-1","event":"item/deleted"}', "duplicate keys"),
        (b'{"event":"item/updated","eventId":"e-1","data":{"a":1,"a":2}}', "duplicate keys"),
        (b'{"event":"item/updated","eventId":"e-1","n":NaN}', "NaN"),
        (b'{"event":"item/updated","eventId":"e-1","n":Infinity}', "Infinity"),
        (b'{"event":"item/updated","eventId":"e-1","n":[-Infinity]}', "Infinity"),
        (b"[" * 100_000, "valid JSON"),
        (b'{"a":' * 100_000, "valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "valid JSON"),
        ('{"event":"item/updated","eventId":"e-1","x":"\uffff"}'.encode(), "non-character"),
        ('{"event":"item/updated","eventId":"e-1","x":"\ufffe"}'.encode(), "non-character"),
        (b'{"event":"item/updated","eventId":"e-1","x":"\x00"}', "control"),
        (b'{"event":"item/updated","eventId":"e-1"}\x00', "control"),
        # JSON escapes that decode to what DynamoDB keys and SQS attributes refuse:
        (b'{"event":"item/updated","eventId":"\\uffff"}', "'eventId'"),
        (b'{"event":"item/updated","eventId":"\\ud800"}', "'eventId'"),
        (b'{"event":"item/\\u0000updated","eventId":"e-1"}', "'event'"),
        (b'{"event":"\\udfff","eventId":"e-1"}', "'event'"),
        (b'{"event":"item/updated","eventId":"e-1","clientId":123}', "'clientId'"),
        (b'{"event":"item/updated","eventId":"e-1","clientId":{"id":"x"}}', "'clientId'"),
    ],
)
def test_bad_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(BadPayload) as excinfo:
        parse_delivery(body)
    assert reason in str(excinfo.value)


def test_lone_surrogate_in_a_keyless_body_still_gets_a_stable_key() -> None:
    body = b'{"event":"connector/status_updated","data":"\\ud800"}'
    first = parse_delivery(body).event_id
    assert HASH_KEY.match(first)
    assert parse_delivery(b'{"data":"\\ud800",  "event":"connector/status_updated"}').event_id == first


def test_escaped_non_character_in_other_fields_is_accepted_and_text_kept() -> None:
    body = b'{"event":"item/updated","eventId":"e-1","x":"\\uffff"}'
    assert parse_delivery(body).text == body.decode()


@pytest.mark.parametrize("item_id", [123, None, "i" * 201, "\\ud800"])
def test_odd_item_id_is_dropped_not_fatal(item_id: Any) -> None:
    raw = '"\\ud800"' if item_id == "\\ud800" else json.dumps(item_id)
    body = '{"event":"item/updated","eventId":"e-1","itemId":' + raw + "}"
    assert parse_delivery(body.encode()).item_id is None


def test_client_id_null_counts_as_absent() -> None:
    assert parse_delivery(b'{"event":"item/updated","eventId":"e-1","clientId":null}').client_id is None


# =============================================================================== fakes


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Record:
    event: NewEvent
    token: str
    received_at: float
    status: str = "RECEIVED"


@dataclass
class FakeEventStore:
    """EventStore's contract in memory: one conditional claim (NEW / PENDING / DUPLICATE), release on our token.

    The claim succeeds when no record exists, or when a keyless record is older than the keyless window;
    otherwise a RECEIVED record (claimed, not picked up by the processor) is PENDING and any later status is
    a DUPLICATE. Nothing else is ever written by the receiver.
    """

    clock: Clock = field(default_factory=Clock)
    records: dict[str, Record] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    claim_error: Exception | None = None
    release_ok: bool = True
    _tokens: int = 0

    def claim(self, event: NewEvent, *, keyless_window_seconds: int) -> Claim:
        self.calls.append("claim")
        if self.claim_error is not None:
            raise self.claim_error
        now = self.clock()
        existing = self.records.get(event.event_id)
        if existing is not None:
            stale_keyless = (
                existing.event.key_source is KeySource.BODY_HASH and existing.received_at < now - keyless_window_seconds
            )
            if not stale_keyless:
                pending = existing.status == "RECEIVED"
                outcome = ClaimOutcome.PENDING if pending else ClaimOutcome.DUPLICATE
                return Claim(outcome, event.event_id, "", existing.status)
        self._tokens += 1
        token = f"t{self._tokens}"
        self.records[event.event_id] = Record(event, token, now)
        return Claim(ClaimOutcome.NEW, event.event_id, token)

    def release(self, claim: Claim) -> bool:
        self.calls.append("release")
        record = self.records.get(claim.event_id)
        if not self.release_ok or record is None or record.token != claim.token:
            return False
        del self.records[claim.event_id]
        return True


SQS_DEDUPE_SECONDS = 300


@dataclass
class FakeEventQueue:
    """EventQueue on a FIFO queue: a second send of one eventId within SQS's 5 minutes is dropped."""

    clock: Clock = field(default_factory=Clock)
    messages: list[dict[str, str]] = field(default_factory=list)
    sends: list[str] = field(default_factory=list)  # every send that reached SQS, dropped or not
    failures: list[Exception] = field(default_factory=list)
    _first_sent: dict[str, float] = field(default_factory=dict)

    def send(
        self,
        *,
        event_id: str,
        event_type: str,
        body: str,
        group_id: str | None = None,
        extra_attributes: dict[str, str] | None = None,
    ) -> str:
        if self.failures:
            raise self.failures.pop(0)
        self.sends.append(event_id)
        now = self.clock()
        first = self._first_sent.get(event_id)
        if first is not None and now - first < SQS_DEDUPE_SECONDS:
            return "msg-dropped"  # SQS answers success and keeps the first copy only
        self._first_sent[event_id] = now
        self.messages.append(
            {
                "eventId": event_id,
                "eventType": event_type,
                "body": body,
                "groupId": str(group_id),
                **(extra_attributes or {}),
            }
        )
        return f"msg-{len(self.messages)}"


@dataclass
class Harness:
    receiver: WebhookReceiver
    store: FakeEventStore
    queue: FakeEventQueue
    settings: ReceiverSettings

    def post(self, body: str | bytes | None, headers: dict[str, list[str]] | None = None, **kw: Any) -> Outcome:
        return self.receiver.handle(request(body, headers, **kw))

    def deliver(self, payload: Any, **kw: Any) -> Outcome:
        text = payload if isinstance(payload, str) else dumps(payload)
        return self.post(text, signed_headers(text), **kw)

    def assert_untouched(self) -> None:
        assert self.store.calls == []
        assert self.store.records == {}
        assert self.queue.messages == []
        assert self.queue.sends == []

    def processor_takes(self, event_id: str, status: str = "PROCESSING") -> None:
        """What ProcessingLog does when the processor picks the message up (and later finishes it)."""
        self.store.records[event_id].status = status


def signed_headers(body: str | bytes, secret: str = SECRET, key: str = KEY) -> dict[str, list[str]]:
    raw = body.encode() if isinstance(body, str) else body
    return {"X-Webhook-Secret": [secret], "X-Pluggy-Signature": [sign(raw, key.encode())]}


def request(
    body: str | bytes | None,
    headers: dict[str, list[str]] | None = None,
    method: str = "POST",
    path: str = "/webhooks/pluggy",
    source_ip: str = PLUGGY_IP,
) -> ApiRequest:
    raw = body.encode() if isinstance(body, str) else body
    folded = {name.lower(): tuple(values) for name, values in (headers or {}).items()}
    return ApiRequest(method, path, folded, raw, source_ip)


def harness(
    header_secrets: tuple[str, ...] = (SECRET, PREVIOUS),
    signing_keys: tuple[str, ...] = (KEY,),
    **env: str,
) -> Harness:
    base = {
        "EVENTS_TABLE_NAME": "events",
        "EVENT_QUEUE_URL": "queue",
        "PLUGGY_CLIENT_ID": CLIENT_ID,
        "ALLOWED_SOURCE_CIDRS": f"{PLUGGY_IP}/32",
    }
    receiver_settings = ReceiverSettings.from_env({**base, **env})
    secrets = WebhookSecrets(tuple(s.encode() for s in header_secrets), tuple(k.encode() for k in signing_keys))
    store = FakeEventStore()
    queue = FakeEventQueue(clock=store.clock)
    authenticator = WebhookAuthenticator(receiver_settings, StaticSecretProvider(secrets))
    receiver = WebhookReceiver(receiver_settings, authenticator, store, queue)  # type: ignore[arg-type]
    return Harness(receiver, store, queue, receiver_settings)


# =============================================================================== answers


def test_accepted_is_202_and_queued_once() -> None:
    h = harness()
    text = dumps(item_event(1))
    outcome = h.deliver(text)
    assert outcome.response.status == 202
    assert dict(outcome.response.body) == {"status": "accepted", "eventId": "evt-1"}
    assert (outcome.result, outcome.reason, outcome.event_id, outcome.event_type) == (
        "accepted",
        "",
        "evt-1",
        "item/updated",
    )
    (message,) = h.queue.messages
    received_at = message.pop("receivedAt")
    assert message == {
        "eventId": "evt-1",
        "eventType": "item/updated",
        "body": text,
        "groupId": "item:item-1",
        "origin": "webhook",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", received_at)  # versions event-built records
    assert h.store.calls == ["claim"]  # one conditional write, never updated afterwards
    assert h.queue.sends == ["evt-1"]
    assert h.store.records["evt-1"].status == "RECEIVED"


def test_duplicate_of_a_queued_event_is_resent_and_sqs_keeps_one_copy() -> None:
    """Still RECEIVED: the first attempt may have died before its send, so send again (FIFO drops the copy)."""
    h = harness()
    assert h.deliver(item_event(1)).response.status == 202
    token = h.store.records["evt-1"].token
    h.store.calls.clear()
    h.store.clock.now += 60  # Pluggy's retry
    outcome = h.deliver(item_event(1))
    assert outcome.response.status == 200
    assert dict(outcome.response.body) == {"status": "duplicate", "eventId": "evt-1"}
    assert (outcome.result, outcome.reason) == ("duplicate", "resent")
    assert h.store.calls == ["claim"]  # one store call, no release, no update
    assert h.queue.sends == ["evt-1", "evt-1"]
    assert len(h.queue.messages) == 1
    assert h.store.records["evt-1"].token == token  # the claim was not taken over


def test_duplicate_long_after_a_queued_event_is_still_a_duplicate_never_new() -> None:
    """No lease: however late the redelivery, a RECEIVED event is resent, never claimed again."""
    h = harness()
    assert h.deliver(item_event(1)).response.status == 202
    token = h.store.records["evt-1"].token
    h.store.clock.now += 3600
    outcome = h.deliver(item_event(1))
    assert (outcome.response.status, outcome.result, outcome.reason) == (200, "duplicate", "resent")
    assert h.store.records["evt-1"].token == token
    assert h.queue.sends == ["evt-1", "evt-1"]
    # Beyond SQS's 5 minutes the resend is a second copy; the processor skips it once the event is PROCESSED.
    assert len(h.queue.messages) == 2


@pytest.mark.parametrize("status", ["PROCESSING", "PROCESSED", "FAILED"])
def test_duplicate_of_an_event_the_processor_took(status: str) -> None:
    h = harness()
    h.deliver(item_event(1))
    h.processor_takes("evt-1", status)
    h.store.calls.clear()
    h.store.clock.now += 3600
    outcome = h.deliver(item_event(1))
    assert outcome.response.status == 200
    assert dict(outcome.response.body) == {"status": "duplicate", "eventId": "evt-1"}
    assert (outcome.result, outcome.reason) == ("duplicate", "")
    assert h.store.calls == ["claim"]  # one store call for a duplicate, nothing sent
    assert h.queue.sends == ["evt-1"]
    assert len(h.queue.messages) == 1


def test_keyless_redelivery_dedupes_within_the_window_only() -> None:
    h = harness(KEYLESS_DEDUPE_SECONDS="600")
    first = h.deliver(KEYLESS)
    assert first.response.status == 202
    assert HASH_KEY.match(first.event_id)
    h.store.clock.now += 60
    pretty = json.dumps(dict(reversed(list(KEYLESS.items()))), indent=2)  # same event, other bytes
    again = h.deliver(pretty)
    assert (again.response.status, again.event_id, again.reason) == (200, first.event_id, "resent")
    assert len(h.queue.messages) == 1
    h.processor_takes(first.event_id, "PROCESSED")
    h.store.clock.now += 539  # 599 s after the first delivery
    late = h.deliver(KEYLESS)
    assert (late.response.status, late.event_id, late.reason) == (200, first.event_id, "")
    assert len(h.queue.sends) == 2
    h.store.clock.now += 2  # 601 s after the first delivery: a new occurrence
    assert h.deliver(KEYLESS).response.status == 202
    assert len(h.queue.messages) == 2
    assert h.store.records[first.event_id].status == "RECEIVED"


def test_keyless_event_still_unprocessed_after_the_window_is_new_again() -> None:
    h = harness(KEYLESS_DEDUPE_SECONDS="310")
    first = h.deliver(KEYLESS)
    token = h.store.records[first.event_id].token
    h.store.clock.now += 311
    again = h.deliver(KEYLESS)
    assert (again.response.status, again.event_id) == (202, first.event_id)
    assert h.store.records[first.event_id].token != token  # claimed anew
    # 311 s later: SQS's 300 s dedupe window is over too, so the new occurrence is queued.
    assert len(h.queue.messages) == 2


# --- FIFO message groups ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "group"),
    [
        pytest.param(item_event(1), "item:item-1", id="item"),
        pytest.param(item_event(2, event="transactions/created", accountId="acc-1"), "item:item-1", id="item-tx"),
        pytest.param(KEYLESS, "connector:201", id="connector-keyless"),
        pytest.param({**KEYLESS, "eventId": "c-1", "connectorId": 201}, "connector:201", id="connector-int"),
        pytest.param(
            {"event": "payment_intent/created", "eventId": "p-1", "paymentRequestId": "r", "paymentIntentId": "pi"},
            "payment:pi",
            id="payment-intent",
        ),
        pytest.param(
            {"event": "scheduled_payment/created", "eventId": "p2", "paymentRequestId": "r", "scheduledPaymentId": "s"},
            "payment:s",
            id="scheduled-payment",
        ),
        pytest.param(
            {"event": "payment_request/updated", "eventId": "p-3", "paymentRequestId": "pr-1"},
            "payment:pr-1",
            id="payment-request",
        ),
        pytest.param({"event": "boleto/updated", "eventId": "b-1", "boletoId": "x"}, "event:b-1", id="fallback"),
        pytest.param(
            {"event": "item/updated", "eventId": "e-1", "itemId": 123, "connectorId": True}, "event:e-1", id="odd-ids"
        ),
        pytest.param({"event": "item/updated", "eventId": "e-2", "itemId": ""}, "event:e-2", id="empty-item"),
    ],
)
def test_message_group_per_event_kind(payload: dict[str, Any], group: str) -> None:
    delivery = parse_delivery(dumps(payload).encode())
    assert delivery.group_id == group
    h = harness()
    outcome = h.deliver(payload)
    assert outcome.response.status == 202
    assert [m["groupId"] for m in h.queue.messages] == [group]


def test_keyless_fallback_group_is_the_body_hash() -> None:
    delivery = parse_delivery(b'{"event":"connector/status_updated","data":{"status":"ONLINE"}}')
    assert HASH_KEY.match(delivery.event_id)
    assert delivery.group_id == f"event:{delivery.event_id}"


def test_resend_goes_to_the_same_group() -> None:
    h = harness()
    h.deliver(item_event(1))
    h.store.clock.now += 3600  # past SQS's window, so the resend is kept and its group visible
    h.deliver(item_event(1))
    assert [m["groupId"] for m in h.queue.messages] == ["item:item-1", "item:item-1"]


def test_unknown_event_names_are_accepted_and_queued() -> None:
    h = harness()
    outcome = h.deliver({"event": "boleto/updated", "eventId": "b-1"})
    assert outcome.response.status == 202
    assert h.queue.messages[0]["eventType"] == "boleto/updated"


def test_trailing_slash_on_the_path_is_the_same_resource() -> None:
    h = harness()
    assert h.deliver(item_event(1), path="/webhooks/pluggy/").response.status == 202


def test_previous_secret_accepted() -> None:
    h = harness()
    text = dumps(item_event(1))
    assert h.post(text, signed_headers(text, secret=PREVIOUS)).response.status == 202


# --- refusals: nothing stored, nothing queued ------------------------------------------------------

GOOD = dumps(item_event(1))


def _refusals() -> list[Any]:
    signed = signed_headers(GOOD)
    mismatch = dumps(item_event(1, clientId="00000000-0000-0000-0000-000000000000"))
    return [
        pytest.param(GOOD, signed, {"path": "/webhooks/other"}, 404, "not_found", id="wrong-path"),
        pytest.param(GOOD, signed, {"path": "/"}, 404, "not_found", id="root"),
        pytest.param(None, signed, {"method": "GET"}, 405, "method_not_allowed", id="get"),
        pytest.param(GOOD, signed, {"method": "PUT"}, 405, "method_not_allowed", id="put"),
        pytest.param(GOOD, signed, {"source_ip": "203.0.113.10"}, 403, "source_ip_not_allowed", id="wrong-ip"),
        pytest.param(GOOD, signed | {"X-Webhook-Secret": ["nope"]}, {}, 401, "bad_secret", id="bad-secret"),
        pytest.param(GOOD, {"X-Pluggy-Signature": signed["X-Pluggy-Signature"]}, {}, 401, "bad_secret", id="no-secret"),
        pytest.param(GOOD, signed | {"X-Webhook-Secret": [SECRET, SECRET]}, {}, 401, "bad_secret", id="two-secrets"),
        pytest.param(GOOD, signed | {"X-Pluggy-Signature": ["0" * 64]}, {}, 401, "bad_signature", id="bad-sig"),
        pytest.param(GOOD, {"X-Webhook-Secret": [SECRET]}, {}, 401, "bad_signature", id="no-sig"),
        pytest.param(mismatch, signed_headers(mismatch), {}, 403, "client_id_mismatch", id="client-mismatch"),
        pytest.param(None, signed, {}, 400, "malformed_body", id="undecodable-body"),
        pytest.param("[1]", signed_headers("[1]"), {}, 400, "malformed_body", id="not-an-object"),
    ]


@pytest.mark.parametrize(("body", "headers", "kw", "status", "reason"), _refusals())
def test_refusals_store_and_queue_nothing(
    body: str | None, headers: dict[str, list[str]], kw: dict[str, Any], status: int, reason: str
) -> None:
    h = harness()
    outcome = h.post(body, headers, **kw)
    assert outcome.response.status == status
    assert outcome.response.body["error"] == reason
    assert outcome.response.body["message"]
    assert (outcome.result, outcome.reason) == ("rejected", reason)
    h.assert_untouched()


def test_405_carries_allow_post() -> None:
    outcome = harness().post(None, method="GET")
    assert outcome.response.status == 405
    assert outcome.response.headers == {"Allow": "POST"}


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",
        b'{"event":"item/updated","eventId":"e","a":1,"a":2}',
        b'{"event":"item/updated","eventId":"e","n":NaN}',
        b"[" * 100_000,
        '{"event":"item/updated","eventId":"e","x":"\uffff"}'.encode(),
        b'{"event":"","eventId":"e"}',
        b'{"event":"item/updated","eventId":""}',
    ],
)
def test_malformed_signed_bodies_are_400_with_a_reason(body: bytes) -> None:
    h = harness()
    outcome = h.post(body, signed_headers(body))
    assert outcome.response.status == 400
    assert outcome.response.body["error"] == "malformed_body"
    assert len(outcome.response.body["message"]) > 5
    h.assert_untouched()


def test_body_exactly_at_the_limit_is_accepted_one_more_byte_is_413() -> None:
    h = harness(MAX_BODY_BYTES="512")
    base = dumps(item_event(1, pad=""))
    at_limit = base.replace('"pad":""', '"pad":"' + "x" * (512 - len(base)) + '"')
    assert len(at_limit.encode()) == 512
    assert h.deliver(at_limit).response.status == 202
    over = dumps(item_event(2, pad="x" * (512 - len(base) + 1)))
    assert len(over.encode()) == 513
    outcome = h.deliver(over)
    assert (outcome.response.status, outcome.reason) == (413, "body_too_large")
    assert len(h.queue.messages) == 1


def test_limit_counts_bytes_not_characters() -> None:
    h = harness(MAX_BODY_BYTES="100")
    text = json.dumps({"event": "item/updated", "eventId": "e", "p": "ç" * 40}, ensure_ascii=False)
    assert len(text) <= 100 < len(text.encode())
    assert h.deliver(text).response.status == 413


@pytest.mark.parametrize(
    ("configured", "payload_client", "status"),
    [
        (CLIENT_ID, CLIENT_ID, 202),
        (CLIENT_ID, "other-client", 403),
        (CLIENT_ID, CLIENT_ID.upper(), 403),
        (CLIENT_ID, None, 202),
        ("", "other-client", 202),
        ("", None, 202),
    ],
)
def test_client_id(configured: str, payload_client: str | None, status: int) -> None:
    h = harness(PLUGGY_CLIENT_ID=configured)
    payload = {k: v for k, v in item_event(1).items() if k != "clientId"}
    if payload_client is not None:
        payload["clientId"] = payload_client
    assert h.deliver(payload).response.status == status
    assert len(h.queue.messages) == (1 if status == 202 else 0)


# --- order of checks: authentication before anything else ----------------------------------------


def test_bad_secret_wins_over_every_body_problem() -> None:
    h = harness(MAX_BODY_BYTES="64")
    for body in [None, "x" * 1000, "not json", "[" * 10_000]:
        outcome = h.post(body, {"X-Webhook-Secret": ["forged"], "X-Pluggy-Signature": ["0" * 64]})
        assert (outcome.response.status, outcome.reason) == (401, "bad_secret"), body
    h.assert_untouched()


def test_source_ip_is_checked_before_the_secret() -> None:
    outcome = harness().post(GOOD, {"X-Webhook-Secret": ["forged"]}, source_ip="203.0.113.10")
    assert outcome.response.status == 403


def test_size_is_checked_before_the_signature_and_the_signature_before_parsing() -> None:
    h = harness(MAX_BODY_BYTES="64")
    big = "x" * 65
    assert h.post(big, {"X-Webhook-Secret": [SECRET], "X-Pluggy-Signature": ["bad"]}).response.status == 413
    assert h.post("nope", {"X-Webhook-Secret": [SECRET], "X-Pluggy-Signature": ["bad"]}).response.status == 401


# --- misconfiguration fails closed ------------------------------------------------------------------


def test_no_secret_configured_is_503_not_configured() -> None:
    h = harness(header_secrets=(), signing_keys=())
    for outcome in (h.deliver(item_event(1)), h.post(GOOD), h.post(GOOD, {"X-Webhook-Secret": ["anything"]})):
        assert outcome.response.status == 503
        assert dict(outcome.response.body) == {"error": "not_configured"}
        assert (outcome.result, outcome.reason) == ("error", "not_configured")
    h.assert_untouched()


def test_no_secret_with_insecure_local_dev_accepts() -> None:
    h = harness(header_secrets=(), signing_keys=(), INSECURE_LOCAL_DEV_NO_AUTH="true")
    assert h.post(GOOD).response.status == 202
    assert len(h.queue.messages) == 1


def test_require_signature_without_a_signing_key_is_503() -> None:
    h = harness(signing_keys=(), REQUIRE_SIGNATURE="true")
    outcome = h.deliver(item_event(1))
    assert (outcome.response.status, outcome.reason) == (503, "not_configured")
    h.assert_untouched()


# --- transient failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [TransientError("sqs down"), PermanentError("queueing the event failed: AccessDenied")]
)
def test_queue_failure_is_503_releases_the_claim_and_the_retry_is_queued_once(error: Exception) -> None:
    h = harness()
    h.queue.failures.append(error)
    first = h.deliver(item_event(1))
    assert first.response.status == 503
    assert dict(first.response.body) == {"error": "unavailable"}
    assert first.response.headers["Retry-After"] == "60"
    assert (first.result, first.reason) == ("error", "transient")
    assert h.store.records == {}
    assert h.store.calls == ["claim", "release"]
    assert h.queue.messages == []
    retry = h.deliver(item_event(1))
    assert retry.response.status == 202
    assert len(h.queue.messages) == 1


def test_queue_and_release_both_fail_then_the_retry_is_resent_and_queued_once() -> None:
    h = harness()
    h.store.release_ok = False
    h.queue.failures.append(TransientError("sqs down"))
    first = h.deliver(item_event(1))
    assert first.response.status == 503
    assert dict(first.response.body) == {"error": "unavailable"}
    assert h.store.calls == ["claim", "release"]
    assert h.store.records["evt-1"].status == "RECEIVED"  # left behind: no lease, no takeover needed
    assert h.queue.messages == []
    h.store.calls.clear()
    retry = h.deliver(item_event(1))  # at once: nothing to wait for
    assert retry.response.status == 200
    assert dict(retry.response.body) == {"status": "duplicate", "eventId": "evt-1"}
    assert (retry.result, retry.reason) == ("duplicate", "resent")
    assert h.store.calls == ["claim"]
    # The first send failed, so the resend is the only copy.
    assert h.queue.sends == ["evt-1"]
    assert [m["eventId"] for m in h.queue.messages] == ["evt-1"]
    assert h.deliver(item_event(1)).response.status == 200
    assert len(h.queue.sends) == 2
    assert len(h.queue.messages) == 1


@pytest.mark.parametrize(
    "error", [TransientError("sqs down"), PermanentError("queueing the event failed: AccessDenied")]
)
def test_failed_resend_is_503_and_deletes_nothing(error: Exception) -> None:
    """A PENDING claim is not ours (no token): a failed resend must leave it for the next retry."""
    h = harness()
    assert h.deliver(item_event(1)).response.status == 202
    token = h.store.records["evt-1"].token
    h.store.calls.clear()
    h.queue.failures.append(error)
    outcome = h.deliver(item_event(1))
    assert outcome.response.status == 503
    assert dict(outcome.response.body) == {"error": "unavailable"}
    assert outcome.response.headers["Retry-After"] == "60"
    assert (outcome.result, outcome.reason) == ("error", "transient")
    assert h.store.calls == ["claim"]  # no release
    assert h.store.records["evt-1"].token == token
    assert h.store.records["evt-1"].status == "RECEIVED"
    assert len(h.queue.messages) == 1
    assert h.deliver(item_event(1)).response.status == 200
    assert len(h.queue.messages) == 1


def test_claim_failure_is_503_and_nothing_queued() -> None:
    h = harness()
    h.store.claim_error = TransientError("claiming the event failed: ProvisionedThroughputExceededException")
    outcome = h.deliver(item_event(1))
    assert outcome.response.status == 503
    assert outcome.response.headers["Retry-After"] == "60"
    assert h.queue.messages == []


def test_unexpected_configuration_error_from_the_store_is_503_not_configured() -> None:
    h = harness()
    h.store.claim_error = ConfigurationError("table missing")
    outcome = h.deliver(item_event(1))
    assert (outcome.response.status, outcome.reason) == (503, "not_configured")


# =============================================================================== record()


@dataclass
class FakeMetrics:
    names: list[str] = field(default_factory=list)

    def add_metric(self, *, name: str, unit: Any, value: float) -> None:
        assert value == 1
        self.names.append(name)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda h: h.deliver(item_event(1)), ["WebhookAccepted"]),
        (
            lambda h: (h.deliver(item_event(1)), h.deliver(item_event(1)))[1],
            ["WebhookDuplicate", "WebhookDuplicate_resent"],
        ),
        (
            lambda h: (h.deliver(item_event(1)), h.processor_takes("evt-1"), h.deliver(item_event(1)))[2],
            ["WebhookDuplicate"],
        ),
        (lambda h: h.post(GOOD, {"X-Webhook-Secret": ["x"]}), ["WebhookRejected", "WebhookRejected_bad_secret"]),
        (lambda h: h.post(GOOD, method="GET"), ["WebhookRejected", "WebhookRejected_method_not_allowed"]),
        (lambda h: h.deliver("[]"), ["WebhookRejected", "WebhookRejected_malformed_body"]),
    ],
)
def test_record_emits_one_metric_per_result_and_one_per_reason(make: Any, expected: list[str]) -> None:
    metrics = FakeMetrics()
    record(make(harness()), metrics)  # type: ignore[arg-type]
    assert metrics.names == expected


def test_record_for_a_transient_failure() -> None:
    h = harness()
    h.queue.failures.append(TransientError("down"))
    metrics = FakeMetrics()
    record(h.deliver(item_event(1)), metrics)  # type: ignore[arg-type]
    assert metrics.names == ["WebhookFailed", "WebhookFailed_transient"]


# =============================================================================== get_receiver / receive


@pytest.fixture
def minimal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "WEBHOOK_SECRET_ARN",
        "WEBHOOK_SECRET",
        "WEBHOOK_SECRET_PREVIOUS",
        "WEBHOOK_SIGNING_KEY",
        "INSECURE_LOCAL_DEV_NO_AUTH",
        "REQUIRE_SIGNATURE",
        "ALLOWED_SOURCE_CIDRS",
        "PLUGGY_CLIENT_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EVENTS_TABLE_NAME", "events")
    monkeypatch.setenv("EVENT_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/q")
    get_receiver.cache_clear()


def proxy_event(body: str = GOOD) -> dict[str, Any]:
    return {
        "httpMethod": "POST",
        "path": "/webhooks/pluggy",
        "headers": {"X-Webhook-Secret": SECRET},
        "requestContext": {"identity": {"sourceIp": PLUGGY_IP}},
        "body": body,
    }


@pytest.mark.usefixtures("minimal_env")
def test_no_authentication_configured_refuses_every_delivery() -> None:
    with pytest.raises(ConfigurationError):
        get_receiver()
    for event in (proxy_event(), {**proxy_event(), "httpMethod": "GET"}, {**proxy_event(), "path": "/x"}):
        outcome = receive(event)
        assert outcome.response.status == 503
        assert dict(outcome.response.body) == {"error": "not_configured"}


@pytest.mark.usefixtures("minimal_env")
def test_bad_environment_is_503_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("ALLOWED_SOURCE_CIDRS", "10.0.0.0/33")
    assert receive(proxy_event()).response.status == 503
    get_receiver.cache_clear()
    monkeypatch.setenv("ALLOWED_SOURCE_CIDRS", "")
    monkeypatch.delenv("EVENTS_TABLE_NAME")
    assert dict(receive(proxy_event()).response.body) == {"error": "not_configured"}


@pytest.mark.usefixtures("minimal_env")
def test_insecure_local_dev_logs_a_warning(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    class Store(FakeEventStore):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__()

    class Queue(FakeEventQueue):
        def __init__(self, *args: Any) -> None:
            super().__init__()

    monkeypatch.setattr(receiver_module, "EventStore", Store)
    monkeypatch.setattr(receiver_module, "EventQueue", Queue)
    monkeypatch.setenv("INSECURE_LOCAL_DEV_NO_AUTH", "true")
    with caplog.at_level(logging.WARNING):
        outcome = receive({**proxy_event(), "headers": {}})
    assert outcome.response.status == 202
    warnings = [r for r in caplog.records if "INSECURE_LOCAL_DEV_NO_AUTH" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


@pytest.mark.usefixtures("minimal_env")
def test_environment_secret_is_enough_to_build_the_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    assert isinstance(get_receiver(), WebhookReceiver)
    assert get_receiver() is get_receiver()  # built once per container


def test_hash_key_is_sha256_of_the_canonical_body() -> None:
    canonical = json.dumps(KEYLESS, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = "sha256-" + hashlib.sha256(canonical.encode()).hexdigest()
    assert parse_delivery(dumps(KEYLESS).encode()).event_id == expected


# =============================================================================== received_at()


@pytest.mark.parametrize(
    "nanoseconds",
    [
        1_764_460_800_000_500_000,  # a second's first millisecond
        1_764_460_800_999_500_000,  # its last
        1_764_460_801_000_500_000,  # the next second (the cached text of the last one must not be reused)
        1_764_460_800_123_500_000,
        951_782_400_042_500_000,  # 2000-02-29
    ],
)
def test_received_at_is_written_as_iso_now(nanoseconds: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receiver_module.time, "time_ns", lambda: nanoseconds)
    assert received_at() == iso_now(nanoseconds / 1e9)


def test_the_ascii_fast_path_refuses_exactly_what_the_full_character_class_refuses() -> None:
    full = receiver_module._not_sqs_safe()
    for code_point in [*range(0x80), 0xD7FF, 0xD800, 0xDFFF, 0xE000, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x10FFFF]:
        text = f"ok{chr(code_point)}"
        assert receiver_module._sqs_unsafe(text) == (full.search(text) is not None), hex(code_point)


@pytest.mark.parametrize(
    "payload",
    [
        {"event": "item/updated", "itemId": "i", "b": [1, 2.5, None, True], "a": {"z": "ção", "y": "\u2028"}},
        {"event": "connector/status_updated", "data": {"status": "UNSTABLE", "n": -0.0, "big": 10**30}},
        {"event": "x", "text": '\ud800 lone surrogate, \U0001f600 emoji, \\ backslash, " quote'},
    ],
)
def test_the_canonical_text_is_json_dumps_with_sorted_keys(payload: dict[str, Any]) -> None:
    expected = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert receiver_module.canonical_json(payload) == expected
