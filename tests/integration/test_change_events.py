"""Change events end to end: the processor writes RecordsTable (moto server), its stream feeds the publisher through
a local copy of Lambda's stream event source mapping, and the events land on the stack's EventBridge bus, read
back through a rule into an SQS queue.

The no-loss proof: a publisher process is killed with SIGKILL after it has put events and before the mapping's
checkpoint moved. A new one resumes from the checkpoint; every change the table went through is on the bus
(some twice, with the same eventId), none missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
from pluggy_emulator import PluggyEmulator
from pluggy_pipeline.config import PublisherSettings
from pluggy_pipeline.event_queue import EventQueue
from pluggy_pipeline.event_store import ProcessingLog
from pluggy_pipeline.pluggy_client import PluggyClient
from pluggy_pipeline.processor import Processor, QueueMessage
from pluggy_pipeline.publisher import Publisher
from pluggy_pipeline.receiver import parse_delivery
from pluggy_pipeline.records import RecordStore
from pluggy_pipeline_cli.commands.watch import subscription
from pluggy_pipeline_local.moto_server import LocalAws, moto_server
from pluggy_pipeline_local.stream_poller import StreamPoller

from tests.conftest import REPO_ROOT
from tests.unit.test_event_schemas import schema_for

pytestmark = pytest.mark.slow

CLIENT_ID, CLIENT_SECRET = "events-client", "events-secret"

# The killed publisher: real Publisher and StreamPoller, PutEvents slowed so the kill lands mid-batch.
KILLED_PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import boto3
    from pluggy_pipeline.config import PublisherSettings
    from pluggy_pipeline.publisher import Publisher
    from pluggy_pipeline_local.stream_poller import StreamPoller

    stream_arn, bus, checkpoint = sys.argv[1:4]
    events = boto3.client("events")

    class SlowEvents:
        def put_events(self, **kwargs):
            answer = events.put_events(**kwargs)
            print("put", len(kwargs["Entries"]), flush=True)
            time.sleep(30)  # killed here: events are on the bus, the checkpoint has not moved
            return answer

    publisher = Publisher(SlowEvents, PublisherSettings(bus))
    poller = StreamPoller(
        boto3.client("dynamodbstreams"), stream_arn, lambda e: publisher.publish(e["Records"]).response(),
        checkpoint_file=Path(checkpoint),
    )
    poller.drain()
    print("drained", flush=True)
    """
)


