"""MirrorReader against moto's DynamoDB (RecordsTable from template.yaml): views, numbers, pages, the cursor."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from moto import mock_aws
from pluggy_pipeline import reader as reader_module
from pluggy_pipeline.reader import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidRequest,
    MirrorReader,
    PageQuery,
    RecordNotFound,
    encode_cursor,
    page_query,
    plain,
)
from pluggy_pipeline.records import RecordStore, account_key, item_key, transaction_key
from pluggy_pipeline_local.template import create_resources

from tests.conftest import REGION, REPO_ROOT, TEMPLATE

SESSION = boto3.session.Session()  # one per module: under moto, boto3.client() builds a new one each time
ACCOUNT = "a-1"


@pytest.fixture
def table() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        client = SESSION.client("dynamodb", region_name=REGION)
        only_records = {"Resources": {"RecordsTable": TEMPLATE["Resources"]["RecordsTable"]}}
        resources = create_resources(only_records, dynamodb=client, sqs=None)
        yield client, resources.tables["RecordsTable"]


class LikeDynamoDB:
    """moto's Query leaves LastEvaluatedKey out when `Limit` items were the last ones; DynamoDB returns it whenever
    it stops at `Limit`. This client adds it, so a reader relying on moto's kindness fails here."""

    INDEX_KEYS: ClassVar[dict[str | None, tuple[str, ...]]] = {
        None: (),
        "byDate": ("txDate",),
        "byUser": ("userPk", "userSk"),
    }

    def __init__(self, client: Any) -> None:
        self.client = client

    def query(self, **kwargs: Any) -> Any:
        response = self.client.query(**kwargs)
        items = response.get("Items", [])
        if items and len(items) == kwargs.get("Limit") and "LastEvaluatedKey" not in response:
            names = ("pk", "sk", *self.INDEX_KEYS[kwargs.get("IndexName")])
            response["LastEvaluatedKey"] = {name: items[-1][name] for name in names}
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def store(table: tuple[Any, str]) -> RecordStore:
    client, name = table
    dynamodb = LikeDynamoDB(client)
    return RecordStore(lambda: dynamodb, name)


@pytest.fixture
def reader(store: RecordStore) -> MirrorReader:
    return MirrorReader(store)


def item(item_id: str, user: str | None = None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        **item_key(item_id),
        "kind": "item",
        "itemId": item_id,
        "status": "UPDATED",
        "syncedAt": "2026-11-22T10:00:00.000Z",
        "deleted": False,
        "data": {"id": item_id, "status": "UPDATED", "connector": {"id": Decimal(0)}},
        **extra,
    }
    if user:
        record.update(clientUserId=user, userPk=f"USER#{user}", userSk=f"ITEM#{item_id}")
    return record


def account(item_id: str, account_id: str, balance: str = "1655.35") -> dict[str, Any]:
    return {
        **account_key(item_id, account_id),
        "kind": "account",
        "accountId": account_id,
        "itemId": item_id,
        "data": {"id": account_id, "balance": Decimal(balance), "bankData": {"closingBalance": Decimal(balance)}},
    }


def tx(account_id: str, tx_id: str, day: str, amount: str = "-10.50") -> dict[str, Any]:
    stamp = f"{day}T03:00:00.000Z"
    return {
        **transaction_key(account_id, tx_id),
        "kind": "transaction",
        "transactionId": tx_id,
        "accountId": account_id,
        "itemId": "i-1",
        "txDate": f"{stamp}#{tx_id}",
        "data": {"id": tx_id, "date": stamp, "amount": Decimal(amount), "balance": None},
    }


def history(count: int, account_id: str = ACCOUNT) -> list[dict[str, Any]]:
    """`count` rows over 9 days, many sharing a day (ties are broken by id)."""
    return [tx(account_id, f"t-{n:04d}", f"2026-11-{1 + (n * 7) % 9:02d}", f"{n}.{n % 100:02d}") for n in range(count)]


def newest_first(rows: list[dict[str, Any]]) -> list[str]:
    return [r["transactionId"] for r in sorted(rows, key=lambda r: r["txDate"], reverse=True)]


