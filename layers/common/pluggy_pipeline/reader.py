"""Read the mirror from an app in the same AWS account: what the read API answers, as plain JSON-able dicts.

    reader = MirrorReader.for_table("<the stack's RecordsTableName output>")   # boto3's default credentials
    reader.items_of_user("user-42")                 # [{"id", "clientUserId", "status", ..., "data": {...}}]
    reader.item_with_accounts(item_id)              # {"item": {...}, "accounts": [{...}]}; RecordNotFound
    page = reader.transactions(account_id, date_from="2026-11-01", limit=100)
    page = reader.transactions(account_id, date_from="2026-11-01", cursor=page["nextCursor"])
    reader.investments(item_id), reader.loans(item_id), reader.consents(item_id)   # [...]; RecordNotFound
    reader.identity(item_id)                        # {...}; RecordNotFound (personal data: never log it)
    page = reader.investment_transactions(investment_id, date_from="2026-01-01", limit=100)   # same pages
    reader.bills(account_id, date_from="2026-01-01")                # newest due date first; RecordNotFound

Every record is our metadata plus Pluggy's object, unchanged, in `data`, except that **every number in it is a
string with its exact decimal digits** ("-43.34", "1655.35", "0"): DynamoDB keeps numbers as decimals, and a
string is the one JSON form every client reads without going through a float. Parse them with `Decimal`.

The cursor is opaque: base64url of the byDate position the next page starts after, the query's from/to and a
checksum. A cursor edited, cut, or issued for another account (or investment) or other from/to is refused
(InvalidRequest on the `cursor` field), never answered with a wrong page. The checksum is not a signature:
whoever may call the API may read every row of the account anyway; it only makes an altered cursor fail loudly.

To use it elsewhere, either install this package (`pip install` the repository: `pluggy_pipeline`), or copy
`pluggy_pipeline/{__init__,errors,aws,records,reader}.py`: those five need only boto3
(tests/unit/test_reader.py proves it). The caller needs dynamodb:GetItem and dynamodb:Query on RecordsTable
and its indexes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import boto3

from pluggy_pipeline.errors import PipelineError
from pluggy_pipeline.records import (
    JSON,
    RecordStore,
    by_date_bounds,
    by_date_position,
    by_date_query,
    identity_key,
    investment_transaction_key,
    item_key,
    transaction_key,
)

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_ID_CHARS = 512  # Pluggy's ids are UUIDs; clientUserId is the app's own (DynamoDB keys allow 2 KB)
MAX_CURSOR_CHARS = 4096
_CURSOR_VERSION = 1
_CHECKSUM_BYTES = 8
_CHECKSUM_LABEL = b"pluggy-pipeline/read-api/cursor/v1\x00"
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # [0-9], not \d: \d also matches other scripts' digits
_INTEGER = re.compile(r"[0-9]{1,6}")
_BILLS, _BILL = "BILLS#", "BILL#"  # a card's bills: pk=BILLS#<accountId>, sk=BILL#<billId>, byDate (records.py)
# A range's open side, so that a ranged query holds only bills with an ISO due date ("\uffff": past any id).


class ReadError(PipelineError):
    """Base of the reader's answers that are the caller's to fix."""


class InvalidRequest(ReadError):
    """Parameters the reader refuses; `fields` says what is wrong with each one."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in self.fields.items()))


class RecordNotFound(ReadError):
    """The mirror has no such item or account."""

    def __init__(self, kind: str, record_id: str, message: str) -> None:
        self.kind = kind
        self.record_id = record_id
        super().__init__(message)


# -- what a record looks like to the app ---------------------------------------------------------------


