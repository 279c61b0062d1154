"""The demo (`pluggy-pipeline demo`, `make demo`): the main job end to end on a private local stack.

It walks the Connect widget's path: the app's backend mints a connect token (POST /connect-token, SigV4), the
"widget" creates a sandbox item with it on the emulator, Pluggy's webhooks reach the URL-token route, and the
item syncs; a second item takes the Caixa path (USER_AUTHORIZATION_PENDING, approved later in the bank's app).
Then a sync with new, changed, deleted and restated transactions that also moves the item's products (investment
balances and a new BUY, a loan installment paid, the identity touched, the newest investment removed), an error
and a reconnect, a connector's status and a payment. Every change event the bus carried is collected, every
stored item, account, transaction and product record (bills, investments and their transactions, loans,
identity, consents) is compared with the emulator's data field by field, and the read API must return exactly
what Pluggy has. The first item's products are summed up at the end, its identity masked (the name's
initials, the CPF's last 4 digits, as the CLI shows it). `run_demo` returns a JSON-ready summary; the CLI prints it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import requests
from pluggy_emulator import PluggyEmulator
from pluggy_emulator.state import SANDBOX_CONNECTOR_ID
from pluggy_pipeline.products import PLURALS
from pluggy_pipeline.records import (
    JSON,
    RecordStore,
    bill_key,
    consent_key,
    from_attributes,
    identity_key,
    investment_key,
    investment_transaction_key,
    loan_key,
)
from pluggy_pipeline_cli.app_api import AppApi
from pluggy_pipeline_cli.commands._common import mask_digits, mask_name
from pluggy_pipeline_cli.commands.watch import Tap, tap
from pluggy_pipeline_cli.commands.watch import summary as event_line
from pluggy_pipeline_cli.targets import target_from_state

from pluggy_pipeline_local.stack import LocalStack, StackOptions

DEMO_USER = "demo-user"
DEMO_CONNECTOR = str(SANDBOX_CONNECTOR_ID)  # the emulator's sandbox connector, whose status the demo changes
MAX_DIFFERENCES = 20
# Names, CPFs, account and contract numbers: a difference in one names the field, never its value.
PERSONAL_FIELDS = frozenset({"owner", "taxNumber", "document", "fullName", "number", "contractNumber"})
# Product records by `kind`, and the summary's name for each (the processor's counts).
PRODUCT_KINDS = PLURALS


class Mirror:
    """The pipeline's tables in the stack's moto: the event log and the stored copy."""

    def __init__(self, stack: LocalStack) -> None:
        assert stack.aws is not None
        self.dynamodb = stack.aws.clients["dynamodb"]
        self.events_table = stack.aws.resources.tables["EventsTable"]
        self.records = RecordStore(lambda: self.dynamodb, stack.aws.resources.tables["RecordsTable"])

    def _scan(self, **kwargs: Any) -> Iterator[JSON]:
        for page in self.dynamodb.get_paginator("scan").paginate(**kwargs):
            yield from (from_attributes(row) for row in page.get("Items", []))

    def events(self) -> list[JSON]:
        """Every event record."""
        return list(self._scan(TableName=self.events_table))

    def items(self) -> list[JSON]:
        """Every item record (deleted items' tombstones included), by item id."""
        rows = self._scan(
            TableName=self.records.table_name,
            FilterExpression="sk = :item",
            ExpressionAttributeValues={":item": {"S": "ITEM"}},
        )
        return sorted(rows, key=lambda r: str(r.get("itemId")))

    def products(self) -> dict[str, dict[tuple[str, str], JSON]]:
        """Every product record, by item id then (pk, sk): found by kind, wherever its key puts it (a record
        left under a key Pluggy no longer lists shows up as well)."""
        kinds = list(PRODUCT_KINDS)
        rows = self._scan(
            TableName=self.records.table_name,
            FilterExpression="#kind IN (" + ", ".join(f":k{i}" for i in range(len(kinds))) + ")",
            ExpressionAttributeNames={"#kind": "kind"},
            ExpressionAttributeValues={f":k{i}": {"S": kind} for i, kind in enumerate(kinds)},
        )
        found: dict[str, dict[tuple[str, str], JSON]] = {}
        for row in rows:
            found.setdefault(str(row.get("itemId")), {})[str(row["pk"]), str(row["sk"])] = row
        return found

    def item_state(self, item_id: str) -> dict[str, Any]:
        record = self.records.get({"pk": f"ITEM#{item_id}", "sk": "ITEM"}) or {}
        return {k: record.get(k) for k in ("status", "executionStatus", "errorCode")}


def _json_default(value: Any) -> Any:
    """DynamoDB's Decimals as JSON numbers (int when integral); anything else JSON lacks as its text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def _shown(value: Any, width: int = 60) -> str:
    """A value for a difference line: compact JSON, cut to `width`."""
    text = json.dumps(value, ensure_ascii=False, default=_json_default)
    return text if len(text) <= width else text[: width - 1] + "…"


def _normalize(value: Any) -> Any:
    """The emulator's truth with numbers as the store holds them (floats -> Decimal, via their JSON text)."""
    return json.loads(json.dumps(value), parse_float=Decimal)


def _differences(path: str, stored: Any, truth: Any, out: list[str], *, masked: bool = False) -> None:
    """Where `stored` differs from `truth`; `masked` (personal data: the identity) names the field only."""
    if len(out) >= MAX_DIFFERENCES:
        return
    if isinstance(stored, Mapping) and isinstance(truth, Mapping):
        for key in sorted(set(stored) | set(truth), key=str):
            if key not in truth:
                out.append(f"{path}.{key}: only in the mirror")
            elif key not in stored:
                out.append(f"{path}.{key}: missing from the mirror")
            else:
                _differences(f"{path}.{key}", stored[key], truth[key], out, masked=masked)
        return
    if isinstance(stored, list) and isinstance(truth, list) and len(stored) == len(truth):
        for index, (a, b) in enumerate(zip(stored, truth, strict=True)):
            _differences(f"{path}[{index}]", a, b, out, masked=masked)
        return
    same_type = isinstance(stored, bool) == isinstance(truth, bool)
    if not (same_type and stored == truth):
        personal = masked or path.rsplit(".", 1)[-1].split("[", 1)[0] in PERSONAL_FIELDS
        out.append(f"{path}: differs" if personal else f"{path}: mirror {_shown(stored)} != Pluggy {_shown(truth)}")


def _compare_sets(
    what: str, stored: Mapping[Any, Any], truth: Mapping[Any, Any], out: list[str], *, masked: bool = False
) -> None:
    for key in sorted(set(truth) - set(stored)):
        out.append(f"{what} {key}: missing from the mirror")
    for key in sorted(set(stored) - set(truth)):
        out.append(f"{what} {key}: in the mirror but not in Pluggy")
    for key in sorted(set(stored) & set(truth)):
        _differences(f"{what} {key}", stored[key], truth[key], out, masked=masked)


def _key(key: Mapping[str, str]) -> tuple[str, str]:
    return key["pk"], key["sk"]


def expected_products(truth: Mapping[str, Any], item_id: str) -> dict[tuple[str, str], Any]:
    """(pk, sk) -> Pluggy's object, for every product record of the item the mirror must hold (records.py's
    keys): the bills of its cards, its investments with their transactions, loans, identity and consents."""
    expected: dict[tuple[str, str], Any] = {}
    for account_id, bills in truth["bills"].items():
        if (truth["accounts"].get(account_id) or {}).get("itemId") == item_id:
            for bill in bills.values():
                expected[_key(bill_key(account_id, str(bill["id"])))] = bill
    for investment_id, investment in truth["investments"].items():
        if investment.get("itemId") == item_id:
            expected[_key(investment_key(item_id, investment_id))] = investment
            for row in truth["investmentTransactions"].get(investment_id, {}).values():
                expected[_key(investment_transaction_key(investment_id, str(row["id"])))] = row
    for loan_id, loan in truth["loans"].items():
        if loan.get("itemId") == item_id:
            expected[_key(loan_key(item_id, loan_id))] = loan
    if (identity := truth["identities"].get(item_id)) is not None:
        expected[_key(identity_key(item_id))] = identity
    for consent_id, consent in truth["consents"].items():
        if consent.get("itemId") == item_id:
            expected[_key(consent_key(item_id, consent_id))] = consent
    return expected


def _compare_products(
    item_id: str, stored: Mapping[tuple[str, str], JSON], truth: Mapping[str, Any], out: list[str]
) -> Counter[str]:
    """The item's product records (`data`) against Pluggy's objects; the records compared, by kind."""
    identity = "/".join(_key(identity_key(item_id)))
    data = {f"{pk}/{sk}": record.get("data") for (pk, sk), record in stored.items()}
    expected = {f"{pk}/{sk}": obj for (pk, sk), obj in expected_products(truth, item_id).items()}

    def part(rows: Mapping[str, Any], personal: bool) -> dict[str, Any]:
        return {k: v for k, v in rows.items() if (k == identity) == personal}

    _compare_sets("product", part(data, False), part(expected, False), out)
    # The identity is personal data: a difference names the field, never its value.
    _compare_sets("product", part(data, True), part(expected, True), out, masked=True)
    return Counter(PRODUCT_KINDS.get(str(record.get("kind")), "other") for record in stored.values())


def compare_mirror(mirror: Mirror, truth: Mapping[str, Any]) -> dict[str, Any]:
    """Every stored item, account, transaction and product record (`data`) against the emulator's truth, field
    by field; product records of items Pluggy no longer has count as differences."""
    truth = _normalize(truth)
    store = mirror.records
    differences: list[str] = []
    items = {str(r["itemId"]): r for r in mirror.items()}
    live = {item_id: r.get("data") for item_id, r in items.items() if not r.get("deleted")}
    _compare_sets("item", live, truth["items"], differences)
    for item_id in truth.get("deletedItemIds", []):
        if item_id in live:
            differences.append(f"item {item_id}: deleted in Pluggy, still live in the mirror")
    accounts = transactions = 0
    for item_id in truth["items"]:
        stored_accounts = {str(a["accountId"]): a.get("data") for a in store.accounts_of_item(item_id)}
        truth_accounts = {a: v for a, v in truth["accounts"].items() if v.get("itemId") == item_id}
        _compare_sets("account", stored_accounts, truth_accounts, differences)
        accounts += len(stored_accounts)
        for account_id in truth_accounts:
            stored_tx = {str(t["transactionId"]): t.get("data") for t in store.transactions_by_date(account_id)}
            _compare_sets(
                f"account {account_id} transaction", stored_tx, truth["transactions"][account_id], differences
            )
            transactions += len(stored_tx)
    stored_products = mirror.products()
    products: Counter[str] = Counter()
    for item_id in truth["items"]:
        products += _compare_products(item_id, stored_products.get(item_id, {}), truth, differences)
    for item_id in sorted(set(stored_products) - set(truth["items"])):
        differences.append(
            f"item {item_id}: {len(stored_products[item_id])} product record(s) of an item Pluggy no longer has"
        )
    return {
        "matches": not differences,
        "items": len(live),
        "accounts": accounts,
        "transactions": transactions,
        "products": {name: products[name] for name in PRODUCT_KINDS.values()},
        "differences": differences[:MAX_DIFFERENCES],
    }


def products_of_item(mirror: Mirror, item_id: str, truth: Mapping[str, Any], reasons: list[str]) -> dict[str, Any]:
    """What the mirror holds of one item's products, with the identity masked; a reason for each product the
    item asked for and does not have (compare_mirror has already checked each record against Pluggy's)."""
    stored = mirror.products()
    records = list(stored.get(item_id, {}).values())
    gone = set(truth.get("deletedInvestmentIds") or ())  # the demo's sync removes one investment
    if not gone:
        reasons.append("no investment was removed at Pluggy")
    left = [r for rows in stored.values() for r in rows.values() if str(r.get("investmentId")) in gone]
    if left:
        reasons.append(f"{len(left)} record(s) of investments removed at Pluggy still in the mirror")
    by_kind: dict[str, list[JSON]] = {}
    for record in records:
        by_kind.setdefault(str(record.get("kind")), []).append(record)
    accounts = {str(a["accountId"]): a.get("data") or {} for a in mirror.records.accounts_of_item(item_id)}
    cards = sorted({str(r.get("accountId")) for r in by_kind.get("bill", [])})
    loans = [r.get("data") or {} for r in by_kind.get("loan", [])]
    identity = next((r.get("data") or {} for r in by_kind.get("identity", [])), None)
    summary = {
        "itemId": item_id,
        "investments": len(by_kind.get("investment", [])),
        "investmentTransactions": len(by_kind.get("investmentTransaction", [])),
        "investmentsRemoved": len(gone),
        "bills": len(by_kind.get("bill", [])),
        "billsOf": [str((accounts.get(a) or {}).get("name") or a) for a in cards],
        "loans": len(loans),
        "installmentsPaid": [
            f"{(loan.get('installments') or {}).get('paidInstallments')}/"
            f"{(loan.get('installments') or {}).get('totalNumberOfInstallments')}"
            for loan in loans
        ],
        "consents": sorted(str(r.get("expiresAt")) for r in by_kind.get("consent", [])),
        "identity": (
            {"name": mask_name(identity.get("fullName")), "cpf": mask_digits(identity.get("document"))}
            if identity is not None
            else None
        ),
    }
    for kind, name in PRODUCT_KINDS.items():
        if not by_kind.get(kind):
            reasons.append(f"the demo item has no {name} in the mirror")
    return summary


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def products_line(products: Mapping[str, Any]) -> str:
    """The item's products on two lines (the identity masked), for the demo's steps."""
    identity = products.get("identity") or {}
    paid = ", ".join(products.get("installmentsPaid") or []) or "-"
    expires = ", ".join(str(e)[:10] for e in products.get("consents") or []) or "-"
    return (
        f"{_count(products['investments'], 'investment')} "
        f"({_count(products['investmentTransactions'], 'transaction')}; "
        f"{products['investmentsRemoved']} removed at Pluggy, gone here too), {_count(products['bills'], 'bill')} "
        f"of {', '.join(products.get('billsOf') or []) or 'no card'}, {_count(products['loans'], 'loan')} "
        f"(installments paid {paid}), consent expiring {expires}\n"
        f"       identity: {identity.get('name', '-')}, CPF {identity.get('cpf', '-')} (masked)"
    )


def _events_by_type(records: list[JSON]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for record in records:
        counts.setdefault(str(record.get("eventType")), Counter())[str(record.get("status"))] += 1
    return {event: dict(sorted(c.items())) for event, c in sorted(counts.items())}


def widget_connect(emulator: PluggyEmulator, connect_token: str, username: str) -> str:
    """What the Connect widget does with a connect token: create the item at Pluggy (POST /items)."""
    answer = requests.post(
        f"{emulator.base_url}/items",
        headers={"X-API-KEY": connect_token},
        json={"connectorId": SANDBOX_CONNECTOR_ID, "parameters": {"user": username, "password": "password-ok"}},
        timeout=15,
    )
    answer.raise_for_status()
    return str(answer.json()["id"])


def _drive(
    stack: LocalStack, emulator: PluggyEmulator, mirror: Mirror, api: AppApi, reasons: list[str]
) -> tuple[list[dict[str, Any]], str, str]:
    """The demo's story; the mirror's item state after each step, the Caixa item's id and the first item's."""
    steps: list[dict[str, Any]] = []

    def settle(step: str) -> None:
        if not stack.wait_until_idle(timeout=30):
            reasons.append(f"the pipeline did not go idle after: {step}")

    token = api.connect_token(DEMO_USER)
    item_id = widget_connect(emulator, token["accessToken"], "user-ok")
    settle("create item")
    steps.append(
        {
            "step": f"POST /connect-token for clientUserId {DEMO_USER}; the widget connects a sandbox item with it",
            "item": mirror.item_state(item_id),
        }
    )
    pending_id = widget_connect(emulator, api.connect_token(DEMO_USER)["accessToken"], "user-authorization-pending")
    settle("create the Caixa-like item")
    steps.append(
        {
            "step": "a second item waits for the account holder's approval in the bank's app (Caixa case)",
            "item": mirror.item_state(pending_id),
        }
    )
    emulator.complete_user_action(pending_id, granted=True)
    settle("approval")
    steps.append(
        {"step": "the account holder approves; Pluggy syncs the item by itself", "item": mirror.item_state(pending_id)}
    )
    emulator.sync_item(
        item_id, add=5, change=3, delete=2, restate_credit_card=1, products_change=True, remove_investment=True
    )
    settle("sync")
    steps.append(
        {
            "step": "sync with changes: 5 new, 3 changed, 2 deleted, 1 card row restated (new id); investment "
            "balances move (a new BUY), a loan installment is paid, the identity changes, an investment is removed",
            "item": mirror.item_state(item_id),
        }
    )
    emulator.fail_item(item_id, "USER_AUTHORIZATION_PENDING")
    settle("item error")
    steps.append({"step": "item/error USER_AUTHORIZATION_PENDING", "item": mirror.item_state(item_id)})
    emulator.reconnect_item(item_id)
    emulator.set_connector_status("UNSTABLE")
    emulator.send_payment_event("payment_intent/completed")
    settle("reconnect, connector status, payment")
    steps.append(
        {
            "step": "reconnected; connector status UNSTABLE; payment_intent/completed",
            "item": mirror.item_state(item_id),
        }
    )
    return steps, pending_id, item_id


def _collect(watcher: Tap, quiet_polls: int = 2) -> list[dict[str, Any]]:
    """The change events on the bus, until `quiet_polls` receives in a row bring none."""
    events: list[dict[str, Any]] = []
    quiet = 0
    for _ in range(200):  # bounded
        batch = watcher.receive(wait_seconds=1)
        events.extend(batch)
        quiet = 0 if batch else quiet + 1
        if quiet >= quiet_polls:
            break
    return sorted(events, key=lambda e: (str(e.get("time")), str(e["detail"].get("changedAt"))))


def _check_change_events(events: list[dict[str, Any]], pending_id: str, reasons: list[str]) -> None:
    kinds = Counter(str(e["detail-type"]) for e in events)
    for kind in (
        "Item Status Changed",
        "Transactions Changed",
        "Payment Status Changed",
        "Connector Status Changed",
        "Products Changed",
        "Consent Changed",
    ):
        if not kinds[kind]:
            reasons.append(f"no {kind} change event")
    caixa = [e["detail"] for e in events if e["detail"].get("itemId") == pending_id]
    states = [(d["current"]["errorCode"], d["pending"]) for d in caixa if d.get("current")]
    if ("USER_AUTHORIZATION_PENDING", True) not in states or not any(
        d.get("current", {}).get("status") == "UPDATED" for d in caixa
    ):
        reasons.append("the Caixa case was not told as pending, then UPDATED")


def _check_read_api(api: AppApi, mirror: Mirror, truth: Mapping[str, Any], reasons: list[str]) -> dict[str, Any]:
    """The read API returns what Pluggy has: the user's items, each item's accounts, every transaction."""
    items = api.items_of_user(DEMO_USER)
    live = {str(i["id"]) for i in truth["items"].values() if i.get("clientUserId") == DEMO_USER}
    if {str(i["id"]) for i in items} != live:
        reasons.append("GET /users/{clientUserId}/items differs from Pluggy's items of the user")
    rows = mismatched = 0
    for item_id in sorted(live):
        for account in api.item(item_id)["accounts"]:
            account_id = str(account["id"])
            expected = {
                tx_id: _normalize(tx["amount"]) for tx_id, tx in truth["transactions"].get(account_id, {}).items()
            }
            got = {str(r["id"]): Decimal(str(r["data"]["amount"])) for r in api.transactions(account_id, limit=100)}
            rows += len(got)
            mismatched += len(set(expected) ^ set(got)) + sum(1 for t in got if t in expected and got[t] != expected[t])
    if mismatched:
        reasons.append(f"the read API differs from Pluggy on {mismatched} transaction(s)")
    return {"items": len(items), "transactions": rows, "mismatched": mismatched}


def _check_processing(emulator: PluggyEmulator, records: list[JSON], reasons: list[str]) -> None:
    """Every event Pluggy sent was delivered, logged and PROCESSED."""
    not_processed = [r for r in records if r.get("status") != "PROCESSED"]
    if not_processed:
        listed = ", ".join(f"{r.get('eventType')} {r.get('status')}" for r in not_processed[:5])
        reasons.append(f"{len(not_processed)} event(s) not PROCESSED: {listed}")
    logged = {str(r.get("eventId")) for r in records}
    emitted = emulator.events()
    missing = [e for e in emitted if "eventId" in e["payload"] and e["eventId"] not in logged]
    if missing:
        reasons.append(f"{len(missing)} emitted event(s) missing from the event log")
    if len(records) < len(emitted):
        reasons.append(f"Pluggy sent {len(emitted)} events, the log holds {len(records)}")
    dropped = [d for d in emulator.deliveries() if d.get("outcome") == "dropped"]
    if dropped:
        reasons.append(f"{len(dropped)} webhook delivery(ies) dropped by Pluggy")


def _inventory(mirror: Mirror) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items, accounts with their transaction counts) as the mirror holds them."""
    store = mirror.records
    items = [{k: r.get(k) for k in ("itemId", "status", "executionStatus", "errorCode")} for r in mirror.items()]
    accounts = []
    for item in items:
        for account in store.accounts_of_item(str(item["itemId"])):
            data = account.get("data") or {}
            accounts.append(
                {
                    "id": account["accountId"],
                    "itemId": item["itemId"],
                    **{k: data.get(k) for k in ("name", "type", "subtype", "balance", "currencyCode")},
                    "transactions": sum(1 for _ in store.transaction_keys_of_account(str(account["accountId"]))),
                }
            )
    return items, accounts


def _connector_status(mirror: Mirror, truth: Mapping[str, Any], reasons: list[str]) -> str | None:
    stored = mirror.records.get({"pk": f"CONNECTOR#{DEMO_CONNECTOR}", "sk": "STATUS"})
    expected: Mapping[str, Any] = next((c for c in truth["connectors"] if str(c.get("id")) == DEMO_CONNECTOR), {})
    status = stored.get("status") if stored else None
    if status is None:
        reasons.append("the connector status was not stored")
    elif status != (expected.get("health") or {}).get("status"):
        reasons.append("the stored connector status differs from Pluggy's")
    return str(status) if status is not None else None


def run_demo(verbose: bool = False) -> dict[str, Any]:
    """Run the demo on a private local stack; the summary (JSON-ready), with `ok` and the `reasons` if not."""
    started = time.monotonic()
    reasons: list[str] = []
    with LocalStack(StackOptions(port=0, state_file=None, quiet=not verbose)) as stack:
        emulator = stack.emulator
        if emulator is None:
            raise RuntimeError("the local stack started without its Pluggy emulator")
        mirror = Mirror(stack)
        target = target_from_state(stack.describe())
        api = AppApi(target)
        with tap(target) as watcher:
            steps, pending_id, item_id = _drive(stack, emulator, mirror, api, reasons)
            change_events = _collect(watcher)
        _check_change_events(change_events, pending_id, reasons)
        records = mirror.events()
        _check_processing(emulator, records, reasons)
        dlq, queued = stack.queue_depth("EventDeadLetterQueue"), stack.queue_depth("EventQueue")
        if dlq:
            reasons.append(f"{dlq} message(s) in the dead-letter queue")
        if queued:
            reasons.append(f"{queued} message(s) still in EventQueue")
        truth = emulator.truth()
        compared = compare_mirror(mirror, truth)
        if not compared["matches"]:
            reasons.append(f"the mirror differs from Pluggy's data ({len(compared['differences'])}+ differences)")
        read_api = _check_read_api(api, mirror, truth, reasons)
        items, accounts = _inventory(mirror)
        products = products_of_item(mirror, item_id, truth, reasons)
        steps.append(
            {
                "step": "the first item's products in the mirror, each equal to Pluggy's field by field:\n       "
                + products_line(products),
                "item": mirror.item_state(item_id),
            }
        )
        summary = {
            "ok": not reasons,
            "reasons": reasons,
            "steps": steps,
            "items": items,
            "accounts": accounts,
            "products": products,
            "events": _events_by_type(records),
            "eventCount": len(records),
            "webhookDeliveries": len(emulator.deliveries()),
            "connector": {"id": DEMO_CONNECTOR, "status": _connector_status(mirror, truth, reasons)},
            "dlqDepth": dlq,
            "queueDepth": queued,
            "mirror": compared,
            "changeEvents": [event_line(e) for e in change_events],
            "changeEventCounts": dict(sorted(Counter(str(e["detail-type"]) for e in change_events).items())),
            "readApi": read_api,
            "user": DEMO_USER,
        }
    summary["ok"] = not reasons
    summary["elapsedSeconds"] = round(time.monotonic() - started, 1)
    result: dict[str, Any] = json.loads(json.dumps(summary, default=_json_default))
    return result
