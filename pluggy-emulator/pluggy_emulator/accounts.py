"""Accounts: the sandbox item's bank and card accounts, their balances and limits, and `GET /accounts`.

An item gets a checking account, a savings account and (unless `user-ok-account-error`) a credit card, each
with `HISTORY_DAYS` of rows (sandbox_rows.py). A bank account's balance is its rows' running total; a
card's is the open bill's purchases, with its limits and bill dates following (pluggy-api.md section 3).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pluggy_emulator.common import DAY_MS, JsonDict, iso_from_ms, money, sao_paulo_midnight_ms
from pluggy_emulator.sandbox_rows import bill_month, format_cpf, make_tx, rng_uuid

if TYPE_CHECKING:
    from pluggy_emulator.auth import KeyInfo
    from pluggy_emulator.store import ItemMeta, Store

DEFAULT_TRANSACTIONS_PER_ACCOUNT = 60
HISTORY_DAYS = 90


def set_bank_balance(account: JsonDict, balance: float, stamp_ms: int | None, *, bump: bool) -> None:
    """A bank account's balance and the bankData fields that follow it."""
    account["balance"] = money(balance)
    bank = account["bankData"]
    bank["closingBalance"] = account["balance"]
    if bank["overdraftUsedLimit"] is not None:
        bank["overdraftUsedLimit"] = money(max(0.0, -account["balance"]))
    if bump and stamp_ms is not None:
        account["updatedAt"] = iso_from_ms(stamp_ms)


