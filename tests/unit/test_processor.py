"""Processor unit tests: an in-memory Pluggy, processing log and queues; RecordStore on moto (the real thing)."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws
from pluggy_pipeline.errors import NotFoundError, PermanentError, TransientError
from pluggy_pipeline.event_store import StartOutcome, iso_now
from pluggy_pipeline.pluggy_client import PluggyAuthError
from pluggy_pipeline.processor import (
    Counts,
    Processor,
    QueueMessage,
    after,
    pluggy_credentials,
)
from pluggy_pipeline.records import RecordStore, item_key, transaction_key
from pluggy_pipeline_local.template import create_resources

from tests.conftest import REGION, TEMPLATE

# One boto3 session for the module: under moto, boto3.client() builds a new one (~0.2 s) every time.
SESSION = boto3.session.Session()

T0 = 1_795_341_600.0  # 2026-11-22T10:00:00Z
HOUR = 3600.0
ITEM = "item-1"
CHECKING, CARD = "acc-checking", "acc-card"


# --- fakes ---------------------------------------------------------------------------------------


def stamp(minute: int) -> str:
    return f"2026-11-22T09:{minute:02d}:00.000Z"


def at_minute(minute: int) -> float:
    """The processor clock at stamp(minute)."""
    return T0 - HOUR + 60 * minute


def make_tx(account: str, n: int, created: str, amount: str = "-12.34") -> dict[str, Any]:
    return {
        "id": f"{account}-tx-{n}",
        "accountId": account,
        "date": f"2026-11-{n % 28 + 1:02d}T03:00:00.000Z",
        "amount": Decimal(amount),
        "description": f"row {n}",
        "createdAt": created,
        "updatedAt": created,
    }


class FakePluggy:
    """PluggyClient's interface over in-memory data; records every call."""

    def __init__(self, page_size: int = 2) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.accounts: dict[str, list[dict[str, Any]]] = {}
        self.transactions: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.page_size = page_size
        self.error: Exception | None = None

    def add_item(
        self,
        item_id: str = ITEM,
        *,
        status: str = "UPDATED",
        execution: str = "SUCCESS",
        updated: str = stamp(0),
        rows: int = 3,
        **extra: Any,
    ) -> None:
        self.items[item_id] = {
            "id": item_id,
            "status": status,
            "executionStatus": execution,
            "error": None,
            "statusDetail": None,
            "clientUserId": "user-1",
            "updatedAt": updated,
            **extra,
        }
        self.accounts[item_id] = [
            {"id": CHECKING, "itemId": item_id, "type": "BANK", "balance": Decimal("100.10"), "updatedAt": updated},
            {"id": CARD, "itemId": item_id, "type": "CREDIT", "balance": Decimal("-5.00"), "updatedAt": updated},
        ]
        for account in (CHECKING, CARD):
            self.transactions[account] = [make_tx(account, n, stamp(1)) for n in range(rows)]

    def _pages(self, rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        for start in range(0, len(rows), self.page_size):
            yield copy.deepcopy(rows[start : start + self.page_size])

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def get_item(self, item_id: str) -> dict[str, Any]:
        self.calls.append(("get_item", item_id))
        self._check()
        if item_id not in self.items:
            raise NotFoundError(f"item {item_id} not found")
        return copy.deepcopy(self.items[item_id])

    def list_accounts(self, item_id: str) -> list[dict[str, Any]]:
        self.calls.append(("list_accounts", item_id))
        return copy.deepcopy(self.accounts[item_id])

    def iter_transactions(self, account_id: str, *, created_at_from: str | None = None) -> Iterator[list[Any]]:
        self.calls.append(("iter_transactions", (account_id, created_at_from)))
        rows = [
            r for r in self.transactions[account_id] if created_at_from is None or r["createdAt"] >= created_at_from
        ]
        return self._pages(rows)

    def iter_link(self, link: str, *, account_id: str | None = None) -> Iterator[list[Any]]:
        self.calls.append(("iter_link", link))
        query = parse_qs(urlsplit(link).query)
        assert query["accountId"] == [account_id]
        return self.iter_transactions(account_id, created_at_from=query["createdAtFrom"][0])

    def get_transactions_by_ids(self, account_id: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        self.calls.append(("get_transactions_by_ids", (account_id, list(ids))))
        return [copy.deepcopy(r) for r in self.transactions[account_id] if r["id"] in ids]

    # Payments: Pluggy's view, keyed (kind, id); a missing one is Pluggy's 404.
    payments: dict[tuple[str, str], dict[str, Any]]
    payments_error: Exception | None = None

    def set_payment(self, kind: str, payment_id: str, status: str, updated: str, **extra: Any) -> None:
        self.payments = getattr(self, "payments", {})
        self.payments[(kind, payment_id)] = {"id": payment_id, "status": status, "updatedAt": updated, **extra}

    def _payment(self, kind: str, payment_id: str) -> dict[str, Any]:
        self.calls.append((f"get_payment_{kind}", payment_id))
        if self.payments_error is not None:
            raise self.payments_error
        found = getattr(self, "payments", {}).get((kind, payment_id))
        if found is None:
            raise NotFoundError(f"{kind} {payment_id} not found")
        return copy.deepcopy(found)

    def get_payment_intent(self, intent_id: str) -> dict[str, Any]:
        return self._payment("intent", intent_id)

    def get_payment_request(self, request_id: str) -> dict[str, Any]:
        return self._payment("request", request_id)

    def get_payment_schedule(self, request_id: str, schedule_id: str) -> dict[str, Any]:
        return self._payment("schedule", schedule_id)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class FakeLog:
    """ProcessingLog's contract in memory: PROCESSING -> PROCESSED | FAILED; a PROCESSED event is not restarted."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.start_error: Exception | None = None
        self.held: set[str] = set()  # eventIds whose lease another invocation holds

    def start_attempt(
        self, event_id: str, event_type: str, payload: str, *, copy_payload: bool = True
    ) -> tuple[StartOutcome, int]:
        if self.start_error is not None:
            raise self.start_error
        record = self.records.setdefault(event_id, {"eventType": event_type, "payload": payload, "attempts": 0})
        if record.get("status") == "PROCESSED":
            return StartOutcome.ALREADY_PROCESSED, 0
        if event_id in self.held:
            return StartOutcome.IN_PROGRESS, 0
        record.update(status="PROCESSING", attempts=record["attempts"] + 1)
        return StartOutcome.STARTED, record["attempts"]

    def start(self, event_id: str, event_type: str, payload: str, *, copy_payload: bool = True) -> StartOutcome:
        return self.start_attempt(event_id, event_type, payload, copy_payload=copy_payload)[0]

    def give_up(self, event_id: str) -> None:
        record = self.records[event_id]
        record.update(status="FAILED", parkedAfterAttempts=record["attempts"] - 1, attempts=0)

    def hold(self, event_id: str, reason: str) -> None:
        record = self.records[event_id]
        record.update(status="FAILED", error=reason, permanent=False, attempts=record["attempts"] - 1)
        record["holds"] = record.get("holds", 0) + 1

    def stored_payload(self, event_id: str) -> str:
        record = self.records.get(event_id)
        if record is None:
            raise PermanentError("the event's payload is no longer in EventsTable")
        return str(record["payload"])

    def finish(self, event_id: str, counts: dict[str, int], *, handled: bool = True) -> None:
        self.records[event_id].update(status="PROCESSED", counts=dict(counts), handled=handled)

    def fail(self, event_id: str, error: str, *, permanent: bool) -> None:
        self.records[event_id].update(status="FAILED", error=error, permanent=permanent)


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.held: list[tuple[str, float]] = []

    def send(self, **message: Any) -> str:
        self.sent.append(message)
        return f"m-{len(self.sent)}"

    def hold(self, messages: list[tuple[str, float]]) -> None:
        self.held.extend(messages)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table
        self.pluggy = FakePluggy()
        self.records = RecordStore(lambda: client, table)
        self.log = FakeLog()
        self.queue = FakeQueue()
        self.dlq = FakeQueue()
        self.clock = Clock()
        self.processor = self.build()

    def build(self, **kwargs: Any) -> Processor:
        return Processor(
            self.pluggy,  # type: ignore[arg-type]
            self.records,
            self.log,  # type: ignore[arg-type]
            self.queue,  # type: ignore[arg-type]
            self.dlq,  # type: ignore[arg-type]
            clock=self.clock,
            **kwargs,
        )

    def run(self, event: str, **payload: Any) -> dict[str, int]:
        counts = Counts()
        self.processor.dispatch(event, {"event": event, **payload}, counts)
        return counts.values

    def message(self, body: Any, event_id: str | None = "evt-1", event_type: str = "item/updated") -> QueueMessage:
        text = body if isinstance(body, str) else json.dumps(body)
        attributes = {"eventId": event_id, "eventType": event_type, "groupId": f"item:{ITEM}"} if event_id else {}
        return QueueMessage("msg-1", text, attributes)

    def item(self, item_id: str = ITEM) -> dict[str, Any] | None:
        return self.records.get(item_key(item_id))

    def accounts(self, item_id: str = ITEM) -> dict[str, dict[str, Any]]:
        return {a["accountId"]: a for a in self.records.accounts_of_item(item_id)}

    def tx_ids(self, account: str) -> set[str]:
        return {k["sk"].removeprefix("TX#") for k in self.records.transaction_keys_of_account(account)}

    def scan(self) -> list[dict[str, Any]]:
        rows = self.client.scan(TableName=self.table, ConsistentRead=True)["Items"]
        return sorted(rows, key=lambda r: (r["pk"]["S"], r["sk"]["S"]))


@contextlib.contextmanager
def records_harness() -> Iterator[Harness]:
    """A Harness on moto's RecordsTable (from template.yaml)."""
    with mock_aws():
        client = SESSION.client("dynamodb", region_name=REGION)
        only_records = {"Resources": {"RecordsTable": TEMPLATE["Resources"]["RecordsTable"]}}
        resources = create_resources(only_records, dynamodb=client, sqs=None)
        yield Harness(client, resources.tables["RecordsTable"])


@pytest.fixture
def h() -> Iterator[Harness]:
    with records_harness() as harness:
        yield harness


# --- small pieces --------------------------------------------------------------------------------


def test_after_starts_one_millisecond_past_the_watermark() -> None:
    assert after("2026-11-22T10:00:00.000Z") == "2026-11-22T10:00:00.001Z"
    assert after("2026-11-22T23:59:59.999Z") == "2026-11-23T00:00:00.000Z"
    assert after("2026-11-22T07:00:00.000-03:00") == "2026-11-22T10:00:00.001Z"


def test_queue_message_reads_string_attributes_of_an_sqs_record() -> None:
    record = {
        "messageId": "m-1",
        "body": "{}",
        "messageAttributes": {
            "eventId": {"stringValue": "e-1", "dataType": "String"},
            "eventType": {"stringValue": "item/updated", "dataType": "String"},
            "odd": "not a mapping",
        },
    }
    assert QueueMessage.from_sqs_record(record) == QueueMessage(
        "m-1", "{}", {"eventId": "e-1", "eventType": "item/updated"}
    )
    assert QueueMessage.from_sqs_record({"body": "x"}).attributes == {}


# --- item syncs ----------------------------------------------------------------------------------


def test_first_sync_stores_item_accounts_and_full_history(h: Harness) -> None:
    h.pluggy.add_item(rows=5)
    counts = h.run("item/created", itemId=ITEM)
    assert counts == {"items": 1, "accounts": 2, "transactions": 10}
    assert ("iter_transactions", (CHECKING, None)) in h.pluggy.calls  # no watermark yet: everything
    stored = h.item()
    assert stored is not None
    assert stored["data"] == h.pluggy.items[ITEM]
    assert (stored["status"], stored["executionStatus"], stored["deleted"]) == ("UPDATED", "SUCCESS", False)
    assert stored["syncedAt"] == iso_now(T0) == stored["syncSk"]
    assert [r["itemId"] for r in h.records.items_of_user("user-1")] == [ITEM]
    accounts = h.accounts()
    assert {a: acc["data"] for a, acc in accounts.items()} == {a["id"]: a for a in h.pluggy.accounts[ITEM]}
    assert accounts[CHECKING]["txWatermark"] == stamp(1)
    for account in (CHECKING, CARD):
        assert h.tx_ids(account) == {r["id"] for r in h.pluggy.transactions[account]}
    row = h.records.get(transaction_key(CHECKING, f"{CHECKING}-tx-3"))
    assert row is not None and row["data"] == h.pluggy.transactions[CHECKING][3]
    assert row["itemId"] == ITEM and row["txDate"] == f"2026-11-04T03:00:00.000Z#{CHECKING}-tx-3"


def test_next_sync_reads_past_the_watermark_and_moves_it(h: Harness) -> None:
    h.clock.now = at_minute(2)  # the first read happens right after the sync: its rows are not complete yet
    h.pluggy.add_item(rows=2)
    h.run("item/created", itemId=ITEM)
    assert h.accounts()[CHECKING]["txSettled"] == "2026-11-22T08:32:00.000Z"  # complete up to 30 min before
    h.pluggy.transactions[CHECKING].append(make_tx(CHECKING, 7, stamp(5)))
    h.pluggy.items[ITEM]["updatedAt"] = stamp(6)
    h.pluggy.calls.clear()
    h.clock.now = at_minute(7)  # too soon for the window to be complete: read past the watermark only
    counts = h.run("item/updated", itemId=ITEM)
    assert ("iter_transactions", (CHECKING, after(stamp(1)))) in h.pluggy.calls
    assert counts == {"items": 1, "accounts": 2, "transactions": 1}
    assert h.processor.overlap_rows_read == 0
    assert h.accounts()[CHECKING]["txWatermark"] == stamp(5)
    assert h.accounts()[CARD]["txWatermark"] == stamp(1)
    assert f"{CHECKING}-tx-7" in h.tx_ids(CHECKING)


def test_the_window_is_re_read_once_when_complete_and_catches_a_late_row(h: Harness) -> None:
    """Rows of one sync become visible out of order: one appears after we read, with an older createdAt."""
    h.clock.now = at_minute(11)
    h.pluggy.add_item(rows=2)
    h.run("item/created", itemId=ITEM)
    h.pluggy.transactions[CHECKING].append(make_tx(CHECKING, 5, stamp(10)))
    h.run("item/updated", itemId=ITEM)
    assert h.accounts()[CHECKING]["txWatermark"] == stamp(10)
    late = make_tx(CHECKING, 6, stamp(8))  # ingested before the newest row, visible only now
    h.pluggy.transactions[CHECKING].append(late)
    h.clock.now = at_minute(41)  # 30 min after the watermark: the window is complete, re-read it once
    h.pluggy.calls.clear()
    writes = h.records.calls.get("batch_write_item", 0)
    counts = h.run("item/updated", itemId=ITEM)
    assert ("iter_transactions", (CHECKING, after("2026-11-22T08:41:00.000Z"))) in h.pluggy.calls
    assert counts["overlapLate"] == 1 and counts["transactions"] == 1  # only the late row is written
    assert h.records.calls["batch_write_item"] == writes + 1
    assert late["id"] in h.tx_ids(CHECKING)
    assert h.accounts()[CHECKING]["txSettled"] == stamp(10)
    read = h.processor.overlap_rows_read
    h.clock.now = at_minute(50)
    h.pluggy.calls.clear()
    h.run("item/updated", itemId=ITEM)
    assert ("iter_transactions", (CHECKING, after(stamp(10)))) in h.pluggy.calls  # settled: no re-read
    assert h.processor.overlap_rows_read == read
    # Without an overlap (reading past the watermark only, as before) such a row waits for a full sync.
    h.pluggy.transactions[CHECKING].append(make_tx(CHECKING, 9, stamp(9)))
    h.processor = h.build(tx_overlap_minutes=0)
    h.clock.now = at_minute(59)
    h.run("item/updated", itemId=ITEM)
    assert f"{CHECKING}-tx-9" not in h.tx_ids(CHECKING)


def test_transactions_are_written_in_full_chunks_whatever_the_page_size(h: Harness) -> None:
    h.pluggy.page_size = 7  # 60 rows come in 9 pages; still 3 BatchWriteItem calls per account
    h.pluggy.add_item(rows=60)
    h.run("item/created", itemId=ITEM)
    assert h.records.calls["batch_write_item"] == 2 * 3
    assert len(h.tx_ids(CHECKING)) == 60


@pytest.mark.parametrize(
    ("detail", "lists_accounts", "pulls_transactions"),
    [
        (None, True, True),
        ({"accounts": {"isUpdated": True}, "transactions": {"isUpdated": False}}, True, False),
        (
            {
                "accounts": {"isUpdated": False},
                "creditCards": {"isUpdated": False},
                "transactions": {"isUpdated": False},
            },
            False,
            False,
        ),
        (
            {
                "accounts": {"isUpdated": False},
                "creditCards": {"isUpdated": False},
                "transactions": {"isUpdated": True},
            },
            True,
            True,
        ),
        ({"creditCards": {"isUpdated": False}}, True, True),  # products not listed count as updated
    ],
)
def test_partial_success_collects_only_updated_products(
    detail: dict[str, Any] | None, lists_accounts: bool, pulls_transactions: bool, h: Harness
) -> None:
    h.pluggy.add_item(execution="PARTIAL_SUCCESS", statusDetail=detail)
    h.run("item/updated", itemId=ITEM)
    names = h.pluggy.names()
    assert ("list_accounts" in names) is lists_accounts
    assert ("iter_transactions" in names) is pulls_transactions
    stored = h.item()
    assert stored is not None and stored["executionStatus"] == "PARTIAL_SUCCESS"
    assert stored["data"]["statusDetail"] == detail
    assert (len(h.accounts()) == 2) is lists_accounts
    assert bool(h.tx_ids(CHECKING)) is pulls_transactions


@pytest.mark.parametrize(
    ("status", "execution", "error", "extra"),
    [
        ("OUTDATED", "USER_AUTHORIZATION_PENDING", {"code": "USER_AUTHORIZATION_PENDING", "message": "m"}, {}),
        ("LOGIN_ERROR", "INVALID_CREDENTIALS", {"code": "INVALID_CREDENTIALS", "message": "m"}, {}),
        ("WAITING_USER_INPUT", "WAITING_USER_INPUT", None, {"parameter": {"name": "token"}}),
        ("WAITING_USER_ACTION", "WAITING_USER_ACTION", None, {"userAction": {"type": "qr", "instructions": "scan"}}),
        ("UPDATING", "CREATED", None, {}),
    ],
)
def test_items_not_ready_store_status_and_error_and_fetch_nothing_else(
    status: str, execution: str, error: dict[str, Any] | None, extra: dict[str, Any], h: Harness
) -> None:
    h.pluggy.add_item(status=status, execution=execution, error=error, **extra)
    assert h.run("item/error", itemId=ITEM) == {"items": 1}
    assert h.pluggy.names() == ["get_item"]
    stored = h.item()
    assert stored is not None
    assert (stored["status"], stored["executionStatus"]) == (status, execution)
    assert stored.get("errorCode") == (error or {}).get("code")
    assert stored["data"] == h.pluggy.items[ITEM]
    assert h.accounts() == {}


def test_an_older_copy_of_the_item_changes_nothing(h: Harness) -> None:
    h.pluggy.add_item(updated=stamp(30))
    h.run("item/updated", itemId=ITEM)
    before = h.scan()
    h.pluggy.add_item(updated=stamp(10), status="OUTDATED")  # an older state (a stale read, a replay)
    h.pluggy.calls.clear()
    h.clock.now += 60
    assert h.run("item/updated", itemId=ITEM) == {"staleItem": 1}
    assert h.pluggy.names() == ["get_item"]
    assert h.scan() == before


def test_processing_the_same_event_twice_leaves_identical_records(h: Harness) -> None:
    h.pluggy.add_item(rows=4)
    h.run("item/updated", itemId=ITEM)
    first = h.scan()
    h.run("item/updated", itemId=ITEM)
    assert h.scan() == first


def test_an_item_gone_from_pluggy_is_tombstoned_with_its_data_removed(h: Harness) -> None:
    h.pluggy.add_item(rows=3)
    h.run("item/updated", itemId=ITEM)
    del h.pluggy.items[ITEM]
    h.clock.now += 5
    counts = h.run("item/updated", itemId=ITEM)
    assert counts == {"transactionsDeleted": 6, "accountsDeleted": 2, "itemsDeleted": 1}
    tombstone = h.item()
    assert tombstone is not None
    assert (tombstone["deleted"], tombstone["status"], tombstone["deletedAt"]) == (True, "DELETED", iso_now(T0 + 5))
    assert tombstone["data"]["id"] == ITEM and tombstone["clientUserId"] == "user-1"
    assert tombstone["updatedAt"] == stamp(0)
    assert "syncPk" not in tombstone  # never picked up by reconciliation
    assert h.accounts() == {} and h.tx_ids(CHECKING) == set() and h.tx_ids(CARD) == set()
    assert len(h.scan()) == 1


def test_item_deleted_asks_pluggy_and_leaves_a_tombstone_when_pluggy_answers_404(h: Harness) -> None:
    assert h.run("item/deleted", itemId="never-seen") == {"itemsDeleted": 1}
    assert h.pluggy.calls == [("get_item", "never-seen")]
    tombstone = h.item("never-seen")
    assert tombstone is not None and tombstone["deleted"] is True and "data" not in tombstone


def test_a_forged_item_deleted_for_an_item_pluggy_still_has_deletes_nothing(h: Harness) -> None:
    """A webhook is a signal: Pluggy still serves the item, so it is re-synced, not deleted."""
    h.pluggy.add_item(rows=3)
    h.run("item/created", itemId=ITEM)
    before = h.scan()
    counts = h.run("item/deleted", itemId=ITEM)
    assert "itemsDeleted" not in counts and "transactionsDeleted" not in counts and "accountsDeleted" not in counts
    assert ("get_item", ITEM) in h.pluggy.calls[-4:]
    item = h.item()
    assert item is not None and item["deleted"] is False
    assert len(h.tx_ids(CARD)) == 3 and len(h.tx_ids(CHECKING)) == 3
    assert len(h.scan()) == len(before)


def test_a_genuine_item_deleted_removes_everything(h: Harness) -> None:
    h.pluggy.add_item(rows=3)
    h.run("item/created", itemId=ITEM)
    del h.pluggy.items[ITEM]  # Pluggy deleted it: GET /items/{id} is 404 now
    assert h.run("item/deleted", itemId=ITEM) == {"transactionsDeleted": 6, "accountsDeleted": 2, "itemsDeleted": 1}
    assert h.accounts() == {} and h.tx_ids(CARD) == set()


def test_an_account_gone_from_pluggy_is_dropped_with_its_transactions(h: Harness) -> None:
    h.pluggy.add_item(rows=3)
    h.run("item/updated", itemId=ITEM)
    h.pluggy.accounts[ITEM] = [a for a in h.pluggy.accounts[ITEM] if a["id"] != CARD]
    counts = h.run("item/updated", itemId=ITEM)
    assert counts["accountsDeleted"] == 1 and counts["transactionsDeleted"] == 3
    assert set(h.accounts()) == {CHECKING}
    assert h.tx_ids(CARD) == set() and len(h.tx_ids(CHECKING)) == 3


def test_a_full_sync_removes_transactions_pluggy_no_longer_has(h: Harness) -> None:
    h.pluggy.add_item(rows=4)
    h.run("item/updated", itemId=ITEM)
    lost = h.pluggy.transactions[CHECKING].pop(1)  # deleted at Pluggy; its webhook never came
    h.clock.now += HOUR
    counts = h.run("pipeline/sync_item", itemId=ITEM, full=True)
    assert counts["transactionsDeleted"] == 1
    assert ("iter_transactions", (CHECKING, None)) in h.pluggy.calls[-4:]  # full history again
    assert lost["id"] not in h.tx_ids(CHECKING)
    assert h.tx_ids(CHECKING) == {r["id"] for r in h.pluggy.transactions[CHECKING]}
    stored = h.item()
    assert stored is not None and stored["lastFullSyncAt"] == iso_now(T0 + HOUR) == stored["syncedAt"]
    h.clock.now += HOUR
    h.run("item/updated", itemId=ITEM)  # a normal sync keeps the last full sync's time
    assert h.item()["lastFullSyncAt"] == iso_now(T0 + HOUR)  # type: ignore[index]


def test_a_full_sync_of_an_item_in_error_fetches_nothing(h: Harness) -> None:
    h.pluggy.add_item(status="LOGIN_ERROR", execution="INVALID_CREDENTIALS", error={"code": "INVALID_CREDENTIALS"})
    h.run("pipeline/sync_item", itemId=ITEM, full=True)
    assert h.pluggy.names() == ["get_item"]
    assert "lastFullSyncAt" not in h.item()  # type: ignore[operator]


# --- transactions webhooks -----------------------------------------------------------------------


def _known_item_with_a_new_row(h: Harness) -> None:
    """The item was synced (rows 0-1); then Pluggy created row 9: what transactions/created is about."""
    h.pluggy.add_item(rows=2)
    h.run("item/created", itemId=ITEM)
    h.pluggy.transactions[CHECKING].append(make_tx(CHECKING, 9, stamp(9)))
    h.pluggy.calls.clear()


def test_transactions_created_follows_the_link_before_the_timestamp(h: Harness) -> None:
    _known_item_with_a_new_row(h)
    link = f"https://api.pluggy.ai/v2/transactions?accountId={CHECKING}&createdAtFrom={stamp(0)}"
    counts = h.run(
        "transactions/created",
        itemId=ITEM,
        accountId=CHECKING,
        createdTransactionsLink=link,
        transactionsCreatedAtFrom=stamp(9),
    )
    assert h.pluggy.calls == [("iter_link", link), ("iter_transactions", (CHECKING, stamp(0)))]
    assert counts == {"transactions": 3}


def test_transactions_created_falls_back_to_created_at_from(h: Harness) -> None:
    _known_item_with_a_new_row(h)
    counts = h.run("transactions/created", itemId=ITEM, accountId=CHECKING, transactionsCreatedAtFrom=stamp(9))
    assert h.pluggy.calls == [("iter_transactions", (CHECKING, stamp(9)))]
    assert counts == {"transactions": 1} and f"{CHECKING}-tx-9" in h.tx_ids(CHECKING)


def test_transactions_created_without_link_or_timestamp_is_permanent(h: Harness) -> None:
    _known_item_with_a_new_row(h)
    with pytest.raises(PermanentError, match="neither a link"):
        h.run("transactions/created", itemId=ITEM, accountId=CHECKING)
    with pytest.raises(PermanentError, match="accountId"):
        h.run("transactions/created", itemId=ITEM, transactionsCreatedAtFrom=stamp(1))


def test_transaction_webhooks_for_an_unknown_item_sync_the_whole_item(h: Harness) -> None:
    # Its item/* webhooks were lost: the mirror must not hold orphan transactions without item or accounts.
    h.pluggy.add_item(rows=2)
    counts = h.run("transactions/created", itemId=ITEM, accountId=CHECKING, transactionsCreatedAtFrom=stamp(1))
    assert h.item() is not None and set(h.accounts()) == {a["id"] for a in h.pluggy.accounts[ITEM]}
    assert counts["items"] == 1 and counts["transactions"] >= 2
    assert h.tx_ids(CHECKING) == {f"{CHECKING}-tx-0", f"{CHECKING}-tx-1"}


def test_transactions_created_advances_the_watermark_only_without_a_gap(h: Harness) -> None:
    h.pluggy.add_item(rows=2)
    h.run("item/created", itemId=ITEM)  # watermark: stamp(1)
    h.pluggy.transactions[CHECKING].append(make_tx(CHECKING, 8, stamp(8)))
    h.run("transactions/created", itemId=ITEM, accountId=CHECKING, transactionsCreatedAtFrom=stamp(5))
    assert h.accounts()[CHECKING]["txWatermark"] == stamp(1)  # rows made between 1 and 5 may be missing
    h.run("transactions/created", itemId=ITEM, accountId=CHECKING, transactionsCreatedAtFrom=stamp(1))
    assert h.accounts()[CHECKING]["txWatermark"] == stamp(8)


def test_transactions_updated_refetches_by_ids_and_deletes_the_ones_gone(h: Harness) -> None:
    h.pluggy.add_item(rows=3)
    h.run("item/updated", itemId=ITEM)
    h.pluggy.transactions[CHECKING][0]["description"] = "recategorized"
    gone = h.pluggy.transactions[CHECKING].pop(1)["id"]
    ids = [f"{CHECKING}-tx-0", gone]
    counts = h.run("transactions/updated", itemId=ITEM, accountId=CHECKING, transactionIds=ids)
    assert h.pluggy.calls[-1] == ("get_transactions_by_ids", (CHECKING, ids))
    assert counts == {"transactions": 1, "transactionsDeleted": 1}
    row = h.records.get(transaction_key(CHECKING, ids[0]))
    assert row is not None and row["data"]["description"] == "recategorized"
    assert gone not in h.tx_ids(CHECKING)


@pytest.mark.parametrize("with_account", [True, False])
def test_transactions_deleted_by_ids(with_account: bool, h: Harness) -> None:
    h.pluggy.add_item(rows=3)
    h.run("item/updated", itemId=ITEM)
    gone = {f"{CARD}-tx-0", f"{CARD}-tx-2"}
    h.pluggy.transactions[CARD] = [r for r in h.pluggy.transactions[CARD] if r["id"] not in gone]
    ids = [f"{CARD}-tx-0", f"{CARD}-tx-2", f"{CARD}-tx-2", "unknown-id"]  # a repeated id, an unknown one
    payload: dict[str, Any] = {"itemId": ITEM, "transactionIds": ids}
    if with_account:
        payload["accountId"] = CARD
    h.run("transactions/deleted", **payload)
    assert h.tx_ids(CARD) == {f"{CARD}-tx-1"}
    assert len(h.tx_ids(CHECKING)) == 3
    asked = [args for name, args in h.pluggy.calls if name == "get_transactions_by_ids"][-1]
    assert asked[0] == CARD and set(asked[1]) >= gone  # Pluggy was asked about every stored candidate


def test_a_forged_transactions_deleted_keeps_what_pluggy_still_returns(h: Harness) -> None:
    h.pluggy.add_item(rows=3)
    h.run("item/updated", itemId=ITEM)
    ids = [f"{CARD}-tx-0", f"{CARD}-tx-1", f"{CHECKING}-tx-2"]
    counts = h.run("transactions/deleted", itemId=ITEM, accountId=CARD, transactionIds=ids[:2])
    assert counts == {"transactionsKept": 2}
    h.run("transactions/deleted", itemId=ITEM, transactionIds=ids)  # no accountId: found by id, then asked
    assert len(h.tx_ids(CARD)) == 3 and len(h.tx_ids(CHECKING)) == 3


def test_transactions_deleted_for_an_account_pluggy_no_longer_knows_deletes_them(h: Harness) -> None:
    h.pluggy.add_item(rows=2)
    h.run("item/updated", itemId=ITEM)

    def gone(account_id: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        raise NotFoundError("account not found")

    h.pluggy.get_transactions_by_ids = gone  # type: ignore[method-assign]
    h.run("transactions/deleted", itemId=ITEM, accountId=CARD, transactionIds=[f"{CARD}-tx-0"])
    assert h.tx_ids(CARD) == {f"{CARD}-tx-1"}


def test_a_restated_card_transaction_is_replaced(h: Harness) -> None:
    h.pluggy.add_item(rows=2)
    h.run("item/created", itemId=ITEM)
    old = h.pluggy.transactions[CARD].pop(0)
    new = {**old, "id": "card-new-id", "description": old["description"].upper(), "createdAt": stamp(20)}
    assert old["id"] != new["id"]
    h.pluggy.transactions[CARD].append(new)
    h.run("transactions/deleted", itemId=ITEM, accountId=CARD, transactionIds=[old["id"]])
    h.run("transactions/created", itemId=ITEM, accountId=CARD, transactionsCreatedAtFrom=stamp(20))
    assert h.tx_ids(CARD) == {r["id"] for r in h.pluggy.transactions[CARD]}
    assert h.records.find_transaction("card-new-id")["data"] == new  # type: ignore[index]


# --- connectors and payments ---------------------------------------------------------------------


def test_connector_status_is_kept_per_connector(h: Harness) -> None:
    h.run("connector/status_updated", connectorId="201", id="201", data={"status": "UNSTABLE"})
    h.clock.now += 1
    h.run("connector/status_updated", id="201", data={"status": "ONLINE"})
    h.run("connector/status_updated", data={"connectorId": 7, "status": "OFFLINE"})
    record = h.records.get({"pk": "CONNECTOR#201", "sk": "STATUS"})
    assert record is not None and (record["status"], record["connectorId"]) == ("ONLINE", "201")
    assert h.records.get({"pk": "CONNECTOR#7", "sk": "STATUS"})["status"] == "OFFLINE"  # type: ignore[index]
    with pytest.raises(PermanentError):
        h.run("connector/status_updated", data={"status": "ONLINE"})


def test_payment_status_comes_from_pluggy_not_from_the_event(h: Harness) -> None:
    def send(event: str) -> dict[str, Any]:
        h.clock.now += 1
        h.run(event, paymentRequestId="pr-1", paymentIntentId="pi-1")
        record = h.records.get({"pk": "PAYMENT_INTENT#pi-1", "sk": "STATUS"})
        assert record is not None
        return record

    h.pluggy.set_payment("request", "pr-1", "IN_PROGRESS", stamp(1))
    h.pluggy.set_payment("intent", "pi-1", "CONSENT_AWAITING_AUTHORIZATION", stamp(1))
    created = send("payment_intent/created")
    assert (created["status"], created["verified"], created["source"]) == (
        "CONSENT_AWAITING_AUTHORIZATION",
        True,
        "pluggy",
    )
    # A forged completion while Pluggy still says PAYMENT_PENDING stores Pluggy's word.
    h.pluggy.set_payment("intent", "pi-1", "PAYMENT_PENDING", stamp(2))
    assert send("payment_intent/completed")["status"] == "PAYMENT_PENDING"
    h.pluggy.set_payment("intent", "pi-1", "PAYMENT_COMPLETED", stamp(3))
    h.pluggy.set_payment("request", "pr-1", "COMPLETED", stamp(3))
    completed = send("payment_intent/completed")
    assert (completed["status"], completed["paymentRequestId"]) == ("PAYMENT_COMPLETED", "pr-1")
    request = h.records.get({"pk": "PAYMENT_REQUEST#pr-1", "sk": "STATUS"})
    assert request is not None and request["status"] == "COMPLETED" and request["verified"] is True
    # A late created event re-fetches too: Pluggy's newest state stays.
    assert send("payment_intent/created")["status"] == "PAYMENT_COMPLETED"


def test_a_payment_pluggy_does_not_know_is_not_stored(h: Harness) -> None:
    counts = h.run("payment_intent/completed", paymentRequestId="pr-x", paymentIntentId="pi-x")
    assert counts == {"paymentsNotFound": 2}
    assert h.records.get({"pk": "PAYMENT_INTENT#pi-x", "sk": "STATUS"}) is None


def test_when_pluggy_cannot_be_asked_the_record_says_it_is_the_webhook_s_word(h: Harness) -> None:
    from pluggy_pipeline.pluggy_client import PluggyRequestError

    h.pluggy.payments_error = PluggyRequestError("forbidden", status=403)
    h.run("payment_intent/completed", paymentIntentId="pi-2")
    record = h.records.get({"pk": "PAYMENT_INTENT#pi-2", "sk": "STATUS"})
    assert record is not None
    assert (record["verified"], record["source"], record["status"]) == (False, "webhook", "WEBHOOK:COMPLETED")
    # Once Pluggy can be asked, its answer replaces the unverified one, whatever the order of events.
    h.pluggy.payments_error = None
    h.pluggy.set_payment("intent", "pi-2", "PAYMENT_PENDING", stamp(1))
    h.run("payment_intent/created", paymentIntentId="pi-2")
    record = h.records.get({"pk": "PAYMENT_INTENT#pi-2", "sk": "STATUS"})
    assert record is not None and (record["verified"], record["status"]) == (True, "PAYMENT_PENDING")
    h.pluggy.payments_error = PluggyRequestError("forbidden", status=403)
    h.run("payment_intent/error", paymentIntentId="pi-2")  # an unverified claim never outranks Pluggy's word
    record = h.records.get({"pk": "PAYMENT_INTENT#pi-2", "sk": "STATUS"})
    assert record is not None and (record["verified"], record["status"]) == (True, "PAYMENT_PENDING")


SP, PR, PI = "SCHEDULED_PAYMENT", "PAYMENT_REQUEST", "PAYMENT_INTENT"


@pytest.mark.parametrize(
    ("event", "payload", "key", "status"),
    [
        ("scheduled_payment/error", {"paymentRequestId": "pr-9", "scheduledPaymentId": "s-1"}, f"{SP}#s-1", "ERROR"),
        (
            "scheduled_payment/canceled",
            {"paymentRequestId": "pr-9", "scheduledPaymentId": "s-1"},
            f"{SP}#s-1",
            "CANCELED",
        ),
        ("scheduled_payment/all_completed", {"paymentRequestId": "pr-9"}, f"{PR}#pr-9", "COMPLETED"),
        ("payment_request/updated", {"paymentRequestId": "pr-9", "data": {"status": "X"}}, f"{PR}#pr-9", "COMPLETED"),
        ("payment_intent/created", {"bulkPaymentId": "b-1", "paymentIntentId": "pi-9"}, f"{PI}#pi-9", "STARTED"),
    ],
)
def test_every_payment_family_is_stored_by_its_id(
    event: str, payload: dict[str, Any], key: str, status: str, h: Harness
) -> None:
    kind = {"SCHEDULED_PAYMENT": "schedule", "PAYMENT_REQUEST": "request", "PAYMENT_INTENT": "intent"}[
        key.split("#", maxsplit=1)[0]
    ]
    h.pluggy.set_payment(kind, key.split("#")[1], status, stamp(1), errorDetail={"code": "X"})
    assert h.run(event, **payload) == {"payments": 1}
    record = h.records.get({"pk": key, "sk": "STATUS"})
    assert record is not None and (record["status"], record["event"]) == (status, event)
    assert record["data"]["id"] == key.split("#")[1] and record["verified"] is True
    assert record.get("error") == {"code": "X"}


def test_a_payment_event_without_its_id_is_permanent(h: Harness) -> None:
    with pytest.raises(PermanentError, match="no payment id"):
        h.run("scheduled_payment/created", paymentRequestId="pr-1")


# --- reconciliation ------------------------------------------------------------------------------


def _sync_at(h: Harness, item_id: str, when: float) -> None:
    h.pluggy.add_item(item_id, rows=0)
    h.clock.now = when
    h.run("item/updated", itemId=item_id)


def test_reconcile_queues_one_full_sync_per_item_not_synced_in_time(h: Harness) -> None:
    _sync_at(h, "old-1", T0 - 40 * HOUR)
    _sync_at(h, "old-2", T0 - 27 * HOUR)
    _sync_at(h, "recent", T0 - 25 * HOUR)
    _sync_at(h, "now", T0)
    h.pluggy.add_item("deleted", rows=0)
    h.clock.now = T0 - 50 * HOUR
    h.run("item/updated", itemId="deleted")
    del h.pluggy.items["deleted"]
    h.run("item/deleted", itemId="deleted")
    h.clock.now = T0
    assert h.run("pipeline/reconcile") == {"itemsQueued": 2}
    assert [json.loads(m["body"]) for m in h.queue.sent] == [
        {"event": "pipeline/sync_item", "itemId": "old-1", "full": True},
        {"event": "pipeline/sync_item", "itemId": "old-2", "full": True},
    ]
    assert [(m["group_id"], m["event_type"]) for m in h.queue.sent] == [
        ("item:old-1", "pipeline/sync_item"),
        ("item:old-2", "pipeline/sync_item"),
    ]
    # One per item per hour: the next hourly run's sends are new events, a rerun within the hour is not.
    assert h.queue.sent[0]["event_id"] == "sync-old-1-2026112210"
    h.run("pipeline/reconcile")
    assert h.queue.sent[2]["event_id"] == h.queue.sent[0]["event_id"]


def test_reconcile_window_and_batch_limit_come_from_settings(h: Harness) -> None:
    for n in range(3):
        _sync_at(h, f"i-{n}", T0 - (5 + n) * HOUR)
    h.clock.now = T0
    h.processor = h.build(reconcile_after_hours=4, reconcile_batch_limit=2)
    assert h.run("pipeline/reconcile") == {"itemsQueued": 2}
    assert [json.loads(m["body"])["itemId"] for m in h.queue.sent] == ["i-2", "i-1"]  # oldest first


# --- process(): the event log, retries and the dead-letter queue ----------------------------------


def test_process_logs_counts_and_skips_a_redelivery(h: Harness) -> None:
    h.pluggy.add_item(rows=1)
    message = h.message({"event": "item/updated", "eventId": "ignored", "itemId": ITEM})
    h.processor.process(message)
    assert h.log.records["evt-1"]["status"] == "PROCESSED"
    assert h.log.records["evt-1"]["counts"] == {"items": 1, "accounts": 2, "transactions": 2}
    calls = len(h.pluggy.calls)
    h.processor.process(message)
    assert len(h.pluggy.calls) == calls  # skipped before any Pluggy call
    assert h.log.records["evt-1"]["attempts"] == 1


@pytest.mark.parametrize(
    ("attributes_id", "body", "expected"),
    [
        ("attr-id", {"eventId": "body-id"}, "attr-id"),
        (None, {"eventId": "body-id"}, "body-id"),
        (None, {}, "sqs-msg-1"),
    ],
)
def test_the_event_id_comes_from_the_attribute_then_the_body_then_the_message(
    attributes_id: str | None, body: dict[str, Any], expected: str, h: Harness
) -> None:
    h.processor.process(h.message({"event": "boleto/updated", **body}, event_id=attributes_id))
    assert list(h.log.records) == [expected]


@pytest.mark.parametrize("event", ["pipeline/reconcile", "pipeline/sync_item", "pipeline/x"])
def test_reserved_events_from_a_delivery_are_parked_never_run(event: str, h: Harness) -> None:
    h.pluggy.add_item()
    body = {"event": event, "itemId": ITEM, "full": True}
    message = QueueMessage("m-1", json.dumps(body), {"eventId": "evt-r", "origin": "webhook"}, group_id="reconcile")
    h.processor.process(message)
    assert h.pluggy.calls == [] and h.queue.sent == []
    [parked] = h.dlq.sent
    assert "reserved" in parked["extra_attributes"]["failureReason"]
    assert h.log.records["evt-r"]["permanent"] is True


def test_internal_messages_run_pipeline_events(h: Harness) -> None:
    h.pluggy.add_item(rows=1)
    sync = QueueMessage("m-1", json.dumps({"event": "pipeline/sync_item", "itemId": ITEM}), {"origin": "pipeline"})
    h.processor.process(sync)
    assert h.item() is not None
    # The schedule's message: no attributes at all, the group EventBridge sets.
    sweep = QueueMessage(
        "m-2", json.dumps({"event": "pipeline/reconcile", "eventId": "reconcile-t"}), group_id="reconcile"
    )
    h.processor.process(sweep)
    assert h.log.records["reconcile-t"]["status"] == "PROCESSED" and h.dlq.sent == []
    # Same body in another group, no origin: not the schedule.
    h.processor.process(
        QueueMessage("m-3", json.dumps({"event": "pipeline/reconcile", "eventId": "r-2"}), group_id="x")
    )
    assert len(h.dlq.sent) == 1


def test_a_permanent_error_while_starting_the_log_is_parked_with_its_reason(h: Harness) -> None:
    h.log.start_error = PermanentError("starting the event failed: ValidationException")
    h.processor.process(h.message({"event": "item/updated", "itemId": ITEM}))
    [parked] = h.dlq.sent
    assert "ValidationException" in parked["extra_attributes"]["failureReason"]


def test_a_transient_error_while_starting_the_log_is_retried(h: Harness) -> None:
    h.log.start_error = TransientError("starting the event failed: ThrottlingException")
    with pytest.raises(TransientError):
        h.processor.process(h.message({"event": "item/updated", "itemId": ITEM}))
    assert h.dlq.sent == []


def test_an_event_another_invocation_holds_is_retried_untouched(h: Harness) -> None:
    from pluggy_pipeline.processor import EventInProgress

    h.pluggy.add_item()
    h.log.records["evt-1"] = {"status": "PROCESSING", "attempts": 1}
    h.log.held.add("evt-1")
    with pytest.raises(EventInProgress):
        h.processor.process(h.message({"event": "item/updated", "itemId": ITEM}))
    assert h.pluggy.calls == [] and h.log.records["evt-1"]["status"] == "PROCESSING"  # not marked FAILED


def test_a_large_delivery_is_read_from_events_table(h: Harness) -> None:
    h.pluggy.add_item(rows=1)
    stored = json.dumps({"event": "item/updated", "itemId": ITEM, "pad": "x" * 300_000})
    h.log.records["evt-big"] = {"payload": stored, "attempts": 0, "status": "RECEIVED"}
    pointer = json.dumps({"event": "item/updated", "payloadInEventsTable": True})
    attributes = {"eventId": "evt-big", "eventType": "item/updated", "origin": "webhook", "payload": "eventsTable"}
    h.processor.process(QueueMessage("m-1", pointer, attributes))
    assert h.log.records["evt-big"]["status"] == "PROCESSED" and h.item() is not None
    # A body that merely claims to be a pointer is not one: only the receiver's attribute counts.
    h.processor.process(QueueMessage("m-2", pointer, {"eventId": "evt-2", "origin": "webhook"}))
    assert len(h.dlq.sent) == 1  # no itemId in the pointer body: parked, nothing read from the table


def test_unknown_events_are_recorded_as_not_handled(h: Harness) -> None:
    h.processor.process(h.message({"event": "smart_transfer_payment/completed"}))
    record = h.log.records["evt-1"]
    assert (record["status"], record["handled"], record["counts"]) == ("PROCESSED", False, {})
    assert h.dlq.sent == [] and h.pluggy.calls == []


@pytest.mark.parametrize(
    "error",
    [
        TransientError("Pluggy GET /items -> HTTP 503"),
        PluggyAuthError("API key rejected", status=401),
        RuntimeError("x"),
    ],
)
def test_transient_failures_are_logged_and_raised_for_sqs_to_retry(error: Exception, h: Harness) -> None:
    h.pluggy.add_item()
    h.pluggy.error = error
    with pytest.raises(type(error)):
        h.processor.process(h.message({"event": "item/updated", "itemId": ITEM}))
    record = h.log.records["evt-1"]
    assert (record["status"], record["permanent"]) == ("FAILED", False)
    assert record["error"].startswith(type(error).__name__)
    assert h.dlq.sent == []
    h.pluggy.error = None
    h.processor.process(h.message({"event": "item/updated", "itemId": ITEM}))
    assert h.log.records["evt-1"]["status"] == "PROCESSED" and h.log.records["evt-1"]["attempts"] == 2


@pytest.mark.parametrize(
    "body",
    [
        '{"event": "item/updated", "eventId": ',  # not JSON
        '["item/updated"]',  # not an object
        '{"eventId": "e-1", "itemId": "item-1"}',  # no event
        '{"event": "", "itemId": "item-1"}',
        '{"event": "item/updated"}',  # no itemId for its handler
        '{"event": "transactions/updated", "itemId": "item-1"}',  # no accountId
    ],
)
def test_poison_messages_are_logged_permanent_and_parked(body: str, h: Harness) -> None:
    h.processor.process(h.message(body))  # returns: the message is done with, not retried
    [parked] = h.dlq.sent
    assert parked["body"] == body
    assert (parked["event_id"], parked["event_type"], parked["group_id"]) == ("evt-1", "item/updated", f"item:{ITEM}")
    assert parked["extra_attributes"]["failureReason"]
    record = h.log.records["evt-1"]
    assert (record["status"], record["permanent"]) == ("FAILED", True)
    assert h.pluggy.calls == []


def test_a_poison_message_without_attributes_is_parked_under_its_message_id(h: Harness) -> None:
    h.processor.process(QueueMessage("m-9", "not json"))
    [parked] = h.dlq.sent
    assert (parked["event_id"], parked["event_type"], parked["group_id"]) == ("sqs-m-9", "unknown", "sqs-m-9")
    assert h.log.records["sqs-m-9"]["permanent"] is True


# --- credentials ---------------------------------------------------------------------------------


def test_pluggy_credentials_from_the_environment_or_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from pluggy_pipeline import aws
    from pluggy_pipeline.config import ProcessorSettings

    base = {
        "EVENTS_TABLE_NAME": "e",
        "RECORDS_TABLE_NAME": "r",
        "EVENT_QUEUE_URL": "q",
        "EVENT_DLQ_URL": "d",
        "PLUGGY_CLIENT_ID": "env-id",
        "PLUGGY_CLIENT_SECRET": "env-secret",
    }
    assert pluggy_credentials(ProcessorSettings.from_env(base))() == ("env-id", "env-secret")
    with mock_aws():
        aws.reset_clients()
        secrets = SESSION.client("secretsmanager", region_name=REGION)
        good = secrets.create_secret(Name="good", SecretString='{"clientId": "s-id", "clientSecret": "s-secret"}')
        bad = secrets.create_secret(Name="bad", SecretString="not json")
        settings = ProcessorSettings.from_env({**base, "PLUGGY_CREDENTIALS_SECRET_ARN": good["ARN"]})
        assert pluggy_credentials(settings)() == ("s-id", "s-secret")
        settings = ProcessorSettings.from_env({**base, "PLUGGY_CREDENTIALS_SECRET_ARN": bad["ARN"]})
        with pytest.raises(PermanentError, match="not JSON"):
            pluggy_credentials(settings)()
        aws.reset_clients()


# --- clientUserId binding ------------------------------------------------------------------------


def _binding(h: Harness) -> tuple[Any, Any, Any]:
    stored = h.item() or {}
    return stored.get("clientUserId"), stored.get("clientUserIdSource"), stored.get("userPk")


def test_an_item_pluggy_returns_without_client_user_id_is_bound_from_its_item_event(h: Harness) -> None:
    h.pluggy.add_item(clientUserId=None)  # GET /items/{id} without clientUserId (it is not in Pluggy's OAS Item)
    h.run("item/created", itemId=ITEM, clientUserId="app-user-7")
    assert _binding(h) == ("app-user-7", "webhook", "USER#app-user-7")
    assert h.item()["userSk"] == f"ITEM#{ITEM}"  # type: ignore[index]
    assert h.item()["data"].get("clientUserId") is None  # type: ignore[index]  # Pluggy's object stays Pluggy's


def test_pluggy_s_own_client_user_id_wins_over_the_payload_s(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h.pluggy.add_item()  # Pluggy says user-1
    h.run("item/updated", itemId=ITEM, clientUserId="someone-else")
    assert _binding(h) == ("user-1", "pluggy", "USER#user-1")
    logged = caplog.text
    assert "differs from the item's binding" in logged
    assert "someone-else" not in logged  # the ids themselves are not logged


def test_a_webhook_binding_is_kept_by_later_syncs_and_never_replaced_by_another_payload(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.pluggy.add_item(clientUserId=None)
    h.run("item/created", itemId=ITEM, clientUserId="app-user-7")
    h.run("pipeline/sync_item", itemId=ITEM, full=True)  # no word on the user: the binding stays
    assert _binding(h) == ("app-user-7", "webhook", "USER#app-user-7")
    h.run("item/updated", itemId=ITEM, clientUserId="app-user-8")  # a later payload cannot move the item
    assert _binding(h) == ("app-user-7", "webhook", "USER#app-user-7")
    assert "differs from the item's binding" in caplog.text


def test_pluggy_s_value_replaces_a_binding_taken_from_a_webhook(h: Harness) -> None:
    h.pluggy.add_item(clientUserId=None)
    h.run("item/created", itemId=ITEM, clientUserId="app-user-7")
    h.pluggy.items[ITEM]["clientUserId"] = "app-user-9"  # Pluggy's fact, once it says it
    h.run("item/updated", itemId=ITEM)
    assert _binding(h) == ("app-user-9", "pluggy", "USER#app-user-9")


@pytest.mark.parametrize("value", [None, "", 42, ["u"], "x" * 257, "tab\there", " padded", "line\nbreak"])
def test_unusable_client_user_ids_in_a_payload_bind_nothing(h: Harness, value: Any) -> None:
    h.pluggy.add_item(clientUserId=None)
    h.run("item/created", itemId=ITEM, clientUserId=value)
    assert _binding(h) == (None, None, None)


def test_only_item_events_bind_a_user(h: Harness) -> None:
    h.pluggy.add_item(clientUserId=None)
    h.run("account/updated", itemId=ITEM, clientUserId="app-user-7")
    h.run("pipeline/sync_item", itemId=ITEM, clientUserId="app-user-7")
    assert _binding(h) == (None, None, None)
    h.run("item/login_succeeded", itemId=ITEM, clientUserId="app-user-7")
    assert _binding(h) == ("app-user-7", "webhook", "USER#app-user-7")


def test_the_tombstone_of_a_webhook_bound_item_keeps_its_user(h: Harness) -> None:
    h.pluggy.add_item(clientUserId=None)
    h.run("item/created", itemId=ITEM, clientUserId="app-user-7")
    del h.pluggy.items[ITEM]
    h.run("item/deleted", itemId=ITEM, clientUserId="app-user-7")
    assert (h.item() or {}).get("deleted") is True
    assert _binding(h)[0::2] == ("app-user-7", "USER#app-user-7")
