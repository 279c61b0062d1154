"""The emulator's connectors: Pluggy's sandbox "Pluggy Bank" (id 0), two sandbox MFA connectors and one whose
login waits for an action in the bank's app.

Shapes follow the SDK's `Connector` type (pluggy-api.md sections 2 and 9). Pluggy lists sandbox connectors
only under `GET /connectors?sandbox=true`; the emulator has no live institutions, so the list without that
filter is empty (DELIBERATE_DIFFERENCES "no-live-connectors").

The sandbox MFA flows (pluggy-api.md sections 9 and 11) live on their own connectors, as Pluggy's sandbox
splits them; their ids (1 and 2) are the emulator's choice (DELIBERATE_DIFFERENCES "sandbox-mfa-connectors"):
- 1, MFA 1-step: the token is a connector credential (`mfa: true`) sent with the login;
- 2, MFA 2-step: the login stops in WAITING_USER_INPUT with `item.parameter`, answered by
  `POST /items/{id}/mfa`.
The MFA token that passes is `123456`; any other gives INVALID_CREDENTIALS_MFA.
- 3, app authorization: the login stops in WAITING_USER_ACTION with `item.userAction` (`authorize-access`)
  until the account holder acts at the bank, which no API call does (pluggy-api.md section 11): tests play
  that part with `complete_user_action` (DELIBERATE_DIFFERENCES "user-action-control").
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pluggy_emulator.common import JsonDict, PluggyApiError

SANDBOX_CONNECTOR_ID = 0
MFA_ONE_STEP_CONNECTOR_ID = 1
MFA_TWO_STEP_CONNECTOR_ID = 2
APP_AUTHORIZATION_CONNECTOR_ID = 3
# Connectors whose every login needs the user (MFA or an action): Pluggy does not auto-sync their items.
USER_AT_EVERY_LOGIN = frozenset({MFA_TWO_STEP_CONNECTOR_ID, APP_AUTHORIZATION_CONNECTOR_ID})
SANDBOX_MFA_TOKEN = "123456"  # noqa: S105 - Pluggy's public sandbox MFA token, not a secret
MFA_PARAMETER = "token"
# What the sandbox connectors collect, and what an item requests unless it names its own (products.py).
ITEM_PRODUCTS = [
    "ACCOUNTS",
    "CREDIT_CARDS",
    "TRANSACTIONS",
    "PAYMENT_DATA",
    "INVESTMENTS",
    "INVESTMENTS_TRANSACTIONS",
    "IDENTITY",
    "LOANS",
]
_TRUE = ("true", "1")
CONNECTOR_STATUSES = frozenset({"ONLINE", "UNSTABLE", "OFFLINE"})


def _credential(name: str, label: str, kind: str, placeholder: str, **extra: Any) -> JsonDict:
    return {
        "label": label,
        "name": name,
        "type": kind,
        "placeholder": placeholder,
        "validation": None,
        "validationMessage": None,
        "optional": False,
        **extra,
    }


def mfa_token_credential() -> JsonDict:
    """The token an MFA connector asks for: a credential with `mfa: true`, or the item's `parameter`."""
    return _credential(
        MFA_PARAMETER,
        "Token",
        "number",
        SANDBOX_MFA_TOKEN,
        mfa=True,
        assistiveText=f"Type {SANDBOX_MFA_TOKEN}",
        validation="^\\d{6}$",
        validationMessage="The token must have 6 digits",
    )


def authorize_access_action(expires_at: str) -> JsonDict:
    """The `userAction` of connector 3 (SDK `ConnectorUserAction`: instructions, type, attributes?, expiresAt?)."""
    return {
        "type": "authorize-access",
        "instructions": "Open the Pluggy Bank app on your phone and authorize this access",
        "expiresAt": expires_at,
    }


def _connector(connector_id: int, name: str, *, mfa_one_step: bool = False, has_mfa: bool = False) -> JsonDict:
    credentials = [
        _credential("user", "User", "text", "user-ok"),
        _credential("password", "Password", "password", "password-ok"),
    ]
    if mfa_one_step:
        credentials.append(mfa_token_credential())
    return {
        "id": connector_id,
        "name": name,
        "institutionUrl": "https://pluggy.ai",
        "imageUrl": "https://cdn.pluggy.ai/assets/connector-icons/sandbox.svg",
        "primaryColor": "ef294b",
        "type": "PERSONAL_BANK",
        "country": "BR",
        "credentials": credentials,
        "hasMFA": has_mfa,
        "oauth": False,
        "oauthUrl": None,
        "health": {"status": "ONLINE", "stage": None, "details": None},
        "isOpenFinance": False,
        "isSandbox": True,
        "products": list(ITEM_PRODUCTS),
        "supportsPaymentInitiation": False,
        "supportsScheduledPayments": False,
        "supportsSmartTransfers": False,
        "supportsAutomaticPix": False,
        "supportsBoletoManagement": False,
        "createdAt": "2020-01-01T00:00:00.000Z",
        "updatedAt": "2020-01-01T00:00:00.000Z",
    }


def sandbox_connector() -> JsonDict:
    """Connector 0 "Pluggy Bank" (pluggy-api.md sections 2 and 9)."""
    return _connector(SANDBOX_CONNECTOR_ID, "Pluggy Bank")


