"""The data behind every resource, kept in one place under one lock, and which of it Pluggy shows.

Each resource module (items, accounts, transactions, runs...) works on this `Store` while holding `lock`
(re-entrant, so calls nest). Mutations emit their webhooks while holding it too, so webhook order always
matches the order of the changes. A timed sync stores what it collects at once but marks it hidden
(`hidden_tx`, `hidden_accounts`) until Pluggy would show it: the API, `truth()` and the sort order skip it.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from pluggy_emulator.accounts import set_bank_balance
from pluggy_emulator.common import Clock, JsonDict, PluggyApiError, money, parse_iso_ms
from pluggy_emulator.connectors import SANDBOX_CONNECTOR_ID


def item_not_found() -> PluggyApiError:
    # Exact body from pluggy-api.md section 2.
    return PluggyApiError(404, "item not found", "ITEM_NOT_FOUND")


@dataclass
class ItemMeta:
    """What the emulator keeps about an item beside its resource: the login and the item's own random data."""

    username: str
    password: str
    rng: random.Random  # every value generated for this item, so one item's data never depends on another's
    transactions_per_account: int
    owner: str
    cpf: str
    account_ids: list[str] = field(default_factory=list)
    connector_id: int = SANDBOX_CONNECTOR_ID
    mfa_token: str | None = None  # MFA 1-step: the token sent with the credentials
    # While the item waits for MFA or a user action: how the interrupted run goes on (triggeredBy, first sync?).
    pending_run: tuple[str, bool] | None = None
    device_authorized: bool = False  # user-authorization-pending: the account holder approved Pluggy's device


class Store:
    """Items, accounts and transactions (with their deletions and visibility), the clock and the lock."""

    def __init__(self, clock: Clock) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.item_counter = 0
        self.items: dict[str, JsonDict] = {}
        self.meta: dict[str, ItemMeta] = {}
        self.accounts: dict[str, JsonDict] = {}
        self.transactions: dict[str, dict[str, JsonDict]] = {}  # accountId -> id -> row
        self.tx_account: dict[str, str] = {}
        # accountId -> (sort keys, ids) of its visible rows, newest first; dropped whenever they change
        self.order: dict[str, tuple[list[tuple[int, str]], list[str]]] = {}
        self.hidden_tx: set[str] = set()  # collected by a timed sync, not visible at Pluggy yet
        self.hidden_accounts: set[str] = set()
        self.deleted_items: list[str] = []
        self.deleted_accounts: list[str] = []
        self.deleted_tx: dict[str, list[str]] = {}

    def require_item(self, item_id: str) -> JsonDict:
        item = self.items.get(item_id)
        if item is None:
            raise item_not_found()
        return item

    def visible_account(self, account_id: str) -> JsonDict:
        """The account as Pluggy shows it now; 404 when unknown or still being collected (timed mode)."""
        account = self.accounts.get(account_id)
        if account is None or account_id in self.hidden_accounts:
            raise PluggyApiError(404, "account not found", "ACCOUNT_NOT_FOUND")
        return account

    def require_transaction(self, tx_id: str) -> JsonDict:
        account_id = self.tx_account.get(tx_id)
        if account_id is None or tx_id in self.hidden_tx:
            raise PluggyApiError(404, "transaction not found", "TRANSACTION_NOT_FOUND")
        return self.transactions[account_id][tx_id]

    def insert_tx(self, account: JsonDict, row: JsonDict) -> None:
        """Store a row; bank rows get the running balance (institution-provided, never recomputed)."""
        if account["type"] == "BANK":
            balance = money(float(account["balance"]) + float(row["amount"]))
            row["balance"] = balance
            set_bank_balance(account, balance, None, bump=False)
        self.transactions[account["id"]][row["id"]] = row
        self.tx_account[row["id"]] = account["id"]
        self.order.pop(account["id"], None)

    def remove_tx(self, account_id: str, tx_id: str) -> JsonDict:
        """Delete a row (reported in `deletedTransactionIds`); returns it."""
        row = self.transactions[account_id].pop(tx_id)
        self.tx_account.pop(tx_id, None)
        self.hidden_tx.discard(tx_id)
        self.deleted_tx[account_id].append(tx_id)
        self.order.pop(account_id, None)
        return row

    def publish_rows(self, account_id: str, ids: list[str]) -> list[JsonDict]:
        """Make hidden rows visible; returns those that were still waiting."""
        rows = self.transactions.get(account_id, {})
        shown = [rows[t] for t in ids if t in rows and t in self.hidden_tx]
        for row in shown:
            self.hidden_tx.discard(row["id"])
        self.order.pop(account_id, None)
        return shown

    def sorted_rows(self, account_id: str) -> tuple[list[tuple[int, str]], list[str]]:
        """(sort keys, ids) of the visible rows: newest date first, then id; cached until the rows change."""
        cached = self.order.get(account_id)
        if cached is None:
            hidden = self.hidden_tx
            keys = sorted(
                (-parse_iso_ms(row["date"]), row["id"])
                for row in self.transactions[account_id].values()
                if row["id"] not in hidden
            )
            cached = (keys, [k[1] for k in keys])
            self.order[account_id] = cached
        return cached