def all_pages(reader: MirrorReader, account_id: str = ACCOUNT, **kwargs: Any) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor = None
    for pages in range(1, 10_000):
        page = reader.transactions(account_id, cursor=cursor, **kwargs)
        assert page["transactions"] or pages == 1, "an empty page after a nextCursor"
        ids += [t["id"] for t in page["transactions"]]
        cursor = page["nextCursor"]
        if cursor is None:
            return ids, pages
    raise AssertionError("pages never ended")


# --- numbers --------------------------------------------------------------------------------------------


def test_every_number_becomes_its_exact_decimal_string() -> None:
    data = {
        "amount": Decimal("-43.34"),
        "balance": Decimal("0.10"),  # trailing zero kept: the exact digits stored
        "big": Decimal("1E+3"),  # positional, not "1E+3"
        "tiny": Decimal("1E-7"),
        "precise": Decimal("12345678901234567890.123456789"),  # beyond a float's 17 digits
        "nested": [{"v": Decimal("1.005")}, Decimal(2)],
        "text": "1.5",
        "flag": True,
        "none": None,
    }
    assert plain(data) == {
        "amount": "-43.34",
        "balance": "0.10",
        "big": "1000",
        "tiny": "0.0000001",
        "precise": "12345678901234567890.123456789",
        "nested": [{"v": "1.005"}, "2"],
        "text": "1.5",
        "flag": True,
        "none": None,
    }
    json.dumps(plain(data))  # JSON-able as is


def test_amounts_come_back_exact_from_dynamodb(store: RecordStore, reader: MirrorReader) -> None:
    amounts = ["-43.34", "0.1", "99999999999999.99", "-0.01", "1000.00", "0.3"]
    store.batch_put(tx(ACCOUNT, f"t-{n}", "2026-11-05", a) for n, a in enumerate(amounts))
    page = reader.transactions(ACCOUNT, limit=MAX_LIMIT)
    got = {t["id"]: t["data"]["amount"] for t in page["transactions"]}
    assert {f"t-{n}": Decimal(a) for n, a in enumerate(amounts)} == {k: Decimal(v) for k, v in got.items()}
    assert all(isinstance(v, str) for v in got.values())
    assert got["t-0"] == "-43.34" and got["t-4"] == "1000.00"  # the digits as stored (moto keeps them as sent)


# --- items and accounts ----------------------------------------------------------------------------------


def test_items_of_a_user_leave_deleted_items_out(store: RecordStore, reader: MirrorReader) -> None:
    tombstone = item("i-2", "ana", status="DELETED", deleted=True, deletedAt="2026-11-23T00:00:00.000Z")
    store.batch_put([item("i-1", "ana"), tombstone, item("i-3", "bia"), item("i-4")])
    got = reader.items_of_user("ana")
    assert [i["id"] for i in got] == ["i-1"]
    assert got[0] == {
        "id": "i-1",
        "clientUserId": "ana",
        "status": "UPDATED",
        "deleted": False,
        "deletedAt": None,
        "syncedAt": "2026-11-22T10:00:00.000Z",
        "lastFullSyncAt": None,
        "data": {"id": "i-1", "status": "UPDATED", "connector": {"id": "0"}},
    }
    assert reader.items_of_user("nobody") == []  # no user registry: unknown and itemless are the same answer