def plain(value: Any) -> Any:
    """JSON-able: every number (DynamoDB's Decimal) as a string of its exact digits, never through float."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")  # positional: Decimal("1E+3") is "1000", not "1E+3"
    if isinstance(value, set | frozenset):  # DynamoDB sets (the pipeline writes none): sorted for stable output
        return sorted(plain(v) for v in value)
    return value


def item_view(record: Mapping[str, Any]) -> JSON:
    return {
        "id": record["itemId"],
        "clientUserId": record.get("clientUserId"),
        "status": record.get("status"),  # Pluggy's item status, or DELETED once Pluggy no longer has the item
        "deleted": bool(record.get("deleted")),
        "deletedAt": record.get("deletedAt"),
        "syncedAt": record.get("syncedAt"),  # when the pipeline last wrote what Pluggy had
        "lastFullSyncAt": record.get("lastFullSyncAt"),
        "data": plain(record.get("data")),
    }


def account_view(record: Mapping[str, Any]) -> JSON:
    return {"id": record["accountId"], "itemId": record.get("itemId"), "data": plain(record.get("data"))}


def transaction_view(record: Mapping[str, Any]) -> JSON:
    return {
        "id": record["transactionId"],
        "accountId": record["accountId"],
        "itemId": record.get("itemId"),
        "data": plain(record.get("data")),
    }


def investment_view(record: Mapping[str, Any]) -> JSON:
    return {"id": record["investmentId"], "itemId": record.get("itemId"), "data": plain(record.get("data"))}


def investment_transaction_view(record: Mapping[str, Any]) -> JSON:
    return {
        "id": record["investmentTransactionId"],
        "investmentId": record["investmentId"],
        "itemId": record.get("itemId"),
        "data": plain(record.get("data")),
    }


def bill_view(record: Mapping[str, Any]) -> JSON:
    return {
        "id": record["billId"],
        "accountId": record["accountId"],
        "itemId": record.get("itemId"),
        "data": plain(record.get("data")),
    }


def loan_view(record: Mapping[str, Any]) -> JSON:
    return {"id": record["loanId"], "itemId": record.get("itemId"), "data": plain(record.get("data"))}


def identity_view(record: Mapping[str, Any]) -> JSON:
    # Pluggy's identity id may be missing: the record then keeps "" (products.identity_record); say null.
    return {"id": record.get("identityId") or None, "itemId": record.get("itemId"), "data": plain(record.get("data"))}


def consent_view(record: Mapping[str, Any]) -> JSON:
    return {
        "id": record["consentId"],
        "itemId": record.get("itemId"),
        "expiresAt": record.get("expiresAt"),
        "revokedAt": record.get("revokedAt"),  # set once the consent is revoked: the item no longer syncs
        "data": plain(record.get("data")),
    }


# -- parameters ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageQuery:
    date_from: str | None
    date_to: str | None
    limit: int
    cursor: str | None


def _problem_with_id(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_ID_CHARS:
        return f"must be at most {MAX_ID_CHARS} characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text"
    return None


def check_id(name: str, value: Any) -> str:
    problem = _problem_with_id(value)
    if problem:
        raise InvalidRequest({name: problem})
    return str(value)


def _date(name: str, value: Any, fields: dict[str, str]) -> str | None:
    if value is None:
        return None
    if type(value) is date:  # not isinstance: a datetime is a date too, and has no single day
        return value.isoformat()
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            fields[name] = f"{value!r} is not a calendar date"
            return None
    fields[name] = "must be an ISO date, YYYY-MM-DD"
    return None


def _limit(value: Any, fields: dict[str, str]) -> int:
    problem = f"must be an integer from 1 to {MAX_LIMIT}"
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value):
        number = int(value)
    if number is None or not 1 <= number <= MAX_LIMIT:
        fields["limit"] = problem
        return DEFAULT_LIMIT
    return number


def _date_range(date_from: Any, date_to: Any, fields: dict[str, str]) -> tuple[str | None, str | None]:
    low = _date("from", date_from, fields)
    high = _date("to", date_to, fields)
    if low and high and low > high:
        fields["from"] = f"must not be after to ({low} > {high})"
    return low, high


def date_range(*, date_from: Any = None, date_to: Any = None) -> tuple[str | None, str | None]:
    """Validate a from/to pair (ISO dates, inclusive; None: that side is open); both problems at once."""
    fields: dict[str, str] = {}
    low, high = _date_range(date_from, date_to, fields)
    if fields:
        raise InvalidRequest(fields)
    return low, high


def page_query(
    *, date_from: Any = None, date_to: Any = None, limit: Any = DEFAULT_LIMIT, cursor: Any = None
) -> PageQuery:
    """Validate a page request (strings as the API receives them, or Python values); every problem at once."""
    fields: dict[str, str] = {}
    low, high = _date_range(date_from, date_to, fields)
    size = _limit(limit, fields)
    if cursor is not None and (not isinstance(cursor, str) or not cursor):
        fields["cursor"] = "must be the nextCursor of a previous page (omit it for the first page)"
    elif cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
        fields["cursor"] = "is not a cursor this API issued"
    if fields:
        raise InvalidRequest(fields)
    return PageQuery(low, high, size, cursor)


# -- the cursor, and the byDate partitions it pages -----------------------------------------------------


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(_CHECKSUM_LABEL + payload).digest()[:_CHECKSUM_BYTES]


def encode_cursor(query: PageQuery, position: Mapping[str, str]) -> str:
    body = {"v": _CURSOR_VERSION, "k": dict(position), "q": [query.date_from, query.date_to]}
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return base64.urlsafe_b64encode(payload + _checksum(payload)).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Series:
    """A partition read newest first through byDate: an account's transactions, an investment's, a card's bills."""

    owner: str  # "account", "investment" or "bills": what a cursor of another partition was issued for
    pk: str
    sk_prefix: str  # the rows' own sort-key prefix: a position elsewhere in the partition is no cursor

    @classmethod
    def of_account(cls, account_id: str) -> Series:
        return cls("account", transaction_key(account_id, "")["pk"], "TX#")

    @classmethod
    def of_investment(cls, investment_id: str) -> Series:
        return cls("investment", investment_transaction_key(investment_id, "")["pk"], "ITX#")

    def by_date(self, date_from: str | None, date_to: str | None) -> JSON:
        """The byDate Query of this partition's rows in a date range, newest first; an open side is free."""
        return by_date_query(self.pk, date_from, date_to, newest_first=True)


