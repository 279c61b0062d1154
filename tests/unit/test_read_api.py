"""The read API's routes (Powertools' REST resolver) against moto's RecordsTable: answers, errors, logs."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from pluggy_pipeline import aws, read_api
from pluggy_pipeline.errors import TransientError
from pluggy_pipeline.reader import MirrorReader
from pluggy_pipeline.records import RecordStore, account_key, item_key, transaction_key
from pluggy_pipeline_local.template import function_environment

from tests.conftest import TEMPLATE, FakeLambdaContext, Stack

USER = "ana.souza@example.com"  # an app may well use an e-mail or a CPF as clientUserId: never logged
CPF = "796.137.536-80"
ACCOUNT_NUMBER = "0001/55051-8"
SESSION = boto3.session.Session()


@pytest.fixture(autouse=True)
def _one_boto3_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest's `stack` calls boto3.client(), which under moto builds a new session (~0.2 s a client)."""
    monkeypatch.setattr(boto3, "client", SESSION.client)
    monkeypatch.setattr(aws, "_session", functools.cache(lambda: SESSION))


@pytest.fixture
def table(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordStore]:
    """RecordsTable with one user's item, account and 12 transactions; ReadApiFunction's env from the template."""
    for key, value in function_environment(TEMPLATE, "ReadApiFunction", stack.resources).items():
        monkeypatch.setenv(key, value)
    aws.reset_clients()
    read_api.get_reader.cache_clear()
    store = RecordStore(lambda: stack.dynamodb, stack.resources.tables["RecordsTable"])
    store.batch_put(records())
    yield store
    read_api.get_reader.cache_clear()


def records() -> list[dict[str, Any]]:
    owner = {"owner": "Juliana Martins", "taxNumber": CPF, "number": ACCOUNT_NUMBER}
    rows: list[dict[str, Any]] = [
        {
            **item_key("i-1"),
            "itemId": "i-1",
            "status": "UPDATED",
            "syncedAt": "2026-11-22T10:00:00.000Z",
            "deleted": False,
            "clientUserId": USER,
            "userPk": f"USER#{USER}",
            "userSk": "ITEM#i-1",
            "data": {"id": "i-1", "clientUserId": USER, "status": "UPDATED"},
        },
        {
            **account_key("i-1", "a-1"),
            "accountId": "a-1",
            "itemId": "i-1",
            "data": {"id": "a-1", "balance": Decimal("1655.35"), **owner},
        },
    ]
    for n in range(12):
        stamp = f"2026-11-{1 + n:02d}T03:00:00.000Z"
        rows.append(
            {
                **transaction_key("a-1", f"t-{n:02d}"),
                "transactionId": f"t-{n:02d}",
                "accountId": "a-1",
                "itemId": "i-1",
                "txDate": f"{stamp}#t-{n:02d}",
                "data": {"id": f"t-{n:02d}", "date": stamp, "amount": Decimal(f"-{n}.10"), "paymentData": owner},
            }
        )
    return rows


def event(path: str, resource: str, params: dict[str, str] | None, query: dict[str, list[str]] | None = None) -> Any:
    return {
        "resource": resource,
        "path": path,
        "httpMethod": "GET",
        "headers": {"Accept": "application/json"},
        "multiValueHeaders": {"Accept": ["application/json"]},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": query,
        "pathParameters": params,
        "requestContext": {
            "requestId": "req-1",
            "stage": "dev",
            "path": f"/dev{path}",
            "identity": {"accountId": "123456789012", "userArn": "arn:aws:sts::123456789012:assumed-role/app/s"},
        },
        "body": None,
        "isBase64Encoded": False,
    }


