"""What a control sync changes (`sync_item`): new, changed, deleted and restated rows, and their webhooks.

The rows are picked when the sync is asked for (`pick`). An instant sync applies everything at once
(`apply`); a timed one collects its new rows during its steps (collection.py) and applies the changes and
deletions when MERGING ends (`merge`). Either way the webhooks follow Pluggy's order (`emit`): item/updated,
then transactions/created, /updated and /deleted per account.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pluggy_emulator.accounts import Accounts, set_bank_balance
from pluggy_emulator.common import DAY_MS, JsonDict, iso_from_ms, sao_paulo_midnight_ms
from pluggy_emulator.events import Events
from pluggy_emulator.sandbox_rows import change_tx, make_tx, restated_copy
from pluggy_emulator.store import ItemMeta, Store


@dataclass
class SyncSpec:
    """What a control-API sync changes (rows picked when it is asked for, applied as it runs)."""

    add: int = 0
    new_account: bool = False
    restated: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class SyncChanges:
    """What one sync changed, per account, in the order the rows were touched."""

    stamp_ms: int
    created: dict[str, list[str]] = field(default_factory=dict)
    updated: dict[str, list[str]] = field(default_factory=dict)
    deleted: dict[str, list[str]] = field(default_factory=dict)
    restated: dict[str, str] = field(default_factory=dict)  # old id -> new id
    touched: set[str] = field(default_factory=set)  # accounts whose balance may have moved

    @property
    def stamp(self) -> str:
        return iso_from_ms(self.stamp_ms)

    def record(self, account_id: str, *, created: str | None = None, deleted: str | None = None) -> None:
        if created is not None:
            self.created.setdefault(account_id, []).append(created)
        if deleted is not None:
            self.deleted.setdefault(account_id, []).append(deleted)
        self.touched.add(account_id)


class Changes:
    """Picks, applies and reports the changes of control syncs."""

    def __init__(self, store: Store, accounts: Accounts, events: Events) -> None:
        self._store = store
        self._accounts = accounts
        self._events = events

    def pick(self, meta: ItemMeta, *, add: int, new_account: bool, restate: int, delete: int, change: int) -> SyncSpec:
        """The rows a sync will restate, delete and change (disjoint, from the visible ones); ValueError if
        there are not enough, or rows are to be added to an item without accounts."""
        store = self._store
        rng = meta.rng
        existing = [
            (a, t)
            for a in meta.account_ids
            if a not in store.hidden_accounts
            for t in store.transactions[a]
            if t not in store.hidden_tx
        ]
        cards = [(a, t) for a, t in existing if store.accounts[a]["type"] == "CREDIT"]
        if restate > len(cards):
            raise ValueError(f"only {len(cards)} credit card transactions can be restated")
        restated = rng.sample(cards, restate)
        restated_set = set(restated)
        remaining = [pair for pair in existing if pair not in restated_set]
        if delete + change > len(remaining):
            raise ValueError(f"only {len(remaining)} transactions can be deleted or changed")
        picked = rng.sample(remaining, delete + change)
        if add and not meta.account_ids:
            raise ValueError("the item has no accounts to add transactions to")
        return SyncSpec(add, new_account, restated, picked[:delete], picked[delete:])

    def apply(self, item: JsonDict, meta: ItemMeta, spec: SyncSpec) -> tuple[SyncChanges, str | None]:
        """An instant sync's changes, all now; (the changes, the new account's id or None)."""
        store = self._store
        changes = SyncChanges(stamp_ms=store.clock.now_ms())
        for account_id, tx_id in spec.changed:
            change_tx(meta, store.transactions[account_id][tx_id], changes.stamp)
            store.order.pop(account_id, None)
            changes.updated.setdefault(account_id, []).append(tx_id)
        for account_id, tx_id in spec.restated:
            new = restated_copy(meta, store.remove_tx(account_id, tx_id), changes.stamp)
            store.insert_tx(store.accounts[account_id], new)
            changes.record(account_id, deleted=tx_id, created=new["id"])
            changes.restated[tx_id] = new["id"]
        for account_id, tx_id in spec.deleted:
            old = store.remove_tx(account_id, tx_id)
            account = store.accounts[account_id]
            if account["type"] == "BANK":
                balance = float(account["balance"]) - float(old["amount"])
                set_bank_balance(account, balance, None, bump=False)
            changes.record(account_id, deleted=tx_id)
        self.add_rows(meta, spec.add, changes)
        new_account_id: str | None = None
        if spec.new_account:
            account = self._accounts.new_account(
                item,
                meta,
                kind="BANK",
                subtype="CHECKING_ACCOUNT",
                index=len(meta.account_ids),
                stamp_ms=changes.stamp_ms,
            )
            count = max(1, meta.transactions_per_account // 2)
            changes.created[account["id"]] = self._accounts.generate_history(meta, account, count, changes.stamp_ms)
            new_account_id = account["id"]
        for account_id in changes.touched:
            account = store.accounts[account_id]
            if account["type"] == "CREDIT":
                self._accounts.refresh_card(account, changes.stamp_ms, bump=True)
            else:
                account["updatedAt"] = changes.stamp
        return changes, new_account_id

    def add_rows(self, meta: ItemMeta, add: int, changes: SyncChanges) -> None:
        """New rows dated today or the two days before, round-robin over the item's accounts."""
        store = self._store
        today = sao_paulo_midnight_ms(changes.stamp_ms)
        accounts = [store.accounts[a] for a in meta.account_ids]
        for n in range(add):
            account = accounts[n % len(accounts)]
            date_ms = today - meta.rng.randint(0, 2) * DAY_MS
            row = make_tx(meta, account, date_ms, changes.stamp_ms, today)
            store.insert_tx(account, row)
            changes.record(account["id"], created=row["id"])

    def merge(self, meta: ItemMeta, spec: SyncSpec) -> SyncChanges:
        """The changed and deleted rows of a timed sync, applied when its MERGING ends."""
        store = self._store
        changes = SyncChanges(stamp_ms=store.clock.now_ms())
        now_ms, stamp = changes.stamp_ms, changes.stamp
        updated, deleted = changes.updated, changes.deleted
        touched: set[str] = set()
        for account_id, tx_id in spec.changed:
            row = store.transactions.get(account_id, {}).get(tx_id)
            if row is None or tx_id in store.hidden_tx:
                continue
            change_tx(meta, row, stamp)
            store.order.pop(account_id, None)
            updated.setdefault(account_id, []).append(tx_id)
        gone = [(a, t, False) for a, t in spec.restated] + [(a, t, True) for a, t in spec.deleted]
        for account_id, tx_id, plain_delete in gone:
            if tx_id not in store.transactions.get(account_id, {}):
                continue
            old = store.remove_tx(account_id, tx_id)
            account = store.accounts[account_id]
            if plain_delete and account["type"] == "BANK":
                set_bank_balance(account, float(account["balance"]) - float(old["amount"]), None, bump=False)
            deleted.setdefault(account_id, []).append(tx_id)
            touched.add(account_id)
        for account_id in touched:
            account = store.accounts[account_id]
            if account["type"] == "CREDIT":
                self._accounts.refresh_card(account, now_ms, bump=True)
            else:
                account["updatedAt"] = stamp
        return changes

    def emit(self, item: JsonDict, meta: ItemMeta, changes: SyncChanges, triggered_by: str) -> list[str]:
        """item/updated, then transactions/created, /updated and /deleted per account, in that order."""
        events = self._events
        event_ids = [events.item_event("item/updated", item, triggered_by)]
        for account_id in meta.account_ids:
            if changes.created.get(account_id):
                event_ids.append(events.transactions_created(item, account_id, changes.stamp, triggered_by))
        for account_id in meta.account_ids:
            if changes.updated.get(account_id):
                fields = {
                    "id": item["id"],
                    "itemId": item["id"],
                    "accountId": account_id,
                    "transactionIds": changes.updated[account_id],
                    "triggeredBy": triggered_by,
                }
                event_ids.append(events.emit("transactions/updated", fields, item=item))
        for account_id in meta.account_ids:
            if changes.deleted.get(account_id):
                fields = {
                    "id": item["id"],
                    "itemId": item["id"],
                    "accountId": account_id,
                    "transactionIds": changes.deleted[account_id],
                }
                event_ids.append(events.emit("transactions/deleted", fields, item=item))
        return event_ids

    def remove_transactions(self, account_id: str, tx_ids: Sequence[str]) -> None:
        """Delete rows at Pluggy without any webhook: the test then delivers (or loses) the notice itself."""
        with self._store.lock:
            for tx_id in tx_ids:
                self._store.remove_tx(account_id, tx_id)
