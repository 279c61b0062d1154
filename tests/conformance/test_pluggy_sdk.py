"""Pluggy's official Node SDK (`pluggy-sdk`, pinned in package.json here) judges the emulator.

sdk_calls.mjs drives the SDK's PluggyClient against a PluggyEmulator on 127.0.0.1 for every call the pipeline
or a user's app makes and records each outcome; the tests below hold each record to what Pluggy answers.
The emulator runs as Pluggy would face the SDK: loopback webhook URLs refused (`allow_loopback_webhooks=False`)
and nothing delivered (`deliver_webhooks=False`: the suite registers public https URLs).

A call whose judgement here differs from what real Pluggy would give names its entry in the emulator's
DELIBERATE_DIFFERENCES, and that entry names the call back (checked both ways).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pluggy_emulator import PluggyEmulator
from pluggy_emulator.differences import DELIBERATE_DIFFERENCES
from pluggy_emulator.state import DEFAULT_TRANSACTIONS_PER_ACCOUNT

from tests.conformance.conftest import NodeSdk

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("sdk_calls.mjs")
SDK_VERSION = json.loads(Path(__file__).with_name("package.json").read_text())["dependencies"]["pluggy-sdk"]
CLIENT_ID = "conformance-client-id"
CLIENT_SECRET = "conformance-client-secret"
PAGE_SIZE = 25  # /v2/transactions page size: 60 rows per account make three pages
ROWS = DEFAULT_TRANSACTIONS_PER_ACCOUNT
NODE_TIMEOUT_SECONDS = 180
DATE_FROM = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()

Record = dict[str, Any]


@dataclass
class SdkRun:
    records: dict[str, Record]
    sdk_version: str
    node_version: str
    seconds: float
    emulator: PluggyEmulator
    sdk: NodeSdk


def _payments(emulator: PluggyEmulator) -> dict[str, str]:
    """A scheduled payment request with an intent and one schedule, made the way Pluggy's webhooks imply."""
    request = emulator.create_payment_request(schedule={"type": "MONTHLY", "startDate": "2026-12-10"})
    emulator.send_payment_event("payment_intent/created", payment_request_id=request["id"])
    intent_id = emulator.truth()["payments"]["intents"].popitem()[0]
    emulator.send_payment_event(
        "payment_intent/completed", payment_request_id=request["id"], payment_intent_id=intent_id
    )
    emulator.send_payment_event(
        "scheduled_payment/created", payment_request_id=request["id"], scheduled_date="2026-12-10"
    )
    schedule_id = next(iter(emulator.truth()["payments"]["schedules"][request["id"]]))
    return {"requestId": request["id"], "intentId": intent_id, "scheduleId": schedule_id}


@pytest.fixture(scope="module")
def sdk_run(node_sdk: NodeSdk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkRun]:
    work = tmp_path_factory.mktemp("sdk")
    emulator = PluggyEmulator(
        CLIENT_ID,
        CLIENT_SECRET,
        seed=12,
        page_size=PAGE_SIZE,
        time_scale=0.0,
        allow_loopback_webhooks=False,
        deliver_webhooks=False,
    )
    with emulator:
        config = {
            "sdkDir": str(node_sdk.sdk_dir),
            "clientId": CLIENT_ID,
            "clientSecret": CLIENT_SECRET,
            "payments": _payments(emulator),
            "loopbackUrl": "http://127.0.0.1:8080/webhooks/pluggy",
            "dateFrom": DATE_FROM,
        }
        (work / "config.json").write_text(json.dumps(config))
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work), "PLUGGY_API_URL": emulator.base_url}
        started = time.monotonic()
        done = subprocess.run(
            [node_sdk.node, str(SCRIPT), str(work / "config.json"), str(work / "result.json")],
            env=env,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_SECONDS,
            check=False,
        )
        seconds = time.monotonic() - started
        assert done.returncode == 0, f"node failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        result = json.loads((work / "result.json").read_text())
        records = [r for r in result["records"] if not r["name"].startswith("control: ")]
        controls = [r for r in result["records"] if r["name"].startswith("control: ")]
        assert all(c["ok"] for c in controls), controls
        script_errors = [r for r in records if r["name"] == "script"]
        assert not script_errors, script_errors
        names = [r["name"] for r in records]
        assert len(names) == len(set(names)), "record names must be unique"
        yield SdkRun(
            records={r["name"]: r for r in records},
            sdk_version=result["sdkVersion"],
            node_version=result["node"],
            seconds=seconds,
            emulator=emulator,
            sdk=node_sdk,
        )


