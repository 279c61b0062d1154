"""Coalescing one message group's events into the fewest Pluggy reads that serve them all.

Pluggy notifies one item sync as `item/updated` plus one `transactions/created` per account; handled one by
one that is 2 + 2 x accounts calls where one sync (item, accounts, one read per account) does the same job.
Every plan step re-reads Pluggy, so running the steps at the position of their first event, rather than
once per event, leaves the mirror exactly where the events one by one would have: at Pluggy's state now.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pluggy_pipeline.errors import PermanentError
from pluggy_pipeline.events import ITEM_EVENTS, EventName

JSON = dict[str, Any]

# Events that mean "re-read the whole item" (item/deleted too: Pluggy's 404 decides).
_ITEM_LEVEL = frozenset(ITEM_EVENTS) | {
    EventName.ACCOUNT_CREATED,
    EventName.ACCOUNT_UPDATED,
    EventName.PIPELINE_SYNC_ITEM,
}


@dataclass(frozen=True, slots=True)
class Event:
    """A started event: its id, name and payload (the message it came in is the caller's business)."""

    event_id: str
    name: str
    payload: JSON
    received_at: str | None = None


@dataclass
class ItemSync:
    """One re-read of an item serving every item-level event and the `transactions/created` beside them."""

    item_id: str
    full: bool = False
    client_user_id: str | None = None
    tx_from: dict[str, str] = field(default_factory=dict)  # account -> earliest createdAtFrom to read from


@dataclass
class IdsCheck:
    """One `GET /v2/transactions?ids=` per account for every `transactions/updated|deleted` id of it."""

    account_id: str
    item_id: str | None = None
    updated: dict[str, None] = field(default_factory=dict)  # ordered sets
    deleted: dict[str, None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Single:
    """An event handled on its own, as it comes."""

    event: Event


Step = ItemSync | IdsCheck | Single


def str_field(payload: Mapping[str, Any], name: str) -> str | None:
    """A non-empty string field of a payload, else None."""
    value = payload.get(name)
    return value if isinstance(value, str) and value else None


def created_from(payload: Mapping[str, Any]) -> str | None:
    """Where a `transactions/created` starts: its transactionsCreatedAtFrom, else its link's createdAtFrom."""
    start = str_field(payload, "transactionsCreatedAtFrom")
    if start:
        return start
    link = str_field(payload, "createdTransactionsLinkV2") or str_field(payload, "createdTransactionsLink")
    if link:
        return dict(parse_qsl(urlsplit(link).query)).get("createdAtFrom") or None
    return None


def plan(events: Iterable[Event], usable_user: Any) -> list[Step]:
    """The steps serving `events`, in the order of each step's first event.

    `usable_user(value)` says whether a payload's clientUserId may bind an item (processor.usable_client_user_id).
    A transactions/created joins its item's sync only if an item-level event of the same item is in the batch:
    alone, its link is one call where a sync would be 2 + accounts.
    """
    events = list(events)
    synced = {
        item
        for event in events
        if EventName.parse(event.name) in _ITEM_LEVEL and (item := str_field(event.payload, "itemId"))
    }
    steps: list[Step] = []
    syncs: dict[str, ItemSync] = {}
    checks: dict[str, IdsCheck] = {}
    for event in events:
        name, payload = EventName.parse(event.name), event.payload
        item_id = str_field(payload, "itemId")
        account_id = str_field(payload, "accountId")
        if name in _ITEM_LEVEL:
            if item_id is None:
                raise PermanentError("event has no itemId")  # as processor._required_str says it
            sync = syncs.get(item_id)
            if sync is None:
                sync = syncs[item_id] = ItemSync(item_id)
                steps.append(sync)
            sync.full = sync.full or (name is EventName.PIPELINE_SYNC_ITEM and bool(payload.get("full")))
            if name in ITEM_EVENTS and name is not EventName.ITEM_DELETED and sync.client_user_id is None:
                sync.client_user_id = usable_user(payload.get("clientUserId"))
        elif name is EventName.TRANSACTIONS_CREATED and item_id in synced and account_id and created_from(payload):
            sync = syncs.get(str(item_id))
            if sync is None:
                sync = syncs[str(item_id)] = ItemSync(str(item_id))
                steps.append(sync)
            start = str(created_from(payload))
            sync.tx_from[account_id] = min(start, sync.tx_from.get(account_id, start))
        elif name in {EventName.TRANSACTIONS_UPDATED, EventName.TRANSACTIONS_DELETED} and account_id:
            check = checks.get(account_id)
            if check is None:
                check = checks[account_id] = IdsCheck(account_id)
                steps.append(check)
            check.item_id = check.item_id or item_id
            ids = dict.fromkeys(str(i) for i in payload.get("transactionIds") or [])
            (check.updated if name is EventName.TRANSACTIONS_UPDATED else check.deleted).update(ids)
        else:
            steps.append(Single(event))
    return steps


def groups(messages: Iterable[Any], key: Any) -> Iterator[list[Any]]:
    """`messages` split by `key(message)`, each group in arrival order, groups in order of first message."""
    by_key: dict[Any, list[Any]] = {}
    for message in messages:
        by_key.setdefault(key(message), []).append(message)
    yield from by_key.values()
