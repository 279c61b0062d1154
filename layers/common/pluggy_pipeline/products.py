"""The products an item has beyond accounts and transactions, mirrored from Pluggy: credit-card bills, investments
and their transactions, loans, identity and Open Finance consents.

A product is read when the item's sync finished with data and the item asked for it (`item.products`), and on
PARTIAL_SUCCESS only when its `statusDetail` entry says it was updated. Each read is a whole list (these routes
have no createdAt filter): the records whose `digest` (a hash of Pluggy's object) changed are written, the ones
Pluggy no longer lists are deleted, so a write happens only for a change and a deletion only on Pluggy's word.
Consents are read for Open Finance items (the item carries `consentExpiresAt`), whatever `products` says.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pluggy_pipeline.records import (
    JSON,
    RecordStore,
    bill_key,
    consent_key,
    identity_key,
    investment_key,
    investment_transaction_key,
    loan_key,
)

# item.products -> its statusDetail key (pluggy-api.md section 11).
STATUS_DETAIL_KEYS = {
    "CREDIT_CARDS": "creditCards",
    "INVESTMENTS": "investments",
    "INVESTMENTS_TRANSACTIONS": "investmentTransactions",
    "LOANS": "loans",
    "IDENTITY": "identity",
}
CREDIT = "CREDIT"  # a credit-card account's type: the accounts that have bills
# A product record's kind -> the name its writes are counted under ("billsDeleted" for its deletions).
PLURALS = {
    "bill": "bills",
    "investment": "investments",
    "investmentTransaction": "investmentTransactions",
    "loan": "loans",
    "identity": "identities",
    "consent": "consents",
}


class ProductSource(Protocol):
    """What the mirror asks Pluggy (PluggyClient)."""

    def list_bills(self, account_id: str) -> list[JSON]: ...
    def list_investments(self, item_id: str) -> list[JSON]: ...
    def list_investment_transactions(self, investment_id: str) -> list[JSON]: ...
    def list_loans(self, item_id: str) -> list[JSON]: ...
    def get_identity(self, item_id: str) -> JSON | None: ...
    def list_consents(self, item_id: str) -> list[JSON]: ...


def digest(data: Any) -> str:
    """A stable hash of Pluggy's object (key order and number spelling aside): equal means unchanged."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _record(key: Mapping[str, str], kind: str, item_id: str, data: JSON, **fields: Any) -> JSON:
    return {**key, "kind": kind, "itemId": item_id, **fields, "data": data, "digest": digest(data)}


def investment_record(item_id: str, investment: JSON) -> JSON:
    investment_id = str(investment["id"])
    key = investment_key(item_id, investment_id)
    return _record(key, "investment", item_id, investment, investmentId=investment_id, type=investment.get("type"))


def investment_transaction_record(item_id: str, investment_id: str, row: JSON) -> JSON:
    row_id = str(row["id"])
    key = investment_transaction_key(investment_id, row_id)
    date = f"{row.get('date') or ''}#{row_id}"  # byDate: an investment's transactions by date
    return _record(
        key,
        "investmentTransaction",
        item_id,
        row,
        investmentId=investment_id,
        investmentTransactionId=row_id,
        txDate=date,
    )


def bill_record(item_id: str, account_id: str, bill: JSON) -> JSON:
    bill_id, due = str(bill["id"]), str(bill.get("dueDate") or "")
    key = bill_key(account_id, bill_id)
    # byDate: a card's bills by due date; a moved due date is a change of this record, not another record.
    fields = {"accountId": account_id, "billId": bill_id, "dueDate": due, "txDate": f"{due}#{bill_id}"}
    return _record(key, "bill", item_id, bill, **fields)


def loan_record(item_id: str, loan: JSON) -> JSON:
    loan_id = str(loan["id"])
    return _record(loan_key(item_id, loan_id), "loan", item_id, loan, loanId=loan_id)


def identity_record(item_id: str, identity: JSON) -> JSON:
    # Personal data (name, CPF, addresses...): only in `data`, never in a key, an index or a log line.
    return _record(identity_key(item_id), "identity", item_id, identity, identityId=str(identity.get("id") or ""))


def consent_record(item_id: str, consent: JSON) -> JSON:
    consent_id = str(consent["id"])
    expires, revoked = consent.get("expiresAt"), consent.get("revokedAt")
    record = _record(
        consent_key(item_id, consent_id), "consent", item_id, consent, consentId=consent_id, expiresAt=expires
    )
    record["revokedAt"] = revoked
    if expires and not revoked:  # byConsentExpiry holds the active consents that expire, soonest first
        record.update(consentPk="CONSENT", consentSk=f"{expires}#{item_id}")
    return record


@dataclass
class MirrorCounts:
    """Records written and deleted, and Pluggy lists read, per product (the sync's counts and metrics)."""

    written: dict[str, int]
    deleted: dict[str, int]

    @classmethod
    def empty(cls) -> MirrorCounts:
        return cls({}, {})

    def add(self, kind: str, written: int, deleted: int) -> None:
        self.written[kind] = self.written.get(kind, 0) + written
        self.deleted[kind] = self.deleted.get(kind, 0) + deleted


def wanted(item: Mapping[str, Any]) -> set[str]:
    """The products this sync reads: asked for by the item and, on PARTIAL_SUCCESS, updated by its sync.

    statusDetail is null on SUCCESS; when set, a product whose entry says `isUpdated: false` kept the data of
    the item's last good sync, which the mirror already has.
    """
    requested = {p for p in (item.get("products") or ()) if p in STATUS_DETAIL_KEYS}
    detail = item.get("statusDetail") or {}
    return {p for p in requested if (detail.get(STATUS_DETAIL_KEYS[p]) or {}).get("isUpdated", True) is not False}


