"""RecordsTable: the copy of Pluggy's data, one table, keys designed for the reads users need.

  item            pk=ITEM#<itemId>            sk=ITEM
  account         pk=ITEM#<itemId>            sk=ACCOUNT#<accountId>     (accounts of an item: one Query)
  account ref     pk=ACCOUNTREF#<accountId>   sk=ACCOUNT                 (an account by its id alone: its item)
  transaction     pk=ACCOUNT#<accountId>      sk=TX#<transactionId>      (by id: one GetItem)
                  LSI byDate: txDate=<date>#<id>                          (by date range, newest first)
                  GSI byTransactionId: transactionId                      (by id when the account is unknown)
  investment      pk=ITEM#<itemId>            sk=INVESTMENT#<investmentId>  (with loans, identity and consents:
  loan            pk=ITEM#<itemId>            sk=LOAN#<loanId>               everything of an item, one Query)
  identity        pk=ITEM#<itemId>            sk=IDENTITY                    (personal data: docs/security.md)
  consent         pk=ITEM#<itemId>            sk=CONSENT#<consentId>
                  GSI byConsentExpiry: consentPk=CONSENT, consentSk=<expiresAt>#<itemId>  (active consents only)
  investment tx   pk=INVESTMENT#<investmentId> sk=ITX#<id>, txDate=<date>#<id> (byDate: by date range)
  bill            pk=BILLS#<accountId>        sk=BILL#<billId>, txDate=<dueDate>#<billId> (byDate: by due date)
  connector       pk=CONNECTOR#<id>           sk=STATUS
  payment         pk=PAYMENT_INTENT#<id> | SCHEDULED_PAYMENT#<id> | PAYMENT_REQUEST#<id>, sk=STATUS
  GSI byUser      userPk=USER#<clientUserId>, userSk=ITEM#<itemId>        (items of a user)
  GSI bySyncDue   syncPk=ITEM, syncSk=<syncedAt>                           (reconciliation: stale items first)

Every record keeps Pluggy's object unchanged in `data` (numbers as Decimal). Product records (investments and
their transactions, bills, loans, identity, consents) also keep `digest`, a hash of `data`: a sync writes only
the records whose digest changed and deletes those Pluggy no longer lists (products.py). Item, account, connector and
payment writes are conditional on a version (Pluggy's updatedAt, or the event's receivedAt for records
that are never re-fetched), so a late or replayed event can never overwrite newer data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from pluggy_pipeline.aws import translate
from pluggy_pipeline.errors import TransientError

BATCH_SIZE = 25  # BatchWriteItem's limit
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

JSON = dict[str, Any]


def to_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in record.items() if value is not None}


def from_attributes(item: Mapping[str, Any]) -> JSON:
    return {key: _deserializer.deserialize(value) for key, value in item.items()}


def item_key(item_id: str) -> dict[str, str]:
    return {"pk": f"ITEM#{item_id}", "sk": "ITEM"}


def account_key(item_id: str, account_id: str) -> dict[str, str]:
    return {"pk": f"ITEM#{item_id}", "sk": f"ACCOUNT#{account_id}"}


def transaction_key(account_id: str, transaction_id: str) -> dict[str, str]:
    return {"pk": f"ACCOUNT#{account_id}", "sk": f"TX#{transaction_id}"}


def account_ref_key(account_id: str) -> dict[str, str]:
    """Where an account is found by its id alone (its record lives under its item)."""
    return {"pk": f"ACCOUNTREF#{account_id}", "sk": "ACCOUNT"}


def investment_key(item_id: str, investment_id: str) -> dict[str, str]:
    return {"pk": f"ITEM#{item_id}", "sk": f"INVESTMENT#{investment_id}"}


def loan_key(item_id: str, loan_id: str) -> dict[str, str]:
    return {"pk": f"ITEM#{item_id}", "sk": f"LOAN#{loan_id}"}


def identity_key(item_id: str) -> dict[str, str]:
    return {"pk": f"ITEM#{item_id}", "sk": "IDENTITY"}


def consent_key(item_id: str, consent_id: str) -> dict[str, str]:
    return {"pk": f"ITEM#{item_id}", "sk": f"CONSENT#{consent_id}"}


def investment_transaction_key(investment_id: str, transaction_id: str) -> dict[str, str]:
    return {"pk": f"INVESTMENT#{investment_id}", "sk": f"ITX#{transaction_id}"}


def bill_key(account_id: str, bill_id: str) -> dict[str, str]:
    """A card's bill. Not keyed by due date, which Pluggy may move: byDate (txDate) orders a card's bills by it."""
    return {"pk": f"BILLS#{account_id}", "sk": f"BILL#{bill_id}"}


# The byDate LSI's key (table keys + the index's sort key): where a newest-first page of an account stops.
BY_DATE_KEY = ("pk", "sk", "txDate")


def by_date_position(record: Mapping[str, Any]) -> dict[str, str]:
    """A transaction record's place in byDate: what DynamoDB's LastEvaluatedKey would be after it."""
    return {name: str(record[name]) for name in BY_DATE_KEY}


def by_date_bounds(date_from: str | None, date_to: str | None) -> tuple[str | None, str | None]:
    """txDate bounds (inclusive) of a date range of ISO dates or date-times; None: that side is open."""
    # txDate is "<Pluggy's date>#<id>": "\uffff" sorts after every id, so the last day is included whole.
    return date_from or None, (date_to + "\uffff") if date_to else None


def by_date_query(pk: str, date_from: str | None, date_to: str | None, *, newest_first: bool) -> dict[str, Any]:
    """The byDate Query of a partition's rows (an account's or an investment's transactions, a card's bills) in a
    date range; an open side is not constrained."""
    low, high = by_date_bounds(date_from, date_to)
    condition = {
        (False, False): "",
        (True, False): " AND txDate >= :low",
        (False, True): " AND txDate <= :high",
        (True, True): " AND txDate BETWEEN :low AND :high",
    }[(low is not None, high is not None)]
    values = {":pk": {"S": pk}}
    values.update({name: {"S": v} for name, v in ((":low", low), (":high", high)) if v is not None})
    return {
        "IndexName": "byDate",
        "KeyConditionExpression": "pk = :pk" + condition,
        "ExpressionAttributeValues": values,
        "ScanIndexForward": not newest_first,
    }


def _typed_key(key: Mapping[str, str]) -> dict[str, Any]:
    return {name: {"S": value} for name, value in key.items()}


def _plain_key(key: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(value["S"]) for name, value in key.items()}


@dataclass(frozen=True, slots=True)
class WriteStats:
    written: int = 0
    batches: int = 0
    retries: int = 0


class RecordStore:
    def __init__(
        self,
        client_factory: Callable[[], Any],
        table_name: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_unprocessed_retries: int = 8,
    ) -> None:
        self._client_factory = client_factory
        self._table = table_name
        self._sleep = sleep
        self._max_retries = max_unprocessed_retries
        self.calls: dict[str, int] = {}

    @property
    def table_name(self) -> str:
        return self._table

    def _call(self, operation: str, **kwargs: Any) -> Any:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        try:
            return getattr(self._client_factory(), operation)(TableName=self._table, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise
            raise translate(exc, operation) from None
        except Exception as exc:
            raise translate(exc, operation) from None

    # -- versioned single-record writes -------------------------------------------------------------

    def put_versioned(self, record: Mapping[str, Any], *, version_attribute: str = "updatedAt") -> bool:
        """Write unless the stored record has a newer version; False when the write was stale."""
        version = record.get(version_attribute)
        try:
            self._call(
                "put_item",
                Item=to_attributes(record),
                ConditionExpression="attribute_not_exists(pk) OR attribute_not_exists(#v) OR #v <= :v",
                ExpressionAttributeNames={"#v": version_attribute},
                ExpressionAttributeValues={":v": _serializer.serialize(version or "")},
            )
        except ClientError:
            return False
        return True

    def put(self, record: Mapping[str, Any]) -> None:
        """An unconditional write (records whose content never changes, such as an account's ref)."""
        self._call("put_item", Item=to_attributes(record))

    def get(self, key: Mapping[str, str], *, consistent: bool = True) -> JSON | None:
        item = self._call("get_item", Key=_typed_key(key), ConsistentRead=consistent).get("Item")
        return from_attributes(item) if item else None

    def update(self, key: Mapping[str, str], values: Mapping[str, Any]) -> None:
        names = {f"#a{i}": name for i, name in enumerate(values)}
        attrs = {f":v{i}": _serializer.serialize(value) for i, value in enumerate(values.values())}
        self._call(
            "update_item",
            Key=_typed_key(key),
            UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(values))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=attrs,
        )

    def delete(self, key: Mapping[str, str]) -> None:
        self._call("delete_item", Key=_typed_key(key))

    # -- batched writes -----------------------------------------------------------------------------

    def batch_put(self, records: Iterable[Mapping[str, Any]]) -> WriteStats:
        return self._batch({"PutRequest": {"Item": to_attributes(r)}} for r in records)

    def batch_delete(self, keys: Iterable[Mapping[str, str]]) -> WriteStats:
        return self._batch({"DeleteRequest": {"Key": _typed_key(k)}} for k in keys)

    def _batch(self, requests: Iterable[dict[str, Any]]) -> WriteStats:
        written = batches = retries = 0
        chunk: list[dict[str, Any]] = []
        for request in requests:
            chunk.append(request)
            if len(chunk) == BATCH_SIZE:
                retries += self._write_chunk(chunk)
                written, batches, chunk = written + BATCH_SIZE, batches + 1, []
        if chunk:
            retries += self._write_chunk(chunk)
            written, batches = written + len(chunk), batches + 1
        return WriteStats(written, batches, retries)

    def _write_chunk(self, chunk: list[dict[str, Any]]) -> int:
        """One BatchWriteItem; UnprocessedItems (throttling) are retried with backoff until written."""
        pending = chunk
        for attempt in range(self._max_retries + 1):
            self.calls["batch_write_item"] = self.calls.get("batch_write_item", 0) + 1
            try:
                response = self._client_factory().batch_write_item(RequestItems={self._table: pending})
            except Exception as exc:
                raise translate(exc, "batch_write_item") from None
            pending = response.get("UnprocessedItems", {}).get(self._table, [])
            if not pending:
                return attempt
            if attempt < self._max_retries:  # no point waiting after the last attempt
                self._sleep(min(0.05 * 2**attempt, 2.0))
        raise TransientError(f"batch_write_item left {len(pending)} items unprocessed after retries")

    def changed_transactions(self, account_id: str, rows: list[JSON]) -> list[JSON]:
        """The rows (Pluggy's) not stored yet or stored with another updatedAt: one BatchGetItem per 100."""
        stored: dict[str, str] = {}
        keys = [_typed_key(transaction_key(account_id, str(tx["id"]))) for tx in rows]
        unique = list({k["sk"]["S"]: k for k in keys}.values())
        for start in range(0, len(unique), 100):
            pending: list[dict[str, Any]] = unique[start : start + 100]
            for attempt in range(self._max_retries + 1):
                self.calls["batch_get_item"] = self.calls.get("batch_get_item", 0) + 1
                request = {"Keys": pending, "ProjectionExpression": "sk, updatedAt", "ConsistentRead": True}
                try:
                    response = self._client_factory().batch_get_item(RequestItems={self._table: request})
                except Exception as exc:
                    raise translate(exc, "batch_get_item") from None
                for item in response.get("Responses", {}).get(self._table, []):
                    stored[item["sk"]["S"]] = item.get("updatedAt", {}).get("S", "")
                pending = response.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
                if not pending:
                    break
                if attempt < self._max_retries:
                    self._sleep(min(0.05 * 2**attempt, 2.0))
            else:
                raise TransientError(f"batch_get_item left {len(pending)} keys unprocessed after retries")
        return [tx for tx in rows if stored.get(f"TX#{tx['id']}") != (tx.get("updatedAt") or "")]

    # -- queries ------------------------------------------------------------------------------------

    def query(self, **kwargs: Any) -> Iterator[JSON]:
        """All pages of a Query."""
        start: dict[str, Any] | None = None
        while True:
            page = self._call("query", **kwargs, **({"ExclusiveStartKey": start} if start else {}))
            for item in page.get("Items", []):
                yield from_attributes(item)
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def query_page(
        self, limit: int, start: Mapping[str, str] | None = None, *, max_calls: int = 8, **kwargs: Any
    ) -> tuple[list[JSON], dict[str, str] | None]:
        """Up to `limit` items of a Query from just after `start`, and the key to go on from (None: no more).

        DynamoDB ends a response at `Limit` items or at 1 MB, so one page may take a few calls; at most
        `max_calls` (then the page is short, never gapped: the key returned is where the next one starts).
        Keys are plain string maps (every key attribute of RecordsTable is a string).
        """
        items: list[JSON] = []
        key = _typed_key(start) if start else None
        for _ in range(max_calls):
            start_at = {"ExclusiveStartKey": key} if key else {}
            page = self._call("query", **kwargs, **start_at, Limit=limit - len(items))
            items += [from_attributes(item) for item in page.get("Items", [])]
            key = page.get("LastEvaluatedKey")
            if not key or len(items) >= limit:
                break
        return items, _plain_key(key) if key else None

    def transactions_page(
        self,
        account_id: str,
        limit: int,
        *,
        after: Mapping[str, str] | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
    ) -> tuple[list[JSON], dict[str, str] | None]:
        """One page of an account's transactions, newest first (byDate), from just after a byDate position."""
        return self.query_page(limit, after, **self._by_date(account_id, date_from, date_to, newest_first=True))

    def digests(self, pk: str, prefix: str) -> dict[str, str]:
        """sk -> digest of the records of a partition whose sk starts with `prefix` (a product's stored copy)."""
        return {
            str(row["sk"]): str(row.get("digest", ""))
            for row in self.query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                ExpressionAttributeValues={":pk": {"S": pk}, ":prefix": {"S": prefix}},
                ProjectionExpression="sk, digest",
                ConsistentRead=True,
            )
        }

    def under(self, pk: str, prefix: str = "") -> list[JSON]:
        """Every record of a partition whose sk starts with `prefix`, in sk order."""
        return list(
            self.query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                ExpressionAttributeValues={":pk": {"S": pk}, ":prefix": {"S": prefix}},
                ConsistentRead=True,
            )
        )

    def has_account(self, account_id: str) -> bool:
        """Whether the mirror knows the account (its ref, written before the account's first record)."""
        return self.get(account_ref_key(account_id), consistent=False) is not None

    def has_transactions(self, account_id: str) -> bool:
        """Whether the mirror holds any transaction of the account (one key-only read of one row)."""
        page = self._call(
            "query",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": transaction_key(account_id, "")["pk"]}},
            ProjectionExpression="pk",
            Limit=1,
        )
        return bool(page.get("Items"))

    def accounts_of_item(self, item_id: str) -> list[JSON]:
        return list(
            self.query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                ExpressionAttributeValues={":pk": {"S": f"ITEM#{item_id}"}, ":prefix": {"S": "ACCOUNT#"}},
                ConsistentRead=True,
            )
        )

    def transaction_keys_of_account(self, account_id: str) -> Iterator[dict[str, str]]:
        for row in self.query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": f"ACCOUNT#{account_id}"}, ":prefix": {"S": "TX#"}},
            ProjectionExpression="pk, sk",
            ConsistentRead=True,
        ):
            yield {"pk": row["pk"], "sk": row["sk"]}

    def transactions_by_date(
        self, account_id: str, date_from: str | None = None, date_to: str | None = None, *, newest_first: bool = True
    ) -> Iterator[JSON]:
        """Transactions of an account in a date range (ISO dates or date-times, inclusive)."""
        return self.query(**self._by_date(account_id, date_from, date_to, newest_first=newest_first))

    @staticmethod
    def _by_date(account_id: str, date_from: str | None, date_to: str | None, *, newest_first: bool) -> JSON:
        """The byDate Query of an account's transactions in a date range; an open side is not constrained."""
        pk = transaction_key(account_id, "")["pk"]
        return by_date_query(pk, date_from, date_to, newest_first=newest_first)

    def find_transaction(self, transaction_id: str) -> JSON | None:
        rows = list(
            self.query(
                IndexName="byTransactionId",
                KeyConditionExpression="transactionId = :id",
                ExpressionAttributeValues={":id": {"S": transaction_id}},
            )
        )
        return self.get({"pk": rows[0]["pk"], "sk": rows[0]["sk"]}) if rows else None

    def items_of_user(self, client_user_id: str) -> list[JSON]:
        return list(
            self.query(
                IndexName="byUser",
                KeyConditionExpression="userPk = :u",
                ExpressionAttributeValues={":u": {"S": f"USER#{client_user_id}"}},
            )
        )

    def items_synced_before(self, cutoff_iso: str, limit: int = 500) -> list[str]:
        """Item ids whose last sync is older than the cutoff (reconciliation), oldest first."""
        ids = []
        for row in self.query(
            IndexName="bySyncDue",
            KeyConditionExpression="syncPk = :p AND syncSk < :c",
            ExpressionAttributeValues={":p": {"S": "ITEM"}, ":c": {"S": cutoff_iso}},
        ):
            ids.append(str(row["pk"]).removeprefix("ITEM#"))
            if len(ids) >= limit:
                break
        return ids