class Bench:
    def __init__(self, local: LocalAws) -> None:
        self.local = local
        session = boto3.session.Session(region_name="us-east-1", **_credentials())
        self.dynamodb = session.client("dynamodb", endpoint_url=local.endpoint)
        self.sqs = session.client("sqs", endpoint_url=local.endpoint)
        self.events = session.client("events", endpoint_url=local.endpoint)
        self.streams = session.client("dynamodbstreams", endpoint_url=local.endpoint)
        resources = local.resources
        self.bus = resources.buses["ChangeEventBus"]
        self.stream_arn = resources.streams["RecordsTable"]
        self.store = RecordStore(lambda: self.dynamodb, resources.tables["RecordsTable"], sleep=lambda _s: None)
        self.tap_url = ""  # the subscription's queue, set by the fixture
        self.emulator = PluggyEmulator(CLIENT_ID, CLIENT_SECRET, seed=11)
        self.emulator.start()
        self.processor = Processor(
            PluggyClient(self.emulator.base_url, lambda: (CLIENT_ID, CLIENT_SECRET), sleep=lambda _s: None),
            self.store,
            ProcessingLog(lambda: self.dynamodb, resources.tables["EventsTable"]),
            EventQueue(lambda: self.sqs, resources.queue_urls["EventQueue"]),
            EventQueue(lambda: self.sqs, resources.queue_urls["EventDeadLetterQueue"]),
        )
        self.seen = 0
        self.received: list[dict[str, Any]] = []

    def deliver_webhooks(self) -> int:
        emitted = self.emulator.events()
        new, self.seen = emitted[self.seen :], len(emitted)
        for number, event in enumerate(new):
            body = json.dumps(event["payload"], separators=(",", ":"))
            delivery = parse_delivery(body.encode())
            attributes = {"eventId": delivery.event_id, "eventType": delivery.event_type, "groupId": delivery.group_id}
            self.processor.process(QueueMessage(f"m-{self.seen}-{number}", body, attributes))
        return len(new)

    def publisher_handler(self) -> Any:
        publisher = Publisher(lambda: self.events, PublisherSettings(self.bus), sleep=lambda _s: None)
        return lambda event: publisher.publish(event["Records"]).response()

    def receive(self) -> list[dict[str, Any]]:
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.tap_url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return self.received
            for message in batch:
                self.received.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.tap_url, ReceiptHandle=message["ReceiptHandle"])

    def stored_transactions(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for account in self.store.accounts_of_item(self.item_id):
            for key in self.store.transaction_keys_of_account(str(account["accountId"])):
                found[str(account["accountId"])].add(key["sk"].removeprefix("TX#"))
        return dict(found)

    item_id: str = ""


def _credentials() -> dict[str, str]:
    return {"aws_access_key_id": "local", "aws_secret_access_key": "local", "aws_session_token": "local"}


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    with moto_server() as local:
        bench = Bench(local)
        try:
            with subscription(bench.sqs, bench.events, bench.bus, "change-events-tap") as bench.tap_url:
                yield bench
        finally:
            bench.emulator.stop()


def _transactions(events: list[dict[str, Any]]) -> dict[str, dict[str, set[str]]]:
    """Per account, the ids each operation named across Transactions Changed events."""
    by_account: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for event in events:
        if event["detail-type"] == "Transactions Changed":
            for op in ("added", "modified", "removed"):
                by_account[event["detail"]["accountId"]][op].update(event["detail"][op])
    return by_account


def test_a_publisher_killed_between_put_and_checkpoint_loses_nothing(bench: Bench, tmp_path: Path) -> None:
    item = bench.emulator.create_item("user-7")
    bench.item_id = str(item["id"])
    assert bench.deliver_webhooks() >= 2
    stored = bench.stored_transactions()
    assert sum(len(ids) for ids in stored.values()) > 100, "a first sync big enough for several stream batches"

    checkpoint = tmp_path / "checkpoint.json"
    env = {**os.environ, **bench.local.env, "PYTHONPATH": str(REPO_ROOT)}
    env = {k: v for k, v in env.items() if not k.lower().endswith("_proxy")}
    command = [sys.executable, "-c", KILLED_PUBLISHER, bench.stream_arn, bench.bus, str(checkpoint)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("put"), line
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    before_resume = list(bench.receive())
    assert before_resume, "the killed publisher had put events before it died"
    assert not checkpoint.exists(), "killed before the checkpoint of its first batch"

    poller = StreamPoller(bench.streams, bench.stream_arn, bench.publisher_handler(), checkpoint_file=checkpoint)
    assert poller.drain() > 0 and poller.failures == 0
    events = bench.receive()

    ids = Counter(e["detail"]["eventId"] for e in events)
    repeated = [i for i, n in ids.items() if n > 1]
    assert repeated and {e["detail"]["eventId"] for e in before_resume} <= set(repeated)
    by_account = _transactions(events)
    assert {a: ops["added"] for a, ops in by_account.items()} == stored
    statuses = [e["detail"] for e in events if e["detail-type"] == "Item Status Changed"]
    assert statuses and statuses[-1]["current"]["status"] == "UPDATED" and statuses[-1]["clientUserId"] == "user-7"
    for event in events:
        assert event["source"] == "pluggy-pipeline" and event["detail"]["schemaVersion"] == "1"
        jsonschema.validate(event["detail"], schema_for(event["detail-type"]))


def test_a_sync_with_changes_and_deletions_emits_exactly_them(bench: Bench) -> None:
    if not bench.item_id:  # run alone: the kill test's item, without the kill
        bench.item_id = str(bench.emulator.create_item("user-7")["id"])
        bench.deliver_webhooks()
    poller = StreamPoller(bench.streams, bench.stream_arn, bench.publisher_handler())
    poller.drain()  # from the start: the first sync's records again, now acknowledged here
    before = len(bench.receive())
    before_rows = bench.stored_transactions()
    summary = bench.emulator.sync_item(bench.item_id, add=4, change=3, delete=2)
    bench.deliver_webhooks()
    after_rows = bench.stored_transactions()
    poller.drain()
    events = bench.receive()[before:]
    by_account = _transactions(events)
    added = {a: ops["added"] for a, ops in by_account.items() if ops["added"]}
    removed = {a: ops["removed"] for a, ops in by_account.items() if ops["removed"]}
    expected_added = {a: after_rows[a] - before_rows.get(a, set()) for a in after_rows}
    expected_removed = {a: before_rows[a] - after_rows.get(a, set()) for a in before_rows}
    assert added == {a: ids for a, ids in expected_added.items() if ids}
    assert removed == {a: ids for a, ids in expected_removed.items() if ids}
    modified = set().union(*(ops["modified"] for ops in by_account.values()))
    assert modified == set().union(*map(set, summary["updated"].values())) and len(modified) == 3
    assert sum(len(ids) for ids in removed.values()) == 2 and sum(len(ids) for ids in added.values()) == 4


def _stored_products(bench: Bench) -> dict[tuple[str, str | None], dict[str, str]]:
    """(Products Changed field, group) -> {id: digest} of the item's product records in RecordsTable."""
    pk = f"ITEM#{bench.item_id}"
    found: dict[tuple[str, str | None], dict[str, str]] = defaultdict(dict)
    for field, prefix in (("investments", "INVESTMENT#"), ("loans", "LOAN#"), ("consents", "CONSENT#")):
        for sk, digest in bench.store.digests(pk, prefix).items():
            found[(field, None)][sk.removeprefix(prefix)] = digest
    for sk, digest in bench.store.digests(pk, "IDENTITY").items():
        found[("identity", None)][sk] = digest
    for investment_id in found[("investments", None)]:
        for sk, digest in bench.store.digests(f"INVESTMENT#{investment_id}", "ITX#").items():
            found[("investmentTransactions", investment_id)][sk.removeprefix("ITX#")] = digest
    for account in bench.store.accounts_of_item(bench.item_id):
        account_id = str(account["accountId"])
        for sk, digest in bench.store.digests(f"BILLS#{account_id}", "BILL#").items():
            found[("bills", account_id)][sk.rsplit("#", 1)[-1]] = digest
    return {key: ids for key, ids in found.items() if ids}


def _product_ops(events: list[dict[str, Any]]) -> dict[tuple[str, str | None, str], set[str]]:
    """(field, group, operation) -> the ids Products Changed events named; identity as its one operation."""
    named: dict[tuple[str, str | None, str], set[str]] = defaultdict(set)
    for event in events:
        if event["detail-type"] != "Products Changed":
            continue
        for field, value in event["detail"].items():
            if field == "identity":
                named[("identity", None, value)].add("IDENTITY")
            elif field in ("investments", "loans", "consents"):
                for op in ("added", "modified", "removed"):
                    named[(field, None, op)].update(value[op])
            elif field in ("bills", "investmentTransactions"):
                for group, ops in value.items():
                    for op in ("added", "modified", "removed"):
                        named[(field, group, op)].update(ops[op])
    return {key: ids for key, ids in named.items() if ids}


def _expected_ops(
    before: dict[tuple[str, str | None], dict[str, str]], after: dict[tuple[str, str | None], dict[str, str]]
) -> dict[tuple[str, str | None, str], set[str]]:
    expected: dict[tuple[str, str | None, str], set[str]] = {}
    for key in before.keys() | after.keys():
        old, new = before.get(key, {}), after.get(key, {})
        ops = {
            "added": set(new) - set(old),
            "removed": set(old) - set(new),
            "modified": {i for i in set(old) & set(new) if old[i] != new[i]},
        }
        expected.update({(*key, op): ids for op, ids in ops.items() if ids})
    return expected


def test_product_events_name_exactly_the_products_the_mirror_changed(bench: Bench) -> None:
    if not bench.item_id:  # run alone: the kill test's item, without the kill
        bench.item_id = str(bench.emulator.create_item("user-7")["id"])
        bench.deliver_webhooks()
    poller = StreamPoller(bench.streams, bench.stream_arn, bench.publisher_handler())
    poller.drain()
    everything = bench.receive()
    first_sync = _stored_products(bench)
    assert {field for field, _ in first_sync} >= {"investments", "investmentTransactions", "loans", "identity"}
    assert _product_ops([e for e in everything if e["detail"].get("itemId") == bench.item_id]).keys() >= {
        (field, group, "added") for field, group in first_sync
    }
    consents = [e["detail"] for e in everything if e["detail-type"] == "Consent Changed"]
    assert any(c["itemId"] == bench.item_id and c["change"] == "created" and c["products"] for c in consents)

    before = len(everything)
    bench.emulator.sync_item(bench.item_id, products_change=True, remove_investment=True)
    bench.deliver_webhooks()
    poller.drain()
    events = bench.receive()[before:]
    expected = _expected_ops(first_sync, _stored_products(bench))
    assert ("investments", None, "removed") in expected and ("identity", None, "modified") in expected
    assert _product_ops(events) == expected
    assert not [e for e in events if e["detail-type"] == "Consent Changed"]  # the consent did not change
    for event in events:
        jsonschema.validate(event["detail"], schema_for(event["detail-type"]))
