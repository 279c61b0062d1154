"""ConnectTokenFunction's domain: mint a Pluggy Connect token for the app, bound to its user, pointed at us.

`POST /connect-token` (AWS_IAM: the app's backend signs with SigV4; or, on the optional frontend API, a
Cognito user) -> `POST /connect_token` at Pluggy with:
- `options.clientUserId`: the caller's user (with Cognito, the token's `sub` and nobody else's), which Pluggy
  stores on the items created with the token and echoes on their item/* webhooks (processor.bind_user);
- `options.webhookUrl`: the pipeline's URL-token route `POST /webhooks/pluggy/{token}` (Pluggy sends an item's
  own webhookUrl without custom headers), its token taken from the webhook secret as the receiver checks it;
- `itemId` (update mode), `avoidDuplicates`, `oauthRedirectUri`, `products` from the body.

Answers `{accessToken, expiresAt, clientUserId, widgetOptions}`: `widgetOptions` are the Connect widget props
the body asked for (`updateItem`, `products`, and the connector filters `connectorTypes`, `connectorIds`,
`countries`, which Pluggy's token cannot carry: the widget applies them). Errors are JSON
`{"error", "message"[, "fields"]}`: 400 bad input (every bad field named), 403 another user's id, 502 when
Pluggy fails, 500/503 for our own faults; never a stack trace, and the token, secrets and URL token are
never logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.metrics import MetricUnit

from pluggy_pipeline import aws
from pluggy_pipeline.config import ConnectTokenSettings
from pluggy_pipeline.errors import ConfigurationError, PipelineError
from pluggy_pipeline.observability import logger, metrics
from pluggy_pipeline.pluggy_client import (
    PluggyAuthError,
    PluggyClient,
    PluggyNotFoundError,
    PluggyRequestError,
    RateLimitedError,
    token_expiry,
)
from pluggy_pipeline.processor import CLIENT_USER_ID_MAX_LENGTH, usable_client_user_id
from pluggy_pipeline.receiver import WEBHOOK_PATH
from pluggy_pipeline.secrets import SecretProvider, pluggy_credentials, provider_from_settings

ROUTE = "/connect-token"
MAX_BODY_BYTES = 16 * 1024
CONNECT_TOKEN_LIFETIME_S = 30 * 60  # documented; used when the token's own `exp` cannot be read
# Pluggy's enums (its Node SDK: PRODUCT_TYPES, CONNECTOR_TYPES); countries are ISO 3166-1 alpha-2 codes.
PRODUCTS = (
    "ACCOUNTS",
    "CREDIT_CARDS",
    "TRANSACTIONS",
    "PAYMENT_DATA",
    "INVESTMENTS",
    "INVESTMENTS_TRANSACTIONS",
    "IDENTITY",
    "BROKERAGE_NOTE",
    "MOVE_SECURITY",
    "LOANS",
    "ACCOUNT_STATEMENTS",
)
CONNECTOR_TYPES = (
    "PERSONAL_BANK",
    "BUSINESS_BANK",
    "INVOICE",
    "INVESTMENT",
    "TELECOMMUNICATION",
    "DIGITAL_ECONOMY",
    "PAYMENT_ACCOUNT",
    "OTHER",
)
MAX_LIST_ENTRIES = 100
MAX_URI_LENGTH = 2048
FIELDS = frozenset(
    {
        "clientUserId",
        "itemId",
        "avoidDuplicates",
        "oauthRedirectUri",
        "products",
        "connectorTypes",
        "connectorIds",
        "countries",
    }
)
# Names a caller is likely to send by mistake, and what they meant.
_DID_YOU_MEAN = {
    "oauthRedirectUrl": "oauthRedirectUri",
    "oauthRedirectURI": "oauthRedirectUri",
    "clientUserID": "clientUserId",
    "userId": "clientUserId",
    "itemID": "itemId",
    "updateItem": "itemId",
    "connectorId": "connectorIds",
    "country": "countries",
    "product": "products",
}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_BASE_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")
_URL_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
_UNSAFE_SCHEMES = frozenset({"javascript", "data", "vbscript", "file", "blob"})
_LOOPBACK_NAMES = frozenset({"localhost", "host.docker.internal"})

CLIENT_USER_ID_RULE = f"required: 1-{CLIENT_USER_ID_MAX_LENGTH} printable characters, no surrounding spaces"


class TokenMinter(Protocol):
    """What this module needs of the Pluggy client (PluggyClient; a fake in tests)."""

    def create_connect_token(self, item_id: str | None = None, options: Mapping[str, Any] | None = None) -> str: ...


@dataclass(frozen=True, slots=True)
class ApiError(Exception):
    """One refusal or failure, as the caller sees it. The only way an error leaves this module."""

    status: int
    error: str  # stable and machine-readable: invalid_request, forbidden, pluggy_unavailable, ...
    message: str
    fields: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.fields:
            body["fields"] = dict(self.fields)
        return body


def invalid(fields: Mapping[str, str], message: str = "the request body is invalid") -> ApiError:
    return ApiError(400, "invalid_request", message, fields)


@dataclass(frozen=True, slots=True)
class ConnectTokenRequest:
    """A validated body: what goes to Pluggy and what goes back to the widget."""

    client_user_id: str
    item_id: str | None = None
    avoid_duplicates: bool | None = None
    oauth_redirect_uri: str | None = None
    products: tuple[str, ...] = ()
    connector_types: tuple[str, ...] = ()
    connector_ids: tuple[int, ...] = ()
    countries: tuple[str, ...] = ()

    def pluggy_options(self, webhook_url: str) -> dict[str, Any]:
        options: dict[str, Any] = {"clientUserId": self.client_user_id, "webhookUrl": webhook_url}
        if self.avoid_duplicates is not None:
            options["avoidDuplicates"] = self.avoid_duplicates
        if self.oauth_redirect_uri:
            options["oauthRedirectUri"] = self.oauth_redirect_uri
        if self.products:
            options["products"] = list(self.products)
        return options

    def widget_options(self) -> dict[str, Any]:
        """The Connect widget props the caller asked for (Pluggy's token cannot carry connector filters)."""
        props: dict[str, Any] = {}
        if self.item_id:
            props["updateItem"] = self.item_id
        for name, values in (
            ("products", self.products),
            ("connectorTypes", self.connector_types),
            ("connectorIds", self.connector_ids),
            ("countries", self.countries),
        ):
            if values:
                props[name] = list(values)
        return props


# -- the body ------------------------------------------------------------------------------------------


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate keys")
    return obj


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def decode_body(body: Any, is_base64: bool) -> dict[str, Any]:
    """The JSON object of a proxy event's body; ApiError 400/413 otherwise."""
    if body is None or body == "":
        raise invalid({"body": "required: a JSON object"}, "the request has no body")
    if not isinstance(body, str):
        raise invalid({"body": "must be a JSON object"})
    try:
        raw = base64.b64decode(body, validate=True) if is_base64 else body.encode("utf-8")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise invalid({"body": "could not be decoded"}) from None
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
    try:
        payload = json.loads(raw, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise invalid({"body": "must be valid JSON, each key once"}, "the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise invalid({"body": "must be a JSON object"})
    return payload


def _is_connector_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


def _is_country(value: Any) -> bool:
    return isinstance(value, str) and bool(_COUNTRY.match(value))


# field -> (what its entries are, the test of one entry, how to say what is accepted)
_LISTS: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    "products": ("products", PRODUCTS.__contains__, "one of " + ", ".join(PRODUCTS)),
    "connectorTypes": ("connector types", CONNECTOR_TYPES.__contains__, "one of " + ", ".join(CONNECTOR_TYPES)),
    "connectorIds": ("connector ids", _is_connector_id, "a connector id (an integer >= 0)"),
    "countries": ("countries", _is_country, "an ISO 3166-1 alpha-2 country code (BR, MX, ...)"),
}


def _list_problem(name: str, value: Any) -> str:
    """ "" when `value` is a valid list for the field, else the reason."""
    what, valid, accepted = _LISTS[name]
    if not isinstance(value, list) or not value or len(value) > MAX_LIST_ENTRIES:
        return f"a non-empty list of at most {MAX_LIST_ENTRIES} {what} (omit the field for all)"
    bad = [entry for entry in value if not valid(entry)]
    if bad:
        return f"{bad[0]!r} is not {accepted}"
    if len(set(value)) != len(value):
        return "each value at most once"
    return ""


def _redirect_uri_problem(value: Any) -> str:
    """ "" when `value` is an acceptable oauthRedirectUri, else the reason."""
    rule = "an absolute https URL (http only on localhost) or your app's own scheme (myapp://oauth), no fragment"
    if not isinstance(value, str) or not value or len(value) > MAX_URI_LENGTH or not value.isprintable():
        return rule
    if any(c.isspace() for c in value):
        return rule
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return rule
    scheme = parts.scheme.lower()
    if not _SCHEME.match(parts.scheme) or scheme in _UNSAFE_SCHEMES or parts.fragment or "#" in value:
        return rule
    if scheme in {"http", "https"}:
        if not host or (scheme == "http" and not _is_loopback(host)):
            return rule
    elif not (parts.netloc or parts.path):
        return rule
    return ""


def _unknown_fields(payload: Mapping[str, Any]) -> dict[str, str]:
    problems: dict[str, str] = {}
    for name in payload:
        if name == "webhookUrl":
            problems[name] = "set by the pipeline (its own webhook route); not accepted from callers"
        elif name == "options":
            problems[name] = "put clientUserId, oauthRedirectUri, avoidDuplicates... at the top level of the body"
        elif name not in FIELDS:
            hint = _DID_YOU_MEAN.get(name)
            problems[name] = f"unknown field; did you mean {hint}?" if hint else "unknown field"
    return problems


def _client_user_id(given: Any, caller_sub: str | None) -> str | None:
    """The body's clientUserId; with a signed-in caller, their `sub` (403 for anyone else's id)."""
    if caller_sub is None:
        return usable_client_user_id(given)
    if given is None or given == caller_sub:
        return caller_sub
    raise ApiError(
        403,
        "forbidden",
        "a signed-in user may only mint tokens for themselves",
        {"clientUserId": "must be your own user id (the `sub` of your token), or omitted"},
    )


def parse_request(payload: Mapping[str, Any], *, caller_sub: str | None) -> ConnectTokenRequest:
    """Validate every field, naming each bad one; with a Cognito caller, clientUserId is their `sub`."""
    problems = _unknown_fields(payload)
    client_user_id = _client_user_id(payload.get("clientUserId"), caller_sub)
    if client_user_id is None:
        problems["clientUserId"] = CLIENT_USER_ID_RULE

    item_id = payload.get("itemId")
    if item_id is not None and not (isinstance(item_id, str) and _UUID.match(item_id)):
        problems["itemId"] = "a Pluggy item id (a UUID), to update that item; omit it to connect a new one"

    avoid = payload.get("avoidDuplicates")
    if avoid is not None and not isinstance(avoid, bool):
        problems["avoidDuplicates"] = "true or false"

    redirect = payload.get("oauthRedirectUri")
    if redirect is not None and (reason := _redirect_uri_problem(redirect)):
        problems["oauthRedirectUri"] = reason

    for name in _LISTS:
        value = payload.get(name)
        if value is not None and (reason := _list_problem(name, value)):
            problems[name] = reason

    if problems or client_user_id is None:
        raise invalid(problems)
    return ConnectTokenRequest(
        client_user_id=client_user_id,
        item_id=item_id,
        avoid_duplicates=avoid,
        oauth_redirect_uri=redirect,
        products=tuple(payload.get("products") or ()),
        connector_types=tuple(payload.get("connectorTypes") or ()),
        connector_ids=tuple(payload.get("connectorIds") or ()),
        countries=tuple(payload.get("countries") or ()),
    )


# -- the caller and the webhook URL -------------------------------------------------------------------


def caller_sub(event: Mapping[str, Any], *, required: bool) -> str | None:
    """The Cognito user's `sub` when the request came through a user-pool authorizer; None for AWS_IAM."""
    context = event.get("requestContext") or {}
    authorizer = context.get("authorizer") if isinstance(context, Mapping) else None
    claims = authorizer.get("claims") if isinstance(authorizer, Mapping) else None
    if not claims:
        if required:
            raise ApiError(403, "forbidden", "this route needs a signed-in user (Cognito user pool token)")
        return None
    sub = claims.get("sub") if isinstance(claims, Mapping) else None
    if not isinstance(sub, str) or usable_client_user_id(sub) is None:
        raise ApiError(403, "forbidden", "the user's token has no usable `sub` claim")
    return sub


def _is_loopback(host: str) -> bool:
    name = host.lower().strip("[]")
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def base_url_from_request(event: Mapping[str, Any]) -> str:
    """The API's base URL as the caller reached it: https://<domainName><requestContext.path minus path>.

    On the execute-api domain that prefix is the stage (`/dev`); on a custom domain, its base path mapping (or
    nothing). `sam local` and the local stack serve plain http on loopback.
    """
    context = event.get("requestContext") or {}
    domain = context.get("domainName") if isinstance(context, Mapping) else None
    full_path = context.get("path") if isinstance(context, Mapping) else None
    path = event.get("path")
    if not (isinstance(domain, str) and _HOST.match(domain)):
        raise ConfigurationError("the request has no usable requestContext.domainName; set WEBHOOK_BASE_URL")
    if not (isinstance(full_path, str) and isinstance(path, str) and path and full_path.endswith(path)):
        raise ConfigurationError("requestContext.path does not end with the request's path; set WEBHOOK_BASE_URL")
    prefix = full_path[: -len(path)].rstrip("/")
    if not _BASE_PATH.match(prefix):
        raise ConfigurationError("unexpected base path in requestContext.path; set WEBHOOK_BASE_URL")
    host = domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain
    scheme = "http" if _is_loopback(host) else "https"
    return f"{scheme}://{domain.lower()}{prefix}"


def webhook_url(base_url: str, url_token: str) -> str:
    """The URL-token route the receiver serves: `<base>/webhooks/pluggy/<token>`."""
    if not _URL_TOKEN.match(url_token):
        raise ConfigurationError("the webhook URL token is empty or not URL-safe (urlToken in the webhook secret)")
    return f"{base_url.rstrip('/')}{WEBHOOK_PATH}/{url_token}"


# -- minting -------------------------------------------------------------------------------------------


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _count(name: str) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


def pluggy_failure(exc: PipelineError, request: ConnectTokenRequest, url_token: str) -> ApiError:
    """Pluggy's answer as the caller's problem (400, Pluggy's own message) or ours (502).

    Pluggy's message may quote the webhookUrl: the URL token is cut out of anything passed on.
    """
    if isinstance(exc, PluggyAuthError):
        _count("PluggyAuthFailed")  # the same alarm as the processor's: our credentials are wrong
        logger.error("Pluggy refused the pipeline's credentials", extra={"error": str(exc)})
        return ApiError(502, "pluggy_auth_failed", "Pluggy refused the pipeline's credentials; try again later")
    caller_input = (isinstance(exc, PluggyNotFoundError) and request.item_id is not None) or (
        isinstance(exc, PluggyRequestError) and 400 <= exc.status < 500
    )
    if isinstance(exc, PluggyNotFoundError | PluggyRequestError) and caller_input:
        code = exc.code_description or f"HTTP {exc.status}"
        said = (exc.pluggy_message or "no message").replace(url_token, "{token}")
        data = json.dumps(exc.data, default=str) if exc.data is not None else ""
        if "webhookurl" in f"{said} {code} {data}".lower():
            # Our part of the request, not the caller's: an operator must look (custom domain, stage URL).
            logger.error("Pluggy refused the pipeline's webhook URL", extra={"status": exc.status, "code": code})
            return ApiError(502, "pluggy_refused_webhook_url", f"Pluggy refused the pipeline's webhook URL: {said}")
        logger.info("Pluggy refused the request", extra={"status": exc.status, "code": code})
        fields = {"itemId": f"Pluggy: {said} ({code})"} if isinstance(exc, PluggyNotFoundError) else {}
        return ApiError(400, "pluggy_rejected", f"Pluggy refused the request: {said} ({code})", fields)
    if isinstance(exc, RateLimitedError):
        logger.warning("Pluggy rate limited the connect token", extra={"retry_after": exc.retry_after})
        wait = {"Retry-After": str(max(1, round(exc.retry_after)))}
        return ApiError(502, "pluggy_unavailable", "Pluggy is rate limiting; retry later", headers=wait)
    logger.warning("Pluggy failed", extra={"error": str(exc)})
    return ApiError(502, "pluggy_unavailable", "Pluggy did not answer as expected; retry later")


class ConnectTokenService:
    def __init__(
        self,
        settings: ConnectTokenSettings,
        pluggy: TokenMinter,
        secrets: SecretProvider,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._pluggy = pluggy
        self._secrets = secrets
        self._clock = clock

    def headers(self) -> dict[str, str]:
        # A Connect token is a credential for 30 minutes: no cache may keep the answer.
        headers = {"Cache-Control": "no-store"}
        if self._settings.cors_allow_origin:
            headers["Access-Control-Allow-Origin"] = self._settings.cors_allow_origin
        return headers

    def mint(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The answer's body for one request; raises ApiError for anything else."""
        sub = caller_sub(event, required=self._settings.require_user_claims)
        payload = decode_body(event.get("body"), bool(event.get("isBase64Encoded")))
        request = parse_request(payload, caller_sub=sub)
        base = self._settings.webhook_base_url or base_url_from_request(event)
        try:
            url_token = self._secrets.get().current_url_token
        except ConfigurationError:
            raise
        except PipelineError as exc:
            logger.warning("could not read the webhook secret", extra={"error": str(exc)})
            raise UNAVAILABLE from None
        options = request.pluggy_options(webhook_url(base, url_token))
        try:
            token = self._pluggy.create_connect_token(request.item_id, options)
        except PipelineError as exc:
            raise pluggy_failure(exc, request, url_token) from None
        expires = token_expiry(token) or self._clock() + CONNECT_TOKEN_LIFETIME_S
        logger.info(
            "connect token minted",
            extra={"updateMode": request.item_id is not None, "signedInUser": sub is not None},
        )
        _count("ConnectTokenMinted")
        return {
            "accessToken": token,
            "expiresAt": _iso(expires),
            "clientUserId": request.client_user_id,
            "widgetOptions": request.widget_options(),
        }


# -- the HTTP side (the route in functions/connect_token/app.py) ---------------------------------------


def _response(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> Response[Any]:
    return Response(status_code=status, content_type="application/json", body=dict(body), headers=dict(headers))


def error_response(error: ApiError, headers: Mapping[str, str] | None = None) -> Response[Any]:
    if error.status >= 500:
        _count("ConnectTokenFailed")
    else:
        _count("ConnectTokenRejected")
    return _response(error.status, error.body(), {**(headers or {}), **error.headers})


NOT_CONFIGURED = ApiError(500, "not_configured", "the pipeline is not configured to mint tokens")
UNAVAILABLE = ApiError(503, "unavailable", "try again shortly", headers={"Retry-After": "5"})


def handle(event: Mapping[str, Any]) -> Response[Any]:
    """One `POST /connect-token`: the minted token, or the error as JSON. Never raises."""
    headers: dict[str, str] = {}
    try:
        service = get_service()
        headers = service.headers()
        return _response(200, service.mint(event), headers)
    except ApiError as error:
        return error_response(error, headers)
    except ConfigurationError as exc:
        logger.error("connect token function misconfigured", extra={"error": str(exc)})
        return error_response(NOT_CONFIGURED, headers)
    except PipelineError as exc:
        logger.warning("transient failure", extra={"error": str(exc)})
        return error_response(UNAVAILABLE, headers)
    except Exception as exc:
        return unexpected_error_response(exc, headers)


def not_found_response() -> Response[Any]:
    return _response(404, {"error": "not_found", "message": "no such resource"}, {})


def unexpected_error_response(exc: Exception, headers: Mapping[str, str] | None = None) -> Response[Any]:
    """A bug of ours: logged with its traceback (never the body or the token), answered without it."""
    logger.exception("unexpected error minting a connect token", extra={"error_type": type(exc).__name__})
    return error_response(ApiError(500, "internal_error", "unexpected error; it was logged"), headers)


@functools.cache
def get_service() -> ConnectTokenService:
    """Built once per container: Pluggy's API key (2 h) and the secret cache (60 s) survive invocations."""
    settings = ConnectTokenSettings.from_env()
    pluggy = PluggyClient(
        settings.pluggy_base_url,
        pluggy_credentials(settings, aws.RECEIVER_CONFIG),
        # An app is waiting: two tries of short timeouts fit the function's 15 s, then 502.
        timeout=(2.0, 5.0),
        max_attempts=2,
        backoff_cap=1.0,
        max_retry_wait=2.0,
    )
    return ConnectTokenService(settings, pluggy, provider_from_settings(settings.secrets, aws.secretsmanager))
