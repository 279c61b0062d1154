"""Pluggy's webhook payloads as its reference shows them: every event it documents, with fixed example ids.

`pluggy-pipeline send` builds its deliveries from these shapes; the local receiver corpus
(pluggy_pipeline_local.events_corpus) delivers them as they are. The payloads are the examples of Pluggy's
webhook reference (seed 003) and pluggy-api.md.
"""

from __future__ import annotations

from typing import Any

# The clientId of Pluggy's own webhook examples (seed 003); the local stack takes it as its own client id.
EXAMPLE_CLIENT_ID = "4552bee0-b87f-48b5-896b-c23113839319"
ITEM_ID = "a5c763cb-0952-457b-9936-630f79c5b016"
ACCOUNT_ID = "8a6e2c17-2817-40bb-b03d-546febc6a60a"
TRANSACTION_IDS = ["5a14feae-eaa7-423a-820c-6b83837c35b7", "786c7d98-6085-4879-9c7f-2255260e2436"]
PAYMENT_REQUEST_ID = "624cb41e-2b76-42ac-8021-ce6b6b4ace6b"
PAYMENT_ID = "8429f45a-f541-4fc3-8439-cbc8d9dc9952"


def _item(event: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "event": event,
        "eventId": f"d876fd7c-e9bd-4c4c-bd46-cc96c62aa{n:03d}",
        "clientId": EXAMPLE_CLIENT_ID,
        "itemId": ITEM_ID,
        "triggeredBy": "USER",
        **extra,
    }


def _payment(event: str, n: int, id_field: str, **extra: Any) -> dict[str, Any]:
    return {
        "paymentRequestId": PAYMENT_REQUEST_ID,
        id_field: PAYMENT_ID,
        "event": event,
        "eventId": f"71e0b4db-4e8c-401d-8ad8-5ab3ecd1f{n:03d}",
        **extra,
    }


# Every event Pluggy documents (seed 003, pluggy-api.md §5) and the two seed 002 handles.
VALID_PAYLOADS: dict[str, dict[str, Any]] = {
    "item-created": _item("item/created", 1),
    "item-updated": _item("item/updated", 2, triggeredBy="SYNC"),
    "item-deleted": {k: v for k, v in _item("item/deleted", 3).items() if k != "triggeredBy"},
    "item-error": _item(
        "item/error",
        4,
        error={
            "code": "USER_INPUT_TIMEOUT",
            "message": "User requested input had expired",
            "parameter": "token",
        },
    ),
    "item-error-authorization-pending": _item(
        "item/error",
        5,
        error={
            "code": "USER_AUTHORIZATION_PENDING",
            "message": "Waiting for the user to authorize the device",
        },
    ),
    "item-waiting-user-input": _item("item/waiting_user_input", 6),
    "item-waiting-user-action": _item("item/waiting_user_action", 7),
    "item-login-succeeded": _item("item/login_succeeded", 8),
    # Pluggy's reference shows this one with no eventId: the receiver keys it on the body's hash.
    "connector-status-updated": {
        "event": "connector/status_updated",
        "clientId": EXAMPLE_CLIENT_ID,
        "connectorId": "201",
        "id": "201",
        "data": {"status": "UNSTABLE"},
    },
    "transactions-created": _item(
        "transactions/created",
        9,
        triggeredBy="SYNC",
        accountId=ACCOUNT_ID,
        transactionsCreatedAtFrom="2026-11-20T10:00:00.000Z",
        createdTransactionsLink=(
            f"https://api.pluggy.ai/v2/transactions?accountId={ACCOUNT_ID}&createdAtFrom=2026-11-20T10:00:00.000Z"
        ),
    ),
    "transactions-updated": _item(
        "transactions/updated", 10, triggeredBy="SYNC", accountId=ACCOUNT_ID, transactionIds=TRANSACTION_IDS
    ),
    "transactions-deleted": {
        k: v
        for k, v in _item("transactions/deleted", 11, accountId=ACCOUNT_ID, transactionIds=TRANSACTION_IDS).items()
        if k != "triggeredBy"
    },
    "account-created": _item("account/created", 12, accountId=ACCOUNT_ID),
    "account-updated": _item("account/updated", 13, accountId=ACCOUNT_ID),
    "payment-intent-created": _payment("payment_intent/created", 1, "paymentIntentId"),
    "payment-intent-created-bulk": {
        "bulkPaymentId": PAYMENT_REQUEST_ID,
        "paymentIntentId": PAYMENT_ID,
        "event": "payment_intent/created",
        "eventId": "71e0b4db-4e8c-401d-8ad8-5ab3ecd1f002",
    },
    "payment-intent-completed": _payment("payment_intent/completed", 3, "paymentIntentId"),
    "payment-intent-waiting-payer-authorization": _payment(
        "payment_intent/waiting_payer_authorization", 4, "paymentIntentId"
    ),
    "payment-intent-error": _payment("payment_intent/error", 5, "paymentIntentId"),
    "scheduled-payment-created": _payment("scheduled_payment/created", 6, "scheduledPaymentId"),
    "scheduled-payment-completed": _payment("scheduled_payment/completed", 7, "scheduledPaymentId"),
    "scheduled-payment-error": _payment(
        "scheduled_payment/error",
        8,
        "scheduledPaymentId",
        error={"title": "Payment failed", "code": "PAYMENT_REJECTED", "description": "Rejected by the bank"},
    ),
    "scheduled-payment-canceled": _payment("scheduled_payment/canceled", 9, "scheduledPaymentId"),
    # Pluggy adds events over time: an unknown name is accepted and queued, the processor records it.
    "unknown-event": {
        "event": "boleto/updated",
        "eventId": "0b0e7e2a-7a51-4c43-9d4c-000000000001",
        "boletoId": "b-1",
    },
}
