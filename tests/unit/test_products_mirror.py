"""ProductMirror: which products a sync reads, writes only what changed, deletes what Pluggy no longer lists.

An in-memory Pluggy for the products; RecordStore on moto's RecordsTable (from template.yaml).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pluggy_pipeline.products import (
    MirrorCounts,
    ProductMirror,
    consent_record,
    digest,
    has_consents,
    wanted,
)
from pluggy_pipeline.records import RecordStore, identity_key, investment_key
from pluggy_pipeline_local.template import create_resources

from tests.conftest import REGION, TEMPLATE

SESSION = boto3.session.Session()
ITEM = "item-1"
CARD, CHECKING = "acc-card", "acc-checking"
EVERY_PRODUCT = [
    "ACCOUNTS",
    "TRANSACTIONS",
    "CREDIT_CARDS",
    "INVESTMENTS",
    "INVESTMENTS_TRANSACTIONS",
    "LOANS",
    "IDENTITY",
]
ACCOUNTS = [{"id": CHECKING, "type": "BANK"}, {"id": CARD, "type": "CREDIT"}]


class FakeProducts:
    """Pluggy's product lists for one item, and the calls made to them."""

    def __init__(self) -> None:
        self.bills: dict[str, list[dict[str, Any]]] = {
            CARD: [{"id": "bill-1", "dueDate": "2026-10-10T00:00:00.000Z", "totalAmount": Decimal("120.50")}]
        }
        self.investments = [
            {"id": "inv-1", "itemId": ITEM, "type": "FIXED_INCOME", "balance": Decimal("1000.00")},
            {"id": "inv-2", "itemId": ITEM, "type": "EQUITY", "balance": Decimal("250.10")},
        ]
        self.investment_tx: dict[str, list[dict[str, Any]]] = {
            "inv-1": [{"id": "itx-1", "date": "2026-09-01T00:00:00.000Z", "type": "BUY", "amount": Decimal("900")}],
            "inv-2": [{"id": "itx-2", "date": "2026-09-02T00:00:00.000Z", "type": "BUY", "amount": Decimal("200")}],
        }
        self.loans = [{"id": "loan-1", "itemId": ITEM, "contractAmount": Decimal("5000")}]
        self.identity: dict[str, Any] | None = {"id": "idn-1", "itemId": ITEM, "fullName": "Ana Souza"}
        self.consents = [{"id": "cons-1", "itemId": ITEM, "expiresAt": "2027-11-30T03:00:00.000Z", "revokedAt": None}]
        self.calls: list[str] = []

    def list_bills(self, account_id: str) -> list[dict[str, Any]]:
        self.calls.append(f"bills:{account_id}")
        return copy.deepcopy(self.bills.get(account_id, []))

    def list_investments(self, item_id: str) -> list[dict[str, Any]]:
        self.calls.append("investments")
        return copy.deepcopy(self.investments)

    def list_investment_transactions(self, investment_id: str) -> list[dict[str, Any]]:
        self.calls.append(f"investmentTransactions:{investment_id}")
        return copy.deepcopy(self.investment_tx.get(investment_id, []))

    def list_loans(self, item_id: str) -> list[dict[str, Any]]:
        self.calls.append("loans")
        return copy.deepcopy(self.loans)

    def get_identity(self, item_id: str) -> dict[str, Any] | None:
        self.calls.append("identity")
        return copy.deepcopy(self.identity)

    def list_consents(self, item_id: str) -> list[dict[str, Any]]:
        self.calls.append("consents")
        return copy.deepcopy(self.consents)


