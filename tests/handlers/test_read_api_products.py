"""The read API's product routes through ReadApiFunction's lambda_handler over moto's RecordsTable (template.yaml).

The records are written with products.py's own builders (what the processor writes) and, at the end, by the real
ProcessorFunction from the Pluggy emulator's webhooks: each route answers Pluggy's objects, numbers as exact
decimal strings, in the documented order, and refuses bad input with a 400 before reading anything.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from pluggy_emulator import PluggyEmulator
from pluggy_pipeline import aws, read_api
from pluggy_pipeline import processor as processor_module
from pluggy_pipeline.pluggy_client import PluggyClient
from pluggy_pipeline.processor import account_record, account_ref_record, item_record, transaction_record
from pluggy_pipeline.products import (
    bill_record,
    consent_record,
    identity_record,
    investment_record,
    investment_transaction_record,
    loan_record,
)
from pluggy_pipeline.reader import MirrorReader, _checksum
from pluggy_pipeline.records import RecordStore
from pluggy_pipeline_local.template import function_environment

from tests.conftest import TEMPLATE, FakeLambdaContext, Stack
from tests.handlers.test_read_api_handler import CLIENT_ID, CLIENT_SECRET, READ_API, Pipeline, as_api

_SESSION = boto3.session.Session()
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

ITEM, BARE_ITEM = "i-1", "i-2"  # BARE_ITEM: known, with no product at all
CARD, CHECKING = "a-card", "a-check"
CPF, FULL_NAME, STREET = "796.137.536-80", "Juliana Martins", "Rua das Acácias 123"
INVESTMENT_TX = "/investments/{investmentId}/transactions"
BILLS = "/accounts/{accountId}/bills"


@pytest.fixture(autouse=True)
def _one_boto3_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest's `stack` calls boto3.client(), which under moto builds a new session (~0.2 s a client)."""
    monkeypatch.setattr(boto3, "client", _SESSION.client)
    monkeypatch.setattr(aws, "_session", functools.cache(lambda: _SESSION))


# --- the mirror, written with the processor's and products.py's builders -------------------------------------


def investment_rows(investment_id: str, count: int) -> list[dict[str, Any]]:
    """One a day from Oct 1; two on Oct 5, so a date holds rows ordered by id."""
    rows = [
        {"id": f"{investment_id}-t{n:02d}", "date": f"2026-10-{n + 1:02d}T03:00:00.000Z", "amount": Decimal(f"{n}.50")}
        for n in range(count)
    ]
    if count > 4:
        rows.append({"id": f"{investment_id}-t04b", "date": "2026-10-05T03:00:00.000Z", "amount": Decimal("-0.01")})
    return rows


BILL_DUES = ["2026-06-10", "2026-07-10", "2026-08-10", "2026-09-10", "2026-10-10", "2026-11-10"]
IDENTITY = {
    "id": "idn-1",
    "fullName": FULL_NAME,
    "document": CPF,
    "documentType": "CPF",
    "birthDate": "1990-03-14T00:00:00.000Z",
    "addresses": [{"fullAddress": STREET, "city": "São Paulo", "type": "Personal"}],
    "phoneNumbers": [{"type": "Personal", "value": "+55 11 91234-5678"}],
    "financialRelationships": {"monthlyIncome": Decimal("8500.00")},
}
CONSENTS = [
    {"id": "c-1", "createdAt": "2026-01-02T00:00:00.000Z", "expiresAt": "2027-01-02T00:00:00.000Z", "revokedAt": None},
    {
        "id": "c-0",
        "createdAt": "2025-01-02T00:00:00.000Z",
        "expiresAt": "2026-01-02T00:00:00.000Z",
        "revokedAt": "2025-06-01T12:00:00.000Z",
    },
]


