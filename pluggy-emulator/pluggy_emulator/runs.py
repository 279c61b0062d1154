"""Timed runs (timed mode): one sync of an item in the background, step by step over emulator time.

A run goes UPDATING now, then CREATING and CREATED (a new item; an update starts at CREATED),
LOGIN_IN_PROGRESS, the login's outcome (an error, a wait for the MFA or a user action with its deadline, or
logged in), then one step per product while collection.py makes what it collected visible, MERGING, and
UPDATED with its webhooks (pluggy-api.md section 11; lengths in `SyncTiming`, timeline.py). Each step is a
task on the scheduler that does nothing once the run is cancelled or replaced. `last_sync` describes the
item's latest run.

A login that ends USER_AUTHORIZATION_PENDING ends its run, but leaves a timer: `authorization_delay` later
Pluggy runs a sync by itself (triggeredBy SYNC), as the account holder authorized its device meanwhile.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from pluggy_emulator.changes import Changes, SyncSpec
from pluggy_emulator.collection import Collection, RowPlan
from pluggy_emulator.common import JsonDict, iso_from_ms, parse_iso_ms
from pluggy_emulator.events import Events
from pluggy_emulator.item_states import (
    AUTHORIZATION_NOT_GRANTED,
    AUTHORIZATION_PENDING,
    PENDING_STATUSES,
    WAIT_STATUSES,
    ItemStates,
    collected_variant,
    login_step,
)
from pluggy_emulator.store import Store
from pluggy_emulator.timeline import ScheduledTask, Scheduler, SyncTiming


@dataclass
class Run:
    """One timed sync of an item, from the request to UPDATED or an error (late rows outlive it)."""

    item_id: str
    triggered_by: str
    first: bool
    spec: SyncSpec | None  # a control sync (no credential checks); None: a login with the stored credentials
    creating: bool = False  # a new item: the run starts at CREATING
    cancelled: bool = False
    tasks: list[ScheduledTask] = field(default_factory=list)  # cancelled with the run
    deadline: ScheduledTask | None = None  # the USER_INPUT_TIMEOUT task while the item waits for the user
    hidden_tx: set[str] = field(default_factory=set)  # rows it collected that are not visible yet
    hidden_accounts: set[str] = field(default_factory=set)
    summary: JsonDict = field(default_factory=dict)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class TimedRuns:
    """The item's run in progress (or waiting for the user), its device-authorization timer, and the latest
    run's summary per item."""

    def __init__(
        self,
        store: Store,
        *,
        states: ItemStates,
        changes: Changes,
        collection: Collection,
        events: Events,
        scheduler: Scheduler,
        timing: SyncTiming,
    ) -> None:
        self._store = store
        self._states = states
        self._changes = changes
        self._collection = collection
        self._events = events
        self._scheduler = scheduler
        self._timing = timing
        self._runs: dict[str, Run] = {}  # the item's timed sync in progress (or waiting for the user)
        self._summaries: dict[str, JsonDict] = {}  # the item's latest timed sync
        self._authorizations: dict[str, ScheduledTask] = {}  # USER_AUTHORIZATION_PENDING: Pluggy's later sync

    # --- the run's life -------------------------------------------------------------------------------------

    def get(self, item_id: str) -> Run | None:
        return self._runs.get(item_id)

    def refuse_while_updating(self, item: JsonDict) -> None:
        if item["status"] in PENDING_STATUSES:
            raise ValueError(f"item {item['id']} is still updating; wait for it first (wait_for_item or settle)")

    def _at(self, run: Run, due_ms: int, task: Callable[[], None]) -> ScheduledTask:
        """Schedule part of `run`: it does nothing once the run is cancelled or replaced."""

        def guarded() -> None:
            with self._store.lock:
                if not run.cancelled and self._runs.get(run.item_id) is run:
                    task()

        handle = self._scheduler.at(due_ms, guarded)
        run.tasks.append(handle)
        return handle

    def cancel(self, item_id: str) -> None:
        """Stop the item's timed sync: its tasks never run and what it collected never becomes visible. A
        device authorization still awaited is dropped too (a new login asks again)."""
        authorization = self._authorizations.pop(item_id, None)
        if authorization is not None:
            self._scheduler.cancel(authorization)
        run = self._runs.pop(item_id, None)
        if run is None:
            return
        run.cancelled = True
        for task in run.tasks:
            self._scheduler.cancel(task)
        meta = self._store.meta.get(item_id)
        if meta is not None:
            meta.pending_run = None
        self._collection.discard_hidden(run, meta)

    def forget(self, item_id: str) -> None:
        """The item is deleted: its run and its late rows still to come are cancelled."""
        self.cancel(item_id)
        self._collection.cancel_late(item_id)

    def _record_step(self, run: Run, item: JsonDict) -> None:
        step = {"status": item["status"], "executionStatus": item["executionStatus"], "at": item["updatedAt"]}
        run.summary["steps"].append(step)

    def _set_step(self, run: Run, execution_status: str, now_ms: int | None = None) -> None:
        item = self._store.items[run.item_id]
        item["executionStatus"] = execution_status
        item["updatedAt"] = iso_from_ms(self._store.clock.now_ms() if now_ms is None else now_ms)
        self._record_step(run, item)

    def begin(self, run: Run) -> None:
        """`run` replaces whatever the item had in progress; `last_sync` describes it from now on."""
        self.cancel(run.item_id)
        self._runs[run.item_id] = run
        self._summaries[run.item_id] = run.summary
        run.summary.update(
            itemId=run.item_id,
            triggeredBy=run.triggered_by,
            first=run.first,
            outcome=None,
            steps=[],
            transactionsCreatedAtFrom=None,
            created={},
            late={},
            updated={},
            deleted={},
            restated={},
            newAccountId=None,
        )

    def start(self, item: JsonDict, run: Run) -> None:
        """UPDATING now, then CREATING -> CREATED (new items only) -> LOGIN_IN_PROGRESS -> the login's outcome."""
        timing = self._timing
        self.begin(run)
        now = self._store.clock.now_ms()
        item["status"] = "UPDATING"
        item["parameter"] = None
        item["userAction"] = None
        self._set_step(run, "CREATING" if run.creating else "CREATED", now)
        due = now
        if run.creating:
            due += _ms(timing.creating)
            self._at(run, due, lambda: self._set_step(run, "CREATED"))
        due += _ms(timing.created)
        self._at(run, due, lambda: self._set_step(run, "LOGIN_IN_PROGRESS"))
        self._at(run, due + _ms(timing.login), lambda: self._login_done(run))

    def _fail(self, run: Run, code: str, provider_message: str | None = None) -> None:
        """The run ends in `code` (LOGIN_ERROR or OUTDATED, item/error)."""
        if self._runs.get(run.item_id) is run:
            del self._runs[run.item_id]
        self._end_wait(run)
        item = self._store.items[run.item_id]
        self._states.set_error(item, code, None, run.triggered_by, provider_message=provider_message)
        self._record_step(run, item)
        run.summary["outcome"] = code

    def _end_wait(self, run: Run) -> None:
        if run.deadline is not None:
            self._scheduler.cancel(run.deadline)
            run.deadline = None

    def _login_done(self, run: Run) -> None:
        """The end of LOGIN_IN_PROGRESS: rejected credentials, a pending device authorization, an MFA
        challenge, a user action, or logged in."""
        meta = self._store.meta[run.item_id]
        if run.spec is None:  # control syncs log in with whatever is stored, as instant ones do
            login = login_step(meta)
            if login.code == AUTHORIZATION_PENDING:
                self._authorization_pending(run)
                return
            if login.code is not None:
                self._fail(run, login.code, login.provider_message)
                return
            if login.waits == "input":
                self.wait_for_mfa(run)
                return
            if login.waits == "action":
                self.wait_for_action(run)
                return
        self._login_succeeded(run)

    # --- waits for the user ------------------------------------------------------------------------------

    def wait_for_mfa(self, run: Run) -> str:
        """WAITING_USER_INPUT with `parameter` (item/waiting_user_input) until the MFA or its deadline."""
        item = self._store.items[run.item_id]
        event_id = self._states.wait_for_mfa(item, self._store.meta[run.item_id], run.triggered_by, first=run.first)
        self._record_step(run, item)
        expires_ms = parse_iso_ms(str(item["parameter"]["expiresAt"]))
        run.deadline = self._at(run, expires_ms, lambda: self.wait_timed_out(run))
        return event_id

    def wait_for_action(self, run: Run) -> str:
        """WAITING_USER_ACTION with `userAction` (item/waiting_user_action) until the account holder acts at
        the bank or `userAction.expiresAt` passes."""
        item = self._store.items[run.item_id]
        meta = self._store.meta[run.item_id]
        event_id = self._states.wait_for_action(item, meta, run.triggered_by, first=run.first)
        self._record_step(run, item)
        expires_ms = parse_iso_ms(str(item["userAction"]["expiresAt"]))
        run.deadline = self._at(run, expires_ms, lambda: self.wait_timed_out(run))
        return event_id

    def deadline_passed(self, run: Run) -> bool:
        """Whether the wait's deadline has come (its task may not have run yet)."""
        return run.deadline is not None and self._store.clock.wall_ms() >= run.deadline.due_ms

    def wait_timed_out(self, run: Run) -> None:
        """Nobody answered before `parameter.expiresAt` (or `userAction.expiresAt`): USER_INPUT_TIMEOUT
        (OUTDATED, item/error), the outcome section 11 gives a missed MFA deadline."""
        if run.deadline is None or self._store.items[run.item_id]["status"] not in WAIT_STATUSES:
            return
        self._store.meta[run.item_id].pending_run = None
        self._fail(run, "USER_INPUT_TIMEOUT")

    def mfa_submitted(self, run: Run, accepted: bool) -> JsonDict:
        """`POST /items/{id}/mfa`: LOGIN_MFA_IN_PROGRESS now (the answer), the token's verdict `login_mfa` later."""
        return self._resume_login(run, "LOGIN_MFA_IN_PROGRESS", None if accepted else "INVALID_CREDENTIALS_MFA")

    def action_done(self, run: Run, granted: bool) -> JsonDict:
        """The account holder acted at the bank: the login resumes (LOGIN_IN_PROGRESS) and ends `login_mfa`
        later, logged in or USER_AUTHORIZATION_NOT_GRANTED."""
        return self._resume_login(run, "LOGIN_IN_PROGRESS", None if granted else AUTHORIZATION_NOT_GRANTED)

    def _resume_login(self, run: Run, step: str, error: str | None) -> JsonDict:
        item = self._store.items[run.item_id]
        self._end_wait(run)
        self._store.meta[run.item_id].pending_run = None
        item["status"] = "UPDATING"
        item["parameter"] = None
        item["userAction"] = None
        now = self._store.clock.now_ms()
        self._set_step(run, step, now)
        snapshot = copy.deepcopy(item)
        due = now + _ms(self._timing.login_mfa)
        if error is None:
            self._at(run, due, lambda: self._login_succeeded(run))
        else:
            self._at(run, due, lambda: self._fail(run, error))
        return snapshot

    # --- device authorization (USER_AUTHORIZATION_PENDING) ------------------------------------------------

    def _authorization_pending(self, run: Run) -> None:
        """The run ends USER_AUTHORIZATION_PENDING (item/error); Pluggy's own sync comes `authorization_delay`
        later unless the account holder answers first (`approve_authorization`, `refuse_authorization`)."""
        item_id = run.item_id
        del self._runs[item_id]
        item = self._store.items[item_id]
        self._states.authorization_pending(item, run.triggered_by)
        self._record_step(run, item)
        run.summary["outcome"] = AUTHORIZATION_PENDING
        due = self._store.clock.wall_ms() + _ms(self._timing.authorization_delay)
        run.summary["authorizationSyncAt"] = iso_from_ms(due)
        handle: list[ScheduledTask] = []  # the task, for the task itself to check it is still the item's
        handle.append(self._scheduler.at(due, lambda: self._authorization_due(item_id, handle)))
        self._authorizations[item_id] = handle[0]

    def _authorization_due(self, item_id: str, handle: list[ScheduledTask]) -> None:
        with self._store.lock:
            if self._authorizations.get(item_id) is handle[0]:
                self.approve_authorization(item_id)

    def approve_authorization(self, item_id: str) -> None:
        """The device is trusted now: the sync Pluggy runs by itself starts (triggeredBy SYNC, at CREATED),
        ending in item/created if the item never had a successful sync, else item/updated."""
        item = self._store.items[item_id]
        self._store.meta[item_id].device_authorized = True
        first = item["lastUpdatedAt"] is None
        self.start(item, Run(item_id, "SYNC", first=first, spec=None))

    def refuse_authorization(self, item_id: str) -> None:
        """The account holder refused: USER_AUTHORIZATION_NOT_GRANTED (LOGIN_ERROR, item/error); no sync."""
        task = self._authorizations.pop(item_id, None)
        if task is not None:
            self._scheduler.cancel(task)
        summary = self._summaries.get(item_id)
        if summary is not None and summary.get("outcome") == AUTHORIZATION_PENDING:
            summary["authorizationSyncAt"] = None
        self._states.set_error(self._store.items[item_id], AUTHORIZATION_NOT_GRANTED, None, "SYNC")

    # --- collecting ----------------------------------------------------------------------------------------

    def _login_succeeded(self, run: Run) -> None:
        """item/login_succeeded, then ACCOUNTS_IN_PROGRESS: what this sync collects is decided now."""
        item = self._store.items[run.item_id]
        self._events.item_event("item/login_succeeded", item, run.triggered_by)
        now = self._store.clock.now_ms()
        self._set_step(run, "ACCOUNTS_IN_PROGRESS", now)
        self._plan_collection(run, item, now)

    def _plan_collection(self, run: Run, item: JsonDict, start_ms: int) -> None:
        """Collect everything now, hidden, and schedule when each part becomes visible.

        New accounts appear when ACCOUNTS_IN_PROGRESS ends. Each bank account's new rows appear together
        during TRANSACTIONS_IN_PROGRESS, each card account's during CREDITCARDS_IN_PROGRESS, one account after
        the other; on an update each group sends transactions/created (a first sync leaves that to
        item/created). Changed and deleted rows change when MERGING ends, with UPDATED and item/created or
        item/updated, then transactions/updated and transactions/deleted. Late rows (`late_fraction`) become
        visible `late_delay` after UPDATED, with their own transactions/created.
        """
        timing = self._timing
        store = self._store
        meta = store.meta[run.item_id]
        rng = meta.rng
        accounts_end = start_ms + _ms(timing.accounts)
        transactions_end = accounts_end + _ms(timing.transactions)
        payment_data_end = transactions_end + _ms(timing.payment_data)
        cards_end = payment_data_end + _ms(timing.credit_cards)
        variant = collected_variant(meta)
        spec = run.spec or SyncSpec()
        collection = self._collection
        created, new_accounts = collection.collect_hidden(run, item, spec, start_ms=start_ms, accounts_end=accounts_end)
        late = collection.pick_late(rng, created)
        ordered = [a for a in meta.account_ids if created.get(a)]
        banks = [a for a in ordered if store.accounts[a]["type"] == "BANK"]
        cards = [a for a in ordered if store.accounts[a]["type"] == "CREDIT"]
        late_batches: list[tuple[str, list[str]]] = []
        rows = RowPlan(run, rng, created, late, late_batches)
        self._at(run, accounts_end, lambda: self._accounts_collected(run, new_accounts))
        self._schedule_rows(rows, banks, (accounts_end, transactions_end))
        self._at(run, transactions_end, lambda: self._set_step(run, "PAYMENT_DATA_IN_PROGRESS"))
        self._at(run, payment_data_end, lambda: self._set_step(run, "CREDITCARDS_IN_PROGRESS"))
        self._schedule_rows(rows, cards, (payment_data_end, cards_end))
        self._at(run, cards_end, lambda: self._merging(run))
        end = cards_end + _ms(timing.merging)
        self._at(run, end, lambda: self._finish(run, variant, spec, late_batches))
        stamps = [str(store.transactions[a][t]["createdAt"]) for a, ids in created.items() for t in ids]
        run.summary["transactionsCreatedAtFrom"] = min(stamps) if stamps else None
        run.summary["created"] = {a: list(ids) for a, ids in created.items()}
        run.summary["late"] = dict(late_batches)

    def _schedule_rows(self, plan: RowPlan, account_ids: list[str], window: tuple[int, int]) -> None:
        for visible_at, account_id, on_time in self._collection.stamp_rows(plan, account_ids, window):
            self._at(plan.run, visible_at, self._rows_task(plan.run, account_id, on_time))

    def _rows_task(self, run: Run, account_id: str, ids: list[str]) -> Callable[[], None]:
        return lambda: self._collection.rows_collected(run, account_id, ids)

    def _accounts_collected(self, run: Run, account_ids: list[str]) -> None:
        self._collection.show_accounts(run, account_ids)
        self._set_step(run, "TRANSACTIONS_IN_PROGRESS")

    def _merging(self, run: Run) -> None:
        item = self._store.items[run.item_id]
        item["status"] = "MERGING"
        item["updatedAt"] = iso_from_ms(self._store.clock.now_ms())
        self._record_step(run, item)

    def _finish(self, run: Run, variant: str, spec: SyncSpec, late_batches: list[tuple[str, list[str]]]) -> None:
        """MERGING ends: changes and deletions land, UPDATED with its webhooks, then the late rows' clocks start."""
        item_id = run.item_id
        item, meta = self._store.items[item_id], self._store.meta[item_id]
        changes = self._changes.merge(meta, spec)
        del self._runs[item_id]
        run.hidden_tx.clear()  # what is still hidden are the late rows, which outlive the run
        self._states.finish_success(item, variant)
        self._record_step(run, item)
        run.summary.update(outcome=item["executionStatus"], updated=changes.updated, deleted=changes.deleted)
        if run.first:
            self._events.item_event("item/created", item, run.triggered_by)
        else:  # item/updated, then transactions/updated and transactions/deleted per account
            self._changes.emit(item, meta, changes, run.triggered_by)
        self._collection.schedule_late(run, late_batches, parse_iso_ms(str(item["updatedAt"])))

    # --- what tests read -----------------------------------------------------------------------------------

    def last_sync(self, item_id: str) -> JsonDict | None:
        """The item's latest timed sync: steps seen (status, executionStatus, at), outcome, the rows it
        created (per account, late ones too), the late ones, updated, deleted and restated rows."""
        with self._store.lock:
            summary = self._summaries.get(item_id)
            return copy.deepcopy(summary) if summary is not None else None

    def pending_work(self) -> int:
        """Runs in progress or waiting for the user, device authorizations awaited and late-row batches still
        to arrive."""
        return len(self._runs) + len(self._authorizations) + self._collection.late_batches_pending()
