"""The emulator's data: items, accounts, transactions, webhooks, API keys, and every mutation.

Payments (requests, intents, schedules) live in payments.py; this state owns them and their lock. Connectors
(connectors.py), the category catalog (categories.py) and the webhook URL rules (webhook_urls.py) have their
own modules; where the emulator differs from Pluggy on purpose is listed in differences.py.

Shapes follow /work/shared/pluggy-api.md (sections 1-5, 8, 9); webhook payloads follow seed 003.
Everything is guarded by one re-entrant lock (`EmulatorState.lock`); mutations emit notifications
while holding it, so webhook order always matches the order of the changes.
Sandbox data comes from a per-item `random.Random` derived from the emulator seed, so one item's data
does not depend on how many API keys were issued or how other items were changed.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import hmac
import json
import random
import re
import secrets
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

from pluggy_emulator.categories import ROW_CATEGORY_IDS, description_of
from pluggy_emulator.common import Clock, JsonDict, PluggyApiError, iso_from_ms
from pluggy_emulator.connectors import (
    ITEM_PRODUCTS,
    MFA_ONE_STEP_CONNECTOR_ID,
    MFA_PARAMETER,
    MFA_TWO_STEP_CONNECTOR_ID,
    SANDBOX_CONNECTOR_ID,
    SANDBOX_MFA_TOKEN,
    connector_not_found,
    matches,
    mfa_token_credential,
    sandbox_connectors,
)
from pluggy_emulator.payments import DEFAULT_AMOUNT, DEFAULT_DESCRIPTION, Payments
from pluggy_emulator.timeline import ScheduledTask, Scheduler, SyncTiming, scaled_clock
from pluggy_emulator.webhook_urls import check_webhook_url
from pluggy_emulator.webhooks import DeliveryTarget, Notification

# The public names, SANDBOX_CONNECTOR_ID re-exported from connectors.py for callers that import it from here.
__all__ = [
    "DEFAULT_TRANSACTIONS_PER_ACCOUNT",
    "LEGACY_TRANSACTIONS_LAST_DAY",
    "SANDBOX_CONNECTOR_ID",
    "WEBHOOK_EVENTS",
    "EmulatorState",
    "KeyInfo",
]

KeyKind = Literal["api", "connect"]

SANDBOX_PASSWORD = "password-ok"  # noqa: S105 - Pluggy's public sandbox password, not a secret
MAX_IDS = 500
DEFAULT_TRANSACTIONS_PER_ACCOUNT = 60
HISTORY_DAYS = 90
MAX_PERF_MULTIPLIER = 5000
CONNECT_TOKEN_TTL_SECONDS = 30 * 60
MFA_TIMEOUT_MS = 5 * 60_000  # how long item.parameter stays valid (no source states it)
AUTO_SYNC_INTERVAL = timedelta(hours=24)
DAY_MS = 86_400_000
BRT_OFFSET_MS = 3 * 3_600_000  # transaction dates are midnight in Sao Paulo (03:00Z)

# SDK 0.90.0 WEBHOOK_EVENTS (pluggy-api.md section 5); `all` subscribes to every event.
WEBHOOK_EVENTS: tuple[str, ...] = (
    "item/created",
    "item/updated",
    "item/deleted",
    "item/error",
    "item/waiting_user_input",
    "item/waiting_user_action",
    "item/login_succeeded",
    "connector/status_updated",
    "transactions/created",
    "transactions/updated",
    "transactions/deleted",
    "payment_intent/created",
    "payment_intent/completed",
    "payment_intent/waiting_payer_authorization",
    "payment_intent/error",
    "scheduled_payment/created",
    "scheduled_payment/completed",
    "scheduled_payment/error",
    "scheduled_payment/canceled",
    "scheduled_payment/all_completed",
    "scheduled_payment/all_created",
    "boleto/updated",
    "payment_request/updated",
    "automatic_pix_payment/created",
    "automatic_pix_payment/completed",
    "automatic_pix_payment/error",
    "automatic_pix_payment/canceled",
    "smart_transfer_preauthorization/completed",
    "smart_transfer_preauthorization/error",
    "smart_transfer_payment/completed",
    "smart_transfer_payment/error",
)
ALL_EVENTS = "all"
TRIGGERED_BY = frozenset({"USER", "CLIENT", "SYNC", "INTERNAL"})
# Seed 003: triggeredBy is sent "for all events except item/deleted, connector/status_updated and
# transactions/deleted".
NO_TRIGGERED_BY = frozenset({"item/deleted", "connector/status_updated", "transactions/deleted"})
CONNECTOR_STATUSES = frozenset({"ONLINE", "UNSTABLE", "OFFLINE"})

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
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Legacy `GET /transactions` (pluggy-api.md section 4): served, deprecated, through this day (Sao Paulo time).
LEGACY_TRANSACTIONS_LAST_DAY = "2026-12-31"
LEGACY_DEFAULT_PAGE_SIZE = 20  # the SDK's documented default (the OAS says 500); callers should pass pageSize
MAX_PAGE_SIZE = 500
MAX_WEBHOOKS_PER_EVENT = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BILL_NAMESPACE = uuid.UUID("6f0b7c52-3c3c-4b7e-9d0a-6b1f5f1c2a10")

_PEOPLE = (
    "Maria Silva",
    "Joao Souza",
    "Ana Oliveira",
    "Carlos Pereira",
    "Beatriz Costa",
    "Rafael Lima",
    "Fernanda Alves",
    "Lucas Rocha",
    "Juliana Martins",
    "Pedro Santos",
)
_COMPANIES = (
    "Acme Tecnologia Ltda",
    "Companhia de Energia Paulista",
    "Agua e Esgoto Municipal",
    "Telefonia Brasil SA",
    "Condominio Jardim das Flores",
)


@dataclass(frozen=True)
class _Merchant:
    display: str
    raw: str
    business_name: str
    cnpj_base: str  # 12 digits; the check digits are computed
    cnae: str
    category_id: str
    mcc: int
    low: float
    high: float


_MERCHANTS = (
    _Merchant("Uber", "UBER *TRIP", "Uber Viagens Ltda", "178956460001", "4923002", "14010000", 4121, 9, 80),
    _Merchant(
        "iFood", "IFD*IFOOD", "Ifood Restaurantes Online SA", "143802000001", "8299799", "09020000", 5812, 25, 160
    ),
    _Merchant(
        "Supermercado Bom Preco",
        "SUPERM BOM PRECO",
        "Bom Preco Alimentos Ltda",
        "423187650001",
        "4711302",
        "08010000",
        5411,
        30,
        650,
    ),
    _Merchant(
        "Netflix", "NETFLIX.COM", "Streaming Brasil Ltda", "135905850001", "5911199", "11010000", 4899, 39.9, 55.9
    ),
    _Merchant(
        "Amazon",
        "AMAZON MARKETPLACE",
        "Varejo Online do Brasil Ltda",
        "154369400001",
        "4713004",
        "10010000",
        5942,
        20,
        900,
    ),
    _Merchant(
        "Drogaria Saude",
        "DROGARIA SAUDE 123",
        "Drogaria Saude SA",
        "615858650001",
        "4771701",
        "12010000",
        5912,
        12,
        220,
    ),
    _Merchant(
        "Posto Avenida",
        "POSTO AVENIDA",
        "Auto Posto Avenida Ltda",
        "330412620001",
        "4731800",
        "13010000",
        5541,
        60,
        320,
    ),
    _Merchant(
        "Padaria Pao Quente",
        "PADARIA PAO QUENTE",
        "Pao Quente Padaria Ltda",
        "071234560001",
        "1091102",
        "09010000",
        5814,
        6,
        70,
    ),
)


# Bank rows with no counterparty data: (low, high, description, descriptionRaw, operationType, categoryId).
_SIMPLE_BANK_ROWS: dict[str, tuple[float, float, str, str, str, str]] = {
    "fee": (5, 45, "Tarifa pacote de servicos", "TARIFA PACOTE SERVICOS", "PACOTE_TARIFA_SERVICOS", "06010000"),
    "withdrawal": (50, 300, "Saque 24h", "SAQUE BANCO24HORAS {ddmm}", "SAQUE", "04000000"),
    "card_bill": (300, 2500, "Pagamento fatura cartao", "PAGTO FATURA CARTAO CREDITO", "BOLETO", "05100000"),
    "yield": (0.5, 40, "Rendimento poupanca", "REND POUPANCA", "RENDIMENTO_APLIC_FINANCEIRA", "01040000"),
    "transfer_in": (
        100,
        2000,
        "Transferencia da conta corrente",
        "TRANSF CC P/ POUP",
        "TRANSFERENCIA_MESMA_INSTITUICAO",
        "05010000",
    ),
    "transfer_out": (
        50,
        1000,
        "Transferencia para conta corrente",
        "TRANSF POUP P/ CC",
        "TRANSFERENCIA_MESMA_INSTITUICAO",
        "05010000",
    ),
}
_BANK_CREDIT_KINDS = frozenset({"pix_in", "ted_in", "salary", "yield", "transfer_in"})


def item_not_found() -> PluggyApiError:
    # Exact body from pluggy-api.md section 2.
    return PluggyApiError(404, "item not found", "ITEM_NOT_FOUND")


# --- time -----------------------------------------------------------------------------------------


def parse_iso_ms(value: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 timestamp (naive means UTC); ValueError if invalid."""
    text = value.strip()
    if _DATE.fullmatch(text):
        text += "T00:00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    # Integer arithmetic: float timestamps can be off by one millisecond.
    delta = dt - _EPOCH
    return delta.days * DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000


# --- fake documents -------------------------------------------------------------------------------


def _check_digits(digits: str, weights: Iterable[int]) -> int:
    total = sum(int(d) * w for d, w in zip(digits, weights, strict=True))
    rest = total % 11
    return 0 if rest < 2 else 11 - rest


def fake_cpf(rng: random.Random) -> str:
    """A CPF with valid check digits (digits only)."""
    digits = "".join(str(rng.randint(0, 9)) for _ in range(9))
    digits += str(_check_digits(digits, range(10, 1, -1)))
    digits += str(_check_digits(digits, range(11, 1, -1)))
    return digits


def format_cpf(digits: str) -> str:
    return f"{digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]}"


def cnpj_from_base(base: str) -> str:
    """A 14-digit CNPJ from a 12-digit base, with valid check digits."""
    first = _check_digits(base, (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2))
    second = _check_digits(base + str(first), (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2))
    return f"{base}{first}{second}"


def format_cnpj(digits: str) -> str:
    return f"{digits[:2]}.{digits[2:5]}.{digits[5:8]}/{digits[8:12]}-{digits[12:]}"


def rng_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _money(value: float) -> float:
    return round(value + 0.0, 2)


# --- records kept beside the API data ---------------------------------------------------------------


@dataclass
class KeyInfo:
    kind: KeyKind
    expires_at: float
    item_ids: set[str] = field(default_factory=set)  # connect tokens: the items they may see
    client_user_id: str | None = None
    webhook_url: str | None = None


@dataclass
class _ItemMeta:
    username: str
    password: str
    rng: random.Random
    transactions_per_account: int
    owner: str
    cpf: str
    account_ids: list[str] = field(default_factory=list)
    connector_id: int = SANDBOX_CONNECTOR_ID
    mfa_token: str | None = None  # MFA 1-step: the token sent with the credentials
    # While the item waits for MFA: how the interrupted run goes on (triggeredBy, first sync?).
    pending_run: tuple[str, bool] | None = None


@dataclass
class _PageRequest:
    account_id: str
    date_from: str | None
    date_to: str | None
    created_at_from: str | None
    ids: set[str] | None
    after: tuple[int, str] | None
    raw: dict[str, str]


@dataclass
class _SyncChanges:
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


@dataclass
class _SyncSpec:
    """What a control-API sync changes (rows picked when it is asked for, applied as it runs)."""

    add: int = 0
    new_account: bool = False
    restated: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Run:
    """One timed sync of an item, from the request to UPDATED or an error (late rows outlive it)."""

    item_id: str
    triggered_by: str
    first: bool
    spec: _SyncSpec | None  # a control sync (no credential checks); None: a login with the stored credentials
    cancelled: bool = False
    tasks: list[ScheduledTask] = field(default_factory=list)  # cancelled with the run
    mfa_task: ScheduledTask | None = None  # the USER_INPUT_TIMEOUT task while the item waits for the MFA
    hidden_tx: set[str] = field(default_factory=set)  # rows it collected that are not visible yet
    hidden_accounts: set[str] = field(default_factory=set)
    summary: JsonDict = field(default_factory=dict)