def has_consents(item: Mapping[str, Any]) -> bool:
    """Open Finance items carry consentExpiresAt (and their connector says isOpenFinance)."""
    return bool(item.get("consentExpiresAt")) or bool((item.get("connector") or {}).get("isOpenFinance"))


class ProductMirror:
    def __init__(self, pluggy: ProductSource, records: RecordStore) -> None:
        self.pluggy = pluggy
        self.records = records

    def sync(self, item: JSON, accounts: Callable[[], Sequence[JSON]], *, full: bool = False) -> MirrorCounts:
        """Mirror the item's products as its sync left them; `accounts` gives its accounts (Pluggy's objects).

        `full` (reconciliation) reads every product the item asked for, whatever statusDetail says.
        """
        item_id = str(item["id"])
        counts = MirrorCounts.empty()
        products = wanted(item) if not full else {p for p in (item.get("products") or ()) if p in STATUS_DETAIL_KEYS}
        if "CREDIT_CARDS" in products:
            for account in accounts():
                if account.get("type") == CREDIT:
                    self.sync_bills(item_id, str(account["id"]), counts)
        if "INVESTMENTS" in products or "INVESTMENTS_TRANSACTIONS" in products:
            self.sync_investments(item_id, counts, transactions="INVESTMENTS_TRANSACTIONS" in products)
        if "LOANS" in products:
            rows = [loan_record(item_id, loan) for loan in self.pluggy.list_loans(item_id)]
            self._mirror(f"ITEM#{item_id}", "LOAN#", rows, "loan", counts)
        if "IDENTITY" in products:
            identity = self.pluggy.get_identity(item_id)
            rows = [identity_record(item_id, identity)] if identity else []
            self._mirror(f"ITEM#{item_id}", "IDENTITY", rows, "identity", counts)
        if has_consents(item):
            rows = [consent_record(item_id, consent) for consent in self.pluggy.list_consents(item_id)]
            self._mirror(f"ITEM#{item_id}", "CONSENT#", rows, "consent", counts)
        return counts

    def sync_bills(self, item_id: str, account_id: str, counts: MirrorCounts) -> None:
        rows = [bill_record(item_id, account_id, bill) for bill in self.pluggy.list_bills(account_id)]
        self._mirror(f"BILLS#{account_id}", "BILL#", rows, "bill", counts)

    def sync_investments(self, item_id: str, counts: MirrorCounts, *, transactions: bool) -> None:
        """The item's investments; with `transactions`, each one's transactions (re-read whole: no createdAt).

        The investments read are mirrored whenever they are read (also for transactions alone, or when their own
        statusDetail entry was not updated: what Pluggy serves is still the truth), so every stored transaction
        has its investment's record, which is how a removed investment or a deleted item finds them.
        """
        listed = self.pluggy.list_investments(item_id)
        rows = [investment_record(item_id, investment) for investment in listed]
        gone = self._mirror(f"ITEM#{item_id}", "INVESTMENT#", rows, "investment", counts)
        for sk in gone:  # an investment Pluggy no longer lists takes its transactions with it
            self.drop_investment_transactions(sk.removeprefix("INVESTMENT#"), counts)
        if transactions:
            for investment in listed:
                investment_id = str(investment["id"])
                found = self.pluggy.list_investment_transactions(investment_id)
                rows = [investment_transaction_record(item_id, investment_id, row) for row in found]
                self._mirror(f"INVESTMENT#{investment_id}", "ITX#", rows, "investmentTransaction", counts)

    def drop_investment_transactions(self, investment_id: str, counts: MirrorCounts) -> None:
        keys = self._keys(f"INVESTMENT#{investment_id}", "ITX#")
        counts.add("investmentTransaction", 0, self.records.batch_delete(keys).written)

    def drop_bills(self, account_id: str, counts: MirrorCounts) -> None:
        counts.add("bill", 0, self.records.batch_delete(self._keys(f"BILLS#{account_id}", "BILL#")).written)

    def drop_item_products(self, item_id: str, counts: MirrorCounts) -> None:
        """The item is gone from Pluggy: its investments (with their transactions), loans, identity, consents."""
        pk = f"ITEM#{item_id}"
        for prefix, kind in (
            ("INVESTMENT#", "investment"),
            ("LOAN#", "loan"),
            ("IDENTITY", "identity"),
            ("CONSENT#", "consent"),
        ):
            keys = self._keys(pk, prefix)
            if prefix == "INVESTMENT#":
                for key in keys:
                    self.drop_investment_transactions(key["sk"].removeprefix(prefix), counts)
            counts.add(kind, 0, self.records.batch_delete(keys).written)

    def _keys(self, pk: str, prefix: str) -> list[dict[str, str]]:
        return [{"pk": pk, "sk": sk} for sk in self.records.digests(pk, prefix)]

    def _mirror(self, pk: str, prefix: str, rows: Iterable[JSON], kind: str, counts: MirrorCounts) -> list[str]:
        """Write the rows whose digest changed, delete the stored ones not in `rows`; the deleted sort keys."""
        stored = self.records.digests(pk, prefix)
        current = {str(row["sk"]): row for row in rows}
        changed = [row for sk, row in current.items() if stored.get(sk) != row["digest"]]
        gone = [sk for sk in stored if sk not in current]
        written = self.records.batch_put(changed).written
        deleted = self.records.batch_delete({"pk": pk, "sk": sk} for sk in gone).written
        counts.add(kind, written, deleted)
        return gone
