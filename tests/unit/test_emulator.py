"""Tests of the Pluggy API emulator over real HTTP on 127.0.0.1 (no network beyond loopback)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from pluggy_emulator import PluggyEmulator

CLIENT_ID = "emulator-client-id"
CLIENT_SECRET = "emulator-client-secret"
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ITEM_FIELDS = {
    "id",
    "connector",
    "status",
    "executionStatus",
    "error",
    "statusDetail",
    "parameter",
    "userAction",
    "createdAt",
    "updatedAt",
    "lastUpdatedAt",
    "webhookUrl",
    "clientUserId",
    "consecutiveFailedLoginAttempts",
    "nextAutoSyncAt",
    "consentExpiresAt",
    "products",
}
TX_FIELDS = {
    "id",
    "accountId",
    "date",
    "description",
    "descriptionRaw",
    "currencyCode",
    "amount",
    "balance",
    "category",
    "categoryId",
    "providerCode",
    "providerId",
    "status",
    "type",
    "operationType",
    "paymentData",
    "creditCardMetadata",
    "merchant",
    "createdAt",
    "updatedAt",
}
SIGNING_KEY = "whsec-test-key"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def emu() -> Iterator[PluggyEmulator]:
    emulator = PluggyEmulator(seed=7, time_scale=0.002, page_size=7, signing_key=SIGNING_KEY)
    emulator.start()
    yield emulator
    emulator.stop()


def api_key(base: str) -> str:
    resp = requests.post(f"{base}/auth", json={"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}, timeout=5)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["apiKey"])


@pytest.fixture
def api_key_for() -> Callable[[PluggyEmulator], str]:
    return lambda emulator: api_key(emulator.base_url)


@pytest.fixture
def api(emu: PluggyEmulator) -> Iterator[requests.Session]:
    session = requests.Session()
    session.headers["X-API-KEY"] = api_key(emu.base_url)
    yield session
    session.close()


class Receiver:
    """A tiny webhook endpoint: records every POST and answers with `status_for(n)` (n = 0, 1, ...)."""

    def __init__(self, status_for: Callable[[int], int] = lambda n: 200) -> None:
        self.status_for = status_for
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    n = len(receiver.requests)
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                self.send_response(receiver.status_for(n))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/pluggy"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def payloads(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def accounts_of(api: requests.Session, base: str, item_id: str) -> list[dict[str, Any]]:
    resp = api.get(f"{base}/accounts", params={"itemId": item_id}, timeout=5)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["results"])


def all_pages(api: requests.Session, base: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Follow `next` the documented way: append it to /v2/transactions."""
    rows: list[dict[str, Any]] = []
    url = f"{base}/v2/transactions"
    resp = api.get(url, params=params, timeout=5)
    for _ in range(1000):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert set(body) == {"results", "next"}
        rows.extend(body["results"])
        if body["next"] is None:
            return rows
        assert body["next"].startswith("?")
        resp = api.get(url + body["next"], timeout=5)
    raise AssertionError("pagination did not end")


def jwt_claims(token: str) -> dict[str, Any]:
    parts = token.split(".")
    assert len(parts) == 3
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    return dict(json.loads(base64.urlsafe_b64decode(payload)))


def events_named(emu: PluggyEmulator, name: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in emu.events() if e["event"] == name]


# --- auth ----------------------------------------------------------------------------------------


def test_auth_returns_jwt_with_two_hour_lifetime(emu: PluggyEmulator) -> None:
    key = api_key(emu.base_url)
    claims = jwt_claims(key)
    assert claims["exp"] - claims["iat"] == 7200
    assert claims["exp"] > time.time() + 7000
    # Header names are case-insensitive (the Java SDK sends x-api-key).
    resp = requests.get(f"{emu.base_url}/webhooks", headers={"x-api-key": key}, timeout=5)
    assert resp.status_code == 200


def test_auth_rejects_a_wrong_pair(emu: PluggyEmulator) -> None:
    resp = requests.post(f"{emu.base_url}/auth", json={"clientId": CLIENT_ID, "clientSecret": "nope"}, timeout=5)
    assert resp.status_code == 401
    body = resp.json()
    assert body["code"] == 401
    assert body["codeDescription"] == "CLIENT_KEYS_UNAUTHORIZED"
    assert CLIENT_SECRET not in resp.text


@pytest.mark.parametrize("headers", [{}, {"X-API-KEY": "not-a-key"}])
def test_missing_or_unknown_key_is_403(emu: PluggyEmulator, headers: dict[str, str]) -> None:
    resp = requests.get(f"{emu.base_url}/items/whatever", headers=headers, timeout=5)
    assert resp.status_code == 403
    assert resp.json() == {"code": 403, "message": "Missing or invalid authorization token"}


def test_expired_key_is_401() -> None:
    with PluggyEmulator(api_key_ttl_seconds=0.2) as short:
        key = api_key(short.base_url)
        assert requests.get(f"{short.base_url}/webhooks", headers={"X-API-KEY": key}, timeout=5).status_code == 200
        time.sleep(0.3)
        resp = requests.get(f"{short.base_url}/webhooks", headers={"X-API-KEY": key}, timeout=5)
        assert resp.status_code == 401
        assert resp.json()["code"] == 401


