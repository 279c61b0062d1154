"""`records items|accounts|transactions|investments|loans|bills|consents|identity`: read the mirror in
RecordsTable (RecordStore's key design).

`identity` is personal data (docs/security.md): it is only ever shown masked, `--json` included.
"""

from __future__ import annotations

import argparse
import itertools
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from pluggy_pipeline.event_store import iso_now
from pluggy_pipeline.processor import consents_expiring
from pluggy_pipeline.records import JSON, RecordStore, from_attributes, identity_key, item_key

from pluggy_pipeline_cli.commands._common import (
    add_target_options,
    dumps,
    mask_digits,
    mask_name,
    money,
    table,
    target_of,
    truncate,
)
from pluggy_pipeline_cli.targets import CliError, Target

JSON_HELP = (
    "print the stored records as JSON, unmasked: this is your users' own data as Pluggy returned it "
    "(an export); table output masks account and tax numbers to their last 4 digits"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.]+Z?)?$")


def _store(target: Target) -> RecordStore:
    client = target.dynamodb()
    return RecordStore(lambda: client, target.records_table)


def all_items(target: Target) -> list[JSON]:
    """Every item record (including deleted ones' tombstones): a paginated Scan, for operators."""
    client = target.dynamodb()
    items: list[JSON] = []
    start: dict[str, Any] | None = None
    while True:
        kwargs: dict[str, Any] = {
            "TableName": target.records_table,
            "FilterExpression": "sk = :item",
            "ExpressionAttributeValues": {":item": {"S": "ITEM"}},
        }
        if start:
            kwargs["ExclusiveStartKey"] = start
        page = client.scan(**kwargs)
        items.extend(from_attributes(row) for row in page.get("Items", []))
        start = page.get("LastEvaluatedKey")
        if not start:
            return sorted(items, key=lambda r: str(r.get("itemId")))


def cmd_items(args: argparse.Namespace) -> int:
    target = target_of(args)
    records = _store(target).items_of_user(args.user) if args.user else all_items(target)
    if args.json:
        print(dumps(records))
        return 0
    if not records:
        print("no items" + (f" for user {args.user}" if args.user else ""))
        return 0
    rows = []
    for record in records:
        data = record.get("data") or {}
        connector = (data.get("connector") or {}).get("name") if isinstance(data, dict) else None
        rows.append(
            [
                record.get("itemId"),
                record.get("status"),
                record.get("executionStatus") or "",
                record.get("errorCode") or "",
                connector or "",
                record.get("clientUserId") or "",
                record.get("updatedAt") or "",
                record.get("syncedAt") or record.get("deletedAt") or "",
            ]
        )
    headers = ["ITEM", "STATUS", "EXECUTION", "ERROR", "CONNECTOR", "USER", "UPDATED", "SYNCED"]
    print(table(headers, rows))
    return 0


def cmd_accounts(args: argparse.Namespace) -> int:
    records = _store(target_of(args)).accounts_of_item(args.item_id)
    if args.json:
        print(dumps(records))
        return 0
    if not records:
        print(f"no accounts for item {args.item_id}")
        return 0
    rows = []
    for record in records:
        data = record.get("data") or {}
        rows.append(
            [
                record.get("accountId"),
                data.get("type"),
                data.get("subtype"),
                data.get("name"),
                mask_digits(data.get("number")),
                money(data.get("balance"), data.get("currencyCode")),
                mask_digits(data.get("taxNumber")),
                record.get("updatedAt") or "",
            ]
        )
    print(table(["ACCOUNT", "TYPE", "SUBTYPE", "NAME", "NUMBER", "BALANCE", "TAX NUMBER", "UPDATED"], rows))
    return 0


def _date(value: str | None, option: str) -> str | None:
    if value is not None and not _DATE.match(value):
        raise CliError(f"{option} must be a date (YYYY-MM-DD) or an ISO date-time")
    return value


