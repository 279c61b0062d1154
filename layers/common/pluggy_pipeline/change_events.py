"""Change events: what changed in RecordsTable, read from its stream, as events an app can act on.

The stream holds every committed write with its old and new image, so an event is derived only from a change
that happened, and a change cannot be lost between the write and the emit: the stream keeps it until the
publisher has put its event on the bus (docs/events/README.md). Detail-types and their JSON Schemas:

  Item Status Changed       an item's status, executionStatus or error code changed (or a new item)
  Item Deleted              an item became a tombstone (item/deleted verified with Pluggy)
  Transactions Changed      ids added / modified / removed per account, in the style of Plaid's /transactions/sync
  Payment Status Changed    a payment intent, scheduled payment or payment request changed status
  Connector Status Changed  a connector's health status changed
  Products Changed          per item, ids of bills, investments, investment transactions, loans and consents added
                            / modified / removed, and whether the identity was (never its fields)
  Consent Changed           an Open Finance consent created, renewed (expiresAt moved), revoked or removed

Every event has an `eventId` derived from the stream records it was built from, so an event re-emitted after a
retry carries the same id. A retry that regroups records (Lambda halves a failing batch) may repeat a change
under another id: every change is a set operation on ids and statuses, safe to apply twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pluggy_pipeline.records import from_attributes

SOURCE = "pluggy-pipeline"
SCHEMA_VERSION = "1"
ITEM_STATUS_CHANGED = "Item Status Changed"
ITEM_DELETED = "Item Deleted"
TRANSACTIONS_CHANGED = "Transactions Changed"
PAYMENT_STATUS_CHANGED = "Payment Status Changed"
CONNECTOR_STATUS_CHANGED = "Connector Status Changed"
PRODUCTS_CHANGED = "Products Changed"
CONSENT_CHANGED = "Consent Changed"
DETAIL_TYPES = (
    ITEM_STATUS_CHANGED,
    ITEM_DELETED,
    TRANSACTIONS_CHANGED,
    PAYMENT_STATUS_CHANGED,
    CONNECTOR_STATUS_CHANGED,
    PRODUCTS_CHANGED,
    CONSENT_CHANGED,
)
# EventBridge takes 256 KB per entry (detail, detail-type, source, resources); ids are chunked well under it.
MAX_DETAIL_BYTES = 200 * 1024
MAX_IDS_PER_EVENT = 2000
_PAYMENT_KINDS = frozenset({"payment_intent", "scheduled_payment", "payment_request"})

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Attention:
    """Whether an item needs its user, and why, in words an app can show or log."""

    needs_user_action: bool
    pending: bool
    reason: str


_LOGIN_REASON = (
    "Pluggy could not log in with the stored credentials ({code}); the user must reconnect in Connect's "
    "update mode (a connect token with this itemId)."
)
_CODE_ATTENTION: Mapping[str, Attention] = {
    "USER_AUTHORIZATION_PENDING": Attention(
        True,
        True,
        "Waiting for the account holder to approve the access in the bank's app (e.g. Caixa). Not a failure: "
        "once approved, Pluggy completes the connection by itself, usually within about 30 minutes, and an "
        "Item Status Changed to UPDATED follows.",
    ),
    "USER_AUTHORIZATION_NOT_GRANTED": Attention(
        True, False, "The account holder refused the access at the bank; the user must reconnect to try again."
    ),
    "ACCOUNT_NEEDS_ACTION": Attention(
        True,
        False,
        "The account holder must resolve something at the institution (accept terms, update a registration) "
        "before Pluggy can collect; then sync again.",
    ),
    "USER_INPUT_TIMEOUT": Attention(
        True, False, "The user did not answer the MFA challenge in time; the user must reconnect."
    ),
    "ACCOUNT_LOCKED": Attention(True, False, "The institution locked the account; the user must unlock it there."),
    "ACCOUNT_CREDENTIALS_RESET": Attention(
        True, False, "The institution asks for new credentials; the user must reconnect with them."
    ),
    "USER_NOT_SUPPORTED": Attention(
        True, False, "The institution does not support this kind of user or account through this connector."
    ),
}


def attention(
    status: str | None, execution_status: str | None, error_code: str | None, *, resources_pending: bool = False
) -> Attention:
    """What an item's state asks of its user (pluggy-api.md section 11); `resources_pending` is an Open Finance
    item's hasResourcesPendingAuthorization."""
    if error_code and error_code in _CODE_ATTENTION:
        return _CODE_ATTENTION[error_code]
    if status == "LOGIN_ERROR":
        return Attention(True, False, _LOGIN_REASON.format(code=error_code or execution_status or "LOGIN_ERROR"))
    if status == "WAITING_USER_INPUT":
        return Attention(
            True,
            True,
            "Pluggy waits for the user's MFA input (item.parameter): send it with POST /items/{id}/mfa, or "
            "through Connect, before parameter.expiresAt.",
        )
    if status == "WAITING_USER_ACTION":
        return Attention(
            True,
            True,
            "The account holder must act outside Pluggy (item.userAction.instructions, e.g. approve in the "
            "bank's app); Pluggy resumes by itself.",
        )
    if status == "OUTDATED":
        return Attention(
            False,
            False,
            f"The last sync failed on the institution's or Pluggy's side ({error_code or execution_status}); "
            "Pluggy retries on its next auto-sync, or sync it with PATCH /items/{id}.",
        )
    if status in ("UPDATING", "MERGING"):
        return Attention(False, True, "Pluggy is syncing the item.")
    if status == "UPDATED" and resources_pending:
        return Attention(
            True,
            True,
            "Synced, but some consented resources await the account holder's authorization at the institution "
            "(hasResourcesPendingAuthorization): ask the user to authorize them there; the next sync collects them.",
        )
    if status == "UPDATED" and execution_status == "PARTIAL_SUCCESS":
        return Attention(False, False, "Synced, but some products could not be collected (statusDetail).")
    if status == "UPDATED":
        return Attention(False, False, "Synced.")
    return Attention(False, False, f"Pluggy reports status {status} ({execution_status}).")


