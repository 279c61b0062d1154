"""The emulator's timed mode: syncs in the background through Pluggy's execution steps, on a scaled clock.

Everything runs over real HTTP on 127.0.0.1. Time is compressed (`time_scale` wall seconds per emulator
second), so a three-minute Pluggy sync takes a fraction of a second; step lengths are chosen so that a client
polling in a loop sees every step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from pluggy_emulator import PLUGGY_RATE_LIMITS, PluggyEmulator, SyncTiming
from pluggy_emulator.state import parse_iso_ms

CLIENT_ID = "emulator-client-id"
CLIENT_SECRET = "emulator-client-secret"
SCALE = 0.002  # 500 emulator seconds per wall second: a default 175 s sync takes 0.35 s
POLLED_SCALE = 0.008  # where a test polls for every step: 10 emulator seconds take 80 ms
# Every step 10 emulator seconds.
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
    late_fraction=0.2,
    late_delay=(30, 30),
)
NEW_ITEM_STEPS = [
    ("UPDATING", "CREATING"),
    ("UPDATING", "CREATED"),
    ("UPDATING", "LOGIN_IN_PROGRESS"),
    ("UPDATING", "ACCOUNTS_IN_PROGRESS"),
    ("UPDATING", "TRANSACTIONS_IN_PROGRESS"),
    ("UPDATING", "PAYMENT_DATA_IN_PROGRESS"),
    ("UPDATING", "CREDITCARDS_IN_PROGRESS"),
    ("MERGING", "CREDITCARDS_IN_PROGRESS"),
    ("UPDATED", "SUCCESS"),
]
SANDBOX_LOGIN = {"user": "user-ok", "password": "password-ok"}


# --- helpers ---------------------------------------------------------------------------------------


def timed(**kwargs: Any) -> PluggyEmulator:
    kwargs.setdefault("time_scale", SCALE)
    kwargs.setdefault("sync_timing", EVEN)
    return PluggyEmulator(CLIENT_ID, CLIENT_SECRET, seed=kwargs.pop("seed", 11), **kwargs)


@pytest.fixture
def emu() -> Iterator[PluggyEmulator]:
    with timed() as emulator:
        yield emulator


def session_for(emulator: PluggyEmulator) -> requests.Session:
    session = requests.Session()
    resp = session.post(
        f"{emulator.base_url}/auth", json={"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}, timeout=5
    )
    assert resp.status_code == 200, resp.text
    session.headers["X-API-KEY"] = resp.json()["apiKey"]
    return session


@pytest.fixture
def api(emu: PluggyEmulator) -> Iterator[requests.Session]:
    session = session_for(emu)
    yield session
    session.close()


@pytest.fixture
def polled() -> Iterator[PluggyEmulator]:
    """Slow enough that a client polling GET /items/{id} in a loop sees every step."""
    with timed(time_scale=POLLED_SCALE) as emulator:
        yield emulator


def poll_steps(api: requests.Session, base: str, item_id: str, timeout: float = 10.0) -> list[tuple[str, str]]:
    """GET /items/{id} in a loop until the sync stops running; the distinct (status, executionStatus) seen."""
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = api.get(f"{base}/items/{item_id}", timeout=5).json()
        step = (item["status"], item["executionStatus"])
        if not seen or seen[-1] != step:
            seen.append(step)
        if item["status"] not in ("UPDATING", "MERGING"):
            return seen
    raise AssertionError(f"still running after {timeout} s: {seen}")


def all_pages(api: requests.Session, url: str) -> list[list[dict[str, Any]]]:
    """Every page of a /v2/transactions answer, following `next`."""
    pages: list[list[dict[str, Any]]] = []
    for _ in range(1000):
        resp = api.get(url, timeout=5)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append(body["results"])
        if body["next"] is None:
            return pages
        url = url.split("?", 1)[0] + body["next"]
    raise AssertionError("pagination did not end")


def visible_rows(emu: PluggyEmulator) -> dict[str, dict[str, dict[str, Any]]]:
    return dict(emu.truth()["transactions"])


def event_names(emu: PluggyEmulator, since: int = 0) -> list[str]:
    return [e["event"] for e in emu.events()[since:]]


def step_names(summary: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["status"], s["executionStatus"]) for s in summary["steps"]]


class Mirror:
    """A webhook endpoint that keeps a copy of the rows the way a careful client does: the whole history on
    item/created, `createdTransactionsLink` on transactions/created, ids on updated, removals on deleted."""

    def __init__(self, emulator: PluggyEmulator) -> None:
        self.base = emulator.base_url
        self.api = session_for(emulator)
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                mirror.handle(payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def handle(self, payload: dict[str, Any]) -> None:
        self.events.append(payload)
        event = payload["event"]
        if event == "item/created":
            accounts = self.api.get(f"{self.base}/accounts", params={"itemId": payload["itemId"]}, timeout=5).json()
            for account in accounts["results"]:
                url = f"{self.base}/v2/transactions?accountId={account['id']}"
                self.store(account["id"], [row for page in all_pages(self.api, url) for row in page])
        elif event == "transactions/created":
            rows = [row for page in all_pages(self.api, payload["createdTransactionsLink"]) for row in page]
            self.store(payload["accountId"], rows)
        elif event == "transactions/updated":
            ids = ",".join(payload["transactionIds"])
            url = f"{self.base}/v2/transactions?accountId={payload['accountId']}&ids={ids}"
            self.store(payload["accountId"], [row for page in all_pages(self.api, url) for row in page])
        elif event == "transactions/deleted":
            for tx_id in payload["transactionIds"]:
                self.rows.get(payload["accountId"], {}).pop(tx_id, None)

    def store(self, account_id: str, rows: list[dict[str, Any]]) -> None:
        self.rows.setdefault(account_id, {}).update({row["id"]: row for row in rows})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
        self.api.close()


# --- the steps ---------------------------------------------------------------------------------------


def test_a_new_item_goes_through_pluggys_steps_while_polled(polled: PluggyEmulator) -> None:
    emu, api = polled, session_for(polled)
    started = time.monotonic()
    resp = api.post(f"{emu.base_url}/items", json={"connectorId": 0, "parameters": SANDBOX_LOGIN}, timeout=5)
    assert resp.status_code == 200
    item = resp.json()
    assert (item["status"], item["executionStatus"]) == ("UPDATING", "CREATING")  # answered at once
    assert api.get(f"{emu.base_url}/accounts", params={"itemId": item["id"]}, timeout=5).json()["total"] == 0
    assert poll_steps(api, emu.base_url, item["id"]) == NEW_ITEM_STEPS
    assert time.monotonic() - started < 3.0  # 90 emulator seconds: 0.72 s
    summary = emu.last_sync(item["id"])
    assert summary is not None
    assert step_names(summary) == NEW_ITEM_STEPS and summary["outcome"] == "SUCCESS"
    # Each step lasted its SyncTiming length in emulator time (the scheduler may start one a little late).
    moments = [parse_iso_ms(s["at"]) for s in summary["steps"]]
    assert all(10_000 * k <= m - moments[0] < 10_000 * k + 60_000 for k, m in enumerate(moments))
    final = api.get(f"{emu.base_url}/items/{item['id']}", timeout=5).json()
    assert final["lastUpdatedAt"] == final["updatedAt"] == summary["steps"][-1]["at"]
    assert final["error"] is None and final["statusDetail"] is None and final["nextAutoSyncAt"] is not None
    # A first sync: login, then item/created; rows that arrive after it bring their own transactions/created.
    assert emu.settle(10)
    names = event_names(emu)
    assert names[:2] == ["item/login_succeeded", "item/created"]
    assert set(names[2:]) == {"transactions/created"} and len(names) == 2 + len(summary["late"])
    login = emu.events()[0]
    assert moments[2] < parse_iso_ms(login["emittedAt"]) <= moments[3]  # when the login step ended
    api.close()


def test_an_update_shows_rows_per_account_and_merges_changes_at_the_end(emu: PluggyEmulator) -> None:
    api = session_for(emu)
    item = emu.create_item("user-1", transactions_per_account=8)
    assert (item["status"], item["executionStatus"]) == ("UPDATING", "CREATING")
    assert emu.wait_for_item(item["id"])["executionStatus"] == "SUCCESS"
    assert emu.settle(10)
    before = visible_rows(emu)
    first_events = len(emu.events())
    answer = emu.sync_item(item["id"], add=9, change=2, delete=2, restate_credit_card=1)
    assert answer["pending"] is True and answer["item"]["executionStatus"] == "CREATED"  # an update: no CREATING
    with pytest.raises(ValueError, match="still updating"):
        emu.sync_item(item["id"], add=1)
    seen_during: list[dict[str, dict[str, dict[str, Any]]]] = []
    while (now := emu.truth())["items"][item["id"]]["status"] in ("UPDATING", "MERGING"):
        seen_during.append(now["transactions"])
        time.sleep(0.002)
    summary = emu.last_sync(item["id"])
    assert summary is not None
    assert step_names(summary) == NEW_ITEM_STEPS[1:]
    # Rows to delete and rows replaced by a restated copy stayed visible until the merge.
    gone = {t for ids in summary["deleted"].values() for t in ids}
    assert len(gone) == 3 and summary["restated"] and set(summary["restated"]) <= gone
    assert all(gone <= {t for rows in view.values() for t in rows} for view in seen_during)
    after_merge = visible_rows(emu)
    assert not gone & {t for rows in after_merge.values() for t in rows}
    changed = {t for ids in summary["updated"].values() for t in ids}
    assert len(changed) == 2
    for account_id, ids in summary["updated"].items():
        for tx_id in ids:
            assert after_merge[account_id][tx_id] != before[account_id][tx_id]
    # transactions/created per account while the sync ran, then item/updated and the merge's events.
    assert emu.settle(10)
    names = event_names(emu, first_events)
    assert names == [
        "item/login_succeeded",
        *["transactions/created"] * len(summary["created"]),  # every account got new rows, some on time
        "item/updated",
        *["transactions/updated"] * len(summary["updated"]),
        *["transactions/deleted"] * len(summary["deleted"]),
        *["transactions/created"] * len(summary["late"]),
    ]
    final = visible_rows(emu)
    for account_id, ids in summary["created"].items():
        assert set(ids) <= set(final[account_id])
    api.close()


def test_failing_credentials_end_when_the_login_step_ends(polled: PluggyEmulator) -> None:
    emu, api = polled, session_for(polled)
    item = api.post(
        f"{emu.base_url}/items",
        json={"connectorId": 0, "parameters": {"user": "user-locked", "password": "password-ok"}},
        timeout=5,
    ).json()
    steps = poll_steps(api, emu.base_url, item["id"])
    assert steps == [*NEW_ITEM_STEPS[:3], ("LOGIN_ERROR", "ACCOUNT_LOCKED")]
    assert emu.settle(5)
    assert event_names(emu) == ["item/error"]
    assert emu.truth()["accounts"] == {}
    api.close()


def test_partial_success_reports_each_product(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1", "user-ok-account-error")
    final = emu.wait_for_item(item["id"])
    assert (final["status"], final["executionStatus"]) == ("UPDATED", "PARTIAL_SUCCESS")
    assert final["statusDetail"]["creditCards"]["isUpdated"] is False
    assert final["statusDetail"]["transactions"]["isUpdated"] is True
    summary = emu.last_sync(item["id"])
    assert summary is not None and ("UPDATING", "CREDITCARDS_IN_PROGRESS") in step_names(summary)
    assert {a["type"] for a in emu.truth()["accounts"].values()} == {"BANK"}


def test_new_accounts_appear_when_the_accounts_step_ends() -> None:
    slow = SyncTiming(accounts=100, transactions=100, late_fraction=0.0)
    with timed(sync_timing=slow) as emulator, emulator.clock_stopped():
        # The clock moves only here, 10 s at a time: every step is seen, however loaded the machine.
        api = session_for(emulator)
        item = emulator.create_item("user-1")
        counts: dict[str, set[int]] = {}
        url = f"{emulator.base_url}/items/{item['id']}"
        for _ in range(1000):
            if (before := api.get(url, timeout=5).json())["status"] == "UPDATED":
                break
            total = api.get(f"{emulator.base_url}/accounts", params={"itemId": item["id"]}, timeout=5).json()["total"]
            counts.setdefault(before["executionStatus"], set()).add(total)
            emulator.advance_clock(10)
        assert counts["ACCOUNTS_IN_PROGRESS"] == {0}
        assert counts["TRANSACTIONS_IN_PROGRESS"] == {3}
        api.close()


# --- MFA ---------------------------------------------------------------------------------------------


def test_mfa_two_step_waits_for_the_token(polled: PluggyEmulator) -> None:
    emu, api = polled, session_for(polled)
    item = api.post(f"{emu.base_url}/items", json={"connectorId": 2, "parameters": SANDBOX_LOGIN}, timeout=5).json()
    assert poll_steps(api, emu.base_url, item["id"]) == [
        *NEW_ITEM_STEPS[:3],
        ("WAITING_USER_INPUT", "WAITING_USER_INPUT"),
    ]
    waiting = api.get(f"{emu.base_url}/items/{item['id']}", timeout=5).json()
    parameter = waiting["parameter"]
    assert parameter["name"] == "token" and parameter["mfa"] is True
    assert parse_iso_ms(parameter["expiresAt"]) - parse_iso_ms(waiting["updatedAt"]) == 300_000
    assert event_names(emu) == ["item/waiting_user_input"]
    resp = api.post(f"{emu.base_url}/items/{item['id']}/mfa", json={"token": "123456"}, timeout=5)
    assert resp.status_code == 200
    assert (resp.json()["status"], resp.json()["executionStatus"]) == ("UPDATING", "LOGIN_MFA_IN_PROGRESS")
    assert resp.json()["parameter"] is None
    assert poll_steps(api, emu.base_url, item["id"]) == [
        ("UPDATING", "LOGIN_MFA_IN_PROGRESS"),
        *NEW_ITEM_STEPS[3:],
    ]
    assert emu.settle(10)
    assert event_names(emu)[:3] == ["item/waiting_user_input", "item/login_succeeded", "item/created"]
    assert api.post(f"{emu.base_url}/items/{item['id']}/mfa", json={"token": "123456"}, timeout=5).status_code == 400
    api.close()


def test_a_wrong_mfa_token_fails_after_the_mfa_step(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1", connector_id=2)
    assert emu.wait_for_item(item["id"])["status"] == "WAITING_USER_INPUT"
    emu.submit_mfa(item["id"], "000000")
    final = emu.wait_for_item(item["id"])
    assert (final["status"], final["executionStatus"]) == ("LOGIN_ERROR", "INVALID_CREDENTIALS_MFA")
    summary = emu.last_sync(item["id"])
    assert summary is not None
    assert step_names(summary)[-2:] == [
        ("UPDATING", "LOGIN_MFA_IN_PROGRESS"),
        ("LOGIN_ERROR", "INVALID_CREDENTIALS_MFA"),
    ]
    assert event_names(emu) == ["item/waiting_user_input", "item/error"]


def test_an_unanswered_mfa_times_out_at_its_expiry() -> None:
    with timed(sync_timing=SyncTiming(mfa_timeout=40)) as emulator:
        api = session_for(emulator)
        item = emulator.create_item("user-1", connector_id=2)
        waiting = emulator.wait_for_item(item["id"])
        assert waiting["status"] == "WAITING_USER_INPUT"
        expires = parse_iso_ms(waiting["parameter"]["expiresAt"])
        assert emulator.settle(5)
        final = api.get(f"{emulator.base_url}/items/{item['id']}", timeout=5).json()
        assert (final["status"], final["executionStatus"]) == ("OUTDATED", "USER_INPUT_TIMEOUT")
        assert final["error"]["code"] == "USER_INPUT_TIMEOUT" and final["parameter"] is None
        assert parse_iso_ms(final["updatedAt"]) >= expires
        assert event_names(emulator) == ["item/waiting_user_input", "item/error"]
        late = api.post(f"{emulator.base_url}/items/{item['id']}/mfa", json={"token": "123456"}, timeout=5)
        assert late.status_code == 400
        # A PATCH starts over: a new login, a new wait, a new deadline.
        again = api.patch(f"{emulator.base_url}/items/{item['id']}", json={}, timeout=5).json()
        assert (again["status"], again["executionStatus"]) == ("UPDATING", "CREATED")
        assert emulator.wait_for_item(item["id"])["status"] == "WAITING_USER_INPUT"
        api.close()


def test_patch_while_updating_is_refused_and_while_waiting_restarts(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1", connector_id=2)
    resp = api.patch(f"{emu.base_url}/items/{item['id']}", json={}, timeout=5)
    assert resp.status_code == 400 and resp.json()["codeDescription"] == "ITEM_ALREADY_UPDATING"
    assert emu.wait_for_item(item["id"])["status"] == "WAITING_USER_INPUT"
    resp = api.patch(f"{emu.base_url}/items/{item['id']}", json={}, timeout=5)
    assert resp.status_code == 200 and resp.json()["executionStatus"] == "CREATED"
    assert resp.json()["parameter"] is None
    assert emu.wait_for_item(item["id"])["status"] == "WAITING_USER_INPUT"
    with pytest.raises(ValueError, match="still updating"):
        emu.reconnect_item(emu.create_item("user-2")["id"])


# --- late rows and createdAt ----------------------------------------------------------------------------


def test_late_rows_appear_after_updated_with_an_earlier_created_at_and_their_webhook() -> None:
    timing = SyncTiming(late_fraction=0.2, late_delay=(200, 200))  # 0.4 s of wall time after UPDATED
    with timed(sync_timing=timing) as emulator:
        api = session_for(emulator)
        item = emulator.create_item("user-1", transactions_per_account=30)
        assert emulator.wait_for_item(item["id"])["status"] == "UPDATED"
        at_updated = visible_rows(emulator)
        summary = emulator.last_sync(item["id"])
        assert summary is not None
        late = summary["late"]
        assert sum(len(ids) for ids in late.values()) == round(0.2 * 90)
        assert not {t for ids in late.values() for t in ids} & {t for rows in at_updated.values() for t in rows}
        assert event_names(emulator) == ["item/login_succeeded", "item/created"]
        # The gap an incremental sync can fall into: the newest createdAt seen at UPDATED, plus 1 ms.
        watermark = max(parse_iso_ms(r["createdAt"]) for rows in at_updated.values() for r in rows.values()) + 1
        assert emulator.settle(5)
        final = visible_rows(emulator)
        events = [e["payload"] for e in emulator.events() if e["event"] == "transactions/created"]
        assert {e["accountId"] for e in events} == set(late)
        for account_id, ids in late.items():
            newest_seen = max(parse_iso_ms(r["createdAt"]) for r in at_updated[account_id].values())
            for tx_id in ids:
                assert parse_iso_ms(final[account_id][tx_id]["createdAt"]) < newest_seen
            event = next(e for e in events if e["accountId"] == account_id)
            assert parse_iso_ms(event["transactionsCreatedAtFrom"]) == min(
                parse_iso_ms(final[account_id][t]["createdAt"]) for t in ids
            )
            linked = {r["id"] for page in all_pages(api, event["createdTransactionsLink"]) for r in page}
            assert set(ids) <= linked  # the webhook's link finds them
            since = datetime.fromtimestamp(watermark / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            url = f"{emulator.base_url}/v2/transactions?accountId={account_id}&createdAtFrom={since}"
            missed = {r["id"] for page in all_pages(api, url) for r in page}
            assert not set(ids) & missed  # a watermark sync does not
        late_event_at = min(parse_iso_ms(e["emittedAt"]) for e in emulator.events()[2:])
        updated_at = parse_iso_ms(emulator.truth()["items"][item["id"]]["lastUpdatedAt"])
        assert late_event_at - updated_at >= 200_000
        api.close()


def test_created_at_is_not_monotonic_across_pages_and_accounts() -> None:
    with timed(sync_timing=SyncTiming(late_fraction=0.0), page_size=10) as emulator:
        api = session_for(emulator)
        item = emulator.create_item("user-1", transactions_per_account=40)
        emulator.wait_for_item(item["id"])
        created: list[int] = []
        spans: list[tuple[int, int]] = []
        for account_id in emulator.truth()["accounts"]:
            pages = all_pages(api, f"{emulator.base_url}/v2/transactions?accountId={account_id}")
            assert [len(p) for p in pages] == [10, 10, 10, 10]
            stamps = [parse_iso_ms(r["createdAt"]) for page in pages for r in page]
            assert stamps != sorted(stamps) and stamps != sorted(stamps, reverse=True)
            # Not even page by page: a page holds rows newer than some row of the next page.
            newest = [max(parse_iso_ms(r["createdAt"]) for r in p) for p in pages]
            oldest = [min(parse_iso_ms(r["createdAt"]) for r in p) for p in pages]
            assert all(newer > older for newer, older in zip(newest, oldest[1:], strict=False))
            created += stamps
            spans.append((min(stamps), max(stamps)))
        assert len(set(created)) > len(created) // 2  # spread, not one createdAt per sync
        # The two bank accounts were collected side by side: the second has rows older than the first's newest.
        assert spans[1][0] < spans[0][1]
        api.close()


def test_a_mirror_that_follows_the_webhooks_equals_truth_after_settle() -> None:
    timing = SyncTiming(late_fraction=0.3, late_delay=(5, 60))
    with timed(sync_timing=timing, seed=5) as emulator:
        mirror = Mirror(emulator)
        try:
            emulator.create_webhook(mirror.url, "all")
            item = emulator.create_item("user-1", transactions_per_account=12)
            emulator.wait_for_item(item["id"])
            emulator.sync_item(item["id"], add=7, change=3, delete=2, restate_credit_card=1)
            emulator.wait_for_item(item["id"])
            emulator.sync_item(item["id"], add=5, new_account=True)  # the previous sync's late rows still to come
            assert emulator.settle(15)
            truth = emulator.truth()["transactions"]
            assert {a: set(rows) for a, rows in mirror.rows.items()} == {a: set(rows) for a, rows in truth.items()}
            assert mirror.rows == truth
        finally:
            mirror.close()


# --- page sizes, rate limits, the clock ------------------------------------------------------------------


def test_page_sizes_v2_and_legacy() -> None:
    with timed(page_size=25) as emulator:
        api = session_for(emulator)
        item = emulator.create_item("user-1", transactions_per_account=60)
        emulator.settle(5)
        account_id = next(iter(emulator.truth()["accounts"]))
        pages = all_pages(api, f"{emulator.base_url}/v2/transactions?accountId={account_id}")
        assert [len(p) for p in pages] == [25, 25, 10]
        url = f"{emulator.base_url}/transactions"
        legacy = api.get(url, params={"accountId": account_id, "pageSize": 7, "page": 2}, timeout=5).json()
        assert (legacy["page"], legacy["total"], legacy["totalPages"], len(legacy["results"])) == (2, 60, 9, 7)
        assert len(api.get(url, params={"accountId": account_id}, timeout=5).json()["results"]) == 20
        assert item["id"] in emulator.truth()["items"]
        api.close()


def test_rate_limits_are_on_in_timed_mode_with_pluggys_figures() -> None:
    with PluggyEmulator() as instant:
        assert instant.rate_limits is None
    # time_scale 0.05: Pluggy's minute takes 3 s of wall time, enough for 361 quick calls.
    with timed(time_scale=0.05) as emulator:
        assert emulator.rate_limits == PLUGGY_RATE_LIMITS
        assert PLUGGY_RATE_LIMITS["PATCH /items/{id}"] == 20 and PLUGGY_RATE_LIMITS["GET /v2/transactions"] == 360
        api = session_for(emulator)
        item = emulator.create_item("user-1")
        statuses = [api.patch(f"{emulator.base_url}/items/{item['id']}", json={}, timeout=5) for _ in range(21)]
        assert [r.status_code for r in statuses[:20]] == [400] * 20  # counted, though refused: still updating
        limited = statuses[20]
        assert limited.status_code == 429
        assert limited.json() == {
            "message": "Too many requests. Please try again later (see Retry-After header in seconds)",
            "code": 429,
        }
        assert limited.headers["RateLimit-Limit"] == "20" and limited.headers["RateLimit-Remaining"] == "0"
        assert limited.headers["Retry-After"] == "3.000"  # 60 emulator seconds, in wall seconds
        assert 0 < float(limited.headers["RateLimit-Reset"]) <= 3.0
        url = f"{emulator.base_url}/accounts/nope"
        codes = [api.get(url, timeout=5).status_code for _ in range(361)]
        assert codes == [404] * 360 + [429]
        api.close()


def test_a_429_resets_after_the_wall_seconds_its_headers_give() -> None:
    with timed(rate_limit_per_minute={"GET /webhooks": 3}) as emulator:
        api = session_for(emulator)
        url = f"{emulator.base_url}/webhooks"
        answers = [api.get(url, timeout=5) for _ in range(4)]
        if [r.status_code for r in answers] != [200, 200, 200, 429]:  # a 120 ms window ended mid-burst: again
            time.sleep(0.13)
            answers = [api.get(url, timeout=5) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        limited = answers[-1]
        assert limited.headers["Retry-After"] == "0.120"
        time.sleep(float(limited.headers["RateLimit-Reset"]) + 0.01)
        assert api.get(url, timeout=5).status_code == 200
        assert api.get(f"{emulator.base_url}/connectors", timeout=5).headers.get("RateLimit-Limit") is None
        api.close()


def test_the_legacy_endpoint_date_follows_the_timed_clock() -> None:
    new_year = datetime(2027, 1, 1, 3, 0, tzinfo=UTC).timestamp()  # midnight in Sao Paulo
    start = new_year - 200
    with timed(clock=lambda: start, time_scale=0.003) as emulator:  # 0.6 s of wall time to midnight
        api = session_for(emulator)
        emulator.create_item("user-1")
        emulator.wait_for_item(next(iter(emulator.truth()["items"])))
        account_id = next(iter(emulator.truth()["accounts"]))
        url = f"{emulator.base_url}/transactions"
        assert parse_iso_ms(emulator.now()) < new_year * 1000
        assert api.get(url, params={"accountId": account_id}, timeout=5).status_code == 200
        while parse_iso_ms(emulator.now()) < new_year * 1000 + 1000:
            time.sleep(0.01)
        assert api.get(url, params={"accountId": account_id}, timeout=5).status_code == 410
        created = emulator.truth()["items"][next(iter(emulator.truth()["items"]))]["createdAt"]
        assert start * 1000 <= parse_iso_ms(created) < new_year * 1000  # timestamps come from the same clock
        api.close()


# --- settle, cancellation, control routes, the CLI --------------------------------------------------------


def test_settle_waits_for_late_rows_and_their_deliveries(emu: PluggyEmulator) -> None:
    mirror = Mirror(emu)
    try:
        emu.create_webhook(mirror.url, "all")
        item = emu.create_item("user-1")
        assert emu.settle(0.001) is False  # the sync has only started
        assert emu.clock_info()["pendingWork"] == 1
        assert emu.settle(10) is True
        assert emu.clock_info() | {"now": None} == {
            "now": None,
            "timed": True,
            "timeScale": SCALE,
            "pendingWork": 0,
        }
        emitted = [e["eventId"] for e in emu.events()]
        assert [e["eventId"] for e in mirror.events] == emitted and len(emitted) > 2
        assert {d["outcome"] for d in emu.deliveries()} == {"delivered"}
        held = emu.truth()
        time.sleep(0.1)  # 50 emulator seconds: nothing moves any more
        assert emu.truth() == held and len(emu.events()) == len(emitted)
        assert emu.last_sync(item["id"])["outcome"] == "SUCCESS"  # type: ignore[index]
    finally:
        mirror.close()


def test_delete_and_fail_cancel_a_sync_in_progress(emu: PluggyEmulator) -> None:
    deleted = emu.create_item("user-1")
    emu.delete_item(deleted["id"])
    failed = emu.create_item("user-2")
    emu.fail_item(failed["id"], "SITE_NOT_AVAILABLE")
    assert emu.settle(5)
    assert event_names(emu) == ["item/deleted", "item/error"]
    truth = emu.truth()
    assert truth["accounts"] == {} and truth["deletedAccountIds"] == []
    assert truth["items"][failed["id"]]["status"] == "OUTDATED"


def test_instant_mode_is_unchanged_and_settles_at_once() -> None:
    with PluggyEmulator() as emulator:
        item = emulator.create_item("user-1")
        assert (item["status"], item["executionStatus"]) == ("UPDATED", "SUCCESS")
        assert emulator.timed is False and emulator.last_sync(item["id"]) is None
        created = {r["createdAt"] for rows in emulator.truth()["transactions"].values() for r in rows.values()}
        assert len(created) == 1
        assert emulator.settle(5) is True
        with pytest.raises(ValueError, match="time_scale"):
            PluggyEmulator(timed=True, time_scale=0)


def test_control_routes_for_time(emu: PluggyEmulator) -> None:
    base = f"{emu.base_url}/_emulator"
    item = requests.post(f"{base}/items", json={}, timeout=5).json()
    assert item["status"] == "UPDATING"
    clock = requests.get(f"{base}/clock", timeout=5).json()
    assert clock["timed"] is True and clock["timeScale"] == SCALE and clock["pendingWork"] == 1
    assert datetime.fromisoformat(clock["now"]) - datetime.now(UTC) > timedelta(seconds=0)
    busy = requests.post(f"{base}/items/{item['id']}/sync", json={"add": 1}, timeout=5)
    assert busy.status_code == 400 and "still updating" in busy.json()["message"]
    assert requests.post(f"{base}/settle", json={"timeout": 10}, timeout=15).json() == {"settled": True}
    summary = requests.get(f"{base}/items/{item['id']}/last_sync", timeout=5).json()
    assert summary["outcome"] == "SUCCESS" and summary["first"] is True
    assert requests.get(f"{base}/items/nope/last_sync", timeout=5).status_code == 404
    answer = requests.post(f"{base}/items/{item['id']}/sync", json={"add": 2}, timeout=5).json()
    assert answer["pending"] is True


def test_the_cli_runs_a_timed_emulator() -> None:
    command = [sys.executable, "-m", "pluggy_emulator", "--port", "0", "--timed"]
    command += ["--time-scale", "0.002", "--step", "login=40", "--late-fraction", "0"]
    env = {k: v for k, v in os.environ.items() if k not in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert "timed, time scale 0.002" in banner, banner
        base = banner.split(" on ", 1)[1].split(" ", 1)[0]
        item = requests.post(f"{base}/_emulator/items", json={}, timeout=5).json()
        assert requests.post(f"{base}/_emulator/settle", json={"timeout": 10}, timeout=15).json()["settled"]
        summary = requests.get(f"{base}/_emulator/items/{item['id']}/last_sync", timeout=5).json()
        # CREATING 2 s, CREATED 3 s, LOGIN_IN_PROGRESS 40 s: ACCOUNTS_IN_PROGRESS 45 s after the request.
        asked, accounts = parse_iso_ms(summary["steps"][0]["at"]), parse_iso_ms(summary["steps"][3]["at"])
        assert summary["steps"][3]["executionStatus"] == "ACCOUNTS_IN_PROGRESS"
        assert 45_000 <= accounts - asked < 105_000 and summary["late"] == {}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_sync_timing_is_validated() -> None:
    for bad in ({"login": -1}, {"late_fraction": 1.5}, {"late_delay": (5, 1)}, {"mfa_timeout": 0}):
        with pytest.raises(ValueError):
            SyncTiming(**bad)
    assert math.isclose(SyncTiming().total(), 175) and math.isclose(SyncTiming().total(first=False), 173)


def test_a_control_mfa_wait_resumes_on_the_token_or_times_out() -> None:
    with timed(sync_timing=dataclasses.replace(EVEN, mfa_timeout=30, late_fraction=0.0)) as emulator:
        answered, ignored = (emulator.create_item(user) for user in ("user-1", "user-2"))
        emulator.settle(5)
        for item in (answered, ignored):
            emulator.set_waiting_user_input(item["id"])
            assert emulator.truth()["items"][item["id"]]["status"] == "WAITING_USER_INPUT"
        resumed = emulator.submit_mfa(answered["id"], "123456")
        assert (resumed["status"], resumed["executionStatus"]) == ("UPDATING", "LOGIN_MFA_IN_PROGRESS")
        assert emulator.settle(5)
        items = emulator.truth()["items"]
        assert (items[answered["id"]]["status"], items[answered["id"]]["executionStatus"]) == ("UPDATED", "SUCCESS")
        assert items[ignored["id"]]["executionStatus"] == "USER_INPUT_TIMEOUT"
        summary = emulator.last_sync(answered["id"])
        assert summary is not None
        assert step_names(summary) == [
            ("WAITING_USER_INPUT", "WAITING_USER_INPUT"),
            ("UPDATING", "LOGIN_MFA_IN_PROGRESS"),
            *NEW_ITEM_STEPS[3:],
        ]
        a, i = answered["id"], ignored["id"]
        assert [(e["event"], e["payload"]["itemId"]) for e in emulator.events()][-5:] == [
            ("item/waiting_user_input", a),
            ("item/waiting_user_input", i),
            ("item/login_succeeded", a),  # LOGIN_MFA_IN_PROGRESS lasts 10 s
            ("item/error", i),  # the deadline: 30 s
            ("item/updated", a),  # 50 s of collection later
        ]
