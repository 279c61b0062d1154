"""ReceiverFunction's guarantees end to end (lambda_handler against moto built from template.yaml).

Dedupe, SQS/DynamoDB failures and retries, concurrent duplicates, FIFO message groups, fail-closed
configuration, secret rotation and its cost, and what reaches stdout (logs and EMF metrics).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto.dynamodb.models import DynamoDBBackend
from moto.sqs.models import Queue as SqsQueue
from pluggy_pipeline import aws
from pluggy_pipeline import receiver as receiver_module
from pluggy_pipeline.auth import sign
from pluggy_pipeline.event_store import EventStore, ProcessingLog, StartOutcome
from pluggy_pipeline.observability import SERVICE
from pluggy_pipeline.secrets import SecretsManagerProvider, derive_url_token
from pluggy_pipeline_cli.webhook_examples import VALID_PAYLOADS
from pluggy_pipeline_local.devsecrets import (
    LOCAL_PLUGGY_CLIENT_ID,
    LOCAL_SIGNING_KEY,
    LOCAL_WEBHOOK_SECRET,
    PLUGGY_SOURCE_IP,
)
from pluggy_pipeline_local.events_corpus import Scenario, proxy_event, scenarios

from tests.conftest import Stack
from tests.handlers.test_receiver_handler import APP

ITEM = VALID_PAYLOADS["item-updated"]
KEYLESS = VALID_PAYLOADS["connector-status-updated"]


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def delivery(
    payload: Any,
    *,
    secret: str | None = LOCAL_WEBHOOK_SECRET,
    key: str | None = LOCAL_SIGNING_KEY,
    **scenario: Any,
) -> dict[str, Any]:
    """An API Gateway proxy event carrying `payload` (dict or raw text), signed unless told otherwise."""
    body = payload if isinstance(payload, str) else dumps(payload)
    headers: dict[str, list[str]] = {"Content-Type": ["application/json"]}
    if secret is not None:
        headers["X-Webhook-Secret"] = [secret]
    if key is not None:
        headers["X-Pluggy-Signature"] = [sign(body.encode("utf-8", "surrogatepass"), key.encode())]
    return proxy_event(Scenario("test", 0, body, headers, **scenario))


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Flaky:
    """A boto3 client whose chosen operations fail (or stall) on demand; everything else goes to moto."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.errors: dict[str, Exception] = {}
        self.delays: dict[str, float] = {}
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        if not callable(method):
            return method

        def call(**kwargs: Any) -> Any:
            self.calls[name] += 1
            time.sleep(self.delays.get(name, 0))
            if name in self.errors:
                raise self.errors[name]
            return method(**kwargs)

        return call


def client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


def count_calls(client: Any) -> Counter[str]:
    """Every API call the receiver's own client makes, by operation (botocore event hook)."""
    counter: Counter[str] = Counter()

    def hook(model: Any, **_: Any) -> None:
        counter[model.name] += 1

    client.meta.events.register("before-call", hook)
    return counter


