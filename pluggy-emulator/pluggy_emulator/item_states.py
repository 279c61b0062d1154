"""How an item looks when its sync ends or stops to wait, and which sandbox login leads where.

Both modes share these: instant syncs (items.py) reach them inside the request, timed ones (runs.py) when
their step comes. Sandbox usernames and passwords pick the outcome as Pluggy's sandbox does (pluggy-api.md
section 9); the finished states, their webhooks and `statusDetail` follow section 11. The login can stop for
the user: WAITING_USER_INPUT (the MFA), WAITING_USER_ACTION (an action at the bank), or end in
USER_AUTHORIZATION_PENDING (the device-authorization case of seed 001, username `user-authorization-pending`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from pluggy_emulator.common import JsonDict, iso_from_ms
from pluggy_emulator.connectors import (
    APP_AUTHORIZATION_CONNECTOR_ID,
    MFA_ONE_STEP_CONNECTOR_ID,
    MFA_TWO_STEP_CONNECTOR_ID,
    SANDBOX_MFA_TOKEN,
    USER_AT_EVERY_LOGIN,
    authorize_access_action,
    mfa_token_credential,
)
from pluggy_emulator.events import Events
from pluggy_emulator.products import STATUS_DETAIL_KEYS, Products
from pluggy_emulator.store import ItemMeta, Store
from pluggy_emulator.timeline import SyncTiming

SANDBOX_PASSWORD = "password-ok"  # noqa: S105 - Pluggy's public sandbox password, not a secret
MAX_PERF_MULTIPLIER = 5000
MFA_TIMEOUT_MS = 5 * 60_000  # how long item.parameter stays valid (no source states it)
USER_ACTION_TIMEOUT_MS = 5 * 60_000  # how long item.userAction stays valid (no source states it either)
# Seed 001's Caixa case: the login asks the account holder to authorize Pluggy as a trusted device.
AUTHORIZATION_PENDING_USER = "user-authorization-pending"
AUTHORIZATION_PENDING = "USER_AUTHORIZATION_PENDING"
AUTHORIZATION_NOT_GRANTED = "USER_AUTHORIZATION_NOT_GRANTED"
_DEVICE_NAMESPACE = uuid.UUID("0d5c3f6e-8f1b-4a52-9c57-3b0e6a1d2f48")
AUTO_SYNC_INTERVAL = timedelta(hours=24)
PENDING_STATUSES = frozenset({"UPDATING", "MERGING"})  # a sync is running
WAIT_STATUSES = frozenset({"WAITING_USER_INPUT", "WAITING_USER_ACTION"})  # a sync waits for the user

ERROR_MESSAGES: dict[str, str] = {
    "INVALID_CREDENTIALS": "Invalid credentials, please check them and try again",
    "ALREADY_LOGGED_IN": "The user is already logged in another session",
    "UNEXPECTED_ERROR": "An unexpected error occurred, please try again later",
    "INVALID_CREDENTIALS_MFA": "Invalid MFA credentials",
    "SITE_NOT_AVAILABLE": "The institution site is not available",
    "ACCOUNT_LOCKED": "The account is locked at the institution",
    "ACCOUNT_CREDENTIALS_RESET": "The institution requires a credentials reset",
    "CONNECTION_ERROR": "Could not connect to the institution",
    "ACCOUNT_NEEDS_ACTION": "The account needs an action at the institution",
    "USER_AUTHORIZATION_PENDING": "The user has not yet authorized the access at the institution",
    "USER_AUTHORIZATION_NOT_GRANTED": "The user did not authorize the access",
    "USER_NOT_SUPPORTED": "This kind of user is not supported",
    "USER_INPUT_TIMEOUT": "User requested input had expired",
}
# Errors that need new credentials or a user action: the item stops auto-syncing (LOGIN_ERROR).
# The rest are retryable runs that failed (OUTDATED). pluggy-api.md section 8.
LOGIN_ERROR_CODES = frozenset(
    {
        "INVALID_CREDENTIALS",
        "INVALID_CREDENTIALS_MFA",
        "ACCOUNT_LOCKED",
        "ACCOUNT_CREDENTIALS_RESET",
        "ACCOUNT_NEEDS_ACTION",
        "USER_NOT_SUPPORTED",
        "USER_AUTHORIZATION_NOT_GRANTED",
    }
)
# Sandbox usernames (pluggy-api.md section 9) that end in an error.
SANDBOX_ERROR_USERS: dict[str, str] = {
    "user-logged": "ALREADY_LOGGED_IN",
    "user-locked": "ACCOUNT_LOCKED",
    "user-error": "UNEXPECTED_ERROR",
    "user-unavailable": "SITE_NOT_AVAILABLE",
    "user-account-need-actions": "ACCOUNT_NEEDS_ACTION",
    "user-account-need-actions-provider-message": "ACCOUNT_NEEDS_ACTION",
    "user-connection-error": "CONNECTION_ERROR",
    "user-account-credentials-reset": "ACCOUNT_CREDENTIALS_RESET",
    "user-not-supported": "USER_NOT_SUPPORTED",
}
_PERF_USER = re.compile(r"user-ok-perf-(\d+)")


def sandbox_outcome(meta: ItemMeta) -> tuple[str | None, int, str]:
    """(error code or None, transaction multiplier, variant) for a sandbox username."""
    name = meta.username
    if meta.password != SANDBOX_PASSWORD:
        return "INVALID_CREDENTIALS", 1, "error"
    if name == "user-ok":
        return None, 1, "ok"
    if name == "user-ok-account-error":
        return None, 1, "partial"
    if name == "user-ok-account-warning":
        return None, 1, "warning"
    if name == AUTHORIZATION_PENDING_USER:
        return None, 1, "ok"  # good credentials; the login then waits for the device authorization
    perf = _PERF_USER.fullmatch(name)
    if perf:
        return None, max(1, min(int(perf.group(1)), MAX_PERF_MULTIPLIER)), "ok"
    return SANDBOX_ERROR_USERS.get(name, "INVALID_CREDENTIALS"), 1, "error"


def collected_variant(meta: ItemMeta) -> str:
    """What a successful sync collects: the username's variant; a control sync of an item whose
    credentials fail succeeds anyway ("ok")."""
    variant = sandbox_outcome(meta)[2]
    return "ok" if variant == "error" else variant


@dataclass(frozen=True)
class Login:
    """How the login step ends: an error `code` (with a `provider_message`), a wait for the MFA
    (`waits="input"`) or for an action at the bank (`waits="action"`), or logged in (neither)."""

    code: str | None = None
    provider_message: str | None = None
    waits: str | None = None


def login_step(meta: ItemMeta) -> Login:
    """Credentials first, then the device authorization, then the connector's MFA or user action."""
    code = sandbox_outcome(meta)[0]
    if code is not None:
        provider_message = (
            "Mensagem do banco: regularize sua conta" if meta.username.endswith("provider-message") else None
        )
        return Login(code, provider_message)
    if meta.username == AUTHORIZATION_PENDING_USER and not meta.device_authorized:
        return Login(AUTHORIZATION_PENDING)
    if meta.connector_id == MFA_ONE_STEP_CONNECTOR_ID and meta.mfa_token != SANDBOX_MFA_TOKEN:
        return Login("INVALID_CREDENTIALS_MFA")
    if meta.connector_id == MFA_TWO_STEP_CONNECTOR_ID:
        return Login(waits="input")
    if meta.connector_id == APP_AUTHORIZATION_CONNECTOR_ID:
        return Login(waits="action")
    return Login()


