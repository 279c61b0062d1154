"""The emulator's products beyond accounts and transactions: bills, investments and their transactions, loans,
identity and consents (pluggy-api.md sections 13 to 17), over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pluggy_emulator import PluggyEmulator
from pluggy_emulator.rate_limits import PLUGGY_RATE_LIMITS

CLIENT_ID = "emulator-client-id"
CLIENT_SECRET = "emulator-client-secret"
UNKNOWN = "00000000-0000-0000-0000-000000000000"
DAY = 86_400.0
NOW = 1_795_000_000.0  # 2026-11-18T08:26:40Z: a fixed clock, so bills and dates are reproducible


@pytest.fixture
def emu() -> Iterator[PluggyEmulator]:
    with PluggyEmulator(seed=3, clock=lambda: NOW) as emulator:
        yield emulator


@pytest.fixture
def api(emu: PluggyEmulator) -> Iterator[requests.Session]:
    session = requests.Session()
    key = session.post(
        f"{emu.base_url}/auth", json={"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}, timeout=5
    ).json()["apiKey"]
    session.headers["X-API-KEY"] = key
    yield session
    session.close()


def get(api: requests.Session, emu: PluggyEmulator, path: str, status: int = 200, **params: Any) -> Any:
    resp = api.get(f"{emu.base_url}{path}", params=params, timeout=5)
    assert resp.status_code == status, resp.text
    return resp.json()


def card_of(emu: PluggyEmulator, item_id: str) -> dict[str, Any]:
    return next(a for a in emu.truth()["accounts"].values() if a["itemId"] == item_id and a["type"] == "CREDIT")


def test_every_product_is_served_for_a_sandbox_item(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    card = card_of(emu, item["id"])
    bills = get(api, emu, "/bills", accountId=card["id"])
    assert set(bills) == {"total", "totalPages", "page", "results"} and bills["total"] >= 2
    bill = bills["results"][0]
    assert get(api, emu, f"/bills/{bill['id']}") == bill
    assert bill["accountId"] == card["id"] and bill["billClosingDate"] < bill["dueDate"]

    investments = get(api, emu, "/investments", itemId=item["id"])
    assert 2 <= investments["total"] <= 3
    for investment in investments["results"]:
        assert investment["itemId"] == item["id"] and investment["balance"] > 0
        assert get(api, emu, f"/investments/{investment['id']}") == investment
        rows = get(api, emu, f"/investments/{investment['id']}/transactions")["results"]
        assert rows and all(r["investmentId"] == investment["id"] for r in rows)
        assert rows == sorted(rows, key=lambda r: r["date"], reverse=True)

    loans = get(api, emu, "/loans", itemId=item["id"])["results"]
    assert len(loans) == 1 and get(api, emu, f"/loans/{loans[0]['id']}") == loans[0]
    installments = loans[0]["installments"]
    assert (
        installments["paidInstallments"] + installments["dueInstallments"] == installments["totalNumberOfInstallments"]
    )
    assert len(loans[0]["payments"]["releases"]) == installments["paidInstallments"] > 0

    identity = get(api, emu, "/identity", itemId=item["id"])
    assert get(api, emu, f"/identity/{identity['id']}") == identity
    account = next(a for a in emu.truth()["accounts"].values() if a["itemId"] == item["id"])
    # The same fake person as the accounts' owner.
    assert (identity["fullName"], identity["taxNumber"]) == (account["owner"], account["taxNumber"])
    assert identity["emails"][0]["value"].endswith("@example.com")

    consents = get(api, emu, "/consents", itemId=item["id"])["results"]
    assert len(consents) == 1 and get(api, emu, f"/consents/{consents[0]['id']}") == consents[0]
    assert consents[0]["expiresAt"] == get(api, emu, f"/items/{item['id']}")["consentExpiresAt"]
    assert consents[0]["revokedAt"] is None


def test_bills_follow_the_card_rows(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    card = card_of(emu, item["id"])
    rows = emu.truth()["transactions"][card["id"]].values()
    for bill in get(api, emu, "/bills", accountId=card["id"])["results"]:
        on_bill = [r for r in rows if r["creditCardMetadata"]["billId"] == bill["id"]]
        purchases = sum(r["amount"] for r in on_bill if r["type"] == "DEBIT")
        assert on_bill and bill["totalAmount"] == round(purchases, 2)
        assert [p["valueType"] for p in bill["payments"]] == ["FULL_PAYMENT"]  # every closed bill is due by now
    open_bill = card["creditData"]["balanceCloseDate"]
    assert all(b["billClosingDate"] < open_bill for b in emu.truth()["bills"][card["id"]].values())


def test_a_new_bill_once_the_closing_day_passes() -> None:
    now = [NOW]
    with PluggyEmulator(seed=3, clock=lambda: now[0]) as emu:
        item = emu.create_item("user-1")
        card = card_of(emu, item["id"])
        before = set(emu.truth()["bills"][card["id"]])
        now[0] += 20 * DAY  # past the 5th of the next month
        emu.sync_item(item["id"])
        after = emu.truth()["bills"][card["id"]]
        assert before < set(after) and len(after) == len(before) + 1


def test_lists_are_paged(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    card = card_of(emu, item["id"])
    all_bills = get(api, emu, "/bills", accountId=card["id"])["results"]
    pages = [get(api, emu, "/bills", accountId=card["id"], page=n, pageSize=1) for n in (1, 2)]
    assert [p["totalPages"] for p in pages] == [len(all_bills)] * 2
    assert [p["results"][0] for p in pages] == all_bills[:2]
    investment = get(api, emu, "/investments", itemId=item["id"])["results"][0]
    one = get(api, emu, f"/investments/{investment['id']}/transactions", page=1, pageSize=1)
    assert (one["page"], len(one["results"])) == (1, 1)
    get(api, emu, "/loans", 400, itemId=item["id"], pageSize=501)
    get(api, emu, "/consents", 400, itemId=item["id"], page=0)


def test_investment_type_filter(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    investments = get(api, emu, "/investments", itemId=item["id"])["results"]
    kind = investments[0]["type"]
    filtered = get(api, emu, "/investments", itemId=item["id"], type=kind)["results"]
    assert filtered == [i for i in investments if i["type"] == kind]
    get(api, emu, "/investments", 400, itemId=item["id"], type="CRYPTO")


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/bills/{}", "CREDIT_CARD_BILL_NOT_FOUND"),
        ("/investments/{}", "INVESTMENT_NOT_FOUND"),
        ("/investments/{}/transactions", "INVESTMENT_NOT_FOUND"),
        ("/loans/{}", "LOAN_NOT_FOUND"),
        ("/identity/{}", "IDENTITY_NOT_FOUND"),
        ("/consents/{}", "CONSENT_NOT_FOUND"),
    ],
)
def test_unknown_ids_are_404(emu: PluggyEmulator, api: requests.Session, path: str, code: str) -> None:
    emu.create_item("user-1")
    body = get(api, emu, path.format(UNKNOWN), 404)
    assert body["code"] == 404 and body["codeDescription"] == code and body["message"]


@pytest.mark.parametrize("path", ["/bills", "/investments", "/loans", "/identity", "/consents"])
def test_the_owner_id_is_required(emu: PluggyEmulator, api: requests.Session, path: str) -> None:
    body = get(api, emu, path, 400)
    assert body["code"] == 400 and "is required" in body["message"]


def test_lists_of_an_unknown_owner(emu: PluggyEmulator, api: requests.Session) -> None:
    assert get(api, emu, "/investments", 404, itemId=UNKNOWN)["codeDescription"] == "ITEM_NOT_FOUND"
    assert get(api, emu, "/bills", 404, accountId=UNKNOWN)["codeDescription"] == "ACCOUNT_NOT_FOUND"
    assert get(api, emu, "/identity", 404, itemId=UNKNOWN)["codeDescription"] == "IDENTITY_NOT_FOUND"
    assert get(api, emu, "/identity", 400, itemId="not-a-uuid") == {"code": 400, "message": "itemId must be a UUID"}


def test_bank_accounts_have_no_bills(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    bank = next(a for a in emu.truth()["accounts"].values() if a["itemId"] == item["id"] and a["type"] == "BANK")
    assert get(api, emu, "/bills", accountId=bank["id"]) == {"total": 0, "totalPages": 1, "page": 1, "results": []}


def test_connect_tokens_cannot_read_products(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    token = api.post(f"{emu.base_url}/connect_token", json={"itemId": item["id"]}, timeout=5).json()["accessToken"]
    resp = requests.get(
        f"{emu.base_url}/investments", params={"itemId": item["id"]}, headers={"X-API-KEY": token}, timeout=5
    )
    assert resp.status_code == 403


def test_same_seed_same_products() -> None:
    def products() -> dict[str, Any]:
        with PluggyEmulator(seed=9, clock=lambda: NOW) as emulator:
            emulator.create_item("user-1")
            truth = emulator.truth()
            return {k: truth[k] for k in ("bills", "investments", "investmentTransactions", "loans", "identities")}

    first, second = products(), products()
    assert first == second and first["investments"]


def test_requested_products_only(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1", products=["ACCOUNTS", "TRANSACTIONS", "INVESTMENTS"])
    assert item["products"] == ["ACCOUNTS", "TRANSACTIONS", "INVESTMENTS"]
    investments = get(api, emu, "/investments", itemId=item["id"])["results"]
    assert investments
    assert get(api, emu, f"/investments/{investments[0]['id']}/transactions")["total"] == 0  # not requested
    assert get(api, emu, "/loans", itemId=item["id"])["total"] == 0
    assert get(api, emu, "/identity", 404, itemId=item["id"])["codeDescription"] == "IDENTITY_NOT_FOUND"
    consent = get(api, emu, "/consents", itemId=item["id"])["results"][0]
    assert consent["products"] == ["ACCOUNTS", "TRANSACTIONS", "INVESTMENTS"]
    card = next((a for a in emu.truth()["accounts"].values() if a["type"] == "CREDIT"), None)
    assert card is not None and get(api, emu, "/bills", accountId=card["id"])["total"] == 0


def test_products_on_post_items(emu: PluggyEmulator, api: requests.Session) -> None:
    body = {"connectorId": 0, "parameters": {"user": "user-ok", "password": "password-ok"}, "products": ["IDENTITY"]}
    item = api.post(f"{emu.base_url}/items", json=body, timeout=5).json()
    assert item["products"] == ["IDENTITY"]
    assert get(api, emu, "/identity", itemId=item["id"])["itemId"] == item["id"]
    resp = api.post(f"{emu.base_url}/items", json={**body, "products": ["MOVE_SECURITY"]}, timeout=5)
    assert resp.status_code == 400


def test_status_detail_names_every_requested_product_on_partial_success(emu: PluggyEmulator) -> None:
    item = emu.create_item(username="user-ok-account-error")
    detail = item["statusDetail"]
    assert item["executionStatus"] == "PARTIAL_SUCCESS"
    assert detail["creditCards"]["isUpdated"] is False
    for key in (
        "accounts",
        "transactions",
        "paymentData",
        "investments",
        "investmentTransactions",
        "identity",
        "loans",
    ):
        assert detail[key]["isUpdated"] is True, key
    assert detail["accountStatements"] is None  # not requested
    assert "bills" not in emu.truth() or not emu.truth()["bills"]  # no card collected, no bills
    narrow = emu.create_item(username="user-ok-account-error", products=["ACCOUNTS", "TRANSACTIONS"])
    assert narrow["statusDetail"]["investments"] is None and narrow["statusDetail"]["accounts"]["isUpdated"]


def test_sync_changes_products(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    before = emu.truth()
    emu.sync_item(item["id"], products_change=True)
    after = emu.truth()
    assert set(after["investments"]) == set(before["investments"])
    assert all(after["investments"][i]["balance"] != v["balance"] for i, v in before["investments"].items())
    first = next(iter(before["investments"]))
    assert len(after["investmentTransactions"][first]) == len(before["investmentTransactions"][first]) + 1
    loan_before, loan_after = next(iter(before["loans"].values())), next(iter(after["loans"].values()))
    assert loan_after["installments"]["paidInstallments"] == loan_before["installments"]["paidInstallments"] + 1
    identity = after["identities"][item["id"]]
    assert identity["updatedAt"] > identity["createdAt"]


def test_sync_removes_an_investment(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    ids = list(emu.truth()["investments"])
    emu.sync_item(item["id"], remove_investment=True)
    truth = emu.truth()
    assert truth["deletedInvestmentIds"] == [ids[-1]] and list(truth["investments"]) == ids[:-1]
    assert ids[-1] not in truth["investmentTransactions"]
    assert get(api, emu, f"/investments/{ids[-1]}", 404)["codeDescription"] == "INVESTMENT_NOT_FOUND"
    for _ in ids[:-1]:
        emu.sync_item(item["id"], remove_investment=True)
    with pytest.raises(ValueError, match="no investment left"):
        emu.sync_item(item["id"], remove_investment=True)


def test_products_change_over_the_control_route(emu: PluggyEmulator) -> None:
    item = emu.create_item("user-1")
    count = len(emu.truth()["investments"])
    resp = requests.post(
        f"{emu.base_url}/_emulator/items/{item['id']}/sync", json={"removeInvestment": True}, timeout=5
    )
    assert resp.status_code == 200 and len(emu.truth()["investments"]) == count - 1


def test_deleting_the_item_deletes_its_products(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item("user-1")
    ids = list(emu.truth()["investments"])
    emu.delete_item(item["id"])
    truth = emu.truth()
    assert truth["investments"] == {} and truth["bills"] == {} and truth["identities"] == {}
    assert truth["deletedInvestmentIds"] == ids


def test_products_wait_for_a_successful_sync(emu: PluggyEmulator, api: requests.Session) -> None:
    item = emu.create_item(username="user-locked")
    assert get(api, emu, "/investments", itemId=item["id"])["total"] == 0
    get(api, emu, "/identity", 404, itemId=item["id"])


def test_pluggy_rate_limits_cover_investments() -> None:
    for route in ("GET /investments", "GET /investments/{id}", "GET /investments/{id}/transactions"):
        assert PLUGGY_RATE_LIMITS[route] == 360


def test_timed_mode_shows_products_when_the_sync_ends() -> None:
    with PluggyEmulator(timed=True, time_scale=0.001) as emu:
        item = emu.create_item("user-1")
        assert emu.truth()["investments"] == {}  # still collecting
        emu.wait_for_item(item["id"], timeout=5)
        count = len(emu.truth()["investments"])
        assert count >= 2
        emu.sync_item(item["id"], remove_investment=True)
        assert len(emu.truth()["investments"]) == count  # lands when the sync succeeds
        assert emu.settle(10)
        assert len(emu.truth()["investments"]) == count - 1