@dataclass
class _RowPlan:
    """A timed sync's new rows while their moments are being scheduled."""

    run: _Run
    rng: random.Random
    created: dict[str, list[str]]  # accountId -> new row ids
    late: dict[str, set[str]]  # accountId -> the ids that arrive after UPDATED
    late_batches: list[tuple[str, list[str]]]  # filled: (accountId, late ids) in the order they were planned


_PENDING_STATUSES = frozenset({"UPDATING", "MERGING"})


class EmulatorState:
    """All emulated Pluggy data and its mutations (call everything with or without holding `lock`)."""

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
        self.lock = threading.RLock()
        self.client_id = client_id
        self._client_secret = client_secret
        self._notify = notify
        self._seed = seed
        self.page_size = page_size
        self.api_key_ttl_seconds = api_key_ttl_seconds
        self._disable_after = disable_webhook_after_failures
        self.base_url = "http://127.0.0.1"
        self.allow_loopback_webhooks = allow_loopback_webhooks
        self.timing = sync_timing
        self._clock = Clock(scaled_clock(clock, time_scale) if sync_timing is not None else clock)
        self.scheduler = Scheduler(self._clock.wall_ms, time_scale if sync_timing is not None else 1.0)
        self._runs: dict[str, _Run] = {}  # the item's timed sync in progress (or waiting for MFA)
        self._summaries: dict[str, JsonDict] = {}  # the item's latest timed sync
        self._late_tasks: dict[str, list[ScheduledTask]] = {}  # late-row publications still to come, per item
        self._hidden_tx: set[str] = set()  # collected by a timed sync, not visible at Pluggy yet
        self._hidden_accounts: set[str] = set()
        self._item_counter = 0
        self._keys: dict[str, KeyInfo] = {}
        self._connectors: dict[int, JsonDict] = sandbox_connectors()
        self._items: dict[str, JsonDict] = {}
        self._meta: dict[str, _ItemMeta] = {}
        self._accounts: dict[str, JsonDict] = {}
        self._transactions: dict[str, dict[str, JsonDict]] = {}
        self._tx_account: dict[str, str] = {}
        self._order: dict[str, tuple[list[tuple[int, str]], list[str]]] = {}
        self._deleted_items: list[str] = []
        self._deleted_accounts: list[str] = []
        self._deleted_tx: dict[str, list[str]] = {}
        self._webhooks: dict[str, JsonDict] = {}
        self._webhook_failures: dict[str, int] = {}
        self._events: list[JsonDict] = []
        self._payments = Payments(self._clock, page_size=page_size)

    @property
    def clock(self) -> Clock:
        """The emulator's "now" (scaled in timed mode)."""
        return self._clock

    @property
    def timed(self) -> bool:
        return self.timing is not None

    # ==============================================================================================
    # Auth

    def _jwt(self, claims: JsonDict) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = b64(json.dumps(claims, separators=(",", ":")).encode())
        # Looks like a signature; nothing verifies it (keys are looked up in `_keys`).
        return f"{header}.{payload}.{b64(secrets.token_bytes(32))}"

    def issue_api_key(self, client_id: Any, client_secret: Any) -> str:
        """`POST /auth`; 401 CLIENT_KEYS_UNAUTHORIZED on a wrong pair."""
        ok = (
            isinstance(client_id, str)
            and isinstance(client_secret, str)
            and hmac.compare_digest(client_id.encode(), self.client_id.encode())
            and hmac.compare_digest(client_secret.encode(), self._client_secret.encode())
        )
        if not ok:
            raise PluggyApiError(401, "Invalid client credentials", "CLIENT_KEYS_UNAUTHORIZED")
        return self._issue("api", self.api_key_ttl_seconds, {"clientId": self.client_id})

    def issue_own_api_key(self) -> str:
        """An API key without the HTTP round trip (for tools and benchmarks)."""
        return self.issue_api_key(self.client_id, self._client_secret)

    def _issue(self, kind: KeyKind, ttl: float, claims: JsonDict, info: KeyInfo | None = None) -> str:
        now = time.time()
        token = self._jwt({"id": str(uuid.uuid4()), **claims, "iat": int(now), "exp": int(now + ttl), "kind": kind})
        key_info = info or KeyInfo(kind=kind, expires_at=now + ttl)
        key_info.expires_at = now + ttl
        with self.lock:
            self._keys[token] = key_info
        return token

    def issue_connect_token(self, item_id: Any, options: Any) -> str:
        """`POST /connect_token`; the token sees only its item and the items created with it."""
        if options is not None and not isinstance(options, dict):
            raise PluggyApiError(400, "options must be an object")
        opts: JsonDict = options or {}
        info = KeyInfo(kind="connect", expires_at=0.0)
        with self.lock:
            if item_id is not None:
                if not isinstance(item_id, str) or item_id not in self._items:
                    raise item_not_found()
                info.item_ids.add(item_id)
        cuid = opts.get("clientUserId")
        hook = opts.get("webhookUrl")
        if hook is not None:
            hook = self.validate_webhook_url(hook)  # the same rules as a Webhook resource (section 21)
        info.client_user_id = cuid if isinstance(cuid, str) else None
        info.webhook_url = hook
        claims: JsonDict = {"clientId": self.client_id, "itemId": item_id, "options": opts}
        return self._issue("connect", CONNECT_TOKEN_TTL_SECONDS, claims, info)

    def authenticate(self, key: str | None) -> KeyInfo:
        """The key's record; 403 when missing or unknown, 401 when expired."""
        with self.lock:
            info = self._keys.get(key) if key else None
        if info is None:
            raise PluggyApiError(403, "Missing or invalid authorization token")
        if info.expires_at <= time.time():
            raise PluggyApiError(401, "Expired authorization token", "API_KEY_EXPIRED")
        return info

    # ==============================================================================================
    # Notifications

    def _emit(
        self,
        event: str,
        fields: JsonDict,
        *,
        item: JsonDict | None = None,
        with_event_id: bool = True,
        event_id: str | None = None,
    ) -> str:
        """Build the payload, pick the targets and hand the notification to the dispatcher."""
        eid = event_id or str(uuid.uuid4())
        payload: JsonDict = {"event": event}
        if with_event_id:
            payload["eventId"] = eid
        payload.update(fields)
        payload.setdefault("clientId", self.client_id)
        targets = [
            DeliveryTarget(url=w["url"], headers=dict(w["headers"]), webhook_id=w["id"])
            for w in self._webhooks.values()
            if w["disabledAt"] is None and w["event"] in (event, ALL_EVENTS)
        ]
        # An item's own webhookUrl gets every event of that item, without custom headers (section 5).
        if item is not None and item.get("webhookUrl"):
            targets.append(DeliveryTarget(url=item["webhookUrl"]))
        notification = Notification(eid, event, payload, tuple(targets))
        self._events.append(
            {
                "eventId": eid,
                "event": event,
                "payload": copy.deepcopy(payload),
                "urls": [t.url for t in targets],
                "emittedAt": iso_from_ms(self._clock.wall_ms()),
            }
        )
        self._notify(notification)
        return eid

    def _emit_item_event(self, event: str, item: JsonDict, triggered_by: str, extra: JsonDict | None = None) -> str:
        # `id` is deprecated but still typed as required by the SDK: the entity the event is about.
        fields: JsonDict = {"id": item["id"], "itemId": item["id"]}
        if event not in NO_TRIGGERED_BY:
            fields["triggeredBy"] = triggered_by
        fields.update(extra or {})
        # Docs: clientUserId is echoed in every item/* webhook.
        fields["clientUserId"] = item.get("clientUserId")
        return self._emit(event, fields, item=item)

    def events(self) -> list[JsonDict]:
        with self.lock:
            return copy.deepcopy(self._events)

    def send_event(self, event: str, fields: Mapping[str, Any]) -> str:
        """Deliver an arbitrary event; `eventId=None` omits the key, a given eventId is reused."""
        if not isinstance(event, str) or not event:
            raise ValueError("event must be a non-empty string")
        data = dict(fields)
        with_event_id = True
        event_id: str | None = None
        if "eventId" in data:
            given = data.pop("eventId")
            with_event_id = given is not None
            event_id = str(given) if given is not None else None
        data.pop("event", None)
        with self.lock:
            item_id = data.get("itemId")
            item = self._items.get(item_id) if isinstance(item_id, str) else None
            return self._emit(event, data, item=item, with_event_id=with_event_id, event_id=event_id)

    # ==============================================================================================
    # Items

    @staticmethod
    def _check_triggered_by(triggered_by: str) -> None:
        if triggered_by not in TRIGGERED_BY:
            raise ValueError(f"triggered_by must be one of {sorted(TRIGGERED_BY)}")

    def _require_item(self, item_id: str) -> JsonDict:
        item = self._items.get(item_id)
        if item is None:
            raise item_not_found()
        return item

    def get_item(self, item_id: str) -> JsonDict:
        with self.lock:
            return copy.deepcopy(self._require_item(item_id))

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
    ) -> tuple[JsonDict, JsonDict]:
        """Create an item and run its first sync; returns (item as POST /items answers, final item).

        Success sends item/login_succeeded then item/created; a failing sandbox user sends item/error; an
        MFA 2-step connector stops in WAITING_USER_INPUT (item/waiting_user_input) until `submit_mfa`.
        In timed mode the sync runs in the background: both are the item as it is now (UPDATING, CREATING).
        """
        self._check_triggered_by(triggered_by)
        if transactions_per_account is not None and transactions_per_account < 0:
            raise ValueError("transactions_per_account must be >= 0")
        with self.lock:
            connector = self._connectors.get(connector_id)
            if connector is None:
                raise connector_not_found()
            self._item_counter += 1
            rng = random.Random(f"pluggy-emulator:{self._seed}:{self._item_counter}")  # noqa: S311 - sandbox data, not security
            item_id = rng_uuid(rng)
            cpf = fake_cpf(rng)
            meta = _ItemMeta(
                username=username,
                password=password,
                rng=rng,
                transactions_per_account=(
                    DEFAULT_TRANSACTIONS_PER_ACCOUNT if transactions_per_account is None else transactions_per_account
                ),
                owner=rng.choice(_PEOPLE),
                cpf=cpf,
                connector_id=connector_id,
                mfa_token=mfa_token,
            )
            now = iso_from_ms(self._clock.now_ms())
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
                "products": list(ITEM_PRODUCTS),
            }
            self._items[item_id] = item
            self._meta[item_id] = meta
            if self.timed:
                self._start_run(item, _Run(item_id, triggered_by, first=True, spec=None))
                return copy.deepcopy(item), copy.deepcopy(item)
            snapshot = copy.deepcopy(item)
            self._run_sync(item, meta, triggered_by=triggered_by, first=True)
            return snapshot, copy.deepcopy(item)

    def update_item_api(self, item_id: str, body: JsonDict, triggered_by: str) -> JsonDict:
        """`PATCH /items/{id}`: optional new credentials/fields, then a new sync (answered as UPDATING).

        In timed mode an item whose sync is still running (UPDATING, MERGING) gets 400 ITEM_ALREADY_UPDATING.
        """
        with self.lock:
            item = self._require_item(item_id)
            meta = self._meta[item_id]
            if self.timed and item["status"] in _PENDING_STATUSES:
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
                self.validate_webhook_url(body["webhookUrl"])
            if isinstance(params.get("user"), str):
                meta.username = params["user"]
            if isinstance(params.get("password"), str):
                meta.password = params["password"]
            if isinstance(params.get(MFA_PARAMETER), str):
                meta.mfa_token = params[MFA_PARAMETER]
            for key in ("clientUserId", "webhookUrl"):
                if key in body and (body[key] is None or isinstance(body[key], str)):
                    item[key] = body[key]
            if self.timed:
                self._start_run(item, _Run(item_id, triggered_by, first=False, spec=None))
                return copy.deepcopy(item)
            item["status"] = "UPDATING"
            item["executionStatus"] = "CREATED"
            item["updatedAt"] = iso_from_ms(self._clock.now_ms())
            snapshot = copy.deepcopy(item)
            self._run_sync(item, meta, triggered_by=triggered_by, first=False)
            return snapshot

    def _outcome(self, meta: _ItemMeta) -> tuple[str | None, int, str]:
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
        perf = _PERF_USER.fullmatch(name)
        if perf:
            return None, max(1, min(int(perf.group(1)), MAX_PERF_MULTIPLIER)), "ok"
        return SANDBOX_ERROR_USERS.get(name, "INVALID_CREDENTIALS"), 1, "error"

    def _run_sync(self, item: JsonDict, meta: _ItemMeta, *, triggered_by: str, first: bool) -> None:
        """Log in (credentials, then the connector's MFA), then collect."""
        meta.pending_run = None
        code = self._outcome(meta)[0]
        if code is not None:
            provider_message = (
                "Mensagem do banco: regularize sua conta" if meta.username.endswith("provider-message") else None
            )
            self._set_error(item, code, None, triggered_by, provider_message=provider_message)
            return
        if meta.connector_id == MFA_ONE_STEP_CONNECTOR_ID and meta.mfa_token != SANDBOX_MFA_TOKEN:
            self._set_error(item, "INVALID_CREDENTIALS_MFA", None, triggered_by)
            return
        if meta.connector_id == MFA_TWO_STEP_CONNECTOR_ID:
            self._wait_for_mfa(item, meta, triggered_by, first=first)
            return
        self._collect(item, meta, triggered_by=triggered_by, first=first)

    def _collect(self, item: JsonDict, meta: _ItemMeta, *, triggered_by: str, first: bool) -> None:
        """The logged-in part of a run: accounts and history on the first one, then success and its webhooks."""
        _, multiplier, variant = self._outcome(meta)
        created: dict[str, tuple[list[str], str]] = {}
        if not meta.account_ids:
            created = self._create_accounts(item, meta, multiplier, variant)
        self._finish_success(item, variant)
        if first:
            self._emit_item_event("item/login_succeeded", item, triggered_by)
            self._emit_item_event("item/created", item, triggered_by)
            return
        self._emit_item_event("item/updated", item, triggered_by)
        if created:
            stamp = next(iter(created.values()))[1]
            for account_id, (ids, _) in created.items():
                if ids:
                    self._emit_created(item, account_id, stamp, triggered_by)

    def _finish_success(self, item: JsonDict, variant: str) -> None:
        now_ms = self._clock.now_ms()
        now = iso_from_ms(now_ms)
        item["status"] = "UPDATED"
        item["executionStatus"] = "PARTIAL_SUCCESS" if variant == "partial" else "SUCCESS"
        item["error"] = None
        item["parameter"] = None
        item["userAction"] = None
        item["statusDetail"] = self._status_detail(variant, now)
        item["lastUpdatedAt"] = now
        item["updatedAt"] = now
        item["consecutiveFailedLoginAttempts"] = 0
        # Items that need MFA at every login are not auto-synced (section 11).
        mfa_each_login = item["connector"]["id"] == MFA_TWO_STEP_CONNECTOR_ID
        auto_sync = None if mfa_each_login else now_ms + int(AUTO_SYNC_INTERVAL.total_seconds() * 1000)
        item["nextAutoSyncAt"] = None if auto_sync is None else iso_from_ms(auto_sync)

    @staticmethod
    def _status_detail(variant: str, now: str) -> JsonDict | None:
        def product(updated: bool = True, warnings: list[JsonDict] | None = None) -> JsonDict:
            return {"isUpdated": updated, "lastUpdatedAt": now if updated else None, "warnings": warnings or []}

        if variant == "partial":
            # user-ok-account-error: the credit card product failed, so its account is not collected.
            return {
                "accounts": product(),
                "creditCards": product(False, [{"code": "001", "message": "Credit card data could not be collected"}]),
                "transactions": product(),
                "paymentData": product(),
            }
        if variant == "warning":
            return {
                "accounts": product(
                    True,
                    [
                        {
                            "code": "002",
                            "message": "Some account data may be incomplete",
                            "providerMessage": "Servico temporariamente indisponivel",
                        }
                    ],
                ),
                "creditCards": product(),
                "transactions": product(),
                "paymentData": product(),
            }
        return None

    def _set_error(
        self,
        item: JsonDict,
        code: str,
        message: str | None,
        triggered_by: str,
        *,
        provider_message: str | None = None,
    ) -> str:
        error: JsonDict = {"code": code, "message": message or ERROR_MESSAGES.get(code, "Item execution failed")}
        if provider_message is not None:
            error["providerMessage"] = provider_message
        login_error = code in LOGIN_ERROR_CODES
        item["status"] = "LOGIN_ERROR" if login_error else "OUTDATED"
        item["executionStatus"] = code
        item["error"] = error
        item["parameter"] = None
        item["updatedAt"] = iso_from_ms(self._clock.now_ms())
        if login_error:
            # No auto-sync until new credentials arrive (section 8).
            item["consecutiveFailedLoginAttempts"] = int(item["consecutiveFailedLoginAttempts"]) + 1
            item["nextAutoSyncAt"] = None
        payload_error = {"code": error["code"], "message": error["message"]}
        return self._emit_item_event("item/error", item, triggered_by, {"error": payload_error})

    def fail_item(
        self, item_id: str, code: str = "INVALID_CREDENTIALS", *, message: str | None = None, triggered_by: str = "SYNC"
    ) -> str:
        """Make the item's latest run fail with `code`; sends item/error. Returns the eventId."""
        self._check_triggered_by(triggered_by)
        if not code:
            raise ValueError("code must be a non-empty error code")
        with self.lock:
            item = self._require_item(item_id)
            self._cancel_run(item_id)  # timed mode: the sync in progress ends in this error
            return self._set_error(item, code, message, triggered_by)

    def set_waiting_user_input(self, item_id: str, *, triggered_by: str = "USER") -> str:
        """MFA needed: status WAITING_USER_INPUT with a `parameter`; sends item/waiting_user_input.

        `POST /items/{id}/mfa` with the sandbox token then finishes the run (item/updated). In timed mode a
        sync in progress is replaced by this wait, which ends in USER_INPUT_TIMEOUT at `parameter.expiresAt`.
        """
        self._check_triggered_by(triggered_by)
        with self.lock:
            item = self._require_item(item_id)
            if not self.timed:
                return self._wait_for_mfa(item, self._meta[item_id], triggered_by, first=False)
            run = _Run(item_id, triggered_by, first=False, spec=None)
            self._begin_run(run)
            return self._wait_for_mfa_timed(run)

    def _wait_for_mfa(self, item: JsonDict, meta: _ItemMeta, triggered_by: str, *, first: bool) -> str:
        now_ms = self._clock.now_ms()
        timeout_ms = MFA_TIMEOUT_MS if self.timing is None else round(self.timing.mfa_timeout * 1000)
        item["status"] = "WAITING_USER_INPUT"
        item["executionStatus"] = "WAITING_USER_INPUT"
        item["error"] = None
        item["parameter"] = {**mfa_token_credential(), "expiresAt": iso_from_ms(now_ms + timeout_ms)}
        item["updatedAt"] = iso_from_ms(now_ms)
        meta.pending_run = (triggered_by, first)
        return self._emit_item_event("item/waiting_user_input", item, triggered_by)

    def submit_mfa(self, item_id: str, body: Any) -> JsonDict:
        """`POST /items/{id}/mfa` `{<parameter.name>: value}`: answered with the item as the run resumes.

        The sandbox token (123456) lets the waiting run collect (item/login_succeeded then item/created on a
        first sync, item/updated otherwise); any other value ends it in INVALID_CREDENTIALS_MFA (item/error).
        """
        if not isinstance(body, dict):
            raise PluggyApiError(400, "request body must be a JSON object")
        with self.lock:
            item = self._require_item(item_id)
            meta = self._meta[item_id]
            parameter = item.get("parameter")
            run = self._runs.get(item_id)
            expired = isinstance(parameter, dict) and self._clock.wall_ms() >= parse_iso_ms(str(parameter["expiresAt"]))
            if self.timed and run is not None and run.mfa_task is not None and expired:
                self._mfa_timed_out(run)  # the deadline passed a moment ago; its task has not run yet
            if item["status"] != "WAITING_USER_INPUT" or meta.pending_run is None or not parameter:
                raise PluggyApiError(400, "Item is not waiting for user input")
            name = str(parameter["name"])
            value = body.get(name)
            if not isinstance(value, str) or not value:
                raise PluggyApiError(400, f"Parameter {name} is required", data={"parameter": name})
            if self.timed and run is not None:
                return self._mfa_submitted(run, value == SANDBOX_MFA_TOKEN)
            triggered_by, first = meta.pending_run
            meta.pending_run = None
            item["status"] = "UPDATING"
            item["executionStatus"] = "LOGIN_MFA_IN_PROGRESS"
            item["parameter"] = None
            item["updatedAt"] = iso_from_ms(self._clock.now_ms())
            snapshot = copy.deepcopy(item)
            if value == SANDBOX_MFA_TOKEN:
                self._collect(item, meta, triggered_by=triggered_by, first=first)
            else:
                self._set_error(item, "INVALID_CREDENTIALS_MFA", None, triggered_by)
            return snapshot

    def reconnect_item(self, item_id: str, *, triggered_by: str = "USER") -> JsonDict:
        """A successful run again (fresh credentials): status UPDATED, sends item/updated.

        In timed mode the run starts (the item is returned UPDATING); ValueError while a sync is running.
        """
        self._check_triggered_by(triggered_by)
        with self.lock:
            item = self._require_item(item_id)
            meta = self._meta[item_id]
            self._refuse_while_updating(item)
            if self._outcome(meta)[0] is not None:
                # Reconnecting means the user typed working credentials.
                meta.username, meta.password = "user-ok", SANDBOX_PASSWORD
            if meta.connector_id == MFA_ONE_STEP_CONNECTOR_ID:
                meta.mfa_token = SANDBOX_MFA_TOKEN
            if self.timed:
                self._start_run(item, _Run(item_id, triggered_by, first=False, spec=None))
                return copy.deepcopy(item)
            self._run_sync(item, meta, triggered_by=triggered_by, first=False)
            return copy.deepcopy(item)

    def delete_item(self, item_id: str, *, triggered_by: str = "CLIENT") -> str:
        """Delete the item with its accounts and transactions; sends item/deleted. Returns the eventId."""
        self._check_triggered_by(triggered_by)
        with self.lock:
            item = self._require_item(item_id)
            self._cancel_run(item_id)
            for task in self._late_tasks.pop(item_id, []):
                self.scheduler.cancel(task)
            meta = self._meta.pop(item_id)
            for account_id in meta.account_ids:
                self._accounts.pop(account_id, None)
                for tx_id in self._transactions.pop(account_id, {}):
                    self._tx_account.pop(tx_id, None)
                    self._hidden_tx.discard(tx_id)
                self._order.pop(account_id, None)
                if account_id in self._hidden_accounts:
                    self._hidden_accounts.discard(account_id)  # never seen at Pluggy: not reported deleted
                    continue
                self._deleted_accounts.append(account_id)
            del self._items[item_id]
            self._deleted_items.append(item_id)
            return self._emit_item_event("item/deleted", item, triggered_by)

    # ==============================================================================================
    # Timed runs (timed mode, timeline.py): a sync in the background over emulator time

    def _timing(self) -> SyncTiming:
        if self.timing is None:
            raise RuntimeError("timed runs need sync_timing")
        return self.timing

    @staticmethod
    def _ms(seconds: float) -> int:
        return round(seconds * 1000)

    def _refuse_while_updating(self, item: JsonDict) -> None:
        if self.timed and item["status"] in _PENDING_STATUSES:
            raise ValueError(f"item {item['id']} is still updating; wait for it first (wait_for_item or settle)")

    def _at(self, run: _Run, due_ms: int, task: Callable[[], None]) -> ScheduledTask:
        """Schedule part of `run`: it does nothing once the run is cancelled or replaced."""

        def guarded() -> None:
            with self.lock:
                if not run.cancelled and self._runs.get(run.item_id) is run:
                    task()

        handle = self.scheduler.at(due_ms, guarded)
        run.tasks.append(handle)
        return handle

    def _cancel_run(self, item_id: str) -> None:
        """Stop the item's timed sync: its tasks never run and what it collected never becomes visible."""
        run = self._runs.pop(item_id, None)
        if run is None:
            return
        run.cancelled = True
        for task in run.tasks:
            self.scheduler.cancel(task)
        meta = self._meta.get(item_id)
        if meta is not None:
            meta.pending_run = None
        for tx_id in run.hidden_tx:
            self._hidden_tx.discard(tx_id)
            account_id = self._tx_account.pop(tx_id, None)
            if account_id is not None:
                self._transactions[account_id].pop(tx_id, None)
                self._order.pop(account_id, None)
        for account_id in run.hidden_accounts:
            self._hidden_accounts.discard(account_id)
            self._accounts.pop(account_id, None)
            self._transactions.pop(account_id, None)
            self._deleted_tx.pop(account_id, None)
            self._order.pop(account_id, None)
            if meta is not None and account_id in meta.account_ids:
                meta.account_ids.remove(account_id)

    def _record_step(self, run: _Run, item: JsonDict) -> None:
        step = {"status": item["status"], "executionStatus": item["executionStatus"], "at": item["updatedAt"]}
        run.summary["steps"].append(step)

    def _set_step(self, run: _Run, execution_status: str, now_ms: int | None = None) -> None:
        item = self._items[run.item_id]
        item["executionStatus"] = execution_status
        item["updatedAt"] = iso_from_ms(self._clock.now_ms() if now_ms is None else now_ms)
        self._record_step(run, item)

    def _begin_run(self, run: _Run) -> None:
        """`run` replaces whatever the item had in progress; `last_sync` describes it from now on."""
        self._cancel_run(run.item_id)
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

    def _start_run(self, item: JsonDict, run: _Run) -> None:
        """UPDATING now, then CREATING -> CREATED (new items only) -> LOGIN_IN_PROGRESS -> the login's outcome."""
        timing = self._timing()
        self._begin_run(run)
        now = self._clock.now_ms()
        item["status"] = "UPDATING"
        item["parameter"] = None
        self._set_step(run, "CREATING" if run.first else "CREATED", now)
        due = now
        if run.first:
            due += self._ms(timing.creating)
            self._at(run, due, lambda: self._set_step(run, "CREATED"))
        due += self._ms(timing.created)
        self._at(run, due, lambda: self._set_step(run, "LOGIN_IN_PROGRESS"))
        self._at(run, due + self._ms(timing.login), lambda: self._login_done(run))

    def _fail_run(self, run: _Run, code: str, provider_message: str | None = None) -> None:
        """The run ends in `code` (LOGIN_ERROR or OUTDATED, item/error)."""
        if self._runs.get(run.item_id) is run:
            del self._runs[run.item_id]
        if run.mfa_task is not None:
            self.scheduler.cancel(run.mfa_task)
            run.mfa_task = None
        item = self._items[run.item_id]
        self._set_error(item, code, None, run.triggered_by, provider_message=provider_message)
        self._record_step(run, item)
        run.summary["outcome"] = code

    def _login_done(self, run: _Run) -> None:
        """The end of LOGIN_IN_PROGRESS: rejected credentials, an MFA challenge, or logged in."""
        meta = self._meta[run.item_id]
        if run.spec is None:  # control syncs log in with whatever is stored, as instant ones do
            code = self._outcome(meta)[0]
            if code is not None:
                provider_message = (
                    "Mensagem do banco: regularize sua conta" if meta.username.endswith("provider-message") else None
                )
                self._fail_run(run, code, provider_message)
                return
            if meta.connector_id == MFA_ONE_STEP_CONNECTOR_ID and meta.mfa_token != SANDBOX_MFA_TOKEN:
                self._fail_run(run, "INVALID_CREDENTIALS_MFA")
                return
            if meta.connector_id == MFA_TWO_STEP_CONNECTOR_ID:
                self._wait_for_mfa_timed(run)
                return
        self._login_succeeded(run)

    def _wait_for_mfa_timed(self, run: _Run) -> str:
        """WAITING_USER_INPUT with `parameter` (item/waiting_user_input) until the MFA or its deadline."""
        item = self._items[run.item_id]
        event_id = self._wait_for_mfa(item, self._meta[run.item_id], run.triggered_by, first=run.first)
        self._record_step(run, item)
        expires_ms = parse_iso_ms(str(item["parameter"]["expiresAt"]))
        run.mfa_task = self._at(run, expires_ms, lambda: self._mfa_timed_out(run))
        return event_id

    def _mfa_timed_out(self, run: _Run) -> None:
        """Nobody answered before `parameter.expiresAt`: USER_INPUT_TIMEOUT (item/error)."""
        if run.mfa_task is None or self._items[run.item_id]["status"] != "WAITING_USER_INPUT":
            return
        self._meta[run.item_id].pending_run = None
        self._fail_run(run, "USER_INPUT_TIMEOUT")

    def _mfa_submitted(self, run: _Run, accepted: bool) -> JsonDict:
        """`POST /items/{id}/mfa`: LOGIN_MFA_IN_PROGRESS now (the answer), the token's verdict `login_mfa` later."""
        item = self._items[run.item_id]
        if run.mfa_task is not None:
            self.scheduler.cancel(run.mfa_task)
            run.mfa_task = None
        self._meta[run.item_id].pending_run = None
        item["status"] = "UPDATING"
        item["parameter"] = None
        now = self._clock.now_ms()
        self._set_step(run, "LOGIN_MFA_IN_PROGRESS", now)
        snapshot = copy.deepcopy(item)
        due = now + self._ms(self._timing().login_mfa)
        if accepted:
            self._at(run, due, lambda: self._login_succeeded(run))
        else:
            self._at(run, due, lambda: self._fail_run(run, "INVALID_CREDENTIALS_MFA"))
        return snapshot

    def _login_succeeded(self, run: _Run) -> None:
        """item/login_succeeded, then ACCOUNTS_IN_PROGRESS: what this sync collects is decided now."""
        item = self._items[run.item_id]
        self._emit_item_event("item/login_succeeded", item, run.triggered_by)
        now = self._clock.now_ms()
        self._set_step(run, "ACCOUNTS_IN_PROGRESS", now)
        self._plan_collection(run, item, self._meta[run.item_id], now)

    def _plan_collection(self, run: _Run, item: JsonDict, meta: _ItemMeta, start_ms: int) -> None:
        """Collect everything now, hidden, and schedule when each part becomes visible.

        New accounts appear when ACCOUNTS_IN_PROGRESS ends. Each bank account's new rows appear together
        during TRANSACTIONS_IN_PROGRESS, each card account's during CREDITCARDS_IN_PROGRESS, one account after
        the other; on an update each group sends transactions/created (a first sync leaves that to
        item/created). Their createdAt values are spread over the account's collection, so neither pages nor
        accounts are in createdAt order. Changed and deleted rows change when MERGING ends, with UPDATED and
        item/created or item/updated, then transactions/updated and transactions/deleted. Late rows
        (`late_fraction`) become visible `late_delay` after UPDATED, with their own transactions/created.
        """
        timing = self._timing()
        rng = meta.rng
        accounts_end = start_ms + self._ms(timing.accounts)
        transactions_end = accounts_end + self._ms(timing.transactions)
        payment_data_end = transactions_end + self._ms(timing.payment_data)
        cards_end = payment_data_end + self._ms(timing.credit_cards)
        variant = self._outcome(meta)[2]
        if variant == "error":  # a control sync of an item whose credentials fail succeeds, as instant ones do
            variant = "ok"
        spec = run.spec or _SyncSpec()
        created, new_accounts = self._collect_hidden(run, item, spec, start_ms=start_ms, accounts_end=accounts_end)
        late = self._pick_late(rng, created)
        ordered = [a for a in meta.account_ids if created.get(a)]
        banks = [a for a in ordered if self._accounts[a]["type"] == "BANK"]
        cards = [a for a in ordered if self._accounts[a]["type"] == "CREDIT"]
        late_batches: list[tuple[str, list[str]]] = []
        rows = _RowPlan(run, rng, created, late, late_batches)
        self._at(run, accounts_end, lambda: self._accounts_collected(run, new_accounts))
        self._schedule_rows(rows, banks, (accounts_end, transactions_end))
        self._at(run, transactions_end, lambda: self._set_step(run, "PAYMENT_DATA_IN_PROGRESS"))
        self._at(run, payment_data_end, lambda: self._set_step(run, "CREDITCARDS_IN_PROGRESS"))
        self._schedule_rows(rows, cards, (payment_data_end, cards_end))
        self._at(run, cards_end, lambda: self._merging(run))
        end = cards_end + self._ms(timing.merging)
        self._at(run, end, lambda: self._finish_run(run, variant, spec, late_batches))
        stamps = [str(self._transactions[a][t]["createdAt"]) for a, ids in created.items() for t in ids]
        run.summary["transactionsCreatedAtFrom"] = min(stamps) if stamps else None
        run.summary["created"] = {a: list(ids) for a, ids in created.items()}
        run.summary["late"] = dict(late_batches)

    def _collect_hidden(
        self, run: _Run, item: JsonDict, spec: _SyncSpec, *, start_ms: int, accounts_end: int
    ) -> tuple[dict[str, list[str]], list[str]]:
        """The sync's new accounts and rows, stored but hidden; ({accountId: new row ids}, new account ids)."""
        meta = self._meta[run.item_id]
        created: dict[str, list[str]] = {}
        new_accounts: list[str] = []
        if run.spec is None and not meta.account_ids:
            _, multiplier, variant = self._outcome(meta)
            for account_id, (ids, _) in self._create_accounts(item, meta, multiplier, variant, accounts_end).items():
                created[account_id] = ids
                new_accounts.append(account_id)
        for account_id, tx_id in spec.restated:  # the old row goes when MERGING ends
            old = self._transactions.get(account_id, {}).get(tx_id)
            if old is None:
                continue
            new = self._restated_copy(meta, old, iso_from_ms(start_ms))
            self._insert_tx(self._accounts[account_id], new)
            created.setdefault(account_id, []).append(new["id"])
            run.summary["restated"][tx_id] = new["id"]
        changes = _SyncChanges(stamp_ms=start_ms)
        self._add_rows(meta, spec.add, changes)
        for account_id, ids in changes.created.items():
            created.setdefault(account_id, []).extend(ids)
        if spec.new_account:
            index = len(meta.account_ids)
            account = self._new_account(
                item, meta, kind="BANK", subtype="CHECKING_ACCOUNT", index=index, stamp_ms=accounts_end
            )
            count = max(1, meta.transactions_per_account // 2)
            created[account["id"]] = self._generate_history(meta, account, count, accounts_end)
            new_accounts.append(account["id"])
            run.summary["newAccountId"] = account["id"]
        for account_id in created:
            if account_id not in new_accounts:  # collected again: the institution's balance and limits now
                account = self._accounts[account_id]
                if account["type"] == "CREDIT":
                    self._refresh_card(account, start_ms, bump=True)
                else:
                    account["updatedAt"] = iso_from_ms(start_ms)
            self._order.pop(account_id, None)
        run.hidden_accounts.update(new_accounts)
        self._hidden_accounts.update(new_accounts)
        for ids in created.values():
            run.hidden_tx.update(ids)
            self._hidden_tx.update(ids)
        return created, new_accounts

    def _pick_late(self, rng: random.Random, created: dict[str, list[str]]) -> dict[str, set[str]]:
        """The rows that arrive after UPDATED: `late_fraction` of the sync's new rows (at least one when the
        fraction is above 0), never all of an account's, so each late row has on-time rows beside it."""
        fraction = self._timing().late_fraction
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

    def _schedule_rows(self, plan: _RowPlan, account_ids: list[str], window: tuple[int, int]) -> None:
        """Give each account's new rows a createdAt within its collection and a moment to appear.

        The accounts' rows appear one group after the other inside `window`; a group's createdAt values lie
        between the window's start and the moment it appears (one row exactly then), its late rows' in the
        first half of that span: earlier than rows that are visible before them.
        """
        run, rng, created, late = plan.run, plan.rng, plan.created, plan.late
        start, stop = window
        for index, account_id in enumerate(account_ids):
            visible_at = start + (stop - start) * (index + 1) // (len(account_ids) + 1)
            rows = self._transactions[account_id]
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
            self._at(run, visible_at, functools.partial(self._rows_collected, run, account_id, on_time))

    @staticmethod
    def _stamp_row(row: JsonDict, created_ms: int) -> None:
        row["createdAt"] = row["updatedAt"] = iso_from_ms(created_ms)

    def _publish_rows(self, account_id: str, ids: list[str]) -> list[JsonDict]:
        """Make hidden rows visible; returns those that were still waiting."""
        rows = self._transactions.get(account_id, {})
        shown = [rows[t] for t in ids if t in rows and t in self._hidden_tx]
        for row in shown:
            self._hidden_tx.discard(row["id"])
        self._order.pop(account_id, None)
        return shown

    def _accounts_collected(self, run: _Run, account_ids: list[str]) -> None:
        self._hidden_accounts.difference_update(account_ids)
        run.hidden_accounts.difference_update(account_ids)
        self._set_step(run, "TRANSACTIONS_IN_PROGRESS")

    def _rows_collected(self, run: _Run, account_id: str, ids: list[str]) -> None:
        shown = self._publish_rows(account_id, ids)
        run.hidden_tx.difference_update(ids)
        if shown and not run.first:
            since = min(str(row["createdAt"]) for row in shown)
            self._emit_created(self._items[run.item_id], account_id, since, run.triggered_by)

    def _merging(self, run: _Run) -> None:
        item = self._items[run.item_id]
        item["status"] = "MERGING"
        item["updatedAt"] = iso_from_ms(self._clock.now_ms())
        self._record_step(run, item)

    def _finish_run(self, run: _Run, variant: str, spec: _SyncSpec, late_batches: list[tuple[str, list[str]]]) -> None:
        """MERGING ends: changes and deletions land, UPDATED with its webhooks, then the late rows' clocks start."""
        item_id = run.item_id
        item, meta = self._items[item_id], self._meta[item_id]
        changes = self._merge(meta, spec)
        del self._runs[item_id]
        run.hidden_tx.clear()  # what is still hidden are the late rows, which outlive the run
        self._finish_success(item, variant)
        self._record_step(run, item)
        run.summary.update(outcome=item["executionStatus"], updated=changes.updated, deleted=changes.deleted)
        if run.first:
            self._emit_item_event("item/created", item, run.triggered_by)
        else:  # item/updated, then transactions/updated and transactions/deleted per account
            self._emit_sync_events(item, meta, changes, run.triggered_by)
        low, high = self._timing().late_delay
        updated_ms = parse_iso_ms(str(item["updatedAt"]))
        for account_id, ids in late_batches:
            due = updated_ms + self._ms(meta.rng.uniform(low, high))
            task = self.scheduler.at(
                due, functools.partial(self._late_rows, item_id, account_id, ids, run.triggered_by)
            )
            self._late_tasks.setdefault(item_id, []).append(task)

    def _merge(self, meta: _ItemMeta, spec: _SyncSpec) -> _SyncChanges:
        """The changed and deleted rows of a timed sync, applied when its MERGING ends."""
        changes = _SyncChanges(stamp_ms=self._clock.now_ms())
        now_ms, stamp = changes.stamp_ms, changes.stamp
        updated, deleted = changes.updated, changes.deleted
        touched: set[str] = set()
        for account_id, tx_id in spec.changed:
            row = self._transactions.get(account_id, {}).get(tx_id)
            if row is None or tx_id in self._hidden_tx:
                continue
            self._change_tx(meta, row, stamp)
            self._order.pop(account_id, None)
            updated.setdefault(account_id, []).append(tx_id)
        gone = [(a, t, False) for a, t in spec.restated] + [(a, t, True) for a, t in spec.deleted]
        for account_id, tx_id, plain_delete in gone:
            if tx_id not in self._transactions.get(account_id, {}):
                continue
            old = self._remove_tx(account_id, tx_id)
            account = self._accounts[account_id]
            if plain_delete and account["type"] == "BANK":
                self._set_bank_balance(account, float(account["balance"]) - float(old["amount"]), None, bump=False)
            deleted.setdefault(account_id, []).append(tx_id)
            touched.add(account_id)
        for account_id in touched:
            account = self._accounts[account_id]
            if account["type"] == "CREDIT":
                self._refresh_card(account, now_ms, bump=True)
            else:
                account["updatedAt"] = stamp
        return changes

    def _late_rows(self, item_id: str, account_id: str, ids: list[str], triggered_by: str) -> None:
        """Rows of a finished sync that arrive after UPDATED, with their own transactions/created."""
        with self.lock:
            item = self._items.get(item_id)
            if item is None:
                return
            self._late_tasks[item_id] = [t for t in self._late_tasks.get(item_id, []) if not t.done]
            shown = self._publish_rows(account_id, ids)
            if shown:
                since = min(str(row["createdAt"]) for row in shown)
                self._emit_created(item, account_id, since, triggered_by)

    def last_sync(self, item_id: str) -> JsonDict | None:
        """The item's latest timed sync: steps seen (status, executionStatus, at), outcome, the rows it
        created (per account, late ones too), the late ones, updated, deleted and restated rows."""
        with self.lock:
            summary = self._summaries.get(item_id)
            return copy.deepcopy(summary) if summary is not None else None

    def pending_work(self) -> int:
        """Timed syncs running or waiting for MFA, plus late-row batches still to arrive."""
        with self.lock:
            late = sum(1 for tasks in self._late_tasks.values() for t in tasks if not t.done and not t.cancelled)
            return len(self._runs) + late

    # ==============================================================================================
    # Sandbox data

    def _create_accounts(
        self, item: JsonDict, meta: _ItemMeta, multiplier: int, variant: str, stamp_ms: int | None = None
    ) -> dict[str, tuple[list[str], str]]:
        """The sandbox item's accounts with their history; {accountId: (new tx ids, createdAt)}."""
        specs: list[tuple[str, str]] = [("BANK", "CHECKING_ACCOUNT"), ("BANK", "SAVINGS_ACCOUNT")]
        if variant != "partial":
            specs.append(("CREDIT", "CREDIT_CARD"))
        created: dict[str, tuple[list[str], str]] = {}
        stamp_ms = self._clock.now_ms() if stamp_ms is None else stamp_ms
        for index, (kind, subtype) in enumerate(specs):
            account = self._new_account(item, meta, kind=kind, subtype=subtype, index=index, stamp_ms=stamp_ms)
            count = meta.transactions_per_account * multiplier
            created[account["id"]] = (self._generate_history(meta, account, count, stamp_ms), iso_from_ms(stamp_ms))
        return created

    def _new_account(
        self, item: JsonDict, meta: _ItemMeta, *, kind: str, subtype: str, index: int, stamp_ms: int
    ) -> JsonDict:
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
        self._accounts[account_id] = account
        self._transactions[account_id] = {}
        self._deleted_tx[account_id] = []
        meta.account_ids.append(account_id)
        return account

    @staticmethod
    def _today_ms(now_ms: int) -> int:
        """Midnight in Sao Paulo of the current local day, as UTC milliseconds."""
        local_day = (now_ms - BRT_OFFSET_MS) // DAY_MS
        return local_day * DAY_MS + BRT_OFFSET_MS

    def _generate_history(self, meta: _ItemMeta, account: JsonDict, count: int, stamp_ms: int) -> list[str]:
        rng = meta.rng
        today = self._today_ms(stamp_ms)
        dates = sorted(today - rng.randint(0, HISTORY_DAYS - 1) * DAY_MS for _ in range(count))
        rows = [self._make_tx(meta, account, d, stamp_ms, today) for d in dates]
        if account["type"] == "BANK":
            opening = _money(
                rng.uniform(800, 9000) if account["subtype"] == "CHECKING_ACCOUNT" else rng.uniform(2000, 30000)
            )
            self._set_bank_balance(account, opening, stamp_ms, bump=False)
        for row in rows:
            self._insert_tx(account, row)
        if account["type"] == "CREDIT":
            self._refresh_card(account, stamp_ms, bump=False)
        return [row["id"] for row in rows]

    def _insert_tx(self, account: JsonDict, row: JsonDict) -> None:
        """Store a row; bank rows get the running balance (institution-provided, never recomputed)."""
        if account["type"] == "BANK":
            balance = _money(float(account["balance"]) + float(row["amount"]))
            row["balance"] = balance
            self._set_bank_balance(account, balance, None, bump=False)
        self._transactions[account["id"]][row["id"]] = row
        self._tx_account[row["id"]] = account["id"]
        self._order.pop(account["id"], None)

    @staticmethod
    def _set_bank_balance(account: JsonDict, balance: float, stamp_ms: int | None, *, bump: bool) -> None:
        account["balance"] = _money(balance)
        bank = account["bankData"]
        bank["closingBalance"] = account["balance"]
        if bank["overdraftUsedLimit"] is not None:
            bank["overdraftUsedLimit"] = _money(max(0.0, -account["balance"]))
        if bump and stamp_ms is not None:
            account["updatedAt"] = iso_from_ms(stamp_ms)

    def _refresh_card(self, account: JsonDict, stamp_ms: int, *, bump: bool) -> None:
        """Card balance = purchases on the open bill (payments settle earlier bills); limits follow."""
        rows = self._transactions[account["id"]].values()
        current_bill = self._bill_month(self._today_ms(stamp_ms))
        balance = _money(
            sum(
                float(r["amount"])
                for r in rows
                if r["type"] == "DEBIT" and r["creditCardMetadata"]["billForecastDate"] == current_bill
            )
        )
        credit = account["creditData"]
        account["balance"] = balance
        credit["availableCreditLimit"] = _money(float(credit["creditLimit"]) - balance)
        credit["minimumPayment"] = _money(balance * 0.15)
        year, month = (int(x) for x in current_bill.split("-"))
        close = datetime(year, month, 5, 3, tzinfo=UTC)
        credit["balanceCloseDate"] = iso_from_ms(int(close.timestamp() * 1000))
        credit["balanceDueDate"] = iso_from_ms(int((close + timedelta(days=7)).timestamp() * 1000))
        if bump:
            account["updatedAt"] = iso_from_ms(stamp_ms)

    @staticmethod
    def _bill_month(date_ms: int) -> str:
        """The bill (YYYY-MM) a purchase lands on: the bill closes on day 5 of its month."""
        day = datetime.fromtimestamp((date_ms - BRT_OFFSET_MS) // 1000, tz=UTC)
        year, month = day.year, day.month
        if day.day >= 5:
            month += 1
            if month == 13:
                year, month = year + 1, 1
        return f"{year:04d}-{month:02d}"

    def _make_tx(self, meta: _ItemMeta, account: JsonDict, date_ms: int, stamp_ms: int, today_ms: int) -> JsonDict:
        rng = meta.rng
        stamp = iso_from_ms(stamp_ms)
        row: JsonDict = {
            "id": rng_uuid(rng),
            "accountId": account["id"],
            "date": iso_from_ms(date_ms),
            "description": "",
            "descriptionRaw": None,
            "currencyCode": "BRL",
            "amount": 0.0,
            "amountInAccountCurrency": None,
            # Bank rows get the running balance when stored; card statements carry none, yet the SDK types a
            # number, so card rows keep 0.
            "balance": 0.0,
            "category": None,
            "categoryId": None,
            "providerCode": f"{rng.randint(0, 999999):06d}",
            "providerId": None,
            "status": "POSTED",
            "type": "DEBIT",
            "operationType": None,
            "operationTypeAdditionalInfo": None,
            "paymentData": None,
            "creditCardMetadata": None,
            "merchant": None,
            "createdAt": stamp,
            "updatedAt": stamp,
        }
        if account["type"] == "CREDIT":
            self._fill_card_tx(meta, account, row, date_ms, today_ms)
        else:
            self._fill_bank_tx(meta, account, row, date_ms)
        return row

    @staticmethod
    def _set_category(row: JsonDict, category_id: str) -> None:
        row["categoryId"] = category_id
        row["category"] = description_of(category_id)

    @staticmethod
    def _merchant(merchant: _Merchant) -> JsonDict:
        return {
            "name": merchant.display,
            "businessName": merchant.business_name,
            "cnpj": format_cnpj(cnpj_from_base(merchant.cnpj_base)),
            "cnae": merchant.cnae,
            "category": description_of(merchant.category_id),
        }

    @staticmethod
    def _party(rng: random.Random, name: str, cpf: str | None = None) -> JsonDict:
        return {
            "documentNumber": {"type": "CPF", "value": cpf or fake_cpf(rng)},
            "name": name,
            "accountNumber": f"{rng.randint(10000, 999999)}-{rng.randint(0, 9)}",
            "branchNumber": f"{rng.randint(1, 9999):04d}",
            "routingNumber": f"{rng.randint(1, 999):03d}",
            "routingNumberISPB": f"{rng.randint(0, 99999999):08d}",
        }

    def _fill_bank_tx(self, meta: _ItemMeta, account: JsonDict, row: JsonDict, date_ms: int) -> None:
        rng = meta.rng
        row["providerId"] = f"{rng.getrandbits(64):016x}"  # institution's own id on bank rows
        if account["subtype"] == "SAVINGS_ACCOUNT":
            kind = rng.choices(("yield", "transfer_in", "transfer_out", "pix_in"), (50, 30, 15, 5))[0]
        else:
            kind = rng.choices(
                ("pix_out", "pix_in", "debit_card", "boleto", "ted_in", "salary", "fee", "withdrawal", "card_bill"),
                (30, 15, 25, 8, 5, 4, 5, 4, 4),
            )[0]
        ddmm = iso_from_ms(date_ms)[8:10] + "/" + iso_from_ms(date_ms)[5:7]
        simple = _SIMPLE_BANK_ROWS.get(kind)
        if simple is not None:
            low, high, description, raw, operation, category_id = simple
            amount = rng.uniform(low, high)
            row.update(description=description, descriptionRaw=raw.format(ddmm=ddmm), operationType=operation)
            self._set_category(row, category_id)
        elif kind in ("pix_out", "pix_in"):
            amount = self._fill_pix(meta, row, outgoing=kind == "pix_out", ddmm=ddmm)
        elif kind == "debit_card":
            merchant = rng.choice(_MERCHANTS)
            amount = rng.uniform(merchant.low, merchant.high)
            row["description"] = merchant.display
            row["descriptionRaw"] = f"COMPRA CARTAO DEB {merchant.raw} {ddmm}"
            row["operationType"] = "CARTAO"
            row["merchant"] = self._merchant(merchant)
            self._set_category(row, merchant.category_id)
        elif kind == "boleto":
            amount = self._fill_boleto(meta, row)
        else:  # ted_in, salary
            salary = kind == "salary"
            company = _COMPANIES[0] if salary else rng.choice(_COMPANIES)
            amount = rng.uniform(3500, 9000) if salary else rng.uniform(200, 3000)
            row["description"] = f"{'Salario' if salary else 'TED recebida'} - {company}"
            row["descriptionRaw"] = f"{'CRED SALARIO' if salary else 'TED CRED'} {company.upper()}"
            row["operationType"] = "FOLHA_PAGAMENTO" if salary else "TED"
            self._set_category(row, "01010000" if salary else "05030000")
        credit = kind in _BANK_CREDIT_KINDS
        # Bank rows: DEBIT negative, CREDIT positive, as in the OAS examples.
        row["type"] = "CREDIT" if credit else "DEBIT"
        row["amount"] = _money(amount if credit else -amount)

    def _fill_pix(self, meta: _ItemMeta, row: JsonDict, *, outgoing: bool, ddmm: str) -> float:
        rng = meta.rng
        owner = self._party(rng, meta.owner, meta.cpf)
        person = rng.choice([p for p in _PEOPLE if p != meta.owner])
        other = self._party(rng, person)
        row["description"] = f"Pix {'enviado' if outgoing else 'recebido'} - {person}"
        row["descriptionRaw"] = f"PIX {'TRANSF' if outgoing else 'RECEB'} {person.upper()} {ddmm}"
        row["operationType"] = "PIX"
        self._set_category(row, "05070000")
        row["paymentData"] = {
            "payer": owner if outgoing else other,
            "receiver": other if outgoing else owner,
            "paymentMethod": "PIX",
            "referenceNumber": f"E{rng.getrandbits(96):024x}",
            "reason": rng.choice((None, "Aluguel", "Jantar", "Presente")),
            "receiverReferenceId": None,
            "boletoMetadata": None,
        }
        return rng.uniform(10, 800) if outgoing else rng.uniform(20, 1500)

    def _fill_boleto(self, meta: _ItemMeta, row: JsonDict) -> float:
        rng = meta.rng
        company = rng.choice(_COMPANIES)
        amount = rng.uniform(80, 900)
        row["description"] = f"Pagamento de boleto - {company}"
        row["descriptionRaw"] = f"PAG BOLETO {company.upper()}"
        row["operationType"] = "BOLETO"
        self._set_category(row, "07010000")
        line = "".join(str(rng.randint(0, 9)) for _ in range(47))
        row["paymentData"] = {
            "payer": self._party(rng, meta.owner, meta.cpf),
            "receiver": None,
            "paymentMethod": "BOLETO",
            "referenceNumber": None,
            "reason": None,
            "receiverReferenceId": None,
            "boletoMetadata": {
                "digitableLine": line,
                "barcode": line[:44],
                "baseAmount": _money(amount),
                "penaltyAmount": None,
                "interestAmount": None,
                "discountAmount": None,
            },
        }
        return amount

    def _fill_card_tx(self, meta: _ItemMeta, account: JsonDict, row: JsonDict, date_ms: int, today_ms: int) -> None:
        rng = meta.rng
        kind = rng.choices(("purchase", "installment", "payment", "annual_fee"), (75, 15, 6, 4))[0]
        bill_month = self._bill_month(date_ms)
        metadata: JsonDict = {
            "installmentNumber": None,
            "totalInstallments": None,
            "totalAmount": None,
            "payeeMCC": None,
            "purchaseDate": row["date"],
            "billId": str(uuid.uuid5(_BILL_NAMESPACE, f"{account['id']}:{bill_month}")),
            "cardNumber": account["number"],
            "feeType": None,
            "otherCreditsType": None,
            "billForecastDate": bill_month,
        }
        row["providerId"] = None  # card rows have no institution id: their ids are not stable
        if kind in ("purchase", "installment"):
            merchant = rng.choice(_MERCHANTS)
            row["merchant"] = self._merchant(merchant)
            row["descriptionRaw"] = f"{merchant.raw} SAO PAULO BR"
            row["operationType"] = None
            metadata["payeeMCC"] = merchant.mcc
            self._set_category(row, merchant.category_id)
            if kind == "installment":
                total = rng.choice((2, 3, 4, 6, 10, 12))
                number = rng.randint(1, total)
                total_amount = _money(rng.uniform(300, 3000))
                amount = total_amount / total
                metadata.update(installmentNumber=number, totalInstallments=total, totalAmount=total_amount)
                row["description"] = f"{merchant.display} {number}/{total}"
                row["descriptionRaw"] = f"{merchant.raw} PARC {number:02d}/{total:02d}"
            else:
                amount = rng.uniform(merchant.low, merchant.high)
                row["description"] = merchant.display
            # Recent purchases may still be authorizations (PENDING).
            if today_ms - date_ms < 3 * DAY_MS and rng.random() < 0.5:
                row["status"] = "PENDING"
            row["type"] = "DEBIT"
            row["amount"] = _money(amount)
        elif kind == "payment":
            row["description"] = "Pagamento recebido"
            row["descriptionRaw"] = "PAGAMENTO RECEBIDO"
            self._set_category(row, "05100000")
            # Card convention: bill payments are CREDIT (negative), purchases DEBIT (positive).
            row["type"] = "CREDIT"
            row["amount"] = _money(-rng.uniform(500, 4000))
        else:
            row["description"] = "Anuidade"
            row["descriptionRaw"] = "ANUIDADE DIFERENCIADA"
            metadata["feeType"] = "ANUIDADE"
            self._set_category(row, "06020000")
            row["type"] = "DEBIT"
            row["amount"] = _money(rng.uniform(20, 60))
        row["creditCardMetadata"] = metadata

    # ==============================================================================================
    # Syncs with changes

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
    ) -> JsonDict:
        """A successful sync that found changes; counts are for the whole item, spread over accounts.

        Sends item/updated, then transactions/created, transactions/updated and transactions/deleted
        per affected account. A restated card row is a delete plus a create with a new id.

        In timed mode the rows are picked now and the sync runs in the background (see `_plan_collection`);
        the answer is {itemId, item (UPDATING), pending: true} and `last_sync` has the rest once it runs.
        ValueError while the item's previous sync is still running.
        """
        self._check_triggered_by(triggered_by)
        if min(add, change, delete, restate_credit_card) < 0:
            raise ValueError("add, change, delete and restate_credit_card must be >= 0")
        with self.lock:
            item = self._require_item(item_id)
            meta = self._meta[item_id]
            if self.timed:
                self._refuse_while_updating(item)
            restated, deleted_pairs, changed_pairs = self._pick_rows(meta, restate_credit_card, delete, change)
            if add and not meta.account_ids:
                raise ValueError("the item has no accounts to add transactions to")
            if self.timed:
                spec = _SyncSpec(add, new_account, restated, deleted_pairs, changed_pairs)
                self._start_run(item, _Run(item_id, triggered_by, first=False, spec=spec))
                return {"itemId": item_id, "item": copy.deepcopy(item), "pending": True}
            changes = _SyncChanges(stamp_ms=self._clock.now_ms())
            for account_id, tx_id in changed_pairs:
                self._change_tx(meta, self._transactions[account_id][tx_id], changes.stamp)
                self._order.pop(account_id, None)
                changes.updated.setdefault(account_id, []).append(tx_id)
            for account_id, tx_id in restated:
                new = self._restated_copy(meta, self._remove_tx(account_id, tx_id), changes.stamp)
                self._insert_tx(self._accounts[account_id], new)
                changes.record(account_id, deleted=tx_id, created=new["id"])
                changes.restated[tx_id] = new["id"]
            for account_id, tx_id in deleted_pairs:
                old = self._remove_tx(account_id, tx_id)
                account = self._accounts[account_id]
                if account["type"] == "BANK":
                    balance = float(account["balance"]) - float(old["amount"])
                    self._set_bank_balance(account, balance, None, bump=False)
                changes.record(account_id, deleted=tx_id)
            self._add_rows(meta, add, changes)
            new_account_id: str | None = None
            if new_account:
                account = self._new_account(
                    item,
                    meta,
                    kind="BANK",
                    subtype="CHECKING_ACCOUNT",
                    index=len(meta.account_ids),
                    stamp_ms=changes.stamp_ms,
                )
                count = max(1, meta.transactions_per_account // 2)
                changes.created[account["id"]] = self._generate_history(meta, account, count, changes.stamp_ms)
                new_account_id = account["id"]
            for account_id in changes.touched:
                account = self._accounts[account_id]
                if account["type"] == "CREDIT":
                    self._refresh_card(account, changes.stamp_ms, bump=True)
                else:
                    account["updatedAt"] = changes.stamp
            variant = self._outcome(meta)[2]
            self._finish_success(item, "ok" if variant == "error" else variant)
            event_ids = self._emit_sync_events(item, meta, changes, triggered_by)
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

    def _pick_rows(
        self, meta: _ItemMeta, restate: int, delete: int, change: int
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
        """(restated card rows, deleted rows, changed rows), disjoint, as (accountId, transactionId)."""
        rng = meta.rng
        existing = [
            (a, t)
            for a in meta.account_ids
            if a not in self._hidden_accounts
            for t in self._transactions[a]
            if t not in self._hidden_tx
        ]
        cards = [(a, t) for a, t in existing if self._accounts[a]["type"] == "CREDIT"]
        if restate > len(cards):
            raise ValueError(f"only {len(cards)} credit card transactions can be restated")
        restated = rng.sample(cards, restate)
        restated_set = set(restated)
        remaining = [pair for pair in existing if pair not in restated_set]
        if delete + change > len(remaining):
            raise ValueError(f"only {len(remaining)} transactions can be deleted or changed")
        picked = rng.sample(remaining, delete + change)
        return restated, picked[:delete], picked[delete:]

    def _add_rows(self, meta: _ItemMeta, add: int, changes: _SyncChanges) -> None:
        """New rows dated today or the two days before, round-robin over the item's accounts."""
        today = self._today_ms(changes.stamp_ms)
        accounts = [self._accounts[a] for a in meta.account_ids]
        for n in range(add):
            account = accounts[n % len(accounts)]
            date_ms = today - meta.rng.randint(0, 2) * DAY_MS
            row = self._make_tx(meta, account, date_ms, changes.stamp_ms, today)
            self._insert_tx(account, row)
            changes.record(account["id"], created=row["id"])

    def _emit_sync_events(self, item: JsonDict, meta: _ItemMeta, changes: _SyncChanges, triggered_by: str) -> list[str]:
        """item/updated, then transactions/created, /updated and /deleted per account, in that order."""
        event_ids = [self._emit_item_event("item/updated", item, triggered_by)]
        for account_id in meta.account_ids:
            if changes.created.get(account_id):
                event_ids.append(self._emit_created(item, account_id, changes.stamp, triggered_by))
        for account_id in meta.account_ids:
            if changes.updated.get(account_id):
                fields = {
                    "id": item["id"],
                    "itemId": item["id"],
                    "accountId": account_id,
                    "transactionIds": changes.updated[account_id],
                    "triggeredBy": triggered_by,
                }
                event_ids.append(self._emit("transactions/updated", fields, item=item))
        for account_id in meta.account_ids:
            if changes.deleted.get(account_id):
                fields = {
                    "id": item["id"],
                    "itemId": item["id"],
                    "accountId": account_id,
                    "transactionIds": changes.deleted[account_id],
                }
                event_ids.append(self._emit("transactions/deleted", fields, item=item))
        return event_ids

    def _emit_created(self, item: JsonDict, account_id: str, stamp: str, triggered_by: str) -> str:
        query = urlencode({"accountId": account_id, "createdAtFrom": stamp})
        fields = {
            "id": item["id"],
            "itemId": item["id"],
            "accountId": account_id,
            "transactionsCreatedAtFrom": stamp,
            "createdTransactionsLink": f"{self.base_url}/v2/transactions?{query}",
            "triggeredBy": triggered_by,
        }
        return self._emit("transactions/created", fields, item=item)

    def remove_transactions(self, account_id: str, tx_ids: Sequence[str]) -> None:
        """Delete rows at Pluggy without any webhook: the test then delivers (or loses) the notice itself."""
        with self.lock:
            for tx_id in tx_ids:
                self._remove_tx(account_id, tx_id)

    def _remove_tx(self, account_id: str, tx_id: str) -> JsonDict:
        row = self._transactions[account_id].pop(tx_id)
        self._tx_account.pop(tx_id, None)
        self._hidden_tx.discard(tx_id)
        self._deleted_tx[account_id].append(tx_id)
        self._order.pop(account_id, None)
        return row

    def _change_tx(self, meta: _ItemMeta, row: JsonDict, stamp: str) -> None:
        """An update Pluggy reports as transactions/updated: a pending row posts, or it is recategorized."""
        if row["status"] == "PENDING":
            row["status"] = "POSTED"
        else:
            choices = [c for c in ROW_CATEGORY_IDS if c != row["categoryId"]]
            self._set_category(row, meta.rng.choice(choices))
        row["updatedAt"] = stamp

    def _restated_copy(self, meta: _ItemMeta, old: JsonDict, stamp: str) -> JsonDict:
        """Same purchase, slightly different text, new id: what an unstable card id looks like."""
        new = copy.deepcopy(old)
        new["id"] = rng_uuid(meta.rng)
        raw = str(old["descriptionRaw"] or old["description"])
        new["descriptionRaw"] = raw.replace("*", " ") if "*" in raw else f"{raw} BR"
        text = str(old["description"])
        new["description"] = text.upper() if text.upper() != text else text.title()
        new["providerCode"] = f"{meta.rng.randint(0, 999999):06d}"
        new["status"] = "POSTED"
        new["createdAt"] = stamp
        new["updatedAt"] = stamp
        return new

    # ==============================================================================================
    # Accounts and transactions (read side)

    def list_accounts(self, item_id: str, account_type: str | None, key: KeyInfo) -> JsonDict:
        with self.lock:
            self._check_item_scope(item_id, key)
            if item_id not in self._items:
                raise item_not_found()
            results = [
                copy.deepcopy(self._accounts[a])
                for a in self._meta[item_id].account_ids
                if a not in self._hidden_accounts
                and (account_type is None or self._accounts[a]["type"] == account_type)
            ]
        return {"page": 1, "total": len(results), "totalPages": 1, "results": results}

    def get_account(self, account_id: str) -> JsonDict:
        with self.lock:
            return copy.deepcopy(self._visible_account(account_id))

    def _visible_account(self, account_id: str) -> JsonDict:
        """The account as Pluggy shows it now; 404 when unknown or still being collected (timed mode)."""
        account = self._accounts.get(account_id)
        if account is None or account_id in self._hidden_accounts:
            raise PluggyApiError(404, "account not found", "ACCOUNT_NOT_FOUND")
        return account

    def get_transaction(self, tx_id: str) -> JsonDict:
        with self.lock:
            return copy.deepcopy(self._require_transaction(tx_id))

    def _require_transaction(self, tx_id: str) -> JsonDict:
        account_id = self._tx_account.get(tx_id)
        if account_id is None or tx_id in self._hidden_tx:
            raise PluggyApiError(404, "transaction not found", "TRANSACTION_NOT_FOUND")
        return self._transactions[account_id][tx_id]

    def update_transaction_category(self, tx_id: str, body: Any) -> JsonDict:
        """`PATCH /transactions/{id}` `{categoryId}`: the user's category; answers the updated transaction.

        No webhook: Pluggy documents none for this change (section 19).
        """
        category_id = body.get("categoryId") if isinstance(body, dict) else None
        if not isinstance(category_id, str) or not category_id:
            raise PluggyApiError(400, "categoryId is required")
        with self.lock:
            row = self._require_transaction(tx_id)
            try:
                description = description_of(category_id)
            except KeyError:
                raise PluggyApiError(400, f"categoryId {category_id} is not a valid category") from None
            row["categoryId"] = category_id
            row["category"] = description
            row["updatedAt"] = iso_from_ms(self._clock.now_ms())
            return copy.deepcopy(row)

    def list_account_statements(self, account_id: str) -> JsonDict:
        """`GET /accounts/{id}/statements`: the sandbox produces none (an empty page for a known account)."""
        with self.lock:
            self._visible_account(account_id)
        return {"page": 1, "total": 0, "totalPages": 1, "results": []}

    def legacy_transactions_served(self) -> bool:
        """Whether the emulator's clock is still on or before the legacy endpoint's last day (Sao Paulo)."""
        today = datetime.fromtimestamp((self._clock.wall_ms() - BRT_OFFSET_MS) // 1000, tz=UTC).date()
        return today.isoformat() <= LEGACY_TRANSACTIONS_LAST_DAY

    def list_transactions_legacy(self, query: Mapping[str, list[str]], key: KeyInfo) -> JsonDict:
        """Deprecated `GET /transactions` (section 4): page-numbered, newest first.

        accountId (required); from/to (yyyy-mm-dd); page (from 1); pageSize (1-500, default 20); ids (at
        most 500, comma-separated or repeated; then from/to are ignored); billId; createdAtFrom.
        """

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        account_id = one("accountId")
        if not account_id:
            raise PluggyApiError(400, "accountId is required", "ACCOUNT_ID_REQUIRED")
        page = self._positive_int(one("page"), "page", 1)
        page_size = self._positive_int(one("pageSize"), "pageSize", LEGACY_DEFAULT_PAGE_SIZE)
        if page_size > MAX_PAGE_SIZE:
            raise PluggyApiError(400, f"pageSize must be at most {MAX_PAGE_SIZE}")
        # The same filters as /v2/transactions (from/to may be ISO date-times: their day counts), except that
        # here from and createdAtFrom may be combined.
        v2_query = {"accountId": [account_id], "ids": list(query.get("ids", []))}
        for legacy, v2 in (("from", "dateFrom"), ("to", "dateTo")):
            value = one(legacy)
            if value is not None:
                v2_query[v2] = [value[:10]]
        request = self.parse_v2_query(v2_query)
        created_raw = one("createdAtFrom")
        if created_raw is not None:
            try:
                request.created_at_from = iso_from_ms(parse_iso_ms(created_raw))
            except ValueError:
                raise PluggyApiError(400, "createdAtFrom must be an ISO 8601 date-time") from None
        bill_id = one("billId")
        with self.lock:
            account = self._visible_account(account_id)
            self._check_item_scope(account["itemId"], key)
            _, ids = self._sorted(account_id)
            rows = self._transactions[account_id]
            matching = [
                rows[tx_id]
                for tx_id in ids
                if self._matches(rows[tx_id], request)
                and (bill_id is None or (rows[tx_id]["creditCardMetadata"] or {}).get("billId") == bill_id)
            ]
            chunk = [copy.deepcopy(r) for r in matching[(page - 1) * page_size : page * page_size]]
        total_pages = max(1, -(-len(matching) // page_size))
        return {"total": len(matching), "totalPages": total_pages, "page": page, "results": chunk}

    @staticmethod
    def _positive_int(value: str | None, name: str, default: int) -> int:
        if value is None:
            return default
        if not value.isdigit() or int(value) < 1:
            raise PluggyApiError(400, f"{name} must be a positive integer")
        return int(value)

    def _check_item_scope(self, item_id: str, key: KeyInfo) -> None:
        if key.kind == "connect" and item_id not in key.item_ids:
            raise PluggyApiError(403, "This connect token cannot access this item")

    def check_item_access(self, item_id: str, key: KeyInfo) -> None:
        self._check_item_scope(item_id, key)

    @staticmethod
    def _encode_cursor(key: tuple[int, str]) -> str:
        return base64.b64encode(json.dumps({"d": key[0], "i": key[1]}, separators=(",", ":")).encode()).decode()

    @staticmethod
    def _decode_cursor(cursor: str) -> tuple[int, str]:
        try:
            # A "+" that was not URL-encoded arrives as a space.
            data = json.loads(base64.b64decode(cursor.replace(" ", "+"), validate=True))
            if not isinstance(data, dict) or set(data) != {"d", "i"}:
                raise ValueError("bad cursor")
            sort_date, tx_id = data["d"], data["i"]
            if isinstance(sort_date, bool) or not isinstance(sort_date, int) or not isinstance(tx_id, str):
                raise ValueError("bad cursor")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise PluggyApiError(400, "Invalid cursor") from None
        return sort_date, tx_id

    def _sorted(self, account_id: str) -> tuple[list[tuple[int, str]], list[str]]:
        """(sort keys, ids) of the visible rows: newest date first, then id; cached until the rows change."""
        cached = self._order.get(account_id)
        if cached is None:
            hidden = self._hidden_tx
            keys = sorted(
                (-parse_iso_ms(row["date"]), row["id"])
                for row in self._transactions[account_id].values()
                if row["id"] not in hidden
            )
            cached = (keys, [k[1] for k in keys])
            self._order[account_id] = cached
        return cached

    @staticmethod
    def parse_v2_query(query: Mapping[str, list[str]]) -> _PageRequest:
        """Validate `GET /v2/transactions` parameters (errors are Pluggy-style 400s)."""

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        account_id = one("accountId")
        if not account_id:
            raise PluggyApiError(400, "accountId is required", "ACCOUNT_ID_REQUIRED")
        raw: dict[str, str] = {"accountId": account_id}
        date_from, date_to = one("dateFrom"), one("dateTo")
        for name, value in (("dateFrom", date_from), ("dateTo", date_to)):
            if value is not None:
                try:
                    datetime.strptime(value, "%Y-%m-%d")  # a plain calendar date: no timezone
                except ValueError:
                    raise PluggyApiError(400, f"{name} must be a date (yyyy-mm-dd)") from None
                raw[name] = value
        created_raw = one("createdAtFrom")
        created_at_from: str | None = None
        if created_raw is not None:
            if date_from is not None:
                raise PluggyApiError(400, "createdAtFrom cannot be combined with dateFrom")
            try:
                created_at_from = iso_from_ms(parse_iso_ms(created_raw))
            except ValueError:
                raise PluggyApiError(400, "createdAtFrom must be an ISO 8601 date-time") from None
            raw["createdAtFrom"] = created_raw
        ids: set[str] | None = None
        ids_raw = [v for value in query.get("ids", []) for v in value.split(",") if v.strip()]
        if ids_raw:
            if len(ids_raw) > MAX_IDS:
                raise PluggyApiError(
                    400, f"ids parameter exceeds the maximum of {MAX_IDS} ids", "IDS_PARAMETER_EXCEEDS_MAX_LENGTH"
                )
            ids = {v.strip() for v in ids_raw}
            raw["ids"] = ",".join(v.strip() for v in ids_raw)
        after_raw = one("after")
        after = EmulatorState._decode_cursor(after_raw) if after_raw is not None else None
        return _PageRequest(account_id, date_from, date_to, created_at_from, ids, after, raw)

    def list_transactions_v2(self, query: Mapping[str, list[str]], key: KeyInfo) -> JsonDict:
        request = self.parse_v2_query(query)
        with self.lock:
            account = self._visible_account(request.account_id)
            self._check_item_scope(account["itemId"], key)
            keys, ids = self._sorted(request.account_id)
            rows = self._transactions[request.account_id]
            start = bisect_right(keys, request.after) if request.after is not None else 0
            results: list[JsonDict] = []
            last: tuple[int, str] | None = None
            more = False
            for index in range(start, len(ids)):
                row = rows[ids[index]]
                if not self._matches(row, request):
                    continue
                if len(results) == self.page_size:
                    more = True
                    break
                results.append(copy.deepcopy(row))
                last = keys[index]
        next_query: str | None = None
        if more and last is not None:
            next_query = "?" + urlencode({**request.raw, "after": self._encode_cursor(last)})
        return {"results": results, "next": next_query}

    @staticmethod
    def _matches(row: JsonDict, request: _PageRequest) -> bool:
        if request.ids is not None:
            # As documented for the legacy endpoint: with ids, the date filters are ignored.
            if row["id"] not in request.ids:
                return False
        else:
            day = str(row["date"])[:10]
            if request.date_from is not None and day < request.date_from:
                return False
            if request.date_to is not None and day > request.date_to:
                return False
        # Same fixed-width format on both sides, so string order is time order.
        return request.created_at_from is None or str(row["createdAt"]) >= request.created_at_from

    # ==============================================================================================
    # Connectors

    def list_connectors(self, query: Mapping[str, list[str]] | None = None) -> JsonDict:
        """`GET /connectors`: sandbox connectors only with `sandbox=true` (section 9), other filters applied."""
        with self.lock:
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

    def required_credentials(self, connector_id: int) -> list[str]:
        """The credential names a connector needs at login (404 for an unknown connector)."""
        with self.lock:
            connector = self._connectors.get(connector_id)
            if connector is None:
                raise connector_not_found()
            return [str(c["name"]) for c in connector["credentials"] if not c.get("optional")]

    def get_connector(self, connector_id: str) -> JsonDict:
        with self.lock:
            connector = self._connectors.get(int(connector_id)) if connector_id.isdigit() else None
            if connector is None:
                raise connector_not_found()
            return copy.deepcopy(connector)

    def set_connector_status(self, status: str, connector_id: int = SANDBOX_CONNECTOR_ID) -> str:
        """Change a connector's health; sends connector/status_updated shaped as in seed 003."""
        if status not in CONNECTOR_STATUSES:
            raise ValueError(f"status must be one of {sorted(CONNECTOR_STATUSES)}")
        with self.lock:
            connector = self._connectors.get(connector_id)
            if connector is None:
                raise connector_not_found()
            connector["health"]["status"] = status
            fields = {"id": str(connector_id), "connectorId": str(connector_id), "data": {"status": status}}
            # Seed 003's example has no eventId: the deprecated `id` carries the connector id instead.
            return self._emit("connector/status_updated", fields, with_event_id=False)

    # ==============================================================================================
    # Payments (the resources live in payments.py)

    def send_payment_event(
        self,
        event: str,
        *,
        payment_request_id: str | None = None,
        payment_intent_id: str | None = None,
        bulk_payment_id: str | None = None,
        scheduled_payment_id: str | None = None,
        error: Mapping[str, Any] | None = None,
        status: str | None = None,
        end_to_end_id: str | None = None,
        scheduled_date: str | None = None,
    ) -> str:
        """A payment_intent/*, scheduled_payment/* or payment_request/updated event Pluggy really sends.

        The resources it names are created or moved first (see payments.py), so the payments API agrees
        with the event; missing ids are generated. `status` is payment_request/updated's `data.status`.
        """
        with self.lock:
            fields = self._payments.record_event(
                event,
                payment_request_id=payment_request_id,
                payment_intent_id=payment_intent_id,
                bulk_payment_id=bulk_payment_id,
                scheduled_payment_id=scheduled_payment_id,
                error=error,
                status=status,
                end_to_end_id=end_to_end_id,
                scheduled_date=scheduled_date,
            )
            # The deprecated `id` (typed as required by the SDK): the most specific resource the event names.
            entity = fields.get("paymentIntentId") or fields.get("scheduledPaymentId") or fields.get("paymentRequestId")
            return self._emit(event, {"id": entity, **fields} if entity else fields)

    def create_payment_request(
        self,
        *,
        payment_request_id: str | None = None,
        amount: float | None = DEFAULT_AMOUNT,
        description: str = DEFAULT_DESCRIPTION,
        client_payment_id: str | None = None,
        schedule: Mapping[str, Any] | None = None,
    ) -> JsonDict:
        with self.lock:
            return self._payments.create_request(
                request_id=payment_request_id,
                amount=amount,
                description=description,
                client_payment_id=client_payment_id,
                schedule=schedule,
            )

    def get_payment_request(self, request_id: str) -> JsonDict:
        with self.lock:
            return self._payments.get_request(request_id)

    def list_payment_requests(self, query: Mapping[str, list[str]]) -> JsonDict:
        with self.lock:
            return self._payments.list_requests(query)

    def get_payment_intent(self, intent_id: str) -> JsonDict:
        with self.lock:
            return self._payments.get_intent(intent_id)

    def list_payment_intents(self, query: Mapping[str, list[str]]) -> JsonDict:
        with self.lock:
            return self._payments.list_intents(query)

    def list_payment_schedules(self, request_id: str) -> JsonDict:
        with self.lock:
            return self._payments.list_schedules(request_id)

    def get_payment_schedule(self, request_id: str, schedule_id: str) -> JsonDict:
        with self.lock:
            return self._payments.get_schedule(request_id, schedule_id)

    # ==============================================================================================
    # Webhooks resource

    def validate_webhook_url(self, url: Any) -> str:
        """Pluggy's URL rules (section 21), with loopback URLs allowed when `allow_loopback_webhooks` is on."""
        return check_webhook_url(url, allow_loopback=self.allow_loopback_webhooks)

    @staticmethod
    def _validate_event(event: Any) -> str:
        if event not in WEBHOOK_EVENTS and event != ALL_EVENTS:
            raise PluggyApiError(400, "Invalid event type")  # webhook 400s carry no codeDescription
        return str(event)

    @staticmethod
    def _validate_headers(headers: Any) -> dict[str, str]:
        if headers is None:
            return {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise PluggyApiError(400, "headers must be an object of string values")
        return dict(headers)

    def _check_webhook_slot(self, url: str, event: str, webhook_id: str | None = None) -> None:
        """400 when `event` + `url` is already registered, or `event` already has 5 webhooks (section 21)."""
        others = [w for w in self._webhooks.values() if w["event"] == event and w["id"] != webhook_id]
        if any(w["url"] == url for w in others):
            raise PluggyApiError(400, f"Webhook for event {event} and url {url} already exists")
        if len(others) >= MAX_WEBHOOKS_PER_EVENT:
            raise PluggyApiError(400, f"Reached the limit of {MAX_WEBHOOKS_PER_EVENT} webhooks for event {event}")

    def create_webhook(self, url: Any, event: Any, headers: Any = None) -> JsonDict:
        url = self.validate_webhook_url(url)
        event = self._validate_event(event)
        clean_headers = self._validate_headers(headers)
        with self.lock:
            self._check_webhook_slot(url, event)
            now = iso_from_ms(self._clock.now_ms())
            webhook: JsonDict = {
                "id": str(uuid.uuid4()),
                "url": url,
                "event": event,
                "headers": clean_headers,
                "createdAt": now,
                "updatedAt": now,
                "disabledAt": None,
            }
            self._webhooks[webhook["id"]] = webhook
            return copy.deepcopy(webhook)

    def list_webhooks(self) -> JsonDict:
        with self.lock:
            results = [copy.deepcopy(w) for w in self._webhooks.values()]
        return {"page": 1, "total": len(results), "totalPages": 1, "results": results}

    def _require_webhook(self, webhook_id: str) -> JsonDict:
        webhook = self._webhooks.get(webhook_id)
        if webhook is None:
            raise PluggyApiError(404, "webhook not found", "WEBHOOK_NOT_FOUND")
        return webhook

    def get_webhook(self, webhook_id: str) -> JsonDict:
        with self.lock:
            return copy.deepcopy(self._require_webhook(webhook_id))

    def update_webhook(self, webhook_id: str, body: Mapping[str, Any]) -> JsonDict:
        """PATCH url/event/headers (null clears)/enabled (true clears disabledAt, false sets it)."""
        changes: JsonDict = {}
        if "url" in body:
            changes["url"] = self.validate_webhook_url(body["url"])
        if "event" in body:
            changes["event"] = self._validate_event(body["event"])
        if "headers" in body:
            changes["headers"] = self._validate_headers(body["headers"])
        enabled = body.get("enabled")
        if "enabled" in body and not isinstance(enabled, bool):
            raise PluggyApiError(400, "enabled must be a boolean")
        with self.lock:
            webhook = self._require_webhook(webhook_id)
            url, event = str(changes.get("url", webhook["url"])), str(changes.get("event", webhook["event"]))
            self._check_webhook_slot(url, event, webhook_id)
            now = iso_from_ms(self._clock.now_ms())
            webhook.update(changes)
            if enabled is True:
                webhook["disabledAt"] = None
                self._webhook_failures.pop(webhook_id, None)
            elif enabled is False and webhook["disabledAt"] is None:
                webhook["disabledAt"] = now
            webhook["updatedAt"] = now
            return copy.deepcopy(webhook)

    def delete_webhook(self, webhook_id: str) -> JsonDict:
        with self.lock:
            self._require_webhook(webhook_id)
            del self._webhooks[webhook_id]
            self._webhook_failures.pop(webhook_id, None)
        return {"count": 1}

    def record_delivery_outcome(self, target: DeliveryTarget, ok: bool) -> None:
        """Called by the dispatcher once a notification is final; disables a webhook that keeps failing."""
        if target.webhook_id is None:
            return
        with self.lock:
            webhook = self._webhooks.get(target.webhook_id)
            if webhook is None:
                return
            if ok:
                self._webhook_failures.pop(target.webhook_id, None)
                return
            failures = self._webhook_failures.get(target.webhook_id, 0) + 1
            self._webhook_failures[target.webhook_id] = failures
            if self._disable_after is not None and failures >= self._disable_after and webhook["disabledAt"] is None:
                now = iso_from_ms(self._clock.now_ms())
                webhook["disabledAt"] = now
                webhook["updatedAt"] = now

    # ==============================================================================================
    # Ground truth

    def truth(self) -> JsonDict:
        """Everything a faithful copy should hold, for field-by-field comparison: what Pluggy shows now.

        In timed mode accounts and rows a sync has collected but not yet made visible are left out.
        """
        with self.lock:
            accounts = {a: v for a, v in self._accounts.items() if a not in self._hidden_accounts}
            transactions = {}
            for account_id in accounts:
                _, ids = self._sorted(account_id)
                rows = self._transactions[account_id]
                transactions[account_id] = {tx_id: copy.deepcopy(rows[tx_id]) for tx_id in ids}
            return {
                "clientId": self.client_id,
                "items": copy.deepcopy(self._items),
                "accounts": copy.deepcopy(accounts),
                "transactions": transactions,
                "deletedItemIds": list(self._deleted_items),
                "deletedAccountIds": list(self._deleted_accounts),
                "deletedTransactionIds": {a: list(ids) for a, ids in self._deleted_tx.items() if a in accounts},
                "webhooks": [copy.deepcopy(w) for w in self._webhooks.values()],
                "connectors": [copy.deepcopy(c) for c in self._connectors.values()],
                "payments": self._payments.truth(),
            }
