"""RecordsTable: the copy of Pluggy's data, one table, keys designed for the reads users need.

  item            pk=ITEM#<itemId>            sk=ITEM
  account         pk=ITEM#<itemId>            sk=ACCOUNT#<accountId>     (accounts of an item: one Query)
  transaction     pk=ACCOUNT#<accountId>      sk=TX#<transactionId>      (by id: one GetItem)
                  LSI byDate: txDate=<date>#<id>                          (by date range, newest first)
                  GSI byTransactionId: transactionId                      (by id when the account is unknown)
  connector       pk=CONNECTOR#<id>           sk=STATUS
  payment         pk=PAYMENT_INTENT#<id> | SCHEDULED_PAYMENT#<id> | PAYMENT_REQUEST#<id>, sk=STATUS
  GSI byUser      userPk=USER#<clientUserId>, userSk=ITEM#<itemId>        (items of a user)
  GSI bySyncDue   syncPk=ITEM, syncSk=<syncedAt>                           (reconciliation: stale items first)

Every record keeps Pluggy's object unchanged in `data` (numbers as Decimal). Item, account, connector and
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


def _typed_key(key: Mapping[str, str]) -> dict[str, Any]:
    return {name: {"S": value} for name, value in key.items()}


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
        low = date_from or "0000"
        high = (date_to or "9999") + "\uffff"  # include every id on the last day
        return self.query(
            IndexName="byDate",
            KeyConditionExpression="pk = :pk AND txDate BETWEEN :low AND :high",
            ExpressionAttributeValues={":pk": {"S": f"ACCOUNT#{account_id}"}, ":low": {"S": low}, ":high": {"S": high}},
            ScanIndexForward=not newest_first,
        )

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
