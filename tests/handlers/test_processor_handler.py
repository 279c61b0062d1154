"""ProcessorFunction's lambda_handler against moto (built from template.yaml) and the Pluggy emulator.

Webhooks are taken from what the emulator emitted (`emulator.events()`) and handed to the handler as SQS FIFO
records, so every test runs the real chain: SQS record -> Processor -> Pluggy API over HTTP -> RecordsTable.
The mirror is compared with `emulator.truth()` field by field.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from types import ModuleType
from typing import Any

import boto3
import pytest
from pluggy_emulator import PluggyEmulator
from pluggy_pipeline import aws
from pluggy_pipeline import processor as processor_module
from pluggy_pipeline.event_store import iso_now
from pluggy_pipeline.pluggy_client import PluggyClient
from pluggy_pipeline.receiver import parse_delivery
from pluggy_pipeline.records import RecordStore, from_attributes, identity_key, item_key
from pluggy_pipeline_local.processor_events import (
    ACCOUNT_ID,
    CREATED_AT_FROM,
    ITEM_ID,
    PLUGGY_BASE_URL,
    TRANSACTION_IDS,
    event_id,
    events,
    group_for,
    messages,
    sqs_event,
    sqs_record,
    substitute,
)
from pluggy_pipeline_local.template import function_environment

from tests.conftest import REPO_ROOT, TEMPLATE, Stack, event_names, load_event
from tests.product_truth import expected_products, product_counts, stored_products, truth_product_rows

CLIENT_ID = "processor-test-client"
CLIENT_SECRET = "processor-test-secret"
TX_ROUTE = "GET /v2/transactions"
ITEM_ROUTE = "GET /items/{id}"
ACCOUNTS_ROUTE = "GET /accounts"
# One boto3 session for every test: a new one re-reads the service models (~0.2 s per client).
_SESSION = boto3.session.Session()


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("processor_app", REPO_ROOT / "functions/processor/app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


APP = _load_app()
# Powertools warns on every invocation that records no custom metric.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


# --- fixtures and helpers ------------------------------------------------------------------------


def _start(**kwargs: Any) -> PluggyEmulator:
    emulator = PluggyEmulator(CLIENT_ID, CLIENT_SECRET, seed=kwargs.pop("seed", 3), **kwargs)
    emulator.start()
    return emulator


def _no_sleep(_seconds: float) -> None:
    pass


@pytest.fixture(autouse=True)
def _one_boto3_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest's `stack` calls boto3.client(), which under moto builds a new session (~0.2 s a client)."""
    monkeypatch.setattr(boto3, "client", _SESSION.client)


@pytest.fixture
def emulator() -> Iterator[PluggyEmulator]:
    emu = _start()
    yield emu
    emu.stop()


class Env:
    """Points ProcessorFunction's environment (as template.yaml defines it) at one emulator."""

    def __init__(self, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stack = stack
        self.monkeypatch = monkeypatch

    def use(self, emulator: PluggyEmulator) -> dict[str, str]:
        env = function_environment(
            TEMPLATE, "ProcessorFunction", self.stack.resources, parameters={"PluggyApiBaseUrl": emulator.base_url}
        )
        env.update(PLUGGY_CREDENTIALS_SECRET_ARN="", PLUGGY_CLIENT_ID=CLIENT_ID, PLUGGY_CLIENT_SECRET=CLIENT_SECRET)
        # The shared pacer runs (its slot counters in PacerTable), on a 0.6 s window instead of Pluggy's minute.
        env["PLUGGY_RATE_WINDOW_SECONDS"] = "0.6"
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)
        aws.reset_clients()
        processor_module.get_processor.cache_clear()
        return env


@pytest.fixture
def env(stack: Stack, monkeypatch: pytest.MonkeyPatch, emulator: PluggyEmulator) -> Iterator[Env]:
    # The same client, but its retries do not really sleep.
    monkeypatch.setattr(processor_module, "PluggyClient", functools.partial(PluggyClient, sleep=_no_sleep))
    monkeypatch.setattr(aws, "_session", functools.cache(lambda: _SESSION))
    configured = Env(stack, monkeypatch)
    configured.use(emulator)
    yield configured
    processor_module.get_processor.cache_clear()