@pytest.fixture
def invoke(receiver_env: dict[str, str], lambda_context: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def _invoke(event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = APP.lambda_handler(event, lambda_context)
        response["json"] = json.loads(response["body"])
        return response

    return _invoke


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """EventStore's clock, injected into the receiver get_receiver() builds."""
    fake = Clock()
    monkeypatch.setattr(receiver_module, "EventStore", functools.partial(EventStore, clock=fake))
    return fake


@pytest.fixture
def secrets_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The receiver's Secrets Manager cache on a stepped clock: tests move now[0] to cross its bounds."""
    now = [1000.0]

    def provider(settings: Any, factory: Any) -> SecretsManagerProvider:
        return SecretsManagerProvider(settings.secret_arn, factory, settings.cache_seconds, lambda: now[0])

    monkeypatch.setattr(receiver_module, "provider_from_settings", provider)
    return now


def _factory(client: Flaky) -> Any:
    """Stands in for aws.sqs / aws.dynamodb (a functools.cache: conftest calls its cache_clear)."""

    @functools.cache
    def factory(config: Any = aws.RECEIVER_CONFIG) -> Flaky:
        return client

    return factory


@pytest.fixture
def flaky_sqs(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Flaky:
    client = Flaky(stack.sqs)
    monkeypatch.setattr(aws, "sqs", _factory(client))
    return client


@pytest.fixture
def flaky_dynamodb(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Flaky:
    client = Flaky(stack.dynamodb)
    monkeypatch.setattr(aws, "dynamodb", _factory(client))
    return client


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Powertools' JSON log lines (its StreamHandler was bound to stdout when app.py was imported)."""
    buffer = io.StringIO()
    handlers = [h for h in logging.getLogger(SERVICE).handlers if isinstance(h, logging.StreamHandler)]
    assert handlers, "Powertools logger has no stream handler"
    for handler in handlers:
        monkeypatch.setattr(handler, "stream", buffer)
    return buffer


def log_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def emf_blobs(stdout: str) -> list[dict[str, Any]]:
    blobs = []
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            blobs.append(json.loads(line))
    return blobs


def metric_names(blob: dict[str, Any]) -> set[str]:
    return {m["Name"] for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


# ================================================================================ dedupe


def set_status(stack: Stack, event_id: str, status: str) -> None:
    """What the processor's ProcessingLog does to the record (PROCESSING, then PROCESSED or FAILED)."""
    stack.dynamodb.update_item(
        TableName=stack.events_table,
        Key={"eventId": {"S": event_id}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": status}},
    )


def processor_starts(stack: Stack, payload: dict[str, Any]) -> None:
    """The processor picking the message up: the real ProcessingLog.start (record -> PROCESSING)."""
    log = ProcessingLog(lambda: stack.dynamodb, stack.events_table)
    assert log.start(payload["eventId"], payload["event"], dumps(payload)) is StartOutcome.STARTED


def test_new_event_costs_one_put_and_one_send_and_is_never_updated(invoke: Any, stack: Stack) -> None:
    calls = count_calls(aws.dynamodb())
    sqs_calls = count_calls(aws.sqs())
    first = invoke(delivery(ITEM))
    assert first["statusCode"] == 202
    assert first["json"] == {"status": "accepted", "eventId": ITEM["eventId"]}
    assert calls == Counter({"PutItem": 1})
    assert sqs_calls == Counter({"SendMessage": 1})
    record = stack.event_record(ITEM["eventId"])
    assert record is not None and record["status"]["S"] == "RECEIVED"
    assert "queuedAt" not in record and "leaseUntil" not in record  # one write: no lease, no mark


def test_redelivery_of_a_queued_unprocessed_event_is_resent_and_queued_once(invoke: Any, stack: Stack) -> None:
    """Used to be 503 in_flight. Still RECEIVED: resent under the same deduplication id, SQS keeps one copy."""
    event = delivery(ITEM)
    assert invoke(event)["statusCode"] == 202
    record = stack.event_record(ITEM["eventId"])
    calls = count_calls(aws.dynamodb())
    sqs_calls = count_calls(aws.sqs())
    again = invoke(event)
    assert again["statusCode"] == 200
    assert again["json"] == {"status": "duplicate", "eventId": ITEM["eventId"]}
    assert calls == Counter({"PutItem": 1})
    assert sqs_calls == Counter({"SendMessage": 1})
    messages = stack.receive_all()
    assert len(messages) == 1
    assert messages[0]["Body"] == dumps(ITEM)
    assert stack.event_count() == 1
    assert stack.event_record(ITEM["eventId"]) == record  # the duplicate changed nothing


def test_duplicate_of_an_event_the_processor_started_costs_one_dynamodb_call(invoke: Any, stack: Stack) -> None:
    event = delivery(ITEM)
    assert invoke(event)["statusCode"] == 202
    processor_starts(stack, ITEM)
    record = stack.event_record(ITEM["eventId"])
    assert record is not None and record["status"]["S"] == "PROCESSING"
    calls = count_calls(aws.dynamodb())
    sqs_calls = count_calls(aws.sqs())
    again = invoke(event)
    assert again["statusCode"] == 200
    assert again["json"] == {"status": "duplicate", "eventId": ITEM["eventId"]}
    assert calls == Counter({"PutItem": 1})
    assert sqs_calls == Counter()
    assert len(stack.receive_all()) == 1
    assert stack.event_count() == 1
    assert stack.event_record(ITEM["eventId"]) == record


def test_late_redelivery_is_never_claimed_again(invoke: Any, stack: Stack, clock: Clock) -> None:
    """No lease: however late (by the EventStore clock), a RECEIVED event is resent, never taken over.

    SendMessage is counted, not just the queue: one resend per redelivery, each dropped by the FIFO dedupe
    (moto's 5-minute window runs on real time, so all of them fall inside it)."""
    events = {later: {**ITEM, "eventId": f"late-{later}"} for later in (21, 61, 3600)}
    for payload in events.values():
        assert invoke(delivery(payload))["statusCode"] == 202
    records = {later: stack.event_record(payload["eventId"]) for later, payload in events.items()}
    sends = count_calls(aws.sqs())
    start = clock.now
    for later, payload in events.items():
        clock.now = start + later
        again = invoke(delivery(payload))
        assert again["json"] == {"status": "duplicate", "eventId": payload["eventId"]}, later
        assert again["statusCode"] == 200
        assert stack.event_record(payload["eventId"]) == records[later], later  # same attempt token
    assert sends["SendMessage"] == 3
    assert len(stack.receive_all()) == 3


def test_duplicate_of_an_event_the_processor_moved_on(invoke: Any, stack: Stack, clock: Clock) -> None:
    sends = count_calls(aws.sqs())
    for status in ("PROCESSING", "PROCESSED", "FAILED"):
        payload = {**ITEM, "eventId": f"moved-{status}"}
        assert invoke(delivery(payload))["statusCode"] == 202
        set_status(stack, payload["eventId"], status)
        calls = count_calls(aws.dynamodb())
        clock.now += 3600
        assert invoke(delivery(payload))["json"] == {"status": "duplicate", "eventId": payload["eventId"]}, status
        assert calls == Counter({"PutItem": 1}), status
    assert sends["SendMessage"] == 3
    assert len(stack.receive_all()) == 3


def test_keyless_event_dedupes_within_the_window_and_is_new_after_it(
    invoke: Any, stack: Stack, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYLESS_DEDUPE_SECONDS", "600")
    sends = count_calls(aws.sqs())
    first = invoke(delivery(KEYLESS))
    assert first["statusCode"] == 202
    key = first["json"]["eventId"]
    assert key.startswith("sha256-")
    clock.now += 60
    pretty = json.dumps(dict(reversed(list(KEYLESS.items()))), indent=2)  # Pluggy's retry, other key order
    again = invoke(delivery(pretty))
    assert again["json"] == {"status": "duplicate", "eventId": key}
    assert sends["SendMessage"] == 2  # still RECEIVED: resent ...
    assert len(stack.receive_all()) == 1  # ... and dropped by the FIFO dedupe
    set_status(stack, key, "PROCESSED")
    clock.now += 539  # 599 s after the first, processed meanwhile: a duplicate, nothing sent
    assert invoke(delivery(KEYLESS))["json"] == {"status": "duplicate", "eventId": key}
    assert sends["SendMessage"] == 2
    clock.now += 2  # 601 s after the first: the connector changed status again
    third = invoke(delivery(KEYLESS))
    assert (third["statusCode"], third["json"]["eventId"]) == (202, key)
    assert sends["SendMessage"] == 3
    record = stack.event_record(key)
    assert record is not None and record["status"]["S"] == "RECEIVED"  # claimed anew
    # (Only the EventStore clock moved: moto's FIFO queue, still inside its real 5-minute dedupe window,
    # drops this send; SQS would keep it 601 s later.)
    assert stack.event_count() == 1


# ================================================================================ SQS failures


@pytest.mark.parametrize(
    "error",
    [
        client_error("ServiceUnavailable", "SendMessage"),
        client_error("KMS.ThrottlingException", "SendMessage"),
        EndpointConnectionError(endpoint_url="https://sqs.us-east-1.amazonaws.com"),
    ],
    ids=["5xx", "throttled", "network"],
)
def test_sqs_failure_is_503_without_a_record_and_the_retry_is_queued_once(
    invoke: Any, stack: Stack, flaky_sqs: Flaky, error: Exception
) -> None:
    flaky_sqs.errors["send_message"] = error
    calls = count_calls(aws.dynamodb())
    first = invoke(delivery(ITEM))
    assert first["statusCode"] == 503
    assert first["json"] == {"error": "unavailable"}
    assert first["headers"]["Retry-After"] == "60"
    assert calls == Counter({"PutItem": 1, "DeleteItem": 1})  # claim, send, release: 3 calls
    assert flaky_sqs.calls["send_message"] == 1
    assert stack.event_record(ITEM["eventId"]) is None  # the claim was deleted
    assert stack.event_count() == 0
    assert stack.receive_all() == []
    del flaky_sqs.errors["send_message"]
    retry = invoke(delivery(ITEM))
    assert retry["statusCode"] == 202
    assert retry["json"] == {"status": "accepted", "eventId": ITEM["eventId"]}
    messages = stack.receive_all()
    assert len(messages) == 1
    assert messages[0]["Body"] == dumps(ITEM)
    assert flaky_sqs.calls["send_message"] == 2
    processor_starts(stack, ITEM)
    again = invoke(delivery(ITEM))  # and once the processor has it, a third delivery is a plain duplicate
    assert again["statusCode"] == 200
    assert flaky_sqs.calls["send_message"] == 2
    assert stack.receive_all() == []


def test_sqs_and_release_both_fail_then_the_retry_is_resent_and_queued_once(
    invoke: Any, stack: Stack, flaky_sqs: Flaky, flaky_dynamodb: Flaky
) -> None:
    flaky_sqs.errors["send_message"] = client_error("InternalError", "SendMessage")
    flaky_dynamodb.errors["delete_item"] = EndpointConnectionError(endpoint_url="https://dynamodb")
    first = invoke(delivery(ITEM))
    assert first["statusCode"] == 503
    assert first["json"] == {"error": "unavailable"}
    assert flaky_dynamodb.calls["delete_item"] == 1
    record = stack.event_record(ITEM["eventId"])
    assert record is not None and record["status"]["S"] == "RECEIVED"  # left behind
    assert stack.receive_all() == []
    del flaky_sqs.errors["send_message"]
    retry = invoke(delivery(ITEM))  # at once: no lease to wait out
    assert retry["statusCode"] == 200
    assert retry["json"] == {"status": "duplicate", "eventId": ITEM["eventId"]}
    assert flaky_sqs.calls["send_message"] == 2  # the failed one and the resend
    assert flaky_dynamodb.calls == Counter({"put_item": 2, "delete_item": 1})  # no release of a PENDING claim
    # The first send never landed: the resend is the one and only message.
    messages = stack.receive_all()
    assert len(messages) == 1
    assert messages[0]["Body"] == dumps(ITEM)
    assert invoke(delivery(ITEM))["statusCode"] == 200  # resent again, dropped by the FIFO dedupe
    assert flaky_sqs.calls["send_message"] == 3
    assert stack.receive_all() == []
    assert stack.event_record(ITEM["eventId"]) == record  # the receiver never rewrote the claim
    assert stack.event_count() == 1


def test_failed_resend_is_503_and_deletes_nothing(
    invoke: Any, stack: Stack, flaky_sqs: Flaky, flaky_dynamodb: Flaky
) -> None:
    """A PENDING claim is not this attempt's: a failed resend answers 503 and leaves it for the next retry."""
    flaky_sqs.errors["send_message"] = client_error("ServiceUnavailable", "SendMessage")
    flaky_dynamodb.errors["delete_item"] = client_error("InternalServerError", "DeleteItem")
    assert invoke(delivery(ITEM))["statusCode"] == 503
    record = stack.event_record(ITEM["eventId"])
    assert record is not None and record["status"]["S"] == "RECEIVED"
    del flaky_dynamodb.errors["delete_item"]  # a release would succeed now: it must not be tried
    resend = invoke(delivery(ITEM))
    assert resend["statusCode"] == 503
    assert resend["json"] == {"error": "unavailable"}
    assert resend["headers"]["Retry-After"] == "60"
    assert flaky_sqs.calls["send_message"] == 2
    assert flaky_dynamodb.calls["delete_item"] == 1  # only the first (NEW) attempt released
    assert stack.event_record(ITEM["eventId"]) == record
    assert stack.receive_all() == []
    del flaky_sqs.errors["send_message"]
    assert invoke(delivery(ITEM))["json"] == {"status": "duplicate", "eventId": ITEM["eventId"]}
    assert len(stack.receive_all()) == 1


def test_the_receiver_never_updates_the_record_it_claimed(invoke: Any, stack: Stack, flaky_dynamodb: Flaky) -> None:
    """No mark_queued any more: UpdateItem (failing here) is the processor's, never the receiver's."""
    flaky_dynamodb.errors["update_item"] = client_error("ProvisionedThroughputExceededException", "UpdateItem")
    assert invoke(delivery(ITEM))["statusCode"] == 202
    assert invoke(delivery(ITEM))["statusCode"] == 200
    assert flaky_dynamodb.calls["update_item"] == 0
    assert len(stack.receive_all()) == 1


# ================================================================================ DynamoDB failures


def test_dynamodb_failure_on_the_claim_is_503_and_nothing_queued(
    invoke: Any, stack: Stack, flaky_dynamodb: Flaky, flaky_sqs: Flaky
) -> None:
    for code in ("ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"):
        flaky_dynamodb.errors["put_item"] = client_error(code, "PutItem")
        response = invoke(delivery(ITEM))
        assert response["statusCode"] == 503, code
        assert response["json"] == {"error": "unavailable"}
        assert response["headers"]["Retry-After"] == "60"
    flaky_dynamodb.errors["put_item"] = EndpointConnectionError(endpoint_url="https://dynamodb")
    assert invoke(delivery(ITEM))["statusCode"] == 503
    assert flaky_dynamodb.calls["put_item"] == 4
    assert flaky_sqs.calls["send_message"] == 0
    assert stack.receive_all() == []
    assert stack.event_count() == 0
    del flaky_dynamodb.errors["put_item"]
    assert invoke(delivery(ITEM))["statusCode"] == 202
    assert len(stack.receive_all()) == 1


# ================================================================================ concurrency


@pytest.fixture
def atomic_moto_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB applies a conditional write atomically; moto checks then writes without a lock, so two
    threads can both pass the check (two NEW claims, two 202s). SQS applies the FIFO deduplication
    atomically; moto scans its messages for the deduplication id outside its lock, so two concurrent sends
    could both be kept. Serialize both in moto to model the real services, nothing more."""
    lock = threading.Lock()

    def serialized(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return __original(self, *args, **kwargs)

        monkeypatch.setattr(owner, name, locked)

    for name in ("put_item", "update_item", "delete_item"):
        serialized(DynamoDBBackend, name)
    serialized(SqsQueue, "add_message")


@pytest.mark.usefixtures("atomic_moto_writes")
@pytest.mark.parametrize("send_delay", [0.0, 0.05])
def test_concurrent_duplicates_queue_exactly_once(
    invoke: Any, stack: Stack, flaky_sqs: Flaky, send_delay: float
) -> None:
    flaky_sqs.delays["send_message"] = send_delay  # 0.05: the others arrive while the winner is enqueueing
    event = delivery(ITEM)
    barrier = threading.Barrier(8)
    responses: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            responses.append(invoke(event))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(responses) == 8
    statuses = Counter(r["statusCode"] for r in responses)
    assert statuses == Counter({202: 1, 200: 7}), statuses  # never a 5XX
    for response in responses:
        assert response["json"]["eventId"] == ITEM["eventId"]
        if response["statusCode"] == 200:
            assert response["json"] == {"status": "duplicate", "eventId": ITEM["eventId"]}
        else:
            assert response["json"] == {"status": "accepted", "eventId": ITEM["eventId"]}
    # Every loser found the claim RECEIVED and sent again; the FIFO deduplication id kept one copy.
    assert flaky_sqs.calls["send_message"] == 8
    messages = stack.receive_all()
    assert len(messages) == 1
    assert messages[0]["Body"] == dumps(ITEM)
    assert stack.event_count() == 1
    # Once the processor has the event, Pluggy's retries are plain duplicates: nothing sent.
    processor_starts(stack, ITEM)
    assert invoke(event)["statusCode"] == 200
    assert flaky_sqs.calls["send_message"] == 8
    assert stack.receive_all() == []


# ================================================================================ message groups


def _receive_with_groups(stack: Stack) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while batch := stack.sqs.receive_message(
        QueueUrl=stack.queue_url,
        MaxNumberOfMessages=10,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
        WaitTimeSeconds=0,
    ).get("Messages", []):
        messages.extend(batch)
    return messages


def test_message_group_per_event_kind(invoke: Any, stack: Stack) -> None:
    assert stack.queue_url.endswith(".fifo")
    item, payment, scheduled = (
        VALID_PAYLOADS["item-updated"],
        VALID_PAYLOADS["payment-intent-created"],
        VALID_PAYLOADS["scheduled-payment-created"],
    )
    request = {"event": "payment_request/updated", "eventId": "pr-evt-1", "paymentRequestId": "pr-1"}
    unknown = VALID_PAYLOADS["unknown-event"]
    expected = {
        item["eventId"]: f"item:{item['itemId']}",
        "connector": f"connector:{KEYLESS['connectorId']}",
        payment["eventId"]: f"payment:{payment['paymentIntentId']}",
        scheduled["eventId"]: f"payment:{scheduled['scheduledPaymentId']}",
        request["eventId"]: "payment:pr-1",
        unknown["eventId"]: f"event:{unknown['eventId']}",
    }
    ids = {}
    for payload in (item, KEYLESS, payment, scheduled, request, unknown):
        response = invoke(delivery(payload))
        assert response["statusCode"] == 202, payload
        ids[response["json"]["eventId"]] = payload
    keyless_id = next(i for i in ids if i.startswith("sha256-"))
    expected[keyless_id] = expected.pop("connector")
    groups = {}
    for message in _receive_with_groups(stack):
        event_id = message["MessageAttributes"]["eventId"]["StringValue"]
        group = message["Attributes"]["MessageGroupId"]
        assert message["MessageAttributes"]["groupId"]["StringValue"] == group
        assert message["Attributes"]["MessageDeduplicationId"] == event_id
        groups[event_id] = group
    assert groups == expected


# ================================================================================ configuration


def _refusals(stack: Stack, invoke: Any) -> None:
    for event in (delivery(ITEM), delivery(ITEM, secret="forged"), delivery(KEYLESS), delivery("not json")):
        response = invoke(event)
        assert response["statusCode"] == 503, response
        assert response["json"] == {"error": "not_configured"}
    assert stack.event_count() == 0
    assert stack.receive_all() == []


def test_no_secret_configured_fails_closed(invoke: Any, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEBHOOK_SECRET_ARN", "WEBHOOK_SECRET", "WEBHOOK_SIGNING_KEY", "INSECURE_LOCAL_DEV_NO_AUTH"):
        monkeypatch.delenv(name, raising=False)
    _refusals(stack, invoke)


def test_empty_secret_in_secrets_manager_fails_closed(invoke: Any, stack: Stack, receiver_env: dict[str, str]) -> None:
    stack.secretsmanager.put_secret_value(SecretId=receiver_env["WEBHOOK_SECRET_ARN"], SecretString="{}")
    _refusals(stack, invoke)


def test_require_signature_without_a_signing_key_fails_closed(
    invoke: Any, stack: Stack, receiver_env: dict[str, str]
) -> None:
    assert receiver_env["REQUIRE_SIGNATURE"] == "true"
    value = json.dumps({"current": LOCAL_WEBHOOK_SECRET})
    stack.secretsmanager.put_secret_value(SecretId=receiver_env["WEBHOOK_SECRET_ARN"], SecretString=value)
    _refusals(stack, invoke)


def test_insecure_local_dev_without_a_secret_accepts_and_warns(
    invoke: Any, stack: Stack, monkeypatch: pytest.MonkeyPatch, logs: io.StringIO
) -> None:
    for name in ("WEBHOOK_SECRET_ARN", "WEBHOOK_SECRET", "WEBHOOK_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUIRE_SIGNATURE", "false")
    monkeypatch.setenv("INSECURE_LOCAL_DEV_NO_AUTH", "true")
    response = invoke(delivery(ITEM, secret=None, key=None))
    assert response["statusCode"] == 202
    assert len(stack.receive_all()) == 1
    warnings = [line for line in log_lines(logs) if "INSECURE_LOCAL_DEV_NO_AUTH" in line["message"]]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "WARNING"


def test_bad_environment_is_503(invoke: Any, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "lots")
    _refusals(stack, invoke)


# ================================================================================ rotation


def test_rotation_is_picked_up_and_a_forged_flood_costs_one_read_per_30_seconds(
    invoke: Any, stack: Stack, receiver_env: dict[str, str], secrets_clock: list[float]
) -> None:
    now = secrets_clock
    reads = count_calls(aws.secretsmanager())
    assert invoke(delivery(ITEM))["statusCode"] == 202
    assert reads["GetSecretValue"] == 1
    for n in range(25):
        forged = invoke(delivery({**ITEM, "eventId": f"forged-{n}"}, secret=f"guess-{n}"))
        assert forged["statusCode"] == 401
    assert reads["GetSecretValue"] == 1

    new_secret, new_key = "rotated-webhook-secret", "rotated-signing-key"
    rotated = {
        "current": new_secret,
        "previous": LOCAL_WEBHOOK_SECRET,
        "signingKey": new_key,
        "previousSigningKey": LOCAL_SIGNING_KEY,
    }
    arn = receiver_env["WEBHOOK_SECRET_ARN"]
    stack.secretsmanager.put_secret_value(SecretId=arn, SecretString=json.dumps(rotated))
    now[0] += 10
    early = invoke(delivery({**ITEM, "eventId": "r-1"}, secret=new_secret, key=new_key))
    assert early["statusCode"] == 401  # within 30 s of the last read: not re-read yet
    assert reads["GetSecretValue"] == 1
    now[0] += 21
    assert invoke(delivery({**ITEM, "eventId": "r-1"}, secret=new_secret, key=new_key))["statusCode"] == 202
    assert reads["GetSecretValue"] == 2
    # both generations accepted during the rotation, with no further reads
    assert invoke(delivery({**ITEM, "eventId": "r-2"}))["statusCode"] == 202
    assert invoke(delivery({**ITEM, "eventId": "r-3"}, secret=new_secret))["statusCode"] == 202
    assert invoke(delivery({**ITEM, "eventId": "r-4"}, key=new_key))["statusCode"] == 202
    for n in range(25):
        now[0] += 1  # 25 s of forged deliveries
        assert invoke(delivery({**ITEM, "eventId": f"f2-{n}"}, secret="guess"))["statusCode"] == 401
    assert reads["GetSecretValue"] == 2
    assert len(stack.receive_all()) == 5
    assert stack.event_count() == 5


# ================================================================================ answers


def test_body_exactly_at_max_body_bytes_is_accepted(invoke: Any, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "1024")
    base = dumps({**ITEM, "pad": ""})
    at_limit = dumps({**ITEM, "pad": "x" * (1024 - len(base))})
    assert len(at_limit.encode()) == 1024
    assert invoke(delivery(at_limit))["statusCode"] == 202
    over = dumps({**ITEM, "pad": "x" * (1024 - len(base) + 1)})
    assert len(over.encode()) == 1025
    response = invoke(delivery(over))
    assert response["statusCode"] == 413
    assert response["json"]["error"] == "body_too_large"
    assert len(stack.receive_all()) == 1
    assert stack.event_count() == 1


def test_405_says_allow_post_and_404_for_other_paths(invoke: Any, stack: Stack) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = invoke(delivery(ITEM, method=method))
        assert response["statusCode"] == 405
        assert response["headers"]["Allow"] == "POST"
    for path in ("/webhooks/pluggy/a/b", "/webhooks", "/webhooks/pluggyx", "/other"):
        response = invoke(delivery(ITEM, path=path))
        assert response["statusCode"] == 404, path
    # One segment after the webhook path is the URL-token route: a wrong token is 401, never queued.
    response = invoke(delivery(ITEM, path="/webhooks/pluggy/extra"))
    assert (response["statusCode"], response["json"]["error"]) == (401, "bad_url_token")
    assert stack.event_count() == 0


def test_base64_encoded_body(invoke: Any, stack: Stack) -> None:
    event = delivery(ITEM)
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    assert invoke(event)["statusCode"] == 202
    assert stack.receive_all()[0]["Body"] == dumps(ITEM)
    bad = delivery({**ITEM, "eventId": "b64"})
    bad["body"], bad["isBase64Encoded"] = "%%% not base64 %%%", True
    response = invoke(bad)
    assert (response["statusCode"], response["json"]["error"]) == (400, "malformed_body")


MALFORMED = [
    '{"event":"item/updated","eventId":"e-1","a":1,"a":2}',
    '{"event":"item/updated","eventId":"e-1","n":NaN}',
    "[" * 100_000,
    '{"event":"item/updated","eventId":"e-1","x":"\uffff"}',
    '{"event":"item/updated","eventId":"\\uffff"}',  # was 503 (SQS refuses the attribute) forever
    '{"event":"item/updated","eventId":"\\ud800"}',  # was 503 (not encodable for DynamoDB) forever
    '{"event":"item/updated","eventId":"e-1","clientId":42}',  # was accepted, skipping the clientId check
    '{"event":"","eventId":"e-1"}',
]


def test_malformed_bodies_are_400_and_leave_no_trace(invoke: Any, stack: Stack) -> None:
    for body in MALFORMED:
        response = invoke(delivery(body))
        assert response["statusCode"] == 400, (body[:60], response)
        assert response["json"]["error"] == "malformed_body"
        assert response["json"]["message"]
    assert stack.event_count() == 0
    assert stack.receive_all() == []


def test_keyless_body_with_an_escaped_lone_surrogate_is_accepted(invoke: Any, stack: Stack) -> None:
    body = dumps(KEYLESS).replace('"UNSTABLE"', '"\\ud800"')  # escaped in JSON: the bytes are ASCII
    response = invoke(delivery(body))  # was an unhandled UnicodeEncodeError (API Gateway 502)
    assert response["statusCode"] == 202
    assert response["json"]["eventId"].startswith("sha256-")
    assert stack.receive_all()[0]["Body"] == body


def test_ipv6_allowlist(invoke: Any, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_SOURCE_CIDRS", "177.71.238.212, 2001:db8::/32")
    assert invoke(delivery(ITEM, source_ip="2001:db8::7"))["statusCode"] == 202
    other = delivery({**ITEM, "eventId": "v6"}, source_ip="2001:db9::7")
    other["headers"]["X-Forwarded-For"] = "2001:db8::7"
    other["multiValueHeaders"]["X-Forwarded-For"] = ["2001:db8::7"]
    assert invoke(other)["statusCode"] == 403
    assert len(stack.receive_all()) == 1


def test_client_id_absent_is_accepted_when_one_is_configured(invoke: Any, receiver_env: dict[str, str]) -> None:
    assert receiver_env["PLUGGY_CLIENT_ID"] == LOCAL_PLUGGY_CLIENT_ID
    payload = {k: v for k, v in ITEM.items() if k != "clientId"}
    assert invoke(delivery(payload))["statusCode"] == 202


# ================================================================================ logs and metrics


@pytest.fixture
def observed(invoke: Any, logs: io.StringIO, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Invoke and return (response, log lines, EMF blobs, everything printed) for that one delivery."""

    def _observed(event: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], str]:
        logs.seek(0)
        logs.truncate()
        capsys.readouterr()
        response = invoke(event)
        captured = capsys.readouterr()
        printed = logs.getvalue() + captured.out + captured.err
        return response, log_lines(logs), emf_blobs(captured.out), printed

    yield _observed


CANARY = "PAYLOAD-CANARY-7f3a9c"


CASES = [
    (lambda: delivery({**ITEM, "note": CANARY}), 202, "accepted", {"WebhookAccepted"}),
    (
        lambda: delivery({**ITEM, "note": CANARY}, secret="forged-secret-canary"),
        401,
        "rejected",
        {"WebhookRejected", "WebhookRejected_bad_secret"},
    ),
    (
        lambda: delivery({**ITEM, "note": CANARY}, key="forged-key"),
        401,
        "rejected",
        {"WebhookRejected", "WebhookRejected_bad_signature"},
    ),
    (
        lambda: delivery({**ITEM, "note": CANARY, "clientId": "someone-else"}),
        403,
        "rejected",
        {"WebhookRejected", "WebhookRejected_client_id_mismatch"},
    ),
    (
        lambda: delivery('{"note":"' + CANARY + '","event":'),
        400,
        "rejected",
        {"WebhookRejected", "WebhookRejected_malformed_body"},
    ),
]


@pytest.fixture
def debug_logs() -> Iterator[None]:
    """Accepted and duplicate deliveries log at DEBUG (they are in EventsTable and the metrics already)."""
    from pluggy_pipeline.observability import logger

    level = logger.log_level
    logger.setLevel("DEBUG")
    yield
    logger.setLevel(level)


def test_one_log_line_and_metrics_per_delivery_and_no_secrets_printed(observed: Any, debug_logs: None) -> None:
    for make, status, result, metrics in CASES:
        _check_observed(observed, make(), status, result, metrics)


def test_at_info_only_rejections_and_errors_are_logged(observed: Any) -> None:
    response, lines, blobs, _ = observed(delivery(ITEM))
    assert response["statusCode"] == 202
    assert [line for line in lines if line["message"].startswith("delivery ")] == []
    assert metric_names(blobs[0]) == {"WebhookAccepted"}  # still counted
    response, lines, _, _ = observed(delivery(ITEM, secret="forged-secret-canary"))
    assert response["statusCode"] == 401
    assert [line["reason"] for line in lines if line["message"] == "delivery rejected"] == ["bad_secret"]


def _check_observed(observed: Any, event: dict[str, Any], status: int, result: str, metrics: set[str]) -> None:
    response, lines, blobs, printed = observed(event)
    assert response["statusCode"] == status
    deliveries = [line for line in lines if line["message"].startswith("delivery ")]
    assert len(deliveries) == 1, lines
    line = deliveries[0]
    assert (line["result"], line["status"], line["service"]) == (result, status, SERVICE)
    if status == 202:
        assert (line["eventId"], line["event"]) == (ITEM["eventId"], ITEM["event"])
    else:
        assert "eventId" not in line
    assert len(blobs) == 1
    assert metric_names(blobs[0]) == metrics
    assert blobs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "PluggyPipeline"
    assert all(blobs[0][name] == [1.0] or blobs[0][name] == 1.0 for name in metrics)
    for secret in (LOCAL_WEBHOOK_SECRET, LOCAL_SIGNING_KEY, "forged-secret-canary", "forged-key", CANARY):
        assert secret not in printed
    assert event["body"] not in printed
    assert event["headers"]["X-Pluggy-Signature"] not in printed


def test_duplicate_is_logged_with_its_event_id_and_counted(observed: Any, stack: Stack, debug_logs: None) -> None:
    observed(delivery(ITEM))
    # Queued, not picked up yet: resent, and the reason says so.
    response, lines, blobs, _ = observed(delivery(ITEM))
    assert response["statusCode"] == 200
    [line] = [line for line in lines if line["message"].startswith("delivery ")]
    assert (line["result"], line["eventId"], line["event"]) == ("duplicate", ITEM["eventId"], ITEM["event"])
    assert (line["reason"], line["level"]) == ("resent", "DEBUG")
    assert line["correlation_id"] == ITEM["eventId"]
    assert metric_names(blobs[0]) == {"WebhookDuplicate", "WebhookDuplicate_resent"}
    # The processor has it: a plain duplicate.
    processor_starts(stack, ITEM)
    response, lines, blobs, _ = observed(delivery(ITEM))
    assert response["statusCode"] == 200
    [line] = [line for line in lines if line["message"].startswith("delivery ")]
    assert (line["result"], line["eventId"], line["reason"]) == ("duplicate", ITEM["eventId"], "")
    assert metric_names(blobs[0]) == {"WebhookDuplicate"}


def test_log_keys_do_not_leak_into_the_next_invocation(observed: Any) -> None:
    observed(delivery(ITEM))
    _, lines, _, _ = observed(delivery(ITEM, secret="nope"))
    [line] = [line for line in lines if line["message"].startswith("delivery ")]
    assert "eventId" not in line
    assert line.get("correlation_id") is None


def test_transient_failure_is_logged_and_counted(observed: Any, flaky_sqs: Flaky) -> None:
    flaky_sqs.errors["send_message"] = client_error("ServiceUnavailable", "SendMessage")
    response, lines, blobs, printed = observed(delivery(ITEM))
    assert response["statusCode"] == 503
    [line] = [line for line in lines if line["message"].startswith("delivery ")]
    assert (line["result"], line["reason"], line["level"]) == ("error", "transient", "WARNING")
    assert metric_names(blobs[0]) == {"WebhookFailed", "WebhookFailed_transient"}
    assert LOCAL_WEBHOOK_SECRET not in printed


def test_no_corpus_delivery_prints_a_secret_or_its_payload(
    observed: Any, monkeypatch: pytest.MonkeyPatch, debug_logs: None
) -> None:
    monkeypatch.setenv("ALLOWED_SOURCE_CIDRS", PLUGGY_SOURCE_IP)
    for scenario in scenarios():
        event = proxy_event(scenario)
        response, lines, blobs, printed = observed(event)
        assert response["statusCode"] == scenario.expected_status, scenario.name
        assert len([line for line in lines if line["message"].startswith("delivery ")]) == 1, scenario.name
        assert len(blobs) == 1, scenario.name
        assert LOCAL_WEBHOOK_SECRET not in printed, scenario.name
        assert LOCAL_SIGNING_KEY not in printed, scenario.name
        if event["body"]:
            assert event["body"] not in printed, scenario.name


# ================================================================ trust model: webhooks are signals, not facts


def _canonical_hash(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "event", ["pipeline/reconcile", "pipeline/sync_item", "pipeline/anything", "Pipeline/reconcile"]
)
def test_reserved_event_names_are_refused_with_400_and_change_nothing(event: str, invoke: Any, stack: Stack) -> None:
    response = invoke(delivery({"event": event, "eventId": "r-1", "itemId": "i-1", "full": True}))
    assert (response["statusCode"], response["json"]["error"]) == (400, "malformed_body")
    assert "reserved" in response["json"]["message"]
    assert stack.event_count() == 0 and stack.receive_all() == []


def test_an_outside_event_id_cannot_take_a_keyless_or_internal_id(invoke: Any, stack: Stack) -> None:
    """Keyed and keyless ids live apart: a delivery naming itself sha256-<hash> cannot pre-claim a keyless one."""
    keyless_id = "sha256-" + _canonical_hash(KEYLESS)
    squatter = {**ITEM, "eventId": keyless_id}
    first = invoke(delivery(squatter))
    assert first["statusCode"] == 202 and first["json"]["eventId"] == "ext:" + keyless_id
    genuine = invoke(delivery(KEYLESS))
    assert genuine["statusCode"] == 202  # not "duplicate": the keyless delivery is queued and processed
    assert genuine["json"]["eventId"] == keyless_id
    for internal in ("reconcile-2026-11-29T10:00:00Z", "sync-item-1-2026112910", "sqs-m-1", "ext:x"):
        answer = invoke(delivery({**ITEM, "eventId": internal}))
        assert answer["json"]["eventId"] == "ext:" + internal
        assert stack.event_record(internal) is None
    assert len(stack.receive_all()) == 6


def test_a_second_body_under_a_known_event_id_is_a_counted_conflict_never_queued(
    invoke: Any, stack: Stack, logs: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    assert invoke(delivery(ITEM))["statusCode"] == 202
    forged = {**ITEM, "itemId": "another-item", "triggeredBy": "CLIENT"}
    response = invoke(delivery(forged))
    assert response["statusCode"] == 200
    assert response["json"] == {"status": "conflict", "eventId": ITEM["eventId"]}
    [message] = stack.receive_all()
    assert json.loads(message["Body"]) == ITEM  # only the first body is the event
    record = stack.event_record(ITEM["eventId"])
    assert record is not None and json.loads(record["payload"]["S"]) == ITEM
    assert record["bodyHash"]["S"] == _canonical_hash(ITEM)
    warnings = [line for line in log_lines(logs) if "different body" in line["message"]]
    assert warnings and warnings[0]["level"] == "WARNING"
    assert any("WebhookConflict" in metric_names(b) for b in emf_blobs(capsys.readouterr().out))
    # The same body again (a retry with other whitespace) is still a plain duplicate.
    again = invoke(delivery(json.dumps(ITEM, indent=2)))
    assert (again["statusCode"], again["json"]["status"]) == (200, "duplicate")


def test_url_token_route_accepts_the_derived_token_without_any_header(invoke: Any, stack: Stack) -> None:
    token = derive_url_token(LOCAL_WEBHOOK_SECRET)
    path = f"/webhooks/pluggy/{token}"
    accepted = invoke(delivery(ITEM, secret=None, path=path))
    assert accepted["statusCode"] == 202
    for bad in ("x" * 43, token[:-1], LOCAL_WEBHOOK_SECRET, token.upper()):
        refused = invoke(delivery({**ITEM, "eventId": "e-bad"}, secret=None, path=f"/webhooks/pluggy/{bad}"))
        assert (refused["statusCode"], refused["json"]["error"]) == (401, "bad_url_token")
        assert token not in json.dumps(refused["json"])
    no_header = invoke(delivery({**ITEM, "eventId": "e-2"}, secret=None))
    assert (no_header["statusCode"], no_header["json"]["error"]) == (401, "bad_secret")
    assert len(stack.receive_all()) == 1
    assert stack.event_record("e-bad") is None


def test_url_token_is_never_logged(
    invoke: Any, stack: Stack, logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    token = derive_url_token(LOCAL_WEBHOOK_SECRET)
    invoke(delivery(ITEM, secret=None, path=f"/webhooks/pluggy/{token}"))
    invoke(delivery({**ITEM, "eventId": "e-3"}, secret=None, path=f"/webhooks/pluggy/{token}x"))
    text = logs.getvalue()
    assert text  # something was logged
    assert token not in text


def test_url_token_rotation_accepts_current_and_previous_then_drops_the_removed_one(
    invoke: Any, stack: Stack, receiver_env: dict[str, str], secrets_clock: list[float]
) -> None:
    now = secrets_clock
    old = derive_url_token(LOCAL_WEBHOOK_SECRET)
    assert invoke(delivery(ITEM, secret=None, path=f"/webhooks/pluggy/{old}"))["statusCode"] == 202
    arn = receiver_env["WEBHOOK_SECRET_ARN"]
    rotated = {"current": "new-secret", "previous": LOCAL_WEBHOOK_SECRET, "signingKey": LOCAL_SIGNING_KEY}
    stack.secretsmanager.put_secret_value(SecretId=arn, SecretString=json.dumps(rotated))
    now[0] += 31  # past the refresh interval: a failing check re-reads the secret
    new = derive_url_token("new-secret")
    assert (
        invoke(delivery({**ITEM, "eventId": "n-1"}, secret=None, path=f"/webhooks/pluggy/{new}"))["statusCode"] == 202
    )
    assert (
        invoke(delivery({**ITEM, "eventId": "o-1"}, secret=None, path=f"/webhooks/pluggy/{old}"))["statusCode"] == 202
    )
    done = {"current": "new-secret", "signingKey": LOCAL_SIGNING_KEY}
    stack.secretsmanager.put_secret_value(SecretId=arn, SecretString=json.dumps(done))
    now[0] += 60  # the cache's bound: the removed secret (and its URL token) stop working
    late = invoke(delivery({**ITEM, "eventId": "o-2"}, secret=None, path=f"/webhooks/pluggy/{old}"))
    assert late["statusCode"] == 401
    assert invoke(delivery({**ITEM, "eventId": "o-3"}, secret=LOCAL_WEBHOOK_SECRET))["statusCode"] == 401


def test_a_body_at_the_size_limit_is_accepted_and_queued_as_a_pointer(invoke: Any, stack: Stack) -> None:
    limit = int(os.environ["MAX_BODY_BYTES"])
    body = dumps({**ITEM, "pad": ""})
    body = dumps({**ITEM, "pad": "x" * (limit - len(body))})
    assert len(body.encode()) == limit
    assert invoke(delivery(body))["statusCode"] == 202
    [message] = stack.receive_all()
    assert message["MessageAttributes"]["payload"]["StringValue"] == "eventsTable"
    assert len(message["Body"]) < 1000
    log = ProcessingLog(lambda: stack.dynamodb, stack.events_table)
    assert log.stored_payload(ITEM["eventId"]) == body
    # The processor's start must not write the body again (DynamoDB's 400 KB item limit counts old + new).
    assert log.start(ITEM["eventId"], "item/updated", message["Body"], copy_payload=False) is StartOutcome.STARTED
    assert log.stored_payload(ITEM["eventId"]) == body
    too_big = dumps({**ITEM, "eventId": "big-2", "pad": "x" * limit})
    assert invoke(delivery(too_big))["statusCode"] == 413


def test_the_processing_lease_keeps_one_event_id_from_running_twice_at_once(stack: Stack) -> None:
    now = [1000.0]
    log = ProcessingLog(lambda: stack.dynamodb, stack.events_table, lease_seconds=120, clock=lambda: now[0])
    assert log.start("e-1", "item/updated", "{}") is StartOutcome.STARTED
    now[0] += 60
    assert log.start("e-1", "item/updated", "{}") is StartOutcome.IN_PROGRESS  # the first holder is still on it
    now[0] += 61
    assert log.start("e-1", "item/updated", "{}") is StartOutcome.STARTED  # the holder died: its lease lapsed
    log.fail("e-1", "TransientError: x", permanent=False)
    assert log.start("e-1", "item/updated", "{}") is StartOutcome.STARTED  # a failed attempt holds nothing
    log.finish("e-1", {})
    assert log.start("e-1", "item/updated", "{}") is StartOutcome.ALREADY_PROCESSED
    record = stack.event_record("e-1")
    assert record is not None and "leaseUntilMs" not in record and record["attempts"]["N"] == "3"