def mirror() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for item_id in (ITEM, BARE_ITEM):
        item = {"id": item_id, "clientUserId": "user-42", "status": "UPDATED", "updatedAt": "2026-11-22T09:00:00.000Z"}
        rows.append(item_record(item, "2026-11-22T10:00:00.000Z"))
    for account_id, kind in ((CARD, "CREDIT"), (CHECKING, "BANK")):
        rows.append(account_ref_record(account_id, ITEM))
        rows.append(account_record({"id": account_id, "itemId": ITEM, "type": kind}, ITEM, None))
    for n in range(6):  # the card's own transactions: an account cursor to try on the investment route
        tx = {"id": f"tx-{n}", "accountId": CARD, "date": f"2026-10-{n + 1:02d}T03:00:00.000Z", "amount": Decimal(1)}
        rows.append(transaction_record(tx, ITEM))
    investments = [
        {"id": "inv-1", "itemId": ITEM, "type": "MUTUAL_FUND", "name": "Fundo X", "balance": Decimal("10234.56")},
        {"id": "inv-2", "itemId": ITEM, "type": "FIXED_INCOME", "name": "CDB", "balance": Decimal("1E+3")},
        {"id": "inv-3", "itemId": ITEM, "type": "EQUITY", "name": "PETR4", "balance": Decimal("0")},  # no rows
    ]
    rows += [investment_record(ITEM, investment) for investment in investments]
    rows += [investment_transaction_record(ITEM, "inv-1", row) for row in investment_rows("inv-1", 12)]
    rows += [investment_transaction_record(ITEM, "inv-2", row) for row in investment_rows("inv-2", 2)]
    for n, due in enumerate(BILL_DUES):
        bill = {"id": f"b-{n}", "dueDate": f"{due}T00:00:00.000Z", "totalAmount": Decimal(f"{100 + n}.07")}
        rows.append(bill_record(ITEM, CARD, bill))
    rows.append(
        loan_record(ITEM, {"id": "loan-1", "productName": "Crédito pessoal", "contractAmount": Decimal("15E3")})
    )
    rows.append(identity_record(ITEM, IDENTITY))
    rows += [consent_record(ITEM, consent) for consent in CONSENTS]
    return rows


@pytest.fixture
def store(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordStore]:
    for key, value in function_environment(TEMPLATE, "ReadApiFunction", stack.resources).items():
        monkeypatch.setenv(key, value)
    aws.reset_clients()
    read_api.get_reader.cache_clear()
    records = RecordStore(lambda: stack.dynamodb, stack.resources.tables["RecordsTable"])
    records.batch_put(mirror())
    yield records
    read_api.get_reader.cache_clear()


