"""The Webhook resource: `/webhooks` (pluggy-api.md section 21), which URLs get which event, and when a
webhook is disabled. Delivery itself is webhooks.py; the URL rules are webhook_urls.py."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any

from pluggy_emulator.common import JsonDict, PluggyApiError, iso_from_ms
from pluggy_emulator.store import Store
from pluggy_emulator.webhook_urls import check_webhook_url
from pluggy_emulator.webhooks import DeliveryTarget

# SDK 0.90.0 WEBHOOK_EVENTS (pluggy-api.md section 5); `all` subscribes to every event.
WEBHOOK_EVENTS: tuple[str, ...] = (
    "item/created",
    "item/updated",
    "item/deleted",
    "item/error",
    "item/waiting_user_input",
    "item/waiting_user_action",
    "item/login_succeeded",
    "connector/status_updated",
    "transactions/created",
    "transactions/updated",
    "transactions/deleted",
    "payment_intent/created",
    "payment_intent/completed",
    "payment_intent/waiting_payer_authorization",
    "payment_intent/error",
    "scheduled_payment/created",
    "scheduled_payment/completed",
    "scheduled_payment/error",
    "scheduled_payment/canceled",
    "scheduled_payment/all_completed",
    "scheduled_payment/all_created",
    "boleto/updated",
    "payment_request/updated",
    "automatic_pix_payment/created",
    "automatic_pix_payment/completed",
    "automatic_pix_payment/error",
    "automatic_pix_payment/canceled",
    "smart_transfer_preauthorization/completed",
    "smart_transfer_preauthorization/error",
    "smart_transfer_payment/completed",
    "smart_transfer_payment/error",
)
ALL_EVENTS = "all"
MAX_WEBHOOKS_PER_EVENT = 5


class WebhookRegistry:
    """Webhooks by id, with each one's count of notifications that failed for good."""

    def __init__(self, store: Store, *, allow_loopback: bool, disable_after_failures: int | None) -> None:
        self._store = store
        self.allow_loopback = allow_loopback
        self._disable_after = disable_after_failures
        self._webhooks: dict[str, JsonDict] = {}
        self._webhook_failures: dict[str, int] = {}

    def targets(self, event: str) -> list[DeliveryTarget]:
        """The enabled webhooks that subscribe to `event` (or to `all`)."""
        return [
            DeliveryTarget(url=w["url"], headers=dict(w["headers"]), webhook_id=w["id"])
            for w in self._webhooks.values()
            if w["disabledAt"] is None and w["event"] in (event, ALL_EVENTS)
        ]

    def truth(self) -> list[JsonDict]:
        return [copy.deepcopy(w) for w in self._webhooks.values()]

    def validate_url(self, url: Any) -> str:
        """Pluggy's URL rules (section 21), with loopback URLs allowed when `allow_loopback` is on."""
        return check_webhook_url(url, allow_loopback=self.allow_loopback)

    @staticmethod
    def _validate_event(event: Any) -> str:
        if event not in WEBHOOK_EVENTS and event != ALL_EVENTS:
            raise PluggyApiError(400, "Invalid event type")  # webhook 400s carry no codeDescription
        return str(event)

    @staticmethod
    def _validate_headers(headers: Any) -> dict[str, str]:
        if headers is None:
            return {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise PluggyApiError(400, "headers must be an object of string values")
        return dict(headers)

    def _check_webhook_slot(self, url: str, event: str, webhook_id: str | None = None) -> None:
        """400 when `event` + `url` is already registered, or `event` already has 5 webhooks (section 21)."""
        others = [w for w in self._webhooks.values() if w["event"] == event and w["id"] != webhook_id]
        if any(w["url"] == url for w in others):
            raise PluggyApiError(400, f"Webhook for event {event} and url {url} already exists")
        if len(others) >= MAX_WEBHOOKS_PER_EVENT:
            raise PluggyApiError(400, f"Reached the limit of {MAX_WEBHOOKS_PER_EVENT} webhooks for event {event}")

    def create_webhook(self, url: Any, event: Any, headers: Any = None) -> JsonDict:
        url = self.validate_url(url)
        event = self._validate_event(event)
        clean_headers = self._validate_headers(headers)
        with self._store.lock:
            self._check_webhook_slot(url, event)
            now = iso_from_ms(self._store.clock.now_ms())
            webhook: JsonDict = {
                "id": str(uuid.uuid4()),
                "url": url,
                "event": event,
                "headers": clean_headers,
                "createdAt": now,
                "updatedAt": now,
                "disabledAt": None,
            }
            self._webhooks[webhook["id"]] = webhook
            return copy.deepcopy(webhook)

    def list_webhooks(self) -> JsonDict:
        with self._store.lock:
            results = [copy.deepcopy(w) for w in self._webhooks.values()]
        return {"page": 1, "total": len(results), "totalPages": 1, "results": results}

    def _require_webhook(self, webhook_id: str) -> JsonDict:
        webhook = self._webhooks.get(webhook_id)
        if webhook is None:
            raise PluggyApiError(404, "webhook not found", "WEBHOOK_NOT_FOUND")
        return webhook

    def get_webhook(self, webhook_id: str) -> JsonDict:
        with self._store.lock:
            return copy.deepcopy(self._require_webhook(webhook_id))

    def update_webhook(self, webhook_id: str, body: Mapping[str, Any]) -> JsonDict:
        """PATCH url/event/headers (null clears)/enabled (true clears disabledAt, false sets it)."""
        changes: JsonDict = {}
        if "url" in body:
            changes["url"] = self.validate_url(body["url"])
        if "event" in body:
            changes["event"] = self._validate_event(body["event"])
        if "headers" in body:
            changes["headers"] = self._validate_headers(body["headers"])
        enabled = body.get("enabled")
        if "enabled" in body and not isinstance(enabled, bool):
            raise PluggyApiError(400, "enabled must be a boolean")
        with self._store.lock:
            webhook = self._require_webhook(webhook_id)
            url, event = str(changes.get("url", webhook["url"])), str(changes.get("event", webhook["event"]))
            self._check_webhook_slot(url, event, webhook_id)
            now = iso_from_ms(self._store.clock.now_ms())
            webhook.update(changes)
            if enabled is True:
                webhook["disabledAt"] = None
                self._webhook_failures.pop(webhook_id, None)
            elif enabled is False and webhook["disabledAt"] is None:
                webhook["disabledAt"] = now
            webhook["updatedAt"] = now
            return copy.deepcopy(webhook)

    def delete_webhook(self, webhook_id: str) -> JsonDict:
        with self._store.lock:
            self._require_webhook(webhook_id)
            del self._webhooks[webhook_id]
            self._webhook_failures.pop(webhook_id, None)
        return {"count": 1}

    def record_delivery_outcome(self, target: DeliveryTarget, ok: bool) -> None:
        """Called by the dispatcher once a notification is final; disables a webhook that keeps failing."""
        if target.webhook_id is None:
            return
        with self._store.lock:
            webhook = self._webhooks.get(target.webhook_id)
            if webhook is None:
                return
            if ok:
                self._webhook_failures.pop(target.webhook_id, None)
                return
            failures = self._webhook_failures.get(target.webhook_id, 0) + 1
            self._webhook_failures[target.webhook_id] = failures
            if self._disable_after is not None and failures >= self._disable_after and webhook["disabledAt"] is None:
                now = iso_from_ms(self._store.clock.now_ms())
                webhook["disabledAt"] = now
                webhook["updatedAt"] = now
