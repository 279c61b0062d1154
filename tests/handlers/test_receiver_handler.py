"""ReceiverFunction's lambda_handler on every events/receiver file, against moto built from template.yaml."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import pytest
from pluggy_pipeline_local.devsecrets import PLUGGY_SOURCE_IP
from pluggy_pipeline_local.events_corpus import proxy_event, scenarios

from tests.conftest import REPO_ROOT, Stack, event_names, load_event

EXPECTED = {s.name: s.expected_status for s in scenarios()}


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("receiver_app", REPO_ROOT / "functions/receiver/app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


APP = _load_app()


@pytest.fixture
def invoke(receiver_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, lambda_context: Any) -> Any:
    monkeypatch.setenv("ALLOWED_SOURCE_CIDRS", f"{PLUGGY_SOURCE_IP}/32")

    def _invoke(event: dict[str, Any]) -> dict[str, Any]:
        return APP.lambda_handler(event, lambda_context)  # type: ignore[no-any-return]

    return _invoke


def test_corpus_on_disk_matches_generator() -> None:
    names = event_names("receiver")
    assert names == sorted(EXPECTED)
    for scenario in scenarios():
        assert load_event(f"receiver/{scenario.name}") == json.loads(json.dumps(proxy_event(scenario)))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_event_file_gets_its_answer(name: str, invoke: Any, stack: Stack) -> None:
    event = load_event(f"receiver/{name}")
    response = invoke(event)
    assert response["statusCode"] == EXPECTED[name], response
    body = json.loads(response["body"])
    messages = stack.receive_all()
    if EXPECTED[name] == 202:
        assert body["status"] == "accepted"
        assert len(messages) == 1
        message = messages[0]
        assert message["Body"] == event["body"]  # byte-for-byte Pluggy's payload
        attributes = message["MessageAttributes"]
        assert attributes["eventId"]["StringValue"] == body["eventId"]
        assert attributes["eventType"]["StringValue"] == json.loads(event["body"])["event"]
        record = stack.event_record(body["eventId"])
        assert record is not None and record["status"]["S"] == "RECEIVED"
        assert record["payload"]["S"] == event["body"]
        assert int(record["expiresAt"]["N"]) > int(record["receivedAtEpoch"]["N"])
    else:
        assert messages == []
        assert stack.event_count() == 0
        assert body["error"]
