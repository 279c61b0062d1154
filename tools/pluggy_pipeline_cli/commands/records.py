"""`records items|accounts|transactions`: read the mirror in RecordsTable (RecordStore's key design)."""

from __future__ import annotations

import argparse
import itertools
import re
from typing import Any

from pluggy_pipeline.records import JSON, RecordStore, from_attributes

from pluggy_pipeline_cli.commands._common import (
    add_target_options,
    dumps,
    mask_digits,
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


def add_parser(commands: Any) -> None:
    records = commands.add_parser(
        "records",
        help="read the mirrored items, accounts and transactions (RecordsTable)",
        description="Read the copy of Pluggy's data the pipeline keeps in RecordsTable.",
    )
    sub = records.add_subparsers(dest="records_command", required=True, metavar="{items,accounts,transactions}")

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
