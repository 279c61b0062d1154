"""RecordStore against moto's DynamoDB, RecordsTable created from template.yaml (keys, LSI and GSIs)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from pluggy_pipeline.errors import PermanentError, TransientError
from pluggy_pipeline.records import (
    BATCH_SIZE,
    RecordStore,
    account_key,
    from_attributes,
    item_key,
    to_attributes,
    transaction_key,
)
from pluggy_pipeline_local.template import create_resources

from tests.conftest import REGION, TEMPLATE

# One boto3 session for the module: under moto, boto3.client() builds a new one (~0.2 s) every time.
SESSION = boto3.session.Session()


class Table:
    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    def store(self, **kwargs: Any) -> RecordStore:
        return RecordStore(lambda: self.client, self.name, **kwargs)

    def raw(self, key: dict[str, str]) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.name, Key={k: {"S": v} for k, v in key.items()}, ConsistentRead=True)
        return item.get("Item")

    def count(self) -> int:
        return int(self.client.scan(TableName=self.name, Select="COUNT")["Count"])


@pytest.fixture
def table() -> Iterator[Table]:
    with mock_aws():
        client = SESSION.client("dynamodb", region_name=REGION)
        only_records = {"Resources": {"RecordsTable": TEMPLATE["Resources"]["RecordsTable"]}}
        resources = create_resources(only_records, dynamodb=client, sqs=None)
        yield Table(client, resources.tables["RecordsTable"])


@pytest.fixture
def store(table: Table) -> RecordStore:
    return table.store()


def tx(account: str, tx_id: str, date: str, amount: str = "-10.50") -> dict[str, Any]:
    return {
        **transaction_key(account, tx_id),
        "kind": "transaction",
        "transactionId": tx_id,
        "accountId": account,
        "txDate": f"{date}#{tx_id}",
        "data": {"id": tx_id, "date": date, "amount": Decimal(amount)},
    }


def item(item_id: str, user: str | None = None, synced_at: str = "2026-11-22T10:00:00.000Z") -> dict[str, Any]:
    record: dict[str, Any] = {
        **item_key(item_id),
        "kind": "item",
        "itemId": item_id,
        "updatedAt": "2026-11-22T09:00:00.000Z",
        "syncedAt": synced_at,
        "syncPk": "ITEM",
        "syncSk": synced_at,
        "data": {"id": item_id},
    }
    if user:
        record.update(clientUserId=user, userPk=f"USER#{user}", userSk=f"ITEM#{item_id}")
    return record


# --- key design reads ----------------------------------------------------------------------------


def test_item_by_id_and_items_by_client_user_id(store: RecordStore) -> None:
    store.batch_put([item("i-1", "ana"), item("i-2", "ana"), item("i-3", "bia"), item("i-4")])
    got = store.get(item_key("i-2"))
    assert got is not None and got["itemId"] == "i-2" and got["data"] == {"id": "i-2"}
    assert store.get(item_key("missing")) is None
    assert sorted(r["itemId"] for r in store.items_of_user("ana")) == ["i-1", "i-2"]
    assert [r["itemId"] for r in store.items_of_user("bia")] == ["i-3"]
    assert store.items_of_user("nobody") == []


def test_accounts_of_an_item_are_one_query_without_the_item_or_other_items(store: RecordStore) -> None:
    store.batch_put(
        [
            item("i-1"),
            {**account_key("i-1", "a-1"), "accountId": "a-1", "kind": "account"},
            {**account_key("i-1", "a-2"), "accountId": "a-2", "kind": "account"},
            {**account_key("i-2", "a-3"), "accountId": "a-3", "kind": "account"},
        ]
    )
    before = store.calls.get("query", 0)
    assert sorted(a["accountId"] for a in store.accounts_of_item("i-1")) == ["a-1", "a-2"]
    assert store.calls["query"] == before + 1
    assert store.accounts_of_item("i-9") == []


def test_transactions_by_date_range_newest_first(store: RecordStore) -> None:
    rows = [
        tx("a-1", "t-1", "2026-11-01T03:00:00.000Z"),
        tx("a-1", "t-2", "2026-11-05T03:00:00.000Z"),
        tx("a-1", "t-3", "2026-11-05T03:00:00.000Z"),
        tx("a-1", "t-4", "2026-11-10T03:00:00.000Z"),
        tx("a-1", "t-5", "2026-11-20T03:00:00.000Z"),
        tx("a-2", "t-6", "2026-11-05T03:00:00.000Z"),  # another account: never in a-1's range
    ]
    store.batch_put(rows)
    ids = [r["transactionId"] for r in store.transactions_by_date("a-1", "2026-11-05", "2026-11-10")]
    assert ids == ["t-4", "t-3", "t-2"]  # inclusive at both ends, newest first, ties by id
    assert [r["transactionId"] for r in store.transactions_by_date("a-1")] == ["t-5", "t-4", "t-3", "t-2", "t-1"]
    oldest_first = store.transactions_by_date("a-1", date_to="2026-11-05", newest_first=False)
    assert [r["transactionId"] for r in oldest_first] == ["t-1", "t-2", "t-3"]
    assert [r["transactionId"] for r in store.transactions_by_date("a-1", "2026-11-06", "2026-11-09")] == []
    newest = next(iter(store.transactions_by_date("a-1", "2026-11-20T00:00:00.000Z")))
    assert newest["data"]["amount"] == Decimal("-10.50")  # the LSI projects the whole record


def test_transaction_by_id_through_the_gsi(store: RecordStore) -> None:
    store.batch_put([tx("a-1", "t-1", "2026-11-01"), tx("a-2", "t-2", "2026-11-02", "99.99")])
    found = store.find_transaction("t-2")
    assert found is not None
    assert (found["pk"], found["sk"], found["accountId"]) == ("ACCOUNT#a-2", "TX#t-2", "a-2")
    assert found["data"]["amount"] == Decimal("99.99")  # fetched by key: the GSI only holds keys
    assert store.find_transaction("t-404") is None
    assert sorted(k["sk"] for k in store.transaction_keys_of_account("a-1")) == ["TX#t-1"]


def test_query_follows_every_page(store: RecordStore) -> None:
    store.batch_put(tx("a-1", f"t-{n:02d}", "2026-11-01") for n in range(7))
    before = store.calls.get("query", 0)
    rows = list(
        store.query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "ACCOUNT#a-1"}},
            Limit=2,
        )
    )
    assert len(rows) == 7
    assert store.calls["query"] - before == 4


def test_items_synced_before_a_cutoff_oldest_first_with_a_limit(store: RecordStore) -> None:
    store.batch_put(
        [
            item("i-new", synced_at="2026-11-22T09:00:00.000Z"),
            item("i-old", synced_at="2026-11-01T00:00:00.000Z"),
            item("i-mid", synced_at="2026-11-10T00:00:00.000Z"),
            {**item_key("i-gone"), "kind": "item", "deleted": True},  # a tombstone has no sync keys
        ]
    )
    assert store.items_synced_before("2026-11-20T00:00:00.000Z") == ["i-old", "i-mid"]
    assert store.items_synced_before("2026-11-20T00:00:00.000Z", limit=1) == ["i-old"]
    assert store.items_synced_before("2026-01-01") == []


# --- batched writes ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 25, 26, 60])
def test_batch_put_writes_in_chunks_of_25(n: int, table: Table) -> None:
    store = table.store()
    stats = store.batch_put(tx("a-1", f"t-{i:03d}", "2026-11-01") for i in range(n))
    assert (stats.written, stats.batches, stats.retries) == (n, math.ceil(n / BATCH_SIZE), 0)
    assert store.calls.get("batch_write_item", 0) == math.ceil(n / 25)
    assert table.count() == n


def test_batch_delete_removes_exactly_the_keys(store: RecordStore, table: Table) -> None:
    store.batch_put(tx("a-1", f"t-{i:02d}", "2026-11-01") for i in range(30))
    stats = store.batch_delete(transaction_key("a-1", f"t-{i:02d}") for i in range(0, 30, 2))
    assert (stats.written, stats.batches) == (15, 1)
    assert sorted(k["sk"] for k in store.transaction_keys_of_account("a-1")) == [
        f"TX#t-{i:02d}" for i in range(1, 30, 2)
    ]
    assert table.count() == 15


class Throttling:
    """A DynamoDB client whose BatchWriteItem leaves the last request of each call unprocessed, `times` times."""

    def __init__(self, real: Any, times: int) -> None:
        self.real = real
        self.times = times
        self.requests: list[int] = []

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
        [(name, requests)] = RequestItems.items()
        self.requests.append(len(requests))
        if self.times > 0:
            self.times -= 1
            done, left = requests[:-1], requests[-1:]
            if done:
                self.real.batch_write_item(RequestItems={name: done})
            return {"UnprocessedItems": {name: left}}
        return self.real.batch_write_item(RequestItems={name: requests})  # type: ignore[no-any-return]


def test_unprocessed_items_are_retried_until_written(table: Table) -> None:
    fake = Throttling(table.client, times=2)
    sleeps: list[float] = []
    store = RecordStore(lambda: fake, table.name, sleep=sleeps.append)
    stats = store.batch_put(tx("a-1", f"t-{i:02d}", "2026-11-01") for i in range(30))
    assert fake.requests == [25, 1, 1, 5]  # the first chunk needed two retries of its last item
    assert (stats.written, stats.batches, stats.retries) == (30, 2, 2)
    assert store.calls["batch_write_item"] == 4
    assert sleeps == [0.05, 0.1]  # exponential backoff
    assert table.count() == 30


def test_unprocessed_items_that_never_clear_are_a_transient_error(table: Table) -> None:
    fake = Throttling(table.client, times=10**6)
    store = RecordStore(lambda: fake, table.name, sleep=lambda _s: None, max_unprocessed_retries=3)
    with pytest.raises(TransientError, match="unprocessed"):
        store.batch_put([tx("a-1", "t-1", "2026-11-01")])
    assert store.calls["batch_write_item"] == 4  # the first attempt and 3 retries


# --- versioned writes and numbers ----------------------------------------------------------------


def test_versioned_put_refuses_an_older_updated_at(store: RecordStore) -> None:
    key = account_key("i-1", "a-1")
    newer = {**key, "updatedAt": "2026-11-22T10:00:00.000Z", "data": {"name": "new"}}
    older = {**key, "updatedAt": "2026-11-22T09:59:59.999Z", "data": {"name": "old"}}
    assert store.put_versioned(newer) is True
    assert store.put_versioned(older) is False
    assert store.get(key)["data"] == {"name": "new"}  # type: ignore[index]
    same = {**newer, "data": {"name": "same version again"}}
    assert store.put_versioned(same) is True  # a replay of the same version is idempotent
    later = {**key, "updatedAt": "2026-11-22T10:00:00.001Z", "data": {"name": "later"}}
    assert store.put_versioned(later) is True
    assert store.get(key)["data"] == {"name": "later"}  # type: ignore[index]


def test_versioned_put_on_another_attribute_and_over_unversioned_records(store: RecordStore) -> None:
    key = {"pk": "PAYMENT_INTENT#p-1", "sk": "STATUS"}
    store.batch_put([{**key, "status": "legacy"}])  # no version stored: any versioned write wins
    assert store.put_versioned({**key, "status": "COMPLETED", "version": "2#b"}, version_attribute="version")
    assert not store.put_versioned({**key, "status": "CREATED", "version": "1#c"}, version_attribute="version")
    assert store.get(key)["status"] == "COMPLETED"  # type: ignore[index]


def test_decimal_amounts_round_trip_exactly(store: RecordStore, table: Table) -> None:
    amounts = [Decimal("0.1"), Decimal("-1234.56"), Decimal("0.30"), Decimal("12345678901234567890.123456789")]
    record = {
        **transaction_key("a-1", "t-1"),
        "data": {"amount": amounts[0], "balance": amounts[1], "fees": [amounts[2]], "meta": {"big": amounts[3]}},
    }
    store.batch_put([record])
    raw = table.raw(transaction_key("a-1", "t-1"))
    assert raw is not None and raw["data"]["M"]["amount"] == {"N": "0.1"}
    data = store.get(transaction_key("a-1", "t-1"))["data"]  # type: ignore[index]
    assert [data["amount"], data["balance"], data["fees"][0], data["meta"]["big"]] == amounts
    assert all(type(v) is Decimal for v in (data["amount"], data["balance"], data["fees"][0], data["meta"]["big"]))
    assert data["amount"] + data["amount"] + data["amount"] == Decimal("0.3")  # no binary float drift
    with pytest.raises(TypeError, match="Float"):
        to_attributes({"amount": 0.1})  # a float can never be written by accident


def test_attributes_serialisation_drops_top_level_nones_only() -> None:
    attrs = to_attributes({"pk": "p", "gone": None, "data": {"kept": None, "n": Decimal(5)}})
    assert "gone" not in attrs
    assert from_attributes(attrs) == {"pk": "p", "data": {"kept": None, "n": Decimal(5)}}


def test_update_and_delete(store: RecordStore) -> None:
    key = account_key("i-1", "a-1")
    store.batch_put([{**key, "txWatermark": "2026-11-01T00:00:00.000Z", "data": {"x": Decimal(1)}}])
    store.update(key, {"txWatermark": "2026-11-02T00:00:00.000Z", "status": "OK"})
    got = store.get(key)
    assert got is not None
    assert (got["txWatermark"], got["status"], got["data"]) == ("2026-11-02T00:00:00.000Z", "OK", {"x": Decimal(1)})
    store.delete(key)
    assert store.get(key) is None


# --- errors --------------------------------------------------------------------------------------


def test_a_missing_table_is_permanent(table: Table) -> None:
    store = RecordStore(lambda: table.client, "no-such-table")
    with pytest.raises(PermanentError, match="ResourceNotFoundException"):
        store.get(item_key("i-1"))


def test_throttling_is_transient_and_conditional_failures_are_not_errors(table: Table) -> None:
    class Throttled:
        def get_item(self, **_kwargs: Any) -> dict[str, Any]:
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "GetItem"
            )

        def batch_write_item(self, **_kwargs: Any) -> dict[str, Any]:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"}}, "BatchWriteItem")

    store = RecordStore(Throttled, table.name)
    with pytest.raises(TransientError, match="ProvisionedThroughputExceededException"):
        store.get(item_key("i-1"))
    with pytest.raises(TransientError, match="InternalServerError"):
        store.batch_put([item("i-1")])
