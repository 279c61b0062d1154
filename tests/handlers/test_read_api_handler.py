"""ReadApiFunction's lambda_handler over a mirror the real ProcessorFunction filled from the Pluggy emulator.

RecordsTable (moto, from template.yaml) is written by the processor's own handler from the emulator's webhooks,
then read back through the read API's handler as API Gateway would call it: every row Pluggy has comes back,
newest first, paged without gaps or repeats, and every number is Pluggy's exact decimal as a string. The
events/read_api corpus is checked here too.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from types import ModuleType
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
from pluggy_pipeline.receiver import parse_delivery
from pluggy_pipeline.records import RecordStore
from pluggy_pipeline_local.processor_events import group_for, sqs_event, sqs_record
from pluggy_pipeline_local.template import function_environment

from tests.conftest import REPO_ROOT, TEMPLATE, FakeLambdaContext, Stack, event_names, load_event

CLIENT_ID = "read-api-test-client"
CLIENT_SECRET = "read-api-test-secret"
_SESSION = boto3.session.Session()
TX_RESOURCE = "/accounts/{accountId}/transactions"
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


def _load_app(function: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{function}_app", REPO_ROOT / f"functions/{function}/app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PROCESSOR = _load_app("processor")
READ_API = _load_app("read_api")


def _no_sleep(_seconds: float) -> None:
    pass


@pytest.fixture(autouse=True)
def _one_boto3_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest's `stack` calls boto3.client(), which under moto builds a new session (~0.2 s a client)."""
    monkeypatch.setattr(boto3, "client", _SESSION.client)
    monkeypatch.setattr(aws, "_session", functools.cache(lambda: _SESSION))


@pytest.fixture
def emulator() -> Iterator[PluggyEmulator]:
    emu = PluggyEmulator(CLIENT_ID, CLIENT_SECRET, seed=11)
    emu.start()
    yield emu
    emu.stop()