def call(ev: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    response = read_api.handle(ev, FakeLambdaContext())  # type: ignore[arg-type]
    headers = {k: v[-1] if isinstance(v, list) else v for k, v in (response.get("multiValueHeaders") or {}).items()}
    headers.update(response.get("headers") or {})
    return response["statusCode"], json.loads(response["body"]), headers


def transactions(account_id: str = "a-1", **query: str | list[str]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    multi = {k: v if isinstance(v, list) else [v] for k, v in query.items()}
    resource = "/accounts/{accountId}/transactions"
    return call(event(f"/accounts/{account_id}/transactions", resource, {"accountId": account_id}, multi or None))


# --- answers ---------------------------------------------------------------------------------------------


def test_items_of_a_user(table: RecordStore) -> None:
    path = f"/users/{quote(USER, safe='')}/items"  # API Gateway decodes pathParameters; the path stays encoded
    status, body, headers = call(event(path, "/users/{clientUserId}/items", {"clientUserId": USER}))
    assert status == 200
    assert [i["id"] for i in body["items"]] == ["i-1"] and body["items"][0]["clientUserId"] == USER
    assert headers["Content-Type"] == "application/json" and headers["Cache-Control"] == "no-store"
    status, body, _ = call(event("/users/nobody/items", "/users/{clientUserId}/items", {"clientUserId": "nobody"}))
    assert (status, body) == (200, {"items": []})


def test_an_item_with_its_accounts_numbers_as_strings(table: RecordStore) -> None:
    status, body, _ = call(event("/items/i-1", "/items/{itemId}", {"itemId": "i-1"}))
    assert status == 200
    assert body["item"]["id"] == "i-1" and body["item"]["syncedAt"] == "2026-11-22T10:00:00.000Z"
    assert body["accounts"] == [
        {
            "id": "a-1",
            "itemId": "i-1",
            "data": {
                "id": "a-1",
                "balance": "1655.35",
                "owner": "Juliana Martins",
                "taxNumber": CPF,
                "number": ACCOUNT_NUMBER,
            },
        }
    ]


def test_transactions_pages_newest_first(table: RecordStore) -> None:
    status, first, _ = transactions(limit="5")
    assert status == 200
    assert [t["id"] for t in first["transactions"]] == ["t-11", "t-10", "t-09", "t-08", "t-07"]
    assert first["transactions"][0]["data"]["amount"] == "-11.10"
    _, second, _ = transactions(limit="5", cursor=first["nextCursor"])
    _, third, _ = transactions(limit="5", cursor=second["nextCursor"])
    assert [t["id"] for t in second["transactions"] + third["transactions"]] == [f"t-{n:02d}" for n in range(6, -1, -1)]
    assert third["nextCursor"] is None


def test_transactions_in_a_date_range_with_the_default_limit(table: RecordStore) -> None:
    status, body, _ = transactions(**{"from": "2026-11-03", "to": "2026-11-05"})
    assert status == 200 and [t["id"] for t in body["transactions"]] == ["t-04", "t-03", "t-02"]
    assert body["nextCursor"] is None


# --- 400 and 404 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ({"limit": "0"}, {"limit": "must be an integer from 1 to 500"}),
        ({"limit": "501"}, {"limit": "must be an integer from 1 to 500"}),
        ({"limit": "ten"}, {"limit": "must be an integer from 1 to 500"}),
        ({"limit": ""}, {"limit": "must be an integer from 1 to 500"}),
        ({"from": "2026-11-31"}, {"from": "'2026-11-31' is not a calendar date"}),
        ({"to": "11/05/2026"}, {"to": "must be an ISO date, YYYY-MM-DD"}),
        ({"from": "2026-11-05", "to": "2026-11-01"}, {"from": "must not be after to (2026-11-05 > 2026-11-01)"}),
        ({"cursor": ""}, {"cursor": "must be the nextCursor of a previous page (omit it for the first page)"}),
        ({"cursor": "bm90LWEtY3Vyc29y"}, {"cursor": "is not a cursor this API issued (altered or cut)"}),
        ({"limit": ["5", "6"]}, {"limit": "given more than once"}),
        ({"form": "2026-11-01"}, {"form": "unknown parameter; the parameters are from, to, limit, cursor"}),
        (
            {"limit": "0", "from": "x", "page": "2"},
            {
                "limit": "must be an integer from 1 to 500",
                "from": "must be an ISO date, YYYY-MM-DD",
                "page": "unknown parameter; the parameters are from, to, limit, cursor",
            },
        ),
    ],
)
def test_bad_parameters_answer_400_with_every_field(
    table: RecordStore, query: dict[str, str | list[str]], fields: dict[str, str]
) -> None:
    status, body, _ = transactions(**query)
    assert status == 400
    assert body == {"error": "invalid_request", "message": "the request has invalid parameters", "fields": fields}


def test_a_cursor_of_another_account_answers_400(table: RecordStore) -> None:
    table.batch_put(
        [
            {**r, **transaction_key("a-2", r["transactionId"]), "accountId": "a-2"}
            for r in records()
            if "transactionId" in r
        ]
    )
    _, first, _ = transactions(limit="3")
    status, body, _ = transactions("a-2", limit="3", cursor=first["nextCursor"])
    assert status == 400 and body["fields"] == {"cursor": "was issued for another account"}


