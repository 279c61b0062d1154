"""Change events derived from RecordsTable stream records, and the publisher's put/retry/report contract."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from pluggy_pipeline.change_events import (
    CONNECTOR_STATUS_CHANGED,
    ITEM_DELETED,
    ITEM_STATUS_CHANGED,
    MAX_IDS_PER_EVENT,
    PAYMENT_STATUS_CHANGED,
    TRANSACTIONS_CHANGED,
    attention,
    change_events,
)
from pluggy_pipeline.config import PublisherSettings
from pluggy_pipeline.processor import item_record, transaction_record
from pluggy_pipeline.publisher import MAX_BYTES_PER_CALL, Publisher, entry_size
from pluggy_pipeline.records import to_attributes

_sequence = iter(range(10**21, 10**21 + 10**6))


def stream_record(name: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, Any]:
    sequence = str(next(_sequence))
    body: dict[str, Any] = {"SequenceNumber": sequence, "ApproximateCreationDateTime": 1_800_000_000.5}
    if old is not None:
        body["OldImage"] = to_attributes(old)
    if new is not None:
        body["NewImage"] = to_attributes(new)
    return {"eventID": f"ev-{sequence}", "eventName": name, "dynamodb": body}


def item(status: str, execution: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    data = {
        "id": "item-1",
        "status": status,
        "executionStatus": execution,
        "error": {"code": code, "message": "m"} if code else None,
        "clientUserId": "user-1",
        "connector": {"id": 0},
        "updatedAt": "2026-11-29T10:00:00.000Z",
        **extra,
    }
    return item_record(data, "2026-11-29T10:00:01.000Z")


def tx(tx_id: str, amount: str = "10.5", account: str = "acc-1") -> dict[str, Any]:
    return transaction_record(
        {"id": tx_id, "accountId": account, "amount": amount, "date": "2026-11-01", "updatedAt": "u1"}, "item-1"
    )


def test_a_new_item_and_each_status_change_are_events_but_a_data_only_resync_is_not() -> None:
    created = item("UPDATED", "SUCCESS")
    resynced = {**created, "syncedAt": "2026-11-29T11:00:00.000Z", "updatedAt": "later"}
    failed = item("LOGIN_ERROR", "INVALID_CREDENTIALS", "INVALID_CREDENTIALS")
    events = change_events(
        [
            stream_record("INSERT", None, created),
            stream_record("MODIFY", created, resynced),
            stream_record("MODIFY", resynced, failed),
        ]
    )
    assert [e.detail_type for e in events] == [ITEM_STATUS_CHANGED, ITEM_STATUS_CHANGED]
    first, second = (e.detail for e in events)
    assert first["previous"] is None and first["current"]["status"] == "UPDATED" and not first["needsUserAction"]
    assert first["clientUserId"] == "user-1" and first["connectorId"] == 0 and first["itemId"] == "item-1"
    previous = {"status": "UPDATED", "executionStatus": "SUCCESS", "errorCode": None}
    assert second["previous"] == {**previous, "resourcesPendingAuthorization": False}
    assert second["current"]["errorCode"] == "INVALID_CREDENTIALS" and second["needsUserAction"] is True
    assert "update mode" in second["reason"]
    assert second["changedAt"] == "2027-01-15T08:00:00.500000Z"


def test_the_caixa_case_is_pending_not_failed() -> None:
    pending = attention("OUTDATED", "USER_AUTHORIZATION_PENDING", "USER_AUTHORIZATION_PENDING")
    assert pending.needs_user_action and pending.pending and "approve" in pending.reason
    assert "30 minutes" in pending.reason
    outage = attention("OUTDATED", "SITE_NOT_AVAILABLE", "SITE_NOT_AVAILABLE")
    assert not outage.needs_user_action and not outage.pending
    for status in ("WAITING_USER_INPUT", "WAITING_USER_ACTION", "LOGIN_ERROR"):
        assert attention(status, status, None).needs_user_action, status
    assert attention("UPDATED", "PARTIAL_SUCCESS", None).reason.startswith("Synced, but")


def test_resources_pending_authorization_asks_the_user_and_its_end_is_told_too() -> None:
    synced = item("UPDATED", "SUCCESS")
    pending = {**synced, "resourcesPendingAuthorization": True, "updatedAt": "later"}
    authorized = {**pending, "resourcesPendingAuthorization": False, "updatedAt": "later still"}
    events = change_events([stream_record("MODIFY", synced, pending), stream_record("MODIFY", pending, authorized)])
    asked, done = (e.detail for e in events)
    assert asked["current"]["resourcesPendingAuthorization"] is True and asked["needsUserAction"] is True
    assert "authorize" in asked["reason"] and asked["pending"] is True
    assert done["previous"]["resourcesPendingAuthorization"] is True and not done["needsUserAction"]
    # A failed login says what it says: pending resources only matter to an item that synced.
    assert attention("LOGIN_ERROR", "INVALID_CREDENTIALS", None, resources_pending=True).reason.startswith("Pluggy")


def test_a_tombstone_is_item_deleted_once() -> None:
    live = item("UPDATED", "SUCCESS")
    tombstone = {**live, "status": "DELETED", "deleted": True, "deletedAt": "2026-11-29T12:00:00.000Z"}
    events = change_events(
        [stream_record("MODIFY", live, tombstone), stream_record("MODIFY", tombstone, {**tombstone, "x": 1})]
    )
    assert [(e.detail_type, e.detail["deletedAt"]) for e in events] == [(ITEM_DELETED, "2026-11-29T12:00:00.000Z")]
    assert events[0].detail["clientUserId"] == "user-1"


def test_transactions_are_grouped_per_account_with_the_last_operation_winning() -> None:
    a1, a2, b1 = tx("t1"), tx("t2"), tx("t3", account="acc-2")
    records = [
        stream_record("INSERT", None, a1),
        stream_record("MODIFY", a1, tx("t1", "11")),  # added then modified in one batch: still added
        stream_record("INSERT", None, a2),
        stream_record("REMOVE", a2, None),  # added then removed: removed
        stream_record("MODIFY", b1, tx("t3", "99", account="acc-2")),
        stream_record("MODIFY", b1, b1),  # identical images (a full re-sync): no change
    ]
    events = {e.detail["accountId"]: e.detail for e in change_events(records)}
    assert events["acc-1"]["added"] == ["t1"] and events["acc-1"]["removed"] == ["t2"]
    assert events["acc-1"]["modified"] == [] and events["acc-1"]["itemId"] == "item-1"
    assert events["acc-2"] == {**events["acc-2"], "added": [], "modified": ["t3"], "removed": []}


def test_many_ids_are_chunked_each_chunk_with_its_own_stable_id() -> None:
    records = [stream_record("INSERT", None, tx(f"t{i:05d}")) for i in range(MAX_IDS_PER_EVENT * 2 + 5)]
    events = change_events(records)
    assert [len(e.detail["added"]) for e in events] == [MAX_IDS_PER_EVENT, MAX_IDS_PER_EVENT, 5]
    assert len({e.detail["eventId"] for e in events}) == 3
    again = change_events(records)  # the same records (a retried batch): the same ids
    assert [e.detail["eventId"] for e in again] == [e.detail["eventId"] for e in events]
    assert all(entry_size({"Detail": e.detail_json()}) < 256 * 1024 for e in events)


def test_payment_and_connector_events_only_on_status_changes() -> None:
    payment = {"pk": "PAYMENT_INTENT#p1", "sk": "STATUS", "kind": "payment_intent", "paymentId": "p1"}
    started = {**payment, "status": "PAYMENT_PENDING", "verified": True, "event": "payment_intent/created"}
    done = {**started, "status": "PAYMENT_COMPLETED", "event": "payment_intent/completed"}
    connector = {"pk": "CONNECTOR#0", "sk": "STATUS", "kind": "connector", "connectorId": "0"}
    events = change_events(
        [
            stream_record("INSERT", None, started),
            stream_record("MODIFY", started, {**started, "version": "newer"}),
            stream_record("MODIFY", started, done),
            stream_record("INSERT", None, {**connector, "status": "ONLINE"}),
            stream_record("MODIFY", {**connector, "status": "ONLINE"}, {**connector, "status": "UNSTABLE"}),
        ]
    )
    details = [(e.detail_type, e.detail.get("previousStatus"), e.detail["status"]) for e in events]
    assert details == [
        (PAYMENT_STATUS_CHANGED, None, "PAYMENT_PENDING"),
        (PAYMENT_STATUS_CHANGED, "PAYMENT_PENDING", "PAYMENT_COMPLETED"),
        (CONNECTOR_STATUS_CHANGED, None, "ONLINE"),
        (CONNECTOR_STATUS_CHANGED, "ONLINE", "UNSTABLE"),
    ]
    assert events[1].detail["paymentType"] == "PAYMENT_INTENT" and events[1].detail["verified"] is True


class FakeEvents:
    """PutEvents that fails the entries (by detail-type) or whole calls it is told to, for a number of rounds."""

    def __init__(self, fail_types: set[str] | None = None, fail_rounds: int = 0, raise_rounds: int = 0) -> None:
        self.fail_types = fail_types or set()
        self.fail_rounds = fail_rounds
        self.raise_rounds = raise_rounds
        self.calls: list[list[dict[str, Any]]] = []
        self.put: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        assert len(Entries) <= 10 and sum(entry_size(e) for e in Entries) <= MAX_BYTES_PER_CALL
        self.calls.append(Entries)
        if self.raise_rounds:
            self.raise_rounds -= 1
            raise ConnectionError("EventBridge unreachable")
        results = []
        failing = self.fail_rounds > 0
        for entry in Entries:
            if failing and entry["DetailType"] in self.fail_types:
                results.append({"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"})
            else:
                self.put.append(entry)
                results.append({"EventId": f"eb-{len(self.put)}"})
        if failing:
            self.fail_rounds -= 1
        return {"FailedEntryCount": sum(1 for r in results if "ErrorCode" in r), "Entries": results}


def publisher(fake: FakeEvents, attempts: int = 3) -> tuple[Publisher, list[float]]:
    sleeps: list[float] = []
    return Publisher(lambda: fake, PublisherSettings("bus", attempts), sleep=sleeps.append), sleeps


def sample_batch() -> list[dict[str, Any]]:
    return [
        stream_record("INSERT", None, item("UPDATED", "SUCCESS")),
        *(stream_record("INSERT", None, tx(f"t{i}")) for i in range(30)),
    ]


def test_everything_put_reports_no_failure() -> None:
    fake = FakeEvents()
    pub, sleeps = publisher(fake)
    result = pub.publish(sample_batch())
    assert result.response() == {"batchItemFailures": []} and (result.events, result.put) == (2, 2)
    assert sleeps == [] and {e["DetailType"] for e in fake.put} == {ITEM_STATUS_CHANGED, TRANSACTIONS_CHANGED}
    assert all(e["EventBusName"] == "bus" and e["Source"] == "pluggy-pipeline" for e in fake.put)
    assert json.loads(fake.put[1]["Detail"])["added"] == [f"t{i}" for i in range(30)]


def test_a_throttled_entry_is_retried_with_backoff_then_put() -> None:
    fake = FakeEvents({TRANSACTIONS_CHANGED}, fail_rounds=2)
    pub, sleeps = publisher(fake, attempts=3)
    result = pub.publish(sample_batch())
    assert result.failed_sequence is None and result.attempts == 3 and sleeps == [0.2, 0.4]
    assert [e["DetailType"] for e in fake.put] == [ITEM_STATUS_CHANGED, TRANSACTIONS_CHANGED]


@pytest.mark.parametrize("mode", ["entry", "call"])
def test_when_retries_run_out_the_first_record_behind_a_failed_event_is_reported(mode: str) -> None:
    batch = sample_batch()
    fake = FakeEvents({TRANSACTIONS_CHANGED}, fail_rounds=9) if mode == "entry" else FakeEvents(raise_rounds=9)
    pub, _ = publisher(fake, attempts=2)
    result = pub.publish(batch)
    first_tx_sequence = batch[1]["dynamodb"]["SequenceNumber"]
    expected = first_tx_sequence if mode == "entry" else batch[0]["dynamodb"]["SequenceNumber"]
    assert result.response() == {"batchItemFailures": [{"itemIdentifier": expected}]}
    assert result.put == (1 if mode == "entry" else 0)


def test_calls_respect_the_entry_and_size_limits() -> None:
    # 25 accounts x 1 row: 25 events, so at least 3 calls of at most 10 entries.
    fake = FakeEvents()
    pub, _ = publisher(fake)
    pub.publish([stream_record("INSERT", None, tx("t", account=f"acc-{i}")) for i in range(25)])
    assert [len(c) for c in fake.calls] == [10, 10, 5] and len(fake.put) == 25