# --- how a record is judged ---------------------------------------------------------------------------


def ok(record: Record) -> Any:
    assert record["ok"], f"{record['name']} was rejected: {record.get('error')}"
    return record["value"]


def refused(record: Record, status: int, code_description: str | None = None, *, bare: bool = False) -> Record:
    """The SDK rejected with Pluggy's error body `{code, message, codeDescription?}` for `status`."""
    assert not record["ok"], f"{record['name']} succeeded: {record.get('value')}"
    error = record["error"]
    assert error["kind"] in ("body", "http-error"), error
    assert error["kind"] == "body" or error["status"] == status, error
    body = error["body"]
    assert isinstance(body, dict) and body.get("code") == status and body.get("message"), body
    if code_description is not None:
        assert body.get("codeDescription") == code_description, body
    if bare:  # webhook 400s carry only {code, message}
        assert set(body) == {"code", "message"}, body
    return body


def item_in(status: str, execution: str) -> Callable[[Record], None]:
    def check(record: Record) -> None:
        item = ok(record)
        assert (item["status"], item["executionStatus"]) == (status, execution), item
        assert record["facts"]["createdAtIsDate"] and record["facts"]["updatedAtIsDate"]

    return check


def item_facts(record: Record) -> None:
    assert all(record["facts"].values()), record["facts"]


def rows_check(expected: int | None = None) -> Callable[[Record], None]:
    def check(record: Record) -> None:
        rows = ok(record)
        facts = record["facts"]
        assert facts["count"] == facts["uniqueIds"] == len(rows)
        assert facts["datesAreDates"] and facts["balancesAreNumbers"] and facts["amountsAreNumbers"], facts
        if expected is not None:
            assert len(rows) == expected

    return check


def _auth(record: Record) -> None:
    assert record["facts"] == {"jwtParts": 3}


def _connectors_sandbox(record: Record) -> None:
    page = ok(record)
    assert (page["page"], page["total"], page["totalPages"]) == (1, 4, 1)
    sandbox = next(c for c in page["results"] if c["id"] == 0)
    assert (sandbox["name"], sandbox["isSandbox"], sandbox["supportsAutomaticPix"]) == ("Pluggy Bank", True, False)
    assert {c["name"] for c in sandbox["credentials"]} == {"user", "password"}


def _connectors_unfiltered(record: Record) -> None:
    assert ok(record)["results"] == []


def _connectors_filtered(record: Record) -> None:
    assert [c["id"] for c in ok(record)["results"]] == [0, 1, 2, 3]


def _connector(record: Record) -> None:
    connector = ok(record)
    assert (connector["id"], connector["isSandbox"], connector["hasMFA"]) == (0, True, False)
    assert record["facts"]["createdAtIsDate"]


def _validate_ok(record: Record) -> None:
    assert ok(record) == {"parameters": {"user": "user-ok", "password": "password-ok"}, "errors": []}


def _validate_missing(record: Record) -> None:
    assert [e["parameter"] for e in ok(record)["errors"]] == ["password"]


def _created_item(record: Record) -> None:
    item = ok(record)
    assert (item["status"], item["connector"]["id"], item["clientUserId"]) == ("UPDATING", 0, "conformance-user")
    assert item["webhookUrl"] == "https://example.com/pluggy/item-hook"
    item_facts(record)


def _wrong_password(record: Record) -> None:
    item = ok(record)
    assert (item["status"], item["executionStatus"], item["error"]["code"]) == (
        "LOGIN_ERROR",
        "INVALID_CREDENTIALS",
        "INVALID_CREDENTIALS",
    )


def _connect_token(record: Record) -> None:
    token = ok(record)["accessToken"]
    assert isinstance(token, str) and token.count(".") == 2


def _updating(record: Record) -> None:
    assert ok(record)["status"] == "UPDATING"


def _updated_with_options(record: Record) -> None:
    assert (ok(record)["status"], ok(record)["clientUserId"]) == ("UPDATING", "conformance-user-2")


def _after_update(record: Record) -> None:
    item = ok(record)
    assert (item["status"], item["clientUserId"]) == ("UPDATED", "conformance-user-2")


def _after_429(record: Record) -> None:
    assert ok(record)["status"] == "UPDATED"
    assert record["ms"] >= 900  # the SDK waited for Retry-After (1 s) before its retry


