"""Pluggy API client: cached API key, bounded retries, Decimal-safe JSON and every pagination style.

Keep one instance per Lambda container: the API key lives 2 h and `POST /auth` has its own rate limit,
so the key is cached on the object. Not thread-safe; use one client per thread.
Facts behind the choices below: Pluggy's OpenAPI spec, docs and Node SDK (auth, rate limits, /v2/transactions).
"""

from __future__ import annotations

import base64
import decimal
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from pluggy_pipeline import __version__
from pluggy_pipeline.errors import ConfigurationError, NotFoundError, PermanentError, RetryLater, TransientError
from pluggy_pipeline.observability import logger

JSON = dict[str, Any]
Params = dict[str, str]


DEFAULT_BASE_URL = "https://api.pluggy.ai"
API_KEY_LIFETIME_S = 2 * 60 * 60  # documented lifetime, used when the key is not a decodable JWT
API_KEY_REFRESH_MARGIN_S = 300  # refresh 5 min early so a key never expires mid-request
PAGE_SIZE = 500  # the largest page of Pluggy's page-numbered lists (bills, investments, loans, consents)
MAX_IDS_PER_REQUEST = 500  # more -> 400 IDS_PARAMETER_EXCEEDS_MAX_LENGTH

_TRANSACTIONS_V2 = "/v2/transactions"
_TRANSACTIONS_LEGACY = "/transactions"  # removed after 2026-12-31
# The legacy endpoint's date filters have other names in v2, and v2 has no page/pageSize.
_LEGACY_RENAMES = {"from": "dateFrom", "to": "dateTo"}
_LEGACY_ONLY = frozenset({"page", "pageSize"})
_DEFAULT_PORTS = {"https": 443, "http": 80}
_MAX_ERROR_TEXT = 200


_PLUGGY_ORIGIN = ("https", "api.pluggy.ai", 443)


