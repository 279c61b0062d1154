"""Public controls tests use instead of the emulator's internals: its clock (pause, resume, advance), the
rate-limit budget of a route (read, use up, reset) and the lifetime of the API keys it issues."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from pluggy_emulator import PluggyEmulator, SyncTiming
from pluggy_emulator.state import parse_iso_ms

CLIENT_ID = "emulator-client-id"
CLIENT_SECRET = "emulator-client-secret"
SCALE = 0.002  # 500 emulator seconds per wall second
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
    mfa_timeout=60,
    late_fraction=0.0,
)
ACCOUNTS = "GET /accounts"


@pytest.fixture
def emu() -> Iterator[PluggyEmulator]:
    with PluggyEmulator(CLIENT_ID, CLIENT_SECRET, time_scale=SCALE, sync_timing=EVEN) as emulator:
        yield emulator


def api_key(emulator: PluggyEmulator) -> str:
    body = {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}
    return str(requests.post(f"{emulator.base_url}/auth", json=body, timeout=5).json()["apiKey"])


def now_ms(emulator: PluggyEmulator) -> int:
    return parse_iso_ms(emulator.now())


# --- the clock ---------------------------------------------------------------------------------------------


def test_a_paused_clock_holds_a_timed_sync_still(emu: PluggyEmulator) -> None:
    assert emu.clock_paused is False
    assert emu.pause_clock() is True and emu.pause_clock() is False
    assert emu.clock_paused is True
    stopped_at = now_ms(emu)
    item = emu.create_item("user-1")
    time.sleep(0.1)  # 50 emulator seconds if the clock ran
    assert now_ms(emu) == stopped_at
    assert (emu.truth()["items"][item["id"]]["executionStatus"]) == "CREATING"
    assert emu.settle(0.05) is False  # nothing comes due while the clock stands still
    assert emu.resume_clock() is True and emu.resume_clock() is False
    assert now_ms(emu) - stopped_at < 5_000  # it runs on from where it stood
    assert emu.settle(10)
    assert emu.truth()["items"][item["id"]]["status"] == "UPDATED"


def test_clock_stopped_nests_and_resumes_only_what_it_paused(emu: PluggyEmulator) -> None:
    with emu.clock_stopped():
        held = now_ms(emu)
        with emu.clock_stopped():
            time.sleep(0.02)
        assert emu.clock_paused is True  # the inner block did not resume the outer pause
        assert now_ms(emu) == held
    assert emu.clock_paused is False
    time.sleep(0.02)
    assert now_ms(emu) > held


def test_advance_jumps_forward_and_runs_what_falls_due(emu: PluggyEmulator) -> None:
    emu.pause_clock()
    before = now_ms(emu)
    assert parse_iso_ms(emu.advance_clock(3600)) - before == 3_600_000
    item = emu.create_item("user-1", connector_id=2)  # the MFA is asked 30 s in, and expires 60 s later
    assert emu.truth()["items"][item["id"]]["executionStatus"] == "CREATING"
    emu.advance_clock(31)
    assert emu.wait_for_item(item["id"])["status"] == "WAITING_USER_INPUT"
    emu.advance_clock(61)  # the deadline passes in the jump: USER_INPUT_TIMEOUT at once
    deadline = time.monotonic() + 5
    while emu.truth()["items"][item["id"]]["executionStatus"] != "USER_INPUT_TIMEOUT":
        assert time.monotonic() < deadline, "the deadline's task did not run"
        time.sleep(0.005)
    assert emu.clock_paused is True  # advancing does not resume a paused clock
    with pytest.raises(ValueError, match="forward"):
        emu.advance_clock(-1)


def test_advance_wakes_work_waiting_far_ahead() -> None:
    timing = SyncTiming(authorization_delay=3600, late_fraction=0.0)
    with PluggyEmulator(time_scale=0.01, sync_timing=timing) as emulator:  # the hour is 36 wall seconds
        item = emulator.create_item("user-1", "user-authorization-pending")
        assert emulator.wait_for_item(item["id"])["executionStatus"] == "USER_AUTHORIZATION_PENDING"
        emulator.pause_clock()
        time.sleep(0.2)  # the scheduler is now waiting for the hour to pass (36 s)
        emulator.advance_clock(3600)
        deadline = time.monotonic() + 3
        while emulator.truth()["items"][item["id"]]["status"] != "UPDATING":
            assert time.monotonic() < deadline, "Pluggy's sync did not start when the clock reached it"
            time.sleep(0.005)
        emulator.resume_clock()
        assert emulator.settle(10)


def test_instant_mode_clock_controls_move_timestamps_and_dated_rules() -> None:
    last_day = datetime(2026, 12, 31, 20, 0, tzinfo=UTC).timestamp()  # 17:00 in Sao Paulo, its last day
    with PluggyEmulator(clock=lambda: last_day) as emulator:
        item = emulator.create_item("user-1")
        account = next(iter(emulator.truth()["accounts"]))
        headers = {"X-API-KEY": api_key(emulator)}
        url = f"{emulator.base_url}/transactions?accountId={account}"
        assert requests.get(url, headers=headers, timeout=5).status_code == 200
        emulator.advance_clock(24 * 3600)
        assert requests.get(url, headers=headers, timeout=5).status_code == 410
        emulator.pause_clock()
        emulator.fail_item(item["id"], "SITE_NOT_AVAILABLE")
        stamped = parse_iso_ms(emulator.truth()["items"][item["id"]]["updatedAt"])
        assert stamped - int(last_day * 1000) >= 24 * 3_600_000


def test_clock_control_routes(emu: PluggyEmulator) -> None:
    base = f"{emu.base_url}/_emulator/clock"
    paused = requests.post(f"{base}/pause", timeout=5).json()
    assert paused["paused"] is True and paused["changed"] is True
    assert requests.post(f"{base}/pause", timeout=5).json()["changed"] is False
    moved = requests.post(f"{base}/advance", json={"seconds": 90}, timeout=5).json()
    assert parse_iso_ms(moved["now"]) - parse_iso_ms(paused["now"]) == 90_000 and moved["paused"] is True
    assert requests.post(f"{base}/advance", json={"seconds": -1}, timeout=5).status_code == 400
    resumed = requests.post(f"{base}/resume", timeout=5).json()
    assert resumed["paused"] is False and resumed["changed"] is True


# --- the rate-limit budget ---------------------------------------------------------------------------------


def test_the_budget_of_a_route_is_read_used_up_and_reset(emu: PluggyEmulator) -> None:
    item = emu.create_item("user-1")
    headers = {"X-API-KEY": api_key(emu)}
    url = f"{emu.base_url}/accounts?itemId={item['id']}"
    emu.pause_clock()  # the window stands still while the test looks at it
    fresh = emu.rate_limit_budget(ACCOUNTS)
    assert fresh == {"route": ACCOUNTS, "limit": 360, "used": 0, "remaining": 360, "resetSeconds": 0}
    for _ in range(2):
        assert requests.get(url, headers=headers, timeout=5).status_code == 200
    used = emu.rate_limit_budget(ACCOUNTS)
    assert (used["used"], used["remaining"], used["resetSeconds"]) == (2, 358, 60)

    assert emu.use_up_rate_limit(ACCOUNTS)["remaining"] == 0
    limited = requests.get(url, headers=headers, timeout=5)
    assert limited.status_code == 429 and limited.json()["code"] == 429
    assert float(limited.headers["RateLimit-Reset"]) == pytest.approx(60 * SCALE)
    assert emu.rate_limit_budget("GET /v2/transactions")["used"] == 0  # one window per route

    emu.reset_rate_limits(ACCOUNTS)
    assert requests.get(url, headers=headers, timeout=5).status_code == 200
    emu.use_up_rate_limit(ACCOUNTS, leave=2)
    codes = [requests.get(url, headers=headers, timeout=5).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    emu.reset_rate_limits()
    assert emu.rate_limit_budget(ACCOUNTS)["used"] == 0


def test_the_window_follows_the_emulator_clock(emu: PluggyEmulator) -> None:
    item = emu.create_item("user-1")
    headers = {"X-API-KEY": api_key(emu)}
    url = f"{emu.base_url}/accounts?itemId={item['id']}"
    emu.pause_clock()
    emu.use_up_rate_limit(ACCOUNTS)
    time.sleep(0.2)  # 100 emulator seconds, had the clock been running
    assert requests.get(url, headers=headers, timeout=5).status_code == 429
    emu.advance_clock(60)
    assert requests.get(url, headers=headers, timeout=5).status_code == 200


def test_budget_calls_check_their_route() -> None:
    with PluggyEmulator(rate_limit_per_minute={"GET /accounts": 5}) as emulator:  # instant mode, wall time
        assert emulator.rate_limit_budget(ACCOUNTS)["limit"] == 5
        with pytest.raises(ValueError, match="no rate limit"):
            emulator.rate_limit_budget("GET /v2/transactions")
        with pytest.raises(ValueError, match="unknown route"):
            emulator.use_up_rate_limit("GET /nowhere")
        with pytest.raises(ValueError, match="leave"):
            emulator.use_up_rate_limit(ACCOUNTS, leave=-1)
        with pytest.raises(ValueError, match="unknown route"):
            emulator.reset_rate_limits("GET /nowhere")


def test_rate_limit_control_routes(emu: PluggyEmulator) -> None:
    base = f"{emu.base_url}/_emulator/rate_limits"
    budgets = requests.get(base, timeout=5).json()
    assert set(budgets) == {
        "POST /auth",
        "GET /accounts",
        "GET /accounts/{id}",
        "GET /transactions",
        "GET /transactions/{id}",
        "GET /v2/transactions",
        "GET /investments",
        "GET /investments/{id}",
        "GET /investments/{id}/transactions",
        "PATCH /items/{id}",
    }
    assert budgets["PATCH /items/{id}"]["limit"] == 20
    used = requests.post(f"{base}/use_up", json={"route": "POST /auth", "leave": 1}, timeout=5).json()
    assert used["remaining"] == 1
    body = {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}
    assert requests.post(f"{emu.base_url}/auth", json=body, timeout=5).status_code == 200
    assert requests.post(f"{emu.base_url}/auth", json=body, timeout=5).status_code == 429
    assert requests.post(f"{base}/reset", json={"route": "POST /auth"}, timeout=5).json() == {"ok": True}
    assert requests.post(f"{emu.base_url}/auth", json=body, timeout=5).status_code == 200
    assert requests.post(f"{base}/use_up", json={"route": "GET /nowhere"}, timeout=5).status_code == 400


# --- API key lifetime --------------------------------------------------------------------------------------


def test_the_api_key_lifetime_is_settable() -> None:
    with PluggyEmulator() as emulator:
        assert emulator.api_key_ttl_seconds == 7200
        emulator.api_key_ttl_seconds = 0.2
        short = api_key(emulator)
        url = f"{emulator.base_url}/connectors?sandbox=true"
        assert requests.get(url, headers={"X-API-KEY": short}, timeout=5).status_code == 200
        time.sleep(0.3)
        expired = requests.get(url, headers={"X-API-KEY": short}, timeout=5)
        assert expired.status_code == 401 and expired.json()["codeDescription"] == "API_KEY_EXPIRED"
        with pytest.raises(ValueError):
            emulator.api_key_ttl_seconds = 0
