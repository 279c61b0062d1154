"""Unit tests of the Pluggy API client against `responses` mocks (no network, no real sleeping).

The payments methods also run against the local emulator on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import logging
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from pluggy_pipeline import pluggy_client
from pluggy_pipeline.errors import NotFoundError, PermanentError, TransientError
from pluggy_pipeline.pluggy_client import (
    PluggyAuthError,
    PluggyClient,
    PluggyNotFoundError,
    PluggyRequestError,
    RateLimitedError,
)
from responses import matchers

BASE = "https://api.pluggy.ai"
CLIENT_ID = "0b7a8d4e-client-id"
CLIENT_SECRET = "s3cr3t-DO-NOT-LEAK-9f1c"
T0 = 1_800_000_000.0
ITEM_URL = f"{BASE}/items/item-1"
TX_URL = f"{BASE}/v2/transactions"


def make_jwt(exp: float | None, tag: str = "a") -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims: dict[str, Any] = {"sub": CLIENT_ID, "tag": tag}
    if exp is not None:
        claims["exp"] = int(exp)
    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl{tag}"


KEY1 = make_jwt(T0 + 7200, "one")
KEY2 = make_jwt(T0 + 14400, "two")


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Credentials:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> tuple[str, str]:
        self.calls += 1
        return CLIENT_ID, CLIENT_SECRET


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def credentials() -> Credentials:
    return Credentials()


@pytest.fixture
def client(clock: FakeClock, sleeps: list[float], credentials: Credentials) -> PluggyClient:
    return PluggyClient(BASE, credentials, clock=clock, sleep=sleeps.append)


@pytest.fixture
def rsps() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def add_auth(rsps: responses.RequestsMock, *keys: str) -> None:
    for key in keys or (KEY1,):
        rsps.add(responses.POST, f"{BASE}/auth", json={"apiKey": key})


def calls_to(rsps: responses.RequestsMock, method: str, path: str) -> list[Any]:
    return [c for c in rsps.calls if c.request.method == method and urlsplit(c.request.url).path == path]


def query(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


def tx(tx_id: str, amount: str = "10.5") -> str:
    return f'{{"id": "{tx_id}", "amount": {amount}, "accountId": "acc-1"}}'


# --------------------------------------------------------------------------------------------------
# API key


def test_authenticates_lazily_once_and_reuses_the_key(rsps, client, credentials):
    assert credentials.calls == 0  # constructing the client fetches nothing
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, json={"id": "item-1"})

    client.get_item("item-1")
    client.get_item("item-1")

    auth_calls = calls_to(rsps, "POST", "/auth")
    assert len(auth_calls) == 1
    assert credentials.calls == 1
    assert json.loads(auth_calls[0].request.body) == {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}
    item_calls = calls_to(rsps, "GET", "/items/item-1")
    assert [c.request.headers["X-API-KEY"] for c in item_calls] == [KEY1, KEY1]


def test_refreshes_the_key_once_inside_the_five_minute_margin(rsps, client, clock):
    add_auth(rsps, KEY1, KEY2)
    rsps.add(responses.GET, ITEM_URL, json={"id": "item-1"})

    client.get_item("item-1")
    clock.now = T0 + 7200 - 301  # just before exp - 300: still cached
    client.get_item("item-1")
    clock.now = T0 + 7200 - 300  # exp - 300 <= now: refresh
    client.get_item("item-1")

    assert len(calls_to(rsps, "POST", "/auth")) == 2
    keys = [c.request.headers["X-API-KEY"] for c in calls_to(rsps, "GET", "/items/item-1")]
    assert keys == [KEY1, KEY1, KEY2]


def test_opaque_key_is_assumed_to_last_two_hours(rsps, client, clock):
    add_auth(rsps, "opaque-key-1", "opaque-key-2")
    rsps.add(responses.GET, ITEM_URL, json={"id": "item-1"})

    client.get_item("item-1")
    clock.now = T0 + 7200 - 301
    client.get_item("item-1")
    assert len(calls_to(rsps, "POST", "/auth")) == 1
    clock.now = T0 + 7200 - 299
    client.get_item("item-1")
    assert calls_to(rsps, "GET", "/items/item-1")[-1].request.headers["X-API-KEY"] == "opaque-key-2"


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_triggers_one_reauth_and_one_retry(rsps, client, status):
    add_auth(rsps, KEY1, KEY2)
    rsps.add(responses.GET, ITEM_URL, status=status, json={"code": status, "message": "invalid token"})
    rsps.add(responses.GET, ITEM_URL, json={"id": "item-1"})

    assert client.get_item("item-1") == {"id": "item-1"}

    assert len(calls_to(rsps, "POST", "/auth")) == 2
    keys = [c.request.headers["X-API-KEY"] for c in calls_to(rsps, "GET", "/items/item-1")]
    assert keys == [KEY1, KEY2]


def test_second_rejection_after_reauth_is_a_permanent_auth_failure(rsps, client):
    add_auth(rsps, KEY1, KEY2)
    rsps.add(responses.GET, ITEM_URL, status=401, json={"code": 401, "message": "Unauthorized"})

    with pytest.raises(PluggyAuthError) as err:
        client.get_item("item-1")

    assert isinstance(err.value, PermanentError)
    assert "authentication failed" in str(err.value)
    assert err.value.status == 401
    assert len(calls_to(rsps, "POST", "/auth")) == 2
    assert len(calls_to(rsps, "GET", "/items/item-1")) == 2


@pytest.mark.parametrize("code", ["CLIENT_KEYS_UNAUTHORIZED", "CLIENT_DISABLED"])
def test_auth_rejection_raises_pluggy_auth_error_without_retrying(rsps, client, sleeps, code):
    rsps.add(
        responses.POST,
        f"{BASE}/auth",
        status=401,
        json={"code": 401, "message": f"bad keys {CLIENT_SECRET}", "codeDescription": code},
    )

    with pytest.raises(PluggyAuthError) as err:
        client.get_item("item-1")

    assert err.value.code_description == code
    assert code in str(err.value)
    assert CLIENT_SECRET not in str(err.value)  # /auth's message is never echoed
    assert len(calls_to(rsps, "POST", "/auth")) == 1
    assert calls_to(rsps, "GET", "/items/item-1") == []
    assert sleeps == []


# --------------------------------------------------------------------------------------------------
# Retries


def test_5xx_is_retried_with_exponential_full_jitter_then_succeeds(rsps, client, sleeps, monkeypatch):
    monkeypatch.setattr(pluggy_client.random, "uniform", lambda low, high: high)  # the jitter ceiling
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, status=500, body="oops")
    rsps.add(responses.GET, ITEM_URL, status=503, json={"code": 503, "message": "maintenance"})
    rsps.add(responses.GET, ITEM_URL, json={"id": "item-1"})

    assert client.get_item("item-1") == {"id": "item-1"}
    assert sleeps == [0.5, 1.0]
    assert len(calls_to(rsps, "GET", "/items/item-1")) == 3


def test_5xx_exhausted_raises_transient_error(rsps, client, sleeps):
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, status=502, body="<html>bad gateway</html>")

    with pytest.raises(TransientError) as err:
        client.get_item("item-1")

    assert not isinstance(err.value, RateLimitedError)
    assert "502" in str(err.value)
    assert len(calls_to(rsps, "GET", "/items/item-1")) == 4  # max_attempts
    assert len(sleeps) == 3
    assert all(0.0 <= s <= cap for s, cap in zip(sleeps, [0.5, 1.0, 2.0], strict=True))


def test_backoff_is_capped(clock, sleeps, credentials, rsps, monkeypatch):
    monkeypatch.setattr(pluggy_client.random, "uniform", lambda low, high: high)
    client = PluggyClient(BASE, credentials, max_attempts=6, backoff_cap=1.5, clock=clock, sleep=sleeps.append)
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, status=500)

    with pytest.raises(TransientError):
        client.get_item("item-1")
    assert sleeps == [0.5, 1.0, 1.5, 1.5, 1.5]


@pytest.mark.parametrize(
    "failure",
    [
        requests.exceptions.ConnectTimeout("connect timed out"),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ConnectionError("connection reset"),
    ],
)
def test_timeouts_and_connection_errors_are_retried(rsps, client, sleeps, failure):
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, body=failure)
    rsps.add(responses.GET, ITEM_URL, json={"id": "item-1"})

    assert client.get_item("item-1") == {"id": "item-1"}
    assert len(sleeps) == 1


def test_persistent_timeout_becomes_transient_error(rsps, client, sleeps):
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, body=requests.exceptions.ReadTimeout("read timed out"))

    with pytest.raises(TransientError) as err:
        client.get_item("item-1")
    assert isinstance(err.value.__cause__, requests.exceptions.ReadTimeout)
    assert len(sleeps) == 3


def test_every_request_carries_the_timeout(rsps, clock, sleeps, credentials):
    seen: list[Any] = []

    class RecordingSession(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            seen.append(kwargs.get("timeout"))
            return super().request(*args, **kwargs)

    client = PluggyClient(
        BASE, credentials, session=RecordingSession(), timeout=(1.0, 2.0), clock=clock, sleep=sleeps.append
    )
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, json={"id": "item-1"})
    client.get_item("item-1")
    assert seen == [(1.0, 2.0), (1.0, 2.0)]


def test_webhook_creation_is_not_retried_after_a_5xx(rsps, client, sleeps):
    add_auth(rsps)
    rsps.add(responses.POST, f"{BASE}/webhooks", status=500)

    with pytest.raises(TransientError):
        client.create_webhook("https://example.com/hook")
    assert len(calls_to(rsps, "POST", "/webhooks")) == 1  # a retry could register it twice
    assert sleeps == []


# --------------------------------------------------------------------------------------------------
# Rate limits


def test_429_with_short_retry_after_sleeps_that_long_then_succeeds(rsps, client, sleeps):
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, status=429, headers={"Retry-After": "2"}, json={"code": 429})
    rsps.add(responses.GET, ITEM_URL, json={"id": "item-1"})

    assert client.get_item("item-1") == {"id": "item-1"}
    assert sleeps == [2.0]


def test_429_with_long_ratelimit_reset_raises_without_sleeping(rsps, client, sleeps):
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, status=429, headers={"RateLimit-Reset": "45"}, json={"code": 429})

    with pytest.raises(RateLimitedError) as err:
        client.get_item("item-1")

    assert isinstance(err.value, TransientError)
    assert err.value.retry_after == 45.0
    assert sleeps == []
    assert len(calls_to(rsps, "GET", "/items/item-1")) == 1


def test_429_uses_the_earlier_of_retry_after_and_ratelimit_reset(rsps, client, sleeps):
    add_auth(rsps)
    headers = {"Retry-After": "60", "RateLimit-Reset": "3", "RateLimit-Limit": "360"}
    rsps.add(responses.GET, ITEM_URL, status=429, headers=headers)
    rsps.add(responses.GET, ITEM_URL, json={"id": "item-1"})

    client.get_item("item-1")
    assert sleeps == [3.0]


def test_429_on_every_attempt_ends_in_rate_limited_error(rsps, client, sleeps):
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, status=429, headers={"Retry-After": "1"})

    with pytest.raises(RateLimitedError) as err:
        client.get_item("item-1")
    assert sleeps == [1.0, 1.0, 1.0]
    assert err.value.retry_after == 1.0


# --------------------------------------------------------------------------------------------------
# Error mapping and JSON


def test_404_item_is_not_found_with_code_description(rsps, client):
    add_auth(rsps)
    rsps.add(
        responses.GET,
        ITEM_URL,
        status=404,
        json={"code": 404, "codeDescription": "ITEM_NOT_FOUND", "message": "item not found"},
    )

    with pytest.raises(NotFoundError) as err:
        client.get_item("item-1")
    assert isinstance(err.value, PluggyNotFoundError)
    assert err.value.code_description == "ITEM_NOT_FOUND"
    assert "ITEM_NOT_FOUND" in str(err.value)
    assert err.value.pluggy_message == "item not found"


def test_errors_keep_pluggy_s_own_message_for_answers_that_pass_it_on(rsps, client):
    add_auth(rsps)
    message = "oauthRedirectUri must be a valid url"
    rsps.add(responses.POST, f"{BASE}/connect_token", status=400, json={"code": 400, "message": message})
    with pytest.raises(PluggyRequestError) as err:
        client.create_connect_token(options={"oauthRedirectUri": "x"})
    assert (err.value.status, err.value.pluggy_message) == (400, message)
    rsps.add(responses.POST, f"{BASE}/connect_token", status=422, body="<html>no json</html>")
    with pytest.raises(PluggyRequestError) as err:
        client.create_connect_token()
    assert err.value.pluggy_message is None


def test_auth_s_message_is_never_kept(rsps, client):
    rsps.add(responses.POST, f"{BASE}/auth", status=400, json={"message": f"bad body {CLIENT_SECRET}"})
    with pytest.raises(PluggyRequestError) as err:
        client.get_item("item-1")
    assert err.value.pluggy_message is None and CLIENT_SECRET not in str(err.value)


def test_token_expiry_reads_a_jwt_s_exp_and_nothing_else():
    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    assert pluggy_client.token_expiry(f"{part({'alg': 'none'})}.{part({'exp': 1800})}.sig") == 1800.0
    assert pluggy_client.token_expiry(f"{part({})}.{part({'exp': 'soon'})}.sig") is None
    assert pluggy_client.token_expiry("opaque") is None


def test_400_is_a_permanent_request_error_and_not_retried(rsps, client, sleeps):
    add_auth(rsps)
    rsps.add(
        responses.GET,
        TX_URL,
        status=400,
        json={
            "code": 400,
            "codeDescription": "IDS_PARAMETER_EXCEEDS_MAX_LENGTH",
            "message": "too many ids",
            "data": {"max": 500},
        },
    )

    with pytest.raises(PluggyRequestError) as err:
        list(client.iter_transactions("acc-1"))
    assert not isinstance(err.value, NotFoundError)
    assert (err.value.status, err.value.code_description, err.value.data) == (
        400,
        "IDS_PARAMETER_EXCEEDS_MAX_LENGTH",
        {"max": 500},
    )
    assert len(calls_to(rsps, "GET", "/v2/transactions")) == 1
    assert sleeps == []


def test_non_json_error_body_is_tolerated(rsps, client):
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, status=409, body="<html>conflict</html>")

    with pytest.raises(PluggyRequestError) as err:
        client.get_item("item-1")
    assert err.value.status == 409
    assert err.value.code_description is None


def test_redirects_are_not_followed(rsps, client):
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, status=302, headers={"Location": "https://evil.example/steal"})
    rsps.add(responses.GET, "https://evil.example/steal", json={})

    with pytest.raises(PluggyRequestError) as err:
        client.get_item("item-1")
    assert err.value.status == 302
    assert all("evil.example" not in c.request.url for c in rsps.calls)


def test_invalid_json_on_success_is_transient(rsps, client):
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, body='{"id": "item-1", "stat')

    with pytest.raises(TransientError):
        client.get_item("item-1")


def test_amounts_are_decimal_and_unknown_fields_are_kept(rsps, client):
    add_auth(rsps)
    body = (
        '{"id": "item-1", "status": "UPDATED", "consecutiveFailedLoginAttempts": 0,'
        ' "brandNewField": {"nested": [1, 0.1]}, "score": 0.1}'
    )
    rsps.add(responses.GET, ITEM_URL, body=body, content_type="application/json")

    item = client.get_item("item-1")

    assert item["brandNewField"] == {"nested": [1, Decimal("0.1")]}
    assert type(item["score"]) is Decimal
    assert item["score"] == Decimal("0.1")
    assert type(item["consecutiveFailedLoginAttempts"]) is int


def test_ids_cannot_escape_their_path_segment(rsps, client):
    add_auth(rsps)
    rsps.add(responses.GET, f"{BASE}/items/..%2Fwebhooks", json={"id": "x"})

    client.get_item("../webhooks")
    assert calls_to(rsps, "GET", "/items/..%2Fwebhooks")
    with pytest.raises(PermanentError):
        client.get_item("..")


# --------------------------------------------------------------------------------------------------
# Accounts and transactions


def test_list_accounts_follows_extra_pages(rsps, client):
    add_auth(rsps)
    rsps.add(
        responses.GET,
        f"{BASE}/accounts",
        match=[matchers.query_param_matcher({"itemId": "item-1"})],
        body='{"page": 1, "total": 3, "totalPages": 2, "results": [{"id": "a1", "balance": 100.10},'
        ' {"id": "a2", "balance": 0.1}]}',
    )
    rsps.add(
        responses.GET,
        f"{BASE}/accounts",
        match=[matchers.query_param_matcher({"itemId": "item-1", "page": "2"})],
        json={"page": 2, "total": 3, "totalPages": 2, "results": [{"id": "a3"}]},
    )

    accounts = client.list_accounts("item-1")

    assert [a["id"] for a in accounts] == ["a1", "a2", "a3"]
    assert accounts[0]["balance"] == Decimal("100.10")
    assert len(calls_to(rsps, "GET", "/accounts")) == 2


def test_v2_transactions_follow_next_over_three_pages(rsps, client):
    add_auth(rsps)
    # Cursors are base64 with "+", "/" and "=", URL-encoded inside `next`.
    first = {"accountId": "acc-1", "createdAtFrom": "2025-01-01T00:00:00.000Z"}
    rsps.add(
        responses.GET,
        TX_URL,
        match=[matchers.query_param_matcher(first)],
        body=f'{{"results": [{tx("t1", "0.1")}], "next": "?accountId=acc-1&after=YWJj%2BZGVm%2F%3D"}}',
    )
    rsps.add(
        responses.GET,
        TX_URL,
        match=[matchers.query_param_matcher({**first, "after": "YWJj+ZGVm/="})],
        body=f'{{"results": [{tx("t2")}, {tx("t3")}], "next": "?accountId=acc-1&after=cGFnZTM%3D"}}',
    )
    rsps.add(
        responses.GET,
        TX_URL,
        match=[matchers.query_param_matcher({**first, "after": "cGFnZTM="})],
        body=f'{{"results": [{tx("t4")}], "next": null}}',
    )

    pages = list(client.iter_transactions("acc-1", created_at_from="2025-01-01T00:00:00.000Z"))

    assert [[t["id"] for t in page] for page in pages] == [["t1"], ["t2", "t3"], ["t4"]]
    assert pages[0][0]["amount"] == Decimal("0.1")
    assert len(calls_to(rsps, "GET", "/v2/transactions")) == 3


def test_cursor_loop_is_detected(rsps, client):
    add_auth(rsps)
    rsps.add(responses.GET, TX_URL, body=f'{{"results": [{tx("t1")}], "next": "?accountId=acc-1&after=AAA"}}')

    with pytest.raises(PermanentError, match="same cursor"):
        list(client.iter_transactions("acc-1"))
    assert len(calls_to(rsps, "GET", "/v2/transactions")) == 2


def test_bare_cursor_in_next_is_sent_as_after(rsps, client):
    add_auth(rsps)
    rsps.add(
        responses.GET,
        TX_URL,
        match=[matchers.query_param_matcher({"accountId": "acc-1"})],
        body=f'{{"results": [{tx("t1")}], "next": "YWJj/ZA=="}}',
    )
    rsps.add(
        responses.GET,
        TX_URL,
        match=[matchers.query_param_matcher({"accountId": "acc-1", "after": "YWJj/ZA=="})],
        body='{"results": [], "next": null}',
    )

    assert [[t["id"] for t in p] for p in client.iter_transactions("acc-1")] == [["t1"]]
    assert len(calls_to(rsps, "GET", "/v2/transactions")) == 2


def test_created_at_from_cannot_be_combined_with_date_from(client):
    with pytest.raises(ValueError, match="createdAtFrom"):
        client.iter_transactions("acc-1", created_at_from="2025-01-01T00:00:00.000Z", date_from="2025-01-01")


def test_ids_are_sent_in_chunks_of_at_most_500(rsps, client):
    add_auth(rsps)
    ids = [f"tx-{n:04d}" for n in range(1201)]

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        wanted = parse_qs(urlsplit(request.url).query)["ids"][0].split(",")
        return 200, {}, json.dumps({"results": [{"id": i} for i in wanted], "next": None})

    rsps.add_callback(responses.GET, TX_URL, callback=answer)

    found = client.get_transactions_by_ids("acc-1", ids)

    calls = calls_to(rsps, "GET", "/v2/transactions")
    sizes = [len(query(c)["ids"][0].split(",")) for c in calls]
    assert sizes == [500, 500, 201]
    assert all(query(c)["accountId"] == ["acc-1"] for c in calls)
    assert [t["id"] for t in found] == ids


def test_no_ids_means_no_request(rsps, client):
    assert client.get_transactions_by_ids("acc-1", []) == []
    assert len(rsps.calls) == 0


# --------------------------------------------------------------------------------------------------
# createdTransactionsLink


def test_iter_link_with_v2_cursor_envelope(rsps, client):
    add_auth(rsps)
    link = f"{BASE}/v2/transactions?accountId=acc-1&createdAtFrom=2025-02-01T10%3A00%3A00.000Z"
    base_q = {"accountId": "acc-1", "createdAtFrom": "2025-02-01T10:00:00.000Z"}
    rsps.add(
        responses.GET,
        TX_URL,
        match=[matchers.query_param_matcher(base_q)],
        body=f'{{"results": [{tx("t1")}], "next": "?accountId=acc-1&after=Q1Ix"}}',
    )
    rsps.add(
        responses.GET,
        TX_URL,
        match=[matchers.query_param_matcher({**base_q, "after": "Q1Ix"})],
        body=f'{{"results": [{tx("t2")}], "next": null}}',
    )

    pages = list(client.iter_link(link, account_id="acc-1"))

    assert [[t["id"] for t in p] for p in pages] == [["t1"], ["t2"]]
    assert all(c.request.headers.get("X-API-KEY") == KEY1 for c in calls_to(rsps, "GET", "/v2/transactions"))


def test_iter_link_with_page_numbered_envelope(rsps, client):
    add_auth(rsps)
    base_q = {"accountId": "acc-1", "createdAtFrom": "2025-02-01T10:00:00.000Z"}
    rsps.add(
        responses.GET,
        TX_URL,
        match=[matchers.query_param_matcher(base_q)],
        body=f'{{"page": 1, "total": 3, "totalPages": 2, "results": [{tx("t1")}, {tx("t2")}]}}',
    )
    rsps.add(
        responses.GET,
        TX_URL,
        match=[matchers.query_param_matcher({**base_q, "page": "2"})],
        body=f'{{"page": 2, "total": 3, "totalPages": 2, "results": [{tx("t3")}]}}',
    )

    pages = list(client.iter_link("/v2/transactions?accountId=acc-1&createdAtFrom=2025-02-01T10:00:00.000Z"))

    assert [[t["id"] for t in p] for p in pages] == [["t1", "t2"], ["t3"]]


def test_iter_link_rewrites_legacy_transactions_path_to_v2(rsps, client):
    add_auth(rsps)
    link = f"{BASE}/transactions?accountId=acc-1&from=2025-02-01&to=2025-02-28&page=1&pageSize=500"
    # v2 names the date filters dateFrom/dateTo and has no page/pageSize.
    wanted = {"accountId": "acc-1", "dateFrom": "2025-02-01", "dateTo": "2025-02-28"}
    rsps.add(
        responses.GET,
        TX_URL,
        match=[matchers.query_param_matcher(wanted)],
        body=f'{{"results": [{tx("t1")}], "next": null}}',
    )
    rsps.add(responses.GET, f"{BASE}/transactions", status=410)

    pages = list(client.iter_link(link, account_id="acc-1"))

    assert [[t["id"] for t in p] for p in pages] == [["t1"]]
    assert calls_to(rsps, "GET", "/transactions") == []


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.example/v2/transactions?accountId=acc-1",
        "https://api.pluggy.ai.evil.example/v2/transactions?accountId=acc-1",
        "https://api.pluggy.ai@evil.example/v2/transactions?accountId=acc-1",
        "http://api.pluggy.ai/v2/transactions?accountId=acc-1",
        "https://api.pluggy.ai:8443/v2/transactions?accountId=acc-1",
        "//evil.example/v2/transactions?accountId=acc-1",
    ],
)
def test_iter_link_refuses_another_origin(rsps, client, credentials, link):
    with pytest.raises(PermanentError, match="another host"):
        list(client.iter_link(link))
    assert len(rsps.calls) == 0
    assert credentials.calls == 0  # not even an /auth call


def test_a_production_link_is_followed_against_the_configured_base_url(rsps, credentials, clock, sleeps):
    """The events/ files carry api.pluggy.ai links; pointed at an emulator, only their path and query count."""
    local = "http://127.0.0.1:8123"
    emulated = PluggyClient(local, credentials, clock=clock, sleep=sleeps.append)
    rsps.add(responses.POST, f"{local}/auth", json={"apiKey": KEY1})
    rsps.add(
        responses.GET,
        f"{local}/v2/transactions",
        match=[matchers.query_param_matcher({"accountId": "acc-1", "createdAtFrom": "2025-02-01T10:00:00.000Z"})],
        body=f'{{"results": [{tx("t1")}], "next": null}}',
    )
    link = f"{BASE}/v2/transactions?accountId=acc-1&createdAtFrom=2025-02-01T10%3A00%3A00.000Z"
    assert [[t["id"] for t in p] for p in emulated.iter_link(link, account_id="acc-1")] == [["t1"]]
    assert all(urlsplit(c.request.url).netloc == "127.0.0.1:8123" for c in rsps.calls)  # the key stayed local
    with pytest.raises(PermanentError, match="another host"):
        emulated.iter_link("https://evil.example/v2/transactions?accountId=acc-1", account_id="acc-1")


def test_iter_link_refuses_an_account_mismatch_and_other_paths(rsps, client):
    with pytest.raises(PermanentError, match="accountId"):
        client.iter_link(f"{BASE}/v2/transactions?accountId=acc-2", account_id="acc-1")
    with pytest.raises(PermanentError, match="unexpected path"):
        client.iter_link(f"{BASE}/webhooks")
    assert len(rsps.calls) == 0


# --------------------------------------------------------------------------------------------------
# Payments

PR_URL = f"{BASE}/payments/requests/pr-1"


def test_payment_getters_call_their_paths(rsps, client):
    add_auth(rsps)
    rsps.add(responses.GET, PR_URL, json={"id": "pr-1", "status": "COMPLETED", "amount": 10.1})
    rsps.add(responses.GET, f"{BASE}/payments/intents/pi-1", json={"id": "pi-1", "status": "PAYMENT_COMPLETED"})
    rsps.add(responses.GET, f"{PR_URL}/schedules/s-1", json={"id": "s-1", "status": "SCHEDULED"})

    assert client.get_payment_request("pr-1")["amount"] == Decimal("10.1")
    assert client.get_payment_intent("pi-1")["status"] == "PAYMENT_COMPLETED"
    assert client.get_payment_schedule("pr-1", "s-1") == {"id": "s-1", "status": "SCHEDULED"}
    assert client.request_count == {
        "POST /auth": 1,
        "GET /payments/requests/pr-1": 1,
        "GET /payments/intents/pi-1": 1,
        "GET /payments/requests/pr-1/schedules/s-1": 1,
    }


@pytest.mark.parametrize(
    ("call", "url", "code"),
    [
        (lambda c: c.get_payment_request("pr-1"), PR_URL, "PAYMENT_REQUEST_NOT_FOUND"),
        (lambda c: c.get_payment_intent("pi-1"), f"{BASE}/payments/intents/pi-1", "PAYMENT_INTENT_NOT_FOUND"),
        (lambda c: c.list_payment_schedules("pr-1"), f"{PR_URL}/schedules", "PAYMENT_REQUEST_NOT_FOUND"),
    ],
)
def test_payment_404_is_not_found_with_code_description(rsps, client, call, url, code):
    add_auth(rsps)
    rsps.add(responses.GET, url, status=404, json={"code": 404, "message": "not found", "codeDescription": code})

    with pytest.raises(PluggyNotFoundError) as err:
        call(client)
    assert err.value.code_description == code


def test_payment_ids_cannot_escape_their_path_segment(rsps, client):
    add_auth(rsps)
    rsps.add(responses.GET, f"{BASE}/payments/requests/..%2Fintents%2Fx", json={"id": "x"})
    rsps.add(responses.GET, f"{BASE}/payments/requests/a%2Fb/schedules/c%3Fd", json={"id": "c?d"})

    client.get_payment_request("../intents/x")
    client.get_payment_schedule("a/b", "c?d")
    assert calls_to(rsps, "GET", "/payments/requests/..%2Fintents%2Fx")
    assert calls_to(rsps, "GET", "/payments/requests/a%2Fb/schedules/c%3Fd")
    for bad in (lambda: client.get_payment_intent(".."), lambda: client.get_payment_schedule("pr-1", "")):
        with pytest.raises(PermanentError):
            bad()
    with pytest.raises(PermanentError):
        client.list_payment_intents("")


def test_list_payment_schedules_and_intents_follow_pages(rsps, client):
    add_auth(rsps)
    rsps.add(
        responses.GET,
        f"{PR_URL}/schedules",
        json={"page": 1, "total": 2, "totalPages": 1, "results": [{"id": "s-1"}, {"id": "s-2"}]},
    )
    intents = f"{BASE}/payments/intents"
    rsps.add(
        responses.GET,
        intents,
        match=[matchers.query_param_matcher({"paymentRequestId": "pr-1"})],
        json={"page": 1, "total": 3, "totalPages": 2, "results": [{"id": "pi-1"}, {"id": "pi-2"}]},
    )
    rsps.add(
        responses.GET,
        intents,
        match=[matchers.query_param_matcher({"paymentRequestId": "pr-1", "page": "2"})],
        json={"page": 2, "total": 3, "totalPages": 2, "results": [{"id": "pi-3"}]},
    )

    assert [s["id"] for s in client.list_payment_schedules("pr-1")] == ["s-1", "s-2"]
    assert [i["id"] for i in client.list_payment_intents("pr-1")] == ["pi-1", "pi-2", "pi-3"]
    assert len(calls_to(rsps, "GET", "/payments/intents")) == 2


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (405, {"code": 405, "message": "Method Not Allowed"}),
        (404, {"code": 404, "message": "Cannot GET /payments/requests/pr-1/schedules/s-2"}),  # no such route
        (404, {"code": 404, "message": "not found", "codeDescription": "SCHEDULED_PAYMENT_NOT_FOUND"}),
    ],
)
def test_get_payment_schedule_falls_back_to_the_list(rsps, client, status, body):
    add_auth(rsps)
    rsps.add(responses.GET, f"{PR_URL}/schedules/s-2", status=status, json=body)
    page = {"page": 1, "total": 2, "totalPages": 1, "results": [{"id": "s-1"}, {"id": "s-2", "status": "ERROR"}]}
    rsps.add(responses.GET, f"{PR_URL}/schedules", json=page)

    assert client.get_payment_schedule("pr-1", "s-2") == {"id": "s-2", "status": "ERROR"}
    assert len(calls_to(rsps, "GET", "/payments/requests/pr-1/schedules/s-2")) == 1
    assert len(calls_to(rsps, "GET", "/payments/requests/pr-1/schedules")) == 1


def test_get_payment_schedule_reports_an_absent_schedule(rsps, client):
    add_auth(rsps)
    rsps.add(responses.GET, f"{PR_URL}/schedules/s-9", status=405, json={"code": 405, "message": "Method Not Allowed"})
    rsps.add(
        responses.GET, f"{PR_URL}/schedules", json={"page": 1, "total": 1, "totalPages": 1, "results": [{"id": "s-1"}]}
    )

    with pytest.raises(PluggyNotFoundError) as err:
        client.get_payment_schedule("pr-1", "s-9")
    assert err.value.code_description == "SCHEDULED_PAYMENT_NOT_FOUND"
    assert "s-9" in str(err.value)


def test_get_payment_schedule_of_an_unknown_request_does_not_list(rsps, client):
    add_auth(rsps)
    body = {"code": 404, "message": "payment request not found", "codeDescription": "PAYMENT_REQUEST_NOT_FOUND"}
    rsps.add(responses.GET, f"{PR_URL}/schedules/s-1", status=404, json=body)

    with pytest.raises(PluggyNotFoundError) as err:
        client.get_payment_schedule("pr-1", "s-1")
    assert err.value.code_description == "PAYMENT_REQUEST_NOT_FOUND"
    assert calls_to(rsps, "GET", "/payments/requests/pr-1/schedules") == []


def test_get_payment_schedule_does_not_hide_other_errors(rsps, client, sleeps):
    add_auth(rsps)
    rsps.add(responses.GET, f"{PR_URL}/schedules/s-1", status=400, json={"code": 400, "message": "bad"})

    with pytest.raises(PluggyRequestError) as err:
        client.get_payment_schedule("pr-1", "s-1")
    assert err.value.status == 400
    assert calls_to(rsps, "GET", "/payments/requests/pr-1/schedules") == []


@pytest.fixture
def emulator() -> Any:
    from pluggy_emulator import PluggyEmulator

    with PluggyEmulator(page_size=2) as emu:
        yield emu


@pytest.fixture
def emulator_client(emulator) -> Any:
    pluggy = PluggyClient(
        emulator.base_url, lambda: ("emulator-client-id", "emulator-client-secret"), sleep=lambda s: None
    )
    yield pluggy
    pluggy.close()


def test_payment_methods_against_the_emulator(emulator, emulator_client):
    emulator.create_payment_request("pr-1", amount=12.3, schedule={"type": "CUSTOM"})
    for intent in ("pi-1", "pi-2", "pi-3"):
        emulator.send_payment_event("payment_intent/error", payment_request_id="pr-1", payment_intent_id=intent)
    emulator.send_payment_event("payment_intent/completed", payment_request_id="pr-1", payment_intent_id="pi-4")
    emulator.send_payment_event("scheduled_payment/created", payment_request_id="pr-1", scheduled_payment_id="s-1")
    emulator.send_payment_event("scheduled_payment/completed", payment_request_id="pr-1", scheduled_payment_id="s-1")
    truth = emulator.truth()["payments"]

    request = emulator_client.get_payment_request("pr-1")
    assert request == json.loads(json.dumps(truth["requests"]["pr-1"]), parse_float=Decimal)
    assert (request["status"], request["amount"]) == ("SCHEDULED", Decimal("12.3"))
    assert emulator_client.get_payment_intent("pi-4")["status"] == "PAYMENT_COMPLETED"
    intents = emulator_client.list_payment_intents("pr-1")  # two pages of 2
    assert [i["id"] for i in intents] == ["pi-1", "pi-2", "pi-3", "pi-4"]
    assert emulator_client.list_payment_schedules("pr-1") == [truth["schedules"]["pr-1"]["s-1"]]
    schedule = emulator_client.get_payment_schedule("pr-1", "s-1")
    assert schedule["status"] == "COMPLETED" and schedule["endToEndId"]
    assert emulator_client.request_count["GET /payments/requests/pr-1/schedules/s-1"] == 1
    assert emulator_client.request_count["GET /payments/requests/pr-1/schedules"] == 1  # only the list call above


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda c: c.get_payment_request("nope"), "PAYMENT_REQUEST_NOT_FOUND"),
        (lambda c: c.get_payment_intent("nope"), "PAYMENT_INTENT_NOT_FOUND"),
        (lambda c: c.list_payment_schedules("nope"), "PAYMENT_REQUEST_NOT_FOUND"),
        (lambda c: c.get_payment_schedule("nope", "s-1"), "PAYMENT_REQUEST_NOT_FOUND"),
        (lambda c: c.get_payment_schedule("pr-1", "nope"), "SCHEDULED_PAYMENT_NOT_FOUND"),
    ],
)
def test_payment_not_found_against_the_emulator(emulator, emulator_client, call, code):
    emulator.send_payment_event("scheduled_payment/created", payment_request_id="pr-1", scheduled_payment_id="s-1")
    with pytest.raises(PluggyNotFoundError) as err:
        call(emulator_client)
    assert err.value.code_description == code


def test_a_forged_payment_webhook_is_not_confirmed_by_the_emulator(emulator, emulator_client):
    emulator.send_event("payment_intent/completed", paymentRequestId="pr-1", paymentIntentId="pi-1")
    with pytest.raises(PluggyNotFoundError):
        emulator_client.get_payment_intent("pi-1")


# --------------------------------------------------------------------------------------------------
# Webhooks, connect token, bookkeeping, logging


def test_webhook_management_and_connect_token(rsps, client):
    add_auth(rsps)
    hook = {
        "id": "wh-1",
        "url": "https://example.com/hook",
        "event": "all",
        "disabledAt": None,
        "headers": {},
    }
    rsps.add(responses.POST, f"{BASE}/webhooks", status=201, json=hook)
    rsps.add(responses.GET, f"{BASE}/webhooks", json={"page": 1, "total": 1, "totalPages": 1, "results": [hook]})
    rsps.add(responses.PATCH, f"{BASE}/webhooks/wh-1", json={**hook, "headers": {}})
    rsps.add(responses.DELETE, f"{BASE}/webhooks/wh-1", json={"count": 1})
    rsps.add(responses.POST, f"{BASE}/connect_token", json={"accessToken": "connect-token-jwt"})

    created = client.create_webhook("https://example.com/hook", headers={"X-Webhook-Secret": "abc"})
    assert created["id"] == "wh-1"
    assert client.list_webhooks() == [hook]
    client.update_webhook("wh-1", headers=None, enabled=True)
    assert client.delete_webhook("wh-1") is None
    token = client.create_connect_token("item-1", {"clientUserId": "u-1", "webhookUrl": "https://x.example"})
    assert token == "connect-token-jwt"

    bodies = {
        f"{c.request.method} {urlsplit(c.request.url).path}": json.loads(c.request.body)
        for c in rsps.calls
        if c.request.body
    }
    assert bodies["POST /webhooks"] == {
        "url": "https://example.com/hook",
        "event": "all",
        "headers": {"X-Webhook-Secret": "abc"},
    }
    assert bodies["PATCH /webhooks/wh-1"] == {"headers": None, "enabled": True}
    assert bodies["POST /connect_token"] == {
        "itemId": "item-1",
        "options": {"clientUserId": "u-1", "webhookUrl": "https://x.example"},
    }


def test_request_count_counts_every_http_request_by_method_and_path(rsps, client):
    add_auth(rsps)
    rsps.add(responses.GET, ITEM_URL, status=500)
    rsps.add(responses.GET, ITEM_URL, json={"id": "item-1"})
    rsps.add(responses.GET, TX_URL, body='{"results": [], "next": null}')

    client.get_item("item-1")
    list(client.iter_transactions("acc-1", date_from="2025-01-01", date_to="2025-01-31"))

    assert client.request_count == {"POST /auth": 1, "GET /items/item-1": 2, "GET /v2/transactions": 1}


def test_no_secret_or_key_reaches_the_logs(rsps, client, caplog):
    caplog.set_level(logging.DEBUG, logger=pluggy_client.logger.name)
    add_auth(rsps, KEY1, KEY2)
    rsps.add(responses.GET, ITEM_URL, status=401, json={"code": 401})
    rsps.add(responses.GET, ITEM_URL, status=500)
    rsps.add(responses.GET, ITEM_URL, json={"id": "item-1"})

    client.get_item("item-1")

    records = [r for r in caplog.records if r.name == pluggy_client.logger.name]
    assert any(getattr(r, "path", None) == "/items/item-1" for r in records)  # logging does happen
    everything = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (CLIENT_SECRET, KEY1, KEY2):
        assert secret not in everything


# --- products beyond accounts and transactions -----------------------------------------------------


def test_product_reads_against_the_emulator_return_what_pluggy_serves(emulator, emulator_client):
    item = emulator.create_item()
    truth = emulator.truth()

    def stored(value: Any) -> Any:
        return json.loads(json.dumps(value), parse_float=Decimal)

    card = next(a for a, acc in truth["accounts"].items() if acc["itemId"] == item["id"] and acc["type"] == "CREDIT")
    bills = emulator_client.list_bills(card)
    assert {b["id"]: b for b in bills} == stored(truth["bills"][card]) and len(bills) == len(truth["bills"][card])
    investments = emulator_client.list_investments(item["id"])
    assert {i["id"] for i in investments} == {k for k, v in truth["investments"].items() if v["itemId"] == item["id"]}
    for investment in investments:
        rows = emulator_client.list_investment_transactions(investment["id"])
        assert {r["id"]: r for r in rows} == stored(truth["investmentTransactions"][investment["id"]])
    assert emulator_client.list_loans(item["id"]) == stored([v for v in truth["loans"].values()])
    assert emulator_client.get_identity(item["id"]) == stored(truth["identities"][item["id"]])
    assert emulator_client.list_consents(item["id"]) == stored(list(truth["consents"].values()))
    # Page-numbered lists are read in pages of Pluggy's largest size.
    assert emulator_client.request_count["GET /loans"] == 1


def test_an_item_without_identity_reads_as_none(emulator, emulator_client):
    item = emulator.create_item(products=["ACCOUNTS", "TRANSACTIONS"])
    assert emulator_client.get_identity(item["id"]) is None
    assert emulator_client.list_loans(item["id"]) == []


def test_product_lists_follow_every_page_at_the_largest_page_size(rsps, client):
    add_auth(rsps)
    rsps.add(
        responses.GET,
        f"{BASE}/loans",
        json={"page": 1, "totalPages": 2, "total": 3, "results": [{"id": "l1"}, {"id": "l2"}]},
        match=[matchers.query_param_matcher({"itemId": "item-1", "pageSize": "500"})],
    )
    rsps.add(
        responses.GET,
        f"{BASE}/loans",
        json={"page": 2, "totalPages": 2, "total": 3, "results": [{"id": "l3"}]},
        match=[matchers.query_param_matcher({"itemId": "item-1", "pageSize": "500", "page": "2"})],
    )
    assert [loan["id"] for loan in client.list_loans("item-1")] == ["l1", "l2", "l3"]
    with pytest.raises(PermanentError, match="itemId"):
        client.list_loans("")


def test_an_identity_error_other_than_404_is_not_taken_for_no_identity(rsps, client):
    add_auth(rsps)
    rsps.add(responses.GET, f"{BASE}/identity", status=400, json={"code": 400, "message": "itemId must be a UUID"})
    with pytest.raises(PluggyRequestError):
        client.get_identity("not-a-uuid")


def test_investment_routes_are_paced_as_one_rate_limit(rsps, clock, sleeps, credentials):
    paced: list[str] = []
    client = PluggyClient(BASE, credentials, clock=clock, sleep=sleeps.append, pacer=paced.append)
    add_auth(rsps)
    rsps.add(responses.GET, f"{BASE}/investments", json={"page": 1, "totalPages": 1, "results": [{"id": "i1"}]})
    rsps.add(responses.GET, f"{BASE}/investments/i1/transactions", json={"page": 1, "totalPages": 1, "results": []})
    client.list_investment_transactions(client.list_investments("item-1")[0]["id"])
    assert paced == ["POST /auth", "GET /investments", "GET /investments"]
    assert pluggy_client.pacing_route("GET", "/v2/transactions") == "GET /v2/transactions"