def sandbox_connectors() -> dict[int, JsonDict]:
    return {
        SANDBOX_CONNECTOR_ID: sandbox_connector(),
        MFA_ONE_STEP_CONNECTOR_ID: _connector(
            MFA_ONE_STEP_CONNECTOR_ID, "Pluggy Bank MFA 1-step", mfa_one_step=True, has_mfa=True
        ),
        MFA_TWO_STEP_CONNECTOR_ID: _connector(MFA_TWO_STEP_CONNECTOR_ID, "Pluggy Bank MFA 2-step", has_mfa=True),
        APP_AUTHORIZATION_CONNECTOR_ID: _connector(APP_AUTHORIZATION_CONNECTOR_ID, "Pluggy Bank App Authorization"),
    }


def connector_not_found() -> PluggyApiError:
    return PluggyApiError(404, "connector not found", "CONNECTOR_NOT_FOUND")


def _values(query: Mapping[str, list[str]], name: str) -> set[str] | None:
    """A filter given as `a,b` (how the SDK sends arrays) or repeated; None when absent."""
    raw = [v.strip() for value in query.get(name, []) for v in value.split(",") if v.strip()]
    return set(raw) if raw else None


def _flag(query: Mapping[str, list[str]], name: str) -> bool | None:
    values = query.get(name)
    return values[-1].lower() in _TRUE if values else None


def matches(connector: Mapping[str, Any], query: Mapping[str, list[str]]) -> bool:
    """`GET /connectors` filters: sandbox (default false), name, countries, types, isOpenFinance,
    supportsPaymentInitiation."""
    if connector["isSandbox"] and not _flag(query, "sandbox"):
        return False  # sandbox connectors are listed only on request
    names = query.get("name")
    if names and names[-1].strip().lower() not in str(connector["name"]).lower():
        return False
    countries, types = _values(query, "countries"), _values(query, "types")
    if countries is not None and connector["country"] not in countries:
        return False
    if types is not None and connector["type"] not in types:
        return False
    for flag in ("isOpenFinance", "supportsPaymentInitiation"):
        wanted = _flag(query, flag)
        if wanted is not None and bool(connector[flag]) != wanted:
            return False
    return True


class ConnectorRegistry:
    """The connectors the emulator serves (`GET /connectors`...), whose health a test may change."""

    def __init__(self, lock: threading.RLock, emit: Callable[..., str]) -> None:
        self._lock = lock
        self._emit = emit  # Events.emit
        self._connectors: dict[int, JsonDict] = sandbox_connectors()

    def list_connectors(self, query: Mapping[str, list[str]] | None = None) -> JsonDict:
        """`GET /connectors`: sandbox connectors only with `sandbox=true` (section 9), other filters applied."""
        with self._lock:
            results = [copy.deepcopy(c) for c in self._connectors.values() if matches(c, query or {})]
        return {"page": 1, "total": len(results), "totalPages": 1, "results": results}

    def validate_parameters(self, connector_id: str, body: Any) -> JsonDict:
        """`POST /connectors/{id}/validate`: {parameters, errors[{code, message, parameter}]} for the credentials."""
        connector = self.get_connector(connector_id)
        params = body if isinstance(body, dict) else {}
        errors = [
            {"code": "001", "message": f"{c['label']} is required", "parameter": c["name"]}
            for c in connector["credentials"]
            if not c.get("optional") and not (isinstance(params.get(c["name"]), str) and params[c["name"]])
        ]
        return {"parameters": {k: v for k, v in params.items() if isinstance(v, str)}, "errors": errors}

    def require(self, connector_id: int) -> JsonDict:
        """The connector itself (callers hold the lock); 404 CONNECTOR_NOT_FOUND for an unknown id."""
        connector = self._connectors.get(connector_id)
        if connector is None:
            raise connector_not_found()
        return connector

    def required_credentials(self, connector_id: int) -> list[str]:
        """The credential names a connector needs at login (404 for an unknown connector)."""
        with self._lock:
            connector = self.require(connector_id)
            return [str(c["name"]) for c in connector["credentials"] if not c.get("optional")]

    def get_connector(self, connector_id: str) -> JsonDict:
        with self._lock:
            connector = self._connectors.get(int(connector_id)) if connector_id.isdigit() else None
            if connector is None:
                raise connector_not_found()
            return copy.deepcopy(connector)

    def set_connector_status(self, status: str, connector_id: int = SANDBOX_CONNECTOR_ID) -> str:
        """Change a connector's health; sends connector/status_updated shaped as in seed 003."""
        if status not in CONNECTOR_STATUSES:
            raise ValueError(f"status must be one of {sorted(CONNECTOR_STATUSES)}")
        with self._lock:
            connector = self.require(connector_id)
            connector["health"]["status"] = status
            fields = {"id": str(connector_id), "connectorId": str(connector_id), "data": {"status": status}}
            # Seed 003's example has no eventId: the deprecated `id` carries the connector id instead.
            return self._emit("connector/status_updated", fields, with_event_id=False)

    def truth(self) -> list[JsonDict]:
        return [copy.deepcopy(c) for c in self._connectors.values()]
