"""The emulator's waits for the account holder at the bank: WAITING_USER_ACTION (connector 3) and the device
authorization of seed 001's Caixa case (USER_AUTHORIZATION_PENDING), in instant and timed modes.

Everything is seen as a client sees it: `GET /items/{id}` over HTTP, and webhooks delivered to a receiver on
127.0.0.1. `complete_user_action` (or `POST /_emulator/items/{id}/user_action`) plays the account holder.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from pluggy_emulator import PluggyEmulator, SyncTiming
from pluggy_emulator.state import parse_iso_ms

CLIENT_ID = "emulator-client-id"
CLIENT_SECRET = "emulator-client-secret"
SCALE = 0.002  # 500 emulator seconds per wall second
POLLED_SCALE = 0.008  # a client polling in a loop sees every 10-second step
APP_AUTHORIZATION = 3
PENDING_USER = "user-authorization-pending"
LOGIN = {"user": "user-ok", "password": "password-ok"}
PENDING_LOGIN = {"user": PENDING_USER, "password": "password-ok"}
# Every step 10 emulator seconds; the user action valid 60 s; Pluggy's own sync 600 s after the pending error.
EVEN = SyncTiming(
    creating=10,
    created=10,
    login=10,
    login_mfa=10,
    accounts=10,
    transactions=10,
    payment_data=10,
    credit_cards=10,
    merging=10,
    user_action_timeout=60,
    authorization_delay=600,
    late_fraction=0.0,
)
LOGIN_STEPS = [("UPDATING", "CREATING"), ("UPDATING", "CREATED"), ("UPDATING", "LOGIN_IN_PROGRESS")]
COLLECTING_STEPS = [
    ("UPDATING", "ACCOUNTS_IN_PROGRESS"),
    ("UPDATING", "TRANSACTIONS_IN_PROGRESS"),
    ("UPDATING", "PAYMENT_DATA_IN_PROGRESS"),
    ("UPDATING", "CREDITCARDS_IN_PROGRESS"),
    ("MERGING", "CREDITCARDS_IN_PROGRESS"),
    ("UPDATED", "SUCCESS"),
]


# --- helpers ---------------------------------------------------------------------------------------------------


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps every payload it is sent."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.payloads.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def seen(self, item_id: str) -> list[tuple[str, str | None]]:
        """(event, triggeredBy) of the item's deliveries, in the order they came."""
        return [(p["event"], p.get("triggeredBy")) for p in self.payloads if p.get("itemId") == item_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class Client:
    """Pluggy's API as a client calls it, plus the emulator's control routes, over HTTP."""

    def __init__(self, emulator: PluggyEmulator) -> None:
        self.emulator = emulator
        self.base = emulator.base_url
        self.http = requests.Session()
        resp = self.http.post(f"{self.base}/auth", json={"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET})
        self.http.headers["X-API-KEY"] = resp.json()["apiKey"]

    def create(self, params: dict[str, str], connector_id: int = 0) -> dict[str, Any]:
        resp = self.http.post(f"{self.base}/items", json={"connectorId": connector_id, "parameters": params})
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def item(self, item_id: str) -> dict[str, Any]:
        resp = self.http.get(f"{self.base}/items/{item_id}", timeout=5)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def patch(self, item_id: str, body: dict[str, Any] | None = None) -> requests.Response:
        return self.http.patch(f"{self.base}/items/{item_id}", json=body or {}, timeout=5)

    def act(self, item_id: str, *, granted: bool = True) -> requests.Response:
        """The account holder at the bank, through the control route."""
        url = f"{self.base}/_emulator/items/{item_id}/user_action"
        return requests.post(url, json={"granted": granted}, timeout=5)

    def accounts(self, item_id: str) -> list[dict[str, Any]]:
        return list(self.http.get(f"{self.base}/accounts", params={"itemId": item_id}, timeout=5).json()["results"])

    def poll(self, item_id: str, timeout: float = 10.0) -> list[tuple[str, str]]:
        """GET /items/{id} in a loop until the sync stops running; the distinct (status, executionStatus)."""
        seen: list[tuple[str, str]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.item(item_id)
            step = (item["status"], item["executionStatus"])
            if not seen or seen[-1] != step:
                seen.append(step)
            if item["status"] not in ("UPDATING", "MERGING"):
                return seen
        raise AssertionError(f"still running after {timeout} s: {seen}")

    def close(self) -> None:
        self.http.close()


def state(item: dict[str, Any]) -> tuple[str, str]:
    return item["status"], item["executionStatus"]


def events_of(emulator: PluggyEmulator, item_id: str) -> list[tuple[str, str | None]]:
    return [
        (e["event"], e["payload"].get("triggeredBy")) for e in emulator.events() if e["payload"]["itemId"] == item_id
    ]


def steps(summary: dict[str, Any] | None) -> list[tuple[str, str]]:
    assert summary is not None
    return [(s["status"], s["executionStatus"]) for s in summary["steps"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hooks = Receiver()
    yield hooks
    hooks.close()


def started(receiver: Receiver, **kwargs: Any) -> PluggyEmulator:
    emulator = PluggyEmulator(CLIENT_ID, CLIENT_SECRET, seed=3, **kwargs)
    emulator.start()
    emulator.create_webhook(receiver.url, "all")
    return emulator


@pytest.fixture
def instant(receiver: Receiver) -> Iterator[tuple[PluggyEmulator, Client]]:
    emulator = started(receiver)
    client = Client(emulator)
    yield emulator, client
    client.close()
    emulator.stop()


@pytest.fixture
def timed(receiver: Receiver) -> Iterator[tuple[PluggyEmulator, Client]]:
    emulator = started(receiver, time_scale=SCALE, sync_timing=EVEN)
    client = Client(emulator)
    yield emulator, client
    client.close()
    emulator.stop()


@pytest.fixture
def polled(receiver: Receiver) -> Iterator[tuple[PluggyEmulator, Client]]:
    emulator = started(receiver, time_scale=POLLED_SCALE, sync_timing=EVEN)
    client = Client(emulator)
    yield emulator, client
    client.close()
    emulator.stop()


def assert_waits_for_action(item: dict[str, Any], timeout_seconds: float) -> None:
    assert state(item) == ("WAITING_USER_ACTION", "WAITING_USER_ACTION")
    action = item["userAction"]
    assert action["type"] == "authorize-access"
    assert isinstance(action["instructions"], str) and action["instructions"]
    assert parse_iso_ms(action["expiresAt"]) - parse_iso_ms(item["updatedAt"]) == timeout_seconds * 1000
    assert item["parameter"] is None and item["error"] is None


def assert_authorization_pending(item: dict[str, Any]) -> None:
    assert state(item) == ("OUTDATED", "USER_AUTHORIZATION_PENDING")
    error = item["error"]
    assert error["code"] == "USER_AUTHORIZATION_PENDING" and error["message"]
    attributes = error["attributes"]
    assert attributes and all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items())


def assert_success(item: dict[str, Any]) -> None:
    assert state(item) == ("UPDATED", "SUCCESS")
    assert item["error"] is None and item["userAction"] is None and item["parameter"] is None


# --- instant mode: WAITING_USER_ACTION ---------------------------------------------------------------------


def test_the_app_authorization_connector_is_listed(instant: tuple[PluggyEmulator, Client]) -> None:
    _, client = instant
    connectors = client.http.get(f"{client.base}/connectors", params={"sandbox": "true"}, timeout=5).json()
    by_id = {c["id"]: c for c in connectors["results"]}
    assert by_id[APP_AUTHORIZATION]["name"] == "Pluggy Bank App Authorization"
    assert {c["name"] for c in by_id[APP_AUTHORIZATION]["credentials"]} == {"user", "password"}


def test_instant_user_action_waits_until_the_account_holder_grants_it(
    instant: tuple[PluggyEmulator, Client], receiver: Receiver
) -> None:
    emulator, client = instant
    answer = client.create(LOGIN, APP_AUTHORIZATION)
    assert state(answer) == ("UPDATING", "CREATED")
    item_id = answer["id"]
    assert_waits_for_action(client.item(item_id), 300)
    assert client.accounts(item_id) == []
    # No API call completes the action: the MFA route refuses an item that waits for an action.
    mfa = client.http.post(f"{client.base}/items/{item_id}/mfa", json={"token": "123456"}, timeout=5)
    assert mfa.status_code == 400
    assert emulator.settle(5)  # instant mode has no timers: the wait is all there is
    assert state(client.item(item_id)) == ("WAITING_USER_ACTION", "WAITING_USER_ACTION")

    resp = client.act(item_id)
    assert resp.status_code == 200 and state(resp.json()) == ("UPDATED", "SUCCESS")
    final = client.item(item_id)
    assert_success(final)
    assert final["nextAutoSyncAt"] is None  # an action at every login: no auto-sync
    assert len(client.accounts(item_id)) == 3
    assert emulator.wait_for_deliveries(5)
    assert receiver.seen(item_id) == [
        ("item/waiting_user_action", "CLIENT"),
        ("item/login_succeeded", "CLIENT"),
        ("item/created", "CLIENT"),
    ]
    assert client.act(item_id).status_code == 400  # nothing waits any more


def test_instant_user_action_refused(instant: tuple[PluggyEmulator, Client], receiver: Receiver) -> None:
    emulator, client = instant
    item_id = client.create(LOGIN, APP_AUTHORIZATION)["id"]
    resp = client.act(item_id, granted=False)
    assert resp.status_code == 200
    final = client.item(item_id)
    assert state(final) == ("LOGIN_ERROR", "USER_AUTHORIZATION_NOT_GRANTED")
    assert final["error"]["code"] == "USER_AUTHORIZATION_NOT_GRANTED" and final["userAction"] is None
    assert final["consecutiveFailedLoginAttempts"] == 1
    assert client.accounts(item_id) == []
    assert emulator.wait_for_deliveries(5)
    assert receiver.seen(item_id) == [("item/waiting_user_action", "CLIENT"), ("item/error", "CLIENT")]
    error_event = next(p for p in receiver.payloads if p["event"] == "item/error")
    assert error_event["error"]["code"] == "USER_AUTHORIZATION_NOT_GRANTED"


def test_instant_update_asks_again_and_ends_in_item_updated(instant: tuple[PluggyEmulator, Client]) -> None:
    emulator, client = instant
    item_id = client.create(LOGIN, APP_AUTHORIZATION)["id"]
    client.act(item_id)
    patched = client.patch(item_id)
    assert patched.status_code == 200
    assert_waits_for_action(client.item(item_id), 300)
    assert state(emulator.complete_user_action(item_id)) == ("UPDATED", "SUCCESS")
    # Instant mode sends item/login_succeeded on first syncs only (DELIBERATE_DIFFERENCES "instant-syncs").
    assert [name for name, _ in events_of(emulator, item_id)] == [
        "item/waiting_user_action",
        "item/login_succeeded",
        "item/created",
        "item/waiting_user_action",
        "item/updated",
    ]


def test_a_control_wait_for_a_user_action_on_any_item(instant: tuple[PluggyEmulator, Client]) -> None:
    emulator, client = instant
    item_id = client.create(LOGIN)["id"]
    resp = requests.post(f"{client.base}/_emulator/items/{item_id}/waiting_user_action", json={}, timeout=5)
    assert resp.status_code == 200 and resp.json()["eventId"]
    waiting = client.item(item_id)
    assert_waits_for_action(waiting, 300)
    assert waiting["lastUpdatedAt"] is not None  # the earlier sync's
    emulator.complete_user_action(item_id)
    assert_success(client.item(item_id))
    assert [name for name, _ in events_of(emulator, item_id)][-2:] == ["item/waiting_user_action", "item/updated"]


def test_complete_user_action_refuses_items_that_wait_for_nothing(instant: tuple[PluggyEmulator, Client]) -> None:
    emulator, client = instant
    item_id = client.create(LOGIN)["id"]
    with pytest.raises(ValueError, match="waits for no action"):
        emulator.complete_user_action(item_id)
    resp = client.act(item_id)
    assert resp.status_code == 400 and "waits for no action" in resp.json()["message"]
    assert client.act("no-such-item").status_code == 404
    failed = client.create({"user": "user-locked", "password": "password-ok"})["id"]
    assert client.act(failed).status_code == 400


# --- instant mode: USER_AUTHORIZATION_PENDING --------------------------------------------------------------


def test_instant_authorization_stays_pending_until_approved(
    instant: tuple[PluggyEmulator, Client], receiver: Receiver
) -> None:
    emulator, client = instant
    item_id = client.create(PENDING_LOGIN)["id"]
    pending = client.item(item_id)
    assert_authorization_pending(pending)
    assert pending["lastUpdatedAt"] is None and client.accounts(item_id) == []
    assert emulator.settle(5) and emulator.clock_info()["pendingWork"] == 0  # no timer in instant mode
    assert_authorization_pending(client.item(item_id))
    assert emulator.truth()["items"][item_id]["executionStatus"] == "USER_AUTHORIZATION_PENDING"

    resp = client.act(item_id)
    assert resp.status_code == 200
    assert_success(client.item(item_id))
    assert len(client.accounts(item_id)) == 3
    assert emulator.wait_for_deliveries(5)
    # The widget saw an error; the success arrives later, by webhook only, from Pluggy's own sync.
    assert receiver.seen(item_id) == [
        ("item/error", "CLIENT"),
        ("item/login_succeeded", "SYNC"),
        ("item/created", "SYNC"),
    ]
    error_event = next(p for p in receiver.payloads if p["event"] == "item/error")
    assert error_event["error"] == {"code": "USER_AUTHORIZATION_PENDING", "message": pending["error"]["message"]}
    # The device is trusted now: the next update logs in at once.
    assert client.patch(item_id).status_code == 200
    assert_success(client.item(item_id))


def test_instant_authorization_refused(instant: tuple[PluggyEmulator, Client], receiver: Receiver) -> None:
    emulator, client = instant
    item_id = client.create(PENDING_LOGIN)["id"]
    assert client.act(item_id, granted=False).status_code == 200
    refused = client.item(item_id)
    assert state(refused) == ("LOGIN_ERROR", "USER_AUTHORIZATION_NOT_GRANTED")
    assert refused["error"]["code"] == "USER_AUTHORIZATION_NOT_GRANTED" and "attributes" not in refused["error"]
    assert emulator.wait_for_deliveries(5)
    assert receiver.seen(item_id) == [("item/error", "CLIENT"), ("item/error", "SYNC")]
    assert client.act(item_id).status_code == 400
    # A new login asks for the authorization again.
    assert client.patch(item_id).status_code == 200
    assert_authorization_pending(client.item(item_id))


def test_instant_authorization_after_a_successful_sync_sends_item_updated(
    instant: tuple[PluggyEmulator, Client],
) -> None:
    emulator, client = instant
    item_id = client.create(LOGIN)["id"]
    assert client.patch(item_id, {"parameters": PENDING_LOGIN}).status_code == 200
    assert_authorization_pending(client.item(item_id))
    emulator.complete_user_action(item_id)
    assert_success(client.item(item_id))
    assert events_of(emulator, item_id)[-2:] == [("item/error", "CLIENT"), ("item/updated", "SYNC")]


# --- timed mode: WAITING_USER_ACTION -----------------------------------------------------------------------


def test_timed_user_action_steps_seen_while_polled(polled: tuple[PluggyEmulator, Client], receiver: Receiver) -> None:
    emulator, client = polled
    item_id = client.create(LOGIN, APP_AUTHORIZATION)["id"]
    assert client.poll(item_id) == [*LOGIN_STEPS, ("WAITING_USER_ACTION", "WAITING_USER_ACTION")]
    assert_waits_for_action(client.item(item_id), 60)
    assert emulator.clock_info()["pendingWork"] == 1
    resp = client.act(item_id)
    assert resp.status_code == 200
    assert state(resp.json()) == ("UPDATING", "LOGIN_IN_PROGRESS") and resp.json()["userAction"] is None
    assert client.poll(item_id) == [("UPDATING", "LOGIN_IN_PROGRESS"), *COLLECTING_STEPS]
    assert emulator.settle(10)
    assert_success(client.item(item_id))
    assert steps(emulator.last_sync(item_id)) == [
        *LOGIN_STEPS,
        ("WAITING_USER_ACTION", "WAITING_USER_ACTION"),
        ("UPDATING", "LOGIN_IN_PROGRESS"),
        *COLLECTING_STEPS,
    ]
    assert receiver.seen(item_id) == [
        ("item/waiting_user_action", "CLIENT"),
        ("item/login_succeeded", "CLIENT"),
        ("item/created", "CLIENT"),
    ]


def test_timed_user_action_refused_ends_after_the_login_step(timed: tuple[PluggyEmulator, Client]) -> None:
    emulator, client = timed
    item_id = client.create(LOGIN, APP_AUTHORIZATION)["id"]
    assert state(emulator.wait_for_item(item_id)) == ("WAITING_USER_ACTION", "WAITING_USER_ACTION")
    assert state(emulator.complete_user_action(item_id, granted=False)) == ("UPDATING", "LOGIN_IN_PROGRESS")
    final = emulator.wait_for_item(item_id)
    assert state(final) == ("LOGIN_ERROR", "USER_AUTHORIZATION_NOT_GRANTED")
    assert final["userAction"] is None and client.accounts(item_id) == []
    summary = emulator.last_sync(item_id)
    assert summary is not None and summary["outcome"] == "USER_AUTHORIZATION_NOT_GRANTED"
    assert steps(summary)[-2:] == [("UPDATING", "LOGIN_IN_PROGRESS"), ("LOGIN_ERROR", "USER_AUTHORIZATION_NOT_GRANTED")]
    assert [name for name, _ in events_of(emulator, item_id)] == ["item/waiting_user_action", "item/error"]


def test_timed_user_action_times_out_at_its_expiry(timed: tuple[PluggyEmulator, Client], receiver: Receiver) -> None:
    emulator, client = timed
    item_id = client.create(LOGIN, APP_AUTHORIZATION)["id"]
    waiting = emulator.wait_for_item(item_id)
    expires = parse_iso_ms(waiting["userAction"]["expiresAt"])
    assert emulator.settle(0.001) is False  # the wait is work in progress until its deadline
    assert emulator.settle(10)
    final = client.item(item_id)
    assert state(final) == ("OUTDATED", "USER_INPUT_TIMEOUT")
    assert final["error"]["code"] == "USER_INPUT_TIMEOUT" and final["userAction"] is None
    assert parse_iso_ms(final["updatedAt"]) >= expires
    assert receiver.seen(item_id) == [("item/waiting_user_action", "CLIENT"), ("item/error", "CLIENT")]
    with pytest.raises(ValueError, match="waits for no action"):
        emulator.complete_user_action(item_id)
    # A PATCH starts over: a new login, a new wait, a new deadline.
    assert client.patch(item_id).status_code == 200
    assert_waits_for_action(emulator.wait_for_item(item_id), 60)


def test_timed_wait_for_an_action_may_be_patched_or_replaced(timed: tuple[PluggyEmulator, Client]) -> None:
    emulator, client = timed
    item_id = client.create(LOGIN)["id"]
    assert emulator.settle(10)
    emulator.set_waiting_user_action(item_id)
    assert_waits_for_action(client.item(item_id), 60)
    summary = emulator.last_sync(item_id)
    assert summary is not None and summary["outcome"] is None
    assert steps(summary) == [("WAITING_USER_ACTION", "WAITING_USER_ACTION")]
    resp = client.patch(item_id)
    assert resp.status_code == 200 and state(resp.json()) == ("UPDATING", "CREATED")
    assert resp.json()["userAction"] is None
    assert_success(emulator.wait_for_item(item_id))  # connector 0: the new login asks for nothing
    assert emulator.settle(10)
    assert [name for name, _ in events_of(emulator, item_id)][-3:] == [
        "item/waiting_user_action",
        "item/login_succeeded",
        "item/updated",
    ]


# --- timed mode: USER_AUTHORIZATION_PENDING ----------------------------------------------------------------


def test_timed_authorization_pending_then_pluggy_syncs_after_the_delay(
    timed: tuple[PluggyEmulator, Client], receiver: Receiver
) -> None:
    emulator, client = timed
    item_id = client.create(PENDING_LOGIN)["id"]
    pending = emulator.wait_for_item(item_id)
    assert_authorization_pending(client.item(item_id))
    summary = emulator.last_sync(item_id)
    assert summary is not None and summary["outcome"] == "USER_AUTHORIZATION_PENDING"
    assert steps(summary) == [*LOGIN_STEPS, ("OUTDATED", "USER_AUTHORIZATION_PENDING")]
    due = parse_iso_ms(summary["authorizationSyncAt"])
    assert abs(due - parse_iso_ms(pending["updatedAt"]) - 600_000) < 2_000
    assert emulator.clock_info()["pendingWork"] == 1  # the timer
    assert emulator.settle(0.05) is False  # 25 emulator seconds: still waiting for the account holder
    assert_authorization_pending(client.item(item_id))
    assert client.accounts(item_id) == [] and emulator.truth()["accounts"] == {}

    assert emulator.settle(15)  # the timer fires, Pluggy's sync runs: settle completes
    final = client.item(item_id)
    assert_success(final)
    assert len(client.accounts(item_id)) == 3
    assert parse_iso_ms(final["updatedAt"]) >= due
    resumed = emulator.last_sync(item_id)
    assert resumed is not None and (resumed["triggeredBy"], resumed["first"]) == ("SYNC", True)
    assert steps(resumed) == [("UPDATING", "CREATED"), ("UPDATING", "LOGIN_IN_PROGRESS"), *COLLECTING_STEPS]
    assert parse_iso_ms(resumed["steps"][0]["at"]) >= due
    assert receiver.seen(item_id) == [
        ("item/error", "CLIENT"),
        ("item/login_succeeded", "SYNC"),
        ("item/created", "SYNC"),
    ]
    assert emulator.clock_info()["pendingWork"] == 0


def test_timed_authorization_approved_early(timed: tuple[PluggyEmulator, Client]) -> None:
    emulator, client = timed
    item_id = client.create(PENDING_LOGIN)["id"]
    pending = emulator.wait_for_item(item_id)
    resp = client.act(item_id)
    assert resp.status_code == 200 and state(resp.json()) == ("UPDATING", "CREATED")
    assert_success(emulator.wait_for_item(item_id))
    assert emulator.settle(10)
    created = [e for e in emulator.events() if e["event"] == "item/created"]
    assert len(created) == 1  # the timer was dropped: no second sync
    assert parse_iso_ms(created[0]["emittedAt"]) - parse_iso_ms(pending["updatedAt"]) < 600_000
    assert events_of(emulator, item_id) == [
        ("item/error", "CLIENT"),
        ("item/login_succeeded", "SYNC"),
        ("item/created", "SYNC"),
    ]


def test_timed_authorization_refused_drops_pluggys_sync(timed: tuple[PluggyEmulator, Client]) -> None:
    emulator, client = timed
    item_id = client.create(PENDING_LOGIN)["id"]
    emulator.wait_for_item(item_id)
    assert client.act(item_id, granted=False).status_code == 200
    refused = client.item(item_id)
    assert state(refused) == ("LOGIN_ERROR", "USER_AUTHORIZATION_NOT_GRANTED")
    assert emulator.clock_info()["pendingWork"] == 0
    summary = emulator.last_sync(item_id)
    assert summary is not None and summary["authorizationSyncAt"] is None
    assert emulator.settle(0.5)  # 250 emulator seconds: nothing is scheduled any more
    time.sleep(1.0)  # past the 600 s the sync would have come
    assert state(client.item(item_id)) == ("LOGIN_ERROR", "USER_AUTHORIZATION_NOT_GRANTED")
    assert events_of(emulator, item_id) == [("item/error", "CLIENT"), ("item/error", "SYNC")]


def test_timed_authorization_after_a_successful_sync_sends_item_updated(timed: tuple[PluggyEmulator, Client]) -> None:
    emulator, client = timed
    item_id = client.create(LOGIN)["id"]
    assert emulator.settle(10)
    assert client.patch(item_id, {"parameters": PENDING_LOGIN}).status_code == 200
    assert_authorization_pending(emulator.wait_for_item(item_id))
    assert emulator.settle(15)
    assert_success(client.item(item_id))
    summary = emulator.last_sync(item_id)
    assert summary is not None and (summary["triggeredBy"], summary["first"]) == ("SYNC", False)
    assert events_of(emulator, item_id)[-3:] == [
        ("item/error", "CLIENT"),
        ("item/login_succeeded", "SYNC"),
        ("item/updated", "SYNC"),
    ]


def test_a_new_login_while_pending_asks_again(timed: tuple[PluggyEmulator, Client]) -> None:
    emulator, client = timed
    item_id = client.create(PENDING_LOGIN)["id"]
    emulator.wait_for_item(item_id)
    first = emulator.last_sync(item_id)
    time.sleep(0.2)  # 100 emulator seconds
    assert client.patch(item_id).status_code == 200
    assert_authorization_pending(emulator.wait_for_item(item_id))
    second = emulator.last_sync(item_id)
    assert first is not None and second is not None
    assert parse_iso_ms(second["authorizationSyncAt"]) - parse_iso_ms(first["authorizationSyncAt"]) >= 100_000
    assert emulator.clock_info()["pendingWork"] == 1  # one timer: the first was dropped
    assert emulator.settle(15)
    assert [name for name, _ in events_of(emulator, item_id)] == [
        "item/error",
        "item/error",
        "item/login_succeeded",
        "item/created",
    ]


@pytest.mark.parametrize(("how", "last_event"), [("delete", "item/deleted"), ("fail", "item/error")])
def test_delete_or_fail_drops_a_pending_authorization(
    timed: tuple[PluggyEmulator, Client], how: str, last_event: str
) -> None:
    emulator, client = timed
    item_id = client.create(PENDING_LOGIN)["id"]
    emulator.wait_for_item(item_id)
    assert emulator.clock_info()["pendingWork"] == 1
    if how == "delete":
        emulator.delete_item(item_id)
    else:
        emulator.fail_item(item_id, "SITE_NOT_AVAILABLE")
    assert emulator.clock_info()["pendingWork"] == 0
    time.sleep(1.5)  # 750 emulator seconds: past the 600 s the sync would have come
    assert emulator.settle(2)
    assert [name for name, _ in events_of(emulator, item_id)] == ["item/error", last_event]


def test_sync_timing_validates_the_waits() -> None:
    for bad in ({"user_action_timeout": 0}, {"authorization_delay": -1}):
        with pytest.raises(ValueError):
            SyncTiming(**bad)
    default = SyncTiming()
    assert (default.user_action_timeout, default.authorization_delay) == (300, 1800)
    assert dataclasses.replace(default, authorization_delay=0).authorization_delay == 0
