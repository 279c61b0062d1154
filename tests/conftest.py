"""Shared fixtures: AWS (moto) built from template.yaml, the events/ corpus, a fake Lambda context."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pluggy_pipeline import aws
from pluggy_pipeline.receiver import get_receiver
from pluggy_pipeline_local.devsecrets import LOCAL_PLUGGY_CLIENT_ID, LOCAL_SIGNING_KEY, LOCAL_WEBHOOK_SECRET
from pluggy_pipeline_local.template import (
    LocalResources,
    create_resources,
    function_environment,
    load_template,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = REPO_ROOT / "events"
TEMPLATE = load_template()
REGION = "us-east-1"


def load_event(name: str) -> dict[str, Any]:
    """An event from events/, e.g. load_event("receiver/item-created")."""
    return json.loads((EVENTS_DIR / f"{name}.json").read_text())


def event_names(function: str) -> list[str]:
    return sorted(p.stem for p in (EVENTS_DIR / function).glob("*.json"))


@dataclass
class FakeLambdaContext:
    function_name: str = "test-function"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 90_000  # the processor's timeout (template.yaml): it stops starting groups near the end


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


def _reset_caches() -> None:
    aws.reset_clients()
    get_receiver.cache_clear()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test may reach real AWS: fake credentials, a fixed region, no endpoint override from outside."""
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    _reset_caches()
    yield
    _reset_caches()


@dataclass
class Stack:
    """Moto-backed resources created from template.yaml, and clients to inspect them."""

    resources: LocalResources
    dynamodb: Any
    sqs: Any
    secretsmanager: Any

    @property
    def events_table(self) -> str:
        return self.resources.tables["EventsTable"]

    @property
    def queue_url(self) -> str:
        return self.resources.queue_urls["EventQueue"]

    @property
    def dlq_url(self) -> str:
        return self.resources.queue_urls["EventDeadLetterQueue"]

    def receive_all(self, queue_url: str | None = None) -> list[dict[str, Any]]:
        """Drain a queue (messages become invisible, so each is returned once)."""
        messages: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=queue_url or self.queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not batch:
                return messages
            messages.extend(batch)

    def event_record(self, event_id: str) -> dict[str, Any] | None:
        item = self.dynamodb.get_item(TableName=self.events_table, Key={"eventId": {"S": event_id}})
        return item.get("Item")

    def event_count(self) -> int:
        return int(self.dynamodb.scan(TableName=self.events_table, Select="COUNT")["Count"])


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws():
        clients = {name: boto3.client(name, region_name=REGION) for name in ("dynamodb", "sqs", "secretsmanager")}
        secret = json.dumps({"current": LOCAL_WEBHOOK_SECRET, "signingKey": LOCAL_SIGNING_KEY})
        resources = create_resources(TEMPLATE, **clients, secret_values={"WebhookSecret": secret})
        yield Stack(resources, clients["dynamodb"], clients["sqs"], clients["secretsmanager"])


@pytest.fixture
def receiver_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """ReceiverFunction's environment exactly as the template defines it, with signatures required."""
    env = function_environment(
        TEMPLATE,
        "ReceiverFunction",
        stack.resources,
        parameters={"PluggyClientId": LOCAL_PLUGGY_CLIENT_ID, "RequireSignature": "true"},
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _reset_caches()
    return env