def get(
    path: str, resource: str, params: dict[str, str], query: dict[str, str | list[str]] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One GET through functions/read_api/app.py, as API Gateway's proxy integration sends it."""
    multi = {k: v if isinstance(v, list) else [v] for k, v in query.items()} if query else None
    event = {
        "resource": resource,
        "path": path,
        "httpMethod": "GET",
        "headers": None,
        "multiValueHeaders": None,
        "queryStringParameters": {k: v[-1] for k, v in multi.items()} if multi else None,
        "multiValueQueryStringParameters": multi,
        "pathParameters": params,
        "requestContext": {
            "requestId": "r",
            "stage": "dev",
            "path": f"/dev{path}",
            "identity": {"accountId": "123456789012", "userArn": "arn:aws:sts::123456789012:assumed-role/app/s"},
        },
        "body": None,
        "isBase64Encoded": False,
    }
    response = READ_API.lambda_handler(event, FakeLambdaContext())
    headers = dict(response.get("headers") or {})
    headers.update({k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()})
    return response["statusCode"], json.loads(response["body"]), headers


def of_item(item_id: str, product: str) -> tuple[int, dict[str, Any]]:
    status, body, _ = get(f"/items/{item_id}/{product}", f"/items/{{itemId}}/{product}", {"itemId": item_id})
    return status, body


def investment_page(investment_id: str, **query: str | list[str]) -> tuple[int, dict[str, Any]]:
    path = f"/investments/{investment_id}/transactions"
    status, body, _ = get(path, INVESTMENT_TX, {"investmentId": investment_id}, query or None)
    return status, body


def bills(account_id: str, **query: str | list[str]) -> tuple[int, dict[str, Any]]:
    status, body, _ = get(f"/accounts/{account_id}/bills", BILLS, {"accountId": account_id}, query or None)
    return status, body


def every_investment_page(investment_id: str, **query: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        status, body = investment_page(investment_id, **query, **({"cursor": cursor} if cursor else {}))
        assert status == 200, body
        assert body["transactions"] or not rows, "an empty page after a nextCursor"
        rows += body["transactions"]
        cursor = body["nextCursor"]
        if cursor is None:
            return rows
    raise AssertionError("pages never ended")


def reads() -> int:
    """DynamoDB calls the read API's own reader has made so far."""
    return sum(read_api.get_reader().store.calls.values())


# --- answers -------------------------------------------------------------------------------------------------


def test_an_item_s_investments_loans_and_consents_are_pluggy_s_objects(store: RecordStore) -> None:
    status, body, headers = get(f"/items/{ITEM}/investments", "/items/{itemId}/investments", {"itemId": ITEM})
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert body["investments"] == [
        {
            "id": "inv-1",
            "itemId": ITEM,
            "data": {"id": "inv-1", "itemId": ITEM, "type": "MUTUAL_FUND", "name": "Fundo X", "balance": "10234.56"},
        },
        {
            "id": "inv-2",
            "itemId": ITEM,
            "data": {"id": "inv-2", "itemId": ITEM, "type": "FIXED_INCOME", "name": "CDB", "balance": "1000"},
        },
        {
            "id": "inv-3",
            "itemId": ITEM,
            "data": {"id": "inv-3", "itemId": ITEM, "type": "EQUITY", "name": "PETR4", "balance": "0"},
        },
    ]
    status, body = of_item(ITEM, "loans")
    assert status == 200
    expected_loan = {"id": "loan-1", "productName": "Crédito pessoal", "contractAmount": "15000"}
    assert body == {"loans": [{"id": "loan-1", "itemId": ITEM, "data": expected_loan}]}
    status, body = of_item(ITEM, "consents")
    assert status == 200
    assert [(c["id"], c["expiresAt"], c["revokedAt"]) for c in body["consents"]] == [
        ("c-0", "2026-01-02T00:00:00.000Z", "2025-06-01T12:00:00.000Z"),  # revoked: still listed, with revokedAt
        ("c-1", "2027-01-02T00:00:00.000Z", None),
    ]
    assert body["consents"][1]["data"] == CONSENTS[0]


def test_the_identity_is_served_whole(store: RecordStore) -> None:
    status, body = of_item(ITEM, "identity")
    assert status == 200
    assert body == {"identity": {"id": "idn-1", "itemId": ITEM, "data": as_api_decimal(IDENTITY)}}
    assert body["identity"]["data"]["financialRelationships"]["monthlyIncome"] == "8500.00"


def as_api_decimal(value: Any) -> Any:
    """What the API makes of a Decimal-bearing object: every number its exact digits, as a string."""
    return json.loads(json.dumps(value, default=lambda d: format(d, "f")))


def test_investment_transactions_page_newest_first_without_gaps_or_repeats(store: RecordStore) -> None:
    expected = sorted(investment_rows("inv-1", 12), key=lambda r: (r["date"], r["id"]), reverse=True)
    for limit in ("1", "5", "13", "500"):
        rows = every_investment_page("inv-1", limit=limit)
        assert [r["id"] for r in rows] == [r["id"] for r in expected], limit
    status, first = investment_page("inv-1", limit="3")
    assert status == 200 and first["nextCursor"]
    assert first["transactions"][0] == {
        "id": "inv-1-t11",
        "investmentId": "inv-1",
        "itemId": ITEM,
        "data": {"id": "inv-1-t11", "date": "2026-10-12T03:00:00.000Z", "amount": "11.50"},
    }
    _, whole = investment_page("inv-1", limit="13")  # exactly every row: the last page says so, no empty page
    assert len(whole["transactions"]) == 13 and whole["nextCursor"] is None


def test_investment_transactions_in_a_date_range_are_those_days_inclusive(store: RecordStore) -> None:
    rows = every_investment_page("inv-1", limit="2", **{"from": "2026-10-04", "to": "2026-10-06"})
    assert [r["id"] for r in rows] == ["inv-1-t05", "inv-1-t04b", "inv-1-t04", "inv-1-t03"]
    assert [r["id"] for r in every_investment_page("inv-1", **{"from": "2026-10-11"})] == ["inv-1-t11", "inv-1-t10"]
    assert [r["id"] for r in every_investment_page("inv-1", to="2026-10-01")] == ["inv-1-t00"]
    assert every_investment_page("inv-1", **{"from": "2026-12-01"}) == []


def test_an_investment_without_transactions_and_an_unknown_one_are_an_empty_page(store: RecordStore) -> None:
    # An investment is keyed by its item: its id alone cannot tell "unknown" from "none" (see the reader).
    for investment_id in ("inv-3", "inv-9"):
        assert investment_page(investment_id) == (200, {"transactions": [], "nextCursor": None})
    _, other = investment_page("inv-2")
    assert [t["investmentId"] for t in other["transactions"]] == ["inv-2", "inv-2"]  # never inv-1's rows


def test_a_card_s_bills_newest_due_date_first_and_by_due_date_range(store: RecordStore) -> None:
    status, body = bills(CARD)
    assert status == 200
    assert [b["id"] for b in body["bills"]] == ["b-5", "b-4", "b-3", "b-2", "b-1", "b-0"]
    assert body["bills"][0] == {
        "id": "b-5",
        "accountId": CARD,
        "itemId": ITEM,
        "data": {"id": "b-5", "dueDate": "2026-11-10T00:00:00.000Z", "totalAmount": "105.07"},
    }
    _, body = bills(CARD, **{"from": "2026-08-10", "to": "2026-10-10"})  # both due days included
    assert [b["id"] for b in body["bills"]] == ["b-4", "b-3", "b-2"]
    _, body = bills(CARD, **{"from": "2026-08-11", "to": "2026-10-09"})
    assert [b["id"] for b in body["bills"]] == ["b-3"]
    _, body = bills(CARD, to="2026-06-10")
    assert [b["id"] for b in body["bills"]] == ["b-0"]
    assert bills(CARD, **{"from": "2027-01-01"}) == (200, {"bills": []})


def test_a_known_account_without_bills_is_empty_and_an_unknown_one_404(store: RecordStore) -> None:
    assert bills(CHECKING) == (200, {"bills": []})
    status, body = bills("a-9")
    assert (status, body) == (404, {"error": "not_found", "message": "account a-9 is not in the mirror"})
    status, body = bills("a-9", **{"from": "2026-01-01"})
    assert status == 404


def test_a_known_item_without_products_is_empty_and_an_unknown_item_404(store: RecordStore) -> None:
    for product in ("investments", "loans", "consents"):
        assert of_item(BARE_ITEM, product) == (200, {product: []})
        assert of_item("i-9", product) == (404, {"error": "not_found", "message": "item i-9 is not in the mirror"})
    status, body = of_item(BARE_ITEM, "identity")
    assert (status, body) == (404, {"error": "not_found", "message": "item i-2 has no identity in the mirror"})
    status, body = of_item("i-9", "identity")
    assert (status, body) == (404, {"error": "not_found", "message": "item i-9 is not in the mirror"})


def test_unknown_routes_name_the_new_ones(store: RecordStore) -> None:
    status, body, _ = get(f"/items/{ITEM}/payments", "/items/{itemId}/payments", {"itemId": ITEM})
    assert status == 404 and "/items/{id}/identity" in body["message"]
    assert "/investments/{id}/transactions" in body["message"] and "/accounts/{id}/bills" in body["message"]


# --- 400: every problem named, nothing read ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ({"limit": "0"}, {"limit": "must be an integer from 1 to 500"}),
        ({"limit": "501"}, {"limit": "must be an integer from 1 to 500"}),
        ({"from": "2026-02-30"}, {"from": "'2026-02-30' is not a calendar date"}),
        ({"to": "10/05/2026"}, {"to": "must be an ISO date, YYYY-MM-DD"}),
        ({"from": "2026-10-05", "to": "2026-10-01"}, {"from": "must not be after to (2026-10-05 > 2026-10-01)"}),
        ({"cursor": ""}, {"cursor": "must be the nextCursor of a previous page (omit it for the first page)"}),
        ({"cursor": "bm90LWEtY3Vyc29y"}, {"cursor": "is not a cursor this API issued (altered or cut)"}),
        ({"cursor": "x" * 5000}, {"cursor": "is not a cursor this API issued"}),
        ({"limit": ["5", "6"]}, {"limit": "given more than once"}),
        ({"page": "2"}, {"page": "unknown parameter; the parameters are from, to, limit, cursor"}),
    ],
)
def test_bad_investment_page_parameters_answer_400(
    store: RecordStore, query: dict[str, str | list[str]], fields: dict[str, str]
) -> None:
    before = reads()
    status, body = investment_page("inv-1", **query)
    assert (status, body) == (
        400,
        {"error": "invalid_request", "message": "the request has invalid parameters", "fields": fields},
    )
    assert reads() == before  # refused before any read


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ({"from": "2026-13-01"}, {"from": "'2026-13-01' is not a calendar date"}),
        ({"to": "2026-11-10T00:00:00Z"}, {"to": "must be an ISO date, YYYY-MM-DD"}),
        ({"from": "2026-11-10", "to": "2026-06-10"}, {"from": "must not be after to (2026-11-10 > 2026-06-10)"}),
        ({"limit": "10"}, {"limit": "unknown parameter; the parameters are from, to"}),  # bills are not paged
        (
            {"cursor": "abc", "to": ["2026-01-01", "2026-02-01"]},
            {
                "cursor": "unknown parameter; the parameters are from, to",
                "to": "given more than once",
            },
        ),
    ],
)
def test_bad_bill_parameters_answer_400(
    store: RecordStore, query: dict[str, str | list[str]], fields: dict[str, str]
) -> None:
    before = reads()
    status, body = bills(CARD, **query)
    assert (status, body["error"], body["fields"]) == (400, "invalid_request", fields)
    assert reads() == before


