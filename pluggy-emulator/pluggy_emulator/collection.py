"""What a timed sync collects, and when each part becomes visible at Pluggy.

A run (runs.py) collects everything as soon as it is logged in, but stores it hidden (store.py); its steps
then make each part visible: new accounts when ACCOUNTS_IN_PROGRESS ends, each account's new rows during
TRANSACTIONS_IN_PROGRESS (bank) or CREDITCARDS_IN_PROGRESS (card), and `late_fraction` of them only after
UPDATED (`late_delay`), as Pluggy's rows can lag. Rows get `createdAt` values spread over their account's
collection, late ones from its first half, so neither pages nor accounts are in `createdAt` order.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pluggy_emulator.accounts import Accounts
from pluggy_emulator.changes import Changes, SyncChanges, SyncSpec
from pluggy_emulator.common import JsonDict, iso_from_ms
from pluggy_emulator.events import Events
from pluggy_emulator.item_states import sandbox_outcome
from pluggy_emulator.sandbox_rows import restated_copy
from pluggy_emulator.store import ItemMeta, Store
from pluggy_emulator.timeline import ScheduledTask, Scheduler, SyncTiming

if TYPE_CHECKING:
    from pluggy_emulator.runs import Run


@dataclass
class RowPlan:
    """A timed sync's new rows while their moments are being scheduled."""

    run: Run
    rng: random.Random
    created: dict[str, list[str]]  # accountId -> new row ids
    late: dict[str, set[str]]  # accountId -> the ids that arrive after UPDATED
    late_batches: list[tuple[str, list[str]]]  # filled: (accountId, late ids) in the order they were planned