class PluggyAuthError(PermanentError):
    """Pluggy rejected our credentials (CLIENT_KEYS_UNAUTHORIZED, CLIENT_DISABLED, CLIENT_IP_NOT_ALLOWED...).

    A deployment problem, not a message problem: retrying the same message cannot help.
    """

    def __init__(self, message: str, *, status: int | None = None, code_description: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code_description = code_description


class PluggyRequestError(PermanentError):
    """Pluggy answered a 4XX (other than 401/403/404/429) or an unexpected status such as a redirect.

    `pluggy_message` is Pluggy's own `message` (at most 200 characters), for answers that pass it on.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code_description: str | None = None,
        data: Any = None,
        pluggy_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code_description = code_description
        self.data = data
        self.pluggy_message = pluggy_message


class PluggyNotFoundError(NotFoundError):
    """Pluggy answered 404; `code_description` says what is missing (ITEM_NOT_FOUND, ACCOUNT_NOT_FOUND)."""

    def __init__(
        self, message: str, *, code_description: str | None = None, data: Any = None, pluggy_message: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = 404
        self.code_description = code_description
        self.data = data
        self.pluggy_message = pluggy_message


class RateLimitedError(RetryLater):
    """Pluggy answered 429 and asked for a wait too long to sleep through in a Lambda.

    `retry_after` (seconds) lets the caller hand the message back to the queue with that delay.
    """


class _Unauthorized(Exception):
    """Internal: a call made with the API key got 401/403; the caller re-authenticates once."""

    def __init__(self, status: int, code_description: str | None) -> None:
        super().__init__(status)
        self.status = status
        self.code_description = code_description


def pacing_route(method: str, path: str) -> str:
    """The rate limit a request counts against: Pluggy limits `GET /investments`, `/investments/{id}` and
    `/investments/{id}/transactions` together (pluggy-api.md section 7); other routes by their path."""
    if method == "GET" and (path == "/investments" or path.startswith("/investments/")):
        return "GET /investments"
    return f"{method} {path}"


def _reject_constant(name: str) -> NoReturn:
    # NaN/Infinity would become floats, which neither money nor DynamoDB can hold.
    raise ValueError(f"non-finite JSON number {name}")


def _loads(raw: bytes) -> Any:
    # Floats become Decimal so amounts such as 0.1 reach DynamoDB exactly as Pluggy sent them.
    return json.loads(raw, parse_float=decimal.Decimal, parse_constant=_reject_constant)


def _jwt_exp(token: str) -> float | None:
    """The `exp` claim of a JWT, decoded without verifying the signature (we only need the expiry)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:  # covers binascii.Error, UnicodeDecodeError and JSONDecodeError
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    return float(exp)


def token_expiry(token: str) -> float | None:
    """When a Pluggy JWT (API key, Connect token) expires: its `exp`, unverified; None when it has none."""
    return _jwt_exp(token)


def _seconds(value: str | None) -> float | None:
    """A rate-limit header as a number of seconds (HTTP-date forms are ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _error_details(resp: requests.Response) -> tuple[str | None, str | None, Any]:
    """(codeDescription, message, data) from an error body, tolerating bodies that are not JSON."""
    try:
        body = _loads(resp.content)
    except ValueError:
        return None, None, None
    if not isinstance(body, dict):
        return None, None, None
    code_description = body.get("codeDescription")
    if not isinstance(code_description, str):
        # Some bodies carry the symbolic code in `code` instead of the HTTP status.
        code = body.get("code")
        code_description = code if isinstance(code, str) else None
    message = body.get("message")
    return (
        code_description,
        message[:_MAX_ERROR_TEXT] if isinstance(message, str) else None,
        body.get("data"),
    )


def _segment(value: str, what: str) -> str:
    """One URL path segment; ids come from webhook payloads, so they must not be able to change the path."""
    if not isinstance(value, str) or value in {"", ".", ".."}:
        raise PermanentError(f"invalid {what}: {value!r}")
    return quote(value, safe="")


def _query_params(query: str) -> Params:
    params: Params = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        # Repeated keys (ids=a&ids=b) become the comma-joined form the API expects.
        params[key] = f"{params[key]},{value}" if key in params else value
    return params


def _results(body: Any, what: str) -> list[JSON]:
    """The records of one page: `{results: [...]}`, a bare list, or nothing (204)."""
    if body is None:
        return []
    results = body.get("results") if isinstance(body, dict) else body
    if results is None:
        return []
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise PermanentError(f"unexpected {what} page shape from Pluggy")
    return results


def _expect_dict(body: Any, what: str) -> JSON:
    if not isinstance(body, dict):
        raise PermanentError(f"unexpected {what} response shape from Pluggy")
    return body


class PluggyClient:
    """Thin, faithful wrapper of the Pluggy REST API (dicts in, dicts out)."""

    def __init__(
        self,
        base_url: str,
        credentials: Callable[[], tuple[str, str]],
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 15.0),
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        max_retry_wait: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        pacer: Callable[[str], None] | None = None,
    ) -> None:
        """`pacer(route)` runs before every request ("GET /v2/transactions"): it may wait for the route's turn."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        base = urlsplit(base_url.strip().rstrip("/"))
        origin = self._origin_of(base)
        if origin is None or base.query or base.fragment:
            raise ValueError(f"base_url must be an http(s) URL without credentials or query: {base_url!r}")
        self._origin = origin
        self._base_path = base.path.rstrip("/")
        self._base_url = f"{base.scheme}://{base.netloc}{self._base_path}"
        self._credentials = credentials
        if session is None:
            session = requests.Session()
            # Retries are ours (they need to see statuses and headers), so the adapter never retries.
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self._session = session
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_retry_wait = max_retry_wait
        self._clock = clock
        self._sleep = sleep
        self._pacer = pacer
        self._api_key: str | None = None
        self._api_key_expires_at = 0.0
        self.request_count: dict[str, int] = {}

    def close(self) -> None:
        self._session.close()

    # ----------------------------------------------------------------------------------------------
    # Items and accounts

    def get_item(self, item_id: str) -> JSON:
        """The item; raises PluggyNotFoundError (a NotFoundError) when Pluggy no longer knows it."""
        return _expect_dict(self._call("GET", f"/items/{_segment(item_id, 'item id')}"), "item")

    def update_item(self, item_id: str, **fields: Any) -> JSON:
        """PATCH /items/{id} (webhookUrl, clientUserId, products, parameters): Pluggy starts a new sync."""
        if not fields:
            raise ValueError("update_item needs at least one field")
        path = f"/items/{_segment(item_id, 'item id')}"
        # Not idempotent: a retry after a lost answer would start a second sync (PATCH is limited to 20/min).
        return _expect_dict(self._call("PATCH", path, body=fields, idempotent=False), "item")

    def list_accounts(self, item_id: str) -> list[JSON]:
        """Every account of the item (Pluggy sends one page; any further pages are followed anyway)."""
        if not item_id:
            raise PermanentError("invalid item id: ''")
        return [a for page in self._iter_pages("/accounts", {"itemId": item_id}) for a in page]

    # ----------------------------------------------------------------------------------------------
    # Transactions

    def iter_transactions(
        self,
        account_id: str,
        *,
        created_at_from: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
    ) -> Iterator[list[JSON]]:
        """`GET /v2/transactions`, one list per non-empty page, following the `next` cursor."""
        if created_at_from and date_from:
            raise ValueError("Pluggy cannot combine createdAtFrom with dateFrom")
        if not account_id:
            raise PermanentError("invalid account id: ''")
        params: Params = {"accountId": account_id}
        if created_at_from:
            params["createdAtFrom"] = created_at_from
        if date_from:
            params["dateFrom"] = date_from
        if date_to:
            params["dateTo"] = date_to
        # Not a generator itself, so bad arguments fail at call time rather than on first iteration.
        return self._iter_pages(_TRANSACTIONS_V2, params)

    def get_transactions_by_ids(self, account_id: str, ids: Sequence[str]) -> list[JSON]:
        """The given transactions, in requests of at most 500 ids (each paginated)."""
        if isinstance(ids, str):  # a str is a Sequence[str]: "abc" would become ids a, b, c
            raise TypeError("ids must be a sequence of ids, not a string")
        if not account_id:
            raise PermanentError("invalid account id: ''")
        unique = list(dict.fromkeys(ids))
        for tx_id in unique:
            if not tx_id or "," in tx_id:
                raise PermanentError(f"invalid transaction id: {tx_id!r}")
        found: list[JSON] = []
        # No ids must mean no request: without `ids` the endpoint returns the whole account.
        for start in range(0, len(unique), MAX_IDS_PER_REQUEST):
            chunk = unique[start : start + MAX_IDS_PER_REQUEST]
            params = {"accountId": account_id, "ids": ",".join(chunk)}
            for page in self._iter_pages(_TRANSACTIONS_V2, params):
                found.extend(page)
        return found

    def iter_link(self, link: str, *, account_id: str | None = None) -> Iterator[list[JSON]]:
        """Follow a `createdTransactionsLink` (absolute or relative), one list per non-empty page.

        Only links to this client's own scheme+host are followed, so the API key never leaves for
        another host. Legacy `/transactions` links are rewritten to `/v2/transactions`.
        """
        path, params = self._resolve(link, what="link")
        if path != _TRANSACTIONS_V2:
            raise PermanentError(f"refusing to follow a link to an unexpected path: {path}")
        if account_id is not None:
            linked = params.setdefault("accountId", account_id)
            if linked != account_id:
                # Storing another account's rows under this account would corrupt the copy.
                raise PermanentError("link accountId does not match the event's accountId")
        return self._iter_pages(path, params)

    # ----------------------------------------------------------------------------------------------
    # Products beyond accounts and transactions (pluggy-api.md sections 13 to 17)

    def _list(self, path: str, **params: str) -> list[JSON]:
        """Every row of a page-numbered list, in pages of Pluggy's largest size."""
        for name, value in params.items():
            if not value:
                raise PermanentError(f"invalid {name}: ''")
        return [row for page in self._iter_pages(path, {**params, "pageSize": str(PAGE_SIZE)}) for row in page]

    def list_bills(self, account_id: str) -> list[JSON]:
        """A credit-card account's bills (`GET /bills?accountId=`)."""
        return self._list("/bills", accountId=account_id)

    def list_investments(self, item_id: str) -> list[JSON]:
        return self._list("/investments", itemId=item_id)

    def list_investment_transactions(self, investment_id: str) -> list[JSON]:
        """Every transaction of an investment: they carry no createdAt/updatedAt, so the whole list each time."""
        return self._list(f"/investments/{_segment(investment_id, 'investment id')}/transactions")

    def list_loans(self, item_id: str) -> list[JSON]:
        return self._list("/loans", itemId=item_id)

    def get_identity(self, item_id: str) -> JSON | None:
        """The item's identity (one object, not a list); None when Pluggy has none (404 IDENTITY_NOT_FOUND)."""
        if not item_id:
            raise PermanentError("invalid itemId: ''")
        try:
            return _expect_dict(self._call("GET", "/identity", params={"itemId": item_id}), "identity")
        except PluggyNotFoundError:
            return None

    def list_consents(self, item_id: str) -> list[JSON]:
        return self._list("/consents", itemId=item_id)

    # ----------------------------------------------------------------------------------------------
    # Payments (re-verifying payment webhooks)

    def get_payment_request(self, request_id: str) -> JSON:
        """`GET /payments/requests/{id}`; PluggyNotFoundError (PAYMENT_REQUEST_NOT_FOUND) when unknown."""
        path = f"/payments/requests/{_segment(request_id, 'payment request id')}"
        return _expect_dict(self._call("GET", path), "payment request")

    def get_payment_intent(self, intent_id: str) -> JSON:
        """`GET /payments/intents/{id}`; PluggyNotFoundError (PAYMENT_INTENT_NOT_FOUND) when unknown."""
        path = f"/payments/intents/{_segment(intent_id, 'payment intent id')}"
        return _expect_dict(self._call("GET", path), "payment intent")

    def list_payment_intents(self, request_id: str) -> list[JSON]:
        """Every intent of a payment request (`GET /payments/intents?paymentRequestId=`, all pages)."""
        if not request_id:
            raise PermanentError("invalid payment request id: ''")
        return [i for page in self._iter_pages("/payments/intents", {"paymentRequestId": request_id}) for i in page]

    def list_payment_schedules(self, request_id: str) -> list[JSON]:
        """Every scheduled payment of a request; PluggyNotFoundError when the request is unknown."""
        path = f"/payments/requests/{_segment(request_id, 'payment request id')}/schedules"
        return [s for page in self._iter_pages(path, {}) for s in page]

    def get_payment_schedule(self, request_id: str, schedule_id: str) -> JSON:
        """One scheduled payment; PluggyNotFoundError when it or its request is unknown.

        The get-one route is in Pluggy's Node SDK only (not in its OpenAPI spec), so a 405, or a 404 that
        does not say the request is missing, is checked against the request's schedule list.
        """
        request_path = f"/payments/requests/{_segment(request_id, 'payment request id')}"
        path = f"{request_path}/schedules/{_segment(schedule_id, 'scheduled payment id')}"
        try:
            return _expect_dict(self._call("GET", path), "scheduled payment")
        except PluggyNotFoundError as exc:
            if exc.code_description == "PAYMENT_REQUEST_NOT_FOUND":
                raise
            missing = exc.code_description
        except PluggyRequestError as exc:
            if exc.status != 405:
                raise
            missing = None
        for schedule in self.list_payment_schedules(request_id):
            if schedule.get("id") == schedule_id:
                return schedule
        raise PluggyNotFoundError(
            f"Pluggy has no scheduled payment {schedule_id} in payment request {request_id}",
            code_description=missing or "SCHEDULED_PAYMENT_NOT_FOUND",
        )

    # ----------------------------------------------------------------------------------------------
    # Webhooks and connect tokens (operator CLI)

    def list_webhooks(self) -> list[JSON]:
        return [w for page in self._iter_pages("/webhooks", {}) for w in page]

    def create_webhook(self, url: str, event: str = "all", headers: Mapping[str, str] | None = None) -> JSON:
        body: JSON = {"url": url, "event": event}
        if headers is not None:
            body["headers"] = dict(headers)
        # Not idempotent: a retried POST after a lost response would register the webhook twice.
        return _expect_dict(self._call("POST", "/webhooks", body=body, idempotent=False), "webhook")

    def update_webhook(self, webhook_id: str, **fields: Any) -> JSON:
        """PATCH url/event/headers/enabled; `headers=None` is sent as null, which clears the headers."""
        if not fields:
            raise ValueError("update_webhook needs at least one field")
        path = f"/webhooks/{_segment(webhook_id, 'webhook id')}"
        return _expect_dict(self._call("PATCH", path, body=fields), "webhook")

    def delete_webhook(self, webhook_id: str) -> None:
        self._call("DELETE", f"/webhooks/{_segment(webhook_id, 'webhook id')}")

    def create_connect_token(self, item_id: str | None = None, options: Mapping[str, Any] | None = None) -> str:
        """`POST /connect_token`: a 30-minute token for the Connect widget (update mode with `item_id`).

        `options` (clientUserId, webhookUrl, oauthRedirectUri, avoidDuplicates, products, ...) go under
        `options`. Retried like a read: a second token minted after a lost answer is harmless.
        """
        body: JSON = {}
        if item_id:
            body["itemId"] = item_id
        if options:
            body["options"] = dict(options)  # options sit under `options`, not at the top level
        answer = _expect_dict(self._call("POST", "/connect_token", body=body), "connect token")
        token = answer.get("accessToken")
        if not isinstance(token, str) or not token:
            raise PermanentError("Pluggy /connect_token answered without an accessToken")
        return token

    # ----------------------------------------------------------------------------------------------
    # Pagination

    def _iter_pages(self, path: str, params: Params) -> Iterator[list[JSON]]:
        """Pages of either envelope: `{results, next}` (cursor) or `{results, page, totalPages}`."""
        seen_cursors: set[str] = set()
        page_no = int(params["page"]) if params.get("page", "").isdigit() else 1
        while True:
            body = self._call("GET", path, params=params)
            results = _results(body, path)
            if results:
                yield results
            if not isinstance(body, dict):
                return
            if "next" in body:
                cursor = body["next"]
                if not cursor:
                    return
                if not isinstance(cursor, str):
                    raise PermanentError(f"unexpected `next` from Pluggy {path}")
                if cursor in seen_cursors:
                    raise PermanentError(f"Pluggy {path} returned the same cursor twice; stopping a loop")
                seen_cursors.add(cursor)
                path, params = self._follow_next(path, params, cursor)
                continue
            total_pages = body.get("totalPages")
            # Our own counter (not the echoed `page`) bounds the loop even if `page` is ignored.
            if isinstance(total_pages, int) and not isinstance(total_pages, bool) and page_no < total_pages:
                page_no += 1
                params = {**params, "page": str(page_no)}
                continue
            return

    def _follow_next(self, path: str, params: Params, cursor: str) -> tuple[str, Params]:
        """Apply `next`: normally a query string (`?accountId=...&after=<url-encoded cursor>`).

        Its parameters are URL-decoded and merged over the current ones (what appending it does),
        so the whole string is never sent as `after`. A bare cursor value is sent as `after`.
        """
        kept = {k: v for k, v in params.items() if k != "page"}
        text = cursor.strip()
        if text.lower().startswith(("?", "/", "http://", "https://")):
            next_path, next_params = self._resolve(text, what="next cursor", default_path=path)
            return next_path, {**kept, **next_params}
        pairs = _query_params(text)
        if "after" in pairs:  # a query string without its leading "?"
            return path, {**kept, **pairs}
        return path, {**kept, "after": text}  # a bare cursor (base64 may contain "/" and "=")

    def _resolve(self, link: str, *, what: str, default_path: str = _TRANSACTIONS_V2) -> tuple[str, Params]:
        """(path relative to the base URL, query params) of a link, refusing any other origin."""
        parts = urlsplit(link.strip())
        if parts.scheme or parts.netloc:
            origin = self._origin_of(parts)
            # Pluggy's own API origin means "this API" wherever we point (an emulator locally): only its path
            # and query are used, and the API key still goes to our base URL alone.
            if origin not in (self._origin, _PLUGGY_ORIGIN):
                host = parts.hostname or "?"
                raise PermanentError(f"refusing to follow a Pluggy {what} to another host ({host})")
        path = parts.path or default_path
        if not path.startswith("/"):
            path = "/" + path
        if self._base_path and path.startswith(self._base_path + "/"):
            path = path[len(self._base_path) :]
        path = path.rstrip("/") or "/"
        params = _query_params(parts.query)
        if path == _TRANSACTIONS_LEGACY:
            path = _TRANSACTIONS_V2
            params = {_LEGACY_RENAMES.get(k, k): v for k, v in params.items() if k not in _LEGACY_ONLY}
        return path, params

    @staticmethod
    def _origin_of(parts: SplitResult) -> tuple[str, str, int] | None:
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
            return None
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError:
            return None
        return scheme, parts.hostname, port

    # ----------------------------------------------------------------------------------------------
    # API key

    def _current_key(self) -> str:
        if self._api_key is None or self._api_key_expires_at - API_KEY_REFRESH_MARGIN_S <= self._clock():
            return self._authenticate()
        return self._api_key

    def _authenticate(self) -> str:
        self._api_key = None
        client_id, client_secret = self._credentials()
        if not client_id or not client_secret:
            raise ConfigurationError("Pluggy client id or client secret is empty")
        issued_at = self._clock()
        body = self._send("POST", "/auth", body={"clientId": client_id, "clientSecret": client_secret}, with_key=False)
        api_key = body.get("apiKey") if isinstance(body, dict) else None
        if not isinstance(api_key, str) or not api_key:
            raise PluggyAuthError("Pluggy /auth answered without an apiKey")
        exp = _jwt_exp(api_key)
        # An `exp` already inside the refresh margin (skew, odd token) would re-auth on every call and burn
        # the /auth rate limit; fall back to the documented 2 h and let the 401/403 path catch a real expiry.
        if exp is None or exp - API_KEY_REFRESH_MARGIN_S <= issued_at:
            exp = issued_at + API_KEY_LIFETIME_S
        self._api_key = api_key
        self._api_key_expires_at = exp
        logger.info("Pluggy API key obtained", extra={"api_key_expires_at": exp})
        return api_key

    # ----------------------------------------------------------------------------------------------
    # HTTP

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: JSON | None = None,
        idempotent: bool = True,
    ) -> Any:
        """One API call with the key; on 401/403 re-authenticates once and retries once."""
        try:
            return self._send(method, path, params=params, body=body, idempotent=idempotent)
        except _Unauthorized as exc:
            logger.info(
                "Pluggy rejected the API key; re-authenticating",
                extra={"method": method, "path": path, "status": exc.status},
            )
            self._api_key = None
        try:
            return self._send(method, path, params=params, body=body, idempotent=idempotent)
        except _Unauthorized as exc:
            raise PluggyAuthError(
                f"Pluggy authentication failed: {method} {path} -> HTTP {exc.status}"
                f" ({exc.code_description or 'no code'}) even with a fresh API key",
                status=exc.status,
                code_description=exc.code_description,
            ) from None

    def _backoff(self, attempt: int) -> float:
        # Full jitter: spreads retries of many Lambdas that share one NAT IP (limits are per IP).
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)  # noqa: S311 - jitter, not cryptography

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: JSON | None = None,
        with_key: bool = True,
        idempotent: bool = True,
    ) -> Any:
        """Send with retries on 5XX/timeouts/connection errors and short 429 waits; map errors."""
        label = f"{method} {path}"
        url = self._base_url + path
        attempt = 0
        while True:
            attempt += 1
            headers = {"Accept": "application/json", "User-Agent": f"pluggy-pipeline/{__version__}"}
            if with_key:
                headers["X-API-KEY"] = self._current_key()
            if self._pacer is not None:
                self._pacer(pacing_route(method, path))
            self.request_count[label] = self.request_count.get(label, 0) + 1
            started = time.monotonic()
            try:
                resp = self._session.request(
                    method,
                    url,
                    params=params,
                    json=body,
                    headers=headers,
                    timeout=self._timeout,
                    # A redirect would carry X-API-KEY to wherever Location points (requests only strips
                    # Authorization across hosts), so redirects are never followed.
                    allow_redirects=False,
                )
            except (
                requests.exceptions.Timeout,
                requests.exceptions.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                # A connect timeout means the request never left; anything else may have reached Pluggy.
                retryable = idempotent or isinstance(exc, requests.exceptions.ConnectTimeout)
                failure = type(exc).__name__
                if retryable and attempt < self._max_attempts:
                    self._pause(label, attempt, failure, self._backoff(attempt))
                    continue
                raise TransientError(f"Pluggy {label} failed after {attempt} attempt(s): {failure}") from exc
            status = resp.status_code
            logger.debug(
                "Pluggy API call",
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "elapsed_ms": round((time.monotonic() - started) * 1000),
                    "attempt": attempt,
                },
            )
            if 200 <= status < 300:
                return self._parse(resp, label)
            if status == 429:
                wait = self._rate_limit_wait(resp, attempt)
                if wait > self._max_retry_wait or attempt >= self._max_attempts:
                    raise RateLimitedError(f"Pluggy {label} rate limited; retry after {wait:g} s", retry_after=wait)
                self._pause(label, attempt, "HTTP 429", wait)
                continue
            if status >= 500:
                if idempotent and attempt < self._max_attempts:
                    self._pause(label, attempt, f"HTTP {status}", self._backoff(attempt))
                    continue
                raise TransientError(f"Pluggy {label} -> HTTP {status} after {attempt} attempt(s)")
            self._raise_for_client_error(resp, label, with_key=with_key)

    def _pause(self, label: str, attempt: int, failure: str, delay: float) -> None:
        logger.warning(
            "Pluggy call failed; retrying",
            extra={"call": label, "failure": failure, "attempt": attempt, "delay_s": round(delay, 3)},
        )
        self._sleep(delay)

    def _rate_limit_wait(self, resp: requests.Response, attempt: int) -> float:
        # Pluggy's Retry-After is always 60 while RateLimit-Reset is the real time left in the window,
        # so the smaller of the two is the earliest useful retry.
        headers = resp.headers
        candidates = (_seconds(headers.get("Retry-After")), _seconds(headers.get("RateLimit-Reset")))
        waits = [w for w in candidates if w is not None]
        return min(waits) if waits else self._backoff(attempt)

    @staticmethod
    def _parse(resp: requests.Response, label: str) -> Any:
        if not resp.content:
            return None  # 204 or an empty DELETE answer
        try:
            return _loads(resp.content)
        except ValueError as exc:
            # A 2XX with a truncated or non-JSON body is most likely a proxy or network glitch.
            raise TransientError(f"Pluggy {label} answered {resp.status_code} with invalid JSON") from exc

    @staticmethod
    def _raise_for_client_error(resp: requests.Response, label: str, *, with_key: bool) -> NoReturn:
        status = resp.status_code
        code_description, message, data = _error_details(resp)
        if status in (401, 403):
            if with_key:
                raise _Unauthorized(status, code_description)
            # Only /auth is called without a key; its message is left out as it answers about our secret.
            raise PluggyAuthError(
                f"Pluggy authentication failed: {label} -> HTTP {status} {code_description or 'no code'}",
                status=status,
                code_description=code_description,
            )
        detail = " ".join(part for part in (code_description, message) if part) or "no error details"
        if not with_key:
            detail = code_description or "no code"
            message = None
        if status == 404:
            raise PluggyNotFoundError(
                f"Pluggy {label} -> HTTP 404 {detail}",
                code_description=code_description,
                data=data,
                pluggy_message=message,
            )
        raise PluggyRequestError(
            f"Pluggy {label} -> HTTP {status} {detail}",
            status=status,
            code_description=code_description,
            data=data,
            pluggy_message=message,
        )