@pytest.mark.parametrize(
    ("resource", "name"),
    [
        ("/items/{itemId}/investments", "itemId"),
        ("/items/{itemId}/loans", "itemId"),
        ("/items/{itemId}/consents", "itemId"),
        ("/items/{itemId}/identity", "itemId"),
        (INVESTMENT_TX, "investmentId"),
        (BILLS, "accountId"),
    ],
)
def test_an_id_too_long_answers_400_without_a_read(store: RecordStore, resource: str, name: str) -> None:
    long_id = "x" * 600
    before = reads()
    status, body, _ = get(resource.replace(f"{{{name}}}", long_id), resource, {name: long_id})
    assert (status, body["fields"]) == (400, {name: "must be at most 512 characters"})
    assert reads() == before


def forge(body: Any) -> str:
    """A cursor with a valid checksum over any body: what only passes the checksum, not the position checks."""
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(payload + _checksum(payload)).rstrip(b"=").decode()


def test_a_cursor_only_continues_the_query_it_was_issued_for(store: RecordStore) -> None:
    _, first = investment_page("inv-1", limit="2")
    cursor = first["nextCursor"]
    status, body = investment_page("inv-2", limit="2", cursor=cursor)
    assert (status, body["fields"]) == (400, {"cursor": "was issued for another investment"})
    status, body = investment_page("inv-1", limit="2", cursor=cursor, to="2026-10-30")
    assert status == 400 and "was issued for other from/to values" in body["fields"]["cursor"]
    status, body, _ = get(  # an investment's cursor on an account's transactions, and the reverse
        f"/accounts/{CARD}/transactions", "/accounts/{accountId}/transactions", {"accountId": CARD}, {"cursor": cursor}
    )
    assert (status, body["fields"]) == (400, {"cursor": "was issued for another account"})
    _, page, _ = get(
        f"/accounts/{CARD}/transactions", "/accounts/{accountId}/transactions", {"accountId": CARD}, {"limit": "2"}
    )
    status, body = investment_page("inv-1", cursor=page["nextCursor"], limit="2")
    assert (status, body["fields"]) == (400, {"cursor": "was issued for another investment"})
    # A position in the investment's partition that is not one of its rows (checksum valid): still refused.
    not_a_row = {"pk": "INVESTMENT#inv-1", "sk": "TX#inv-1-t03", "txDate": "2026-10-04T03:00:00.000Z#inv-1-t03"}
    status, body = investment_page("inv-1", cursor=forge({"v": 1, "k": not_a_row, "q": [None, None]}))
    assert (status, body["fields"]) == (400, {"cursor": "is not a cursor this API issued"})
    good = {**not_a_row, "sk": "ITX#inv-1-t03"}
    status, body = investment_page("inv-1", cursor=forge({"v": 1, "k": good, "q": [None, None]}))
    assert status == 200 and [t["id"] for t in body["transactions"]] == ["inv-1-t02", "inv-1-t01", "inv-1-t00"]