def _accounts(record: Record) -> None:
    page = ok(record)
    assert (page["page"], page["total"], page["totalPages"]) == (1, 3, 1)
    for account in page["results"]:
        assert isinstance(account["balance"], float | int)
        if account["type"] == "BANK":
            # The keys the SDK's BankData marks required (none optional).
            assert set(account["bankData"]) >= {
                "transferNumber",
                "closingBalance",
                "automaticallyInvestedBalance",
                "overdraftContractedLimit",
                "overdraftUsedLimit",
                "unarrangedOverdraftAmount",
                "hasReservedBalance",
                "reservedBalances",
            }
        else:
            assert account["bankData"] is None and account["creditData"]["creditLimit"] > 0


def _credit_accounts(record: Record) -> None:
    assert [a["type"] for a in ok(record)["results"]] == ["CREDIT"]


def _account(record: Record) -> None:
    assert ok(record)["subtype"] == "CHECKING_ACCOUNT"


def _card_account(record: Record) -> None:
    assert ok(record)["type"] == "CREDIT" and record["facts"]["closeDateIsDate"]


def _statements(record: Record) -> None:
    assert ok(record) == {"page": 1, "total": 0, "totalPages": 1, "results": []}


def _legacy_all(record: Record) -> None:
    page = ok(record)
    assert (page["page"], page["total"], page["totalPages"], len(page["results"])) == (1, ROWS, 1, ROWS)


def _legacy_page_two(record: Record) -> None:
    page = ok(record)
    assert (page["page"], page["total"], page["totalPages"], len(page["results"])) == (2, ROWS, 3, 20)


def _cursor_first(record: Record) -> None:
    page = ok(record)
    assert len(page["results"]) == PAGE_SIZE
    assert page["next"].startswith("?") and "after=" in page["next"]


def _date_from(record: Record) -> None:
    rows_check()(record)
    rows = ok(record)
    assert 0 < len(rows) < ROWS
    # The SDK revived the dates; JSON gives them back as ISO strings.
    assert all(row["date"][:10] >= DATE_FROM for row in rows)


def _by_ids(record: Record) -> None:
    assert len(ok(record)["results"]) == 3 and ok(record)["next"] is None


def _bad_cursor(record: Record) -> None:
    assert refused(record, 400)["message"] == "Invalid cursor"


def _transaction(record: Record) -> None:
    tx = ok(record)
    assert tx["id"] and tx["accountId"]
    rows_check(1)({**record, "value": [tx]})


def _categories(record: Record) -> None:
    page = ok(record)
    assert page["total"] == len(page["results"]) > 0
    for category in page["results"]:
        assert len(category["id"]) == 8 and category["description"] and category["descriptionTranslated"]
        if "parentId" in category:
            assert category["parentDescription"]


def _category(record: Record) -> None:
    category = ok(record)
    assert category["parentId"] == category["id"][:2] + "000000"


def _recategorized(record: Record) -> None:
    tx = ok(record)
    assert tx["categoryId"] and tx["category"]


def _waiting_mfa(record: Record) -> None:
    item = ok(record)
    assert (item["status"], item["executionStatus"]) == ("WAITING_USER_INPUT", "WAITING_USER_INPUT")
    assert item["parameter"]["name"] == "token" and item["parameter"]["expiresAt"]


def _mfa_accepted(record: Record) -> None:
    item = ok(record)
    assert (item["status"], item["executionStatus"], item["parameter"]) == ("UPDATING", "LOGIN_MFA_IN_PROGRESS", None)


def _after_mfa(record: Record) -> None:
    item = ok(record)
    assert (item["status"], item["executionStatus"], item["connector"]["id"]) == ("UPDATED", "SUCCESS", 2)
    assert item["nextAutoSyncAt"] is None  # MFA at every login: no auto-sync


def _wrong_mfa(record: Record) -> None:
    item = ok(record)
    assert (item["status"], item["executionStatus"], item["error"]["code"]) == (
        "LOGIN_ERROR",
        "INVALID_CREDENTIALS_MFA",
        "INVALID_CREDENTIALS_MFA",
    )


def _one_step(record: Record) -> None:
    item = ok(record)
    assert (item["status"], item["connector"]["id"]) == ("UPDATED", 1)
    assert any(c.get("mfa") for c in item["connector"]["credentials"])


