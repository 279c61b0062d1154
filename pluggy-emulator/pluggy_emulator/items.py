"""Items: `POST /items`, `GET`/`PATCH`/`DELETE /items/{id}`, `POST /items/{id}/mfa`, and the control calls
that drive an item (fail, wait for MFA or a user action, the account holder acting at the bank, reconnect, a
sync that found changes).

A sync runs inside the call in instant mode (the default: DELIBERATE_DIFFERENCES "instant-syncs"); in timed
mode the call starts a run in the background (runs.py) and answers at once. Where a sync ends is decided
by item_states.py in both modes.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from pluggy_emulator.accounts import DEFAULT_TRANSACTIONS_PER_ACCOUNT, Accounts
from pluggy_emulator.changes import Changes
from pluggy_emulator.common import JsonDict, PluggyApiError, iso_from_ms, parse_iso_ms
from pluggy_emulator.connectors import (
    MFA_ONE_STEP_CONNECTOR_ID,
    MFA_PARAMETER,
    SANDBOX_CONNECTOR_ID,
    SANDBOX_MFA_TOKEN,
    ConnectorRegistry,
)
from pluggy_emulator.events import Events, check_triggered_by
from pluggy_emulator.item_states import (
    AUTHORIZATION_NOT_GRANTED,
    AUTHORIZATION_PENDING,
    PENDING_STATUSES,
    SANDBOX_PASSWORD,
    ItemStates,
    collected_variant,
    login_step,
    sandbox_outcome,
)
from pluggy_emulator.products import Products, check_products
from pluggy_emulator.runs import Run, TimedRuns
from pluggy_emulator.sandbox_rows import PEOPLE, fake_cpf, rng_uuid
from pluggy_emulator.store import ItemMeta, Store
from pluggy_emulator.webhook_registry import WebhookRegistry


class Items:
    """Item operations, from the API and the control API; `runs` is None in instant mode."""

    def __init__(
        self,
        store: Store,
        *,
        seed: int,
        connectors: ConnectorRegistry,
        webhooks: WebhookRegistry,
        events: Events,
        states: ItemStates,
        accounts: Accounts,
        changes: Changes,
        runs: TimedRuns | None,
        products: Products,
    ) -> None:
        self._store = store
        self._products = products
        self._seed = seed
        self._connectors = connectors
        self._webhooks = webhooks
        self._events = events
        self._states = states
        self._accounts = accounts
        self._changes = changes
        self._runs = runs

    def _cancel_run(self, item_id: str) -> None:
        if self._runs is not None:
            self._runs.cancel(item_id)

    def _refuse_while_updating(self, item: JsonDict) -> None:
        if self._runs is not None:
            self._runs.refuse_while_updating(item)

    def get_item(self, item_id: str) -> JsonDict:
        with self._store.lock:
            return copy.deepcopy(self._store.require_item(item_id))

    def create_item(
        self,
        *,
        username: str = "user-ok",
        password: str = SANDBOX_PASSWORD,
        client_user_id: str | None = None,
        webhook_url: str | None = None,
        transactions_per_account: int | None = None,
        triggered_by: str = "USER",
        connector_id: int = SANDBOX_CONNECTOR_ID,
        mfa_token: str | None = None,
        products: list[str] | None = None,
    ) -> tuple[JsonDict, JsonDict]:
        """Create an item and run its first sync; returns (item as POST /items answers, final item).

        `products` (default: every product the connector has) is what the item requests: only those are
        collected and served (products.py), and `statusDetail` names them.

        Success sends item/login_succeeded then item/created; a failing sandbox user sends item/error; an
        MFA 2-step connector stops in WAITING_USER_INPUT (item/waiting_user_input) until `submit_mfa`.
        In timed mode the sync runs in the background: both are the item as it is now (UPDATING, CREATING).
        """
        check_triggered_by(triggered_by)
        if transactions_per_account is not None and transactions_per_account < 0:
            raise ValueError("transactions_per_account must be >= 0")
        requested = check_products(products)
        store = self._store
        with store.lock:
            connector = self._connectors.require(connector_id)
            store.item_counter += 1
            rng = random.Random(f"pluggy-emulator:{self._seed}:{store.item_counter}")  # noqa: S311 - sandbox data, not security
            item_id = rng_uuid(rng)
            cpf = fake_cpf(rng)
            meta = ItemMeta(
                username=username,
                password=password,
                rng=rng,
                transactions_per_account=(
                    DEFAULT_TRANSACTIONS_PER_ACCOUNT if transactions_per_account is None else transactions_per_account
                ),
                owner=rng.choice(PEOPLE),
                cpf=cpf,
                connector_id=connector_id,
                mfa_token=mfa_token,
            )
            now = iso_from_ms(store.clock.now_ms())
            item: JsonDict = {
                "id": item_id,
                "connector": copy.deepcopy(connector),
                "status": "UPDATING",
                "executionStatus": "CREATED",
                "error": None,
                "statusDetail": None,
                "parameter": None,
                "userAction": None,
                "createdAt": now,
                "updatedAt": now,
                "lastUpdatedAt": None,
                "webhookUrl": webhook_url,
                "clientUserId": client_user_id,
                "consecutiveFailedLoginAttempts": 0,
                "nextAutoSyncAt": None,
                "consentExpiresAt": None,
                "products": requested,
            }
            store.items[item_id] = item
            store.meta[item_id] = meta
            if self._runs is not None:
                self._runs.start(item, Run(item_id, triggered_by, first=True, spec=None, creating=True))
                return copy.deepcopy(item), copy.deepcopy(item)
            snapshot = copy.deepcopy(item)
            self._run_sync(item, meta, triggered_by=triggered_by, first=True)
            return snapshot, copy.deepcopy(item)

    def update_item_api(self, item_id: str, body: JsonDict, triggered_by: str) -> JsonDict:
        """`PATCH /items/{id}`: optional new credentials/fields, then a new sync (answered as UPDATING).

        In timed mode an item whose sync is still running (UPDATING, MERGING) gets 400 ITEM_ALREADY_UPDATING.
        """
        store = self._store
        with store.lock:
            item = store.require_item(item_id)
            meta = store.meta[item_id]
            if self._runs is not None and item["status"] in PENDING_STATUSES:
                raise PluggyApiError(400, "Item is already updating", "ITEM_ALREADY_UPDATING")
            params = body.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise PluggyApiError(400, "parameters must be an object")
            params = params or {}
            if meta.connector_id == MFA_ONE_STEP_CONNECTOR_ID and not isinstance(params.get(MFA_PARAMETER), str):
                # An MFA credential known in advance must come fresh with every update (section 11).
                raise PluggyApiError(
                    400,
                    f"Parameter {MFA_PARAMETER} is required",
                    "CONNECTOR_REQUIRED_PARAMETER_VALIDATION_ERROR",
                    data={"parameter": MFA_PARAMETER},
                )
            if body.get("webhookUrl") is not None:
                self._webhooks.validate_url(body["webhookUrl"])
            if isinstance(params.get("user"), str):
                meta.username = params["user"]
            if isinstance(params.get("password"), str):
                meta.password = params["password"]
            if isinstance(params.get(MFA_PARAMETER), str):
                meta.mfa_token = params[MFA_PARAMETER]
            for key in ("clientUserId", "webhookUrl"):
                if key in body and (body[key] is None or isinstance(body[key], str)):
                    item[key] = body[key]
            if self._runs is not None:
                self._runs.start(item, Run(item_id, triggered_by, first=False, spec=None))
                return copy.deepcopy(item)
            item["status"] = "UPDATING"
            item["executionStatus"] = "CREATED"
            item["updatedAt"] = iso_from_ms(store.clock.now_ms())
            snapshot = copy.deepcopy(item)
            self._run_sync(item, meta, triggered_by=triggered_by, first=False)
            return snapshot

    # --- instant syncs -------------------------------------------------------------------------------------

    def _run_sync(self, item: JsonDict, meta: ItemMeta, *, triggered_by: str, first: bool) -> None:
        """Log in (credentials, the device authorization, then the connector's MFA or user action), then
        collect. A pending device authorization has no timer here: `complete_user_action` answers it."""
        meta.pending_run = None
        login = login_step(meta)
        if login.code is not None:
            self._states.login_failed(item, login, triggered_by)
            return
        if login.waits == "input":
            self._states.wait_for_mfa(item, meta, triggered_by, first=first)
            return
        if login.waits == "action":
            self._states.wait_for_action(item, meta, triggered_by, first=first)
            return
        self._collect(item, meta, triggered_by=triggered_by, first=first)

    def _collect(self, item: JsonDict, meta: ItemMeta, *, triggered_by: str, first: bool) -> None:
        """The logged-in part of a run: accounts and history on the first one, then success and its webhooks."""
        _, multiplier, variant = sandbox_outcome(meta)
        created: dict[str, tuple[list[str], str]] = {}
        if not meta.account_ids:
            created = self._accounts.create_accounts(item, meta, multiplier, variant)
        self._states.finish_success(item, variant)
        if first:
            self._events.item_event("item/login_succeeded", item, triggered_by)
            self._events.item_event("item/created", item, triggered_by)
            return
        self._events.item_event("item/updated", item, triggered_by)
        if created:
            stamp = next(iter(created.values()))[1]
            for account_id, (ids, _) in created.items():
                if ids:
                    self._events.transactions_created(item, account_id, stamp, triggered_by)

    # --- control calls -------------------------------------------------------------------------------------

    def fail_item(
        self, item_id: str, code: str = "INVALID_CREDENTIALS", *, message: str | None = None, triggered_by: str = "SYNC"
    ) -> str:
        """Make the item's latest run fail with `code`; sends item/error. Returns the eventId."""
        check_triggered_by(triggered_by)
        if not code:
            raise ValueError("code must be a non-empty error code")
        with self._store.lock:
            item = self._store.require_item(item_id)
            self._cancel_run(item_id)  # timed mode: the sync in progress ends in this error
            return self._states.set_error(item, code, message, triggered_by)

    def set_waiting_user_input(self, item_id: str, *, triggered_by: str = "USER") -> str:
        """MFA needed: status WAITING_USER_INPUT with a `parameter`; sends item/waiting_user_input.

        `POST /items/{id}/mfa` with the sandbox token then finishes the run (item/updated). In timed mode a
        sync in progress is replaced by this wait, which ends in USER_INPUT_TIMEOUT at `parameter.expiresAt`.
        """
        check_triggered_by(triggered_by)
        with self._store.lock:
            item = self._store.require_item(item_id)
            if self._runs is None:
                return self._states.wait_for_mfa(item, self._store.meta[item_id], triggered_by, first=False)
            run = Run(item_id, triggered_by, first=False, spec=None)
            self._runs.begin(run)
            return self._runs.wait_for_mfa(run)

    def submit_mfa(self, item_id: str, body: Any) -> JsonDict:
        """`POST /items/{id}/mfa` `{<parameter.name>: value}`: answered with the item as the run resumes.

        The sandbox token (123456) lets the waiting run collect (item/login_succeeded then item/created on a
        first sync, item/updated otherwise); any other value ends it in INVALID_CREDENTIALS_MFA (item/error).
        """
        if not isinstance(body, dict):
            raise PluggyApiError(400, "request body must be a JSON object")
        store = self._store
        with store.lock:
            item = store.require_item(item_id)
            meta = store.meta[item_id]
            parameter = item.get("parameter")
            run = self._runs.get(item_id) if self._runs is not None else None
            expired = isinstance(parameter, dict) and store.clock.wall_ms() >= parse_iso_ms(str(parameter["expiresAt"]))
            if self._runs is not None and run is not None and run.deadline is not None and expired:
                self._runs.wait_timed_out(run)  # the deadline passed a moment ago; its task has not run yet
            if item["status"] != "WAITING_USER_INPUT" or meta.pending_run is None or not parameter:
                raise PluggyApiError(400, "Item is not waiting for user input")
            name = str(parameter["name"])
            value = body.get(name)
            if not isinstance(value, str) or not value:
                raise PluggyApiError(400, f"Parameter {name} is required", data={"parameter": name})
            if self._runs is not None and run is not None:
                return self._runs.mfa_submitted(run, value == SANDBOX_MFA_TOKEN)
            triggered_by, first = meta.pending_run
            meta.pending_run = None
            item["status"] = "UPDATING"
            item["executionStatus"] = "LOGIN_MFA_IN_PROGRESS"
            item["parameter"] = None
            item["updatedAt"] = iso_from_ms(store.clock.now_ms())
            snapshot = copy.deepcopy(item)
            if value == SANDBOX_MFA_TOKEN:
                self._collect(item, meta, triggered_by=triggered_by, first=first)
            else:
                self._states.set_error(item, "INVALID_CREDENTIALS_MFA", None, triggered_by)
            return snapshot

    def set_waiting_user_action(self, item_id: str, *, triggered_by: str = "USER") -> str:
        """An action at the bank is needed: status WAITING_USER_ACTION with `userAction`; sends
        item/waiting_user_action. `complete_user_action` then ends the wait (item/updated when granted). In
        timed mode a sync in progress is replaced by this wait, which ends in USER_INPUT_TIMEOUT at
        `userAction.expiresAt`."""
        check_triggered_by(triggered_by)
        with self._store.lock:
            item = self._store.require_item(item_id)
            if self._runs is None:
                return self._states.wait_for_action(item, self._store.meta[item_id], triggered_by, first=False)
            run = Run(item_id, triggered_by, first=False, spec=None)
            self._runs.begin(run)
            return self._runs.wait_for_action(run)

    def complete_user_action(self, item_id: str, *, granted: bool = True) -> JsonDict:
        """The account holder acts at the bank, which no Pluggy API call does; returns the item.

        An item WAITING_USER_ACTION: granted, the login goes on and the sync finishes (item/login_succeeded,
        then item/created on a first sync, item/updated otherwise); refused, it ends LOGIN_ERROR with
        USER_AUTHORIZATION_NOT_GRANTED (item/error). In timed mode the login resumes now and ends `login_mfa`
        later; a wait whose `userAction.expiresAt` has passed has already timed out (ValueError).

        An item whose latest sync ended USER_AUTHORIZATION_PENDING: granted, the device is trusted and the
        sync Pluggy runs by itself starts now (triggeredBy SYNC; in timed mode instead of at the end of
        `authorization_delay`); refused, USER_AUTHORIZATION_NOT_GRANTED (item/error). ValueError for any
        other item.
        """
        store = self._store
        with store.lock:
            item = store.require_item(item_id)
            meta = store.meta[item_id]
            run = self._runs.get(item_id) if self._runs is not None else None
            if self._runs is not None and run is not None and self._runs.deadline_passed(run):
                self._runs.wait_timed_out(run)  # the deadline passed a moment ago; its task has not run yet
            if item["status"] == "WAITING_USER_ACTION" and meta.pending_run is not None:
                self._action_done(item, meta, granted)
            elif item["executionStatus"] == AUTHORIZATION_PENDING and item["status"] not in PENDING_STATUSES:
                self._authorization_answered(item, meta, granted)
            else:
                raise ValueError(
                    f"item {item_id} waits for no action at the bank ({item['status']}/{item['executionStatus']})"
                )
            return copy.deepcopy(item)

    def _action_done(self, item: JsonDict, meta: ItemMeta, granted: bool) -> None:
        """The end of WAITING_USER_ACTION: the run goes on (timed: runs.py) or ends now (instant)."""
        run = self._runs.get(item["id"]) if self._runs is not None else None
        if self._runs is not None and run is not None:
            self._runs.action_done(run, granted)
            return
        assert meta.pending_run is not None
        triggered_by, first = meta.pending_run
        meta.pending_run = None
        if not granted:
            self._states.set_error(item, AUTHORIZATION_NOT_GRANTED, None, triggered_by)
            return
        item["status"] = "UPDATING"
        item["executionStatus"] = "LOGIN_IN_PROGRESS"
        item["userAction"] = None
        item["updatedAt"] = iso_from_ms(self._store.clock.now_ms())
        self._collect(item, meta, triggered_by=triggered_by, first=first)

    def _authorization_answered(self, item: JsonDict, meta: ItemMeta, granted: bool) -> None:
        """The device authorization behind USER_AUTHORIZATION_PENDING is granted (Pluggy's own sync runs, in
        the background in timed mode) or refused (USER_AUTHORIZATION_NOT_GRANTED, item/error)."""
        item_id = str(item["id"])
        if self._runs is not None:
            if granted:
                self._runs.approve_authorization(item_id)
            else:
                self._runs.refuse_authorization(item_id)
            return
        if not granted:
            self._states.set_error(item, AUTHORIZATION_NOT_GRANTED, None, "SYNC")
            return
        meta.device_authorized = True
        item["status"] = "UPDATING"
        item["executionStatus"] = "CREATED"
        item["updatedAt"] = iso_from_ms(self._store.clock.now_ms())
        self._run_sync(item, meta, triggered_by="SYNC", first=item["lastUpdatedAt"] is None)

    def reconnect_item(self, item_id: str, *, triggered_by: str = "USER") -> JsonDict:
        """A successful run again (fresh credentials): status UPDATED, sends item/updated.

        In timed mode the run starts (the item is returned UPDATING); ValueError while a sync is running.
        """
        check_triggered_by(triggered_by)
        with self._store.lock:
            item = self._store.require_item(item_id)
            meta = self._store.meta[item_id]
            self._refuse_while_updating(item)
            if sandbox_outcome(meta)[0] is not None:
                # Reconnecting means the user typed working credentials.
                meta.username, meta.password = "user-ok", SANDBOX_PASSWORD
            if meta.connector_id == MFA_ONE_STEP_CONNECTOR_ID:
                meta.mfa_token = SANDBOX_MFA_TOKEN
            if self._runs is not None:
                self._runs.start(item, Run(item_id, triggered_by, first=False, spec=None))
                return copy.deepcopy(item)
            self._run_sync(item, meta, triggered_by=triggered_by, first=False)
            return copy.deepcopy(item)

    def sync_item(
        self,
        item_id: str,
        *,
        add: int = 0,
        change: int = 0,
        delete: int = 0,
        restate_credit_card: int = 0,
        new_account: bool = False,
        triggered_by: str = "SYNC",
        products_change: bool = False,
        remove_investment: bool = False,
        resources_pending: bool | None = None,
    ) -> JsonDict:
        """A successful sync that found changes; counts are for the whole item, spread over accounts.

        `products_change`: investment balances move (the first investment by a new BUY transaction), a loan
        installment is paid, the identity's phone changes. `remove_investment`: the newest investment is gone
        with its transactions (`truth()["deletedInvestmentIds"]`). Bills follow the card rows at every sync.

        Sends item/updated, then transactions/created, transactions/updated and transactions/deleted
        per affected account. A restated card row is a delete plus a create with a new id.

        In timed mode the rows are picked now and the sync runs in the background (runs.py); the answer is
        {itemId, item (UPDATING), pending: true} and `last_sync` has the rest once it runs. ValueError while
        the item's previous sync is still running.
        """
        check_triggered_by(triggered_by)
        if min(add, change, delete, restate_credit_card) < 0:
            raise ValueError("add, change, delete and restate_credit_card must be >= 0")
        with self._store.lock:
            item = self._store.require_item(item_id)
            meta = self._store.meta[item_id]
            self._refuse_while_updating(item)
            spec = self._changes.pick(
                meta, add=add, new_account=new_account, restate=restate_credit_card, delete=delete, change=change
            )
            self._products.pick_changes(
                item_id,
                products_change=products_change,
                remove_investment=remove_investment,
                resources_pending=resources_pending,
            )
            if self._runs is not None:
                self._runs.start(item, Run(item_id, triggered_by, first=False, spec=spec))
                return {"itemId": item_id, "item": copy.deepcopy(item), "pending": True}
            changes, new_account_id = self._changes.apply(item, meta, spec)
            self._states.finish_success(item, collected_variant(meta))
            event_ids = self._changes.emit(item, meta, changes, triggered_by)
            return {
                "itemId": item_id,
                "item": copy.deepcopy(item),
                "transactionsCreatedAtFrom": changes.stamp,
                "created": changes.created,
                "updated": changes.updated,
                "deleted": changes.deleted,
                "restated": changes.restated,
                "newAccountId": new_account_id,
                "eventIds": event_ids,
            }

    def delete_item(self, item_id: str, *, triggered_by: str = "CLIENT") -> str:
        """Delete the item with its accounts and transactions; sends item/deleted. Returns the eventId."""
        check_triggered_by(triggered_by)
        store = self._store
        with store.lock:
            item = store.require_item(item_id)
            if self._runs is not None:
                self._runs.forget(item_id)  # the sync in progress and the late rows still to come
            meta = store.meta.pop(item_id)
            for account_id in meta.account_ids:
                store.accounts.pop(account_id, None)
                for tx_id in store.transactions.pop(account_id, {}):
                    store.tx_account.pop(tx_id, None)
                    store.hidden_tx.discard(tx_id)
                store.order.pop(account_id, None)
                if account_id in store.hidden_accounts:
                    store.hidden_accounts.discard(account_id)  # never seen at Pluggy: not reported deleted
                    continue
                store.deleted_accounts.append(account_id)
            del store.items[item_id]
            store.deleted_items.append(item_id)
            self._products.forget(item_id)
            return self._events.item_event("item/deleted", item, triggered_by)
