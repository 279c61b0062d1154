"""Every Pluggy webhook event name this project knows: the one place they are listed.

Sources: Pluggy's webhook reference (seed 003), the Node SDK's WEBHOOK_EVENTS and the event names the
Django guide (seed 002) handles. Pluggy adds events over time, so unknown names are still accepted.
"""

from __future__ import annotations

from enum import StrEnum


class EventName(StrEnum):
    ITEM_CREATED = "item/created"
    ITEM_UPDATED = "item/updated"
    ITEM_DELETED = "item/deleted"
    ITEM_ERROR = "item/error"
    ITEM_WAITING_USER_INPUT = "item/waiting_user_input"
    ITEM_WAITING_USER_ACTION = "item/waiting_user_action"
    ITEM_LOGIN_SUCCEEDED = "item/login_succeeded"
    CONNECTOR_STATUS_UPDATED = "connector/status_updated"
    TRANSACTIONS_CREATED = "transactions/created"
    TRANSACTIONS_UPDATED = "transactions/updated"
    TRANSACTIONS_DELETED = "transactions/deleted"
    ACCOUNT_CREATED = "account/created"  # seed 002 (Django guide); not in Pluggy's current reference
    ACCOUNT_UPDATED = "account/updated"  # seed 002
    PAYMENT_INTENT_CREATED = "payment_intent/created"
    PAYMENT_INTENT_COMPLETED = "payment_intent/completed"
    PAYMENT_INTENT_WAITING_PAYER_AUTHORIZATION = "payment_intent/waiting_payer_authorization"
    PAYMENT_INTENT_ERROR = "payment_intent/error"
    SCHEDULED_PAYMENT_CREATED = "scheduled_payment/created"
    SCHEDULED_PAYMENT_COMPLETED = "scheduled_payment/completed"
    SCHEDULED_PAYMENT_ERROR = "scheduled_payment/error"
    SCHEDULED_PAYMENT_CANCELED = "scheduled_payment/canceled"
    SCHEDULED_PAYMENT_ALL_CREATED = "scheduled_payment/all_created"
    SCHEDULED_PAYMENT_ALL_COMPLETED = "scheduled_payment/all_completed"
    PAYMENT_REQUEST_UPDATED = "payment_request/updated"
    # Not deliveries from Pluggy: the reconciliation schedule's sweep, and the item syncs it fans out.
    PIPELINE_RECONCILE = "pipeline/reconcile"
    PIPELINE_SYNC_ITEM = "pipeline/sync_item"

    @classmethod
    def parse(cls, name: str) -> EventName | None:
        """The enum member for a known name, None for a name Pluggy added after this list."""
        try:
            return cls(name)
        except ValueError:
            return None


ITEM_EVENTS = frozenset(e for e in EventName if e.value.startswith("item/"))
PAYMENT_EVENTS = frozenset(
    e for e in EventName if e.value.startswith(("payment_intent/", "scheduled_payment/", "payment_request/"))
)