def _one_step_no_token(record: Record) -> None:
    body = refused(record, 400, "CONNECTOR_VALIDATION_ERROR")
    assert [d["parameter"] for d in body["details"]] == ["token"]


def _webhook_created(record: Record) -> None:
    hook = ok(record)
    assert (hook["event"], hook["url"], hook["disabledAt"]) == (
        "item/updated",
        "https://example.com/pluggy/webhooks/conformance",
        None,
    )
    assert hook["headers"] == {"X-Webhook-Secret": "conformance"}
    assert record["facts"] == {"createdAtIsDate": True, "updatedAtIsDate": True}


def _webhooks_listed(record: Record) -> None:
    page = ok(record)
    assert page["total"] == len(page["results"]) == 1


def _webhook_fetched(record: Record) -> None:
    assert ok(record)["event"] == "item/updated" and record["facts"]["createdAtIsDate"]


def _webhook_updated(record: Record) -> None:
    hook = ok(record)
    assert (hook["url"], hook["event"]) == ("https://example.com/pluggy/webhooks/conformance-updated", "all")


def _webhook_disabled(record: Record) -> None:
    assert record["facts"]["disabledAtIsDate"]


def _webhook_enabled(record: Record) -> None:
    hook = ok(record)
    assert (hook["disabledAt"], hook["headers"]) == (None, {})


def _accepted_webhook(record: Record) -> None:
    assert ok(record)["id"]


def _deleted_webhook(record: Record) -> None:
    assert ok(record) == {"count": 1}


def _payment_request(record: Record) -> None:
    request = ok(record)
    assert request["status"] == "SCHEDULED" and record["facts"]["createdAtIsDate"]


def _payment_requests(record: Record) -> None:
    page = ok(record)
    assert (page["page"], page["total"], len(page["results"])) == (1, 1, 1)


def _payment_intent(record: Record) -> None:
    assert ok(record)["status"] == "PAYMENT_COMPLETED"


def _payment_intents(record: Record) -> None:
    assert [i["status"] for i in ok(record)["results"]] == ["PAYMENT_COMPLETED"]


def _schedules(record: Record) -> None:
    page = ok(record)
    assert [s["scheduledDate"] for s in page["results"]] == ["2026-12-10"]


def _schedule(record: Record) -> None:
    schedule = ok(record)
    assert (schedule["status"], schedule["scheduledDate"]) == ("SCHEDULED", "2026-12-10")


def _deleted_item(record: Record) -> None:
    assert ok(record) is None  # the SDK resolves deleteItem with nothing


# --- shapes held to the SDK's declared types (dist/types/*.d.ts of the installed SDK) -------------------------

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$")
_MEMBER = re.compile(r"^\s*(\w+)(\?)?:\s*(.+?);?\s*$")
# Fields the emulator sends beyond the SDK type, each from another of Pluggy's sources.
_EXTRA_FIELDS = {
    "CreditCardBills": {"accountId"},  # OAS Bill (required there)
    "Item": {"hasResourcesPendingAuthorization", "resourcesCollectedAt"},  # Open Finance, PYSDK models/item.py
}


def declared_type(sdk_dir: Path, module: str, name: str) -> dict[str, tuple[bool, str]]:
    """{member: (optional?, TypeScript type text)} of `export type <name> = {...}` in types/<module>.d.ts."""
    text = (sdk_dir / "node_modules" / "pluggy-sdk" / "dist" / "types" / f"{module}.d.ts").read_text()
    lines = text[text.index(f"export type {name} = {{") :].splitlines()[1:]
    members: dict[str, tuple[bool, str]] = {}
    depth = 1
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(("/*", "*")):
            continue  # comments may hold braces
        if depth == 1 and (found := _MEMBER.match(line)):
            members[found.group(1)] = (found.group(2) == "?", found.group(3))
        depth += line.count("{") - line.count("}")
        if depth == 0:
            return members
    raise AssertionError(f"no end to {name} in {module}.d.ts")


def _value_fits(value: Any, kind: str) -> bool:
    options = [k.strip() for k in kind.split("|")]
    if value is None:
        return "null" in options
    for option in options:
        literal = re.fullmatch(r"'(.*)'", option)
        if (
            (literal and value == literal.group(1))
            or (option == "string" and isinstance(value, str))
            or (option == "number" and isinstance(value, int | float) and not isinstance(value, bool))
            or (option == "boolean" and isinstance(value, bool))
            or (option == "Date" and isinstance(value, str) and _ISO.match(value))
            or (option.endswith("[]") and isinstance(value, list))
            or (option != "Date" and re.fullmatch(r"[A-Z]\w*", option))  # a named type: checked on its own
        ):
            return True
    return False