class Collection:
    """Hidden collection, the moments rows appear, and the late rows that outlive their run."""

    def __init__(
        self,
        store: Store,
        *,
        accounts: Accounts,
        changes: Changes,
        events: Events,
        scheduler: Scheduler,
        timing: SyncTiming,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._changes = changes
        self._events = events
        self._scheduler = scheduler
        self._timing = timing
        self._late_tasks: dict[str, list[ScheduledTask]] = {}  # late-row publications still to come, per item

    def collect_hidden(
        self, run: Run, item: JsonDict, spec: SyncSpec, *, start_ms: int, accounts_end: int
    ) -> tuple[dict[str, list[str]], list[str]]:
        """The sync's new accounts and rows, stored but hidden; ({accountId: new row ids}, new account ids)."""
        store = self._store
        meta = store.meta[run.item_id]
        created: dict[str, list[str]] = {}
        new_accounts: list[str] = []
        if run.spec is None and not meta.account_ids:
            _, multiplier, variant = sandbox_outcome(meta)
            for account_id, (ids, _) in self._accounts.create_accounts(
                item, meta, multiplier, variant, accounts_end
            ).items():
                created[account_id] = ids
                new_accounts.append(account_id)
        for account_id, tx_id in spec.restated:  # the old row goes when MERGING ends
            old = store.transactions.get(account_id, {}).get(tx_id)
            if old is None:
                continue
            new = restated_copy(meta, old, iso_from_ms(start_ms))
            store.insert_tx(store.accounts[account_id], new)
            created.setdefault(account_id, []).append(new["id"])
            run.summary["restated"][tx_id] = new["id"]
        changes = SyncChanges(stamp_ms=start_ms)
        self._changes.add_rows(meta, spec.add, changes)
        for account_id, ids in changes.created.items():
            created.setdefault(account_id, []).extend(ids)
        if spec.new_account:
            index = len(meta.account_ids)
            account = self._accounts.new_account(
                item, meta, kind="BANK", subtype="CHECKING_ACCOUNT", index=index, stamp_ms=accounts_end
            )
            count = max(1, meta.transactions_per_account // 2)
            created[account["id"]] = self._accounts.generate_history(meta, account, count, accounts_end)
            new_accounts.append(account["id"])
            run.summary["newAccountId"] = account["id"]
        for account_id in created:
            if account_id not in new_accounts:  # collected again: the institution's balance and limits now
                account = store.accounts[account_id]
                if account["type"] == "CREDIT":
                    self._accounts.refresh_card(account, start_ms, bump=True)
                else:
                    account["updatedAt"] = iso_from_ms(start_ms)
            store.order.pop(account_id, None)
        run.hidden_accounts.update(new_accounts)
        store.hidden_accounts.update(new_accounts)
        for ids in created.values():
            run.hidden_tx.update(ids)
            store.hidden_tx.update(ids)
        return created, new_accounts

    def pick_late(self, rng: random.Random, created: dict[str, list[str]]) -> dict[str, set[str]]:
        """The rows that arrive after UPDATED: `late_fraction` of the sync's new rows (at least one when the
        fraction is above 0), never all of an account's, so each late row has on-time rows beside it."""
        fraction = self._timing.late_fraction
        total = sum(len(ids) for ids in created.values())
        if fraction <= 0 or total < 2:
            return {}
        pool: list[tuple[str, str]] = []
        for account_id, ids in created.items():
            if len(ids) >= 2:
                keep = rng.choice(ids)
                pool += [(account_id, tx_id) for tx_id in ids if tx_id != keep]
        late: dict[str, set[str]] = {}
        for account_id, tx_id in rng.sample(pool, min(len(pool), max(1, round(fraction * total)))):
            late.setdefault(account_id, set()).add(tx_id)
        return late

    def stamp_rows(
        self, plan: RowPlan, account_ids: list[str], window: tuple[int, int]
    ) -> list[tuple[int, str, list[str]]]:
        """Give each account's new rows a createdAt within its collection; [(moment they appear, accountId,
        the on-time ids)].

        The accounts' rows appear one group after the other inside `window`; a group's createdAt values lie
        between the window's start and the moment it appears (one row exactly then), its late rows' in the
        first half of that span: earlier than rows that are visible before them.
        """
        rng, created, late = plan.rng, plan.created, plan.late
        start, stop = window
        moments: list[tuple[int, str, list[str]]] = []
        for index, account_id in enumerate(account_ids):
            visible_at = start + (stop - start) * (index + 1) // (len(account_ids) + 1)
            rows = self._store.transactions[account_id]
            late_ids = late.get(account_id, set())
            on_time = [t for t in created[account_id] if t not in late_ids]
            for tx_id in on_time:
                self._stamp_row(rows[tx_id], rng.randint(start, visible_at))
            if on_time:
                self._stamp_row(rows[rng.choice(on_time)], visible_at)
            late_rows = [t for t in created[account_id] if t in late_ids]
            for tx_id in late_rows:
                self._stamp_row(rows[tx_id], rng.randint(start, (start + visible_at) // 2))
            if late_rows:
                plan.late_batches.append((account_id, late_rows))
            moments.append((visible_at, account_id, on_time))
        return moments

    @staticmethod
    def _stamp_row(row: JsonDict, created_ms: int) -> None:
        row["createdAt"] = row["updatedAt"] = iso_from_ms(created_ms)

    def show_accounts(self, run: Run, account_ids: list[str]) -> None:
        self._store.hidden_accounts.difference_update(account_ids)
        run.hidden_accounts.difference_update(account_ids)

    def rows_collected(self, run: Run, account_id: str, ids: list[str]) -> None:
        """An account's on-time rows appear; on an update, with their transactions/created."""
        shown = self._store.publish_rows(account_id, ids)
        run.hidden_tx.difference_update(ids)
        if shown and not run.first:
            since = min(str(row["createdAt"]) for row in shown)
            self._events.transactions_created(self._store.items[run.item_id], account_id, since, run.triggered_by)

    def discard_hidden(self, run: Run, meta: ItemMeta | None) -> None:
        """A cancelled run: what it collected and never showed is gone."""
        store = self._store
        for tx_id in run.hidden_tx:
            store.hidden_tx.discard(tx_id)
            account_id = store.tx_account.pop(tx_id, None)
            if account_id is not None:
                store.transactions[account_id].pop(tx_id, None)
                store.order.pop(account_id, None)
        for account_id in run.hidden_accounts:
            store.hidden_accounts.discard(account_id)
            store.accounts.pop(account_id, None)
            store.transactions.pop(account_id, None)
            store.deleted_tx.pop(account_id, None)
            store.order.pop(account_id, None)
            if meta is not None and account_id in meta.account_ids:
                meta.account_ids.remove(account_id)

    def schedule_late(self, run: Run, late_batches: list[tuple[str, list[str]]], updated_ms: int) -> None:
        """Each late batch appears `late_delay` after UPDATED (the run is over by then)."""
        item_id = run.item_id
        meta = self._store.meta[item_id]
        low, high = self._timing.late_delay
        for account_id, ids in late_batches:
            due = updated_ms + round(meta.rng.uniform(low, high) * 1000)
            task = self._scheduler.at(
                due, functools.partial(self._late_rows, item_id, account_id, ids, run.triggered_by)
            )
            self._late_tasks.setdefault(item_id, []).append(task)

    def _late_rows(self, item_id: str, account_id: str, ids: list[str], triggered_by: str) -> None:
        """Rows of a finished sync that arrive after UPDATED, with their own transactions/created."""
        with self._store.lock:
            item = self._store.items.get(item_id)
            if item is None:
                return
            self._late_tasks[item_id] = [t for t in self._late_tasks.get(item_id, []) if not t.done]
            shown = self._store.publish_rows(account_id, ids)
            if shown:
                since = min(str(row["createdAt"]) for row in shown)
                self._events.transactions_created(item, account_id, since, triggered_by)

    def cancel_late(self, item_id: str) -> None:
        for task in self._late_tasks.pop(item_id, []):
            self._scheduler.cancel(task)

    def late_batches_pending(self) -> int:
        return sum(1 for tasks in self._late_tasks.values() for t in tasks if not t.done and not t.cancelled)