@pytest.fixture
def invoke(env: Env, lambda_context: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def _invoke(event: dict[str, Any]) -> dict[str, Any]:
        return APP.lambda_handler(event, lambda_context)  # type: ignore[no-any-return]

    return _invoke


class Mirror:
    """Reads RecordsTable through the RecordStore's own key design."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.table = stack.resources.tables["RecordsTable"]
        self.store = RecordStore(lambda: stack.dynamodb, self.table)

    def get(self, pk: str, sk: str) -> dict[str, Any] | None:
        return self.store.get({"pk": pk, "sk": sk})

    def item(self, item_id: str) -> dict[str, Any] | None:
        return self.store.get(item_key(item_id))

    def accounts(self, item_id: str) -> dict[str, dict[str, Any]]:
        return {a["accountId"]: a for a in self.store.accounts_of_item(item_id)}

    def transactions(self, account_id: str) -> dict[str, dict[str, Any]]:
        rows = self.store.query(
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": f"ACCOUNT#{account_id}"}}
        )
        return {r["transactionId"]: r for r in rows}

    def count(self) -> int:
        return int(self.stack.dynamodb.scan(TableName=self.table, Select="COUNT", ConsistentRead=True)["Count"])

    def scan(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = self.stack.dynamodb.scan(**kwargs)
            rows += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(rows, key=lambda r: (r["pk"]["S"], r["sk"]["S"]))


@pytest.fixture
def mirror(stack: Stack) -> Mirror:
    return Mirror(stack)


def as_stored(value: Any) -> Any:
    """A truth object the way it must come back from DynamoDB: every JSON number a Decimal."""
    return json.loads(json.dumps(value), parse_float=Decimal)


def assert_same(stored: dict[str, Any], truth: dict[str, Any]) -> None:
    expected = as_stored(truth)
    differing = sorted(k for k in expected.keys() | stored.keys() if stored.get(k) != expected.get(k))
    assert differing == [], {k: (stored.get(k), expected.get(k)) for k in differing}


def assert_mirror_equals_truth(mirror: Mirror, truth: dict[str, Any], item_id: str) -> None:
    item = mirror.item(item_id)
    assert item is not None and item["deleted"] is False
    assert_same(item["data"], truth["items"][item_id])
    expected_accounts = {a: acc for a, acc in truth["accounts"].items() if acc["itemId"] == item_id}
    stored_accounts = mirror.accounts(item_id)
    assert set(stored_accounts) == set(expected_accounts)
    for account_id, account in expected_accounts.items():
        assert_same(stored_accounts[account_id]["data"], account)
        stored_tx = mirror.transactions(account_id)
        assert set(stored_tx) == set(truth["transactions"][account_id])
        for tx_id, tx in truth["transactions"][account_id].items():
            assert_same(stored_tx[tx_id]["data"], tx)
            assert stored_tx[tx_id]["itemId"] == item_id
            assert stored_tx[tx_id]["txDate"] == f"{tx['date']}#{tx_id}"
    # Its products: every record Pluggy serves, nothing else (deletions followed), each with Pluggy's object.
    expected = expected_products(truth, item_id)
    stored = stored_products((from_attributes(r) for r in mirror.scan()), item_id)
    assert set(stored) == set(expected)
    for key, data in expected.items():
        assert_same(stored[key]["data"], data)


class Feed:
    """The webhooks the emulator emitted since the last take, as SQS records."""

    def __init__(self, emulator: PluggyEmulator) -> None:
        self.emulator = emulator
        self.seen = 0

    def take(self) -> list[dict[str, Any]]:
        emitted = self.emulator.events()
        new, self.seen = emitted[self.seen :], len(emitted)
        return [e["payload"] for e in new]


@pytest.fixture
def feed(emulator: PluggyEmulator) -> Feed:
    return Feed(emulator)


def record_of(payload: dict[str, Any], sequence: int = 1) -> dict[str, Any]:
    body = json.dumps(payload, separators=(",", ":"))
    delivery = parse_delivery(body.encode())  # the receiver's eventId (a body hash when there is none)
    return sqs_record(
        body,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        group_id=group_for(payload, delivery.event_id),
        sequence=sequence,
    )


def batch(*payloads: dict[str, Any]) -> dict[str, Any]:
    return sqs_event(record_of(p, n) for n, p in enumerate(payloads, start=1))


def only(payloads: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [p for p in payloads if p["event"] == event]


def log_of(stack: Stack, eid: str) -> dict[str, Any]:
    raw = stack.event_record(eid)
    assert raw is not None, f"no event log record for {eid}"
    return {k: aws_value(v) for k, v in raw.items()}


def aws_value(value: dict[str, Any]) -> Any:
    kind, inner = next(iter(value.items()))
    if kind == "M":
        return {k: aws_value(v) for k, v in inner.items()}
    if kind == "N":
        return int(inner)
    return inner


def dlq_messages(stack: Stack) -> list[dict[str, Any]]:
    """Drain the dead-letter queue (deleting: FIFO holds a group back while one of its messages is in flight)."""
    found = stack.receive_all(stack.dlq_url)
    for message in found:
        stack.sqs.delete_message(QueueUrl=stack.dlq_url, ReceiptHandle=message["ReceiptHandle"])
    return found


def queued(stack: Stack) -> list[dict[str, Any]]:
    """Messages in EventQueue with their system attributes (MessageGroupId)."""
    found: list[dict[str, Any]] = []
    while True:
        got = stack.sqs.receive_message(
            QueueUrl=stack.queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not got:
            return found
        found += got


def lambda_record(message: dict[str, Any]) -> dict[str, Any]:
    """A message received from moto's queue in the shape Lambda's SQS trigger delivers it."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message["Attributes"]),
        "messageAttributes": {
            name: {"stringValue": v["StringValue"], "dataType": v["DataType"]}
            for name, v in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:queue.fifo",
        "awsRegion": "us-east-1",
    }


def first_sync(emulator: PluggyEmulator, feed: Feed, invoke: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("transactions_per_account", 3)  # small: moto's response serialization is slow
    item = emulator.create_item(**kwargs)
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    return item


def processor_calls() -> dict[str, int]:
    return processor_module.get_processor().records.calls


# --- the corpus ----------------------------------------------------------------------------------


CORPUS = events()
POISON = sorted(m.name for m in messages() if m.poison)


def test_corpus_on_disk_matches_generator() -> None:
    assert event_names("processor") == sorted(CORPUS)
    for name, event in CORPUS.items():
        assert load_event(f"processor/{name}") == json.loads(json.dumps(event)), name


def test_corpus_has_every_event_type_and_fifo_shape() -> None:
    required = {
        "item-created",
        "item-updated",
        "item-login-succeeded",
        "item-error",
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
        "reconcile",
        "poison-not-json",
        "poison-no-event",
        "poison-not-object",
        "batch-mixed",
    }
    assert required <= set(CORPUS)
    assert json.loads(load_event("processor/item-error")["Records"][0]["body"])["error"]["code"] == (
        "USER_AUTHORIZATION_PENDING"
    )
    for name, event in CORPUS.items():
        for record in event["Records"]:
            assert record["eventSourceARN"].endswith(".fifo"), name
            assert record["eventSource"] == "aws:sqs"
            attributes = record["attributes"]
            assert attributes["MessageGroupId"] and attributes["MessageDeduplicationId"], name
            assert attributes["SequenceNumber"].isdigit()
            for value in record["messageAttributes"].values():
                assert value["dataType"] == "String" and value["stringValue"]
    mixed = CORPUS["batch-mixed"]["Records"]
    assert len(mixed) >= 4 and len({r["attributes"]["MessageGroupId"] for r in mixed}) >= 3
    assert any(r["messageAttributes"]["eventId"]["stringValue"] == event_id("poison-not-json") for r in mixed)


def test_substitute_rewrites_ids_everywhere_and_keeps_md5_right() -> None:
    import hashlib

    event = substitute(load_event("processor/transactions-created"), {ITEM_ID: "item-x", ACCOUNT_ID: "acc-y"})
    record = event["Records"][0]
    body = json.loads(record["body"])
    assert body["itemId"] == "item-x" and body["accountId"] == "acc-y"
    assert "accountId=acc-y" in body["createdTransactionsLink"]
    assert record["attributes"]["MessageGroupId"] == "item:item-x"
    assert record["messageAttributes"]["groupId"]["stringValue"] == "item:item-x"
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    assert ITEM_ID not in json.dumps(event)


def test_every_corpus_file_is_processed(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, mirror: Mirror
) -> None:
    """Each file, its ids mapped onto its own emulator item: handled, logged PROCESSED, its record written.

    One stack for all files (a stack costs more than a file): the files share no keys.
    """
    names = sorted(n for n in CORPUS if n != "batch-mixed" and n not in POISON)
    assert len(names) == 21
    payments: dict[str, str] = {}  # the files share one payment id: the mirror follows Pluggy, not the files
    for name in names:
        _check_corpus_file(name, emulator, feed, invoke, stack, mirror, payments)
    # Pluggy's final word (a final status stays final there), whatever the files' order claimed.
    assert payments == {"PAYMENT_INTENT": "PAYMENT_COMPLETED", "SCHEDULED_PAYMENT": "CANCELED"}


def _check_corpus_file(
    name: str,
    emulator: PluggyEmulator,
    feed: Feed,
    invoke: Any,
    stack: Stack,
    mirror: Mirror,
    payments: dict[str, str],
) -> None:
    item = emulator.create_item(client_user_id=f"corpus-{name}", transactions_per_account=2)
    truth = emulator.truth()
    account_id = next(
        a
        for a, acc in truth["accounts"].items()
        if acc["itemId"] == item["id"] and acc["subtype"] == "CHECKING_ACCOUNT"
    )
    tx_ids = list(truth["transactions"][account_id])
    if name == "transactions-deleted":  # first mirror the item: the deletion must remove rows
        invoke(batch(*feed.take()))
        emulator.remove_transactions(account_id, tx_ids[:2])  # genuine: Pluggy no longer has them
    if name == "item-deleted":
        emulator.delete_item(item["id"])  # genuine: Pluggy answers 404 for it
    if name.startswith(("payment-intent", "scheduled-payment")):  # genuine: Pluggy's payment changes first
        sent = json.loads(load_event(f"processor/{name}")["Records"][0]["body"])
        intent = sent["event"].startswith("payment_intent/")
        emulator.send_payment_event(
            sent["event"],
            payment_request_id=sent.get("paymentRequestId"),
            payment_intent_id=sent.get("paymentIntentId") if intent else None,
            scheduled_payment_id=None if intent else sent.get("scheduledPaymentId"),
            error=sent.get("error"),
        )
    feed.take()
    rows_before = mirror.count()
    event = substitute(
        load_event(f"processor/{name}"),
        {
            ITEM_ID: item["id"],
            ACCOUNT_ID: account_id,
            TRANSACTION_IDS[0]: tx_ids[0],
            TRANSACTION_IDS[1]: tx_ids[1],
            PLUGGY_BASE_URL: emulator.base_url,
            CREATED_AT_FROM: "2020-01-01T00:00:00.000Z",
        },
    )
    assert invoke(event) == {"batchItemFailures": []}, name
    body = json.loads(event["Records"][0]["body"])
    eid = event["Records"][0]["messageAttributes"].get("eventId", {}).get("stringValue") or body["eventId"]
    log = log_of(stack, eid)
    assert (log["status"], log["handled"]) == ("PROCESSED", name != "unknown-event"), name
    assert dlq_messages(stack) == [], name
    if name.startswith("item-") and name != "item-deleted":
        stored_item = mirror.item(item["id"])
        assert stored_item is not None, name
        assert_same(stored_item["data"], truth["items"][item["id"]])
        # Item, accounts, their refs, transactions, and the products the item asked for (the emulator's default).
        products = truth_product_rows(truth, item["id"])
        assert products > 0
        assert mirror.count() - rows_before == 1 + 3 + 3 + 6 + products
    elif name == "item-deleted":
        tombstone = mirror.item(item["id"])
        assert tombstone is not None and (tombstone["deleted"], tombstone["status"]) == (True, "DELETED")
    elif name in ("transactions-created", "transactions-updated"):
        stored = mirror.transactions(account_id)
        assert set(stored) == set(tx_ids), name
        for tx_id in tx_ids:
            assert_same(stored[tx_id]["data"], truth["transactions"][account_id][tx_id])
    elif name == "transactions-deleted":
        assert mirror.transactions(account_id) == {}
        assert rows_before - mirror.count() == 2
    elif name == "connector-status-updated":
        record = mirror.get("CONNECTOR#201", "STATUS")
        assert record is not None and record["status"] == "UNSTABLE"
    elif name.startswith(("payment-intent", "scheduled-payment")):
        entity = "PAYMENT_INTENT" if name.startswith("payment") else "SCHEDULED_PAYMENT"
        payment_id = body.get("paymentIntentId") or body["scheduledPaymentId"]
        pluggy = emulator.truth()["payments"]
        if entity == "PAYMENT_INTENT":
            payments[entity] = pluggy["intents"][payment_id]["status"]
        else:
            payments[entity] = pluggy["schedules"][body["paymentRequestId"]][payment_id]["status"]
        record = mirror.get(f"{entity}#{payment_id}", "STATUS")
        assert record is not None and record["status"] == payments[entity], name
        assert (record["verified"], record["source"]) == (True, "pluggy"), name
    elif name == "reconcile":
        assert log["counts"] == {}  # nothing was synced long ago: nothing queued
        assert queued(stack) == []
    else:
        assert name == "unknown-event"
        assert mirror.count() == rows_before


# --- items ---------------------------------------------------------------------------------------


def test_first_sync_mirrors_truth_with_full_history(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, mirror: Mirror
) -> None:
    item = emulator.create_item(client_user_id="user-42", transactions_per_account=4)
    payloads = feed.take()
    assert [p["event"] for p in payloads] == ["item/login_succeeded", "item/created"]
    assert invoke(batch(*payloads)) == {"batchItemFailures": []}
    truth = emulator.truth()
    assert_mirror_equals_truth(mirror, truth, item["id"])
    accounts = mirror.accounts(item["id"])
    assert len(accounts) == 3 and sum(len(t) for t in truth["transactions"].values()) == 12
    for account_id, account in accounts.items():
        created = [tx["createdAt"] for tx in truth["transactions"][account_id].values()]
        assert account["txWatermark"] == max(created)
    stored = mirror.item(item["id"])
    assert stored is not None
    assert (stored["status"], stored["executionStatus"], stored["clientUserId"]) == ("UPDATED", "SUCCESS", "user-42")
    assert [r["itemId"] for r in mirror.store.items_of_user("user-42")] == [item["id"]]
    # One sync served both events of the item (one message group): each has its own PROCESSED record.
    for payload in payloads:
        log = log_of(stack, payload["eventId"])
        assert log["status"] == "PROCESSED"
        products = product_counts(truth, item["id"])
        assert set(products) == {"bills", "investments", "investmentTransactions", "loans", "identities", "consents"}
        assert log["counts"] == {"items": 1, "accounts": 3, "transactions": 12, **products, "coalesced": 2}
    assert emulator.stats()[ITEM_ROUTE] == 1


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, str):
        yield value


def test_the_identity_is_mirrored_but_never_logged(
    emulator: PluggyEmulator,
    feed: Feed,
    invoke: Any,
    mirror: Mirror,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    item = emulator.create_item(transactions_per_account=2)
    capsys.readouterr()
    # Our logger at its most verbose; botocore's DEBUG wire logs (request bodies) are not ours to write.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="pluggy-pipeline")
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    emulator.sync_item(item["id"], products_change=True)  # the identity changes too: a second write
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    logged = capsys.readouterr()
    identity = emulator.truth()["identities"][item["id"]]
    stored = mirror.store.get(identity_key(item["id"]))
    assert stored is not None and stored["data"]["fullName"] == identity["fullName"]
    # Every personal value (name, CPF, birth date, phones, emails, addresses...), none in any line written.
    personal = {v for v in _leaves({k: v for k, v in identity.items() if k not in ("id", "itemId")}) if len(v) >= 6}
    assert {"fullName", "taxNumber"} <= identity.keys() and len(personal) > 5
    # Log records with every field they carry (extra keys included), and whatever reached stdout/stderr.
    lines = logged.out + logged.err + "".join(repr(vars(record)) for record in caplog.records)
    assert "event processed" in lines and "identities" in lines
    assert [v for v in personal if v in lines] == []


def test_initial_sync_costs_ceil_n_over_25_batch_writes_per_account(env: Env, invoke: Any, mirror: Mirror) -> None:
    """N = 60 rows per account: 3 BatchWriteItem calls each, also when Pluggy pages them by 30 (not 4)."""
    small_pages = _start(page_size=30)
    try:
        env.use(small_pages)
        # Accounts and transactions only: no product but the item's consent (one more BatchWriteItem).
        item = small_pages.create_item(transactions_per_account=60, products=["ACCOUNTS", "TRANSACTIONS"])
        invoke(batch(small_pages.events()[0]["payload"]))
        assert small_pages.stats()[TX_ROUTE] == 3 * 2
        assert processor_calls()["batch_write_item"] == 3 * math.ceil(60 / 25) + 1
        truth = small_pages.truth()
        for account_id in mirror.accounts(item["id"]):
            keys = mirror.store.transaction_keys_of_account(account_id)
            assert {k["sk"].removeprefix("TX#") for k in keys} == set(truth["transactions"][account_id])
    finally:
        small_pages.stop()


def test_item_without_new_data_costs_one_transactions_call_per_account(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke)
    item_record = f"ITEM#{item['id']}ITEM"  # its syncedAt moves at each sync
    before = {r["pk"]["S"] + r["sk"]["S"]: r for r in mirror.scan() if r["pk"]["S"] + r["sk"]["S"] != item_record}
    assert {r["kind"]["S"] for r in before.values()} >= {"transaction", "bill", "investment", "identity", "consent"}
    emulator.reset_stats()
    emulator.reconnect_item(item["id"])  # a sync that found nothing new: item/updated only
    payloads = feed.take()
    assert [p["event"] for p in payloads] == ["item/updated"]
    assert invoke(batch(*payloads)) == {"batchItemFailures": []}
    # Products have no createdAt filter: one read of each list (one per investment for their transactions).
    investments = len([i for i in emulator.truth()["investments"].values() if i["itemId"] == item["id"]])
    assert emulator.stats() == {
        ITEM_ROUTE: 1,
        ACCOUNTS_ROUTE: 1,
        TX_ROUTE: 3,
        "GET /bills": 1,  # the one credit-card account
        "GET /investments": 1,
        "GET /investments/{id}/transactions": investments,
        "GET /loans": 1,
        "GET /identity": 1,
        "GET /consents": 1,
    }
    # Nothing changed, so nothing is written: not a transaction, not a product record (same digests).
    after = {r["pk"]["S"] + r["sk"]["S"]: r for r in mirror.scan() if r["pk"]["S"] + r["sk"]["S"] != item_record}
    assert after == before
    assert_mirror_equals_truth(mirror, emulator.truth(), item["id"])
    assert log_of(stack, payloads[0]["eventId"])["counts"] == {"items": 1, "accounts": 3}


def test_sync_with_every_kind_of_change_mirrors_truth(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke, transactions_per_account=5)
    changes = emulator.sync_item(item["id"], add=6, change=4, delete=3, restate_credit_card=2, new_account=True)
    payloads = feed.take()
    assert {p["event"] for p in payloads} == {
        "item/updated",
        "transactions/created",
        "transactions/updated",
        "transactions/deleted",
    }
    assert invoke(batch(*payloads[:10])) == {"batchItemFailures": []}
    if payloads[10:]:
        assert invoke(batch(*payloads[10:])) == {"batchItemFailures": []}
    truth = emulator.truth()
    assert_mirror_equals_truth(mirror, truth, item["id"])
    assert changes["newAccountId"] in mirror.accounts(item["id"])
    for account_id, ids in changes["deleted"].items():
        assert not set(ids) & set(mirror.transactions(account_id))


def test_partial_success_stores_status_detail_and_only_collected_accounts(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke, username="user-ok-account-error")
    stored = mirror.item(item["id"])
    assert stored is not None and stored["executionStatus"] == "PARTIAL_SUCCESS"
    assert stored["data"]["statusDetail"]["creditCards"]["isUpdated"] is False
    assert_mirror_equals_truth(mirror, emulator.truth(), item["id"])
    assert {a["data"]["subtype"] for a in mirror.accounts(item["id"]).values()} == {
        "CHECKING_ACCOUNT",
        "SAVINGS_ACCOUNT",
    }


def test_authorization_pending_stores_error_then_later_success_syncs(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, mirror: Mirror
) -> None:
    item = emulator.create_item(transactions_per_account=3)
    feed.take()  # the connection's own webhooks are lost: the first thing we hear is the error
    emulator.fail_item(item["id"], "USER_AUTHORIZATION_PENDING")
    errors = feed.take()
    assert [p["event"] for p in errors] == ["item/error"]
    emulator.reset_stats()
    assert invoke(batch(*errors)) == {"batchItemFailures": []}
    stored = mirror.item(item["id"])
    assert stored is not None
    assert stored["errorCode"] == "USER_AUTHORIZATION_PENDING"
    assert stored["executionStatus"] == "USER_AUTHORIZATION_PENDING"
    assert stored["status"] == emulator.truth()["items"][item["id"]]["status"]
    assert_same(stored["data"], emulator.truth()["items"][item["id"]])
    assert mirror.accounts(item["id"]) == {}
    assert emulator.stats() == {"POST /auth": 1, ITEM_ROUTE: 1}  # no accounts, no transactions fetched
    assert log_of(stack, errors[0]["eventId"])["status"] == "PROCESSED"

    emulator.reconnect_item(item["id"])  # the user authorized: success arrives as item/updated
    success = feed.take()
    assert [p["event"] for p in success] == ["item/updated"]
    assert invoke(batch(*success)) == {"batchItemFailures": []}
    assert_mirror_equals_truth(mirror, emulator.truth(), item["id"])
    stored = mirror.item(item["id"])
    assert stored is not None and "errorCode" not in stored and stored["executionStatus"] == "SUCCESS"


def test_waiting_user_input_stores_the_parameter_without_fetching_data(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke)
    before = [r for r in mirror.scan() if r["pk"]["S"].startswith("ACCOUNT#")]
    emulator.set_waiting_user_input(item["id"])
    emulator.reset_stats()
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    stored = mirror.item(item["id"])
    truth_item = emulator.truth()["items"][item["id"]]
    assert stored is not None and stored["status"] == "WAITING_USER_INPUT"
    assert stored["data"]["parameter"]["name"] == "token"
    assert_same(stored["data"], truth_item)
    assert emulator.stats() == {ITEM_ROUTE: 1}
    assert [r for r in mirror.scan() if r["pk"]["S"].startswith("ACCOUNT#")] == before


def test_waiting_user_action_stores_status_and_error_without_fetching_data(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke)
    emulator.fail_item(item["id"], "ACCOUNT_NEEDS_ACTION")
    feed.take()  # only the waiting_user_action webhook reaches us
    emulator.send_event("item/waiting_user_action", itemId=item["id"], triggeredBy="USER")
    emulator.reset_stats()
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    stored = mirror.item(item["id"])
    assert stored is not None
    assert (stored["status"], stored["errorCode"]) == ("LOGIN_ERROR", "ACCOUNT_NEEDS_ACTION")
    assert emulator.stats() == {ITEM_ROUTE: 1}


def test_item_deleted_removes_accounts_and_transactions_and_keeps_a_tombstone(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke, client_user_id="user-del")
    accounts = list(mirror.accounts(item["id"]))
    emulator.delete_item(item["id"])
    payloads = feed.take()
    assert [p["event"] for p in payloads] == ["item/deleted"]
    emulator.reset_stats()
    assert invoke(batch(*payloads)) == {"batchItemFailures": []}
    _assert_tombstone(mirror, item, accounts)
    assert emulator.stats() == {ITEM_ROUTE: 1}  # deleted only once Pluggy confirmed with a 404


def test_a_forged_item_deleted_is_checked_with_pluggy_and_deletes_nothing(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke, client_user_id="user-kept")
    before = mirror.count()
    emulator.send_event("item/deleted", itemId=item["id"])  # Pluggy still has the item
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    stored = mirror.item(item["id"])
    assert stored is not None and stored["deleted"] is False
    assert mirror.count() == before
    assert_mirror_equals_truth(mirror, emulator.truth(), item["id"])


def test_item_gone_from_pluggy_cascades_like_a_deletion(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke, client_user_id="user-del")
    accounts = list(mirror.accounts(item["id"]))
    emulator.delete_item(item["id"])
    feed.take()  # the item/deleted webhook is lost
    emulator.send_event("item/updated", itemId=item["id"], triggeredBy="SYNC")
    emulator.reset_stats()
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    assert emulator.stats() == {ITEM_ROUTE: 1}  # 404, then nothing else asked
    _assert_tombstone(mirror, item, accounts)


def _assert_tombstone(mirror: Mirror, item: dict[str, Any], accounts: list[str]) -> None:
    assert len(accounts) == 3
    tombstone = mirror.item(item["id"])
    assert tombstone is not None
    assert (tombstone["deleted"], tombstone["status"]) == (True, "DELETED")
    assert tombstone["data"]["id"] == item["id"] and tombstone["deletedAt"]
    assert [r["itemId"] for r in mirror.store.items_of_user("user-del")] == [item["id"]]
    assert mirror.accounts(item["id"]) == {}
    for account_id in accounts:
        assert mirror.transactions(account_id) == {}
    assert {(r["pk"]["S"], r["sk"]["S"]) for r in mirror.scan()} == {(f"ITEM#{item['id']}", "ITEM")}
    assert mirror.store.items_synced_before("9999") == []  # a tombstone is never reconciled


# --- transactions --------------------------------------------------------------------------------


def _card_account(truth: dict[str, Any], item_id: str) -> str:
    return next(a for a, acc in truth["accounts"].items() if acc["itemId"] == item_id and acc["type"] == "CREDIT")


@pytest.mark.parametrize("order", ["deleted-first", "created-first"])
def test_unstable_credit_card_id_restatement(
    order: str, emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke)
    changes = emulator.sync_item(item["id"], restate_credit_card=1)
    [(old_id, new_id)] = changes["restated"].items()
    payloads = feed.take()
    created, deleted = only(payloads, "transactions/created"), only(payloads, "transactions/deleted")
    assert [p["transactionIds"] for p in deleted] == [[old_id]]
    card = _card_account(emulator.truth(), item["id"])
    assert old_id in mirror.transactions(card) and new_id not in mirror.transactions(card)
    # The transactions webhooks alone (item/updated is processed last) must fix the mirror.
    pair = deleted + created if order == "deleted-first" else created + deleted
    assert invoke(batch(*pair)) == {"batchItemFailures": []}
    stored = mirror.transactions(card)
    assert old_id not in stored and new_id in stored
    truth = emulator.truth()
    assert set(stored) == set(truth["transactions"][card])
    assert_same(stored[new_id]["data"], truth["transactions"][card][new_id])
    assert invoke(batch(*only(payloads, "item/updated"))) == {"batchItemFailures": []}
    assert_mirror_equals_truth(mirror, emulator.truth(), item["id"])


def test_transactions_created_follows_the_link(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = emulator.create_item(transactions_per_account=4)
    feed.take()  # the first sync's webhooks are not processed
    changes = emulator.sync_item(item["id"], add=3)
    [created] = [p for p in only(feed.take(), "transactions/created") if p["accountId"] in changes["created"]][:1]
    account_id = created["accountId"]
    # The link asks for the whole history, the fallback field only for the new rows: the link wins.
    link = f"{emulator.base_url}/v2/transactions?accountId={account_id}&createdAtFrom=2020-01-01T00:00:00.000Z"
    assert invoke(batch({**created, "createdTransactionsLink": link})) == {"batchItemFailures": []}
    assert set(mirror.transactions(account_id)) == set(emulator.truth()["transactions"][account_id])


def test_transactions_created_falls_back_to_created_at_from(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke, transactions_per_account=4)
    changes = emulator.sync_item(item["id"], add=3)
    created = only(feed.take(), "transactions/created")[0]
    account_id = created["accountId"]
    without_link = {k: v for k, v in created.items() if k != "createdTransactionsLink"}
    assert invoke(batch(without_link)) == {"batchItemFailures": []}
    assert set(changes["created"][account_id]) <= set(mirror.transactions(account_id))
    truth = emulator.truth()["transactions"][account_id]
    for tx_id, row in mirror.transactions(account_id).items():
        assert_same(row["data"], truth[tx_id])


def test_transactions_updated_refetches_by_ids(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke)
    changes = emulator.sync_item(item["id"], change=5)
    payloads = feed.take()
    updated = only(payloads, "transactions/updated")
    truth = emulator.truth()
    stale = [
        (a, t)
        for a, ids in changes["updated"].items()
        for t in ids
        if mirror.transactions(a)[t]["data"] != as_stored(truth["transactions"][a][t])
    ]
    assert len(stale) == 5  # the mirror is behind until the webhooks are processed
    emulator.reset_stats()
    assert invoke(batch(*updated)) == {"batchItemFailures": []}
    assert emulator.stats() == {TX_ROUTE: len(updated)}
    for account_id, tx_id in stale:
        assert_same(mirror.transactions(account_id)[tx_id]["data"], truth["transactions"][account_id][tx_id])


def test_transactions_deleted_by_ids_with_and_without_account(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke)
    changes = emulator.sync_item(item["id"], delete=5)
    deleted = only(feed.take(), "transactions/deleted")
    assert len(deleted) >= 2
    # The first account's webhook loses its accountId: the rows are found through the byTransactionId index.
    deleted[0] = {k: v for k, v in deleted[0].items() if k != "accountId"}
    emulator.reset_stats()
    assert invoke(batch(*deleted)) == {"batchItemFailures": []}
    assert emulator.stats() == {TX_ROUTE: len(deleted)}  # each webhook's ids checked with Pluggy, one call
    truth = emulator.truth()
    for account_id, ids in changes["deleted"].items():
        stored = mirror.transactions(account_id)
        assert not set(ids) & set(stored)
        assert set(stored) == set(truth["transactions"][account_id])
    assert sum(len(ids) for ids in changes["deleted"].values()) == 5


# --- connectors, payments, unknown events --------------------------------------------------------


def test_connector_status_is_stored_per_connector(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, mirror: Mirror
) -> None:
    emulator.set_connector_status("UNSTABLE")
    first = feed.take()
    assert "eventId" not in first[0]  # keyed on the body hash, as the receiver does
    assert invoke(batch(*first)) == {"batchItemFailures": []}
    record = mirror.get("CONNECTOR#0", "STATUS")
    assert record is not None and (record["status"], record["connectorId"]) == ("UNSTABLE", "0")
    emulator.set_connector_status("ONLINE")
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    assert mirror.get("CONNECTOR#0", "STATUS")["status"] == "ONLINE"  # type: ignore[index]
    assert mirror.get("CONNECTOR#201", "STATUS") is None


def test_payment_statuses_are_pluggy_s_whatever_the_events_claim(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    intent, request = "pi-1", "pr-1"

    def status() -> str:
        record = mirror.get(f"PAYMENT_INTENT#{intent}", "STATUS")
        assert record is not None and record["verified"] is True and record["source"] == "pluggy"
        return str(record["status"])

    emulator.send_payment_event("payment_intent/created", payment_request_id=request, payment_intent_id=intent)
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    assert status() == "CONSENT_AWAITING_AUTHORIZATION"
    # A forged completion (Pluggy never sent it): Pluggy is asked, the intent stays where Pluggy has it.
    emulator.send_event("payment_intent/completed", paymentRequestId=request, paymentIntentId=intent)
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    assert status() == "CONSENT_AWAITING_AUTHORIZATION"
    request_record = mirror.get(f"PAYMENT_REQUEST#{request}", "STATUS")
    assert request_record is not None and request_record["status"] == "IN_PROGRESS"
    for event in ("payment_intent/waiting_payer_authorization", "payment_intent/completed"):
        emulator.send_payment_event(event, payment_request_id=request, payment_intent_id=intent)
    emulator.send_payment_event("payment_intent/created", payment_request_id=request, payment_intent_id=intent)
    payloads = feed.take()
    assert invoke(batch(payloads[0])) == {"batchItemFailures": []}
    assert status() == "PAYMENT_COMPLETED"  # processed after Pluggy moved on: Pluggy's current state
    assert invoke(batch(*payloads[1:])) == {"batchItemFailures": []}  # completed, then a late created
    record = mirror.get(f"PAYMENT_INTENT#{intent}", "STATUS")
    assert record is not None
    assert (record["status"], record["paymentRequestId"]) == ("PAYMENT_COMPLETED", request)
    assert mirror.get(f"PAYMENT_REQUEST#{request}", "STATUS")["status"] == "COMPLETED"  # type: ignore[index]


def test_a_payment_pluggy_does_not_know_is_never_stored(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, mirror: Mirror
) -> None:
    emulator.send_event("payment_intent/completed", paymentRequestId="pr-forged", paymentIntentId="pi-forged")
    [payload] = feed.take()
    assert invoke(batch(payload)) == {"batchItemFailures": []}
    assert mirror.get("PAYMENT_INTENT#pi-forged", "STATUS") is None
    assert log_of(stack, payload["eventId"])["counts"] == {"paymentsNotFound": 2}


def test_scheduled_and_failed_payments_keep_their_terminal_status(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    sequences = {
        "s-1": ["scheduled_payment/created", "scheduled_payment/completed"],
        "s-2": ["scheduled_payment/created", "scheduled_payment/error", "scheduled_payment/created"],
        "s-3": ["scheduled_payment/canceled", "scheduled_payment/created"],
        "p-4": ["payment_intent/created", "payment_intent/error", "payment_intent/waiting_payer_authorization"],
    }
    for payment_id, sent in sequences.items():
        for event in sent:
            emulator.send_payment_event(
                event,
                payment_request_id=f"r-{payment_id}",
                payment_intent_id=payment_id,
                scheduled_payment_id=payment_id,
            )
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}  # one group per payment, in order
    expected = {
        "SCHEDULED_PAYMENT#s-1": "COMPLETED",
        "SCHEDULED_PAYMENT#s-2": "ERROR",
        "SCHEDULED_PAYMENT#s-3": "CANCELED",
        "PAYMENT_INTENT#p-4": "PAYMENT_REJECTED",
    }
    for key, status in expected.items():
        record = mirror.get(key, "STATUS")
        assert record is not None and record["status"] == status, key
    assert mirror.get("SCHEDULED_PAYMENT#s-2", "STATUS")["error"]["code"] == "SALDO_INSUFICIENTE"  # type: ignore[index]


def test_unknown_event_is_recorded_as_not_handled(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, mirror: Mirror
) -> None:
    emulator.send_event("boleto/updated", boletoId="b-9")
    [payload] = feed.take()
    assert invoke(batch(payload)) == {"batchItemFailures": []}
    log = log_of(stack, payload["eventId"])
    assert (log["status"], log["handled"]) == ("PROCESSED", False)
    assert "permanent" not in log and "error" not in log
    assert mirror.scan() == [] and dlq_messages(stack) == []


# --- idempotency and order -----------------------------------------------------------------------


def test_same_message_twice_is_skipped_the_second_time(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, mirror: Mirror
) -> None:
    item = emulator.create_item(transactions_per_account=3)
    event = batch(*feed.take())
    invoke(event)
    snapshot = mirror.scan()
    logs = {p: log_of(stack, p) for p in (json.loads(r["body"])["eventId"] for r in event["Records"])}
    emulator.reset_stats()
    assert invoke(event) == {"batchItemFailures": []}
    assert emulator.stats() == {}  # no Pluggy call at all
    assert mirror.scan() == snapshot
    for eid, log in logs.items():
        again = log_of(stack, eid)
        assert again["status"] == "PROCESSED" and again["counts"] == log["counts"] and again["attempts"] == 1
    assert_mirror_equals_truth(mirror, emulator.truth(), item["id"])


def test_processing_twice_leaves_identical_records(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = emulator.create_item(transactions_per_account=3)
    login, created = feed.take()
    invoke(batch(login))
    snapshot = mirror.scan()
    # The same payload again under other eventIds: a replay from the DLQ, a second webhook.
    invoke(batch({**login, "eventId": "replay-1"}, {**created, "eventId": "replay-2"}))
    volatile = {"syncedAt", "syncSk", "txSettled"}  # when we last looked, by design

    def stable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in volatile} for r in rows]

    assert stable(mirror.scan()) == stable(snapshot)
    assert_mirror_equals_truth(mirror, emulator.truth(), item["id"])


def test_older_item_updated_after_a_newer_one_leaves_the_same_records(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke)
    emulator.sync_item(item["id"], add=2)
    older = feed.take()
    emulator.sync_item(item["id"], change=2, delete=1)
    newer = feed.take()
    assert invoke(batch(*newer, *older)) == {"batchItemFailures": []}
    rows = mirror.count()
    assert_mirror_equals_truth(mirror, emulator.truth(), item["id"])
    assert invoke(batch(*[{**p, "eventId": p["eventId"] + "-late"} for p in older])) == {"batchItemFailures": []}
    assert_mirror_equals_truth(mirror, emulator.truth(), item["id"])
    assert mirror.count() == rows


# --- failure policy ------------------------------------------------------------------------------

TRANSIENT_FAULTS = {
    "500-beyond-retries": {"kind": "500", "count": 4},
    "429-long-retry-after": {"kind": "429", "count": 1, "retry_after_seconds": 120},
    "timeout": {"kind": "delay", "count": 4, "delay_seconds": 1.0},  # the client gives up after 0.2 s
    "connection-reset": {"kind": "drop", "count": 4},
}


@pytest.mark.parametrize("fault", sorted(TRANSIENT_FAULTS))
def test_transient_pluggy_failure_returns_only_that_record(
    fault: str,
    emulator: PluggyEmulator,
    feed: Feed,
    invoke: Any,
    stack: Stack,
    mirror: Mirror,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if fault == "timeout":  # four read timeouts in a row: keep them short
        short = functools.partial(PluggyClient, sleep=_no_sleep, timeout=(2.0, 0.2))
        monkeypatch.setattr(processor_module, "PluggyClient", short)
        processor_module.get_processor.cache_clear()
    item = emulator.create_item(transactions_per_account=3)
    login = feed.take()[0]
    emulator.send_payment_event("payment_intent/completed", payment_intent_id="pi-ok")
    payment = feed.take()[0]
    spec = dict(TRANSIENT_FAULTS[fault])
    emulator.fault(ITEM_ROUTE, spec.pop("kind"), spec.pop("count"), **spec)
    event = batch(login, payment)
    response = invoke(event)
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    log = log_of(stack, login["eventId"])
    assert (log["status"], log["permanent"]) == ("FAILED", False)
    assert "TransientError" in log["error"] or "RateLimitedError" in log["error"]
    assert mirror.item(item["id"]) is None
    assert mirror.get("PAYMENT_INTENT#pi-ok", "STATUS") is not None  # the other group went on
    assert dlq_messages(stack) == []
    # SQS redelivers it after the visibility timeout; Pluggy is fine by then.
    emulator.clear_faults()
    monkeypatch.setattr(processor_module, "PluggyClient", functools.partial(PluggyClient, sleep=_no_sleep))
    processor_module.get_processor.cache_clear()  # a new container
    assert invoke(batch(login)) == {"batchItemFailures": []}
    assert log_of(stack, login["eventId"])["status"] == "PROCESSED"
    # A rate limit holds the message without counting an attempt (it never parks a healthy message).
    assert log_of(stack, login["eventId"])["attempts"] == (1 if fault.startswith("429") else 2)
    stored = mirror.item(item["id"])
    assert stored is not None and stored["data"] == as_stored(emulator.truth()["items"][item["id"]])


def test_a_rate_limit_holds_the_messages_in_sqs_until_the_reset_without_counting_an_attempt(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On moto's SQS: the held group comes back after Pluggy's reset (2 s here), not the 540 s timeout."""
    short = functools.partial(PluggyClient, sleep=_no_sleep, max_retry_wait=0.5)  # 2 s is too long to sleep
    monkeypatch.setattr(processor_module, "PluggyClient", short)
    processor_module.get_processor.cache_clear()
    emulator.create_item(transactions_per_account=1)
    # One message: moto hands a FIFO group's messages back out of order after a visibility change (it skips
    # the first while the second is still in flight), which real SQS does not.
    payloads = feed.take()[:1]
    for n, payload in enumerate(payloads):
        record = record_of(payload, n + 1)
        stack.sqs.send_message(
            QueueUrl=stack.queue_url,
            MessageBody=record["body"],
            MessageGroupId=record["attributes"]["MessageGroupId"],
            MessageDeduplicationId=record["attributes"]["MessageDeduplicationId"],
            MessageAttributes={
                k: {"DataType": "String", "StringValue": v["stringValue"]}
                for k, v in record["messageAttributes"].items()
            },
        )

    def receive() -> dict[str, Any]:
        received = stack.sqs.receive_message(
            QueueUrl=stack.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
        ).get("Messages", [])
        return sqs_event(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {
                    k: {"stringValue": v["StringValue"], "dataType": "String"}
                    for k, v in m["MessageAttributes"].items()
                },
            }
            for m in received
        )

    emulator.fault(ITEM_ROUTE, "429", 1, retry_after_seconds=2)
    held = receive()
    assert len(held["Records"]) == len(payloads) == 1
    assert len(invoke(held)["batchItemFailures"]) == 1
    assert receive()["Records"] == []  # held: invisible until Pluggy's reset
    time.sleep(2.5)
    again = receive()
    assert [r["messageId"] for r in again["Records"]] == [r["messageId"] for r in held["Records"]]
    assert invoke(again) == {"batchItemFailures": []}
    for payload in payloads:
        log = log_of(stack, payload["eventId"])
        assert (log["status"], log["attempts"], log["holds"]) == ("PROCESSED", 1, 1)
    assert dlq_messages(stack) == []


def test_a_500_within_the_retries_is_absorbed(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = emulator.create_item(transactions_per_account=3)
    emulator.fault(ITEM_ROUTE, "500", 3)
    emulator.fault(TX_ROUTE, "drop", 1)
    assert invoke(batch(feed.take()[0])) == {"batchItemFailures": []}
    assert emulator.stats()[ITEM_ROUTE] == 4
    assert_mirror_equals_truth(mirror, emulator.truth(), item["id"])


def test_a_lone_failing_record_is_handed_back(emulator: PluggyEmulator, feed: Feed, invoke: Any) -> None:
    emulator.create_item(transactions_per_account=1)
    emulator.fault(ITEM_ROUTE, "500", 4)
    event = batch(feed.take()[0])
    assert invoke(event) == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}


def test_expired_api_key_is_renewed_transparently(env: Env, invoke: Any, mirror: Mirror) -> None:
    short_keys = _start(api_key_ttl_seconds=1)
    try:
        env.use(short_keys)
        item = short_keys.create_item(transactions_per_account=2)
        login, created = (e["payload"] for e in short_keys.events())
        assert invoke(batch(login)) == {"batchItemFailures": []}
        time.sleep(1.1)  # the cached key has expired at the emulator
        short_keys.reset_stats()
        assert invoke(batch(created)) == {"batchItemFailures": []}
        assert short_keys.stats()["POST /auth"] >= 1
        assert short_keys.stats()[ITEM_ROUTE] == 2  # 401 API_KEY_EXPIRED, then the same call again
        assert_mirror_equals_truth(mirror, short_keys.truth(), item["id"])
    finally:
        short_keys.stop()


def test_api_key_rejected_even_fresh_is_transient(env: Env, invoke: Any, stack: Stack, mirror: Mirror) -> None:
    expired_at_once = _start(api_key_ttl_seconds=0)
    try:
        env.use(expired_at_once)
        expired_at_once.create_item(transactions_per_account=2)
        expired_at_once.send_payment_event("payment_intent/created", payment_intent_id="pi-2")
        expired_at_once.set_connector_status("UNSTABLE")  # needs no Pluggy call: the batch is not all failures
        login, _created, payment, connector = (e["payload"] for e in expired_at_once.events())
        event = batch(login, payment, connector)
        failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"][:2]]
        assert invoke(event) == {"batchItemFailures": failures}  # the payment is re-fetched too now
        for payload in (login, payment):
            log = log_of(stack, payload["eventId"])
            assert (log["status"], log["permanent"]) == ("FAILED", False)
            assert "PluggyAuthError" in log["error"]
        assert dlq_messages(stack) == []  # credentials are fixed by operators; the message is fine
        assert mirror.get("PAYMENT_INTENT#pi-2", "STATUS") is None  # nothing stored on the webhook's word
    finally:
        expired_at_once.stop()


def test_poison_messages_are_parked_not_retried(invoke: Any, stack: Stack, mirror: Mirror) -> None:
    assert POISON == ["poison-no-event", "poison-no-item-id", "poison-not-json", "poison-not-object"]
    for name in POISON:
        event = load_event(f"processor/{name}")
        assert invoke(event) == {"batchItemFailures": []}, name
        [parked] = dlq_messages(stack)
        record = event["Records"][0]
        assert parked["Body"] == record["body"]
        eid = record["messageAttributes"]["eventId"]["stringValue"]
        assert parked["MessageAttributes"]["eventId"]["StringValue"] == eid, name
        assert parked["MessageAttributes"]["failureReason"]["StringValue"], name
        log = log_of(stack, eid)
        assert (log["status"], log["permanent"]) == ("FAILED", True), name
        assert log["error"].startswith("PermanentError"), name
    assert mirror.scan() == []


def test_batch_mixed_corpus_file(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, mirror: Mirror
) -> None:
    item = emulator.create_item(transactions_per_account=5)
    invoke(batch(*feed.take()))
    truth = emulator.truth()
    account_id = next(a for a, acc in truth["accounts"].items() if acc["subtype"] == "CHECKING_ACCOUNT")
    removed = next(iter(truth["transactions"][account_id]))
    emulator.remove_transactions(account_id, [removed])  # Pluggy deleted it: the file's deletion is genuine
    event = substitute(
        load_event("processor/batch-mixed"),
        {
            ITEM_ID: item["id"],
            ACCOUNT_ID: account_id,
            TRANSACTION_IDS[0]: removed,
        },
    )
    assert invoke(event) == {"batchItemFailures": []}  # the poison one is parked, not retried
    [parked] = dlq_messages(stack)
    assert parked["MessageAttributes"]["eventId"]["StringValue"] == event_id("poison-not-json")
    assert mirror.get("CONNECTOR#201", "STATUS") is not None
    assert len(mirror.transactions(account_id)) == 4  # transactions/deleted, after the poison in its group
    for record in event["Records"]:
        eid = record["messageAttributes"]["eventId"]["stringValue"]
        assert log_of(stack, eid)["status"] == ("FAILED" if eid == event_id("poison-not-json") else "PROCESSED")


def test_partial_batch_failure_reports_exactly_the_failing_group(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, mirror: Mirror
) -> None:
    items = [emulator.create_item(transactions_per_account=2) for _ in range(3)]
    feed.take()
    for item in items:
        emulator.reconnect_item(item["id"])
    updates = feed.take()
    assert [p["itemId"] for p in updates] == [i["id"] for i in items]
    bad, good_a, good_b = updates
    again = {**bad, "eventId": bad["eventId"] + "-2"}
    emulator.fault(ITEM_ROUTE, "500", 4)  # taken by the batch's first record, item `bad`
    event = batch(bad, good_a, good_b, again)
    response = invoke(event)
    failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    assert failed == [event["Records"][0]["messageId"], event["Records"][3]["messageId"]]
    assert mirror.item(bad["itemId"]) is None
    truth = emulator.truth()
    for payload in (good_a, good_b):
        assert_mirror_equals_truth(mirror, truth, payload["itemId"])
    # `again` shares `bad`'s group: one sync serves both, so both failed with it (and go back in order).
    assert log_of(stack, bad["eventId"])["status"] == "FAILED"
    assert log_of(stack, again["eventId"])["status"] == "FAILED"
    assert emulator.stats()[ITEM_ROUTE] == 4 + 2  # 4 for the failed sync, one per good item


# --- reconciliation ------------------------------------------------------------------------------


def test_reconcile_queues_a_full_sync_that_heals_a_lost_deletion(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, stack: Stack, mirror: Mirror
) -> None:
    stale = first_sync(emulator, feed, invoke, transactions_per_account=6)
    fresh = first_sync(emulator, feed, invoke, transactions_per_account=2)
    # Time passes: RECONCILE_AFTER_HOURS is 26 (template default), the processor's clock is the real one.
    long_ago, recently = iso_now(time.time() - 27 * 3600), iso_now(time.time() - 25 * 3600)
    mirror.store.update(item_key(stale["id"]), {"syncedAt": long_ago, "syncSk": long_ago})
    mirror.store.update(item_key(fresh["id"]), {"syncedAt": recently, "syncSk": recently})
    changes = emulator.sync_item(stale["id"], delete=2)
    feed.take()  # the transactions/deleted (and item/updated) webhooks are lost
    lost = [t for ids in changes["deleted"].values() for t in ids]
    assert len(lost) == 2 and any(t in mirror.transactions(a) for a, ids in changes["deleted"].items() for t in ids)

    assert invoke(load_event("processor/reconcile")) == {"batchItemFailures": []}
    [message] = queued(stack)
    body = json.loads(message["Body"])
    assert body == {"event": "pipeline/sync_item", "itemId": stale["id"], "full": True}
    assert message["Attributes"]["MessageGroupId"] == f"item:{stale['id']}"
    assert message["MessageAttributes"]["eventType"]["StringValue"] == "pipeline/sync_item"
    assert fresh["id"] not in message["Body"]

    assert invoke(sqs_event([lambda_record(message)])) == {"batchItemFailures": []}
    assert_mirror_equals_truth(mirror, emulator.truth(), stale["id"])
    stored = mirror.item(stale["id"])
    assert stored is not None and stored["syncedAt"] > long_ago and stored["lastFullSyncAt"] == stored["syncedAt"]
    log = log_of(stack, message["MessageAttributes"]["eventId"]["StringValue"])
    assert log["counts"]["transactionsDeleted"] == 2


def test_an_open_finance_item_keeps_its_consent_expiry_and_pending_resources(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, mirror: Mirror
) -> None:
    item = first_sync(emulator, feed, invoke)
    stored = mirror.item(item["id"])
    assert stored is not None and stored["resourcesPendingAuthorization"] is False
    assert stored["consentExpiresAt"] == emulator.truth()["items"][item["id"]]["consentExpiresAt"] is not None
    emulator.sync_item(item["id"], resources_pending=True)  # some consented resources await authorization
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    stored = mirror.item(item["id"])
    assert stored is not None and stored["resourcesPendingAuthorization"] is True
    assert stored["data"]["hasResourcesPendingAuthorization"] is True
    assert stored["data"]["resourcesCollectedAt"] == emulator.truth()["items"][item["id"]]["resourcesCollectedAt"]


def test_a_debug_log_level_still_keeps_the_aws_sdk_s_wire_logs_and_the_identity_out(
    emulator: PluggyEmulator, feed: Feed, invoke: Any, caplog: pytest.LogCaptureFixture
) -> None:
    item = emulator.create_item(transactions_per_account=1)
    caplog.set_level(logging.DEBUG)  # what the stack's LogLevel DEBUG does to the root logger on Lambda
    assert invoke(batch(*feed.take())) == {"batchItemFailures": []}
    identity = emulator.truth()["identities"][item["id"]]
    assert any(r.name == "pluggy-pipeline" and r.levelno == logging.INFO for r in caplog.records)
    assert not [r.name for r in caplog.records if r.name.startswith(("botocore", "boto3")) and r.levelno < 30]
    logged = "".join(repr(vars(record)) for record in caplog.records)
    assert identity["fullName"] not in logged and identity["document"] not in logged
