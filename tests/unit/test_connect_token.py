"""connect_token.py with in-memory fakes: validation, the webhook URL, Cognito binding, Pluggy's failures."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from pluggy_pipeline import connect_token
from pluggy_pipeline.auth import WebhookAuthenticator
from pluggy_pipeline.config import ConnectTokenSettings, ReceiverSettings
from pluggy_pipeline.connect_token import (
    ApiError,
    ConnectTokenService,
    base_url_from_request,
    parse_request,
)
from pluggy_pipeline.errors import ConfigurationError, PermanentError, TransientError
from pluggy_pipeline.pluggy_client import (
    PluggyAuthError,
    PluggyNotFoundError,
    PluggyRequestError,
    RateLimitedError,
)
from pluggy_pipeline.receiver import webhook_route
from pluggy_pipeline.secrets import StaticSecretProvider, WebhookSecrets, build_secrets, derive_url_token

from tests.conftest import load_event

SECRET = "unit-webhook-secret"
TOKEN = derive_url_token(SECRET)
ITEM_ID = "3f1e9c2a-8b7d-4e6f-a5c4-1d2b3e4f5a6b"
NOW = 1_795_946_400.0  # 2026-11-29T10:00:00Z
DOMAIN = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"


def jwt(exp: float) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'exp': exp})}.c2ln"


ACCESS_TOKEN = jwt(NOW + 1800)


class FakeMinter:
    def __init__(self) -> None:
        self.calls: list[tuple[str | None, dict[str, Any]]] = []
        self.error: Exception | None = None
        self.token = ACCESS_TOKEN

    def create_connect_token(self, item_id: str | None = None, options: Mapping[str, Any] | None = None) -> str:
        self.calls.append((item_id, dict(options or {})))
        if self.error is not None:
            raise self.error
        return self.token


class FailingSecrets:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def get(self) -> WebhookSecrets:
        raise self.error

    def refresh(self) -> WebhookSecrets | None:
        return None


def settings(**env: str) -> ConnectTokenSettings:
    base = {"PLUGGY_CLIENT_ID": "id", "PLUGGY_CLIENT_SECRET": "secret", "WEBHOOK_SECRET": SECRET}
    return ConnectTokenSettings.from_env({**base, **env})


def service(minter: FakeMinter | None = None, secrets: Any = None, **env: str) -> ConnectTokenService:
    provider = secrets or StaticSecretProvider(build_secrets({"current": SECRET}))
    return ConnectTokenService(settings(**env), minter or FakeMinter(), provider, clock=lambda: NOW)


def request(body: Any, *, claims: dict[str, str] | None = None, **context: Any) -> dict[str, Any]:
    """A proxy event for POST /connect-token through the execute-api domain, stage dev."""
    event = load_event("connect_token/valid")
    event["body"] = body if isinstance(body, str) or body is None else json.dumps(body)
    event["requestContext"].update(context)
    if claims is not None:
        event["requestContext"]["authorizer"] = {"claims": claims}
    return event


def refused(svc: ConnectTokenService, event: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        svc.mint(event)
    return caught.value


# --- a valid request -----------------------------------------------------------------------------


def test_a_valid_request_mints_a_token_bound_to_the_user_and_pointed_at_the_token_route() -> None:
    minter = FakeMinter()
    answer = service(minter).mint(load_event("connect_token/valid"))
    [(item_id, options)] = minter.calls
    assert item_id is None
    assert options == {
        "clientUserId": "app-user-42",
        "webhookUrl": f"https://{DOMAIN}/dev/webhooks/pluggy/{TOKEN}",
        "avoidDuplicates": True,
        "oauthRedirectUri": "https://app.example.com/oauth/callback",
        "products": ["ACCOUNTS", "TRANSACTIONS", "CREDIT_CARDS"],
    }
    assert answer == {
        "accessToken": ACCESS_TOKEN,
        "expiresAt": "2026-11-29T10:30:00Z",  # the token's own exp
        "clientUserId": "app-user-42",
        # Connector filters are widget props: Pluggy's token cannot carry them.
        "widgetOptions": {
            "products": ["ACCOUNTS", "TRANSACTIONS", "CREDIT_CARDS"],
            "connectorTypes": ["PERSONAL_BANK"],
            "countries": ["BR"],
        },
    }


def test_update_mode_sends_the_item_id_and_tells_the_widget() -> None:
    minter = FakeMinter()
    answer = service(minter).mint(request({"clientUserId": "u-1", "itemId": ITEM_ID}))
    assert minter.calls[0][0] == ITEM_ID
    assert answer["widgetOptions"] == {"updateItem": ITEM_ID}
    assert "itemId" not in minter.calls[0][1]  # itemId sits beside options, not in them


def test_without_a_readable_exp_the_token_expires_in_the_documented_30_minutes() -> None:
    minter = FakeMinter()
    minter.token = "not-a-jwt"
    assert service(minter).mint(request({"clientUserId": "u-1"}))["expiresAt"] == "2026-11-29T10:30:00Z"
    minter.token = jwt(NOW + 600)
    assert service(minter).mint(request({"clientUserId": "u-1"}))["expiresAt"] == "2026-11-29T10:10:00Z"


# --- the webhook URL -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        {"current": SECRET},
        {"current": SECRET, "previous": "older"},
        {"current": SECRET, "urlToken": "explicit-token_1"},
        {"current": SECRET, "urlToken": "explicit-token_1", "previousUrlToken": "old-token"},
    ],
)
def test_the_webhook_url_passes_the_receiver_s_url_token_check(secret: dict[str, str]) -> None:
    minter = FakeMinter()
    secrets = StaticSecretProvider(build_secrets(secret))
    service(minter, secrets).mint(request({"clientUserId": "u-1"}))
    url = minter.calls[0][1]["webhookUrl"]
    path = url.removeprefix(f"https://{DOMAIN}/dev")
    token = webhook_route(path)
    assert token, url
    assert token == secret.get("urlToken", TOKEN)  # the explicit token when set, as `webhook-url` prints it
    receiver = ReceiverSettings.from_env({"EVENTS_TABLE_NAME": "e", "EVENT_QUEUE_URL": "q"})
    assert WebhookAuthenticator(receiver, secrets).check_url_token(token) is None
    assert WebhookAuthenticator(receiver, secrets).check_url_token(token[:-1] + "x") is not None


@pytest.mark.parametrize(
    ("domain", "full_path", "path", "expected"),
    [
        (DOMAIN, "/dev/connect-token", "/connect-token", f"https://{DOMAIN}/dev"),  # execute-api: the stage
        ("api.example.com", "/connect-token", "/connect-token", "https://api.example.com"),  # custom domain, root
        ("api.example.com", "/pluggy/connect-token", "/connect-token", "https://api.example.com/pluggy"),  # mapping
        ("API.Example.com", "/v1/x/connect-token", "/connect-token", "https://api.example.com/v1/x"),
        ("127.0.0.1:3000", "/connect-token", "/connect-token", "http://127.0.0.1:3000"),  # sam local start-api
        ("localhost:8080", "/local/connect-token", "/connect-token", "http://localhost:8080/local"),
    ],
)
def test_the_base_url_is_the_api_as_the_caller_reached_it(
    domain: str, full_path: str, path: str, expected: str
) -> None:
    event = {"path": path, "requestContext": {"domainName": domain, "path": full_path}}
    assert base_url_from_request(event) == expected


@pytest.mark.parametrize(
    "context",
    [
        {"path": "/dev/connect-token"},  # no domainName
        {"domainName": "evil.example/x", "path": "/dev/connect-token"},
        {"domainName": "a b", "path": "/dev/connect-token"},
        {"domainName": DOMAIN, "path": "/dev/other"},  # does not end with the path
        {"domainName": DOMAIN, "path": "/d?v/connect-token"},
        {"domainName": DOMAIN},
    ],
)
def test_a_request_without_a_usable_api_address_is_a_configuration_error(context: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        base_url_from_request({"path": "/connect-token", "requestContext": context})


def test_webhook_base_url_overrides_the_request_s_address() -> None:
    minter = FakeMinter()
    svc = service(minter, WEBHOOK_BASE_URL="https://hooks.example.com/prod/")
    svc.mint(request({"clientUserId": "u-1"}, domainName="frontend.example.com"))
    assert minter.calls[0][1]["webhookUrl"] == f"https://hooks.example.com/prod/webhooks/pluggy/{TOKEN}"


def test_a_url_token_that_is_not_url_safe_is_refused_as_misconfiguration() -> None:
    secrets = StaticSecretProvider(build_secrets({"current": SECRET, "urlToken": "a/b"}))
    with pytest.raises(ConfigurationError):
        service(FakeMinter(), secrets).mint(request({"clientUserId": "u-1"}))


@pytest.mark.parametrize("value", ["ftp://x", "https://", "https://x?y=1", "not a url"])
def test_a_bad_webhook_base_url_fails_at_cold_start(value: str) -> None:
    with pytest.raises(ConfigurationError):
        settings(WEBHOOK_BASE_URL=value)


def test_settings_need_pluggy_credentials_and_a_webhook_secret() -> None:
    with pytest.raises(ConfigurationError, match="Pluggy credentials"):
        ConnectTokenSettings.from_env({"WEBHOOK_SECRET": SECRET})
    with pytest.raises(ConfigurationError, match="webhook secret"):
        ConnectTokenSettings.from_env({"PLUGGY_CLIENT_ID": "i", "PLUGGY_CLIENT_SECRET": "s"})
    arns = {"PLUGGY_CREDENTIALS_SECRET_ARN": "arn:p", "WEBHOOK_SECRET_ARN": "arn:w"}
    assert ConnectTokenSettings.from_env(arns).secrets.secret_arn == "arn:w"


# --- validation ----------------------------------------------------------------------------------


def fields_of(body: Any, **kwargs: Any) -> dict[str, str]:
    error = refused(service(), request(body, **kwargs))
    assert (error.status, error.error) == (400, "invalid_request"), error
    return dict(error.fields)


def test_every_bad_field_is_named_at_once() -> None:
    fields = fields_of(load_event("connect_token/bad-body")["body"])
    assert set(fields) == {"clientUserId", "itemId", "products", "connectorIds", "oauthRedirectUrl", "webhookUrl"}
    assert fields["clientUserId"] == "required: 1-256 printable characters, no surrounding spaces"
    assert "UUID" in fields["itemId"]
    assert "'TRANSACTION' is not one of ACCOUNTS" in fields["products"]
    assert "-1 is not a connector id" in fields["connectorIds"]
    assert fields["oauthRedirectUrl"] == "unknown field; did you mean oauthRedirectUri?"
    assert "set by the pipeline" in fields["webhookUrl"]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({}, "clientUserId", "required"),
        ({"clientUserId": ""}, "clientUserId", "required"),
        ({"clientUserId": " u-1"}, "clientUserId", "no surrounding spaces"),
        ({"clientUserId": "u\n1"}, "clientUserId", "printable"),
        ({"clientUserId": "x" * 257}, "clientUserId", "1-256"),
        ({"clientUserId": "u", "itemId": 5}, "itemId", "UUID"),
        ({"clientUserId": "u", "avoidDuplicates": "yes"}, "avoidDuplicates", "true or false"),
        ({"clientUserId": "u", "oauthRedirectUri": "http://app.example.com/cb"}, "oauthRedirectUri", "https"),
        ({"clientUserId": "u", "oauthRedirectUri": "javascript:alert(1)"}, "oauthRedirectUri", "https"),
        ({"clientUserId": "u", "oauthRedirectUri": "https://a.example/cb#frag"}, "oauthRedirectUri", "fragment"),
        ({"clientUserId": "u", "oauthRedirectUri": "/relative"}, "oauthRedirectUri", "absolute"),
        ({"clientUserId": "u", "products": []}, "products", "non-empty"),
        ({"clientUserId": "u", "products": "ACCOUNTS"}, "products", "list"),
        ({"clientUserId": "u", "products": ["ACCOUNTS", "ACCOUNTS"]}, "products", "at most once"),
        ({"clientUserId": "u", "connectorTypes": ["BANK"]}, "connectorTypes", "PERSONAL_BANK"),
        ({"clientUserId": "u", "connectorIds": [True]}, "connectorIds", "connector id"),
        ({"clientUserId": "u", "connectorIds": list(range(101))}, "connectorIds", "at most 100"),
        ({"clientUserId": "u", "countries": ["br"]}, "countries", "ISO 3166-1"),
        ({"clientUserId": "u", "options": {"clientUserId": "u"}}, "options", "top level"),
        ({"clientUserId": "u", "color": "blue"}, "color", "unknown field"),
    ],
)
def test_each_field_says_what_it_accepts(body: dict[str, Any], field: str, fragment: str) -> None:
    fields = fields_of(body)
    assert list(fields) == [field]
    assert fragment in fields[field]


@pytest.mark.parametrize(
    "uri",
    ["https://app.example.com/cb?x=1", "myapp://oauth/callback", "com.example.app:/oauth", "http://localhost:5173/cb"],
)
def test_redirect_uris_an_app_uses_are_accepted(uri: str) -> None:
    assert parse_request({"clientUserId": "u", "oauthRedirectUri": uri}, caller_sub=None).oauth_redirect_uri == uri


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (None, 400, "no body"),
        ("", 400, "no body"),
        ('{"clientUserId": "u",', 400, "not valid JSON"),
        ('["u"]', 400, "invalid"),
        ('{"clientUserId": "a", "clientUserId": "b"}', 400, "not valid JSON"),  # which one did the caller mean?
        ('{"clientUserId": "u", "x": NaN}', 400, "not valid JSON"),
        ('{"clientUserId": "' + "u" * 20_000 + '"}', 413, "exceeds"),
    ],
)
def test_bodies_that_are_not_one_json_object_are_refused(body: str | None, status: int, fragment: str) -> None:
    error = refused(service(), request(body))
    assert error.status == status and fragment in error.message


def test_a_base64_body_is_decoded_and_a_broken_one_refused() -> None:
    event = request(None)
    event.update(body=base64.b64encode(b'{"clientUserId": "u-64"}').decode(), isBase64Encoded=True)
    assert service().mint(event)["clientUserId"] == "u-64"
    event["body"] = "***"
    assert refused(service(), event).fields == {"body": "could not be decoded"}


def test_nothing_is_minted_for_a_refused_request() -> None:
    minter = FakeMinter()
    for name in ("bad-body", "missing-client-user-id", "malformed-json", "cognito-other-user"):
        with pytest.raises(ApiError):
            service(minter).mint(load_event(f"connect_token/{name}"))
    assert minter.calls == []


# --- Cognito callers -----------------------------------------------------------------------------

SUB = "5f0c2a9e-7b1d-4c3e-9a8f-2d6b1e4c7a90"


def test_a_signed_in_user_gets_a_token_for_their_own_sub() -> None:
    minter = FakeMinter()
    answer = service(minter).mint(load_event("connect_token/cognito-own-user"))
    assert answer["clientUserId"] == SUB and minter.calls[0][1]["clientUserId"] == SUB
    service(minter).mint(request({"clientUserId": SUB}, claims={"sub": SUB}))  # naming oneself is fine
    assert minter.calls[1][1]["clientUserId"] == SUB


def test_a_signed_in_user_cannot_mint_for_someone_else() -> None:
    error = refused(service(), load_event("connect_token/cognito-other-user"))
    assert (error.status, error.error) == (403, "forbidden")
    assert "clientUserId" in error.fields


@pytest.mark.parametrize("claims", [{"email": "x@example.com"}, {"sub": ""}, {"sub": "a\tb"}])
def test_claims_without_a_usable_sub_are_refused(claims: dict[str, str]) -> None:
    assert refused(service(), request({"clientUserId": "u"}, claims=claims)).status == 403


def test_the_frontend_function_refuses_requests_without_a_user() -> None:
    svc = service(REQUIRE_USER_CLAIMS="true")
    assert refused(svc, request({"clientUserId": "u-1"})).status == 403
    assert svc.mint(request({}, claims={"sub": SUB}))["clientUserId"] == SUB


# --- Pluggy's failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (PluggyAuthError("Pluggy authentication failed", status=401), 502, "pluggy_auth_failed"),
        (TransientError("Pluggy POST /connect_token -> HTTP 503 after 2 attempt(s)"), 502, "pluggy_unavailable"),
        (RateLimitedError("rate limited", retry_after=42.4), 502, "pluggy_unavailable"),
        (PermanentError("Pluggy /connect_token answered without an accessToken"), 502, "pluggy_unavailable"),
        (PluggyRequestError("redirect", status=302), 502, "pluggy_unavailable"),
        (PluggyNotFoundError("404 without an itemId"), 502, "pluggy_unavailable"),
        (
            PluggyRequestError("x", status=400, pluggy_message="options.webhookUrl must be a valid https url"),
            502,
            "pluggy_refused_webhook_url",
        ),
        (PluggyRequestError("x", status=400, pluggy_message="invalid oauthRedirectUri"), 400, "pluggy_rejected"),
    ],
)
def test_pluggy_failures_are_502_and_its_refusals_of_the_input_400(error: Exception, status: int, code: str) -> None:
    minter = FakeMinter()
    minter.error = error
    refusal = refused(service(minter), request({"clientUserId": "u-1"}))
    assert (refusal.status, refusal.error) == (status, code)
    if isinstance(error, RateLimitedError):
        assert refusal.headers == {"Retry-After": "42"}


def test_an_unknown_item_id_is_a_400_with_pluggy_s_message_on_the_field() -> None:
    minter = FakeMinter()
    minter.error = PluggyNotFoundError("x", code_description="ITEM_NOT_FOUND", pluggy_message="item not found")
    refusal = refused(service(minter), request({"clientUserId": "u-1", "itemId": ITEM_ID}))
    assert refusal.body() == {
        "error": "pluggy_rejected",
        "message": "Pluggy refused the request: item not found (ITEM_NOT_FOUND)",
        "fields": {"itemId": "Pluggy: item not found (ITEM_NOT_FOUND)"},
    }


def test_the_webhook_secret_unreadable_is_503_and_unset_is_500() -> None:
    transient = refused(service(secrets=FailingSecrets(TransientError("GetSecretValue throttled"))), request({}))
    assert transient.status == 400  # the body is checked first: nothing is read for a bad request
    error = refused(service(secrets=FailingSecrets(TransientError("throttled"))), request({"clientUserId": "u"}))
    assert (error.status, error.headers) == (503, {"Retry-After": "5"})
    empty = StaticSecretProvider(build_secrets({}))
    with pytest.raises(ConfigurationError):
        service(secrets=empty).mint(request({"clientUserId": "u"}))


# --- handle(): the HTTP answer -------------------------------------------------------------------


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch) -> Any:
    def _use(svc: Any) -> None:
        monkeypatch.setattr(connect_token, "get_service", lambda: svc)

    return _use


def answer(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    response = connect_token.handle(event)
    return response.status_code, dict(response.body), dict(response.headers)  # type: ignore[arg-type]


def test_handle_answers_json_that_no_cache_keeps(use: Any) -> None:
    use(service())
    status, body, headers = answer(load_event("connect_token/valid"))
    assert status == 200 and body["accessToken"] == ACCESS_TOKEN
    assert headers["Cache-Control"] == "no-store" and headers["Content-Type"] == "application/json"
    assert "Access-Control-Allow-Origin" not in headers
    use(service(CORS_ALLOW_ORIGIN="https://app.example.com"))
    status, body, headers = answer(load_event("connect_token/missing-client-user-id"))
    assert status == 400 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"


def test_handle_never_answers_a_stack_trace(use: Any, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def headers(self) -> dict[str, str]:
            return {}

        def mint(self, event: Any) -> dict[str, Any]:
            raise KeyError("a bug of ours")

    use(Broken())
    status, body, _ = answer(load_event("connect_token/valid"))
    assert (status, body) == (500, {"error": "internal_error", "message": "unexpected error; it was logged"})
    assert "Traceback" in caplog.text  # the operator gets it, the caller does not


def test_handle_answers_500_when_misconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connect_token, "get_service", connect_token.get_service.__wrapped__)
    for key in ("PLUGGY_CLIENT_ID", "PLUGGY_CLIENT_SECRET", "PLUGGY_CREDENTIALS_SECRET_ARN", "WEBHOOK_SECRET"):
        monkeypatch.delenv(key, raising=False)
    status, body, _ = answer(load_event("connect_token/valid"))
    assert (status, body["error"]) == (500, "not_configured")


def test_neither_the_token_nor_a_secret_reaches_the_logs(use: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    use(service())
    answer(load_event("connect_token/valid"))
    minter = FakeMinter()
    minter.error = PluggyRequestError("x", status=400, pluggy_message=f"bad webhookUrl https://h/{TOKEN}")
    use(service(minter))
    answer(load_event("connect_token/valid"))
    logged = caplog.text
    assert "connect token minted" in logged
    for secret in (ACCESS_TOKEN, TOKEN, SECRET, "app-user-42"):
        assert secret not in logged


def test_pluggy_s_message_is_passed_on_without_the_url_token(use: Any) -> None:
    minter = FakeMinter()
    minter.error = PluggyRequestError("x", status=400, pluggy_message=f"url https://h/webhooks/pluggy/{TOKEN} refused")
    use(service(minter))
    status, body, _ = answer(load_event("connect_token/valid"))
    assert status == 400 and "https://h/webhooks/pluggy/{token}" in body["message"]
    assert TOKEN not in json.dumps(body)