class Pipeline:
    """ProcessorFunction fed with the emulator's webhooks, ReadApiFunction reading what it wrote."""

    def __init__(self, emulator: PluggyEmulator, stack: Stack) -> None:
        self.emulator = emulator
        self.stack = stack
        self.seen = 0

    def sync(self) -> None:
        """Hand every webhook the emulator emitted since the last call to the processor's handler, in order."""
        emitted = self.emulator.events()
        payloads, self.seen = [e["payload"] for e in emitted[self.seen :]], len(emitted)
        records = []
        for sequence, payload in enumerate(payloads, start=1):
            body = json.dumps(payload, separators=(",", ":"))
            delivery = parse_delivery(body.encode())
            records.append(
                sqs_record(
                    body,
                    event_id=delivery.event_id,
                    event_type=delivery.event_type,
                    group_id=group_for(payload, delivery.event_id),
                    sequence=sequence,
                )
            )
        assert PROCESSOR.lambda_handler(sqs_event(records), FakeLambdaContext()) == {"batchItemFailures": []}

    def get(
        self, path: str, resource: str, params: dict[str, str], query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        event = {
            "resource": resource,
            "path": path,
            "httpMethod": "GET",
            "headers": None,
            "multiValueHeaders": None,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
            "pathParameters": params,
            "requestContext": {"requestId": "r", "stage": "dev", "path": f"/dev{path}", "identity": {}},
            "body": None,
            "isBase64Encoded": False,
        }
        response = READ_API.lambda_handler(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def page(self, account_id: str, **query: str) -> tuple[int, dict[str, Any]]:
        return self.get(f"/accounts/{account_id}/transactions", TX_RESOURCE, {"accountId": account_id}, query)

    def every_page(self, account_id: str, **query: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = None
        for _ in range(1000):
            status, body = self.page(account_id, **query, **({"cursor": cursor} if cursor else {}))
            assert status == 200, body
            assert body["transactions"] or not rows, "an empty page after a nextCursor"
            rows += body["transactions"]
            cursor = body["nextCursor"]
            if cursor is None:
                return rows
        raise AssertionError("pages never ended")


@pytest.fixture
def pipeline(stack: Stack, emulator: PluggyEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    monkeypatch.setattr(processor_module, "PluggyClient", functools.partial(PluggyClient, sleep=_no_sleep))
    env = function_environment(
        TEMPLATE, "ProcessorFunction", stack.resources, parameters={"PluggyApiBaseUrl": emulator.base_url}
    )
    env.update(PLUGGY_CREDENTIALS_SECRET_ARN="", PLUGGY_CLIENT_ID=CLIENT_ID, PLUGGY_CLIENT_SECRET=CLIENT_SECRET)
    # The shared pacer runs (its slot counters in PacerTable), on a 0.6 s window instead of Pluggy's minute.
    env["PLUGGY_RATE_WINDOW_SECONDS"] = "0.6"
    read_env = function_environment(TEMPLATE, "ReadApiFunction", stack.resources)
    assert read_env["RECORDS_TABLE_NAME"] == env["RECORDS_TABLE_NAME"]  # both functions on the same table
    for key, value in {**env, **read_env}.items():
        monkeypatch.setenv(key, value)
    aws.reset_clients()
    processor_module.get_processor.cache_clear()
    read_api.get_reader.cache_clear()
    yield Pipeline(emulator, stack)
    processor_module.get_processor.cache_clear()
    read_api.get_reader.cache_clear()


# --- what the API must say, from Pluggy's own objects ---------------------------------------------------------


def exact(number: int | float) -> str:
    """A JSON number of Pluggy's as the API must give it: its decimal digits as sent, positional."""
    text = json.dumps(number)
    return format(Decimal(text), "f") if "e" in text.lower() else text


def as_api(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return exact(value)
    if isinstance(value, dict):
        return {k: as_api(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_api(v) for v in value]
    raise TypeError(type(value))


def newest_first(transactions: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Pluggy's rows in the API's order: by Pluggy's `date`, newest first, ties by id (descending)."""
    return sorted(transactions.values(), key=lambda tx: (tx["date"], tx["id"]), reverse=True)


def assert_pages_equal_pluggy(pipeline: Pipeline, account_id: str, truth: dict[str, Any], **query: str) -> int:
    rows = pipeline.every_page(account_id, **query)
    low, high = query.get("from", "0000-00-00"), query.get("to", "9999-99-99")
    expected = [tx for tx in newest_first(truth["transactions"][account_id]) if low <= tx["date"][:10] <= high]
    assert [r["id"] for r in rows] == [tx["id"] for tx in expected]  # every row, in order, none twice
    for row, tx in zip(rows, expected, strict=True):
        assert row["data"] == as_api(tx)  # Pluggy's object, field by field, numbers as exact decimal strings
        assert Decimal(row["data"]["amount"]) == Decimal(json.dumps(tx["amount"]))
        assert (row["accountId"], row["itemId"]) == (account_id, truth["accounts"][account_id]["itemId"])
    return len(rows)


# --- tests --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["7", "100", "500"])
def test_every_transaction_pluggy_has_comes_back_in_order_across_pages(pipeline: Pipeline, limit: str) -> None:
    item = pipeline.emulator.create_item(client_user_id="user-7", transactions_per_account=160)
    pipeline.sync()
    truth = pipeline.emulator.truth()
    accounts = [a for a, acc in truth["accounts"].items() if acc["itemId"] == item["id"]]
    assert len(accounts) == 3
    total = sum(assert_pages_equal_pluggy(pipeline, a, truth, limit=limit) for a in accounts)
    assert total == 480


def test_a_date_range_pages_exactly_pluggy_s_rows_of_those_days(pipeline: Pipeline) -> None:
    item = pipeline.emulator.create_item(client_user_id="user-7", transactions_per_account=120)
    pipeline.sync()
    truth = pipeline.emulator.truth()
    account_id = next(a for a, acc in truth["accounts"].items() if acc["itemId"] == item["id"])
    days = sorted({tx["date"][:10] for tx in truth["transactions"][account_id].values()})
    low, high = days[len(days) // 4], days[len(days) // 2]
    count = assert_pages_equal_pluggy(pipeline, account_id, truth, **{"from": low, "to": high, "limit": "9"})
    assert 0 < count < 120
    assert assert_pages_equal_pluggy(pipeline, account_id, truth, **{"from": high, "limit": "9"}) > 0
    assert assert_pages_equal_pluggy(pipeline, account_id, truth, **{"to": low, "limit": "9"}) > 0


def test_an_incremental_sync_is_what_the_next_read_returns(pipeline: Pipeline) -> None:
    item = pipeline.emulator.create_item(client_user_id="user-7", transactions_per_account=40)
    pipeline.sync()
    truth = pipeline.emulator.truth()
    account_ids = [a for a, acc in truth["accounts"].items() if acc["itemId"] == item["id"]]
    before = {a: [r["id"] for r in pipeline.every_page(a, limit="25")] for a in account_ids}
    pipeline.emulator.sync_item(item["id"], add=6, change=4, delete=3)
    pipeline.sync()
    truth = pipeline.emulator.truth()
    for account_id in account_ids:
        assert_pages_equal_pluggy(pipeline, account_id, truth, limit="25")
    after = {a: {r["id"] for r in pipeline.every_page(a, limit="25")} for a in account_ids}
    assert after != {a: set(ids) for a, ids in before.items()}  # the sync did change what is read


def test_a_user_s_items_and_an_item_with_its_accounts_are_pluggy_s(pipeline: Pipeline) -> None:
    first = pipeline.emulator.create_item(client_user_id="user-7", transactions_per_account=2)
    second = pipeline.emulator.create_item(client_user_id="user-7", transactions_per_account=2)
    other = pipeline.emulator.create_item(client_user_id="user-8", transactions_per_account=2)
    pipeline.sync()
    truth = pipeline.emulator.truth()
    status, body = pipeline.get("/users/user-7/items", "/users/{clientUserId}/items", {"clientUserId": "user-7"})
    assert status == 200
    assert sorted(i["id"] for i in body["items"]) == sorted([first["id"], second["id"]])
    for view in body["items"]:
        assert view["data"] == as_api(truth["items"][view["id"]])
        assert (view["clientUserId"], view["status"], view["deleted"]) == ("user-7", "UPDATED", False)
        assert view["syncedAt"]
    status, body = pipeline.get(f"/items/{other['id']}", "/items/{itemId}", {"itemId": other["id"]})
    assert status == 200 and body["item"]["data"] == as_api(truth["items"][other["id"]])
    expected = {a: as_api(acc) for a, acc in truth["accounts"].items() if acc["itemId"] == other["id"]}
    assert {a["id"]: a["data"] for a in body["accounts"]} == expected
    balances = [a["data"]["balance"] for a in body["accounts"]]
    assert all(isinstance(b, str) for b in balances) and len(expected) == 3


def test_a_deleted_item_leaves_the_list_and_its_accounts_answer_404(pipeline: Pipeline) -> None:
    item = pipeline.emulator.create_item(client_user_id="user-7", transactions_per_account=3)
    pipeline.sync()
    account_ids = [
        a["id"] for a in pipeline.get(f"/items/{item['id']}", "/items/{itemId}", {"itemId": item["id"]})[1]["accounts"]
    ]
    assert account_ids and pipeline.page(account_ids[0])[0] == 200
    pipeline.emulator.delete_item(item["id"])
    pipeline.sync()
    _, body = pipeline.get("/users/user-7/items", "/users/{clientUserId}/items", {"clientUserId": "user-7"})
    assert body == {"items": []}
    status, body = pipeline.get(f"/items/{item['id']}", "/items/{itemId}", {"itemId": item["id"]})
    assert status == 200 and (body["item"]["deleted"], body["item"]["status"], body["accounts"]) == (
        True,
        "DELETED",
        [],
    )
    status, body = pipeline.page(account_ids[0])
    assert status == 404 and body["error"] == "not_found"


# --- the events/read_api corpus --------------------------------------------------------------------------------

USER = "user-42"
ITEM = "5f1c3b9e-8a3d-4f0e-9a51-0c2b7d4e6a10"
ACCOUNT = "0b6e2f4a-3c1d-4e8f-9b7a-1d2c3e4f5a60"
OTHER_ACCOUNT = "7c9d1e2f-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
CURSOR_AT = "2026-11-10T03:00:00.000Z#8e7d6c5b-4a39-4281-9f0e-1d2c3b4a5968"  # where transactions-next-page goes on
# The products' files: ITEM's credit card (its bills), investments, a loan, its identity and consents.
BARE_ITEM = "2a4c6e80-1b3d-4f5a-9c7e-d0f2a4b6c8e1"  # known to the mirror, without any product
CARD = "e3f5a7c9-2d4b-4c6e-8a0f-1b3d5f7a9c2e"
FUND, CDB = "6b8d0f2a-4c6e-4a8c-9e1b-3d5f7b9d1f3a", "1c3e5a7b-9d0f-4b2d-8c4e-6a8b0c2d4e6f"
LOAN = "4e6a8c0e-2f4b-4d6f-9a1c-3e5a7c9e1b3d"
IDENTITY = "8a0c2e4a-6b8d-4f1b-8d3f-5a7c9e1a3c5e"
CONSENT, REVOKED_CONSENT = "c5e7a9c1-3d5f-4b7d-9f2b-4c6e8a0c2e4a", "0f2b4d6f-8a1c-4e3a-8c5e-7b9d1f3b5d7f"
FUND_ROWS = {  # the fund's transactions, by date: the API answers them newest first
    "2026-11-05T03:00:00.000Z": "f7a9c1e3-5b7d-4f9b-8b3d-6e8a0c2e4a61",
    "2026-10-20T03:00:00.000Z": "f7a9c1e3-5b7d-4f9b-8b3d-6e8a0c2e4a62",
    "2026-10-10T03:00:00.000Z": "f7a9c1e3-5b7d-4f9b-8b3d-6e8a0c2e4a63",
    "2026-10-01T03:00:00.000Z": "f7a9c1e3-5b7d-4f9b-8b3d-6e8a0c2e4a64",
}
BILL_DUES = ("2026-09-10", "2026-10-10", "2026-11-10")  # the card's bills; the API answers the newest first

EXPECTED: dict[str, tuple[int, Callable[[dict[str, Any]], bool]]] = {
    "items-of-user": (200, lambda b: [i["id"] for i in b["items"]] == [ITEM]),
    "items-of-unknown-user": (200, lambda b: b == {"items": []}),
    "item": (200, lambda b: b["item"]["id"] == ITEM and [a["id"] for a in b["accounts"]] == [ACCOUNT, CARD]),
    "item-not-found": (404, lambda b: b["error"] == "not_found"),
    "transactions": (200, lambda b: len(b["transactions"]) == 30 and b["nextCursor"] is None),
    "transactions-date-range": (
        200,
        lambda b: (
            len(b["transactions"]) == 15
            and all("2026-11-01" <= t["data"]["date"][:10] <= "2026-11-15" for t in b["transactions"])
        ),
    ),
    "transactions-next-page": (
        200,
        lambda b: (
            len(b["transactions"]) == 9  # Nov 1-9: Nov 10 sorts after the cursor ("tx-09" > "8e7d...")
            and all(f"{t['data']['date']}#{t['id']}" < CURSOR_AT for t in b["transactions"])
        ),
    ),
    "transactions-account-not-found": (404, lambda b: b["error"] == "not_found"),
    "transactions-bad-limit": (400, lambda b: b["fields"] == {"limit": "must be an integer from 1 to 500"}),
    "transactions-bad-dates": (400, lambda b: list(b["fields"]) == ["from"]),
    "transactions-bad-cursor": (400, lambda b: "altered" in b["fields"]["cursor"]),
    "transactions-cursor-of-another-account": (
        400,
        lambda b: b["fields"] == {"cursor": "was issued for another account"},
    ),
    "item-investments": (  # in id order, every number an exact decimal string
        200,
        lambda b: (
            [(i["id"], i["itemId"], i["data"]["balance"]) for i in b["investments"]]
            == [(CDB, ITEM, "5239.16"), (FUND, ITEM, "10234.56")]
        ),
    ),
    "item-loans": (200, lambda b: [(x["id"], x["data"]["contractAmount"]) for x in b["loans"]] == [(LOAN, "15000.00")]),
    "item-consents": (  # revoked ones included, with their revokedAt
        200,
        lambda b: (
            {c["id"]: (c["expiresAt"], c["revokedAt"]) for c in b["consents"]}
            == {
                CONSENT: ("2027-03-02T03:00:00.000Z", None),
                REVOKED_CONSENT: ("2026-01-02T03:00:00.000Z", "2025-06-01T12:00:00.000Z"),
            }
        ),
    ),
    "item-identity": (
        200,
        lambda b: (
            (b["identity"]["id"], b["identity"]["itemId"], b["identity"]["data"]["documentType"])
            == (IDENTITY, ITEM, "CPF")
        ),
    ),
    "item-identity-missing": (  # a known item without an identity: 404, saying so (not "no such item")
        404,
        lambda b: b["error"] == "not_found" and b["message"] == f"item {BARE_ITEM} has no identity in the mirror",
    ),
    "investment-transactions": (
        200,
        lambda b: (
            [(t["id"], t["investmentId"], t["itemId"]) for t in b["transactions"]]
            == [(tx_id, FUND, ITEM) for tx_id in FUND_ROWS.values()]
            and b["nextCursor"] is None
        ),
    ),
    "account-bills": (
        200,
        lambda b: (
            [(x["data"]["dueDate"][:10], x["accountId"]) for x in b["bills"]]
            == [(due, CARD) for due in reversed(BILL_DUES)]
        ),
    ),
    "account-bills-date-range": (
        200,
        lambda b: [x["data"]["dueDate"][:10] for x in b["bills"]] == [BILL_DUES[2], BILL_DUES[1]],
    ),
}


@pytest.fixture
def seeded(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ids the corpus names, written as the processor writes records (its own record builders)."""
    for key, value in function_environment(TEMPLATE, "ReadApiFunction", stack.resources).items():
        monkeypatch.setenv(key, value)
    aws.reset_clients()
    read_api.get_reader.cache_clear()
    store = RecordStore(lambda: stack.dynamodb, stack.resources.tables["RecordsTable"])
    item = {"id": ITEM, "clientUserId": USER, "status": "UPDATED", "updatedAt": "2026-11-22T09:00:00.000Z"}
    rows = [
        item_record(item, "2026-11-22T10:00:00.000Z"),
        account_record({"id": ACCOUNT, "itemId": ITEM, "balance": Decimal("100.25")}, ITEM, None),
    ]
    for n in range(30):  # one a day, Nov 1 to 30
        tx = {"id": f"tx-{n:02d}", "accountId": ACCOUNT, "date": f"2026-11-{n + 1:02d}T03:00:00.000Z"}
        rows.append(transaction_record({**tx, "amount": Decimal(f"-{n}.99")}, ITEM))
    other = {"id": "tx-o", "accountId": OTHER_ACCOUNT, "date": "2026-11-10T03:00:00.000Z", "amount": Decimal(1)}
    rows.append(transaction_record(other, ITEM))
    bare = {"id": BARE_ITEM, "clientUserId": "user-43", "status": "UPDATED", "updatedAt": "2026-11-22T09:00:00.000Z"}
    rows.append(item_record(bare, "2026-11-22T10:00:00.000Z"))
    rows += product_records()
    store.batch_put(rows)


def product_records() -> list[dict[str, Any]]:
    """ITEM's products as the processor writes them (products.py's builders), for the products' files."""
    card = {"id": CARD, "itemId": ITEM, "type": "CREDIT", "subtype": "CREDIT_CARD", "balance": Decimal("-1874.32")}
    rows = [account_ref_record(CARD, ITEM), account_record(card, ITEM, None)]
    for n, due in enumerate(BILL_DUES):
        bill = {"id": f"bill-{n}", "dueDate": f"{due}T03:00:00.000Z", "totalAmount": Decimal(f"18{n}4.32")}
        rows.append(bill_record(ITEM, CARD, bill))
    fund = {"id": FUND, "itemId": ITEM, "type": "MUTUAL_FUND", "balance": Decimal("10234.56")}
    cdb = {"id": CDB, "itemId": ITEM, "type": "FIXED_INCOME", "subtype": "CDB", "balance": Decimal("5239.16")}
    rows += [investment_record(ITEM, fund), investment_record(ITEM, cdb)]
    for when, tx_id in FUND_ROWS.items():
        row = {"id": tx_id, "investmentId": FUND, "type": "BUY", "date": when, "amount": Decimal("500.00")}
        rows.append(investment_transaction_record(ITEM, FUND, row))
    loan = {"id": LOAN, "itemId": ITEM, "productName": "Credito Pessoal", "contractAmount": Decimal("15000.00")}
    rows.append(loan_record(ITEM, loan))
    identity = {"id": IDENTITY, "itemId": ITEM, "fullName": "Juliana Martins", "document": "796.137.536-80"}
    rows.append(identity_record(ITEM, {**identity, "documentType": "CPF"}))
    active = {"id": CONSENT, "itemId": ITEM, "expiresAt": "2027-03-02T03:00:00.000Z", "revokedAt": None}
    revoked = {
        "id": REVOKED_CONSENT,
        "itemId": ITEM,
        "expiresAt": "2026-01-02T03:00:00.000Z",
        "revokedAt": "2025-06-01T12:00:00.000Z",
    }
    rows += [consent_record(ITEM, active), consent_record(ITEM, revoked)]
    return rows


def test_the_corpus_has_an_expectation_for_every_file() -> None:
    assert event_names("read_api") == sorted(EXPECTED)


def test_every_read_api_route_has_an_example_request_that_api_gateway_could_send() -> None:
    """Each of ReadApiFunction's routes (template.yaml) has a file, and each file's path is its route's."""
    events = TEMPLATE["Resources"]["ReadApiFunction"]["Properties"]["Events"]
    routes = {e["Properties"]["Path"] for e in events.values() if e["Type"] == "Api"}
    examples = {name: load_event(f"read_api/{name}") for name in event_names("read_api")}
    assert {e["resource"] for e in examples.values()} == routes
    for name, event in examples.items():
        path = event["resource"]
        for parameter, value in event["pathParameters"].items():
            path = path.replace(f"{{{parameter}}}", value)
        context = event["requestContext"]
        assert (event["path"], context["path"], context["resourcePath"]) == (path, f"/dev{path}", event["resource"])
        assert context["requestId"] == f"req-read-api-{name}"
        query = event["queryStringParameters"] or {}
        assert event["multiValueQueryStringParameters"] == ({k: [v] for k, v in query.items()} or None), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_read_api_event_answers_as_expected(seeded: None, name: str) -> None:
    event = load_event(f"read_api/{name}")
    assert event["requestContext"]["identity"]["userArn"].startswith("arn:aws:sts::")  # an IAM-signed call
    response = READ_API.lambda_handler(event, FakeLambdaContext())
    status, check = EXPECTED[name]
    body = json.loads(response["body"])
    assert response["statusCode"] == status, body
    assert check(body), body


def test_a_known_account_without_transactions_is_an_empty_page_not_a_404(pipeline: Pipeline) -> None:
    item = pipeline.emulator.create_item(client_user_id="user-8", transactions_per_account=0)
    pipeline.sync()
    _, body = pipeline.get(f"/items/{item['id']}", "/items/{itemId}", {"itemId": item["id"]})
    assert body["accounts"], "the item's accounts are stored"
    for account in body["accounts"]:
        status, page = pipeline.page(account["id"])
        assert (status, page) == (200, {"transactions": [], "nextCursor": None})
    status, page = pipeline.page("00000000-0000-4000-8000-000000000000")
    assert status == 404 and "is not in the mirror" in page["message"]