def test_connect_token_cannot_read_transactions(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    resp = api.post(f"{emu.base_url}/connect_token", json={"itemId": item["id"]}, timeout=5)
    assert resp.status_code == 200
    token = resp.json()["accessToken"]
    scoped = {"X-API-KEY": token}
    assert requests.get(f"{emu.base_url}/items/{item['id']}", headers=scoped, timeout=5).status_code == 200
    account_id = accounts_of(api, emu.base_url, item["id"])[0]["id"]
    resp = requests.get(f"{emu.base_url}/v2/transactions", params={"accountId": account_id}, headers=scoped, timeout=5)
    assert resp.status_code == 403
    assert api.post(f"{emu.base_url}/connect_token", json={"itemId": "nope"}, timeout=5).status_code == 404


# --- items, accounts, transactions ---------------------------------------------------------------


def test_item_shape_not_found_and_delete(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    resp = api.get(f"{emu.base_url}/items/{item['id']}", timeout=5)
    body = resp.json()
    assert set(body) >= ITEM_FIELDS
    assert body["connector"]["id"] == 0
    assert body["connector"]["name"] == "Pluggy Bank"
    assert body["connector"]["isSandbox"] is True
    assert (body["status"], body["executionStatus"], body["error"]) == ("UPDATED", "SUCCESS", None)
    assert body["clientUserId"] == "user-1"
    for name in ("createdAt", "updatedAt", "lastUpdatedAt", "nextAutoSyncAt"):
        assert ISO.match(body[name]), name
    missing = api.get(f"{emu.base_url}/items/00000000-0000-4000-8000-000000000000", timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {"code": 404, "codeDescription": "ITEM_NOT_FOUND", "message": "item not found"}
    deleted = api.delete(f"{emu.base_url}/items/{item['id']}", timeout=5)
    assert deleted.json() == {"count": 1}
    assert api.get(f"{emu.base_url}/items/{item['id']}", timeout=5).status_code == 404
    assert item["id"] in emu.truth()["deletedItemIds"]
    assert events_named(emu, "item/deleted")[0]["itemId"] == item["id"]


@pytest.mark.parametrize(
    ("username", "status", "execution", "code"),
    [
        ("user-ok", "UPDATED", "SUCCESS", None),
        ("user-ok-account-error", "UPDATED", "PARTIAL_SUCCESS", None),
        ("user-locked", "LOGIN_ERROR", "ACCOUNT_LOCKED", "ACCOUNT_LOCKED"),
        ("user-unavailable", "OUTDATED", "SITE_NOT_AVAILABLE", "SITE_NOT_AVAILABLE"),
        ("someone-else", "LOGIN_ERROR", "INVALID_CREDENTIALS", "INVALID_CREDENTIALS"),
    ],
)
def test_post_items_sandbox_users(
    emu: PluggyEmulator, api: requests.Session, username: str, status: str, execution: str, code: str | None
) -> None:
    body = {"connectorId": 0, "parameters": {"user": username, "password": "password-ok"}, "clientUserId": "u-9"}
    resp = api.post(f"{emu.base_url}/items", json=body, timeout=5)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "UPDATING"  # answered before the sync, like Pluggy
    item = api.get(f"{emu.base_url}/items/{resp.json()['id']}", timeout=5).json()
    assert (item["status"], item["executionStatus"]) == (status, execution)
    assert (item["error"] or {}).get("code") == code
    if execution == "PARTIAL_SUCCESS":
        assert item["statusDetail"]["creditCards"]["isUpdated"] is False
        assert len(accounts_of(api, emu.base_url, item["id"])) == 2
    expected = "item/created" if code is None else "item/error"
    assert [p["itemId"] for p in events_named(emu, expected)] == [item["id"]]


def test_patch_item_with_fixed_credentials_collects_data(emu: PluggyEmulator, api: requests.Session) -> None:
    body = {"connectorId": 0, "parameters": {"user": "user-ok", "password": "wrong"}}
    item_id = api.post(f"{emu.base_url}/items", json=body, timeout=5).json()["id"]
    failed = api.get(f"{emu.base_url}/items/{item_id}", timeout=5).json()
    assert (failed["status"], failed["consecutiveFailedLoginAttempts"]) == ("LOGIN_ERROR", 1)
    assert accounts_of(api, emu.base_url, item_id) == []
    fixed = {"parameters": {"user": "user-ok", "password": "password-ok"}}
    resp = api.patch(f"{emu.base_url}/items/{item_id}", json=fixed, timeout=5)
    assert resp.json()["status"] == "UPDATING"
    item = api.get(f"{emu.base_url}/items/{item_id}", timeout=5).json()
    assert (item["status"], item["error"], item["consecutiveFailedLoginAttempts"]) == ("UPDATED", None, 0)
    assert len(accounts_of(api, emu.base_url, item_id)) == 3
    names = [e["event"] for e in emu.events()]
    assert names == ["item/error", "item/updated"] + ["transactions/created"] * 3
    assert {e["payload"]["triggeredBy"] for e in emu.events()} == {"CLIENT"}


def test_post_items_validates_parameters(emu: PluggyEmulator, api: requests.Session) -> None:
    resp = api.post(f"{emu.base_url}/items", json={"connectorId": 0, "parameters": {"user": "user-ok"}}, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["codeDescription"] == "CONNECTOR_VALIDATION_ERROR"
    assert [d["parameter"] for d in resp.json()["details"]] == ["password"]


def test_accounts_shape(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    resp = api.get(f"{emu.base_url}/accounts", params={"itemId": item["id"]}, timeout=5)
    body = resp.json()
    assert (body["page"], body["total"], body["totalPages"]) == (1, 3, 1)
    by_subtype = {a["subtype"]: a for a in body["results"]}
    assert {(a["type"], a["subtype"]) for a in body["results"]} == {
        ("BANK", "CHECKING_ACCOUNT"),
        ("BANK", "SAVINGS_ACCOUNT"),
        ("CREDIT", "CREDIT_CARD"),
    }
    assert by_subtype["SAVINGS_ACCOUNT"]["bankData"]["transferNumber"]
    card = by_subtype["CREDIT_CARD"]
    assert re.fullmatch(r"\d{4}", card["number"])
    assert card["creditData"]["creditLimit"] > 0
    assert card["bankData"] is None
    for account in body["results"]:
        assert account["currencyCode"] == "BRL"
        assert account["itemId"] == item["id"]
        assert re.fullmatch(r"\d{3}\.\d{3}\.\d{3}-\d{2}", account["taxNumber"])
        assert round(account["balance"], 2) == account["balance"]
        assert api.get(f"{emu.base_url}/accounts/{account['id']}", timeout=5).json() == account
    assert api.get(f"{emu.base_url}/accounts", timeout=5).status_code == 400
    assert api.get(f"{emu.base_url}/accounts/nope", timeout=5).json()["codeDescription"] == "ACCOUNT_NOT_FOUND"


def test_transactions_shape(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    truth = emu.truth()
    for account in accounts_of(api, emu.base_url, item["id"]):
        rows = list(truth["transactions"][account["id"]].values())
        assert len(rows) == 60
        for row in rows:
            assert set(row) >= TX_FIELDS
            assert row["type"] in ("DEBIT", "CREDIT")
            assert row["status"] in ("POSTED", "PENDING")
            assert ISO.match(row["date"]) and ISO.match(row["createdAt"])
            assert round(row["amount"], 2) == row["amount"]
            if account["type"] == "BANK":
                assert (row["amount"] < 0) == (row["type"] == "DEBIT")
                assert row["providerId"] is not None
            else:
                assert row["providerId"] is None
                assert row["creditCardMetadata"]["billId"]
        if account["subtype"] == "CHECKING_ACCOUNT":
            pix = [r for r in rows if r["operationType"] == "PIX"]
            assert pix
            assert all(r["paymentData"]["payer"]["documentNumber"]["type"] == "CPF" for r in pix)
    one = rows[0]
    assert api.get(f"{emu.base_url}/transactions/{one['id']}", timeout=5).json() == one
    missing = api.get(f"{emu.base_url}/transactions/nope", timeout=5)
    assert missing.json()["codeDescription"] == "TRANSACTION_NOT_FOUND"


def test_perf_user_multiplies_transactions(emu: PluggyEmulator) -> None:
    item = emu.create_item("user-1", "user-ok-perf-3", transactions_per_account=10)
    counts = {len(rows) for rows in emu.truth()["transactions"].values()}
    assert counts == {30}
    assert emu.truth()["items"][item["id"]]["status"] == "UPDATED"


def test_seed_makes_data_deterministic() -> None:
    def snapshot() -> tuple[str, list[float]]:
        with PluggyEmulator(seed=42) as emulator:
            item = emulator.create_item("u")
            rows = emulator.truth()["transactions"]
            return item["id"], sorted(r["amount"] for acc in rows.values() for r in acc.values())

    assert snapshot() == snapshot()


# --- /v2/transactions ----------------------------------------------------------------------------


def test_v2_pagination_visits_every_transaction_once(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    for account in accounts_of(api, emu.base_url, item["id"]):
        rows = all_pages(api, emu.base_url, {"accountId": account["id"]})
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)) == 60
        assert set(ids) == set(emu.truth()["transactions"][account["id"]])
        dates = [r["date"] for r in rows]
        assert dates == sorted(dates, reverse=True)
    assert emu.stats()["GET /v2/transactions"] == 3 * 9  # 60 rows in pages of 7


def test_v2_next_keeps_filters(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    account_id = accounts_of(api, emu.base_url, item["id"])[0]["id"]
    rows = list(emu.truth()["transactions"][account_id].values())
    date_from = sorted(r["date"][:10] for r in rows)[len(rows) // 2]
    first = api.get(
        f"{emu.base_url}/v2/transactions", params={"accountId": account_id, "dateFrom": date_from}, timeout=5
    ).json()
    assert first["next"] is not None
    query = parse_qs(urlsplit(first["next"]).query)
    assert query["dateFrom"] == [date_from]
    assert query["accountId"] == [account_id]
    paged = all_pages(api, emu.base_url, {"accountId": account_id, "dateFrom": date_from})
    assert {r["id"] for r in paged} == {r["id"] for r in rows if r["date"][:10] >= date_from}


def test_v2_ids_filter_and_limit(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    account_id = accounts_of(api, emu.base_url, item["id"])[0]["id"]
    wanted = list(emu.truth()["transactions"][account_id])[5:8]
    resp = api.get(
        f"{emu.base_url}/v2/transactions", params={"accountId": account_id, "ids": ",".join(wanted)}, timeout=5
    )
    assert sorted(r["id"] for r in resp.json()["results"]) == sorted(wanted)
    too_many = ",".join(f"id-{n}" for n in range(501))
    resp = api.get(f"{emu.base_url}/v2/transactions", params={"accountId": account_id, "ids": too_many}, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["codeDescription"] == "IDS_PARAMETER_EXCEEDS_MAX_LENGTH"


def test_v2_parameter_errors(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    account_id = accounts_of(api, emu.base_url, item["id"])[0]["id"]
    url = f"{emu.base_url}/v2/transactions"
    assert api.get(url, timeout=5).status_code == 400  # accountId is required
    both = {"accountId": account_id, "createdAtFrom": "2020-01-01T00:00:00.000Z", "dateFrom": "2020-01-01"}
    assert api.get(url, params=both, timeout=5).status_code == 400
    bad = api.get(url, params={"accountId": account_id, "after": "not-a-cursor"}, timeout=5)
    assert bad.status_code == 400
    assert bad.json()["message"] == "Invalid cursor"


def test_legacy_transactions_endpoint_is_served_until_its_last_day(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    account_id = accounts_of(api, emu.base_url, item["id"])[0]["id"]
    rows = list(emu.truth()["transactions"][account_id].values())  # newest first, as both endpoints sort
    url = f"{emu.base_url}/transactions"
    first = api.get(url, params={"accountId": account_id}, timeout=5).json()
    assert (first["page"], first["total"], first["totalPages"]) == (1, 60, 3)  # 20 per page by default
    assert [r["id"] for r in first["results"]] == [r["id"] for r in rows[:20]]
    pages = [
        api.get(url, params={"accountId": account_id, "pageSize": 25, "page": p}, timeout=5).json() for p in (1, 2, 3)
    ]
    assert [r["id"] for page in pages for r in page["results"]] == [r["id"] for r in rows]
    wanted = [rows[3]["id"], rows[7]["id"]]
    by_ids = api.get(url, params={"accountId": account_id, "ids": ",".join(wanted), "from": "2999-01-01"}, timeout=5)
    assert sorted(r["id"] for r in by_ids.json()["results"]) == sorted(wanted)  # with ids, from/to are ignored
    day = rows[10]["date"][:10]
    dated = api.get(url, params={"accountId": account_id, "from": day, "to": day, "pageSize": 500}, timeout=5).json()
    assert {r["id"] for r in dated["results"]} == {r["id"] for r in rows if r["date"][:10] == day}
    for bad in ({"accountId": account_id, "pageSize": 501}, {"accountId": account_id, "page": 0}, {}):
        assert api.get(url, params=bad, timeout=5).status_code == 400
    assert emu.stats()["GET /transactions"] == 9


def test_legacy_transactions_endpoint_is_gone_after_2026(api_key_for: Callable[[PluggyEmulator], str]) -> None:
    new_year = datetime(2027, 1, 1, 3, 0, tzinfo=UTC).timestamp()  # midnight in Sao Paulo
    for now, status in ((new_year - 1, 200), (new_year, 410)):
        with PluggyEmulator(clock=lambda now=now: now) as emulator:
            item = emulator.create_item("user-1")
            account_id = next(iter(emulator.truth()["accounts"]))
            assert emulator.truth()["items"][item["id"]]["createdAt"][:4] == str(datetime.fromtimestamp(now, UTC).year)
            resp = requests.get(
                f"{emulator.base_url}/transactions",
                params={"accountId": account_id},
                headers={"X-API-KEY": api_key_for(emulator)},
                timeout=5,
            )
            assert resp.status_code == status
            if status == 410:
                assert "2026-12-31" in resp.json()["message"]


# --- webhooks resource ---------------------------------------------------------------------------


def test_webhooks_crud(emu: PluggyEmulator, api: requests.Session) -> None:
    base = emu.base_url
    resp = api.post(f"{base}/webhooks", json={"url": "https://example.com/h", "event": "item/updated"}, timeout=5)
    assert resp.status_code == 200  # what the SDK accepts (the OAS says 201)
    hook = resp.json()
    assert set(hook) == {"id", "url", "event", "headers", "createdAt", "updatedAt", "disabledAt"}
    assert (hook["headers"], hook["disabledAt"]) == ({}, None)
    listed = api.get(f"{base}/webhooks", timeout=5).json()
    assert (listed["total"], listed["results"][0]["id"]) == (1, hook["id"])
    patched = api.patch(f"{base}/webhooks/{hook['id']}", json={"headers": {"X-Secret": "s"}}, timeout=5).json()
    assert patched["headers"] == {"X-Secret": "s"}
    assert patched["updatedAt"] > hook["updatedAt"]
    cleared = api.patch(f"{base}/webhooks/{hook['id']}", json={"headers": None}, timeout=5).json()
    assert cleared["headers"] == {}
    disabled = api.patch(f"{base}/webhooks/{hook['id']}", json={"enabled": False}, timeout=5).json()
    assert disabled["disabledAt"] is not None
    enabled = api.patch(f"{base}/webhooks/{hook['id']}", json={"enabled": True}, timeout=5).json()
    assert enabled["disabledAt"] is None
    assert api.delete(f"{base}/webhooks/{hook['id']}", timeout=5).json() == {"count": 1}
    gone = api.get(f"{base}/webhooks/{hook['id']}", timeout=5)
    assert (gone.status_code, gone.json()["codeDescription"]) == (404, "WEBHOOK_NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        {"url": "https://example.com/h", "event": "item/exploded"},
        {"url": "http://example.com/h", "event": "all"},
        {"url": "https://example.com/h", "event": "all", "headers": {"X": 1}},
    ],
)
def test_webhook_validation(emu: PluggyEmulator, api: requests.Session, body: dict[str, Any]) -> None:
    resp = api.post(f"{emu.base_url}/webhooks", json=body, timeout=5)
    assert resp.status_code == 400
    assert set(resp.json()) == {"code", "message"} and resp.json()["code"] == 400  # no codeDescription here


# --- webhook delivery ----------------------------------------------------------------------------


def test_delivery_with_headers_and_signature(emu: PluggyEmulator, api: requests.Session, receiver: Receiver) -> None:
    resp = api.post(
        f"{emu.base_url}/webhooks",
        json={"url": receiver.url, "event": "all", "headers": {"X-Webhook-Secret": "hunter2"}},
        timeout=5,
    )
    assert resp.status_code == 200
    api.post(f"{emu.base_url}/webhooks", json={"url": receiver.url, "event": "item/deleted"}, timeout=5)
    item = emu.create_item("user-1")
    assert emu.wait_for_deliveries(5)
    payloads = receiver.payloads()
    assert [p["event"] for p in payloads] == ["item/login_succeeded", "item/created"]
    for request, payload in zip(receiver.requests, payloads, strict=True):
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers["x-webhook-secret"] == "hunter2"
        assert headers["content-type"] == "application/json"
        expected = hmac.new(SIGNING_KEY.encode(), request["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-pluggy-signature"], expected)
        assert payload["itemId"] == item["id"]
        assert payload["clientId"] == CLIENT_ID
        assert payload["triggeredBy"] == "USER"
        assert request["path"] == "/hooks/pluggy"
    assert [p["eventId"] for p in payloads] == [e["eventId"] for e in emu.events()]
    # The item/deleted-only webhook received nothing so far.
    assert all(d["event"] != "item/deleted" for d in emu.deliveries())


def test_item_webhook_url_gets_its_events_without_custom_headers(emu: PluggyEmulator, receiver: Receiver) -> None:
    emu.create_item("user-1", webhook_url=receiver.url)
    assert emu.wait_for_deliveries(5)
    assert [p["event"] for p in receiver.payloads()] == ["item/login_succeeded", "item/created"]


def test_retries_on_500_then_drops(emu: PluggyEmulator) -> None:
    failing = Receiver(lambda n: 500)
    try:
        emu.create_webhook(failing.url, "item/updated")
        item = emu.create_item("user-1")
        event_id = emu.sync_item(item["id"])["eventIds"][0]
        assert emu.wait_for_deliveries(5)
        attempts = [d for d in emu.deliveries() if d["eventId"] == event_id]
        assert [d["attempt"] for d in attempts] == [1, 2, 3, 4]
        assert [d["outcome"] for d in attempts] == ["retrying"] * 3 + ["dropped"]
        assert {d["statusCode"] for d in attempts} == {500}
        assert {p["eventId"] for p in failing.payloads()} == {event_id}
        assert len({r["body"] for r in failing.requests}) == 1  # the same bytes on every retry
    finally:
        failing.close()


def test_retry_then_success(emu: PluggyEmulator) -> None:
    flaky = Receiver(lambda n: 500 if n == 0 else 204)
    try:
        emu.create_webhook(flaky.url)
        emu.send_event("item/updated", itemId="abc", triggeredBy="SYNC")
        assert emu.wait_for_deliveries(5)
        assert [(d["attempt"], d["outcome"]) for d in emu.deliveries()] == [(1, "retrying"), (2, "delivered")]
    finally:
        flaky.close()


def test_401_is_never_retried(emu: PluggyEmulator) -> None:
    unauthorized = Receiver(lambda n: 401)
    try:
        emu.create_webhook(unauthorized.url)
        emu.send_event("item/updated", itemId="abc")
        assert emu.wait_for_deliveries(5)
        assert [(d["attempt"], d["statusCode"], d["outcome"]) for d in emu.deliveries()] == [(1, 401, "dropped")]
        assert len(unauthorized.requests) == 1
    finally:
        unauthorized.close()


def test_unreachable_receiver_is_recorded_as_error(emu: PluggyEmulator) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    emu.create_webhook(f"http://127.0.0.1:{port}/h")
    emu.send_event("item/updated", itemId="abc")
    assert emu.wait_for_deliveries(5)
    records = emu.deliveries()
    assert len(records) == 4
    assert all(d["statusCode"] is None and d["error"] for d in records)


def test_webhook_is_disabled_after_repeated_failed_notifications() -> None:
    failing = Receiver(lambda n: 401)
    try:
        with PluggyEmulator(disable_webhook_after_failures=2) as emulator:
            hook = emulator.create_webhook(failing.url)
            for _ in range(2):
                emulator.send_event("item/updated", itemId="abc")
            assert emulator.wait_for_deliveries(5)
            emulator.send_event("item/updated", itemId="abc")
            assert emulator.wait_for_deliveries(5)
            assert emulator.truth()["webhooks"][0]["disabledAt"] is not None
            assert len(failing.requests) == 2  # the third notification had no enabled target
            assert emulator.truth()["webhooks"][0]["id"] == hook["id"]
    finally:
        failing.close()


# --- syncs and item lifecycle --------------------------------------------------------------------


def test_sync_changes_reach_truth_and_events(emu: PluggyEmulator, api: requests.Session, receiver: Receiver) -> None:
    emu.create_webhook(receiver.url)
    item = emu.create_item("user-1")
    before = emu.truth()
    summary = emu.sync_item(item["id"], add=6, change=3, delete=2, restate_credit_card=2)
    after = emu.truth()
    assert after["items"][item["id"]]["updatedAt"] > before["items"][item["id"]]["updatedAt"]
    card_id = next(a for a, acc in after["accounts"].items() if acc["type"] == "CREDIT")
    assert len(summary["restated"]) == 2
    for old_id, new_id in summary["restated"].items():
        assert old_id in summary["deleted"][card_id] and new_id in summary["created"][card_id]
        assert old_id not in after["transactions"][card_id] and new_id in after["transactions"][card_id]
        old, new = before["transactions"][card_id][old_id], after["transactions"][card_id][new_id]
        assert (old["amount"], old["date"]) == (new["amount"], new["date"])
        assert old["descriptionRaw"] != new["descriptionRaw"]
    for account_id, ids in summary["updated"].items():
        for tx_id in ids:
            assert after["transactions"][account_id][tx_id] != before["transactions"][account_id][tx_id]
    total_before = sum(len(v) for v in before["transactions"].values())
    total_after = sum(len(v) for v in after["transactions"].values())
    assert total_after == total_before + 6 - 2
    assert emu.wait_for_deliveries(5)
    sync_events = [p for p in receiver.payloads() if p["eventId"] in summary["eventIds"]]
    names = [p["event"] for p in sync_events]
    assert names[0] == "item/updated"
    assert names == sorted(
        names, key=["item/updated", "transactions/created", "transactions/updated", "transactions/deleted"].index
    )
    for payload in sync_events:
        if payload["event"] == "transactions/created":
            assert payload["transactionsCreatedAtFrom"] == summary["transactionsCreatedAtFrom"]
            link = payload["createdTransactionsLink"]
            assert link.startswith(f"{emu.base_url}/v2/transactions?")
            rows = api.get(link, timeout=5).json()["results"]
            assert sorted(r["id"] for r in rows) == sorted(summary["created"][payload["accountId"]])
        elif payload["event"] == "transactions/deleted":
            assert payload["transactionIds"] == summary["deleted"][payload["accountId"]]
            assert "triggeredBy" not in payload
        elif payload["event"] == "transactions/updated":
            assert payload["transactionIds"] == summary["updated"][payload["accountId"]]


def test_created_at_from_returns_only_new_rows(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    summary = emu.sync_item(item["id"], add=9)
    for account_id, ids in summary["created"].items():
        rows = all_pages(
            api, emu.base_url, {"accountId": account_id, "createdAtFrom": summary["transactionsCreatedAtFrom"]}
        )
        assert sorted(r["id"] for r in rows) == sorted(ids)


def test_sync_without_changes_still_sends_item_updated(emu: PluggyEmulator) -> None:
    item = emu.create_item("user-1")
    summary = emu.sync_item(item["id"])
    assert [e["event"] for e in emu.events()][-1] == "item/updated"
    assert len(summary["eventIds"]) == 1


def test_new_account_sync(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1", transactions_per_account=10)
    summary = emu.sync_item(item["id"], new_account=True)
    new_id = summary["newAccountId"]
    assert new_id in {a["id"] for a in accounts_of(api, emu.base_url, item["id"])}
    created = [p for p in events_named(emu, "transactions/created") if p["accountId"] == new_id]
    assert len(created) == 1
    assert len(summary["created"][new_id]) == 5


def test_error_waiting_reconnect_delete(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    emu.fail_item(item["id"], "USER_AUTHORIZATION_PENDING")
    error_event = events_named(emu, "item/error")[-1]
    assert error_event["error"]["code"] == "USER_AUTHORIZATION_PENDING"
    assert error_event["error"]["message"]
    failed = api.get(f"{emu.base_url}/items/{item['id']}", timeout=5).json()
    assert failed["error"]["code"] == "USER_AUTHORIZATION_PENDING"
    emu.fail_item(item["id"], "INVALID_CREDENTIALS")
    assert emu.truth()["items"][item["id"]]["status"] == "LOGIN_ERROR"
    emu.set_waiting_user_input(item["id"])
    assert emu.truth()["items"][item["id"]]["status"] == "WAITING_USER_INPUT"
    assert events_named(emu, "item/waiting_user_input")[-1]["itemId"] == item["id"]
    reconnected = emu.reconnect_item(item["id"])
    assert (reconnected["status"], reconnected["error"]) == ("UPDATED", None)
    assert emu.events()[-1]["event"] == "item/updated"
    emu.delete_item(item["id"])
    last = emu.events()[-1]["payload"]
    assert (last["event"], last["itemId"]) == ("item/deleted", item["id"])
    assert "triggeredBy" not in last
    assert emu.truth()["accounts"] == {}


def test_updated_at_strictly_increases(emu: PluggyEmulator) -> None:
    item = emu.create_item("user-1")
    stamps = [item["updatedAt"]]
    for _ in range(5):
        emu.sync_item(item["id"])
        stamps.append(emu.truth()["items"][item["id"]]["updatedAt"])
    assert all(a < b for a, b in itertools.pairwise(stamps))


def test_connector_and_payment_events(emu: PluggyEmulator) -> None:
    emu.set_connector_status("UNSTABLE")
    connector = events_named(emu, "connector/status_updated")[0]
    assert connector == {
        "event": "connector/status_updated",
        "id": "0",
        "connectorId": "0",
        "clientId": CLIENT_ID,
        "data": {"status": "UNSTABLE"},
    }
    emu.send_payment_event("payment_intent/created", payment_request_id="pr-1")
    intent = events_named(emu, "payment_intent/created")[0]
    assert intent["paymentRequestId"] == "pr-1" and intent["paymentIntentId"]
    emu.send_payment_event("scheduled_payment/error")
    scheduled = events_named(emu, "scheduled_payment/error")[0]
    assert set(scheduled["error"]) == {"title", "code", "description"}
    assert scheduled["scheduledPaymentId"] and scheduled["paymentRequestId"]


def test_send_event_can_repeat_an_event_id(emu: PluggyEmulator, receiver: Receiver) -> None:
    emu.create_webhook(receiver.url)
    first = emu.send_event("item/updated", itemId="i-1", triggeredBy="SYNC")
    second = emu.send_event("item/updated", itemId="i-1", triggeredBy="SYNC", eventId=first)
    assert first == second
    assert emu.wait_for_deliveries(5)
    assert [p["eventId"] for p in receiver.payloads()] == [first, first]


# --- payments --------------------------------------------------------------------------------------


def payments(emu: PluggyEmulator) -> dict[str, Any]:
    return dict(emu.truth()["payments"])


def get_json(api: requests.Session, url: str, status: int = 200, **params: str) -> Any:
    resp = api.get(url, params=params or None, timeout=5)
    assert resp.status_code == status, resp.text
    return resp.json()


def test_payment_routes_need_an_api_key(emu: PluggyEmulator) -> None:
    emu.send_payment_event("payment_intent/created", payment_request_id="pr-1", payment_intent_id="pi-1")
    for path in ("/payments/requests/pr-1", "/payments/intents/pi-1", "/payments/requests/pr-1/schedules"):
        assert requests.get(f"{emu.base_url}{path}", timeout=5).status_code == 403
    token = requests.post(f"{emu.base_url}/connect_token", json={}, headers={"X-API-KEY": api_key(emu.base_url)})
    connect = requests.get(
        f"{emu.base_url}/payments/intents/pi-1", headers={"X-API-KEY": token.json()["accessToken"]}, timeout=5
    )
    assert connect.status_code == 403


def test_payment_request_and_intent_routes(emu: PluggyEmulator, api: requests.Session) -> None:
    created = emu.create_payment_request("pr-1", amount=42.5, description="Aluguel", client_payment_id="c-9")
    assert created["status"] == "CREATED" and ISO.match(created["createdAt"])
    emu.send_payment_event("payment_intent/created", payment_request_id="pr-1", payment_intent_id="pi-1")
    request = get_json(api, f"{emu.base_url}/payments/requests/pr-1")
    assert {"id", "amount", "description", "status", "createdAt", "updatedAt", "errorDetail"} <= set(request)
    assert (request["amount"], request["description"], request["clientPaymentId"]) == (42.5, "Aluguel", "c-9")
    assert request["status"] == "IN_PROGRESS" and request["updatedAt"] > created["updatedAt"]
    intent = get_json(api, f"{emu.base_url}/payments/intents/pi-1")
    assert (intent["id"], intent["status"], intent["paymentRequest"]) == (
        "pi-1",
        "CONSENT_AWAITING_AUTHORIZATION",
        {"id": "pr-1"},
    )
    assert ISO.match(intent["createdAt"]) and ISO.match(intent["updatedAt"]) and intent["errorDetail"] is None
    assert request == payments(emu)["requests"]["pr-1"] and intent == payments(emu)["intents"]["pi-1"]

    assert get_json(api, f"{emu.base_url}/payments/requests/nope", 404) == {
        "code": 404,
        "message": "payment request not found",
        "codeDescription": "PAYMENT_REQUEST_NOT_FOUND",
    }
    assert get_json(api, f"{emu.base_url}/payments/intents/nope", 404) == {
        "code": 404,
        "message": "payment intent not found",
        "codeDescription": "PAYMENT_INTENT_NOT_FOUND",
    }


def test_list_intents_by_payment_request_is_paged(emu: PluggyEmulator, api: requests.Session) -> None:
    ids = [f"pi-{n}" for n in range(9)]  # the fixture's page size is 7
    for intent_id in ids:
        emu.send_payment_event("payment_intent/error", payment_request_id="pr-1", payment_intent_id=intent_id)
    emu.send_payment_event("payment_intent/created", payment_request_id="pr-other")
    url = f"{emu.base_url}/payments/intents"
    first = get_json(api, url, paymentRequestId="pr-1")
    assert (first["page"], first["total"], first["totalPages"], len(first["results"])) == (1, 9, 2, 7)
    second = get_json(api, url, paymentRequestId="pr-1", page="2")
    assert [i["id"] for i in first["results"] + second["results"]] == ids
    assert get_json(api, url, paymentRequestId="unknown")["results"] == []
    assert get_json(api, url, 400)["message"] == "paymentRequestId is required"
    assert get_json(api, url, 400, paymentRequestId="pr-1", page="0")["code"] == 400


def test_schedule_routes(emu: PluggyEmulator, api: requests.Session) -> None:
    for schedule_id, date in (("s-2", "2026-12-10"), ("s-1", "2026-11-10")):
        emu.send_payment_event(
            "scheduled_payment/created",
            payment_request_id="pr-1",
            scheduled_payment_id=schedule_id,
            scheduled_date=date,
        )
    base = f"{emu.base_url}/payments/requests"
    page = get_json(api, f"{base}/pr-1/schedules")
    assert set(page) == {"page", "total", "totalPages", "results"}
    assert (page["page"], page["total"], page["totalPages"]) == (1, 2, 1)
    assert [s["id"] for s in page["results"]] == ["s-1", "s-2"]  # by scheduled date
    one = get_json(api, f"{base}/pr-1/schedules/s-2")
    assert one == {
        "id": "s-2",
        "description": "Pagamento via Pix",
        "status": "SCHEDULED",
        "scheduledDate": "2026-12-10",
        "endToEndId": None,
        "errorDetail": None,
    }
    assert one == payments(emu)["schedules"]["pr-1"]["s-2"]
    missing = get_json(api, f"{base}/pr-1/schedules/nope", 404)
    assert (missing["code"], missing["codeDescription"]) == (404, "SCHEDULED_PAYMENT_NOT_FOUND")
    for path in ("nope/schedules", "nope/schedules/s-1"):
        assert get_json(api, f"{base}/{path}", 404)["codeDescription"] == "PAYMENT_REQUEST_NOT_FOUND"
    emu.create_payment_request("pr-empty")
    assert get_json(api, f"{base}/pr-empty/schedules")["results"] == []
    assert api.post(f"{base}/pr-1/schedules/s-1", timeout=5).status_code == 405


@pytest.mark.parametrize(
    ("event", "intent_status", "request_status"),
    [
        ("payment_intent/created", "CONSENT_AWAITING_AUTHORIZATION", "IN_PROGRESS"),
        ("payment_intent/waiting_payer_authorization", "PAYMENT_PARTIALLY_ACCEPTED", "WAITING_PAYER_AUTHORIZATION"),
        ("payment_intent/completed", "PAYMENT_COMPLETED", "COMPLETED"),
        ("payment_intent/error", "PAYMENT_REJECTED", "CREATED"),  # the payer may still retry
    ],
)
def test_payment_intent_event_moves_the_intent_and_its_request(
    emu: PluggyEmulator, event: str, intent_status: str, request_status: str
) -> None:
    emu.create_payment_request("pr-1")
    emu.send_payment_event(event, payment_request_id="pr-1", payment_intent_id="pi-1")
    state = payments(emu)
    assert state["intents"]["pi-1"]["status"] == intent_status
    assert state["requests"]["pr-1"]["status"] == request_status
    assert events_named(emu, event)[-1]["paymentIntentId"] == "pi-1"


def test_payment_updated_at_strictly_increases_and_late_events_change_nothing(emu: PluggyEmulator) -> None:
    stamps: list[tuple[str, str]] = []
    for event in ("payment_intent/created", "payment_intent/waiting_payer_authorization", "payment_intent/completed"):
        emu.send_payment_event(event, payment_request_id="pr-1", payment_intent_id="pi-1")
        state = payments(emu)
        stamps.append((state["intents"]["pi-1"]["updatedAt"], state["requests"]["pr-1"]["updatedAt"]))
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(stamps))
    done = payments(emu)
    assert done["intents"]["pi-1"]["referenceId"]  # the Pix end-to-end id, once completed
    # Late deliveries (Pluggy's state is already past them) are still sent but leave Pluggy as it was.
    emu.send_payment_event("payment_intent/created", payment_request_id="pr-1", payment_intent_id="pi-1")
    emu.send_payment_event("payment_intent/error", payment_request_id="pr-1", payment_intent_id="pi-1")
    assert payments(emu) == done
    assert [e["event"] for e in emu.events()][-2:] == ["payment_intent/created", "payment_intent/error"]


def test_payment_intent_error_detail_comes_from_the_error(emu: PluggyEmulator) -> None:
    error = {"code": "SALDO_INSUFICIENTE", "description": "Saldo insuficiente"}
    emu.send_payment_event("payment_intent/error", payment_intent_id="pi-1", error=error)
    emu.send_payment_event("payment_intent/error", payment_intent_id="pi-2")
    intents = payments(emu)["intents"]
    assert intents["pi-1"]["errorDetail"] == error
    assert intents["pi-2"]["errorDetail"] == {"code": "PAGAMENTO_RECUSADO_SPI"}
    assert events_named(emu, "payment_intent/error")[0]["error"] == error


def test_ids_keep_their_owner(emu: PluggyEmulator) -> None:
    emu.send_payment_event("payment_intent/created", payment_request_id="pr-1", payment_intent_id="pi-1")
    emu.send_payment_event("payment_intent/completed", payment_intent_id="pi-1")  # no request id given
    assert events_named(emu, "payment_intent/completed")[0]["paymentRequestId"] == "pr-1"
    emu.send_payment_event("scheduled_payment/created", payment_request_id="pr-1", scheduled_payment_id="s-1")
    emu.send_payment_event("scheduled_payment/completed", scheduled_payment_id="s-1")
    assert events_named(emu, "scheduled_payment/completed")[0]["paymentRequestId"] == "pr-1"
    with pytest.raises(ValueError, match="belongs to payment request pr-1"):
        emu.send_payment_event("payment_intent/error", payment_request_id="pr-2", payment_intent_id="pi-1")
    with pytest.raises(ValueError, match="belongs to payment request pr-1"):
        emu.send_payment_event("scheduled_payment/error", payment_request_id="pr-2", scheduled_payment_id="s-1")
    assert set(payments(emu)["requests"]) == {"pr-1"}


def test_scheduled_payments_follow_the_documented_order(emu: PluggyEmulator, api: requests.Session) -> None:
    emu.create_payment_request("pr-1", schedule={"type": "MONTHLY", "startDate": "2026-12-05", "occurrences": 2})
    send = emu.send_payment_event
    send("payment_intent/created", payment_request_id="pr-1", payment_intent_id="pi-1")
    send("payment_intent/completed", payment_request_id="pr-1", payment_intent_id="pi-1")
    assert payments(emu)["requests"]["pr-1"]["status"] == "SCHEDULED"  # not COMPLETED while schedules run
    for schedule_id, date in (("s-1", "2026-12-05"), ("s-2", "2027-01-05"), ("s-3", "2027-02-05")):
        send(
            "scheduled_payment/created",
            payment_request_id="pr-1",
            scheduled_payment_id=schedule_id,
            scheduled_date=date,
        )
    send("scheduled_payment/all_created", payment_request_id="pr-1")
    assert {s["status"] for s in payments(emu)["schedules"]["pr-1"].values()} == {"SCHEDULED"}
    send("scheduled_payment/completed", payment_request_id="pr-1", scheduled_payment_id="s-1", end_to_end_id="E1")
    send("scheduled_payment/error", payment_request_id="pr-1", scheduled_payment_id="s-2")
    send("scheduled_payment/canceled", payment_request_id="pr-1", scheduled_payment_id="s-3")
    schedules = payments(emu)["schedules"]["pr-1"]
    assert {k: s["status"] for k, s in schedules.items()} == {"s-1": "COMPLETED", "s-2": "ERROR", "s-3": "CANCELED"}
    assert schedules["s-1"]["endToEndId"] == "E1" == events_named(emu, "scheduled_payment/completed")[0]["endToEndId"]
    assert schedules["s-2"]["errorDetail"] == {
        "code": "SALDO_INSUFICIENTE",
        "description": "Saldo insuficiente na conta do pagador",
        "detail": "Pagamento nao realizado",
    }
    assert payments(emu)["requests"]["pr-1"]["status"] == "SCHEDULED"
    send("scheduled_payment/all_completed", payment_request_id="pr-1")
    assert get_json(api, f"{emu.base_url}/payments/requests/pr-1")["status"] == "COMPLETED"
    # Terminal statuses are final: a late created changes no schedule.
    send("scheduled_payment/created", payment_request_id="pr-1", scheduled_payment_id="s-2")
    assert get_json(api, f"{emu.base_url}/payments/requests/pr-1/schedules/s-2")["status"] == "ERROR"
    assert [p["paymentRequestId"] for p in events_named(emu, "scheduled_payment/all_completed")] == ["pr-1"]


def test_schedule_event_for_a_request_first_seen_through_its_intent(emu: PluggyEmulator) -> None:
    emu.send_payment_event("payment_intent/completed", payment_request_id="pr-1", payment_intent_id="pi-1")
    assert payments(emu)["requests"]["pr-1"]["status"] == "COMPLETED"
    emu.send_payment_event("scheduled_payment/created", payment_request_id="pr-1", scheduled_payment_id="s-1")
    request = payments(emu)["requests"]["pr-1"]
    assert (request["status"], request["schedule"]) == ("SCHEDULED", {"type": "CUSTOM"})


def test_payment_request_updated_sets_data_status(emu: PluggyEmulator) -> None:
    emu.create_payment_request("pr-1")
    emu.send_payment_event("payment_request/updated", payment_request_id="pr-1", status="AUTHORIZED")
    assert payments(emu)["requests"]["pr-1"]["status"] == "AUTHORIZED"
    assert events_named(emu, "payment_request/updated")[0]["data"] == {"status": "AUTHORIZED"}
    emu.send_payment_event("payment_request/updated", payment_request_id="pr-1", status="ERROR", error={"code": "X"})
    assert payments(emu)["requests"]["pr-1"]["errorDetail"] == {"code": "X"}
    emu.send_payment_event("payment_request/updated", payment_request_id="pr-new", status="ERROR")
    assert payments(emu)["requests"]["pr-new"]["errorDetail"] == {"code": "PAGAMENTO_RECUSADO_SPI"}
    emu.send_payment_event("payment_request/updated", payment_request_id="pr-2", status="COMPLETED")
    emu.send_payment_event("payment_request/updated", payment_request_id="pr-2", status="REFUNDED")
    assert payments(emu)["requests"]["pr-2"]["status"] == "REFUNDED"  # a completed request may be refunded
    with pytest.raises(ValueError, match="needs a status"):
        emu.send_payment_event("payment_request/updated", payment_request_id="pr-1")
    with pytest.raises(ValueError, match="status must be one of"):
        emu.send_payment_event("payment_request/updated", payment_request_id="pr-1", status="PAID")
    with pytest.raises(ValueError, match="only applies"):
        emu.send_payment_event("payment_intent/created", status="COMPLETED")
    with pytest.raises(ValueError, match="not a payment event"):
        emu.send_payment_event("item/updated")
    assert len(events_named(emu, "payment_request/updated")) == 5  # the refused calls sent nothing


def test_bulk_payment_intent_exists_without_a_request(emu: PluggyEmulator, api: requests.Session) -> None:
    emu.send_payment_event("payment_intent/completed", bulk_payment_id="bulk-1", payment_intent_id="pi-b")
    payload = events_named(emu, "payment_intent/completed")[0]
    assert payload["bulkPaymentId"] == "bulk-1" and "paymentRequestId" not in payload
    intent = get_json(api, f"{emu.base_url}/payments/intents/pi-b")
    assert (intent["status"], intent["paymentRequest"], intent["bulkPayment"]) == (
        "PAYMENT_COMPLETED",
        None,
        {"id": "bulk-1"},
    )
    assert payments(emu)["requests"] == {}


def test_forged_send_event_changes_no_payment(emu: PluggyEmulator, api: requests.Session) -> None:
    emu.send_payment_event("payment_intent/created", payment_request_id="pr-1", payment_intent_id="pi-1")
    before = payments(emu)
    emu.send_event("payment_intent/completed", paymentRequestId="pr-1", paymentIntentId="pi-1")
    emu.send_event("payment_intent/created", paymentRequestId="pr-9", paymentIntentId="pi-9")
    emu.send_event("scheduled_payment/created", paymentRequestId="pr-1", scheduledPaymentId="s-9")
    assert payments(emu) == before
    assert get_json(api, f"{emu.base_url}/payments/intents/pi-1")["status"] == "CONSENT_AWAITING_AUTHORIZATION"
    assert get_json(api, f"{emu.base_url}/payments/intents/pi-9", 404)["codeDescription"] == "PAYMENT_INTENT_NOT_FOUND"
    assert events_named(emu, "payment_intent/completed")[0]["paymentIntentId"] == "pi-1"  # it was sent


def test_truth_keeps_its_keys_and_adds_payments(emu: PluggyEmulator) -> None:
    truth = emu.truth()
    assert {
        "clientId",
        "items",
        "accounts",
        "transactions",
        "deletedItemIds",
        "deletedAccountIds",
        "deletedTransactionIds",
        "webhooks",
        "connectors",
    } < set(truth)
    assert truth["payments"] == {"requests": {}, "intents": {}, "schedules": {}}
    emu.send_payment_event("scheduled_payment/created", payment_request_id="pr-1", scheduled_payment_id="s-1")
    state = payments(emu)
    assert set(state["requests"]) == {"pr-1"} and set(state["schedules"]["pr-1"]) == {"s-1"}
    state["requests"]["pr-1"]["status"] = "changed by the caller"
    assert payments(emu)["requests"]["pr-1"]["status"] == "SCHEDULED"  # a copy


def test_payment_control_routes(emu: PluggyEmulator, api: requests.Session) -> None:
    base = f"{emu.base_url}/_emulator"
    made = requests.post(f"{base}/payment_requests", json={"id": "pr-1", "amount": 10}, timeout=5)
    assert made.status_code == 201 and made.json()["status"] == "CREATED"
    body = {"event": "payment_request/updated", "paymentRequestId": "pr-1", "status": "CANCELED"}
    sent = requests.post(f"{base}/payment_events", json=body, timeout=5).json()
    assert sent["eventId"] == emu.events()[-1]["eventId"]
    assert get_json(api, f"{emu.base_url}/payments/requests/pr-1")["status"] == "CANCELED"
    body = {
        "event": "scheduled_payment/completed",
        "scheduledPaymentId": "s-1",
        "endToEndId": "E2",
        "scheduledDate": "2027-01-02",
    }
    requests.post(f"{base}/payment_events", json=body, timeout=5)
    schedule = next(iter(next(iter(payments(emu)["schedules"].values())).values()))
    assert (schedule["endToEndId"], schedule["scheduledDate"]) == ("E2", "2027-01-02")
    bad = requests.post(f"{base}/payment_events", json={"event": "payment_request/updated"}, timeout=5)
    assert bad.status_code == 400 and "needs a status" in bad.json()["message"]
    assert requests.post(f"{base}/payment_requests", json={"id": "pr-1"}, timeout=5).status_code == 400


# --- faults, rate limits, control HTTP, lifecycle -------------------------------------------------


def test_fault_injection(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    url = f"{emu.base_url}/items/{item['id']}"
    emu.fault("GET /items/{id}", "500")
    assert api.get(url, timeout=5).status_code == 500
    assert api.get(url, timeout=5).status_code == 200
    emu.fault("GET /items/{id}", "429", retry_after_seconds=3)
    limited = api.get(url, timeout=5)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert "RateLimit-Reset" in limited.headers
    emu.fault("GET /items/{id}", "drop")
    with pytest.raises(requests.ConnectionError):
        requests.get(url, headers={"X-API-KEY": api.headers["X-API-KEY"]}, timeout=5)
    emu.fault("GET /items/{id}", "delay", delay_seconds=0.6)
    with pytest.raises(requests.ReadTimeout):
        requests.get(url, headers={"X-API-KEY": api.headers["X-API-KEY"]}, timeout=0.2)
    assert api.get(url, timeout=5).status_code == 200
    assert emu.stats()["GET /items/{id}"] == 6
    with pytest.raises(ValueError, match="unknown route"):
        emu.fault("GET /nope", "500")


def test_rate_limit_answers_429_with_headers() -> None:
    with PluggyEmulator(rate_limit_per_minute=3) as limited:
        key = api_key(limited.base_url)
        statuses = []
        for _ in range(4):
            resp = requests.get(f"{limited.base_url}/webhooks", headers={"X-API-KEY": key}, timeout=5)
            statuses.append(resp.status_code)
        assert statuses == [200, 200, 200, 429]
        assert resp.json() == {
            "message": "Too many requests. Please try again later (see Retry-After header in seconds)",
            "code": 429,
        }
        assert resp.headers["Retry-After"] == "60"
        assert resp.headers["RateLimit-Limit"] == "3"
        assert 0 < int(resp.headers["RateLimit-Reset"]) <= 60


def test_control_http_routes(emu: PluggyEmulator, api: requests.Session) -> None:
    base = f"{emu.base_url}/_emulator"
    item = requests.post(f"{base}/items", json={"clientUserId": "cli", "transactionsPerAccount": 4}, timeout=5).json()
    assert item["clientUserId"] == "cli"
    summary = requests.post(f"{base}/items/{item['id']}/sync", json={"add": 2}, timeout=5).json()
    assert sum(len(ids) for ids in summary["created"].values()) == 2
    state = requests.get(f"{base}/state", timeout=5).json()
    assert sum(len(rows) for rows in state["transactions"].values()) == 3 * 4 + 2
    bad = requests.post(f"{base}/items/{item['id']}/sync", json={"add": -1}, timeout=5)
    assert bad.status_code == 400
    unknown = requests.post(f"{base}/items/nope/sync", json={}, timeout=5)
    assert unknown.status_code == 404
    requests.post(f"{base}/faults", json={"route": "GET /webhooks", "kind": "500"}, timeout=5)
    assert api.get(f"{emu.base_url}/webhooks", timeout=5).status_code == 500
    assert requests.get(f"{base}/stats", timeout=5).json()["GET /webhooks"] == 1
    requests.post(f"{base}/stats/reset", timeout=5)
    assert requests.get(f"{base}/stats", timeout=5).json() == {}
    event = requests.post(f"{base}/events", json={"event": "item/updated", "itemId": "x"}, timeout=5).json()
    assert event["eventId"] == emu.events()[-1]["eventId"]
    assert requests.post(f"{base}/wait", json={"timeout": 1}, timeout=5).json() == {"idle": True}


def test_stop_leaves_no_thread_or_socket() -> None:
    before = threading.active_count()
    emulator = PluggyEmulator()
    base = emulator.start()
    session = requests.Session()  # keeps its connection open (HTTP/1.1 keep-alive)
    assert session.get(f"{base}/webhooks", timeout=5).status_code == 403
    emulator.stop()
    session.close()
    assert threading.active_count() == before
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


# --- what the SDK calls beyond the pipeline's data path -------------------------------------------------


def test_sandbox_connectors_are_listed_on_request(emu: PluggyEmulator, api: requests.Session) -> None:
    url = f"{emu.base_url}/connectors"
    assert api.get(url, timeout=5).json()["results"] == []  # no live institutions here
    listed = api.get(url, params={"sandbox": "true"}, timeout=5).json()["results"]
    assert [(c["id"], c["isSandbox"], c["supportsAutomaticPix"]) for c in listed] == [
        (0, True, False),
        (1, True, False),
        (2, True, False),
        (3, True, False),  # the app authorization connector (WAITING_USER_ACTION)
    ]
    assert [c["id"] for c in api.get(url, params={"sandbox": "true", "name": "MFA"}, timeout=5).json()["results"]] == [
        1,
        2,
    ]
    assert api.get(url, params={"sandbox": "true", "countries": "AR,MX"}, timeout=5).json()["total"] == 0
    assert api.get(url, params={"sandbox": "true", "types": "PERSONAL_BANK"}, timeout=5).json()["total"] == 4
    assert api.get(url, params={"sandbox": "true", "isOpenFinance": "true"}, timeout=5).json()["total"] == 0
    one_step = api.get(f"{url}/1", timeout=5).json()
    assert [c["name"] for c in one_step["credentials"] if c.get("mfa")] == ["token"]
    check = api.post(f"{url}/1/validate", json={"user": "user-ok", "password": "password-ok"}, timeout=5).json()
    assert [e["parameter"] for e in check["errors"]] == ["token"]


def test_mfa_two_step_flow(emu: PluggyEmulator, api: requests.Session) -> None:
    body = {"connectorId": 2, "parameters": {"user": "user-ok", "password": "password-ok"}}
    created = api.post(f"{emu.base_url}/items", json=body, timeout=5).json()
    item_id = created["id"]
    waiting = api.get(f"{emu.base_url}/items/{item_id}", timeout=5).json()
    assert (waiting["status"], waiting["executionStatus"]) == ("WAITING_USER_INPUT", "WAITING_USER_INPUT")
    assert (waiting["parameter"]["name"], waiting["parameter"]["type"]) == ("token", "number")
    assert ISO.match(waiting["parameter"]["expiresAt"])
    assert [e["event"] for e in emu.events()] == ["item/waiting_user_input"]
    assert emu.truth()["accounts"] == {}  # nothing collected before the MFA
    mfa_url = f"{emu.base_url}/items/{item_id}/mfa"
    assert api.post(mfa_url, json={"code": "123456"}, timeout=5).status_code == 400  # not the asked parameter
    answer = api.post(mfa_url, json={"token": "123456"}, timeout=5)
    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["executionStatus"]) == ("UPDATING", "LOGIN_MFA_IN_PROGRESS")
    done = api.get(f"{emu.base_url}/items/{item_id}", timeout=5).json()
    assert (done["status"], done["executionStatus"], done["parameter"]) == ("UPDATED", "SUCCESS", None)
    assert done["nextAutoSyncAt"] is None  # MFA at every login: never auto-synced
    assert [e["event"] for e in emu.events()] == ["item/waiting_user_input", "item/login_succeeded", "item/created"]
    assert len(accounts_of(api, emu.base_url, item_id)) == 3
    assert api.post(mfa_url, json={"token": "123456"}, timeout=5).status_code == 400  # not waiting any more
    # Every later login asks again.
    api.patch(f"{emu.base_url}/items/{item_id}", json={}, timeout=5)
    assert emu.truth()["items"][item_id]["status"] == "WAITING_USER_INPUT"
    wrong = emu.submit_mfa(item_id, "654321")
    assert wrong["executionStatus"] == "LOGIN_MFA_IN_PROGRESS"
    failed = emu.truth()["items"][item_id]
    assert (failed["status"], failed["error"]["code"]) == ("LOGIN_ERROR", "INVALID_CREDENTIALS_MFA")
    assert emu.events()[-1]["event"] == "item/error"


def test_mfa_one_step_flow(emu: PluggyEmulator, api: requests.Session) -> None:
    base = {"connectorId": 1, "parameters": {"user": "user-ok", "password": "password-ok"}}
    missing = api.post(f"{emu.base_url}/items", json=base, timeout=5)
    assert (missing.status_code, missing.json()["codeDescription"]) == (400, "CONNECTOR_VALIDATION_ERROR")
    good = {**base, "parameters": {**base["parameters"], "token": "123456"}}
    item_id = api.post(f"{emu.base_url}/items", json=good, timeout=5).json()["id"]
    assert emu.truth()["items"][item_id]["status"] == "UPDATED"
    again = api.patch(f"{emu.base_url}/items/{item_id}", json={}, timeout=5)
    assert (again.status_code, again.json()["codeDescription"]) == (
        400,
        "CONNECTOR_REQUIRED_PARAMETER_VALIDATION_ERROR",
    )
    assert again.json()["data"] == {"parameter": "token"}
    fresh = {"parameters": {"token": "123456"}}
    assert api.patch(f"{emu.base_url}/items/{item_id}", json=fresh, timeout=5).status_code == 200
    assert emu.truth()["items"][item_id]["status"] == "UPDATED"
    bad = emu.create_item("u", connector_id=1, mfa_token="000000")
    assert (bad["status"], bad["executionStatus"]) == ("LOGIN_ERROR", "INVALID_CREDENTIALS_MFA")


def test_control_waiting_user_input_is_answered_through_the_api(emu: PluggyEmulator) -> None:
    item = emu.create_item("u")
    emu.set_waiting_user_input(item["id"])
    token = requests.post(
        f"{emu.base_url}/connect_token",
        json={"itemId": item["id"]},
        headers={"X-API-KEY": api_key(emu.base_url)},
        timeout=5,
    ).json()["accessToken"]
    # The widget answers MFA with its connect token.
    answer = requests.post(
        f"{emu.base_url}/items/{item['id']}/mfa", json={"token": "123456"}, headers={"X-API-KEY": token}, timeout=5
    )
    assert answer.status_code == 200
    assert emu.truth()["items"][item["id"]]["status"] == "UPDATED"
    assert emu.events()[-1]["event"] == "item/updated"


def test_categories(emu: PluggyEmulator, api: requests.Session) -> None:
    page = api.get(f"{emu.base_url}/categories", timeout=5).json()
    assert (page["page"], page["totalPages"], page["total"]) == (1, 1, len(page["results"]))
    by_id = {c["id"]: c for c in page["results"]}
    assert by_id["01000000"] == {"id": "01000000", "description": "Income", "descriptionTranslated": "Renda"}
    assert by_id["01010000"]["parentId"] == "01000000" and by_id["01010000"]["parentDescription"] == "Income"
    children = api.get(f"{emu.base_url}/categories", params={"parentId": "01000000"}, timeout=5).json()["results"]
    assert {c["id"] for c in children} == {"01010000", "01040000"}
    assert api.get(f"{emu.base_url}/categories/05070000", timeout=5).json()["description"] == "Transfer - PIX"
    missing = api.get(f"{emu.base_url}/categories/99999999", timeout=5)
    assert (missing.status_code, missing.json()["codeDescription"]) == (404, "CATEGORY_NOT_FOUND")
    # Every category a sandbox row carries is in the catalog, under the same description.
    item = emu.create_item("u")
    for account in accounts_of(api, emu.base_url, item["id"]):
        for row in emu.truth()["transactions"][account["id"]].values():
            assert by_id[row["categoryId"]]["description"] == row["category"]


def test_patch_transaction_category(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("u")
    account_id = accounts_of(api, emu.base_url, item["id"])[0]["id"]
    row = next(iter(emu.truth()["transactions"][account_id].values()))
    target = "12010000" if row["categoryId"] != "12010000" else "13010000"
    events_before = len(emu.events())
    url = f"{emu.base_url}/transactions/{row['id']}"
    changed = api.patch(url, json={"categoryId": target}, timeout=5)
    assert changed.status_code == 200
    assert (changed.json()["categoryId"], changed.json()["id"]) == (target, row["id"])
    assert changed.json()["category"] == api.get(f"{emu.base_url}/categories/{target}", timeout=5).json()["description"]
    assert changed.json()["updatedAt"] > row["updatedAt"]
    assert api.get(url, timeout=5).json() == changed.json()
    assert len(emu.events()) == events_before  # no webhook for a user's own change
    assert api.patch(url, json={"categoryId": "99999999"}, timeout=5).status_code == 400
    assert api.patch(url, json={}, timeout=5).status_code == 400
    assert api.patch(f"{emu.base_url}/transactions/nope", json={"categoryId": target}, timeout=5).status_code == 404


def test_shapes_the_sdk_types_as_required(emu: PluggyEmulator, api: requests.Session, receiver: Receiver) -> None:
    emu.create_webhook(receiver.url)
    item = emu.create_item("u")
    emu.sync_item(item["id"], add=3, change=2, delete=1)
    assert emu.wait_for_deliveries(5)
    for payload in receiver.payloads():
        assert payload["id"] == payload["itemId"] == item["id"]  # the deprecated `id`
    for account in accounts_of(api, emu.base_url, item["id"]):
        if account["type"] == "BANK":
            assert (account["bankData"]["hasReservedBalance"], account["bankData"]["reservedBalances"]) == (False, None)
        for row in emu.truth()["transactions"][account["id"]].values():
            assert isinstance(row["balance"], float)
            if account["type"] == "CREDIT":
                assert row["balance"] == 0.0
    request = emu.create_payment_request()
    emu.send_payment_event("payment_intent/created", payment_request_id=request["id"])
    payload = events_named(emu, "payment_intent/created")[-1]
    assert payload["id"] == payload["paymentIntentId"]
    emu.send_payment_event("payment_request/updated", payment_request_id=request["id"], status="CANCELED")
    assert events_named(emu, "payment_request/updated")[-1]["id"] == request["id"]


def test_payment_requests_list_and_account_statements(emu: PluggyEmulator, api: requests.Session) -> None:
    first = emu.create_payment_request()
    second = emu.create_payment_request()
    page = api.get(f"{emu.base_url}/payments/requests", timeout=5).json()
    assert [r["id"] for r in page["results"]] == [second["id"], first["id"]]  # newest first
    small = api.get(f"{emu.base_url}/payments/requests", params={"pageSize": 1, "page": 2}, timeout=5).json()
    assert (small["total"], small["totalPages"], [r["id"] for r in small["results"]]) == (2, 2, [first["id"]])
    today = first["createdAt"][:10]
    assert api.get(f"{emu.base_url}/payments/requests", params={"from": today}, timeout=5).json()["total"] == 2
    assert api.get(f"{emu.base_url}/payments/requests", params={"status": "COMPLETED"}, timeout=5).json()["total"] == 0
    item = emu.create_item("u")
    account_id = accounts_of(api, emu.base_url, item["id"])[0]["id"]
    statements = api.get(f"{emu.base_url}/accounts/{account_id}/statements", timeout=5).json()
    assert statements == {"page": 1, "total": 0, "totalPages": 1, "results": []}
    assert api.get(f"{emu.base_url}/accounts/nope/statements", timeout=5).status_code == 404


def test_record_only_emulator_sends_nothing(receiver: Receiver) -> None:
    with PluggyEmulator(deliver_webhooks=False) as emulator:
        emulator.create_webhook(receiver.url)
        emulator.create_item("u")
        assert emulator.wait_for_deliveries(1)
        assert [e["event"] for e in emulator.events()] == ["item/login_succeeded", "item/created"]
        assert emulator.deliveries() == [] and receiver.requests == []
