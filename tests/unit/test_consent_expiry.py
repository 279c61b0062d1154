"""Consents expiring soon: GSI byConsentExpiry, the reconciliation's ConsentsExpiringSoon metric and its alarm.

The sweep's count goes through RecordsTable on moto (created from template.yaml, so the index is the deployed
one) and through ProcessorFunction's handler with its template environment, its metric read from the EMF line.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from pluggy_pipeline import processor as processor_module
from pluggy_pipeline.config import ProcessorSettings
from pluggy_pipeline.errors import ConfigurationError
from pluggy_pipeline.event_store import iso_now
from pluggy_pipeline.products import consent_record
from pluggy_pipeline.records import RecordStore
from pluggy_pipeline_local.template import function_environment

from tests.conftest import REPO_ROOT, TEMPLATE, Stack, load_event
from tests.unit.test_processor import T0, Harness, records_harness

DAY = 86_400.0
REQUIRED = {
    "EVENTS_TABLE_NAME": "events",
    "RECORDS_TABLE_NAME": "records",
    "EVENT_QUEUE_URL": "https://q/events",
    "EVENT_DLQ_URL": "https://q/dlq",
    "PLUGGY_CLIENT_ID": "id",
    "PLUGGY_CLIENT_SECRET": "secret",
}


def consent(item_id: str, expires_in_days: float, now: float, *, revoked: bool = False) -> dict[str, Any]:
    """Pluggy's consent object, expiring `expires_in_days` after `now`."""
    return {
        "id": f"consent-{item_id}",
        "itemId": item_id,
        "products": ["ACCOUNTS", "IDENTITY"],
        "createdAt": iso_now(now - 300 * DAY),
        "expiresAt": iso_now(now + expires_in_days * DAY),
        "revokedAt": iso_now(now - DAY) if revoked else None,
    }


def seed(store: RecordStore, now: float) -> None:
    """In 3 days, in 30 days, a revoked one due in 2 days, one already past: only the first is expiring soon."""
    rows = [
        consent("soon", 3, now),
        consent("later", 30, now),
        consent("revoked", 2, now, revoked=True),
        consent("expired", -1, now),
    ]
    store.batch_put(consent_record(str(row["itemId"]), row) for row in rows)


class Sink:
    def __init__(self) -> None:
        self.values: list[tuple[str, float]] = []

    def add_metric(self, *, name: str, unit: Any, value: float) -> None:
        self.values.append((name, value))


@pytest.fixture
def h() -> Iterator[Harness]:
    with records_harness() as harness:
        yield harness


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Sink:
    fake = Sink()
    monkeypatch.setattr(processor_module, "metrics", fake)
    return fake


# --- the sweep -----------------------------------------------------------------------------------


def test_reconcile_counts_active_consents_expiring_within_the_window(h: Harness, sink: Sink) -> None:
    seed(h.records, T0)
    assert h.run("pipeline/reconcile") == {}  # the event log's counts stay the syncs queued
    assert ("ConsentsExpiringSoon", 1) in sink.values
    assert processor_module.consents_expiring(h.records, iso_now(T0), iso_now(T0 + 7 * DAY)) == [
        (iso_now(T0 + 3 * DAY), "soon")
    ]


def test_the_window_comes_from_settings(h: Harness, sink: Sink) -> None:
    seed(h.records, T0)
    h.processor = h.build(consent_expiry_days=31)
    h.run("pipeline/reconcile")
    assert ("ConsentsExpiringSoon", 2) in sink.values
    h.processor = h.build(consent_expiry_days=2)
    h.run("pipeline/reconcile")
    assert sink.values[-1] == ("ConsentsExpiringSoon", 0)


def test_the_count_is_emitted_when_nothing_expires(h: Harness, sink: Sink) -> None:
    """A sweep with nothing to report still sends 0, so the alarm returns to OK on data."""
    h.run("pipeline/reconcile")
    assert [v for v in sink.values if v[0] == "ConsentsExpiringSoon"] == [("ConsentsExpiringSoon", 0)]