class Accounts:
    """The item's accounts in the store: created with their history, refreshed, and read by the API."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def create_accounts(
        self, item: JsonDict, meta: ItemMeta, multiplier: int, variant: str, stamp_ms: int | None = None
    ) -> dict[str, tuple[list[str], str]]:
        """The sandbox item's accounts with their history; {accountId: (new tx ids, createdAt)}."""
        specs: list[tuple[str, str]] = [("BANK", "CHECKING_ACCOUNT"), ("BANK", "SAVINGS_ACCOUNT")]
        if variant != "partial":
            specs.append(("CREDIT", "CREDIT_CARD"))
        created: dict[str, tuple[list[str], str]] = {}
        stamp_ms = self._store.clock.now_ms() if stamp_ms is None else stamp_ms
        for index, (kind, subtype) in enumerate(specs):
            account = self.new_account(item, meta, kind=kind, subtype=subtype, index=index, stamp_ms=stamp_ms)
            count = meta.transactions_per_account * multiplier
            created[account["id"]] = (self.generate_history(meta, account, count, stamp_ms), iso_from_ms(stamp_ms))
        return created

    def new_account(
        self, item: JsonDict, meta: ItemMeta, *, kind: str, subtype: str, index: int, stamp_ms: int
    ) -> JsonDict:
        """A new account (no rows yet) stored for the item; `index` is its place among the item's accounts."""
        rng = meta.rng
        stamp = iso_from_ms(stamp_ms)
        account_id = rng_uuid(rng)
        branch = "0001"
        digits = f"{rng.randint(10000, 99999)}-{rng.randint(0, 9)}"
        account: JsonDict = {
            "id": account_id,
            "itemId": item["id"],
            "type": kind,
            "subtype": subtype,
            "number": f"{branch}/{digits}",
            "name": "",
            "marketingName": None,
            "balance": 0.0,
            "currencyCode": "BRL",
            "owner": meta.owner,
            "taxNumber": format_cpf(meta.cpf),
            "bankData": None,
            "creditData": None,
            "createdAt": stamp,
            "updatedAt": stamp,
        }
        if subtype == "CHECKING_ACCOUNT":
            account["name"] = "Conta Corrente" if index == 0 else f"Conta Corrente {index + 1}"
            account["marketingName"] = "Pluggy Conta Digital"
            account["bankData"] = {
                "transferNumber": f"{branch}/{digits}",
                "closingBalance": 0.0,
                "automaticallyInvestedBalance": 0.0,
                "overdraftContractedLimit": 1000.0,
                "overdraftUsedLimit": 0.0,
                "unarrangedOverdraftAmount": 0.0,
                "hasReservedBalance": False,
                "reservedBalances": None,  # only present when hasReservedBalance is true
            }
        elif subtype == "SAVINGS_ACCOUNT":
            account["name"] = "Conta Poupanca"
            account["marketingName"] = "Poupanca Pluggy"
            account["bankData"] = {
                "transferNumber": f"{branch}/{digits}",
                "closingBalance": 0.0,
                "automaticallyInvestedBalance": None,
                "overdraftContractedLimit": None,
                "overdraftUsedLimit": None,
                "unarrangedOverdraftAmount": None,
                "hasReservedBalance": False,
                "reservedBalances": None,
            }
        else:
            last4 = f"{rng.randint(0, 9999):04d}"
            account["number"] = last4  # credit card numbers are masked to the last 4 digits
            account["name"] = "Mastercard Black"
            account["marketingName"] = "Pluggy Black Mastercard"
            limit = float(rng.choice((5000, 8000, 12000, 20000)))
            account["creditData"] = {
                "level": "BLACK",
                "brand": "MASTERCARD",
                "brandAdditionalInfo": None,
                "balanceCloseDate": None,
                "balanceDueDate": None,
                "availableCreditLimit": limit,
                "balanceForeignCurrency": None,
                "minimumPayment": 0.0,
                "creditLimit": limit,
                "isLimitFlexible": False,
                "status": "ACTIVE",
                "holderType": "MAIN",
                "disaggregatedCreditLimits": None,
                "additionalCards": None,
            }
        self._store.accounts[account_id] = account
        self._store.transactions[account_id] = {}
        self._store.deleted_tx[account_id] = []
        meta.account_ids.append(account_id)
        return account

    def generate_history(self, meta: ItemMeta, account: JsonDict, count: int, stamp_ms: int) -> list[str]:
        """`count` rows over the last HISTORY_DAYS days, stored with the opening balance; returns their ids."""
        rng = meta.rng
        today = sao_paulo_midnight_ms(stamp_ms)
        dates = sorted(today - rng.randint(0, HISTORY_DAYS - 1) * DAY_MS for _ in range(count))
        rows = [make_tx(meta, account, d, stamp_ms, today) for d in dates]
        if account["type"] == "BANK":
            opening = money(
                rng.uniform(800, 9000) if account["subtype"] == "CHECKING_ACCOUNT" else rng.uniform(2000, 30000)
            )
            set_bank_balance(account, opening, stamp_ms, bump=False)
        for row in rows:
            self._store.insert_tx(account, row)
        if account["type"] == "CREDIT":
            self.refresh_card(account, stamp_ms, bump=False)
        return [row["id"] for row in rows]

    def refresh_card(self, account: JsonDict, stamp_ms: int, *, bump: bool) -> None:
        """Card balance = purchases on the open bill (payments settle earlier bills); limits follow."""
        rows = self._store.transactions[account["id"]].values()
        current_bill = bill_month(sao_paulo_midnight_ms(stamp_ms))
        balance = money(
            sum(
                float(r["amount"])
                for r in rows
                if r["type"] == "DEBIT" and r["creditCardMetadata"]["billForecastDate"] == current_bill
            )
        )
        credit = account["creditData"]
        account["balance"] = balance
        credit["availableCreditLimit"] = money(float(credit["creditLimit"]) - balance)
        credit["minimumPayment"] = money(balance * 0.15)
        year, month = (int(x) for x in current_bill.split("-"))
        close = datetime(year, month, 5, 3, tzinfo=UTC)
        credit["balanceCloseDate"] = iso_from_ms(int(close.timestamp() * 1000))
        credit["balanceDueDate"] = iso_from_ms(int((close + timedelta(days=7)).timestamp() * 1000))
        if bump:
            account["updatedAt"] = iso_from_ms(stamp_ms)

    def list_accounts(self, item_id: str, account_type: str | None, key: KeyInfo) -> JsonDict:
        with self._store.lock:
            key.check_scope(item_id)
            self._store.require_item(item_id)
            results = [
                copy.deepcopy(self._store.accounts[a])
                for a in self._store.meta[item_id].account_ids
                if a not in self._store.hidden_accounts
                and (account_type is None or self._store.accounts[a]["type"] == account_type)
            ]
        return {"page": 1, "total": len(results), "totalPages": 1, "results": results}

    def get_account(self, account_id: str) -> JsonDict:
        with self._store.lock:
            return copy.deepcopy(self._store.visible_account(account_id))

    def list_account_statements(self, account_id: str) -> JsonDict:
        """`GET /accounts/{id}/statements`: the sandbox produces none (an empty page for a known account)."""
        with self._store.lock:
            self._store.visible_account(account_id)
        return {"page": 1, "total": 0, "totalPages": 1, "results": []}