def conforms(sdk: NodeSdk, module: str, name: str, value: Any) -> None:
    """`value` has every required member of the SDK type, nothing else (bar known extras), each of its type."""
    members = declared_type(sdk.sdk_dir, module, name)
    assert isinstance(value, dict), value
    required = {k for k, (optional, _) in members.items() if not optional}
    assert required <= set(value), f"{name} lacks {sorted(required - set(value))}"
    extra = set(value) - set(members) - _EXTRA_FIELDS.get(name, set())
    assert not extra, f"{name} has members the SDK does not declare: {sorted(extra)}"
    for key, (_, kind) in members.items():
        if key in value:
            assert _value_fits(value[key], kind), f"{name}.{key} = {value[key]!r} is not {kind}"


# (module, type, path to the values): the product answers and the objects inside them.
_PRODUCT_SHAPES: dict[str, list[tuple[str, str, str]]] = {
    "fetchCreditCardBills": [
        ("creditCardBills", "CreditCardBills", "results[]"),
        ("creditCardBills", "CreditCardBillPayment", "results[].payments[]"),
    ],
    "fetchCreditCardBill": [("creditCardBills", "CreditCardBills", "")],
    "fetchInvestments": [
        ("investment", "Investment", "results[]"),
        ("investment", "InvestmentInstitution", "results[].institution"),
    ],
    "fetchInvestment": [("investment", "Investment", "")],
    "fetchInvestmentTransactions": [
        ("investment", "InvestmentTransaction", "results[]"),
        ("investment", "Expenses", "results[].expenses"),
    ],
    "fetchAllInvestmentTransactions": [("investment", "InvestmentTransaction", "[]")],
    "fetchLoans": [
        ("loan", "Loan", "results[]"),
        ("loan", "LoanInterestRate", "results[].interestRates[]"),
        ("loan", "LoanContractedFee", "results[].contractedFees[]"),
        ("loan", "LoanInstallments", "results[].installments"),
        ("loan", "LoanPayments", "results[].payments"),
        ("loan", "LoanPaymentRelease", "results[].payments.releases[]"),
    ],
    "fetchLoan": [("loan", "Loan", "")],
    "fetchIdentityByItemId": [
        ("identity", "IdentityResponse", ""),
        ("identity", "PhoneNumber", "phoneNumbers[]"),
        ("identity", "Email", "emails[]"),
        ("identity", "Address", "addresses[]"),
        ("identity", "IdentityRelation", "relations[]"),
    ],
    "fetchIdentity": [("identity", "IdentityResponse", "")],
    "fetchConsents": [("consent", "Consent", "results[]")],
    "fetchConsent": [("consent", "Consent", "")],
}


def _at(value: Any, path: str) -> list[Any]:
    """The values at a path like `results[].payments[]` (`[]` walks a list; null objects are skipped)."""
    found = [value]
    for step in [p for p in path.split(".") if p]:
        name, walk = step.removesuffix("[]"), step.endswith("[]")
        found = [v[name] if name else v for v in found if v is not None]
        if walk:
            found = [x for v in found if v is not None for x in v]
    return [v for v in found if v is not None]


def _dates_revived(record: Record) -> None:
    """The date members sdk_calls.mjs looked at came back as Dates (the SDK revives ISO strings)."""
    facts = record.get("facts", {})
    assert facts and all(facts.values()), facts


def _all(*checks: Callable[[Record], None]) -> Callable[[Record], None]:
    def check(record: Record) -> None:
        for one in checks:
            one(record)

    return check


def _pages(total: int | None = None) -> Callable[[Record], None]:
    def check(record: Record) -> None:
        page = ok(record)
        assert set(page) == {"page", "total", "totalPages", "results"}, page
        assert page["total"] == len(page["results"]) > 0
        if total is not None:
            assert page["total"] == total

    return check


def _bills_of_checking(record: Record) -> None:
    assert ok(record) == {"page": 1, "total": 0, "totalPages": 1, "results": []}


def _bills_page_two(record: Record) -> None:
    page = ok(record)
    assert page["page"] == 2 and page["totalPages"] == page["total"] >= 2 and len(page["results"]) == 1


