"""docs/events/*.schema.json describe exactly what the publisher emits: one schema per detail-type, every event
of a batch covering all of them valid against its schema, and every field the code emits declared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pluggy_pipeline.change_events import DETAIL_TYPES, change_events
from pluggy_pipeline.products import identity_record, loan_record

from tests.unit.test_change_events import item, stream_record, tx
from tests.unit.test_product_events import IDENTITY, bill, consent, investment, itx

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "events"


def schema_for(detail_type: str) -> dict[str, Any]:
    path = SCHEMAS / f"{detail_type.lower().replace(' ', '-')}.schema.json"
    return json.loads(path.read_text(encoding="utf-8"))


def every_kind_of_event() -> list[Any]:
    live = item("UPDATED", "SUCCESS")
    pending = item("OUTDATED", "USER_AUTHORIZATION_PENDING", "USER_AUTHORIZATION_PENDING")
    tombstone = {**live, "status": "DELETED", "deleted": True, "deletedAt": "2026-11-29T12:00:00.000Z"}
    payment = {"pk": "PAYMENT_REQUEST#r1", "sk": "STATUS", "kind": "payment_request", "paymentId": "r1"}
    connector = {"pk": "CONNECTOR#0", "sk": "STATUS", "kind": "connector", "connectorId": "0"}
    return change_events(
        [
            stream_record("INSERT", None, live),
            stream_record("MODIFY", live, pending),
            stream_record("MODIFY", pending, tombstone),
            stream_record("INSERT", None, tx("t1")),
            stream_record("REMOVE", tx("t2"), None),
            stream_record("INSERT", None, {**payment, "status": "WEBHOOK:COMPLETED", "verified": False}),
            stream_record("INSERT", None, {**connector, "status": "ONLINE"}),
            # every product kind, so Products Changed shows every field it can carry
            stream_record("INSERT", None, investment("inv-1")),
            stream_record("REMOVE", itx("inv-1", "r1"), None),
            stream_record("MODIFY", bill("card-1", "b1"), bill("card-1", "b1", total="100")),
            stream_record("INSERT", None, loan_record("item-1", {"id": "l1"})),
            stream_record("INSERT", None, identity_record("item-1", IDENTITY)),
            stream_record("INSERT", None, consent()),
            stream_record("MODIFY", consent(), consent(revoked="2027-02-01T12:00:00.000Z")),
        ]
    )


def test_there_is_one_schema_per_detail_type_and_no_other() -> None:
    files = {p.name for p in SCHEMAS.glob("*.schema.json")}
    assert files == {f"{t.lower().replace(' ', '-')}.schema.json" for t in DETAIL_TYPES}
    for detail_type in DETAIL_TYPES:
        schema = schema_for(detail_type)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["title"] == detail_type and schema["additionalProperties"] is False


def test_every_emitted_event_matches_its_schema_exactly() -> None:
    events = every_kind_of_event()
    assert {e.detail_type for e in events} == set(DETAIL_TYPES)
    for event in events:
        schema = schema_for(event.detail_type)
        detail = json.loads(event.detail_json())
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(detail)
        # Every field declared is emitted; only Products Changed has optional ones (the kinds that changed).
        assert set(detail) == set(schema["properties"]), event.detail_type
        if event.detail_type != "Products Changed":
            assert set(detail) == set(schema["required"]), event.detail_type


@pytest.mark.parametrize("broken", [{"needsUserAction": "yes"}, {"surprise": 1}, {"eventId": "not-hex"}])
def test_the_schemas_refuse_what_the_code_must_not_emit(broken: dict[str, Any]) -> None:
    event = next(e for e in every_kind_of_event() if e.detail_type == "Item Status Changed")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**json.loads(event.detail_json()), **broken}, schema_for("Item Status Changed"))


@pytest.mark.parametrize(
    ("detail_type", "broken"),
    [
        ("Products Changed", {"identity": {"fullName": "x"}}),  # identity is what happened, never its fields
        ("Products Changed", {"loans": {"added": ["l1"]}}),  # every operation is listed
        ("Products Changed", {"bills": {"card-1": {"added": [1], "modified": [], "removed": []}}}),
        ("Consent Changed", {"change": "expired"}),
        ("Consent Changed", {"products": "ACCOUNTS"}),
    ],
)
def test_the_product_schemas_refuse_what_the_code_must_not_emit(detail_type: str, broken: dict[str, Any]) -> None:
    event = next(e for e in every_kind_of_event() if e.detail_type == detail_type)
    schema = schema_for(detail_type)
    jsonschema.validate(json.loads(event.detail_json()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**json.loads(event.detail_json()), **broken}, schema)


def test_a_products_event_without_any_product_is_refused() -> None:
    event = next(e for e in every_kind_of_event() if e.detail_type == "Products Changed")
    bare = {k: v for k, v in event.detail.items() if k in ("eventId", "schemaVersion", "itemId", "changedAt")}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bare, schema_for("Products Changed"))