def cmd_transactions(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError("--limit must be at least 1")
    rows_iter = _store(target_of(args)).transactions_by_date(
        args.account_id, _date(args.date_from, "--from"), _date(args.date_to, "--to"), newest_first=True
    )
    records = list(itertools.islice(rows_iter, args.limit))
    if args.json:
        print(dumps(records))
        return 0
    if not records:
        print(f"no transactions for account {args.account_id} in that range")
        return 0
    rows = []
    for record in records:
        data = record.get("data") or {}
        rows.append(
            [
                str(data.get("date") or "")[:10],
                money(data.get("amount"), data.get("currencyCode")),
                data.get("type"),
                data.get("status"),
                truncate(data.get("description"), 40),
                truncate(data.get("category"), 24),
                record.get("transactionId"),
            ]
        )
    print(table(["DATE", "AMOUNT", "TYPE", "STATUS", "DESCRIPTION", "CATEGORY", "ID"], rows))
    return 0


# -- products ---------------------------------------------------------------------------------------


def _day(value: Any) -> str:
    return str(value or "")[:10]


def _print_records(
    args: argparse.Namespace, records: list[JSON], empty: str, headers: list[str], rows: Callable[[JSON], list[Any]]
) -> int:
    """--json: the records as stored; else a table of `rows(record)` (or `empty` when there is none)."""
    if args.json:
        print(dumps(records))
    elif not records:
        print(empty)
    else:
        print(table(headers, [rows(record) for record in records]))
    return 0


def cmd_investments(args: argparse.Namespace) -> int:
    records = _store(target_of(args)).under(item_key(args.item_id)["pk"], "INVESTMENT#")

    def row(record: JSON) -> list[Any]:
        data = record.get("data") or {}
        return [
            record.get("investmentId"),
            data.get("type"),
            data.get("subtype") or "",
            truncate(data.get("name"), 40),
            mask_digits(data.get("number")),  # not `owner`: the holder's name
            money(data.get("balance"), data.get("currencyCode")),
            data.get("status") or "",
            _day(data.get("dueDate")),
        ]

    headers = ["INVESTMENT", "TYPE", "SUBTYPE", "NAME", "NUMBER", "BALANCE", "STATUS", "DUE"]
    return _print_records(args, records, f"no investments for item {args.item_id}", headers, row)


def cmd_loans(args: argparse.Namespace) -> int:
    records = _store(target_of(args)).under(item_key(args.item_id)["pk"], "LOAN#")

    def row(record: JSON) -> list[Any]:
        data = record.get("data") or {}
        installments = data.get("installments") or {}
        paid, total = installments.get("paidInstallments"), installments.get("totalNumberOfInstallments")
        return [
            record.get("loanId"),
            data.get("type"),
            truncate(data.get("productName"), 32),
            mask_digits(data.get("contractNumber")),
            money(data.get("contractAmount"), data.get("currencyCode")),
            money((data.get("payments") or {}).get("contractOutstandingBalance"), data.get("currencyCode")),
            f"{paid}/{total}" if total is not None else "",
            _day(data.get("dueDate")),
        ]

    headers = ["LOAN", "TYPE", "PRODUCT", "CONTRACT", "AMOUNT", "OUTSTANDING", "PAID", "DUE"]
    return _print_records(args, records, f"no loans for item {args.item_id}", headers, row)


def cmd_bills(args: argparse.Namespace) -> int:
    rows = _store(target_of(args)).under(f"BILLS#{args.account_id}", "BILL#")
    # Keyed by bill id (Pluggy may move a due date): ordered here, soonest due first.
    records = sorted(rows, key=lambda r: (str(r.get("dueDate") or ""), str(r.get("billId"))))

    def row(record: JSON) -> list[Any]:
        data = record.get("data") or {}
        currency = data.get("totalAmountCurrencyCode")
        return [
            record.get("billId"),
            _day(data.get("dueDate")),
            _day(data.get("billClosingDate")),
            money(data.get("totalAmount"), currency),
            money(data.get("minimumPaymentAmount"), currency),
        ]

    headers = ["BILL", "DUE", "CLOSING", "TOTAL", "MINIMUM"]
    return _print_records(args, records, f"no bills for account {args.account_id}", headers, row)


def consent_state(record: Mapping[str, Any], now: str) -> str:
    if record.get("revokedAt"):
        return "revoked"
    expires = record.get("expiresAt")
    return "expired" if expires and str(expires) < now else "active"


def cmd_consents(args: argparse.Namespace) -> int:
    if (args.item_id is None) == (args.expiring_within is None):
        raise CliError("give an ITEM_ID or --expiring-within DAYS (not both)")
    store, now = _store(target_of(args)), time.time()
    if args.item_id is not None:
        records = store.under(item_key(args.item_id)["pk"], "CONSENT#")
        stamp = iso_now(now)

        def row(record: JSON) -> list[Any]:
            data = record.get("data") or {}
            state = consent_state(record, stamp)
            return [
                record.get("consentId"),
                state,
                data.get("createdAt"),
                record.get("expiresAt"),
                record.get("revokedAt"),
            ]

        headers = ["CONSENT", "STATE", "CREATED", "EXPIRES", "REVOKED"]
        return _print_records(args, records, f"no consents for item {args.item_id}", headers, row)
    if args.expiring_within < 1:
        raise CliError("--expiring-within must be at least 1 (days)")
    # What ConsentsExpiringSoonAlarm counts, with the item's clientUserId: whom the app asks to renew.
    found = consents_expiring(store, iso_now(now), iso_now(now + args.expiring_within * 86_400))
    users = {
        item_id: (store.get(item_key(item_id), consistent=False) or {}).get("clientUserId") for _, item_id in found
    }
    listed = [{"itemId": item_id, "expiresAt": expires, "clientUserId": users[item_id]} for expires, item_id in found]
    if args.json:
        print(dumps(listed))
    elif not listed:
        print(f"no active consent expires within {args.expiring_within} days")
    else:
        rows = [[c["expiresAt"], c["itemId"], c["clientUserId"] or ""] for c in listed]
        print(table(["EXPIRES", "ITEM", "USER"], rows))
    return 0


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0


def masked_identity(record: Mapping[str, Any]) -> dict[str, Any]:
    """What an operator may see of an identity: initials, the document's last 4 digits (as the accounts table
    shows tax numbers, so the two masks together tell no more), and how many contacts it has; never the
    name, document, birth date, addresses, phones, e-mails, relations or financial relationships."""
    data = record.get("data") or {}
    name = data.get("fullName") or data.get("companyName")
    return {
        "itemId": record.get("itemId"),
        "identityId": record.get("identityId") or "",
        "documentType": data.get("documentType") or "",
        "document": mask_digits(data.get("document") or data.get("taxNumber")),
        "name": mask_name(name),
        "phoneNumbers": _count(data.get("phoneNumbers")),
        "emails": _count(data.get("emails")),
        "addresses": _count(data.get("addresses")),
        "relations": _count(data.get("relations")),
        "financialRelationships": bool(data.get("financialRelationships")),
        "updatedAt": data.get("updatedAt") or "",
    }


def cmd_identity(args: argparse.Namespace) -> int:
    record = _store(target_of(args)).get(identity_key(args.item_id), consistent=False)
    if record is None:
        print("null" if args.json else f"no identity for item {args.item_id}")
        return 0
    shown = masked_identity(record)
    if args.json:
        print(dumps(shown))
    else:
        print(table(["FIELD", "VALUE"], [[key, value] for key, value in shown.items()]))
    return 0


def add_parser(commands: Any) -> None:
    records = commands.add_parser(
        "records",
        help="read the mirrored items, accounts, transactions and products (RecordsTable)",
        description="Read the copy of Pluggy's data the pipeline keeps in RecordsTable.",
    )
    sub = records.add_subparsers(
        dest="records_command",
        required=True,
        metavar="{items,accounts,transactions,investments,loans,bills,consents,identity}",
    )

    items = sub.add_parser("items", help="items, all of them or one user's (GSI byUser)")
    items.add_argument("--user", metavar="CLIENT_USER_ID", help="only the items of this clientUserId")
    items.add_argument("--json", action="store_true", help=JSON_HELP)
    add_target_options(items)
    items.set_defaults(func=cmd_items)

    accounts = sub.add_parser("accounts", help="the accounts of an item")
    accounts.add_argument("item_id", metavar="ITEM_ID")
    accounts.add_argument("--json", action="store_true", help=JSON_HELP)
    add_target_options(accounts)
    accounts.set_defaults(func=cmd_accounts)

    transactions = sub.add_parser("transactions", help="an account's transactions, newest first (LSI byDate)")
    transactions.add_argument("account_id", metavar="ACCOUNT_ID")
    transactions.add_argument("--from", dest="date_from", metavar="DATE", help="first date (inclusive)")
    transactions.add_argument("--to", dest="date_to", metavar="DATE", help="last date (inclusive)")
    transactions.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    transactions.add_argument("--json", action="store_true", help=JSON_HELP)
    add_target_options(transactions)
    transactions.set_defaults(func=cmd_transactions)

    for name, command, help_text in (
        ("investments", cmd_investments, "the investments of an item (numbers masked, holders not shown)"),
        ("loans", cmd_loans, "the loans of an item (contract numbers masked)"),
    ):
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument("item_id", metavar="ITEM_ID")
        parser.add_argument("--json", action="store_true", help=JSON_HELP)
        add_target_options(parser)
        parser.set_defaults(func=command)

    bills = sub.add_parser("bills", help="a credit card's bills, by due date")
    bills.add_argument("account_id", metavar="ACCOUNT_ID")
    bills.add_argument("--json", action="store_true", help=JSON_HELP)
    add_target_options(bills)
    bills.set_defaults(func=cmd_bills)

    consents = sub.add_parser(
        "consents",
        help="an item's Open Finance consents, or every active one expiring soon (GSI byConsentExpiry)",
        description="An item's consents (expiresAt, revokedAt), or with --expiring-within the active consents "
        "that expire within DAYS, with their item and clientUserId: what ConsentsExpiringSoonAlarm counts.",
    )
    consents.add_argument("item_id", metavar="ITEM_ID", nargs="?")
    consents.add_argument("--expiring-within", type=int, metavar="DAYS", help="every item's, expiring within DAYS")
    consents.add_argument("--json", action="store_true", help="print as JSON")
    add_target_options(consents)
    consents.set_defaults(func=cmd_consents)

    identity = sub.add_parser(
        "identity",
        help="an item's identity, masked: personal data (docs/security.md)",
        description="An item's identity, masked: initials, the document's last 4 digits and how many phones, "
        "e-mails and addresses it has. The name, document, birth date and contacts are never printed.",
    )
    identity.add_argument("item_id", metavar="ITEM_ID")
    identity.add_argument("--json", action="store_true", help="print the masked view as JSON (never the record)")
    add_target_options(identity)
    identity.set_defaults(func=cmd_identity)