@dataclass(frozen=True, slots=True)
class StreamChange:
    """One stream record of RecordsTable: its images already deserialised."""

    event_id: str
    sequence: str
    name: str  # INSERT | MODIFY | REMOVE
    old: JSON | None
    new: JSON | None
    created_at: float | None  # ApproximateCreationDateTime, epoch seconds

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StreamChange:
        body = record.get("dynamodb") or {}
        old, new = body.get("OldImage"), body.get("NewImage")
        created = body.get("ApproximateCreationDateTime")
        return cls(
            event_id=str(record.get("eventID") or body.get("SequenceNumber")),
            sequence=str(body.get("SequenceNumber") or ""),
            name=str(record.get("eventName") or ""),
            old=from_attributes(old) if old else None,
            new=from_attributes(new) if new else None,
            created_at=created.timestamp() if isinstance(created, datetime) else _epoch(created),
        )

    @property
    def kind(self) -> str | None:
        image = self.new or self.old or {}
        return str(image["kind"]) if image.get("kind") else None


def _epoch(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def sequence_key(sequence: str) -> tuple[int, str]:
    """Stream sequence numbers are decimal strings of varying length: compare them as numbers."""
    return (int(sequence), sequence) if sequence.isdigit() else (-1, sequence)


@dataclass(slots=True)
class ChangeEvent:
    """One event for the bus, with the stream records it came from (for retries and failure reports)."""

    detail_type: str
    detail: JSON
    sources: list[StreamChange] = field(default_factory=list)

    @property
    def first_sequence(self) -> str:
        return min((s.sequence for s in self.sources), key=sequence_key)

    @property
    def time(self) -> datetime | None:
        stamps = [s.created_at for s in self.sources if s.created_at is not None]
        return datetime.fromtimestamp(max(stamps), UTC) if stamps else None

    def detail_json(self) -> str:
        return json.dumps(self.detail, separators=(",", ":"), sort_keys=True, default=str)


def stable_id(detail_type: str, sources: Iterable[StreamChange], part: int = 0) -> str:
    digest = hashlib.sha256(detail_type.encode())
    for source in sources:
        digest.update(b"|" + source.event_id.encode())
    digest.update(f"#{part}".encode())
    return digest.hexdigest()[:32]


def _time_of(change: StreamChange) -> str | None:
    if change.created_at is None:
        return None
    return datetime.fromtimestamp(change.created_at, UTC).isoformat().replace("+00:00", "Z")


def _item_state(image: Mapping[str, Any] | None) -> JSON | None:
    if not image:
        return None
    return {
        "status": image.get("status"),
        "executionStatus": image.get("executionStatus"),
        "errorCode": image.get("errorCode"),
        "resourcesPendingAuthorization": bool(image.get("resourcesPendingAuthorization")),
    }


def _connector_id(image: Mapping[str, Any]) -> Any:
    data = image.get("data")
    connector = data.get("connector") if isinstance(data, dict) else None
    return connector.get("id") if isinstance(connector, dict) else None


def _item_events(change: StreamChange) -> list[ChangeEvent]:
    old, new = change.old, change.new
    if new is None:  # items are never removed outright (a tombstone stays); a TTL or hand delete is one
        if old is None or old.get("deleted"):
            return []
        return [_deleted(change, old)]
    if new.get("deleted"):
        return [] if old and old.get("deleted") else [_deleted(change, new)]
    before, after = _item_state(old if old and not old.get("deleted") else None), _item_state(new)
    if before == after:
        return []  # a re-sync that changed data only: transactions and accounts speak for themselves
    pending = bool(new.get("resourcesPendingAuthorization"))
    need = attention(new.get("status"), new.get("executionStatus"), new.get("errorCode"), resources_pending=pending)
    detail = {
        "itemId": new.get("itemId"),
        "clientUserId": new.get("clientUserId"),
        "connectorId": _connector_id(new),
        "previous": before,
        "current": after,
        "needsUserAction": need.needs_user_action,
        "pending": need.pending,
        "reason": need.reason,
        "changedAt": _time_of(change),
    }
    return [_event(ITEM_STATUS_CHANGED, detail, [change])]


def _deleted(change: StreamChange, image: Mapping[str, Any]) -> ChangeEvent:
    detail = {
        "itemId": image.get("itemId"),
        "clientUserId": image.get("clientUserId"),
        "deletedAt": image.get("deletedAt") or _time_of(change),
    }
    return _event(ITEM_DELETED, detail, [change])


def _status_events(change: StreamChange) -> list[ChangeEvent]:
    old, new = change.old, change.new
    if new is None:
        return []
    before, after = (old or {}).get("status"), new.get("status")
    if old is not None and before == after:
        return []
    if change.kind == "connector":
        detail = {
            "connectorId": new.get("connectorId"),
            "previousStatus": before,
            "status": after,
            "changedAt": _time_of(change),
        }
        return [_event(CONNECTOR_STATUS_CHANGED, detail, [change])]
    detail = {
        "paymentType": str(change.kind).upper(),
        "paymentId": new.get("paymentId"),
        "paymentRequestId": new.get("paymentRequestId"),
        "previousStatus": before,
        "status": after,
        # False: Pluggy could not be asked (payments not enabled), so the status is the webhook's word only.
        "verified": bool(new.get("verified")),
        "webhookEvent": new.get("event"),
        "changedAt": _time_of(change),
    }
    return [_event(PAYMENT_STATUS_CHANGED, detail, [change])]


def _event(detail_type: str, detail: JSON, sources: list[StreamChange], part: int = 0) -> ChangeEvent:
    return ChangeEvent(
        detail_type,
        {"eventId": stable_id(detail_type, sources, part), "schemaVersion": SCHEMA_VERSION, **detail},
        sources,
    )


@dataclass(slots=True)
class _AccountChanges:
    item_id: Any
    account_id: Any
    ops: list[tuple[str, str, StreamChange]] = field(default_factory=list)  # (added|modified|removed, id, source)


def _transaction_op(change: StreamChange) -> str | None:
    if change.new is None:
        return "removed" if change.old is not None else None
    if change.old is None:
        return "added"
    return "modified" if change.old.get("data") != change.new.get("data") else None


def _transaction_events(groups: Sequence[_AccountChanges]) -> list[ChangeEvent]:
    events: list[ChangeEvent] = []
    for group in groups:
        # The last operation on an id wins within a batch (added then removed is removed, and so on).
        final: dict[str, tuple[str, list[StreamChange]]] = {}
        for op, tx_id, source in group.ops:
            previous = final.get(tx_id)
            sources = [*(previous[1] if previous else []), source]
            still_new = previous is not None and previous[0] == "added" and op == "modified"
            final[tx_id] = ("added" if still_new else op, sources)
        ids = list(final)
        for part, start in enumerate(range(0, len(ids), MAX_IDS_PER_EVENT)):
            chunk = ids[start : start + MAX_IDS_PER_EVENT]
            sources = [s for tx_id in chunk for s in final[tx_id][1]]
            detail: JSON = {
                "itemId": group.item_id,
                "accountId": group.account_id,
                "added": [i for i in chunk if final[i][0] == "added"],
                "modified": [i for i in chunk if final[i][0] == "modified"],
                "removed": [i for i in chunk if final[i][0] == "removed"],
                "changedAt": max((t for t in (_time_of(s) for s in sources) if t), default=None),
            }
            event = _event(TRANSACTIONS_CHANGED, detail, sources, part)
            if len(event.detail_json()) > MAX_DETAIL_BYTES:  # ids are short; a guard, not a plan
                raise ValueError(f"{TRANSACTIONS_CHANGED} detail over {MAX_DETAIL_BYTES} bytes")
            events.append(event)
    return events


# A product record's kind -> (its field in Products Changed, the attribute holding its id, the attribute grouping
# its ids: a card's bills by accountId, an investment's transactions by investmentId).
_PRODUCT_KINDS: Mapping[str, tuple[str, str, str | None]] = {
    "bill": ("bills", "billId", "accountId"),
    "investment": ("investments", "investmentId", None),
    "investmentTransaction": ("investmentTransactions", "investmentTransactionId", "investmentId"),
    "loan": ("loans", "loanId", None),
    "identity": ("identity", "identityId", None),
    "consent": ("consents", "consentId", None),
}
_OPS = ("added", "modified", "removed")


def _product_op(change: StreamChange) -> str | None:
    if change.new is None:
        return "removed" if change.old is not None else None
    if change.old is None:
        return "added"
    before, after = change.old.get("digest"), change.new.get("digest")
    if before and after:  # the digest is the hash of Pluggy's object: equal means the same product
        return "modified" if before != after else None
    return "modified" if change.old.get("data") != change.new.get("data") else None


@dataclass(frozen=True, slots=True)
class _ProductChange:
    field: str
    group: str | None
    product_id: str
    op: str
    sources: list[StreamChange]


@dataclass(slots=True)
class _ItemProducts:
    item_id: Any
    # per product (field, group, id), one record each: its operations in stream order
    records: dict[tuple[str, str | None, str], list[tuple[str, StreamChange]]] = field(default_factory=dict)

    def add(self, change: StreamChange, op: str) -> None:
        image = change.new or change.old or {}
        name, id_attribute, group_attribute = _PRODUCT_KINDS[str(image.get("kind"))]
        target = (name, str(image.get(group_attribute)) if group_attribute else None, str(image.get(id_attribute)))
        self.records.setdefault(target, []).append((op, change))

    def changes(self) -> list[_ProductChange]:
        """One operation per product id, in the order the stream first named them."""
        found = []
        for target, ops in self.records.items():
            final: str | None = None
            for op, _ in ops:  # the last operation wins; added then modified is still added
                final = "added" if final == "added" and op == "modified" else op
            found.append(_ProductChange(*target, str(final), [source for _, source in ops]))
        return found


def _products_detail(item_id: Any, chunk: Sequence[_ProductChange]) -> JSON:
    detail: JSON = {"itemId": item_id}
    for change in chunk:
        if change.field == "identity":  # one per item, and personal: what happened to it, never its fields
            detail["identity"] = change.op
            continue
        ops = detail.setdefault(change.field, {})
        if change.group is not None:
            ops = ops.setdefault(change.group, {})
        for op in _OPS:
            ops.setdefault(op, [])
        ops[change.op].append(change.product_id)
    detail["changedAt"] = max((t for t in (_time_of(s) for c in chunk for s in c.sources) if t), default=None)
    return detail


def _product_events(items: Iterable[_ItemProducts]) -> list[ChangeEvent]:
    events: list[ChangeEvent] = []
    for products in items:
        changes = products.changes()
        chunks = [changes[i : i + MAX_IDS_PER_EVENT] for i in range(0, len(changes), MAX_IDS_PER_EVENT)]
        part = 0
        while chunks:
            chunk = chunks.pop(0)
            sources = [s for change in chunk for s in change.sources]
            event = _event(PRODUCTS_CHANGED, _products_detail(products.item_id, chunk), sources, part)
            if len(event.detail_json()) > MAX_DETAIL_BYTES:
                # Groups (a card, an investment) cost bytes of their own: many groups of one id each can pass
                # the bound under MAX_IDS_PER_EVENT ids, so the chunk is halved, deterministically (stable ids).
                if len(chunk) == 1:
                    raise ValueError(f"{PRODUCTS_CHANGED} detail over {MAX_DETAIL_BYTES} bytes")
                half = len(chunk) // 2
                chunks[:0] = [chunk[:half], chunk[half:]]
                continue
            events.append(event)
            part += 1
    return events


def _data(image: Mapping[str, Any]) -> Mapping[str, Any]:
    data = image.get("data")
    return data if isinstance(data, dict) else {}


def _consent_state(image: Mapping[str, Any]) -> tuple[Any, Any]:
    data = _data(image)
    return image.get("expiresAt", data.get("expiresAt")), image.get("revokedAt", data.get("revokedAt"))


def _consent_events(change: StreamChange) -> list[ChangeEvent]:
    old, new = change.old, change.new
    image = new or old
    if image is None:
        return []
    expires, revoked = _consent_state(image)
    before_expires, before_revoked = _consent_state(old) if old else (None, None)
    if new is None:
        what = "removed"  # Pluggy no longer lists it, or its item is gone
    elif revoked and not before_revoked:
        what = "revoked"  # also a consent first seen already revoked: the user must consent again either way
    elif old is None:
        what = "created"
    elif expires != before_expires or (before_revoked and not revoked):
        what = "renewed"
    else:
        return []  # other fields of the consent: Products Changed names it as modified
    data = _data(image)
    detail = {
        "itemId": image.get("itemId"),
        "consentId": image.get("consentId"),
        "change": what,
        "expiresAt": expires,
        "revokedAt": revoked,
        "products": list(dict.fromkeys(str(p) for p in data.get("products") or ())),  # a set, in Pluggy's order
        "changedAt": _time_of(change),
    }
    return [_event(CONSENT_CHANGED, detail, [change])]


def change_events(records: Iterable[Mapping[str, Any]]) -> list[ChangeEvent]:
    """The events of a batch of stream records, in stream order (transactions grouped per account, then products
    grouped per item)."""
    events: list[ChangeEvent] = []
    groups: dict[tuple[Any, Any], _AccountChanges] = {}
    products: dict[Any, _ItemProducts] = {}
    for record in records:
        change = StreamChange.from_record(record)
        kind = change.kind
        if kind == "item":
            events.extend(_item_events(change))
        elif kind == "transaction":
            op = _transaction_op(change)
            image = change.new or change.old or {}
            if op is None:
                continue
            key = (image.get("itemId"), image.get("accountId"))
            group = groups.setdefault(key, _AccountChanges(*key))
            group.ops.append((op, str(image.get("transactionId")), change))
        elif kind == "connector" or kind in _PAYMENT_KINDS:
            events.extend(_status_events(change))
        elif kind in _PRODUCT_KINDS:
            if kind == "consent":
                events.extend(_consent_events(change))
            op = _product_op(change)
            if op is not None:
                item_id = (change.new or change.old or {}).get("itemId")
                products.setdefault(item_id, _ItemProducts(item_id)).add(change, op)
        # accounts: their transactions carry the change; an account's own fields are read through the API.
    events.extend(_transaction_events(list(groups.values())))
    events.extend(_product_events(products.values()))
    return events
