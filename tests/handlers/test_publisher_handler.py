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

ITEM = "5e1b6d2c-1f0a-4e8b-9c8a-2d9e0f1a2b3c"  # the files' item
CONSENT = "c0a1b2c3-d4e5-4f67-8a9b-0c1d2e3f4a5b"  # consent-revoked's consent
# What each events/publisher file must put on the bus, in order: (detail-type, a field of the detail, its value).
EXPECTED: dict[str, list[tuple[str, str, Any]]] = {
    "item-created": [("Item Status Changed", "needsUserAction", False)],
    "item-authorization-pending": [("Item Status Changed", "pending", True)],
    "item-deleted": [("Item Deleted", "clientUserId", "user-42")],
    "transactions-changed": [("Transactions Changed", "removed", ["0b6c0004-aaaa-4bbb-8ccc-000000000000"])],
    "payment-completed": [("Payment Status Changed", "status", "PAYMENT_COMPLETED")],
    "connector-unstable": [("Connector Status Changed", "previousStatus", "ONLINE")],
    "resync-without-changes": [],
    "products-changed": [("Products Changed", "identity", "modified")],
    # A revoked consent is a consent whose fields changed, too: Consent Changed, then Products Changed.
    "consent-revoked": [
        ("Consent Changed", "change", "revoked"),
        ("Products Changed", "consents", {"added": [], "modified": [CONSENT], "removed": []}),
    ],
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
    assert [e["detail-type"] for e in events] == [t for t, _, _ in EXPECTED[name]]
    for event, (_, field, value) in zip(events, EXPECTED[name], strict=True):
        assert event["detail"].get(field) == value, (field, event["detail"])
    for event in events:
        assert event["source"] == "pluggy-pipeline"
        jsonschema.validate(event["detail"], schema_for(event["detail-type"]))


def test_products_changed_names_each_product_s_ids_and_never_the_identity_s_fields(
    bus: Bus, lambda_context: Any
) -> None:
    """products-changed: an investment added, a card's bill modified (paid), the identity modified (a new phone)."""
    event = load_event("publisher/products-changed")
    assert APP.lambda_handler(event, lambda_context) == {"batchItemFailures": []}
    (put,) = bus.received()
    detail = dict(put["detail"])
    assert len(detail.pop("eventId")) == 32
    assert detail == {
        "schemaVersion": "1",
        "itemId": ITEM,
        "investments": {"added": ["9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"], "modified": [], "removed": []},
        "bills": {
            "acc-card-4d5e6f": {"added": [], "modified": ["b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e"], "removed": []}
        },
        "identity": "modified",
        "changedAt": "2026-11-30T08:00:00Z",
    }
    # The identity is personal data: what happened to it is told, none of its values (old or new) is.
    identity = event["Records"][2]["dynamodb"]
    personal = [
        v["S"]
        for image in (identity["OldImage"], identity["NewImage"])
        for k, v in image["data"]["M"].items()
        if k in ("fullName", "document", "taxNumber", "birthDate")
    ]
    phones = [
        image["data"]["M"]["phoneNumbers"]["L"][0]["M"]["value"]["S"]
        for image in (identity["OldImage"], identity["NewImage"])
    ]
    assert len(personal) == 8 and len(set(phones)) == 2
    assert not [value for value in personal + phones if value in json.dumps(put, ensure_ascii=False)]


def test_a_bus_that_refuses_puts_hands_the_batch_back(bus: Bus, lambda_context: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("CHANGE_EVENT_BUS_NAME", "no-such-bus")
    monkeypatch.setenv("PUBLISHER_PUT_ATTEMPTS", "1")
    get_publisher.cache_clear()
    event = load_event("publisher/transactions-changed")
    answer = APP.lambda_handler(event, lambda_context)
    first = event["Records"][0]["dynamodb"]["SequenceNumber"]
    assert answer == {"batchItemFailures": [{"itemIdentifier": first}]}
    assert bus.received() == []