def test_unknown_item_account_and_route_answer_404(table: RecordStore) -> None:
    status, body, _ = call(event("/items/i-9", "/items/{itemId}", {"itemId": "i-9"}))
    assert (status, body) == (404, {"error": "not_found", "message": "item i-9 is not in the mirror"})
    status, body, _ = transactions("a-9")
    assert status == 404 and body["error"] == "not_found" and "account a-9" in body["message"]
    status, body, _ = call(event("/accounts/a-1", "/accounts/{accountId}", {"accountId": "a-1"}))
    assert status == 404 and body["error"] == "not_found" and "no such route" in body["message"]


def test_an_id_too_long_answers_400_without_a_read(table: RecordStore) -> None:
    long_id = "x" * 600
    status, body, _ = call(event(f"/items/{long_id}", "/items/{itemId}", {"itemId": long_id}))
    assert status == 400 and body["fields"] == {"itemId": "must be at most 512 characters"}


# --- failures: never a stack trace ------------------------------------------------------------------------


def explode(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def item_with_accounts(self: MirrorReader, item_id: str) -> dict[str, Any]:
        raise error

    monkeypatch.setattr(MirrorReader, "item_with_accounts", item_with_accounts)


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return caplog.text + " ".join(str(r.__dict__) for r in caplog.records)


def test_a_bug_answers_500_with_the_request_id_and_no_detail(
    table: RecordStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    explode(monkeypatch, KeyError(f"taxNumber {CPF}"))
    status, body, _ = call(event("/items/i-1", "/items/{itemId}", {"itemId": "i-1"}))
    assert status == 500 and body["error"] == "internal_error"
    assert FakeLambdaContext.aws_request_id in body["message"]
    assert CPF not in json.dumps(body) and "Traceback" not in json.dumps(body) and "KeyError" not in json.dumps(body)
    (failure,) = [r for r in caplog.records if r.getMessage() == "read failed"]
    assert failure.__dict__["errorType"] == "KeyError"  # the operator finds what and where in the logs...
    assert any("item_with_accounts" in frame for frame in failure.__dict__["at"])
    assert CPF not in logged(caplog)  # ...but not the message, which may quote a record


def test_dynamodb_failing_answers_503(table: RecordStore, monkeypatch: pytest.MonkeyPatch) -> None:
    explode(monkeypatch, TransientError("get_item failed: ThrottlingException"))
    status, body, _ = call(event("/items/i-1", "/items/{itemId}", {"itemId": "i-1"}))
    assert (status, body["error"]) == (503, "unavailable")


def test_a_missing_table_name_answers_500(table: RecordStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECORDS_TABLE_NAME")
    read_api.get_reader.cache_clear()
    status, body, _ = call(event("/items/i-1", "/items/{itemId}", {"itemId": "i-1"}))
    assert (status, body["error"]) == (500, "internal_error")


def test_an_event_that_is_not_a_proxy_event_answers_500_json(table: RecordStore) -> None:
    response = read_api.handle({}, FakeLambdaContext())  # type: ignore[arg-type]
    assert response["statusCode"] == 500 and json.loads(response["body"])["error"] == "internal_error"


# --- logs ---------------------------------------------------------------------------------------------------


def test_logs_carry_routes_and_counts_never_values(table: RecordStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    call(event(f"/users/{USER}/items", "/users/{clientUserId}/items", {"clientUserId": USER}))
    call(event("/items/i-1", "/items/{itemId}", {"itemId": "i-1"}))
    _, page, _ = transactions(limit="4", **{"from": "2026-11-02"})
    transactions(limit="4", cursor=page["nextCursor"], **{"from": "2026-11-02"})
    transactions(limit="0")
    lines = [r.__dict__ for r in caplog.records if r.getMessage() == "read api"]
    assert [(line["route"], line["status"]) for line in lines] == [
        ("GET /users/{clientUserId}/items", 200),
        ("GET /items/{itemId}", 200),
        ("GET /accounts/{accountId}/transactions", 200),
        ("GET /accounts/{accountId}/transactions", 200),
        ("GET /accounts/{accountId}/transactions", 400),
    ]
    assert [line.get("rows") for line in lines] == [1, 2, 4, 4, None]
    everything = logged(caplog)
    for secret in (USER, CPF, ACCOUNT_NUMBER, "Juliana", "2026-11-02", page["nextCursor"], "-11.10"):
        assert secret not in everything