def decode_cursor(token: str, account_id: str, query: PageQuery) -> dict[str, str]:
    """The byDate position a cursor continues after; InvalidRequest unless this API issued it for this query."""
    return decode_position(token, Series.of_account(account_id), query)


def decode_position(token: str, series: Series, query: PageQuery) -> dict[str, str]:
    """decode_cursor for any byDate partition: the position must be one of `series`'s rows."""

    def refuse(reason: str) -> InvalidRequest:
        return InvalidRequest({"cursor": reason})

    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if not token.isascii() or base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
            raise ValueError("not canonical base64url")
    except (binascii.Error, ValueError):
        raise refuse("is not a cursor this API issued") from None
    payload, checksum = raw[:-_CHECKSUM_BYTES], raw[-_CHECKSUM_BYTES:]
    if not payload or not hmac.compare_digest(checksum, _checksum(payload)):
        raise refuse("is not a cursor this API issued (altered or cut)")
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested deeper than the parser goes
        raise refuse("is not a cursor this API issued") from None
    position = body.get("k") if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or body.get("v") != _CURSOR_VERSION
        or not isinstance(position, dict)
        or set(position) != {"pk", "sk", "txDate"}
        or not all(isinstance(v, str) for v in position.values())
        or not isinstance(body.get("q"), list)
        or len(body["q"]) != 2
        or not all(v is None or isinstance(v, str) for v in body["q"])
    ):
        raise refuse("is not a cursor this API issued")
    if position["pk"] != series.pk:
        raise refuse(f"was issued for another {series.owner}")
    if body.get("q") != [query.date_from, query.date_to]:
        raise refuse("was issued for other from/to values: keep them for every page, or start again without a cursor")
    tx_id = position["sk"].removeprefix(series.sk_prefix)
    low, high = by_date_bounds(query.date_from, query.date_to)
    if (
        not position["sk"].startswith(series.sk_prefix)
        or not position["txDate"].endswith(f"#{tx_id}")
        or (low is not None and position["txDate"] < low)
        or (high is not None and position["txDate"] > high)
    ):
        raise refuse("is not a cursor this API issued")
    return {"pk": position["pk"], "sk": position["sk"], "txDate": position["txDate"]}


# -- the reader ----------------------------------------------------------------------------------------