def test_a_renewed_or_revoked_consent_leaves_the_index(h: Harness, sink: Sink) -> None:
    seed(h.records, T0)
    renewed = consent("soon", 365, T0)
    h.records.batch_put([consent_record("soon", renewed)])  # same consent id: the record is replaced
    h.run("pipeline/reconcile")
    assert sink.values[-1] == ("ConsentsExpiringSoon", 0)


# --- settings and template -----------------------------------------------------------------------


def test_settings_default_and_bounds() -> None:
    assert ProcessorSettings.from_env(REQUIRED).consent_expiry_alarm_days == 7
    assert ProcessorSettings.from_env({**REQUIRED, "CONSENT_EXPIRY_ALARM_DAYS": "14"}).consent_expiry_alarm_days == 14
    for bad in ("0", "-1", "seven"):
        with pytest.raises(ConfigurationError, match="CONSENT_EXPIRY_ALARM_DAYS"):
            ProcessorSettings.from_env({**REQUIRED, "CONSENT_EXPIRY_ALARM_DAYS": bad})


def test_template_declares_the_index_parameter_and_alarm() -> None:
    resources = TEMPLATE["Resources"]
    table = resources["RecordsTable"]["Properties"]
    (index,) = [i for i in table["GlobalSecondaryIndexes"] if i["IndexName"] == "byConsentExpiry"]
    assert index["KeySchema"] == [
        {"AttributeName": "consentPk", "KeyType": "HASH"},
        {"AttributeName": "consentSk", "KeyType": "RANGE"},
    ]
    defined = {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]}
    assert {("consentPk", "S"), ("consentSk", "S")} <= defined
    parameter = TEMPLATE["Parameters"]["ConsentExpiryAlarmDays"]
    assert (parameter["Default"], parameter["MinValue"]) == (7, 1)
    variables = resources["ProcessorFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["CONSENT_EXPIRY_ALARM_DAYS"] == {"Ref": "ConsentExpiryAlarmDays"}
    alarm = resources["ConsentsExpiringSoonAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("PluggyPipeline", "ConsentsExpiringSoon")
    assert alarm["Dimensions"] == resources["StaleItemsAlarm"]["Properties"]["Dimensions"]
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": "AlarmTopic"}]
    assert 'Runbook "Consents expiring soon"' in alarm["AlarmDescription"]
    runbook = (REPO_ROOT / "docs/operations.md").read_text(encoding="utf-8")
    assert "### Consents expiring soon (`ConsentsExpiringSoonAlarm`" in runbook


# --- through the handler -------------------------------------------------------------------------


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("processor_app_consents", REPO_ROOT / "functions/processor/app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _emf_values(out: str, name: str) -> list[Any]:
    values = []
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            if name in document:
                values.append(document[name])
    return values


def test_the_handler_emits_the_count_on_the_reconcile_schedule_message(
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    lambda_context: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = function_environment(TEMPLATE, "ProcessorFunction", stack.resources)
    env.update(PLUGGY_CREDENTIALS_SECRET_ARN="", PLUGGY_CLIENT_ID="id", PLUGGY_CLIENT_SECRET="secret")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert env["CONSENT_EXPIRY_ALARM_DAYS"] == "7"  # the template's default reaches the function
    processor_module.get_processor.cache_clear()
    seed(RecordStore(lambda: stack.dynamodb, stack.resources.tables["RecordsTable"]), time.time())
    app = _load_app()
    try:
        assert app.lambda_handler(load_event("processor/reconcile"), lambda_context) == {"batchItemFailures": []}
    finally:
        processor_module.get_processor.cache_clear()
    out = capsys.readouterr().out
    assert _emf_values(out, "ConsentsExpiringSoon") == [[1.0]]  # one sweep, one value
    [line] = [r for r in caplog.records if r.getMessage() == "consents expiring soon"]
    fields = vars(line)  # logging's `extra` become the record's attributes
    assert (fields["consents"], fields["itemIds"]) == (1, ["soon"])
