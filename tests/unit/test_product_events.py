"""Products Changed and Consent Changed, derived from RecordsTable stream records of the products' records
(products.py builds them exactly as the processor writes them)."""

from __future__ import annotations

import json
from typing import Any

from pluggy_pipeline.change_events import (
    CONSENT_CHANGED,
    MAX_DETAIL_BYTES,
    MAX_IDS_PER_EVENT,
    PRODUCTS_CHANGED,
    ChangeEvent,
    change_events,
)
from pluggy_pipeline.config import PublisherSettings
from pluggy_pipeline.products import (
    bill_record,
    consent_record,
    identity_record,
    investment_record,
    investment_transaction_record,
    loan_record,
)
from pluggy_pipeline.publisher import Publisher
from pluggy_pipeline_cli.commands.watch import summary

from tests.unit.test_change_events import FakeEvents, stream_record

ITEM = "item-1"


def investment(inv_id: str, balance: str = "100.5") -> dict[str, Any]:
    return investment_record(ITEM, {"id": inv_id, "type": "FIXED_INCOME", "balance": balance})


def itx(inv_id: str, row_id: str, amount: str = "10") -> dict[str, Any]:
    return investment_transaction_record(ITEM, inv_id, {"id": row_id, "date": "2026-11-01", "amount": amount})


def bill(account: str, bill_id: str, due: str = "2026-12-10T00:00:00.000Z", total: str = "99") -> dict[str, Any]:
    return bill_record(ITEM, account, {"id": bill_id, "dueDate": due, "totalAmount": total})


def consent(
    expires: str = "2027-11-29T03:00:00.000Z", revoked: str | None = None, granted: str = "a"
) -> dict[str, Any]:
    data = {
        "id": "consent-1",
        "itemId": ITEM,
        "products": ["ACCOUNTS", "INVESTMENTS"],
        "openFinancePermissionsGranted": [granted],
        "createdAt": "2026-11-29T10:00:00.000Z",
        "expiresAt": expires,
        "revokedAt": revoked,
    }
    return consent_record(ITEM, data)


IDENTITY = {
    "id": "identity-1",
    "fullName": "Maria Aparecida da Silva",
    "document": "123.456.789-09",
    "documentType": "CPF",
    "taxNumber": "12345678909",
    "birthDate": "1985-03-14T00:00:00.000Z",
    "emails": [{"value": "maria.silva@example.com", "type": "Personal"}],
    "phoneNumbers": [{"value": "+55 11 98765-4321", "type": "Personal"}],
    "addresses": [{"fullAddress": "Rua das Flores 123, Sao Paulo", "postalCode": "01234-567", "city": "Sao Paulo"}],
}


def products_of(events: list[ChangeEvent]) -> list[dict[str, Any]]:
    return [e.detail for e in events if e.detail_type == PRODUCTS_CHANGED]


def test_products_are_grouped_per_item_with_only_the_kinds_that_changed() -> None:
    inv, row, card_bill, loan = (
        investment("inv-1"),
        itx("inv-1", "r1"),
        bill("card-1", "b1"),
        loan_record(ITEM, {"id": "l1"}),
    )
    records = [
        stream_record("INSERT", None, inv),
        stream_record("MODIFY", inv, investment("inv-1", "101")),  # added then modified in one batch: still added
        stream_record("MODIFY", row, itx("inv-1", "r1", "11")),  # another digest: modified
        stream_record("MODIFY", row, dict(row)),  # the same digest rewritten: no change
        stream_record("REMOVE", itx("inv-2", "r9"), None),  # Pluggy no longer lists it: removed
        stream_record("INSERT", None, card_bill),
        stream_record("REMOVE", bill("card-2", "b7"), None),
        stream_record("MODIFY", loan, loan_record(ITEM, {"id": "l1", "installments": 3})),
        stream_record("INSERT", None, investment_record("item-2", {"id": "inv-9"})),
    ]
    events = change_events(records)
    assert [e.detail_type for e in events] == [PRODUCTS_CHANGED, PRODUCTS_CHANGED]
    first, second = products_of(events)
    assert first == {
        "eventId": first["eventId"],
        "schemaVersion": "1",
        "itemId": ITEM,
        "investments": {"added": ["inv-1"], "modified": [], "removed": []},
        "investmentTransactions": {
            "inv-1": {"added": [], "modified": ["r1"], "removed": []},
            "inv-2": {"added": [], "modified": [], "removed": ["r9"]},
        },
        "bills": {
            "card-1": {"added": ["b1"], "modified": [], "removed": []},
            "card-2": {"added": [], "modified": [], "removed": ["b7"]},
        },
        "loans": {"added": [], "modified": ["l1"], "removed": []},
        "changedAt": "2027-01-15T08:00:00.500000Z",
    }
    assert second["itemId"] == "item-2" and set(second) == {
        "eventId",
        "schemaVersion",
        "itemId",
        "investments",
        "changedAt",
    }