def _investments_of_type(record: Record) -> None:
    page = ok(record)
    assert page["results"] and len({i["type"] for i in page["results"]}) == 1


def _identity_of_item(record: Record) -> None:
    identity = ok(record)
    assert identity["documentType"] == "CPF" and identity["emails"][0]["value"].endswith("@example.com")


def _consents_of_item(record: Record) -> None:
    consent = ok(record)["results"][0]
    assert consent["revokedAt"] is None and "INVESTMENTS_ALL" in consent["openFinancePermissionsGranted"]


def _refused(status: int, code_description: str | None = None, *, bare: bool = False) -> Callable[[Record], None]:
    def check(record: Record) -> None:
        refused(record, status, code_description, bare=bare)

    return check


@dataclass(frozen=True)
class Expectation:
    check: Callable[[Record], None]
    difference: str | None = None  # the DELIBERATE_DIFFERENCES entry when judged unlike real Pluggy


def special(difference: str, check: Callable[[Record], None]) -> Expectation:
    """A call judged by what the emulator deliberately does, where real Pluggy would answer otherwise."""
    return Expectation(check, difference)


WEBHOOK_REFUSALS = (
    "http scheme",
    "localhost",
    "subdomain of localhost",
    ".local name",
    ".internal name",
    "IPv4 address",
    "IPv6 address",
    "port 8443",
    "user:pass@",
    "not a URL",
    "loopback receiver",
)

