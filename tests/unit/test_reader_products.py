"""MirrorReader's product reads against moto's RecordsTable (template.yaml), through a client that stops at `Limit`
as DynamoDB does: how many calls each read makes, the pages' boundaries, the key ranges, the cursor's checks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pluggy_pipeline.processor import account_ref_record, item_record
from pluggy_pipeline.products import (
    bill_record,
    consent_record,
    identity_record,
    investment_record,
    investment_transaction_record,
    loan_record,
)
from pluggy_pipeline.reader import (
    InvalidRequest,
    MirrorReader,
    PageQuery,
    RecordNotFound,
    Series,
    date_range,
    decode_position,
    encode_cursor,
)
from pluggy_pipeline.records import RecordStore
from pluggy_pipeline_local.template import create_resources

from tests.conftest import REGION, TEMPLATE
from tests.unit.test_reader import LikeDynamoDB

SESSION = boto3.session.Session()
ITEM = "i-1"


@pytest.fixture
def store() -> Iterator[RecordStore]:
    with mock_aws():
        client = SESSION.client("dynamodb", region_name=REGION)
        only_records = {"Resources": {"RecordsTable": TEMPLATE["Resources"]["RecordsTable"]}}
        name = create_resources(only_records, dynamodb=client, sqs=None).tables["RecordsTable"]
        dynamodb = LikeDynamoDB(client)
        yield RecordStore(lambda: dynamodb, name)


@pytest.fixture
def reader(store: RecordStore) -> MirrorReader:
    return MirrorReader(store)


def item(item_id: str = ITEM) -> dict[str, Any]:
    return item_record({"id": item_id, "status": "UPDATED", "updatedAt": "2026-11-01T00:00:00.000Z"}, "2026-11-01")


def rows_of(investment_id: str, count: int) -> list[dict[str, Any]]:
    return [
        investment_transaction_record(
            ITEM, investment_id, {"id": f"r{n:03d}", "date": f"2026-10-{1 + n % 28:02d}", "amount": Decimal(n)}
        )
        for n in range(count)
    ]


def calls(store: RecordStore) -> int:
    return sum(store.calls.values())


# --- investment transactions ------------------------------------------------------------------------------


def test_one_query_a_page_and_no_empty_last_page(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put(rows_of("inv-1", 10))
    store.calls.clear()
    first = reader.investment_transactions("inv-1", limit=5)
    assert store.calls == {"query": 1} and first["nextCursor"]
    second = reader.investment_transactions("inv-1", limit=5, cursor=first["nextCursor"])
    # Exactly the rows left: DynamoDB (LikeDynamoDB) still returns a LastEvaluatedKey; the extra row says "last".
    assert second["nextCursor"] is None and len(second["transactions"]) == 5
    ids = [t["id"] for t in first["transactions"] + second["transactions"]]
    assert len(set(ids)) == 10 and store.calls == {"query": 2}


def test_investment_rows_newest_first_by_date_then_id(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put(rows_of("inv-1", 40))  # dates wrap after 28 rows: two rows on most early dates
    page = reader.investment_transactions("inv-1", limit=500)
    keys = [(t["data"]["date"], t["id"]) for t in page["transactions"]]
    assert keys == sorted(keys, reverse=True) and len(keys) == 40
    assert page["transactions"][0]["data"]["amount"] == "27"  # a number as its digits


def test_a_date_range_bounds_the_index_query_inclusively() -> None:
    query = Series.of_investment("inv-1").by_date("2026-10-01", "2026-10-31")
    assert query["IndexName"] == "byDate" and query["ScanIndexForward"] is False
    assert query["KeyConditionExpression"] == "pk = :pk AND txDate BETWEEN :low AND :high"
    assert query["ExpressionAttributeValues"] == {
        ":pk": {"S": "INVESTMENT#inv-1"},
        ":low": {"S": "2026-10-01"},
        ":high": {"S": "2026-10-31\uffff"},
    }
    assert Series.of_investment("inv-1").by_date(None, None)["KeyConditionExpression"] == "pk = :pk"


def test_a_position_must_be_a_row_of_this_series() -> None:
    query = PageQuery(None, None, 10, None)
    row = {"pk": "INVESTMENT#inv-1", "sk": "ITX#r1", "txDate": "2026-10-02#r1"}
    assert decode_position(encode_cursor(query, row), Series.of_investment("inv-1"), query) == row
    refusals = {
        "was issued for another investment": (row, Series.of_investment("inv-2")),
        "was issued for another account": (row, Series.of_account("inv-1")),
        "is not a cursor this API issued": ({**row, "sk": "TX#r1"}, Series.of_investment("inv-1")),
    }
    for reason, (position, series) in refusals.items():
        with pytest.raises(InvalidRequest) as caught:
            decode_position(encode_cursor(query, position), series, query)
        assert caught.value.fields == {"cursor": reason}


def test_bad_parameters_are_refused_before_any_read(store: RecordStore, reader: MirrorReader) -> None:
    with pytest.raises(InvalidRequest) as caught:
        reader.investment_transactions("", date_from="2026-10-05", date_to="2026-10-01", limit=0)
    assert caught.value.fields == {"investmentId": "must be a non-empty string"}
    with pytest.raises(InvalidRequest) as caught:
        reader.investment_transactions("inv-1", date_from="2026-10-05", date_to="2026-10-01", limit=0)
    assert set(caught.value.fields) == {"from", "limit"}
    assert calls(store) == 0


# --- bills ----------------------------------------------------------------------------------------------------


def test_bills_by_due_date_in_one_query(store: RecordStore, reader: MirrorReader) -> None:
    dues = ["2026-09-10T00:00:00.000Z", "2026-10-10T23:59:59.999Z", "2026-11-10T00:00:00.000Z", ""]
    store.batch_put([bill_record(ITEM, "card", {"id": f"b{n}", "dueDate": due}) for n, due in enumerate(dues)])
    store.calls.clear()
    assert [b["id"] for b in reader.bills("card")] == ["b2", "b1", "b0", "b3"]  # no due date: last (oldest)
    assert store.calls == {"query": 1}
    assert [b["id"] for b in reader.bills("card", date_from="2026-10-10", date_to="2026-10-10")] == ["b1"]
    assert [b["id"] for b in reader.bills("card", date_from=date(2026, 10, 11))] == ["b2"]
    assert [b["id"] for b in reader.bills("card", date_to="2026-09-10")] == ["b0"]  # a range: dated bills only
    assert reader.bills("card", date_from="2026-12-01") == []  # bills outside the range: the account is known


def test_an_account_is_known_by_its_ref_or_its_bills(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put(
        [
            account_ref_record("checking", ITEM),
            bill_record(ITEM, "old-card", {"id": "b", "dueDate": "2025-05-10T00:00:00.000Z"}),
        ]
    )
    assert reader.bills("checking") == []
    assert reader.bills("old-card", date_from="2026-01-01") == []  # stored before refs existed: its bills tell
    with pytest.raises(RecordNotFound) as caught:
        reader.bills("nowhere")
    assert (caught.value.kind, str(caught.value)) == ("account", "account nowhere is not in the mirror")


def test_bill_dates_are_validated_together() -> None:
    with pytest.raises(InvalidRequest) as caught:
        date_range(date_from="2026-11-31", date_to="soon")
    assert caught.value.fields == {
        "from": "'2026-11-31' is not a calendar date",
        "to": "must be an ISO date, YYYY-MM-DD",
    }
    assert date_range(date_from=date(2026, 1, 2)) == ("2026-01-02", None)


# --- the item's products ----------------------------------------------------------------------------------


def test_a_list_with_rows_is_one_query_and_an_empty_one_checks_the_item(
    store: RecordStore, reader: MirrorReader
) -> None:
    store.batch_put(
        [
            item(),
            item("i-2"),
            investment_record(ITEM, {"id": "inv-2", "balance": Decimal("1.10")}),
            investment_record(ITEM, {"id": "inv-1", "balance": Decimal("2.20")}),
            loan_record(ITEM, {"id": "loan-1"}),
            consent_record(ITEM, {"id": "c-1", "expiresAt": "2027-01-01T00:00:00.000Z"}),
        ]
    )
    store.calls.clear()
    assert [i["id"] for i in reader.investments(ITEM)] == ["inv-1", "inv-2"]  # id order
    assert store.calls == {"query": 1}
    assert reader.investments("i-2") == [] and store.calls == {"query": 2, "get_item": 1}
    assert [loan["id"] for loan in reader.loans(ITEM)] == ["loan-1"]
    assert reader.consents(ITEM) == [
        {
            "id": "c-1",
            "itemId": ITEM,
            "expiresAt": "2027-01-01T00:00:00.000Z",
            "revokedAt": None,
            "data": {"id": "c-1", "expiresAt": "2027-01-01T00:00:00.000Z"},
        }
    ]
    for read in (reader.investments, reader.loans, reader.consents, reader.identity):
        with pytest.raises(RecordNotFound) as caught:
            read("i-9")
        assert (caught.value.kind, caught.value.record_id) == ("item", "i-9")


def test_the_identity_and_its_absence(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put([item(), item("i-2"), identity_record(ITEM, {"id": "idn", "document": "796.137.536-80"})])
    store.calls.clear()
    assert reader.identity(ITEM) == {"id": "idn", "itemId": ITEM, "data": {"id": "idn", "document": "796.137.536-80"}}
    assert store.calls == {"get_item": 1}
    with pytest.raises(RecordNotFound) as caught:
        reader.identity("i-2")
    assert (caught.value.kind, str(caught.value)) == ("identity", "item i-2 has no identity in the mirror")
    store.batch_put([identity_record("i-2", {"document": "x"})])  # Pluggy's object without an id
    assert reader.identity("i-2")["id"] is None