class MirrorReader:
    """Reads RecordsTable through RecordStore's key design; answers plain dicts (see the module docstring)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    @classmethod
    def for_table(cls, table_name: str, client: Any = None) -> MirrorReader:
        """A reader over a table; `client` defaults to boto3.client("dynamodb") (the default credentials)."""
        dynamodb = client if client is not None else boto3.client("dynamodb")
        return cls(RecordStore(lambda: dynamodb, table_name))

    def items_of_user(self, client_user_id: str) -> list[JSON]:
        """The user's items (Pluggy's clientUserId), deleted ones left out; [] for a user the mirror has none of.

        The mirror keeps no list of users, only items carrying a clientUserId: an unknown user and a user with
        no item are the same answer. Ordered by item id.
        """
        user = check_id("clientUserId", client_user_id)
        return [item_view(r) for r in self.store.items_of_user(user) if not r.get("deleted")]

    def item_with_accounts(self, item_id: str) -> JSON:
        """{"item": ..., "accounts": [...]}; a deleted item comes back with deleted=true and no accounts."""
        item_id = check_id("itemId", item_id)
        record = self.store.get(item_key(item_id), consistent=False)
        if record is None:
            raise RecordNotFound("item", item_id, f"item {item_id} is not in the mirror")
        accounts = self.store.accounts_of_item(item_id)
        return {"item": item_view(record), "accounts": [account_view(a) for a in accounts]}

    def transactions(
        self,
        account_id: str,
        *,
        date_from: Any = None,
        date_to: Any = None,
        cursor: str | None = None,
        limit: Any = DEFAULT_LIMIT,
    ) -> JSON:
        """One page, newest first (Pluggy's `date`, then id): {"transactions": [...], "nextCursor": str | None}.

        from/to are ISO dates compared with the date part of Pluggy's `date` (UTC, as Pluggy gives it), both
        inclusive. nextCursor is None on the last page (known by reading one row more than the page, so the
        last page is not an empty one), a string on every other page.
        """
        account_id = check_id("accountId", account_id)
        query = page_query(date_from=date_from, date_to=date_to, limit=limit, cursor=cursor)
        after = decode_cursor(query.cursor, account_id, query) if query.cursor else None
        # One row more than the page: whether another page exists is known now, not from an empty next page.
        rows, more = self.store.transactions_page(
            account_id, query.limit + 1, after=after, date_from=query.date_from, date_to=query.date_to
        )
        rows, next_cursor = _page_end(rows, more, query)
        empty = not rows and after is None
        if empty and not self.store.has_transactions(account_id) and not self.store.has_account(account_id):
            raise RecordNotFound("account", account_id, f"account {account_id} is not in the mirror")
        return {"transactions": [transaction_view(r) for r in rows], "nextCursor": next_cursor}

    def investment_transactions(
        self,
        investment_id: str,
        *,
        date_from: Any = None,
        date_to: Any = None,
        cursor: str | None = None,
        limit: Any = DEFAULT_LIMIT,
    ) -> JSON:
        """One page of an investment's transactions, newest first: the same pages, cursor and from/to as
        `transactions` (Pluggy's `date` of each row), {"transactions": [...], "nextCursor": str | None}.

        Never RecordNotFound: an investment is stored under its item (ITEM#<itemId>), so its id alone cannot
        tell an unknown investment from one without transactions (its item did not ask for
        INVESTMENTS_TRANSACTIONS, or it has none); both are an empty page, like an unknown user's items.
        """
        investment_id = check_id("investmentId", investment_id)
        query = page_query(date_from=date_from, date_to=date_to, limit=limit, cursor=cursor)
        series = Series.of_investment(investment_id)
        after = decode_position(query.cursor, series, query) if query.cursor else None
        by_date = series.by_date(query.date_from, query.date_to)
        rows, more = self.store.query_page(query.limit + 1, after, **by_date)  # one row more: see transactions
        rows, next_cursor = _page_end(rows, more, query)
        return {"transactions": [investment_transaction_view(r) for r in rows], "nextCursor": next_cursor}

    def bills(self, account_id: str, *, date_from: Any = None, date_to: Any = None) -> list[JSON]:
        """A credit-card account's bills, newest due date first (then bill id), whole (a card has one a month).

        from/to are ISO dates compared with the date part of Pluggy's `dueDate`, both inclusive. An account
        the mirror knows without bills (not a card, or no bill yet) is []; one it does not know, RecordNotFound.
        """
        account_id = check_id("accountId", account_id)
        pk = f"{_BILLS}{account_id}"
        low, high = date_range(date_from=date_from, date_to=date_to)
        if low or high:  # a range holds dated bills only: an undated bill's txDate is "#<billId>"
            low, high = low or "0000-01-01", high or "9999-12-31"
        by_due_date = Series("bills", pk, _BILL).by_date(low, high)  # txDate = <dueDate>#<billId>, newest first
        rows = list(self.store.query(**by_due_date))
        if not rows and not self.store.has_account(account_id) and not self._any(pk, _BILL):
            raise RecordNotFound("account", account_id, f"account {account_id} is not in the mirror")
        return [bill_view(r) for r in rows]

    def investments(self, item_id: str) -> list[JSON]:
        """The item's investments (Pluggy's INVESTMENTS), in id order; [] for a known item with none."""
        return [investment_view(r) for r in self._of_item(item_id, "INVESTMENT#")]

    def loans(self, item_id: str) -> list[JSON]:
        """The item's loans (Pluggy's LOANS), in id order; [] for a known item with none."""
        return [loan_view(r) for r in self._of_item(item_id, "LOAN#")]

    def consents(self, item_id: str) -> list[JSON]:
        """The item's Open Finance consents, revoked and expired ones included (expiresAt, revokedAt)."""
        return [consent_view(r) for r in self._of_item(item_id, "CONSENT#")]

    def identity(self, item_id: str) -> JSON:
        """The item's identity (Pluggy's IDENTITY: name, CPF, addresses...). Personal data: never log it.

        RecordNotFound, kind "identity", for a known item without one (it did not ask for IDENTITY, or Pluggy
        had none); kind "item" for an item the mirror does not know.
        """
        item_id = check_id("itemId", item_id)
        record = self.store.get(identity_key(item_id), consistent=False)
        if record is not None:
            return identity_view(record)
        self._known_item(item_id)
        raise RecordNotFound("identity", item_id, f"item {item_id} has no identity in the mirror")

    # -- queries of the products' partitions (RecordStore's key design; see records.py) ---------------

    def _of_item(self, item_id: str, prefix: str) -> list[JSON]:
        """The item's records of one product, in sk order; RecordNotFound for an unknown item."""
        item_id = check_id("itemId", item_id)
        rows = list(self._query(item_key(item_id)["pk"], "begins_with(sk, :prefix)", {":prefix": prefix}))
        if not rows:  # the item's own record is read only when it has none: one Query for a list that has rows
            self._known_item(item_id)
        return rows

    def _known_item(self, item_id: str) -> None:
        if self.store.get(item_key(item_id), consistent=False) is None:
            raise RecordNotFound("item", item_id, f"item {item_id} is not in the mirror")

    def _query(
        self, pk: str, sk_condition: str, values: Mapping[str, str], *, newest_first: bool = False
    ) -> Iterator[JSON]:
        """Every record of a partition whose sk meets `sk_condition` (eventually consistent, like every read)."""
        return self.store.query(
            KeyConditionExpression=f"pk = :pk AND {sk_condition}",
            ExpressionAttributeValues={":pk": {"S": pk}, **{k: {"S": v} for k, v in values.items()}},
            ScanIndexForward=not newest_first,
        )

    def _any(self, pk: str, prefix: str) -> bool:
        """Whether a partition holds any record whose sk starts with `prefix` (one key-only read of one row)."""
        rows, _ = self.store.query_page(
            1,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": pk}, ":prefix": {"S": prefix}},
            ProjectionExpression="pk, sk",  # the key alone
            max_calls=1,
        )
        return bool(rows)


def _page_end(rows: list[JSON], more: dict[str, str] | None, query: PageQuery) -> tuple[list[JSON], str | None]:
    """The page's rows (`rows` read one past `query.limit`) and its nextCursor, None exactly on the last page."""
    next_position: dict[str, str] | None = None
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        next_position = by_date_position(rows[-1])
    elif more:  # the call budget ended before a full page (1 MB responses): go on from where DynamoDB stopped
        next_position = more
    return rows, encode_cursor(query, next_position) if next_position else None