def test_a_rewrite_with_the_same_digest_emits_nothing() -> None:
    inv = investment("inv-1")
    assert change_events([stream_record("MODIFY", inv, {**inv, "syncedAt": "later"})]) == []


def test_a_bill_moved_to_another_due_date_is_modified_not_removed() -> None:
    # The bill's key has no due date (byDate orders by it): a moved date is one MODIFY of the same record.
    before, after = bill("card-1", "b1"), bill("card-1", "b1", due="2026-12-15T00:00:00.000Z")
    assert (before["pk"], before["sk"]) == (after["pk"], after["sk"]) and before["txDate"] != after["txDate"]
    events = change_events([stream_record("MODIFY", before, after)])
    assert products_of(events)[0]["bills"] == {"card-1": {"added": [], "modified": ["b1"], "removed": []}}


def _values(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [v for inner in value.values() for v in _values(inner)]
    if isinstance(value, list):
        return [v for inner in value for v in _values(inner)]
    return [str(value)] if value is not None else []


def test_an_identity_change_names_what_happened_never_a_personal_field() -> None:
    created = identity_record(ITEM, IDENTITY)
    moved = identity_record(ITEM, {**IDENTITY, "addresses": [{"fullAddress": "Av. Paulista 1000, Sao Paulo"}]})
    batches = [
        [stream_record("INSERT", None, created)],
        [stream_record("MODIFY", created, moved)],
        [stream_record("REMOVE", moved, None)],
    ]
    events = [e for batch in batches for e in change_events(batch)]
    assert [(e.detail_type, e.detail["identity"]) for e in events] == [
        (PRODUCTS_CHANGED, "added"),
        (PRODUCTS_CHANGED, "modified"),
        (PRODUCTS_CHANGED, "removed"),
    ]
    assert all(set(e.detail) == {"eventId", "schemaVersion", "itemId", "identity", "changedAt"} for e in events)
    values = set(_values(IDENTITY) + _values(moved["data"]))
    assert {"12345678909", "maria.silva@example.com", "Av. Paulista 1000, Sao Paulo"} <= values  # a real check
    serialized = " ".join(e.detail_json() for e in events)
    assert [v for v in values if v in serialized] == []


def test_the_consent_lifecycle_created_renewed_revoked_removed() -> None:
    created = consent()
    renewed = consent(expires="2028-11-29T03:00:00.000Z")
    regranted = consent(expires="2028-11-29T03:00:00.000Z", granted="b")  # neither expiry nor revocation
    revoked = consent(expires="2028-11-29T03:00:00.000Z", granted="b", revoked="2027-02-01T12:00:00.000Z")
    events = change_events(
        [
            stream_record("INSERT", None, created),
            stream_record("MODIFY", created, renewed),
            stream_record("MODIFY", renewed, regranted),
            stream_record("MODIFY", regranted, revoked),
            stream_record("REMOVE", revoked, None),
        ]
    )
    consents = [e.detail for e in events if e.detail_type == CONSENT_CHANGED]
    assert [(c["change"], c["expiresAt"], c["revokedAt"]) for c in consents] == [
        ("created", "2027-11-29T03:00:00.000Z", None),
        ("renewed", "2028-11-29T03:00:00.000Z", None),
        ("revoked", "2028-11-29T03:00:00.000Z", "2027-02-01T12:00:00.000Z"),
        ("removed", "2028-11-29T03:00:00.000Z", "2027-02-01T12:00:00.000Z"),
    ]
    assert all(c["itemId"] == ITEM and c["consentId"] == "consent-1" for c in consents)
    assert all(c["products"] == ["ACCOUNTS", "INVESTMENTS"] for c in consents)
    # The consent's own ids follow the same rule as every product: added then removed in one batch is removed.
    assert products_of(events) == [
        {**products_of(events)[0], "consents": {"added": [], "modified": [], "removed": ["consent-1"]}}
    ]
    assert len({c["eventId"] for c in consents}) == 4


def test_a_consent_first_seen_revoked_is_revoked_and_a_regrant_alone_is_no_consent_event() -> None:
    revoked = consent(revoked="2027-02-01T12:00:00.000Z")
    assert [
        e.detail["change"]
        for e in change_events([stream_record("INSERT", None, revoked)])
        if e.detail_type == CONSENT_CHANGED
    ] == ["revoked"]
    regrant = change_events([stream_record("MODIFY", consent(), consent(granted="b"))])
    assert [e.detail_type for e in regrant] == [PRODUCTS_CHANGED]
    assert regrant[0].detail["consents"]["modified"] == ["consent-1"]


def test_many_ids_are_chunked_each_chunk_with_its_own_stable_id() -> None:
    records = [stream_record("INSERT", None, investment(f"inv-{i:05d}")) for i in range(MAX_IDS_PER_EVENT * 2 + 5)]
    events = change_events(records)
    assert [len(e.detail["investments"]["added"]) for e in events] == [MAX_IDS_PER_EVENT, MAX_IDS_PER_EVENT, 5]
    assert len({e.detail["eventId"] for e in events}) == 3
    again = change_events(records)  # the same records (a retried batch): the same ids
    assert [e.detail["eventId"] for e in again] == [e.detail["eventId"] for e in events]
    assert [e.detail_json() for e in again] == [e.detail_json() for e in events]
    # Each chunk's events trace back to its own stream records (what a failed put hands back to Lambda).
    assert events[1].first_sequence == records[MAX_IDS_PER_EVENT]["dynamodb"]["SequenceNumber"]


def test_many_groups_of_one_id_are_split_by_size_under_the_detail_bound() -> None:
    # One row in each of 2,000 investments with long ids: under the id bound, over the byte bound as one event.
    long = "x" * 60
    records = [
        stream_record("INSERT", None, itx(f"{long}-inv-{i:05d}", f"{long}-row-{i:05d}"))
        for i in range(MAX_IDS_PER_EVENT)
    ]
    events = change_events(records)
    assert len(events) > 1 and all(len(e.detail_json()) <= MAX_DETAIL_BYTES for e in events)
    rows = [r for e in events for ops in e.detail["investmentTransactions"].values() for r in ops["added"]]
    assert sorted(rows) == sorted(f"{long}-row-{i:05d}" for i in range(MAX_IDS_PER_EVENT)) and len(rows) == len(
        set(rows)
    )
    assert len({e.detail["eventId"] for e in events}) == len(events)
    assert [e.detail["eventId"] for e in change_events(records)] == [e.detail["eventId"] for e in events]


def test_a_regrouped_retry_repeats_changes_as_sets_safe_to_apply_twice() -> None:
    records = [stream_record("INSERT", None, investment(f"inv-{i}")) for i in range(4)]
    whole = change_events(records)
    halves = change_events(records[:2]) + change_events(records[2:])  # Lambda halved a failing batch
    assert {e.detail["eventId"] for e in halves}.isdisjoint(e.detail["eventId"] for e in whole)
    applied: set[str] = set()
    for event in whole + halves:  # both deliveries applied: the same set
        applied |= set(event.detail["investments"]["added"])
    assert applied == {f"inv-{i}" for i in range(4)}


def test_the_publisher_hands_back_the_first_record_behind_a_failed_products_event() -> None:
    records = [
        stream_record("INSERT", None, consent()),
        stream_record("INSERT", None, investment("inv-1")),
    ]
    fake = FakeEvents({PRODUCTS_CHANGED}, fail_rounds=9)
    result = Publisher(lambda: fake, PublisherSettings("bus", 2), sleep=lambda _s: None).publish(records)
    assert [e["DetailType"] for e in fake.put] == [CONSENT_CHANGED]
    # The products event is built from both records: the batch is retried from the first.
    assert result.response() == {"batchItemFailures": [{"itemIdentifier": records[0]["dynamodb"]["SequenceNumber"]}]}
    assert json.loads(fake.put[0]["Detail"])["change"] == "created"


def test_watch_tells_each_product_event_in_one_line_without_personal_data() -> None:
    records = [
        stream_record("INSERT", None, investment("inv-1")),
        stream_record("INSERT", None, investment("inv-2")),
        stream_record("REMOVE", itx("inv-1", "r1"), None),
        stream_record("REMOVE", itx("inv-2", "r2"), None),
        stream_record("INSERT", None, identity_record(ITEM, IDENTITY)),
        stream_record("INSERT", None, consent()),
    ]
    lines = [summary({"detail-type": e.detail_type, "detail": e.detail}) for e in change_events(records)]
    assert lines == [
        "Consent Changed: consent consent-1 of item item-1 created, expires 2027-11-29T03:00:00.000Z",
        "Products Changed: item item-1: investments 2 added, investmentTransactions 2 removed, consents 1 added, "
        "identity added",
    ]