_CHECKS: dict[str, Callable[[Record], None] | Expectation] = {
    "auth": _auth,
    "auth: wrong secret": _refused(401, "CLIENT_KEYS_UNAUTHORIZED"),
    "createConnectToken: no item": _connect_token,
    "fetchConnectors: sandbox": special("sandbox-mfa-connectors", _connectors_sandbox),
    "fetchConnectors: no filter": special("no-live-connectors", _connectors_unfiltered),
    "fetchConnectors: countries and types": special("sandbox-mfa-connectors", _connectors_filtered),
    "fetchConnector: sandbox 0": _connector,
    "fetchConnector: unknown": _refused(404, "CONNECTOR_NOT_FOUND"),
    "validateParameters: sandbox credentials": _validate_ok,
    "validateParameters: missing password": _validate_missing,
    "createItem: sandbox user-ok": _created_item,
    "fetchItem: until finished": item_in("UPDATED", "SUCCESS"),
    "fetchItem: unknown": _refused(404, "ITEM_NOT_FOUND"),
    "createItem: bad webhookUrl": _refused(400, bare=True),
    "createItem: wrong password": _wrong_password,
    "createItem: unknown connector": _refused(404),
    "createConnectToken: item and options": _connect_token,
    "createConnectToken: unknown item": _refused(404, "ITEM_NOT_FOUND"),
    "createConnectToken: localhost webhookUrl": _refused(400, bare=True),
    "updateItem: no parameters": _updating,
    "updateItem: options": _updated_with_options,
    "fetchItem: after update": _after_update,
    "fetchItem: after one 429": _after_429,
    "fetchAccounts": _accounts,
    "fetchAccounts: CREDIT": _credit_accounts,
    "fetchAccount": _account,
    "fetchAccount: card": _card_account,
    "fetchAccount: unknown": _refused(404, "ACCOUNT_NOT_FOUND"),
    "fetchAccountStatements": _statements,
    "fetchTransactions: legacy, pageSize 500": _legacy_all,
    "fetchTransactions: legacy, page 2 of 20": _legacy_page_two,
    "fetchTransactionsCursor: first page": _cursor_first,
    "fetchAllTransactions: checking": rows_check(ROWS),
    "fetchAllTransactions: card": rows_check(ROWS),
    "fetchAllTransactions: dateFrom": _date_from,
    "fetchAllTransactions: createdAtFrom": rows_check(ROWS),
    "fetchTransactionsCursor: ids": _by_ids,
    "fetchTransactionsCursor: bad cursor": _bad_cursor,
    "fetchTransaction": _transaction,
    "fetchTransaction: unknown": _refused(404, "TRANSACTION_NOT_FOUND"),
    "fetchCategories": _categories,
    "fetchCategory": _category,
    "fetchCategory: unknown": _refused(404, "CATEGORY_NOT_FOUND"),
    "updateTransactionCategory": _recategorized,
    "fetchTransaction: after recategorizing": _recategorized,
    "updateTransactionCategory: unknown transaction": _refused(404, "TRANSACTION_NOT_FOUND"),
    "fetchCreditCardBills": _all(ok, _dates_revived, _pages()),
    "fetchCreditCardBills: checking": _bills_of_checking,
    "fetchCreditCardBills: page 2 of 1": _bills_page_two,
    "fetchCreditCardBills: no accountId": _refused(400),
    "fetchCreditCardBill": _all(ok, _dates_revived),
    "fetchCreditCardBill: unknown": _refused(404, "CREDIT_CARD_BILL_NOT_FOUND"),
    "fetchInvestments": _all(ok, _dates_revived, _pages()),
    "fetchInvestments: type": _investments_of_type,
    "fetchInvestments: no itemId": _refused(400),
    "fetchInvestment": _all(ok, _dates_revived),
    "fetchInvestment: unknown": _refused(404, "INVESTMENT_NOT_FOUND"),
    "fetchInvestmentTransactions": _all(ok, _dates_revived, _pages()),
    "fetchAllInvestmentTransactions": _all(ok, _dates_revived),
    "fetchInvestmentTransactions: unknown investment": _refused(404, "INVESTMENT_NOT_FOUND"),
    "fetchLoans": _all(ok, _dates_revived, _pages(1)),
    "fetchLoan": _all(ok, _dates_revived),
    "fetchLoan: unknown": _refused(404, "LOAN_NOT_FOUND"),
    "fetchIdentityByItemId": _all(ok, _dates_revived, _identity_of_item),
    "fetchIdentityByItemId: unknown item": _refused(404, "IDENTITY_NOT_FOUND"),
    "fetchIdentityByItemId: not a UUID": _refused(400, bare=True),
    "fetchIdentity": _all(ok, _dates_revived),
    "fetchIdentity: unknown": _refused(404, "IDENTITY_NOT_FOUND"),
    "fetchConsents": _all(ok, _dates_revived, _consents_of_item),
    "fetchConsent": _all(ok, _dates_revived),
    "fetchConsent: unknown": _refused(404, "CONSENT_NOT_FOUND"),
    # Pluggy's sandbox MFA connectors exist, but their ids (1 and 2 here) are the emulator's choice.
    "createItem: MFA 2-step": special("sandbox-mfa-connectors", _updating),
    "fetchItem: waiting for MFA": special("sandbox-mfa-connectors", _waiting_mfa),
    "updateItemMFA: sandbox token": special("sandbox-mfa-connectors", _mfa_accepted),
    "fetchItem: after MFA": special("sandbox-mfa-connectors", _after_mfa),
    "updateItemMFA: not waiting": special("sandbox-mfa-connectors", _refused(400)),
    "createItem: MFA 2-step, wrong token": special("sandbox-mfa-connectors", _updating),
    "updateItemMFA: wrong token": special("sandbox-mfa-connectors", _mfa_accepted),
    "fetchItem: after wrong MFA": special("sandbox-mfa-connectors", _wrong_mfa),
    "createItem: MFA 1-step": special("sandbox-mfa-connectors", _one_step),
    "createItem: MFA 1-step, wrong token": special("sandbox-mfa-connectors", _wrong_mfa),
    "createItem: MFA 1-step, no token": special("sandbox-mfa-connectors", _one_step_no_token),
    "createWebhook": _webhook_created,
    "fetchWebhooks": _webhooks_listed,
    "fetchWebhook": _webhook_fetched,
    "updateWebhook: url and event": _webhook_updated,
    "updateWebhook: disable": _webhook_disabled,
    "updateWebhook: enable, clear headers": _webhook_enabled,
    "updateWebhook: bad url": _refused(400, bare=True),
    "createWebhook: duplicate": _refused(400, bare=True),
    "createWebhook: unknown event": _refused(400, bare=True),
    **{f"createWebhook: refused {what}": _refused(400, bare=True) for what in WEBHOOK_REFUSALS},
    "createWebhook: explicit port 443": _accepted_webhook,
    "createWebhook: a name no DNS resolves": special("no-dns-check", _accepted_webhook),  # Pluggy: 400
    **{f"createWebhook: transactions/deleted #{n}": _accepted_webhook for n in range(1, 6)},
    "createWebhook: transactions/deleted #6": _refused(400, bare=True),
    "deleteWebhook": _deleted_webhook,
    "fetchWebhook: deleted": _refused(404, "WEBHOOK_NOT_FOUND"),
    "deleteWebhook: unknown": _refused(404, "WEBHOOK_NOT_FOUND"),
    # The resources read here were made through the emulator's control API, not Pluggy's payment routes.
    "payments.fetchPaymentRequest": special("payments-from-control-api", _payment_request),
    "payments.fetchPaymentRequests": special("payments-from-control-api", _payment_requests),
    "payments.fetchPaymentRequest: unknown": _refused(404, "PAYMENT_REQUEST_NOT_FOUND"),
    "payments.fetchPaymentIntent": special("payments-from-control-api", _payment_intent),
    "payments.fetchPaymentIntents: by request": special("payments-from-control-api", _payment_intents),
    "payments.fetchPaymentIntent: unknown": _refused(404, "PAYMENT_INTENT_NOT_FOUND"),
    "payments.fetchScheduledPayments": special("payments-from-control-api", _schedules),
    "payments.fetchScheduledPayment": special("payments-from-control-api", _schedule),
    "payments.fetchScheduledPayment: unknown": _refused(404),
    "deleteItem": _deleted_item,
    "fetchItem: deleted": _refused(404, "ITEM_NOT_FOUND"),
    "deleteItem: unknown": _refused(404, "ITEM_NOT_FOUND"),
}