class ItemStates:
    """The item's fields (and webhook) for each way a sync ends or waits."""

    def __init__(
        self, store: Store, events: Events, timing: SyncTiming | None, products: Products | None = None
    ) -> None:
        self._store = store
        self._events = events
        self._timing = timing
        self._products = products

    def finish_success(self, item: JsonDict, variant: str) -> None:
        """UPDATED with SUCCESS (or PARTIAL_SUCCESS); the caller sends item/created or item/updated."""
        now_ms = self._store.clock.now_ms()
        now = iso_from_ms(now_ms)
        item["status"] = "UPDATED"
        item["executionStatus"] = "PARTIAL_SUCCESS" if variant == "partial" else "SUCCESS"
        item["error"] = None
        item["parameter"] = None
        item["userAction"] = None
        item["statusDetail"] = self._status_detail(variant, now, item.get("products") or ())
        item["lastUpdatedAt"] = now
        item["updatedAt"] = now
        item["consecutiveFailedLoginAttempts"] = 0
        # Items that need MFA (or, by the same reasoning, a user action) at every login are not auto-synced
        # (section 11).
        user_each_login = item["connector"]["id"] in USER_AT_EVERY_LOGIN
        auto_sync = None if user_each_login else now_ms + int(AUTO_SYNC_INTERVAL.total_seconds() * 1000)
        item["nextAutoSyncAt"] = None if auto_sync is None else iso_from_ms(auto_sync)
        if self._products is not None:
            # Bills, investments, loans, identity and consents as this sync leaves them.
            meta = self._store.meta[item["id"]]
            self._products.collected(item, meta, now_ms, cards_collected=variant != "partial")

    @staticmethod
    def _status_detail(variant: str, now: str, products: Iterable[str]) -> JsonDict | None:
        """null on SUCCESS; otherwise every key, null for a product the item did not request (section 11)."""

        def product(updated: bool = True, warnings: list[JsonDict] | None = None) -> JsonDict:
            return {"isUpdated": updated, "lastUpdatedAt": now if updated else None, "warnings": warnings or []}

        if variant not in ("partial", "warning"):
            return None
        requested = {STATUS_DETAIL_KEYS[p] for p in products if p in STATUS_DETAIL_KEYS}
        detail: JsonDict = {key: product() if key in requested else None for key in STATUS_DETAIL_KEYS.values()}
        if variant == "partial" and detail["creditCards"] is not None:
            # user-ok-account-error: the credit card product failed, so its account is not collected.
            detail["creditCards"] = product(
                False, [{"code": "001", "message": "Credit card data could not be collected"}]
            )
        if variant == "warning" and detail["accounts"] is not None:
            detail["accounts"] = product(
                True,
                [
                    {
                        "code": "002",
                        "message": "Some account data may be incomplete",
                        "providerMessage": "Servico temporariamente indisponivel",
                    }
                ],
            )
        return detail

    def set_error(
        self,
        item: JsonDict,
        code: str,
        message: str | None,
        triggered_by: str,
        *,
        provider_message: str | None = None,
        attributes: dict[str, str] | None = None,
    ) -> str:
        """The sync ends in `code`: LOGIN_ERROR or OUTDATED, item/error (with `{code, message}`). Returns the
        eventId. A wait the item was in ends with it."""
        error: JsonDict = {"code": code, "message": message or ERROR_MESSAGES.get(code, "Item execution failed")}
        if provider_message is not None:
            error["providerMessage"] = provider_message
        if attributes is not None:
            error["attributes"] = attributes
        login_error = code in LOGIN_ERROR_CODES
        item["status"] = "LOGIN_ERROR" if login_error else "OUTDATED"
        item["executionStatus"] = code
        item["error"] = error
        item["parameter"] = None
        item["userAction"] = None
        item["updatedAt"] = iso_from_ms(self._store.clock.now_ms())
        if login_error:
            # No auto-sync until new credentials arrive (section 8).
            item["consecutiveFailedLoginAttempts"] = int(item["consecutiveFailedLoginAttempts"]) + 1
            item["nextAutoSyncAt"] = None
        payload_error = {"code": error["code"], "message": error["message"]}
        return self._events.item_event("item/error", item, triggered_by, {"error": payload_error})

    def wait_for_mfa(self, item: JsonDict, meta: ItemMeta, triggered_by: str, *, first: bool) -> str:
        """WAITING_USER_INPUT with `parameter` (the token, until `expiresAt`), item/waiting_user_input."""
        now_ms = self._store.clock.now_ms()
        timeout_ms = MFA_TIMEOUT_MS if self._timing is None else round(self._timing.mfa_timeout * 1000)
        item["status"] = "WAITING_USER_INPUT"
        item["executionStatus"] = "WAITING_USER_INPUT"
        item["error"] = None
        item["parameter"] = {**mfa_token_credential(), "expiresAt": iso_from_ms(now_ms + timeout_ms)}
        item["updatedAt"] = iso_from_ms(now_ms)
        meta.pending_run = (triggered_by, first)
        return self._events.item_event("item/waiting_user_input", item, triggered_by)

    def login_failed(self, item: JsonDict, login: Login, triggered_by: str) -> str:
        """The login ends in `login.code`; USER_AUTHORIZATION_PENDING carries `error.attributes`."""
        if login.code == AUTHORIZATION_PENDING:
            return self.authorization_pending(item, triggered_by)
        return self.set_error(item, str(login.code), None, triggered_by, provider_message=login.provider_message)

    def authorization_pending(self, item: JsonDict, triggered_by: str) -> str:
        """USER_AUTHORIZATION_PENDING (OUTDATED, item/error): Pluggy asked the bank to trust its device and
        waits for the account holder. `error.attributes` is the context a later run needs (a string map)."""
        attributes = {
            "deviceId": str(uuid.uuid5(_DEVICE_NAMESPACE, str(item["id"]))),
            "authorizationRequestedAt": iso_from_ms(self._store.clock.wall_ms()),
        }
        return self.set_error(item, AUTHORIZATION_PENDING, None, triggered_by, attributes=attributes)

    def wait_for_action(self, item: JsonDict, meta: ItemMeta, triggered_by: str, *, first: bool) -> str:
        """WAITING_USER_ACTION with `userAction` (authorize-access, until `expiresAt`), item/waiting_user_action."""
        now_ms = self._store.clock.now_ms()
        timeout_ms = USER_ACTION_TIMEOUT_MS if self._timing is None else round(self._timing.user_action_timeout * 1000)
        item["status"] = "WAITING_USER_ACTION"
        item["executionStatus"] = "WAITING_USER_ACTION"
        item["error"] = None
        item["parameter"] = None
        item["userAction"] = authorize_access_action(iso_from_ms(now_ms + timeout_ms))
        item["updatedAt"] = iso_from_ms(now_ms)
        meta.pending_run = (triggered_by, first)
        return self._events.item_event("item/waiting_user_action", item, triggered_by)