def item(products: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    base = {"id": ITEM, "products": EVERY_PRODUCT if products is None else products, "statusDetail": None}
    return {**base, "consentExpiresAt": "2027-11-30T03:00:00.000Z", **fields}


class Mirror:
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.pluggy = FakeProducts()
        self.records = RecordStore(lambda: client, table)
        self.mirror = ProductMirror(self.pluggy, self.records)
        self.table = table

    def sync(self, synced: dict[str, Any] | None = None, *, full: bool = False) -> MirrorCounts:
        self.pluggy.calls.clear()
        self.records.calls.clear()
        return self.mirror.sync(synced or item(), lambda: ACCOUNTS, full=full)

    def stored_keys(self) -> set[tuple[str, str]]:
        rows = self.client.scan(TableName=self.table, ConsistentRead=True)["Items"]
        return {(r["pk"]["S"], r["sk"]["S"]) for r in rows}


@pytest.fixture
def m() -> Iterator[Mirror]:
    with mock_aws():
        client = SESSION.client("dynamodb", region_name=REGION)
        only_records = {"Resources": {"RecordsTable": TEMPLATE["Resources"]["RecordsTable"]}}
        resources = create_resources(only_records, dynamodb=client, sqs=None)
        yield Mirror(client, resources.tables["RecordsTable"])


ALL_KEYS = {
    ("BILLS#acc-card", "BILL#bill-1"),
    ("ITEM#item-1", "INVESTMENT#inv-1"),
    ("ITEM#item-1", "INVESTMENT#inv-2"),
    ("INVESTMENT#inv-1", "ITX#itx-1"),
    ("INVESTMENT#inv-2", "ITX#itx-2"),
    ("ITEM#item-1", "LOAN#loan-1"),
    ("ITEM#item-1", "IDENTITY"),
    ("ITEM#item-1", "CONSENT#cons-1"),
}


# --- which products a sync reads -------------------------------------------------------------------


def test_success_reads_every_product_the_item_asked_for() -> None:
    assert wanted(item()) == {"CREDIT_CARDS", "INVESTMENTS", "INVESTMENTS_TRANSACTIONS", "LOANS", "IDENTITY"}
    assert wanted(item(["ACCOUNTS", "TRANSACTIONS", "LOANS", "MOVE_SECURITY"])) == {"LOANS"}
    assert wanted(item([])) == set() and wanted({"id": ITEM, "products": None}) == set()


def test_partial_success_skips_the_products_its_sync_did_not_update() -> None:
    detail = {
        "investments": {"isUpdated": False, "lastUpdatedAt": "2026-11-01T00:00:00.000Z"},
        "loans": {"isUpdated": True, "lastUpdatedAt": "2026-11-30T00:00:00.000Z"},
        "identity": None,  # no entry: not known to be stale, so read
    }
    partial = item(executionStatus="PARTIAL_SUCCESS", statusDetail=detail)
    assert wanted(partial) == {"CREDIT_CARDS", "INVESTMENTS_TRANSACTIONS", "LOANS", "IDENTITY"}


def test_consents_are_read_for_open_finance_items_only() -> None:
    assert has_consents({"consentExpiresAt": "2027-01-01T00:00:00.000Z"})
    assert has_consents({"consentExpiresAt": None, "connector": {"isOpenFinance": True}})
    assert not has_consents({"consentExpiresAt": None, "connector": {"isOpenFinance": False}})


# --- writes only what changed ----------------------------------------------------------------------


def test_first_sync_stores_every_product_record_with_pluggy_s_object(m: Mirror) -> None:
    counts = m.sync()
    assert m.stored_keys() == ALL_KEYS
    assert counts.written == {
        "bill": 1,
        "investment": 2,
        "investmentTransaction": 2,
        "loan": 1,
        "identity": 1,
        "consent": 1,
    }
    assert counts.deleted == {k: 0 for k in counts.written}
    stored = m.records.get(investment_key(ITEM, "inv-1"))
    assert stored is not None and stored["data"] == m.pluggy.investments[0]
    assert stored["digest"] == digest(m.pluggy.investments[0])
    # Only the card account has bills: the checking account is not asked.
    assert "bills:acc-checking" not in m.pluggy.calls and "bills:acc-card" in m.pluggy.calls


def test_a_sync_where_nothing_changed_writes_nothing(m: Mirror) -> None:
    m.sync()
    counts = m.sync()
    assert sum(counts.written.values()) == sum(counts.deleted.values()) == 0
    assert "batch_write_item" not in m.records.calls  # digests matched: no write request at all


def test_a_changed_object_rewrites_only_its_record(m: Mirror) -> None:
    m.sync()
    m.pluggy.investments[1]["balance"] = Decimal("260.00")
    counts = m.sync()
    assert counts.written == {k: 0 for k in counts.written} | {"investment": 1}
    stored = m.records.get(investment_key(ITEM, "inv-2"))
    assert stored is not None and stored["data"]["balance"] == Decimal("260.00")


def test_the_same_number_spelled_otherwise_is_no_change() -> None:
    assert digest({"a": Decimal("1.50"), "b": 1}) == digest({"b": 1, "a": Decimal("1.50")})
    assert digest({"a": Decimal("1.50")}) != digest({"a": Decimal("1.51")})


# --- deletions follow Pluggy -----------------------------------------------------------------------


def test_an_investment_pluggy_no_longer_lists_goes_with_its_transactions(m: Mirror) -> None:
    m.sync()
    m.pluggy.investments.pop()  # inv-2
    del m.pluggy.investment_tx["inv-2"]
    counts = m.sync()
    assert m.stored_keys() == ALL_KEYS - {("ITEM#item-1", "INVESTMENT#inv-2"), ("INVESTMENT#inv-2", "ITX#itx-2")}
    assert (counts.deleted["investment"], counts.deleted["investmentTransaction"]) == (1, 1)


def test_a_bill_whose_due_date_moved_is_the_same_record_changed(m: Mirror) -> None:
    m.sync()
    m.pluggy.bills[CARD][0]["dueDate"] = "2026-10-12T00:00:00.000Z"
    counts = m.sync()
    assert (counts.written["bill"], counts.deleted["bill"]) == (1, 0)  # one write, no delete: one change
    stored = m.records.get({"pk": "BILLS#acc-card", "sk": "BILL#bill-1"})
    assert stored is not None and stored["txDate"] == "2026-10-12T00:00:00.000Z#bill-1"


def test_an_identity_pluggy_no_longer_has_is_deleted(m: Mirror) -> None:
    m.sync()
    m.pluggy.identity = None  # GET /identity answered 404 IDENTITY_NOT_FOUND
    counts = m.sync()
    assert m.records.get(identity_key(ITEM)) is None
    assert counts.deleted["identity"] == 1


def test_a_product_the_sync_did_not_update_keeps_its_last_good_data(m: Mirror) -> None:
    m.sync()
    m.pluggy.loans = []  # what a failed loans step would look like, were it read
    detail = {"loans": {"isUpdated": False, "lastUpdatedAt": None}}
    m.sync(item(executionStatus="PARTIAL_SUCCESS", statusDetail=detail))
    assert "loans" not in m.pluggy.calls
    assert ("ITEM#item-1", "LOAN#loan-1") in m.stored_keys()
    m.sync(item(executionStatus="PARTIAL_SUCCESS", statusDetail=detail), full=True)  # reconciliation reads all
    assert "loans" in m.pluggy.calls and ("ITEM#item-1", "LOAN#loan-1") not in m.stored_keys()


def test_a_product_the_item_no_longer_asks_for_is_not_deleted_on_that_word(m: Mirror) -> None:
    m.sync()
    m.sync(item(["ACCOUNTS", "TRANSACTIONS"]))
    assert m.stored_keys() == ALL_KEYS  # only a read of Pluggy's list may delete
    assert m.pluggy.calls == ["consents"]


def test_the_item_s_deletion_drops_every_product_record(m: Mirror) -> None:
    m.sync()
    counts = MirrorCounts.empty()
    m.mirror.drop_item_products(ITEM, counts)
    m.mirror.drop_bills(CARD, counts)
    assert m.stored_keys() == set()
    assert counts.deleted == {
        "investmentTransaction": 2,
        "investment": 2,
        "loan": 1,
        "identity": 1,
        "consent": 1,
        "bill": 1,
    }


# --- consents --------------------------------------------------------------------------------------


def test_an_active_consent_is_in_the_expiry_index_and_a_revoked_one_is_not(m: Mirror) -> None:
    active = consent_record(ITEM, m.pluggy.consents[0])
    assert (active["consentPk"], active["consentSk"]) == ("CONSENT", "2027-11-30T03:00:00.000Z#item-1")
    m.sync()
    m.pluggy.consents[0]["revokedAt"] = "2026-11-29T12:00:00.000Z"
    m.sync()
    stored = m.records.get({"pk": "ITEM#item-1", "sk": "CONSENT#cons-1"})
    assert stored is not None and stored["revokedAt"] == "2026-11-29T12:00:00.000Z"
    assert "consentPk" not in stored and "consentSk" not in stored
    no_expiry = consent_record(ITEM, {"id": "c2", "expiresAt": None, "revokedAt": None})
    assert "consentPk" not in no_expiry


def test_investment_transactions_alone_still_keep_their_investments_to_be_found_by(m: Mirror) -> None:
    # The item asked for INVESTMENTS_TRANSACTIONS only (or its investments step was not updated): the
    # investments read for their ids are mirrored too, so a removal or the item's deletion finds their rows.
    only_rows = item(["ACCOUNTS", "TRANSACTIONS", "INVESTMENTS_TRANSACTIONS"])
    m.sync(only_rows)
    assert {("ITEM#item-1", "INVESTMENT#inv-2"), ("INVESTMENT#inv-2", "ITX#itx-2")} <= m.stored_keys()
    m.pluggy.investments.pop()
    m.sync(only_rows)
    assert not {k for k in m.stored_keys() if "inv-2" in k[0] + k[1]}
    m.mirror.drop_item_products(ITEM, MirrorCounts.empty())
    assert not {k for k in m.stored_keys() if k[0].startswith("INVESTMENT#") or k[1].startswith("INVESTMENT#")}