EXPECTATIONS: dict[str, Expectation] = {
    name: check if isinstance(check, Expectation) else Expectation(check) for name, check in _CHECKS.items()
}


# --- the tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTATIONS))
def test_sdk_call(sdk_run: SdkRun, name: str) -> None:
    assert name in sdk_run.records, f"sdk_calls.mjs made no call named {name!r}"
    EXPECTATIONS[name].check(sdk_run.records[name])


@pytest.mark.parametrize("name", list(_PRODUCT_SHAPES))
def test_product_answers_have_the_sdk_types(sdk_run: SdkRun, name: str) -> None:
    """Bills, investments, loans, identity and consents as the SDK's .d.ts declares them: every required
    member, no undeclared one, each value of its declared type (dates as ISO strings, literals from the union)."""
    value = ok(sdk_run.records[name])
    for module, type_name, path in _PRODUCT_SHAPES[name]:
        found = _at(value, path)
        assert found, f"nothing at {path!r} in {name}"
        for item in found:
            conforms(sdk_run.sdk, module, type_name, item)


def test_every_call_made_is_judged(sdk_run: SdkRun) -> None:
    assert set(sdk_run.records) == set(EXPECTATIONS)
    assert sdk_run.sdk_version == SDK_VERSION


def test_deliberate_differences_cover_every_special_call() -> None:
    """Every call judged unlike Pluggy names a DELIBERATE_DIFFERENCES entry that names it back, and no entry
    names a call the suite does not judge that way."""
    listed = {(call, d.key) for d in DELIBERATE_DIFFERENCES for call in d.sdk_calls}
    judged = {(name, e.difference) for name, e in EXPECTATIONS.items() if e.difference is not None}
    assert {key for _, key in judged} <= {d.key for d in DELIBERATE_DIFFERENCES}
    assert sorted(judged - listed) == [], "treated specially here but not listed in DELIBERATE_DIFFERENCES"
    assert sorted(listed - judged) == [], "listed in DELIBERATE_DIFFERENCES but not judged so here"


def test_webhook_payloads_carry_the_deprecated_id(sdk_run: SdkRun) -> None:
    """The SDK types `id` as required on every payload (the emulator records events without delivering)."""
    events = sdk_run.emulator.events()
    assert events
    for event in events:
        payload = event["payload"]
        assert payload.get("id"), payload
        if "itemId" in payload:
            assert payload["id"] == payload["itemId"]


def test_report(sdk_run: SdkRun, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a check: a line for the run's log (calls, SDK methods, time, install)."""
    methods = {r["method"] for r in sdk_run.records.values()}
    install = f"cold, {sdk_run.sdk.install_seconds:.1f} s" if sdk_run.sdk.installed_now else "cached"
    line = (
        f"pluggy-sdk {sdk_run.sdk_version} on node {sdk_run.node_version}: {len(sdk_run.records)} calls "
        f"({len(methods)} SDK methods) in {sdk_run.seconds:.1f} s; npm install {install}"
    )
    with capsys.disabled():
        print(f"\n{line}")
    assert methods