# --- logs: routes and counts, never personal data ---------------------------------------------------------


def test_the_identity_never_reaches_the_logs(
    store: RecordStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the function's log level (template: INFO unless DebugLogs)
    assert of_item(ITEM, "identity")[0] == 200
    assert of_item(BARE_ITEM, "identity")[0] == 404
    bills(CARD, **{"from": "2026-08-10"})
    investment_page("inv-1", limit="2")
    lines = [r.__dict__ for r in caplog.records if r.getMessage() == "read api"]
    assert [(line["route"], line["status"], line.get("rows")) for line in lines] == [
        ("GET /items/{itemId}/identity", 200, 1),
        ("GET /items/{itemId}/identity", 404, None),
        ("GET /accounts/{accountId}/bills", 200, 4),
        ("GET /investments/{investmentId}/transactions", 200, 2),
    ]

    def broken(self: MirrorReader, item_id: str) -> dict[str, Any]:
        raise ValueError(f"identity {FULL_NAME} {CPF} {STREET}")  # a bug whose message quotes the record

    monkeypatch.setattr(MirrorReader, "identity", broken)
    status, body = of_item(ITEM, "identity")
    assert status == 500 and body["error"] == "internal_error" and CPF not in json.dumps(body)
    everything = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (CPF, FULL_NAME, STREET, "91234-5678", "8500", "2026-08-10"):
        assert secret not in everything


# --- end to end: ProcessorFunction fills the mirror from the Pluggy emulator ------------------------------------


def _no_sleep(_seconds: float) -> None:
    pass


@pytest.fixture
def pipeline(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    emulator = PluggyEmulator(CLIENT_ID, CLIENT_SECRET, seed=23)
    emulator.start()
    monkeypatch.setattr(processor_module, "PluggyClient", functools.partial(PluggyClient, sleep=_no_sleep))
    env = function_environment(
        TEMPLATE, "ProcessorFunction", stack.resources, parameters={"PluggyApiBaseUrl": emulator.base_url}
    )
    env.update(PLUGGY_CREDENTIALS_SECRET_ARN="", PLUGGY_CLIENT_ID=CLIENT_ID, PLUGGY_CLIENT_SECRET=CLIENT_SECRET)
    env["PLUGGY_RATE_WINDOW_SECONDS"] = "0.6"
    for key, value in {**env, **function_environment(TEMPLATE, "ReadApiFunction", stack.resources)}.items():
        monkeypatch.setenv(key, value)
    aws.reset_clients()
    processor_module.get_processor.cache_clear()
    read_api.get_reader.cache_clear()
    try:
        yield Pipeline(emulator, stack)
    finally:
        processor_module.get_processor.cache_clear()
        read_api.get_reader.cache_clear()
        emulator.stop()


def assert_products_equal_pluggy(pipeline: Pipeline, item_id: str) -> dict[str, int]:
    """Every product route of the item answers exactly what Pluggy (the emulator) has; the counts read."""
    truth = pipeline.emulator.truth()
    counts: dict[str, int] = {}

    def of(product: str) -> list[dict[str, Any]]:
        status, body = of_item(item_id, product)
        assert status == 200, body
        rows: list[dict[str, Any]] = body[product]
        counts[product] = len(rows)
        return rows

    investments = {k: v for k, v in truth["investments"].items() if v.get("itemId") == item_id}
    assert {i["id"]: i["data"] for i in of("investments")} == {k: as_api(v) for k, v in investments.items()}
    counts["investmentTransactions"] = 0
    for investment_id in investments:
        rows = every_investment_page(investment_id, limit="4")
        pluggy = truth["investmentTransactions"].get(investment_id, {}).values()
        expected = sorted(pluggy, key=lambda r: (r["date"], r["id"]), reverse=True)
        assert [r["data"] for r in rows] == [as_api(r) for r in expected]
        counts["investmentTransactions"] += len(rows)
    loans = {k: as_api(v) for k, v in truth["loans"].items() if v.get("itemId") == item_id}
    assert {loan["id"]: loan["data"] for loan in of("loans")} == loans
    consents = {k: v for k, v in truth["consents"].items() if v.get("itemId") == item_id}
    served = {c["id"]: c for c in of("consents")}
    assert {k: c["data"] for k, c in served.items()} == {k: as_api(v) for k, v in consents.items()}
    assert all(
        (served[k]["expiresAt"], served[k]["revokedAt"]) == (v.get("expiresAt"), v.get("revokedAt"))
        for k, v in consents.items()
    )
    status, body = of_item(item_id, "identity")
    assert (status, body["identity"]["data"]) == (200, as_api(truth["identities"][item_id]))
    counts["bills"] = 0
    for account_id, account in truth["accounts"].items():
        if account["itemId"] != item_id:
            continue
        status, body = bills(account_id)
        pluggy_bills = truth["bills"].get(account_id, {}).values()
        expected_bills = sorted(pluggy_bills, key=lambda b: (b["dueDate"], b["id"]), reverse=True)
        assert (status, [b["data"] for b in body["bills"]]) == (200, [as_api(b) for b in expected_bills])
        counts["bills"] += len(body["bills"])
    return counts


def test_every_product_the_processor_mirrored_reads_back_as_pluggy_has_it(pipeline: Pipeline) -> None:
    item = pipeline.emulator.create_item(client_user_id="user-7", transactions_per_account=40)
    pipeline.sync()
    counts = assert_products_equal_pluggy(pipeline, item["id"])
    assert all(counts[p] > 0 for p in ("investments", "investmentTransactions", "loans", "consents", "bills")), counts
    # A sync that moves balances, pays a loan installment and removes an investment with its transactions.
    pipeline.emulator.sync_item(item["id"], add=2, products_change=True, remove_investment=True)
    pipeline.sync()
    assert assert_products_equal_pluggy(pipeline, item["id"])["investments"] == counts["investments"] - 1
    (removed,) = pipeline.emulator.truth()["deletedInvestmentIds"]
    assert investment_page(removed) == (200, {"transactions": [], "nextCursor": None})
    # The item deleted at Pluggy: its products are gone from the mirror, the item's tombstone stays.
    pipeline.emulator.delete_item(item["id"])
    pipeline.sync()
    for product in ("investments", "loans", "consents"):
        assert of_item(item["id"], product) == (200, {product: []})
    status, body = of_item(item["id"], "identity")
    assert status == 404 and "has no identity" in body["message"]
