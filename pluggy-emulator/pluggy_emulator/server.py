"""The HTTP face of the emulator: Pluggy's API routes, the `/_emulator/` control routes, and `PluggyEmulator`.

Standard library `ThreadingHTTPServer` with HTTP/1.1 keep-alive. `stop()` shuts open connections down so
every request thread can be joined: nothing is left running after a test.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from pluggy_emulator.categories import get_category, list_categories
from pluggy_emulator.common import JsonDict, PluggyApiError, iso_from_ms
from pluggy_emulator.connectors import MFA_PARAMETER, SANDBOX_CONNECTOR_ID
from pluggy_emulator.payments import DEFAULT_AMOUNT, DEFAULT_DESCRIPTION, PaymentEvent
from pluggy_emulator.rate_limits import RateLimiter, RateLimits, resolve_limits
from pluggy_emulator.state import LEGACY_TRANSACTIONS_LAST_DAY, EmulatorState, KeyInfo
from pluggy_emulator.timeline import SyncTiming
from pluggy_emulator.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)

FaultKind = Literal["500", "429", "delay", "drop"]
TriggeredBy = Literal["USER", "CLIENT", "SYNC", "INTERNAL"]
RATE_LIMIT_BODY: JsonDict = {
    "message": "Too many requests. Please try again later (see Retry-After header in seconds)",
    "code": 429,
}
LEGACY_TRANSACTIONS_MESSAGE = (
    f"GET /transactions was removed after {LEGACY_TRANSACTIONS_LAST_DAY}; use GET /v2/transactions (cursor pagination)"
)
# What a connect token may call (pluggy-api.md section 1: its items plus a reduced account list; the widget
# also answers MFA and checks credentials).
CONNECT_TOKEN_ROUTES = frozenset(
    {
        "POST /items",
        "GET /items/{id}",
        "PATCH /items/{id}",
        "POST /items/{id}/mfa",
        "GET /accounts",
        "GET /connectors",
        "GET /connectors/{id}",
        "POST /connectors/{id}/validate",
    }
)
_MAX_BODY = 10 * 1024 * 1024


@dataclass
class _Response:
    status: int
    body: Any = None  # JSON-serialisable; None sends an empty body
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Request:
    params: dict[str, str]
    query: dict[str, list[str]]
    body: Any
    key: KeyInfo | None


@dataclass
class _Fault:
    route: str
    kind: FaultKind
    remaining: int
    delay_seconds: float
    retry_after_seconds: int


_DROP = object()  # sentinel: close the socket without answering


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{pattern}$")


def _object(body: Any, *, required: bool = True) -> JsonDict:
    if body is None and not required:
        return {}
    if not isinstance(body, dict):
        raise PluggyApiError(400, "request body must be a JSON object")
    return body


# --- control request bodies (camelCase on the wire, like the API) ----------------------------------


class _ControlModel(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class _CreateItemBody(_ControlModel):
    client_user_id: str | None = None
    username: str = "user-ok"
    transactions_per_account: int | None = Field(default=None, ge=0)
    webhook_url: str | None = None
    triggered_by: TriggeredBy = "USER"
    connector_id: int = SANDBOX_CONNECTOR_ID
    mfa_token: str | None = None
    products: list[str] | None = None


class _SyncBody(_ControlModel):
    add: int = Field(default=0, ge=0)
    change: int = Field(default=0, ge=0)
    delete: int = Field(default=0, ge=0)
    restate_credit_card: int = Field(default=0, ge=0)
    new_account: bool = False
    triggered_by: TriggeredBy = "SYNC"
    products_change: bool = False
    remove_investment: bool = False
    resources_pending: bool | None = None


class _FailBody(_ControlModel):
    code: str = "INVALID_CREDENTIALS"
    message: str | None = None
    triggered_by: TriggeredBy = "SYNC"


class _TriggerBody(_ControlModel):
    triggered_by: TriggeredBy | None = None


class _UserActionBody(_ControlModel):
    granted: bool = True


class _ConnectorStatusBody(_ControlModel):
    status: Literal["ONLINE", "UNSTABLE", "OFFLINE"]


class _PaymentEventBody(_ControlModel):
    event: str
    payment_request_id: str | None = None
    payment_intent_id: str | None = None
    bulk_payment_id: str | None = None
    scheduled_payment_id: str | None = None
    error: dict[str, Any] | None = None
    status: str | None = None
    end_to_end_id: str | None = None
    scheduled_date: str | None = None


class _PaymentRequestBody(_ControlModel):
    id: str | None = None
    amount: float | None = DEFAULT_AMOUNT
    description: str = DEFAULT_DESCRIPTION
    client_payment_id: str | None = None
    schedule: dict[str, Any] | None = None


class _SendEventBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # every other field goes into the payload as is
    event: str


class _WebhookBody(_ControlModel):
    url: str
    event: str = "all"
    headers: dict[str, str] | None = None


class _FaultBody(_ControlModel):
    route: str
    kind: FaultKind
    count: int = Field(default=1, ge=1)
    delay_seconds: float = Field(default=6.0, ge=0)
    retry_after_seconds: int = Field(default=1, ge=0)


class _WaitBody(_ControlModel):
    timeout: float = Field(default=10.0, ge=0)


class _SettleBody(_ControlModel):
    timeout: float = Field(default=30.0, ge=0)


class _AdvanceBody(_ControlModel):
    seconds: float = Field(ge=0)


class _UseUpBody(_ControlModel):
    route: str
    leave: int = Field(default=0, ge=0)


class _RouteBody(_ControlModel):
    route: str | None = None


# --- HTTP plumbing ---------------------------------------------------------------------------------


class _EmulatorHTTPServer(ThreadingHTTPServer):
    # Non-daemon request threads + block_on_close: server_close() joins every one of them.
    daemon_threads = False
    block_on_close = True
    # socketserver's listen backlog is 5: a burst of concurrent clients would see connections dropped or reset.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: PluggyEmulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # Headers and body leave in separate writes; without NODELAY, Nagle + delayed ACK add ~40 ms each.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_lock:
            self._connections.add(sock)
        return sock, address

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        with self._connections_lock:
            self._connections.discard(cast(socket.socket, request))
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake request threads blocked on idle keep-alive connections so they can end."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        # A client that timed out and hung up is normal here (fault injection does it on purpose).
        logger.debug("request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PluggyEmulator/1.0"
    timeout = 120  # an idle keep-alive connection is closed after this many seconds

    def _emulator(self) -> PluggyEmulator:
        return cast(_EmulatorHTTPServer, self.server).emulator

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._send(_Response(413, {"code": 413, "message": "Request body too large"}))
            self.close_connection = True
            return
        raw = self.rfile.read(length) if length > 0 else b""
        result = self._emulator().handle_http(method, self.path, self.headers, raw)
        if result is _DROP:
            self.close_connection = True  # no status line, no headers: the client sees a dropped connection
            return
        self._send(cast(_Response, result))

    def _send(self, response: _Response) -> None:
        payload = b"" if response.body is None else json.dumps(response.body, ensure_ascii=False).encode()
        try:
            self.send_response(response.status)
            if response.body is not None:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout fired during a delay fault)


# --- the emulator ----------------------------------------------------------------------------------

_ApiFunc = Callable[[_Request], _Response]
_ControlFunc = Callable[[dict[str, str], Any], _Response]


class PluggyEmulator:
    """A local Pluggy API + webhook sender, driven by Python methods or `/_emulator/` routes."""

    def __init__(
        self,
        client_id: str = "emulator-client-id",
        client_secret: str = "emulator-client-secret",  # noqa: S107 - the emulator's well-known default
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        api_key_ttl_seconds: float = 7200,
        time_scale: float = 1.0,
        page_size: int = 500,
        signing_key: str | bytes | None = None,
        rate_limit_per_minute: RateLimits = "auto",
        rate_limit_window_seconds: float = 60.0,
        webhook_timeout_seconds: float = 5.0,
        disable_webhook_after_failures: int | None = 10,
        allow_loopback_webhooks: bool = True,
        clock: Callable[[], float] | None = None,
        deliver_webhooks: bool = True,
        timed: bool = False,
        sync_timing: SyncTiming | None = None,
    ) -> None:
        """`allow_loopback_webhooks` (on by default, for tests and the local stack): webhook URLs on this
        machine's loopback may use http and any port; off, every webhook URL follows Pluggy's rules
        (DELIBERATE_DIFFERENCES "loopback-webhooks"). `clock` (seconds since the epoch, default the wall
        clock) is the emulator's "now" for resource timestamps and dated rules such as the legacy
        /transactions sunset. `deliver_webhooks=False` records events (see `events()`) without sending
        them anywhere: for suites that register public https URLs but may not leave 127.0.0.1.

        `timed=True` (or a `sync_timing`, default `SyncTiming()`) runs syncs like Pluggy, in the background
        over emulator time: the clock starts at `clock()` (or now) and runs 1 / `time_scale` emulator seconds
        per wall second (timeline.py). `rate_limit_per_minute`: "auto" (the default) is off in instant mode
        and Pluggy's per-endpoint limits in timed mode, "pluggy" those limits always, None off, an int or a
        {"METHOD /template": limit, "*": default} mapping your own; in timed mode the window is measured in
        emulator seconds."""
        self.host = host
        self.port = port
        self.time_scale = time_scale
        if sync_timing is None and timed:
            sync_timing = SyncTiming()
        self.sync_timing = sync_timing
        if sync_timing is not None and time_scale <= 0:
            raise ValueError("timed mode needs time_scale > 0 (emulator seconds -> wall seconds)")
        key = signing_key.encode() if isinstance(signing_key, str) else signing_key
        self._dispatcher = WebhookDispatcher(
            signing_key=key,
            time_scale=time_scale,
            timeout_seconds=webhook_timeout_seconds,
        )
        self._state = EmulatorState(
            client_id=client_id,
            client_secret=client_secret,
            notify=self._dispatcher.enqueue if deliver_webhooks else lambda notification: None,
            seed=seed,
            page_size=page_size,
            api_key_ttl_seconds=api_key_ttl_seconds,
            disable_webhook_after_failures=disable_webhook_after_failures,
            allow_loopback_webhooks=allow_loopback_webhooks,
            clock=clock,
            sync_timing=sync_timing,
            time_scale=time_scale,
        )
        # Final delivery outcomes feed the webhook's failure count (and maybe its disabledAt).
        self._dispatcher.on_final = self._state.webhooks.record_delivery_outcome
        self._rate_limiter = RateLimiter(
            resolve_limits(rate_limit_per_minute, timed=self.timed),
            window_seconds=rate_limit_window_seconds,
            now=(lambda: self._state.clock.wall_ms() / 1000) if self.timed else time.monotonic,
            lock=self._state.lock,
            wall_seconds=time_scale if self.timed and time_scale != 1 else None,
        )
        self._rate_counters = self._rate_limiter.counters  # route -> (window start, calls counted)
        self._stats: dict[str, int] = {}
        self._faults: list[_Fault] = []
        self._stopping = threading.Event()
        self._server: _EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None
        self._api_routes: list[tuple[str, str, re.Pattern[str], _ApiFunc]] = []
        self._control_routes: list[tuple[str, re.Pattern[str], _ControlFunc]] = []
        self._build_routes()

    @property
    def allow_loopback_webhooks(self) -> bool:
        return self._state.allow_loopback_webhooks

    @property
    def timed(self) -> bool:
        """Whether syncs run over emulator time (timed mode) rather than inside the request."""
        return self.sync_timing is not None

    @property
    def rate_limits(self) -> int | dict[str, int] | None:
        """The limits in force: per route ("METHOD /template", "*" for the rest), one for all, or None."""
        limits = self._rate_limiter.limits
        return dict(limits) if isinstance(limits, dict) else limits

    def __repr__(self) -> str:  # never shows the client secret
        return f"PluggyEmulator(base_url={self._base_url!r}, client_id={self.client_id!r})"

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._state.client_id

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._base_url

    def start(self) -> str:
        """Bind (port 0 = ephemeral), start serving and delivering; returns the base URL."""
        if self._server is not None:
            return self.base_url
        self._stopping.clear()
        self._server = _EmulatorHTTPServer((self.host, self.port), self)
        port = int(self._server.server_address[1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._base_url = f"http://{host}:{port}"
        self._state.base_url = self._base_url
        self._dispatcher.start()
        self._state.scheduler.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="pluggy-emulator-http"
        )
        self._thread.start()
        return self._base_url

    def stop(self) -> None:
        """Stop serving and delivering; joins every thread and closes every socket."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # ends any injected delay at once
        server.shutdown()
        server.close_connections()
        server.server_close()  # joins the request threads
        if thread is not None:
            thread.join()
        self._state.scheduler.stop()
        self._dispatcher.stop()
        self._server = None
        self._thread = None

    def __enter__(self) -> PluggyEmulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- control API (Python) --------------------------------------------------------------------

    def issue_api_key(self) -> str:
        """An API key as `POST /auth` would return (for tools that skip the HTTP call)."""
        return self._state.keys.issue_own_api_key()

    def create_webhook(self, url: str, event: str = "all", headers: Mapping[str, str] | None = None) -> JsonDict:
        """Register a Webhook resource, like `POST /webhooks`."""
        return self._state.webhooks.create_webhook(url, event, dict(headers) if headers is not None else None)

    def create_item(
        self,
        client_user_id: str | None = None,
        username: str = "user-ok",
        *,
        transactions_per_account: int | None = None,
        webhook_url: str | None = None,
        triggered_by: str = "USER",
        connector_id: int = SANDBOX_CONNECTOR_ID,
        mfa_token: str | None = None,
        products: Sequence[str] | None = None,
    ) -> JsonDict:
        """Connect a sandbox item and run its first sync; returns the item as `GET /items/{id}` shows it.

        `products` (default: all the connector's) is what the item requests: its bills, investments, loans,
        identity and consent are generated for those when a sync succeeds, and `statusDetail` names them.

        `connector_id` 1 (MFA 1-step) takes `mfa_token`; 2 (MFA 2-step) leaves the item WAITING_USER_INPUT
        until `submit_mfa`; 3 (app authorization) leaves it WAITING_USER_ACTION until `complete_user_action`.
        Username `user-authorization-pending` ends the sync USER_AUTHORIZATION_PENDING until the device is
        authorized (`complete_user_action`, or in timed mode `SyncTiming.authorization_delay` later). In timed
        mode the sync has only started (UPDATING, CREATING): `wait_for_item`.
        """
        _, item = self._state.items.create_item(
            username=username,
            client_user_id=client_user_id,
            webhook_url=webhook_url,
            transactions_per_account=transactions_per_account,
            triggered_by=triggered_by,
            connector_id=connector_id,
            mfa_token=mfa_token,
            products=list(products) if products is not None else None,
        )
        return item

    def submit_mfa(self, item_id: str, token: str) -> JsonDict:
        """`POST /items/{id}/mfa` for an item WAITING_USER_INPUT; returns the item as that call answers."""
        return self._state.items.submit_mfa(item_id, {MFA_PARAMETER: token})

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
        """A sync that found changes; returns {item, created, updated, deleted, restated, eventIds...}.

        `resources_pending` (Open Finance items): after this sync the item says `hasResourcesPendingAuthorization`
        true (some consented resources await the holder's authorization at the institution) or false again.

        Products change too when asked (they land when the sync succeeds, in timed mode at its end):
        `products_change=True` moves every investment's balance (the first one by a new BUY transaction), pays
        one more loan installment and changes the identity's phone (its `updatedAt` moves);
        `remove_investment=True` removes the item's newest investment with its transactions (listed in
        `truth()["deletedInvestmentIds"]`; ValueError when none is left). Credit-card bills follow the card's
        rows at every successful sync: a month becomes a bill once its closing day (the 5th) has passed by the
        emulator's clock, and is paid in full once due.

        In timed mode the rows are picked now and the sync runs in the background: the answer is {itemId,
        item (UPDATING), pending: true}; `last_sync(item_id)` tells what it did. ValueError while the item's
        previous sync is still running.
        """
        return self._state.items.sync_item(
            item_id,
            add=add,
            change=change,
            delete=delete,
            restate_credit_card=restate_credit_card,
            new_account=new_account,
            triggered_by=triggered_by,
            products_change=products_change,
            remove_investment=remove_investment,
            resources_pending=resources_pending,
        )

    def fail_item(
        self,
        item_id: str,
        code: str = "INVALID_CREDENTIALS",
        *,
        message: str | None = None,
        triggered_by: str = "SYNC",
    ) -> str:
        """The item's run fails with `code` (item/error); returns the eventId."""
        return self._state.items.fail_item(item_id, code, message=message, triggered_by=triggered_by)

    def set_waiting_user_input(self, item_id: str, *, triggered_by: str = "USER") -> str:
        """The item waits for MFA (item/waiting_user_input); returns the eventId."""
        return self._state.items.set_waiting_user_input(item_id, triggered_by=triggered_by)

    def set_waiting_user_action(self, item_id: str, *, triggered_by: str = "USER") -> str:
        """The item waits for an action at the bank (WAITING_USER_ACTION, item/waiting_user_action); returns
        the eventId. `complete_user_action` ends the wait."""
        return self._state.items.set_waiting_user_action(item_id, triggered_by=triggered_by)

    def complete_user_action(self, item_id: str, *, granted: bool = True) -> JsonDict:
        """The account holder acts at the bank (no Pluggy API call does this); returns the item.

        For an item WAITING_USER_ACTION (connector 3, or `set_waiting_user_action`): granted, its sync goes
        on and finishes (item/created or item/updated); refused, LOGIN_ERROR / USER_AUTHORIZATION_NOT_GRANTED
        (item/error). For an item whose latest sync ended USER_AUTHORIZATION_PENDING (username
        `user-authorization-pending`): granted, Pluggy's own sync (triggeredBy SYNC) starts now, in timed mode
        ahead of `SyncTiming.authorization_delay`; refused, USER_AUTHORIZATION_NOT_GRANTED (item/error).
        ValueError for an item that waits for neither. In timed mode the sync runs in the background.
        """
        return self._state.items.complete_user_action(item_id, granted=granted)

    def reconnect_item(self, item_id: str, *, triggered_by: str = "USER") -> JsonDict:
        """The user fixed the connection: a successful run again (item/updated); returns the item."""
        return self._state.items.reconnect_item(item_id, triggered_by=triggered_by)

    def delete_item(self, item_id: str, *, triggered_by: str = "CLIENT") -> str:
        """Delete the item and its data (item/deleted); returns the eventId."""
        return self._state.items.delete_item(item_id, triggered_by=triggered_by)

    def remove_transactions(self, account_id: str, tx_ids: Sequence[str]) -> None:
        """Delete transactions at Pluggy without a webhook (the test sends or loses the notice itself)."""
        self._state.changes.remove_transactions(account_id, tx_ids)

    def set_connector_status(self, status: str, connector_id: int = SANDBOX_CONNECTOR_ID) -> str:
        """ONLINE/UNSTABLE/OFFLINE (connector/status_updated, no eventId in the payload); returns the id."""
        return self._state.connectors.set_connector_status(status, connector_id)

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
        """A payment_intent/*, scheduled_payment/* or payment_request/updated event; returns the eventId.

        Genuine: the payment request, intent or schedule it names is created or moved first, so
        `GET /payments/...` agrees with the event (statuses only move forward; a late event changes
        nothing). `status` is payment_request/updated's `data.status`. To forge an event Pluggy never
        sent, use `send_event`.
        """
        sent = PaymentEvent(
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
        return self._state.payments.send_event(sent)

    def create_payment_request(
        self,
        payment_request_id: str | None = None,
        *,
        amount: float | None = DEFAULT_AMOUNT,
        description: str = DEFAULT_DESCRIPTION,
        client_payment_id: str | None = None,
        schedule: Mapping[str, Any] | None = None,
    ) -> JsonDict:
        """A PaymentRequest in CREATED, as `POST /payments/requests` makes it (no webhook); returns it.

        `schedule` (e.g. {"type": "MONTHLY", ...}) makes payment_intent/completed leave it SCHEDULED.
        """
        return self._state.payments.create_payment_request(
            payment_request_id=payment_request_id,
            amount=amount,
            description=description,
            client_payment_id=client_payment_id,
            schedule=schedule,
        )

    def send_event(self, event: str, **fields: Any) -> str:
        """Deliver any event with the given payload fields (eventId=... reuses one, eventId=None omits it)."""
        return self._state.events.send_event(event, fields)

    def truth(self) -> JsonDict:
        """Items, accounts, transactions by account, deleted ids, webhooks, connectors, payments and the other
        products: what Pluggy shows now.

        Products: `bills` {accountId: {id: bill}}, `investments` {id: investment}, `investmentTransactions`
        {investmentId: {id: row}}, `loans` {id: loan}, `identities` {itemId: identity}, `consents` {id:
        consent}, `deletedInvestmentIds`.

        `payments` is {"requests": {id: request}, "intents": {id: intent},
        "schedules": {request id: {schedule id: schedule}}}. An item waiting for the user shows its wait
        (WAITING_USER_INPUT with `parameter`, WAITING_USER_ACTION with `userAction`); one waiting for a device
        authorization shows its USER_AUTHORIZATION_PENDING error; what a sync has not made visible yet (in
        timed mode) is left out.
        """
        return self._state.truth()

    def events(self) -> list[JsonDict]:
        """Every event emitted so far: {eventId, event, payload, urls, emittedAt}."""
        return self._state.events.events()

    def deliveries(self) -> list[JsonDict]:
        """Every delivery attempt: {eventId, event, url, attempt, statusCode, error, outcome, ...}."""
        return self._dispatcher.deliveries()

    def stats(self) -> dict[str, int]:
        """API requests counted per `METHOD path-template`."""
        with self._state.lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._state.lock:
            self._stats.clear()

    def fault(
        self,
        route: str,
        kind: FaultKind,
        count: int = 1,
        *,
        delay_seconds: float = 6.0,
        retry_after_seconds: int = 1,
    ) -> None:
        """Make the next `count` requests to `route` ("GET /v2/transactions", or "*") fail.

        kind: "500" (error body), "429" (rate-limit body and headers), "delay" (answer normally after
        `delay_seconds`, longer than a client timeout) or "drop" (close the socket without answering).
        """
        templates = {f"{method} {template}" for method, template, _, _ in self._api_routes}
        if route != "*" and route not in templates:
            raise ValueError(f"unknown route {route!r}; use one of {sorted(templates)} or '*'")
        if kind not in ("500", "429", "delay", "drop"):
            raise ValueError("kind must be '500', '429', 'delay' or 'drop'")
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._state.lock:
            self._faults.append(_Fault(route, kind, count, delay_seconds, retry_after_seconds))

    def clear_faults(self) -> None:
        with self._state.lock:
            self._faults.clear()

    def wait_for_deliveries(self, timeout: float = 10.0) -> bool:
        """Block until no delivery is queued, waiting for a retry or in flight; False on timeout.

        In timed mode a sync still running sends more later: `settle` waits for those too.
        """
        return self._dispatcher.wait_idle(timeout)

    def settle(self, timeout: float = 30.0) -> bool:
        """Block until all background work is done: timed syncs (each step, MFA deadlines), late rows and
        every webhook they send, with its retries. False on timeout. Afterwards `truth()` holds still.

        A wait for the user is work in progress until its deadline: an item WAITING_USER_INPUT or
        WAITING_USER_ACTION settles when it is answered or at `expiresAt` (USER_INPUT_TIMEOUT), and a pending
        device authorization when Pluggy's own sync after `authorization_delay` has run. To stop at the wait
        itself, use `wait_for_item`. Instant mode has no timers: its waits last until a call ends them.
        """
        deadline = time.monotonic() + timeout
        scheduler = self._state.scheduler
        while True:
            if not scheduler.wait_idle(deadline - time.monotonic()):
                return False
            if not self._dispatcher.wait_idle(max(0.0, deadline - time.monotonic())):
                return False
            # A delivery's receiver may have started more work (e.g. PATCH /items) meanwhile.
            if scheduler.wait_idle(0) and self._dispatcher.wait_idle(0):
                return True

    def wait_for_item(self, item_id: str, timeout: float = 10.0) -> JsonDict:
        """The item once its sync is no longer running (not UPDATING or MERGING): UPDATED, an error,
        WAITING_USER_INPUT or WAITING_USER_ACTION. TimeoutError if it still runs after `timeout` seconds; 404
        error if unknown."""
        deadline = time.monotonic() + timeout
        while True:
            item = self._state.items.get_item(item_id)
            if item["status"] not in ("UPDATING", "MERGING"):
                return item
            if time.monotonic() >= deadline:
                raise TimeoutError(f"item {item_id} still {item['status']}/{item['executionStatus']}")
            time.sleep(0.002)

    def last_sync(self, item_id: str) -> JsonDict | None:
        """Timed mode: the item's latest sync (None before one): {steps [{status, executionStatus, at}],
        outcome, transactionsCreatedAtFrom, created {accountId: ids}, late {accountId: ids}, updated,
        deleted, restated {old: new}, newAccountId, triggeredBy, first}. A sync waiting for the user has
        outcome None and the wait as its last step; one that ended USER_AUTHORIZATION_PENDING also has
        `authorizationSyncAt`, when Pluggy's own sync is due (None once refused); that sync, when it starts,
        becomes the latest (triggeredBy SYNC)."""
        return self._state.last_sync(item_id)

    def now(self) -> str:
        """The emulator's current time (ISO 8601, UTC): the scaled clock in timed mode."""
        return iso_from_ms(self._state.clock.wall_ms())

    def clock_info(self) -> JsonDict:
        """{now, timed, timeScale, pendingWork (timed syncs running or waiting for the user, device
        authorizations awaited, late-row batches to come)}."""
        return {
            "now": self.now(),
            "timed": self.timed,
            "timeScale": self.time_scale,
            "pendingWork": self._state.pending_work(),
        }

    # --- time and rate-limit budget, for tests ---------------------------------------------------

    def pause_clock(self) -> bool:
        """Hold the emulator's clock still; True if this call paused it (False: it already stood still).

        Everything that reads the clock stands still with it: timestamps, dated rules, and in timed mode the
        scheduled steps, deadlines and late rows (nothing comes due, so `settle` can only time out) and the
        rate-limit windows. API key lifetimes, webhook retries and, in instant mode, rate-limit windows run on
        wall time regardless.
        """
        return self._state.pause_clock()

    def resume_clock(self) -> bool:
        """Let the clock run on from where it was paused (the pause took no emulator time); True if this call
        resumed it (False: it was not paused)."""
        return self._state.resume_clock()

    @property
    def clock_paused(self) -> bool:
        return self._state.clock.paused

    @contextlib.contextmanager
    def clock_stopped(self) -> Iterator[None]:
        """`with emulator.clock_stopped():` the clock stands still inside (resumed on exit if it was running)."""
        paused_here = self.pause_clock()
        try:
            yield
        finally:
            if paused_here:
                self.resume_clock()

    def advance_clock(self, seconds: float) -> str:
        """Jump the emulator's clock `seconds` (emulator seconds) forward, paused or not; returns `now()`.

        In timed mode the work that falls due in the skipped span (steps, deadlines, late rows) runs at once,
        in order, but stamped with the new time: to keep every step's own timestamp, advance while
        `clock_info()["pendingWork"]` is 0, or in steps no longer than the next one.
        """
        self._state.advance_clock(seconds)
        return self.now()

    def rate_limit_budget(self, route: str) -> JsonDict:
        """The route's budget in its current rate-limit window: {route, limit, used, remaining, resetSeconds}.

        `route` is "METHOD /template" (e.g. "GET /v2/transactions"); ValueError when it has no limit.
        `resetSeconds` is what is left of the window (emulator seconds in timed mode; 0 when no window is open).
        """
        self._check_route(route)
        return self._rate_limiter.budget(route)

    def use_up_rate_limit(self, route: str, *, leave: int = 0) -> JsonDict:
        """Another client of this application used the route's budget: a window opens now with `leave` calls
        left, so the call after those gets Pluggy's 429 (RateLimit-Reset: the whole window). Returns the budget."""
        self._check_route(route)
        return self._rate_limiter.use_up(route, leave=leave)

    def reset_rate_limits(self, route: str | None = None) -> None:
        """Forget the calls counted on `route` (every route when None): its next call opens a fresh window."""
        if route is not None:
            self._check_route(route)
        self._rate_limiter.reset(route)

    def _check_route(self, route: str) -> None:
        templates = {f"{method} {template}" for method, template, _, _ in self._api_routes}
        if route not in templates:
            raise ValueError(f"unknown route {route!r}; use one of {sorted(templates)}")

    @property
    def api_key_ttl_seconds(self) -> float:
        """How long API keys issued from now on live (real seconds); settable, e.g. to test expiry."""
        return self._state.api_key_ttl_seconds

    @api_key_ttl_seconds.setter
    def api_key_ttl_seconds(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("api_key_ttl_seconds must be > 0")
        self._state.api_key_ttl_seconds = seconds

    # --- request handling ------------------------------------------------------------------------

    def handle_http(self, method: str, target: str, headers: Message, raw: bytes) -> _Response | object:
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query, keep_blank_values=True)
        try:
            body = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            return _Response(400, {"code": 400, "message": "Invalid JSON body"})
        try:
            if path == "/_emulator" or path.startswith("/_emulator/"):
                return self._handle_control(method, path, body)
            return self._handle_api(method, path, query, body, headers)
        except PluggyApiError as exc:
            return _Response(exc.status, exc.body())
        except Exception:
            logger.exception("emulator failure on %s %s", method, path)
            return _Response(500, {"code": 500, "message": "Internal emulator error"})

    def _match_api(self, method: str, path: str) -> tuple[str, _ApiFunc, dict[str, str]] | None:
        path_matched = False
        for route_method, template, pattern, func in self._api_routes:
            found = pattern.match(path)
            if found is None:
                continue
            path_matched = True
            if route_method == method:
                return f"{method} {template}", func, found.groupdict()
        if path_matched:
            raise PluggyApiError(405, "Method Not Allowed")
        return None

    def _take_fault(self, route: str) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.route in (route, "*"):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _handle_api(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: Message
    ) -> _Response | object:
        matched = self._match_api(method, path)
        if matched is None:
            with self._state.lock:
                self._stats[f"{method} <unknown>"] = self._stats.get(f"{method} <unknown>", 0) + 1
            return _Response(404, {"code": 404, "message": f"Cannot {method} {path}"})
        route, func, params = matched
        with self._state.lock:
            self._stats[route] = self._stats.get(route, 0) + 1
            fault = self._take_fault(route)
        if fault is not None:
            if fault.kind == "drop":
                return _DROP
            if fault.kind == "500":
                return _Response(500, {"code": 500, "message": "Internal Server Error"})
            if fault.kind == "429":
                seconds = str(fault.retry_after_seconds)
                limit = str(self._rate_limiter.limit_for(route) or 0)
                fault_headers = {"Retry-After": seconds, "RateLimit-Limit": limit, "RateLimit-Reset": seconds}
                return _Response(429, dict(RATE_LIMIT_BODY), fault_headers)
            self._stopping.wait(fault.delay_seconds)  # "delay": then answer normally
        rate_headers, limited = self._rate_limiter.check(route)
        if limited:
            return _Response(429, dict(RATE_LIMIT_BODY), rate_headers)
        try:
            key: KeyInfo | None = None
            if route != "POST /auth":
                key = self._state.keys.authenticate(headers.get("X-API-KEY"))
                if key.kind == "connect" and route not in CONNECT_TOKEN_ROUTES:
                    raise PluggyApiError(403, "This connect token cannot access this resource")
            response = func(_Request(params, query, body, key))
        except PluggyApiError as exc:
            response = _Response(exc.status, exc.body())
        response.headers.update(rate_headers)
        return response

    def _handle_control(self, method: str, path: str, body: Any) -> _Response:
        for route_method, pattern, func in self._control_routes:
            found = pattern.match(path)
            if found is not None and route_method == method:
                try:
                    return func(found.groupdict(), body)
                except ValidationError as exc:
                    errors = json.loads(exc.json(include_url=False))
                    return _Response(400, {"code": 400, "message": "Invalid control request", "errors": errors})
                except ValueError as exc:
                    return _Response(400, {"code": 400, "message": str(exc)})
        return _Response(404, {"code": 404, "message": f"Unknown control route {method} {path}"})

    # --- routes ----------------------------------------------------------------------------------

    def _build_routes(self) -> None:
        products = self._state.products
        api: list[tuple[str, str, _ApiFunc]] = [
            ("POST", "/auth", self._api_auth),
            ("POST", "/connect_token", self._api_connect_token),
            ("GET", "/connectors", lambda r: _Response(200, self._state.connectors.list_connectors(r.query))),
            ("GET", "/connectors/{id}", lambda r: _Response(200, self._state.connectors.get_connector(r.params["id"]))),
            ("POST", "/connectors/{id}/validate", self._api_validate_parameters),
            ("POST", "/items", self._api_create_item),
            ("GET", "/items/{id}", self._api_get_item),
            ("PATCH", "/items/{id}", self._api_update_item),
            ("DELETE", "/items/{id}", self._api_delete_item),
            ("POST", "/items/{id}/mfa", self._api_item_mfa),
            ("GET", "/accounts", self._api_list_accounts),
            ("GET", "/accounts/{id}", lambda r: _Response(200, self._state.accounts.get_account(r.params["id"]))),
            (
                "GET",
                "/accounts/{id}/statements",
                lambda r: _Response(200, self._state.accounts.list_account_statements(r.params["id"])),
            ),
            ("GET", "/v2/transactions", self._api_transactions_v2),
            ("GET", "/transactions", self._api_transactions_legacy),
            ("GET", "/transactions/{id}", lambda r: _Response(200, self._state.transactions.get(r.params["id"]))),
            ("PATCH", "/transactions/{id}", self._api_update_transaction),
            ("GET", "/bills", lambda r: _Response(200, products.list_bills(r.query, cast(KeyInfo, r.key)))),
            ("GET", "/bills/{id}", lambda r: _Response(200, products.get_bill(r.params["id"]))),
            (
                "GET",
                "/investments",
                lambda r: _Response(200, products.list_investments(r.query, cast(KeyInfo, r.key))),
            ),
            ("GET", "/investments/{id}", lambda r: _Response(200, products.get_investment(r.params["id"]))),
            (
                "GET",
                "/investments/{id}/transactions",
                lambda r: _Response(200, products.list_investment_transactions(r.params["id"], r.query)),
            ),
            ("GET", "/loans", lambda r: _Response(200, products.list_loans(r.query, cast(KeyInfo, r.key)))),
            ("GET", "/loans/{id}", lambda r: _Response(200, products.get_loan(r.params["id"]))),
            (
                "GET",
                "/identity",
                lambda r: _Response(200, products.identity_of_item(r.query, cast(KeyInfo, r.key))),
            ),
            ("GET", "/identity/{id}", lambda r: _Response(200, products.get_identity(r.params["id"]))),
            ("GET", "/consents", lambda r: _Response(200, products.list_consents(r.query, cast(KeyInfo, r.key)))),
            ("GET", "/consents/{id}", lambda r: _Response(200, products.get_consent(r.params["id"]))),
            ("GET", "/categories", self._api_list_categories),
            ("GET", "/categories/{id}", lambda r: _Response(200, get_category(r.params["id"]))),
            ("GET", "/webhooks", lambda r: _Response(200, self._state.webhooks.list_webhooks())),
            ("POST", "/webhooks", self._api_create_webhook),
            ("GET", "/webhooks/{id}", lambda r: _Response(200, self._state.webhooks.get_webhook(r.params["id"]))),
            ("PATCH", "/webhooks/{id}", self._api_update_webhook),
            ("DELETE", "/webhooks/{id}", lambda r: _Response(200, self._state.webhooks.delete_webhook(r.params["id"]))),
            (
                "GET",
                "/payments/requests",
                lambda r: _Response(200, self._state.payments.list_payment_requests(r.query)),
            ),
            (
                "GET",
                "/payments/requests/{id}",
                lambda r: _Response(200, self._state.payments.get_payment_request(r.params["id"])),
            ),
            ("GET", "/payments/requests/{id}/schedules", self._api_list_schedules),
            ("GET", "/payments/requests/{id}/schedules/{scheduleId}", self._api_get_schedule),
            ("GET", "/payments/intents", lambda r: _Response(200, self._state.payments.list_payment_intents(r.query))),
            (
                "GET",
                "/payments/intents/{id}",
                lambda r: _Response(200, self._state.payments.get_payment_intent(r.params["id"])),
            ),
        ]
        self._api_routes = [(m, t, _compile(t), f) for m, t, f in api]
        control: list[tuple[str, str, _ControlFunc]] = [
            ("GET", "/_emulator/state", lambda p, b: _Response(200, self.truth())),
            ("GET", "/_emulator/events", lambda p, b: _Response(200, self.events())),
            ("GET", "/_emulator/deliveries", lambda p, b: _Response(200, self.deliveries())),
            ("GET", "/_emulator/stats", lambda p, b: _Response(200, self.stats())),
            ("POST", "/_emulator/stats/reset", self._ctl_reset_stats),
            ("POST", "/_emulator/items", self._ctl_create_item),
            ("POST", "/_emulator/items/{id}/sync", self._ctl_sync_item),
            ("POST", "/_emulator/items/{id}/fail", self._ctl_fail_item),
            ("POST", "/_emulator/items/{id}/waiting_user_input", self._ctl_waiting_user_input),
            ("POST", "/_emulator/items/{id}/waiting_user_action", self._ctl_waiting_user_action),
            ("POST", "/_emulator/items/{id}/user_action", self._ctl_user_action),
            ("POST", "/_emulator/items/{id}/reconnect", self._ctl_reconnect_item),
            ("DELETE", "/_emulator/items/{id}", self._ctl_delete_item),
            ("POST", "/_emulator/connectors/{id}/status", self._ctl_connector_status),
            ("POST", "/_emulator/payment_events", self._ctl_payment_event),
            ("POST", "/_emulator/payment_requests", self._ctl_create_payment_request),
            ("POST", "/_emulator/events", self._ctl_send_event),
            ("POST", "/_emulator/webhooks", self._ctl_create_webhook),
            ("GET", "/_emulator/faults", self._ctl_list_faults),
            ("POST", "/_emulator/faults", self._ctl_fault),
            ("DELETE", "/_emulator/faults", self._ctl_clear_faults),
            ("POST", "/_emulator/wait", self._ctl_wait),
            ("POST", "/_emulator/settle", self._ctl_settle),
            ("GET", "/_emulator/clock", lambda p, b: _Response(200, self.clock_info())),
            ("POST", "/_emulator/clock/advance", self._ctl_advance_clock),
            ("POST", "/_emulator/clock/pause", lambda p, b: self._clock_answer(changed=self.pause_clock())),
            ("POST", "/_emulator/clock/resume", lambda p, b: self._clock_answer(changed=self.resume_clock())),
            ("GET", "/_emulator/rate_limits", self._ctl_rate_limits),
            ("POST", "/_emulator/rate_limits/use_up", self._ctl_use_up_rate_limit),
            ("POST", "/_emulator/rate_limits/reset", self._ctl_reset_rate_limits),
            ("GET", "/_emulator/items/{id}/last_sync", self._ctl_last_sync),
        ]
        self._control_routes = [(m, _compile(t), f) for m, t, f in control]

    # Pluggy API handlers

    def _api_auth(self, request: _Request) -> _Response:
        body = _object(request.body)
        return _Response(
            200, {"apiKey": self._state.keys.issue_api_key(body.get("clientId"), body.get("clientSecret"))}
        )

    def _api_connect_token(self, request: _Request) -> _Response:
        body = _object(request.body, required=False)
        token = self._state.keys.issue_connect_token(body.get("itemId"), body.get("options"))
        return _Response(200, {"accessToken": token})

    def _api_create_item(self, request: _Request) -> _Response:
        body = _object(request.body)
        key = cast(KeyInfo, request.key)
        connector_id = body.get("connectorId")
        params = body.get("parameters")
        details: list[JsonDict] = []
        required = ["user", "password"]
        if isinstance(connector_id, bool) or not isinstance(connector_id, int):
            details.append({"code": "000", "parameter": "connectorId", "message": "connectorId must be a number"})
        else:
            required = self._state.connectors.required_credentials(connector_id)  # 404 CONNECTOR_NOT_FOUND
        if not isinstance(params, dict):
            details.append({"code": "000", "parameter": "parameters", "message": "parameters is required"})
            params = {}
        for name in required:
            if not isinstance(params.get(name), str) or not params.get(name):
                details.append({"code": "001", "parameter": name, "message": f"{name} is required"})
        if details:
            raise PluggyApiError(400, "Invalid parameters for connector", "CONNECTOR_VALIDATION_ERROR", details=details)
        client_user_id = body.get("clientUserId", key.client_user_id)
        webhook_url = body.get("webhookUrl", key.webhook_url)
        if webhook_url is not None:
            webhook_url = self._state.webhooks.validate_url(webhook_url)
        if client_user_id is not None and not isinstance(client_user_id, str):
            raise PluggyApiError(400, "clientUserId must be a string")
        snapshot, _ = self._state.items.create_item(
            username=params["user"],
            password=params["password"],
            client_user_id=client_user_id,
            webhook_url=webhook_url,
            triggered_by="USER" if key.kind == "connect" else "CLIENT",
            connector_id=cast(int, connector_id),
            mfa_token=params.get(MFA_PARAMETER) if isinstance(params.get(MFA_PARAMETER), str) else None,
            products=body.get("products", key.products),
        )
        if key.kind == "connect":
            key.item_ids.add(snapshot["id"])
        return _Response(200, snapshot)

    def _api_get_item(self, request: _Request) -> _Response:
        item_id = request.params["id"]
        cast(KeyInfo, request.key).check_scope(item_id)
        return _Response(200, self._state.items.get_item(item_id))

    def _api_update_item(self, request: _Request) -> _Response:
        item_id = request.params["id"]
        key = cast(KeyInfo, request.key)
        key.check_scope(item_id)
        body = _object(request.body, required=False)
        triggered_by = "USER" if key.kind == "connect" else "CLIENT"
        return _Response(200, self._state.items.update_item_api(item_id, body, triggered_by))

    def _api_item_mfa(self, request: _Request) -> _Response:
        item_id = request.params["id"]
        cast(KeyInfo, request.key).check_scope(item_id)
        return _Response(200, self._state.items.submit_mfa(item_id, request.body))

    def _api_validate_parameters(self, request: _Request) -> _Response:
        return _Response(200, self._state.connectors.validate_parameters(request.params["id"], request.body))

    def _api_update_transaction(self, request: _Request) -> _Response:
        return _Response(200, self._state.transactions.update_category(request.params["id"], request.body))

    def _api_list_categories(self, request: _Request) -> _Response:
        parent = request.query.get("parentId")
        return _Response(200, list_categories(parent[-1] if parent else None))

    def _api_delete_item(self, request: _Request) -> _Response:
        self._state.items.delete_item(request.params["id"], triggered_by="CLIENT")
        return _Response(200, {"count": 1})

    def _api_list_accounts(self, request: _Request) -> _Response:
        item_id = (request.query.get("itemId") or [""])[-1]
        if not item_id:
            raise PluggyApiError(400, "itemId is required", "ITEM_ID_REQUIRED")
        types = request.query.get("type")
        account_type = types[-1] if types else None
        if account_type is not None and account_type not in ("BANK", "CREDIT"):
            raise PluggyApiError(400, "type must be BANK or CREDIT")
        return _Response(200, self._state.accounts.list_accounts(item_id, account_type, cast(KeyInfo, request.key)))

    def _api_transactions_v2(self, request: _Request) -> _Response:
        return _Response(200, self._state.transactions.list_v2(request.query, cast(KeyInfo, request.key)))

    def _api_transactions_legacy(self, request: _Request) -> _Response:
        # Deprecated, served through its last day by the emulator's clock; gone (410) afterwards.
        if not self._state.transactions.legacy_served():
            raise PluggyApiError(410, LEGACY_TRANSACTIONS_MESSAGE, "ENDPOINT_REMOVED")
        return _Response(200, self._state.transactions.list_legacy(request.query, cast(KeyInfo, request.key)))

    def _api_create_webhook(self, request: _Request) -> _Response:
        # 200, not the OAS's 201: the SDK rejects any mutation answer but 200 and its tests pass on Pluggy.
        body = _object(request.body)
        return _Response(
            200, self._state.webhooks.create_webhook(body.get("url"), body.get("event"), body.get("headers"))
        )

    def _api_update_webhook(self, request: _Request) -> _Response:
        return _Response(200, self._state.webhooks.update_webhook(request.params["id"], _object(request.body)))

    def _api_list_schedules(self, request: _Request) -> _Response:
        return _Response(200, self._state.payments.list_payment_schedules(request.params["id"]))

    def _api_get_schedule(self, request: _Request) -> _Response:
        return _Response(
            200, self._state.payments.get_payment_schedule(request.params["id"], request.params["scheduleId"])
        )

    # control handlers

    def _ctl_reset_stats(self, params: dict[str, str], body: Any) -> _Response:
        self.reset_stats()
        return _Response(200, {"ok": True})

    def _ctl_create_item(self, params: dict[str, str], body: Any) -> _Response:
        req = _CreateItemBody.model_validate(body or {})
        item = self.create_item(
            req.client_user_id,
            req.username,
            transactions_per_account=req.transactions_per_account,
            webhook_url=req.webhook_url,
            triggered_by=req.triggered_by,
            connector_id=req.connector_id,
            mfa_token=req.mfa_token,
            products=req.products,
        )
        return _Response(200, item)

    def _ctl_sync_item(self, params: dict[str, str], body: Any) -> _Response:
        req = _SyncBody.model_validate(body or {})
        summary = self.sync_item(
            params["id"],
            add=req.add,
            change=req.change,
            delete=req.delete,
            restate_credit_card=req.restate_credit_card,
            new_account=req.new_account,
            triggered_by=req.triggered_by,
            products_change=req.products_change,
            remove_investment=req.remove_investment,
            resources_pending=req.resources_pending,
        )
        return _Response(200, summary)

    def _ctl_fail_item(self, params: dict[str, str], body: Any) -> _Response:
        req = _FailBody.model_validate(body or {})
        event_id = self.fail_item(params["id"], req.code, message=req.message, triggered_by=req.triggered_by)
        return _Response(200, {"eventId": event_id})

    def _ctl_waiting_user_input(self, params: dict[str, str], body: Any) -> _Response:
        req = _TriggerBody.model_validate(body or {})
        event_id = self.set_waiting_user_input(params["id"], triggered_by=req.triggered_by or "USER")
        return _Response(200, {"eventId": event_id})

    def _ctl_waiting_user_action(self, params: dict[str, str], body: Any) -> _Response:
        req = _TriggerBody.model_validate(body or {})
        event_id = self.set_waiting_user_action(params["id"], triggered_by=req.triggered_by or "USER")
        return _Response(200, {"eventId": event_id})

    def _ctl_user_action(self, params: dict[str, str], body: Any) -> _Response:
        req = _UserActionBody.model_validate(body or {})
        return _Response(200, self.complete_user_action(params["id"], granted=req.granted))

    def _ctl_reconnect_item(self, params: dict[str, str], body: Any) -> _Response:
        req = _TriggerBody.model_validate(body or {})
        return _Response(200, self.reconnect_item(params["id"], triggered_by=req.triggered_by or "USER"))

    def _ctl_delete_item(self, params: dict[str, str], body: Any) -> _Response:
        req = _TriggerBody.model_validate(body or {})
        return _Response(200, {"eventId": self.delete_item(params["id"], triggered_by=req.triggered_by or "CLIENT")})

    def _ctl_connector_status(self, params: dict[str, str], body: Any) -> _Response:
        req = _ConnectorStatusBody.model_validate(body or {})
        if not params["id"].isdigit():
            raise ValueError("connector id must be a number")
        return _Response(200, {"eventId": self.set_connector_status(req.status, int(params["id"]))})

    def _ctl_payment_event(self, params: dict[str, str], body: Any) -> _Response:
        req = _PaymentEventBody.model_validate(body or {})
        # The body's fields are PaymentEvent's, by name.
        event_id = self._state.payments.send_event(PaymentEvent(**req.model_dump()))
        return _Response(200, {"eventId": event_id})

    def _ctl_create_payment_request(self, params: dict[str, str], body: Any) -> _Response:
        req = _PaymentRequestBody.model_validate(body or {})
        request = self.create_payment_request(
            req.id,
            amount=req.amount,
            description=req.description,
            client_payment_id=req.client_payment_id,
            schedule=req.schedule,
        )
        return _Response(201, request)

    def _ctl_send_event(self, params: dict[str, str], body: Any) -> _Response:
        req = _SendEventBody.model_validate(body or {})
        return _Response(200, {"eventId": self.send_event(req.event, **(req.model_extra or {}))})

    def _ctl_create_webhook(self, params: dict[str, str], body: Any) -> _Response:
        req = _WebhookBody.model_validate(body or {})
        return _Response(201, self.create_webhook(req.url, req.event, req.headers))

    def _ctl_list_faults(self, params: dict[str, str], body: Any) -> _Response:
        with self._state.lock:
            faults = [
                {"route": f.route, "kind": f.kind, "remaining": f.remaining, "delaySeconds": f.delay_seconds}
                for f in self._faults
            ]
        return _Response(200, faults)

    def _ctl_fault(self, params: dict[str, str], body: Any) -> _Response:
        req = _FaultBody.model_validate(body or {})
        self.fault(
            req.route,
            req.kind,
            req.count,
            delay_seconds=req.delay_seconds,
            retry_after_seconds=req.retry_after_seconds,
        )
        return _Response(201, {"ok": True})

    def _ctl_clear_faults(self, params: dict[str, str], body: Any) -> _Response:
        self.clear_faults()
        return _Response(200, {"ok": True})

    def _ctl_wait(self, params: dict[str, str], body: Any) -> _Response:
        req = _WaitBody.model_validate(body or {})
        return _Response(200, {"idle": self.wait_for_deliveries(req.timeout)})

    def _ctl_settle(self, params: dict[str, str], body: Any) -> _Response:
        req = _SettleBody.model_validate(body or {})
        return _Response(200, {"settled": self.settle(req.timeout)})

    def _ctl_last_sync(self, params: dict[str, str], body: Any) -> _Response:
        self._state.items.get_item(params["id"])  # 404 for an unknown item
        return _Response(200, self.last_sync(params["id"]))

    def _clock_answer(self, **extra: Any) -> _Response:
        return _Response(200, {"now": self.now(), "paused": self.clock_paused, **extra})

    def _ctl_advance_clock(self, params: dict[str, str], body: Any) -> _Response:
        req = _AdvanceBody.model_validate(body or {})
        self.advance_clock(req.seconds)
        return self._clock_answer()

    def _ctl_rate_limits(self, params: dict[str, str], body: Any) -> _Response:
        routes = [f"{method} {template}" for method, template, _, _ in self._api_routes]
        limited = [r for r in routes if self._rate_limiter.limit_for(r) is not None]
        return _Response(200, {route: self.rate_limit_budget(route) for route in limited})

    def _ctl_use_up_rate_limit(self, params: dict[str, str], body: Any) -> _Response:
        req = _UseUpBody.model_validate(body or {})
        return _Response(200, self.use_up_rate_limit(req.route, leave=req.leave))

    def _ctl_reset_rate_limits(self, params: dict[str, str], body: Any) -> _Response:
        req = _RouteBody.model_validate(body or {})
        self.reset_rate_limits(req.route)
        return _Response(200, {"ok": True})
