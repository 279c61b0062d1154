"""PublisherFunction's lambda_handler on every events/publisher file (DynamoDB stream events as Lambda delivers
them), against moto's EventBridge built from template.yaml, read back through a rule into an SQS queue."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import jsonschema
import pytest
from moto import mock_aws
from pluggy_pipeline import aws
from pluggy_pipeline.publisher import get_publisher
from pluggy_pipeline_cli.commands.watch import subscription
from pluggy_pipeline_local.template import create_resources, function_environment

from tests.conftest import REGION, REPO_ROOT, TEMPLATE, event_names, load_event
from tests.unit.test_event_schemas import schema_for

# What each events/publisher file must put on the bus: (detail-type, a field of the detail, its value).
EXPECTED: dict[str, list[tuple[str, str, Any]]] = {
    "item-created": [("Item Status Changed", "needsUserAction", False)],
    "item-authorization-pending": [("Item Status Changed", "pending", True)],
    "item-deleted": [("Item Deleted", "clientUserId", "user-42")],
    "transactions-changed": [("Transactions Changed", "removed", ["0b6c0004-aaaa-4bbb-8ccc-000000000000"])],
    "payment-completed": [("Payment Status Changed", "status", "PAYMENT_COMPLETED")],
    "connector-unstable": [("Connector Status Changed", "previousStatus", "ONLINE")],
    "resync-without-changes": [],
}


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("publisher_app", REPO_ROOT / "functions/publisher/app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


APP = _load_app()


class Bus:
    def __init__(self) -> None:
        clients = {n: boto3.client(n, region_name=REGION) for n in ("dynamodb", "sqs", "secretsmanager", "events")}
        self.resources = create_resources(TEMPLATE, **clients)
        self.sqs, self.events = clients["sqs"], clients["events"]
        self.name = self.resources.buses["ChangeEventBus"]
        self.tap = ""  # the subscription's queue, set by the fixture

    def received(self) -> list[dict[str, Any]]:
        found = []
        while batch := self.sqs.receive_message(QueueUrl=self.tap, MaxNumberOfMessages=10).get("Messages", []):
            for message in batch:
                found.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.tap, ReceiptHandle=message["ReceiptHandle"])
        return found


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[Bus]:
    with mock_aws():
        bus = Bus()
        with subscription(bus.sqs, bus.events, bus.name, "tap") as bus.tap:
            for key, value in function_environment(TEMPLATE, "PublisherFunction", bus.resources).items():
                monkeypatch.setenv(key, value)
            aws.reset_clients()
            get_publisher.cache_clear()
            yield bus
            get_publisher.cache_clear()


def test_every_event_file_is_covered() -> None:
    assert event_names("publisher") == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_event_file_puts_its_events(name: str, bus: Bus, lambda_context: Any) -> None:
    answer = APP.lambda_handler(load_event(f"publisher/{name}"), lambda_context)
    assert answer == {"batchItemFailures": []}
    events = bus.received()
    assert [(e["detail-type"], e["detail"][field]) for e in events for _, field, _ in EXPECTED[name][:1]] == [
        (t, v) for t, _, v in EXPECTED[name]
    ]
    for event in events:
        assert event["source"] == "pluggy-pipeline"
        jsonschema.validate(event["detail"], schema_for(event["detail-type"]))


def test_a_bus_that_refuses_puts_hands_the_batch_back(bus: Bus, lambda_context: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("CHANGE_EVENT_BUS_NAME", "no-such-bus")
    monkeypatch.setenv("PUBLISHER_PUT_ATTEMPTS", "1")
    get_publisher.cache_clear()
    event = load_event("publisher/transactions-changed")
    answer = APP.lambda_handler(event, lambda_context)
    first = event["Records"][0]["dynamodb"]["SequenceNumber"]
    assert answer == {"batchItemFailures": [{"itemIdentifier": first}]}
    assert bus.received() == []
