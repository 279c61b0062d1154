"""Notifications: every webhook the emulator sends, shaped as Pluggy's (seed 003, pluggy-api.md section 5).

`emit` builds the payload, picks the targets (the Webhook resources subscribed to the event, plus the item's
own `webhookUrl`), records it for `events()` and hands it to the dispatcher (webhooks.py). Callers hold the
store's lock, so webhooks leave in the order of the changes they report.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from pluggy_emulator.common import JsonDict, iso_from_ms
from pluggy_emulator.store import Store
from pluggy_emulator.webhook_registry import WebhookRegistry
from pluggy_emulator.webhooks import DeliveryTarget, Notification

TRIGGERED_BY = frozenset({"USER", "CLIENT", "SYNC", "INTERNAL"})
# Seed 003: triggeredBy is sent "for all events except item/deleted, connector/status_updated and
# transactions/deleted".
NO_TRIGGERED_BY = frozenset({"item/deleted", "connector/status_updated", "transactions/deleted"})


def check_triggered_by(triggered_by: str) -> None:
    if triggered_by not in TRIGGERED_BY:
        raise ValueError(f"triggered_by must be one of {sorted(TRIGGERED_BY)}")


class Events:
    """The emitter and the log of every event emitted (`events()`)."""

    def __init__(
        self, store: Store, webhooks: WebhookRegistry, notify: Callable[[Notification], None], *, client_id: str
    ) -> None:
        self._store = store
        self._webhooks = webhooks
        self._notify = notify
        self.client_id = client_id
        self.base_url = "http://127.0.0.1"  # where createdTransactionsLink points (set when the server starts)
        self._events: list[JsonDict] = []

    def emit(
        self,
        event: str,
        fields: JsonDict,
        *,
        item: JsonDict | None = None,
        with_event_id: bool = True,
        event_id: str | None = None,
    ) -> str:
        """Build the payload, pick the targets and hand the notification to the dispatcher."""
        eid = event_id or str(uuid.uuid4())
        payload: JsonDict = {"event": event}
        if with_event_id:
            payload["eventId"] = eid
        payload.update(fields)
        payload.setdefault("clientId", self.client_id)
        targets = self._webhooks.targets(event)
        # An item's own webhookUrl gets every event of that item, without custom headers (section 5).
        if item is not None and item.get("webhookUrl"):
            targets.append(DeliveryTarget(url=item["webhookUrl"]))
        notification = Notification(eid, event, payload, tuple(targets))
        self._events.append(
            {
                "eventId": eid,
                "event": event,
                "payload": copy.deepcopy(payload),
                "urls": [t.url for t in targets],
                "emittedAt": iso_from_ms(self._store.clock.wall_ms()),
            }
        )
        self._notify(notification)
        return eid

    def item_event(self, event: str, item: JsonDict, triggered_by: str, extra: JsonDict | None = None) -> str:
        """An item/* event: itemId, triggeredBy (except item/deleted), clientUserId, plus `extra`."""
        # `id` is deprecated but still typed as required by the SDK: the entity the event is about.
        fields: JsonDict = {"id": item["id"], "itemId": item["id"]}
        if event not in NO_TRIGGERED_BY:
            fields["triggeredBy"] = triggered_by
        fields.update(extra or {})
        # Docs: clientUserId is echoed in every item/* webhook.
        fields["clientUserId"] = item.get("clientUserId")
        return self.emit(event, fields, item=item)

    def transactions_created(self, item: JsonDict, account_id: str, stamp: str, triggered_by: str) -> str:
        """transactions/created for the account's rows created at or after `stamp`, with the link to them."""
        query = urlencode({"accountId": account_id, "createdAtFrom": stamp})
        fields = {
            "id": item["id"],
            "itemId": item["id"],
            "accountId": account_id,
            "transactionsCreatedAtFrom": stamp,
            "createdTransactionsLink": f"{self.base_url}/v2/transactions?{query}",
            "triggeredBy": triggered_by,
        }
        return self.emit("transactions/created", fields, item=item)

    def events(self) -> list[JsonDict]:
        with self._store.lock:
            return copy.deepcopy(self._events)

    def send_event(self, event: str, fields: Mapping[str, Any]) -> str:
        """Deliver an arbitrary event; `eventId=None` omits the key, a given eventId is reused."""
        if not isinstance(event, str) or not event:
            raise ValueError("event must be a non-empty string")
        data = dict(fields)
        with_event_id = True
        event_id: str | None = None
        if "eventId" in data:
            given = data.pop("eventId")
            with_event_id = given is not None
            event_id = str(given) if given is not None else None
        data.pop("event", None)
        with self._store.lock:
            item_id = data.get("itemId")
            item = self._store.items.get(item_id) if isinstance(item_id, str) else None
            return self.emit(event, data, item=item, with_event_id=with_event_id, event_id=event_id)
