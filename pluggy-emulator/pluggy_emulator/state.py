"""The emulator's state: one `Store` (store.py) and the resource objects that work on it, composed.

Each Pluggy resource has its module, as Pluggy's API is split: auth.py (API keys, connect tokens),
connectors.py, items.py (items and their syncs; item_states.py for how a sync ends), accounts.py,
transactions.py, changes.py (control syncs with changes), webhook_registry.py (the `/webhooks` resource),
events.py (every webhook sent), payments.py, products.py (bills, investments, loans, identity, consents).
Timed mode adds runs.py (a sync over emulator time) and collection.py (when collected data becomes visible).
sandbox_rows.py generates the sandbox's rows.

Shapes follow /work/shared/pluggy-api.md; webhook payloads follow seed 003. Everything is guarded by the
store's re-entrant lock (`EmulatorState.lock`); mutations emit notifications while holding it, so webhook
order always matches the order of the changes. Sandbox data comes from a per-item `random.Random` derived
from the emulator seed, so one item's data does not depend on how many API keys were issued or how other
items were changed.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable

from pluggy_emulator.accounts import DEFAULT_TRANSACTIONS_PER_ACCOUNT, Accounts
from pluggy_emulator.auth import KeyInfo, Keys
from pluggy_emulator.changes import Changes
from pluggy_emulator.collection import Collection
from pluggy_emulator.common import Clock, JsonDict, parse_iso_ms
from pluggy_emulator.connectors import SANDBOX_CONNECTOR_ID, ConnectorRegistry
from pluggy_emulator.events import Events
from pluggy_emulator.item_states import ItemStates
from pluggy_emulator.items import Items
from pluggy_emulator.payments import Payments, PaymentsApi
from pluggy_emulator.products import Products
from pluggy_emulator.runs import TimedRuns
from pluggy_emulator.store import Store
from pluggy_emulator.timeline import Scheduler, SyncTiming, scaled_clock
from pluggy_emulator.transactions import LEGACY_TRANSACTIONS_LAST_DAY, Transactions
from pluggy_emulator.webhook_registry import WEBHOOK_EVENTS, WebhookRegistry
from pluggy_emulator.webhooks import Notification

# Names other code imports from here, wherever they live now.
__all__ = [
    "DEFAULT_TRANSACTIONS_PER_ACCOUNT",
    "LEGACY_TRANSACTIONS_LAST_DAY",
    "SANDBOX_CONNECTOR_ID",
    "WEBHOOK_EVENTS",
    "EmulatorState",
    "KeyInfo",
    "parse_iso_ms",
]


class EmulatorState:
    """All emulated Pluggy data: the store and one object per resource (call them with or without `lock`)."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        notify: Callable[[Notification], None],
        seed: int = 0,
        page_size: int = 500,
        api_key_ttl_seconds: float = 7200.0,
        disable_webhook_after_failures: int | None = 10,
        allow_loopback_webhooks: bool = True,
        clock: Callable[[], float] | None = None,
        sync_timing: SyncTiming | None = None,
        time_scale: float = 1.0,
    ) -> None:
        """`sync_timing` turns timed mode on: the clock starts at `clock()` (default now) and runs
        1 / `time_scale` emulator seconds per wall second, and syncs run in the background (timeline.py)."""
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.client_id = client_id
        self.page_size = page_size
        self.timing = sync_timing
        self.store = store = Store(Clock(scaled_clock(clock, time_scale) if sync_timing is not None else clock))
        self.scheduler = Scheduler(store.clock.wall_ms, time_scale if sync_timing is not None else 1.0)
        self.webhooks = WebhookRegistry(
            store, allow_loopback=allow_loopback_webhooks, disable_after_failures=disable_webhook_after_failures
        )
        self.events = events = Events(store, self.webhooks, notify, client_id=client_id)
        self.keys = Keys(
            store,
            client_id=client_id,
            client_secret=client_secret,
            api_key_ttl_seconds=api_key_ttl_seconds,
            validate_webhook_url=self.webhooks.validate_url,
        )
        self.connectors = ConnectorRegistry(store.lock, events.emit)
        self.accounts = Accounts(store)
        self.transactions = Transactions(store, page_size=page_size)
        self.payments = PaymentsApi(Payments(store.clock, page_size=page_size), store.lock, events.emit)
        self.products = Products(store, seed=seed)
        states = ItemStates(store, events, sync_timing, self.products)
        changes = Changes(store, self.accounts, events)
        self.runs: TimedRuns | None = None
        if sync_timing is not None:
            collection = Collection(
                store,
                accounts=self.accounts,
                changes=changes,
                events=events,
                scheduler=self.scheduler,
                timing=sync_timing,
            )
            self.runs = TimedRuns(
                store,
                states=states,
                changes=changes,
                collection=collection,
                events=events,
                scheduler=self.scheduler,
                timing=sync_timing,
            )
        self.changes = changes
        self.items = Items(
            store,
            seed=seed,
            connectors=self.connectors,
            webhooks=self.webhooks,
            events=events,
            states=states,
            accounts=self.accounts,
            changes=changes,
            runs=self.runs,
            products=self.products,
        )

    @property
    def lock(self) -> threading.RLock:
        return self.store.lock

    @property
    def clock(self) -> Clock:
        """The emulator's "now" (scaled in timed mode)."""
        return self.store.clock

    @property
    def timed(self) -> bool:
        return self.timing is not None

    @property
    def base_url(self) -> str:
        return self.events.base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self.events.base_url = value

    @property
    def allow_loopback_webhooks(self) -> bool:
        return self.webhooks.allow_loopback

    @property
    def api_key_ttl_seconds(self) -> float:
        return self.keys.api_key_ttl_seconds

    @api_key_ttl_seconds.setter
    def api_key_ttl_seconds(self, seconds: float) -> None:
        self.keys.api_key_ttl_seconds = seconds

    # --- time ----------------------------------------------------------------------------------------------

    def pause_clock(self) -> bool:
        """Hold the emulator's clock still (False if it already was): nothing scheduled comes due."""
        paused = self.clock.pause()
        self.scheduler.wake()
        return paused

    def resume_clock(self) -> bool:
        """Let the clock run on from where it stood (False if it was not paused)."""
        resumed = self.clock.resume()
        self.scheduler.wake()
        return resumed

    def advance_clock(self, seconds: float) -> None:
        """Jump the clock forward; scheduled work now due runs at once, in order."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0: the clock only moves forward")
        self.clock.advance(round(seconds * 1000))
        self.scheduler.wake()

    def last_sync(self, item_id: str) -> JsonDict | None:
        """The item's latest timed sync (None in instant mode or before one)."""
        return self.runs.last_sync(item_id) if self.runs is not None else None

    def pending_work(self) -> int:
        """Timed syncs running or waiting for the user, device authorizations awaited, late-row batches to come."""
        if self.runs is None:
            return 0
        with self.lock:
            return self.runs.pending_work()

    # --- ground truth --------------------------------------------------------------------------------------

    def truth(self) -> JsonDict:
        """Everything a faithful copy should hold, for field-by-field comparison: what Pluggy shows now.

        In timed mode accounts and rows a sync has collected but not yet made visible are left out. Products
        (products.py): `bills` {accountId: {id: bill}}, `investments`, `investmentTransactions` {investmentId:
        {id: row}}, `loans`, `identities` {itemId: identity}, `consents`, `deletedInvestmentIds`.
        """
        store = self.store
        with store.lock:
            accounts = {a: v for a, v in store.accounts.items() if a not in store.hidden_accounts}
            transactions = {}
            for account_id in accounts:
                _, ids = store.sorted_rows(account_id)
                rows = store.transactions[account_id]
                transactions[account_id] = {tx_id: copy.deepcopy(rows[tx_id]) for tx_id in ids}
            return {
                "clientId": self.client_id,
                "items": copy.deepcopy(store.items),
                "accounts": copy.deepcopy(accounts),
                "transactions": transactions,
                "deletedItemIds": list(store.deleted_items),
                "deletedAccountIds": list(store.deleted_accounts),
                "deletedTransactionIds": {a: list(ids) for a, ids in store.deleted_tx.items() if a in accounts},
                "webhooks": self.webhooks.truth(),
                "connectors": self.connectors.truth(),
                "payments": self.payments.truth(),
                **self.products.truth(),
            }
