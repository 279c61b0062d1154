"""Processor.process_batch: coalescing per message group, holds on rate limits, parking after real failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws
from pluggy_pipeline import coalesce
from pluggy_pipeline.errors import TransientError
from pluggy_pipeline.event_store import ProcessingLog, StartOutcome
from pluggy_pipeline.pluggy_client import RateLimitedError
from pluggy_pipeline.processor import QueueMessage, usable_client_user_id
from pluggy_pipeline_local.template import create_resources

from tests.conftest import REGION, TEMPLATE
from tests.unit.test_processor import CARD, CHECKING, ITEM, SESSION, Harness, records_harness, stamp


@pytest.fixture
def h() -> Iterator[Harness]:
    with records_harness() as harness:
        yield harness


def message(n: int, event: str, item: str = ITEM, **payload: Any) -> QueueMessage:
    body = {"event": event, "eventId": f"evt-{n}", "itemId": item, **payload}
    attributes = {"eventId": f"evt-{n}", "eventType": event, "groupId": f"item:{item}", "origin": "webhook"}
    return QueueMessage(f"msg-{n}", json.dumps(body), attributes, f"item:{item}", f"receipt-{n}")


def item_sync_as_pluggy_notifies_it(first: int = 1) -> list[QueueMessage]:
    """item/updated, then one transactions/created per account (pluggy-api.md: webhooks of one sync)."""
    created = [
        message(first + n, "transactions/created", accountId=account, transactionsCreatedAtFrom=stamp(1))
        for n, account in enumerate((CHECKING, CARD), start=1)
    ]
    return [message(first, "item/updated"), *created]


def test_an_item_sync_as_pluggy_notifies_it_is_one_sync_not_one_per_event(h: Harness) -> None:
    h.pluggy.add_item(rows=3)
    one_by_one = h.build()
    for each in item_sync_as_pluggy_notifies_it(first=10):
        one_by_one.process(each)
    calls_alone, h.pluggy.calls = len(h.pluggy.calls), []
    mirror_alone = h.scan()

    assert h.processor.process_batch(item_sync_as_pluggy_notifies_it(first=1)) == []
    # item + accounts + one read per account, where one by one the two links read again.
    assert [name for name, _ in h.pluggy.calls] == [
        "get_item",
        "list_accounts",
        "iter_transactions",
        "iter_transactions",
    ]
    assert calls_alone == 6
    assert h.scan() == mirror_alone
    for n in (1, 2, 3):  # each event its own PROCESSED record, with the unit's counts
        record = h.log.records[f"evt-{n}"]
        assert record["status"] == "PROCESSED" and record["counts"]["coalesced"] == 3


def test_a_transactions_created_reads_from_its_own_start_when_older_than_the_watermark(h: Harness) -> None:
    h.pluggy.add_item(rows=2)
    h.processor.process_batch([message(1, "item/updated")])
    h.pluggy.calls = []
    late = message(3, "transactions/created", accountId=CHECKING, transactionsCreatedAtFrom=stamp(0))
    assert h.processor.process_batch([message(2, "item/updated"), late]) == []
    reads = {args[0]: args[1] for name, args in h.pluggy.calls if name == "iter_transactions"}
    assert reads[CHECKING] == stamp(0)  # not just past the watermark: the event said rows start earlier


def test_a_transactions_created_without_its_item_event_keeps_its_one_link_read(h: Harness) -> None:
    h.pluggy.add_item(rows=2)
    h.processor.process_batch([message(1, "item/updated")])
    h.pluggy.calls = []
    link = f"https://api.pluggy.ai/v2/transactions?accountId={CHECKING}&createdAtFrom={stamp(1)}"
    alone = message(2, "transactions/created", accountId=CHECKING, createdTransactionsLink=link)
    assert h.processor.process_batch([alone]) == []
    # FakePluggy's iter_link reads through its iter_transactions: one link read, no item sync.
    assert [name for name, _ in h.pluggy.calls] == ["iter_link", "iter_transactions"]


def test_updated_and_deleted_ids_are_one_request_per_account(h: Harness) -> None:
    h.pluggy.add_item(rows=4)
    h.processor.process_batch([message(1, "item/updated")])
    gone = f"{CHECKING}-tx-1"
    h.pluggy.transactions[CHECKING] = [tx for tx in h.pluggy.transactions[CHECKING] if tx["id"] != gone]
    h.pluggy.calls = []
    batch = [
        message(2, "transactions/updated", accountId=CHECKING, transactionIds=[f"{CHECKING}-tx-0", gone]),
        message(3, "transactions/updated", accountId=CHECKING, transactionIds=[f"{CHECKING}-tx-2"]),
        message(4, "transactions/deleted", accountId=CHECKING, transactionIds=[gone, f"{CHECKING}-tx-3"]),
        message(5, "transactions/updated", accountId=CARD, transactionIds=[f"{CARD}-tx-0"]),
    ]
    assert h.processor.process_batch(batch) == []
    assert h.pluggy.calls == [
        ("get_transactions_by_ids", (CHECKING, [f"{CHECKING}-tx-0", gone, f"{CHECKING}-tx-2", f"{CHECKING}-tx-3"])),
        ("get_transactions_by_ids", (CARD, [f"{CARD}-tx-0"])),
    ]
    assert gone not in h.tx_ids(CHECKING) and len(h.tx_ids(CHECKING)) == 3  # only what Pluggy no longer has
    assert h.log.records["evt-4"]["counts"]["transactionsKept"] == 1


def test_a_rate_limit_holds_the_group_as_long_as_it_lasts_and_never_parks_it(h: Harness) -> None:
    h.pluggy.add_item(rows=1)
    batch = item_sync_as_pluggy_notifies_it()
    h.pluggy.error = RateLimitedError("429", retry_after=42.0)
    for _ in range(20):  # far more receives than PROCESSOR_MAX_ATTEMPTS
        assert h.processor.process_batch(batch) == [m.message_id for m in batch]
    assert h.queue.held[-3:] == [(m.receipt_handle, 42.0) for m in batch]
    assert h.dlq.sent == []
    assert {h.log.records[f"evt-{n}"]["attempts"] for n in (1, 2, 3)} == {0}  # holds are not attempts
    h.pluggy.error = None
    assert h.processor.process_batch(batch) == []
    assert h.log.records["evt-1"]["status"] == "PROCESSED"


def test_real_failures_park_the_event_after_max_attempts(h: Harness) -> None:
    h.pluggy.add_item(rows=1)
    processor = h.build(max_attempts=3)
    failing = [message(1, "item/updated")]
    h.pluggy.error = TransientError("Pluggy 503")
    for _ in range(3):
        assert processor.process_batch(failing) == ["msg-1"]
    assert h.queue.held == []  # a real failure waits out the visibility timeout
    assert processor.process_batch(failing) == []  # the 4th receive parks it instead of trying again
    [parked] = h.dlq.sent
    assert parked["event_id"] == "evt-1" and parked["extra_attributes"] == {
        "failureReason": "gave up after 3 failed attempts",
        "failureKind": "attempts",
    }
    assert h.log.records["evt-1"]["error"] == "TransientError: Pluggy 503"  # the last error stays
    h.pluggy.error = None
    assert processor.process_batch(failing) == []  # redriven once Pluggy is back: the count started again
    assert h.log.records["evt-1"]["status"] == "PROCESSED"


def test_the_event_log_counts_attempts_not_holds_and_restarts_the_count_after_giving_up() -> None:
    with mock_aws():
        client = SESSION.client("dynamodb", region_name=REGION)
        events = {"Resources": {"EventsTable": TEMPLATE["Resources"]["EventsTable"]}}
        log = ProcessingLog(lambda: client, create_resources(events, dynamodb=client, sqs=None).tables["EventsTable"])
        assert log.start_attempt("e-1", "item/updated", "{}") == (StartOutcome.STARTED, 1)
        log.hold("e-1", "RateLimitedError: 429")
        assert log.start_attempt("e-1", "item/updated", "{}") == (StartOutcome.STARTED, 1)
        log.fail("e-1", "TransientError: 503", permanent=False)
        assert log.start_attempt("e-1", "item/updated", "{}") == (StartOutcome.STARTED, 2)
        log.give_up("e-1")
        record = client.get_item(TableName=log._table, Key={"eventId": {"S": "e-1"}})["Item"]
        assert (record["error"]["S"], record["parkedAfterAttempts"]["N"], record["holds"]["N"]) == (
            "TransientError: 503",
            "1",
            "1",
        )
        assert log.start_attempt("e-1", "item/updated", "{}") == (StartOutcome.STARTED, 1)


def test_a_bad_event_in_a_unit_parks_alone_and_the_rest_are_processed(h: Harness) -> None:
    h.pluggy.add_item(rows=1)
    bad = message(2, "item/updated")
    bad = QueueMessage(
        bad.message_id,
        json.dumps({"event": "item/updated", "eventId": "evt-2"}),
        bad.attributes,
        bad.group_id,
        bad.receipt_handle,
    )  # no itemId
    assert h.processor.process_batch([message(1, "item/updated"), bad, message(3, "item/updated")]) == []
    assert [m["event_id"] for m in h.dlq.sent] == ["evt-2"]
    assert h.log.records["evt-1"]["status"] == h.log.records["evt-3"]["status"] == "PROCESSED"
    assert h.item() is not None


def test_a_failing_group_hands_back_only_its_own_messages(h: Harness) -> None:
    h.pluggy.add_item(rows=1)
    h.pluggy.add_item("item-2", rows=1)
    h.pluggy.accounts["item-2"] = []
    h.pluggy.error = None
    other = message(2, "item/updated", item="item-2")
    original = h.pluggy.get_item

    def flaky(item_id: str) -> dict[str, Any]:
        if item_id == ITEM:
            raise TransientError("Pluggy 503")
        return original(item_id)

    h.pluggy.get_item = flaky  # type: ignore[method-assign]  # one item's reads fail, the other's do not
    assert h.processor.process_batch([message(1, "item/updated"), other, message(3, "item/updated")]) == [
        "msg-1",
        "msg-3",
    ]
    assert h.log.records["evt-2"]["status"] == "PROCESSED"


def test_groups_left_when_time_runs_out_go_back_unstarted_and_visible_at_once(h: Harness) -> None:
    h.pluggy.add_item(rows=1)
    batch = item_sync_as_pluggy_notifies_it()
    assert h.processor.process_batch(batch, time_left=lambda: 3.0) == [m.message_id for m in batch]
    assert h.queue.held == [(m.receipt_handle, 0.0) for m in batch]
    assert h.log.records == {} and h.pluggy.calls == []


def test_plan_orders_steps_by_their_first_event_and_keeps_the_first_user() -> None:
    events = [
        coalesce.Event("1", "transactions/updated", {"accountId": "a", "transactionIds": ["t1"]}),
        coalesce.Event("2", "item/updated", {"itemId": "i", "clientUserId": "user-1"}),
        coalesce.Event("3", "pipeline/sync_item", {"itemId": "i", "full": True}),
        coalesce.Event("4", "item/updated", {"itemId": "i", "clientUserId": "user-2"}),
        coalesce.Event("5", "connector/status_updated", {"connectorId": 1}),
        coalesce.Event("6", "transactions/deleted", {"accountId": "a", "transactionIds": ["t2", "t1"]}),
    ]
    steps = coalesce.plan(events, usable_client_user_id)
    assert steps == [
        coalesce.IdsCheck("a", updated={"t1": None}, deleted={"t2": None, "t1": None}),
        coalesce.ItemSync("i", full=True, client_user_id="user-1"),
        coalesce.Single(events[4]),
    ]


def test_a_link_s_created_at_from_is_where_its_rows_start() -> None:
    link = "https://api.pluggy.ai/v2/transactions?accountId=a&createdAtFrom=2026-11-22T09%3A00%3A00.000Z"
    assert coalesce.created_from({"createdTransactionsLink": link}) == "2026-11-22T09:00:00.000Z"
    assert coalesce.created_from({"transactionsCreatedAtFrom": "x", "createdTransactionsLink": link}) == "x"
    assert coalesce.created_from({}) is None


def test_a_transactions_deleted_for_an_item_never_stored_only_asks_about_its_ids(h: Harness) -> None:
    h.pluggy.add_item(rows=2)
    gone = message(1, "transactions/deleted", accountId=CHECKING, transactionIds=["no-such-row"])
    assert h.processor.process_batch([gone]) == []
    assert [name for name, _ in h.pluggy.calls] == ["get_transactions_by_ids"]  # no sync of the unknown item
    assert h.item() is None