def test_item_with_its_accounts_only(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put([item("i-1", "ana"), account("i-1", "a-1"), account("i-1", "a-2", "-5"), account("i-2", "a-3")])
    got = reader.item_with_accounts("i-1")
    assert got["item"]["id"] == "i-1"
    assert sorted((a["id"], a["data"]["balance"]) for a in got["accounts"]) == [("a-1", "1655.35"), ("a-2", "-5")]
    assert all(a["itemId"] == "i-1" for a in got["accounts"])
    assert got["accounts"][0]["data"]["bankData"]["closingBalance"] in {"1655.35", "-5"}


def test_a_deleted_item_is_found_marked_deleted(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put([item("i-1", "ana", status="DELETED", deleted=True, deletedAt="2026-11-23T00:00:00.000Z")])
    got = reader.item_with_accounts("i-1")
    assert (got["item"]["deleted"], got["item"]["status"], got["accounts"]) == (True, "DELETED", [])


def test_unknown_item_is_not_found(reader: MirrorReader) -> None:
    with pytest.raises(RecordNotFound, match="item i-9 is not in the mirror") as caught:
        reader.item_with_accounts("i-9")
    assert (caught.value.kind, caught.value.record_id) == ("item", "i-9")


@pytest.mark.parametrize("bad", ["", "x" * 513, "\ud800"])
def test_ids_are_checked_before_any_read(reader: MirrorReader, store: RecordStore, bad: str) -> None:
    for call, field in (
        (lambda: reader.items_of_user(bad), "clientUserId"),
        (lambda: reader.item_with_accounts(bad), "itemId"),
        (lambda: reader.transactions(bad), "accountId"),
    ):
        with pytest.raises(InvalidRequest) as caught:
            call()
        assert list(caught.value.fields) == [field]
    assert store.calls == {}


# --- pages -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 7, 100, 250, 500])
def test_pages_cover_every_row_newest_first_without_gaps_or_repeats(
    store: RecordStore, reader: MirrorReader, limit: int
) -> None:
    rows = history(250)
    store.batch_put([*rows, *history(30, "a-2")])  # another account's rows never show up
    ids, pages = all_pages(reader, limit=limit)
    assert ids == newest_first(rows)
    assert pages == max(1, -(-250 // limit))  # ceil: no trailing empty page


def test_last_page_ends_exactly_at_the_last_row(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put(history(20))
    first = reader.transactions(ACCOUNT, limit=10)
    second = reader.transactions(ACCOUNT, limit=10, cursor=first["nextCursor"])
    assert first["nextCursor"] is not None and len(second["transactions"]) == 10
    assert second["nextCursor"] is None  # 20 rows, pages of 10: two pages, not three


def test_default_limit_is_100(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put(history(130))
    page = reader.transactions(ACCOUNT)
    assert len(page["transactions"]) == DEFAULT_LIMIT == 100 and page["nextCursor"]


def test_date_range_is_inclusive_on_pluggy_dates(store: RecordStore, reader: MirrorReader) -> None:
    rows = history(90)
    store.batch_put(rows)
    inside = [r for r in rows if "2026-11-03" <= r["data"]["date"][:10] <= "2026-11-05"]
    ids, _ = all_pages(reader, date_from="2026-11-03", date_to="2026-11-05", limit=4)
    assert ids == newest_first(inside) and len(inside) == 30
    only_from, _ = all_pages(reader, date_from="2026-11-08", limit=50)
    assert only_from == newest_first([r for r in rows if r["data"]["date"][:10] >= "2026-11-08"])
    only_to, _ = all_pages(reader, date_to=date(2026, 11, 1), limit=50)
    assert only_to == newest_first([r for r in rows if r["data"]["date"][:10] <= "2026-11-01"])
    empty = reader.transactions(ACCOUNT, date_from="2026-12-01")
    assert empty == {"transactions": [], "nextCursor": None}  # a known account, nothing in range: 200, not 404


def test_unknown_account_is_not_found_but_an_empty_range_is_not(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put(history(3))
    with pytest.raises(RecordNotFound, match="account a-9 is not in the mirror") as caught:
        reader.transactions("a-9")
    assert caught.value.kind == "account"
    with pytest.raises(RecordNotFound):
        reader.transactions("a-9", date_from="2026-11-01")
    assert reader.transactions(ACCOUNT, date_to="2000-01-01")["transactions"] == []


class ShortPages:
    """A DynamoDB client whose Query answers at most `cap` items, as DynamoDB does at its 1 MB limit."""

    def __init__(self, client: Any, cap: int) -> None:
        self.client = client
        self.cap = cap
        self.queries = 0

    def query(self, **kwargs: Any) -> Any:
        self.queries += 1
        return self.client.query(**{**kwargs, "Limit": min(kwargs["Limit"], self.cap)})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_short_dynamodb_responses_make_no_gap(table: tuple[Any, str]) -> None:
    client, name = table
    rows = history(60)
    RecordStore(lambda: client, name).batch_put(rows)
    short = ShortPages(LikeDynamoDB(client), cap=3)
    reader = MirrorReader.for_table(name, client=short)
    ids, pages = all_pages(reader, limit=10)  # 11 rows per page asked in calls of 3: within the call budget
    assert ids == newest_first(rows) and pages == 6
    # A budget too small for a page: short pages, each with a cursor that goes on where DynamoDB stopped.
    tiny = ShortPages(LikeDynamoDB(client), cap=1)
    reader = MirrorReader.for_table(name, client=tiny)
    ids, pages = all_pages(reader, limit=20)
    assert ids == newest_first(rows) and pages > 3


# --- the cursor ------------------------------------------------------------------------------------------


def first_cursor(reader: MirrorReader, **kwargs: Any) -> str:
    cursor = reader.transactions(ACCOUNT, limit=5, **kwargs)["nextCursor"]
    assert isinstance(cursor, str)
    return cursor


def refused(reader: MirrorReader, cursor: str, account_id: str = ACCOUNT, **kwargs: Any) -> str:
    with pytest.raises(InvalidRequest) as caught:
        reader.transactions(account_id, cursor=cursor, limit=5, **kwargs)
    assert list(caught.value.fields) == ["cursor"]
    return caught.value.fields["cursor"]


def test_cursor_is_opaque_base64url(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put(history(12))
    cursor = first_cursor(reader)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_cursor_of_another_account_is_refused(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put([*history(12), *history(12, "a-2")])
    cursor = first_cursor(reader)
    assert refused(reader, cursor, "a-2") == "was issued for another account"
    assert reader.transactions(ACCOUNT, cursor=cursor, limit=5)["transactions"]  # still good where it belongs


def test_a_cursor_of_other_dates_is_refused(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put(history(40))
    cursor = first_cursor(reader, date_from="2026-11-02")
    assert "other from/to" in refused(reader, cursor)
    assert "other from/to" in refused(reader, cursor, date_from="2026-11-03")
    assert "other from/to" in refused(reader, cursor, date_from="2026-11-02", date_to="2026-11-30")
    assert reader.transactions(ACCOUNT, cursor=cursor, date_from="2026-11-02", limit=5)["transactions"]


def test_every_edit_of_a_cursor_is_refused(store: RecordStore, reader: MirrorReader) -> None:
    store.batch_put(history(12))
    cursor = first_cursor(reader)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    edits = [cursor[:i] + alphabet[(alphabet.index(c) + 1) % 64] + cursor[i + 1 :] for i, c in enumerate(cursor)]
    edits += [cursor[:-1], cursor[1:], cursor + "A", cursor + "=", cursor + "==", cursor[:10], "x", "not a cursor!"]
    standard = cursor.replace("-", "+").replace("_", "/")  # plain base64 of the same bytes
    edits += [standard] if standard != cursor else []
    for edited in edits:
        assert edited != cursor
        refused(reader, edited)


def forge(body: dict[str, Any]) -> str:
    """A cursor with a valid checksum around any body: only the checks after the checksum can refuse it."""
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    checksum = reader_module._checksum(payload)
    return base64.urlsafe_b64encode(payload + checksum).rstrip(b"=").decode()


def test_a_well_checksummed_cursor_must_still_be_a_position_of_this_query(
    store: RecordStore, reader: MirrorReader
) -> None:
    store.batch_put(history(12))
    good = {"pk": "ACCOUNT#a-1", "sk": "TX#t-0003", "txDate": "2026-11-04T03:00:00.000Z#t-0003"}
    assert reader.transactions(ACCOUNT, cursor=forge({"v": 1, "k": good, "q": [None, None]}), limit=5)
    bad_bodies = [
        [],
        {"v": 2, "k": good, "q": [None, None]},
        {"v": 1, "k": {**good, "extra": "x"}, "q": [None, None]},
        {"v": 1, "k": {"pk": good["pk"], "sk": good["sk"]}, "q": [None, None]},
        {"v": 1, "k": {**good, "sk": 3}, "q": [None, None]},
        {"v": 1, "k": {**good, "sk": "ITEM"}, "q": [None, None]},
        {"v": 1, "k": {**good, "txDate": "2026-11-04T03:00:00.000Z#t-0004"}, "q": [None, None]},
        {"v": 1, "k": good, "q": [None]},
    ]
    for body in bad_bodies:
        assert "not a cursor this API issued" in refused(reader, forge(body))  # type: ignore[arg-type]
    outside = {"pk": "ACCOUNT#a-1", "sk": "TX#t-0003", "txDate": "2026-10-04T03:00:00.000Z#t-0003"}
    query = ["2026-11-01", None]
    assert "not a cursor" in refused(reader, forge({"v": 1, "k": outside, "q": query}), date_from="2026-11-01")
    for payload in (b"{x", b"[" * 1500 + b"]" * 1500):  # not JSON; nested past the parser's recursion limit
        token = base64.urlsafe_b64encode(payload + reader_module._checksum(payload)).rstrip(b"=").decode()
        assert len(token) <= reader_module.MAX_CURSOR_CHARS
        assert "not a cursor this API issued" in refused(reader, token)


def test_encode_cursor_round_trips_only_for_its_query() -> None:
    query = PageQuery("2026-11-01", None, 10, None)
    position = {"pk": "ACCOUNT#a-1", "sk": "TX#t", "txDate": "2026-11-02T03:00:00.000Z#t"}
    token = encode_cursor(query, position)
    assert reader_module.decode_cursor(token, "a-1", query) == position
    with pytest.raises(InvalidRequest):
        reader_module.decode_cursor(token, "a-1", PageQuery(None, None, 10, None))


# --- parameters ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 501, -1, "0", "501", "abc", "1.5", "", " 5", "+5", "\u0665", True, 2.0, None])
def test_limit_must_be_an_integer_from_1_to_500(limit: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        page_query(limit=limit)
    assert caught.value.fields == {"limit": "must be an integer from 1 to 500"}


@pytest.mark.parametrize("limit", [1, 500, "1", "500", "042"])
def test_limit_accepts_1_to_500(limit: Any) -> None:
    assert 1 <= page_query(limit=limit).limit <= 500


@pytest.mark.parametrize(
    "value", ["2026-13-01", "2026-02-30", "20261101", "2026-11-01T00:00:00Z", "yesterday", "", 20261101]
)
def test_dates_must_be_iso_calendar_dates(value: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        page_query(date_from=value)
    assert list(caught.value.fields) == ["from"]


def test_a_datetime_is_not_a_date() -> None:
    with pytest.raises(InvalidRequest):
        page_query(date_to=datetime(2026, 11, 1, 12, 0))  # the type is what is refused
    assert page_query(date_to=date(2026, 11, 1)).date_to == "2026-11-01"


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidRequest) as caught:
        page_query(date_from="2026-11-05", date_to="2026-11-01", limit="0", cursor="")
    assert set(caught.value.fields) == {"from", "limit", "cursor"}
    assert "must not be after to" in caught.value.fields["from"]


# --- for apps ------------------------------------------------------------------------------------------------

COPIED = ("__init__.py", "errors.py", "aws.py", "records.py", "reader.py")


def test_the_reader_needs_only_boto3_and_four_sibling_modules(tmp_path: Path) -> None:
    """An app may copy these five files: importing the reader pulls in nothing else of ours, nor Powertools."""
    package = tmp_path / "pluggy_pipeline"
    package.mkdir()
    for name in COPIED:
        shutil.copy(REPO_ROOT / "layers/common/pluggy_pipeline" / name, package / name)
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'aws_lambda_powertools', 'requests', 'pydantic'}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pluggy_pipeline.reader as r\n"
        "assert r.__file__.startswith(sys.argv[1]), r.__file__\n"
        "ours = sorted(m for m in sys.modules if m.startswith('pluggy_pipeline'))\n"
        "print(','.join(ours))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(tmp_path), "PYTHONSAFEPATH": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    expected = {"pluggy_pipeline", *(f"pluggy_pipeline.{n[:-3]}" for n in COPIED if n != "__init__.py")}
    assert set(result.stdout.strip().split(",")) == expected


def test_for_table_reads_with_the_client_given(table: tuple[Any, str]) -> None:
    client, name = table
    RecordStore(lambda: client, name).batch_put([item("i-1", "ana")])
    assert [i["id"] for i in MirrorReader.for_table(name, client=client).items_of_user("ana")] == ["i-1"]
