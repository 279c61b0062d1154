"""The events/receiver corpus: API Gateway proxy events for every Pluggy webhook and every bad delivery.

`python -m pluggy_pipeline_local.events_corpus` rewrites events/receiver/*.json; a test checks the files
on disk equal what this module builds, so the corpus and the expectations below cannot drift apart.
The payloads are the examples of Pluggy's webhook reference (seed 003) and pluggy-api.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pluggy_pipeline.auth import sign

from pluggy_pipeline_local.devsecrets import (
    LOCAL_PLUGGY_CLIENT_ID,
    LOCAL_SIGNING_KEY,
    LOCAL_WEBHOOK_SECRET,
    PLUGGY_SOURCE_IP,
)
from pluggy_pipeline_local.template import REPO_ROOT

RECEIVER_EVENTS_DIR = REPO_ROOT / "events" / "receiver"
SECRET_HEADER = "X-Webhook-Secret"
SIGNATURE_HEADER = "X-Pluggy-Signature"
ITEM_ID = "a5c763cb-0952-457b-9936-630f79c5b016"
ACCOUNT_ID = "8a6e2c17-2817-40bb-b03d-546febc6a60a"
TRANSACTION_IDS = ["5a14feae-eaa7-423a-820c-6b83837c35b7", "786c7d98-6085-4879-9c7f-2255260e2436"]
PAYMENT_REQUEST_ID = "624cb41e-2b76-42ac-8021-ce6b6b4ace6b"
PAYMENT_ID = "8429f45a-f541-4fc3-8439-cbc8d9dc9952"


def _item(event: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "event": event,
        "eventId": f"d876fd7c-e9bd-4c4c-bd46-cc96c62aa{n:03d}",
        "clientId": LOCAL_PLUGGY_CLIENT_ID,
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
        "clientId": LOCAL_PLUGGY_CLIENT_ID,
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


@dataclass(frozen=True)
class Scenario:
    name: str
    expected_status: int
    body: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    method: str = "POST"
    path: str = "/webhooks/pluggy"
    source_ip: str = PLUGGY_SOURCE_IP


def _auth_headers(body: str) -> dict[str, list[str]]:
    return {
        "Content-Type": ["application/json"],
        SECRET_HEADER: [LOCAL_WEBHOOK_SECRET],
        SIGNATURE_HEADER: [sign(body.encode(), LOCAL_SIGNING_KEY.encode())],
    }


def _dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def scenarios() -> list[Scenario]:
    result = [Scenario(name, 202, _dumps(p), _auth_headers(_dumps(p))) for name, p in VALID_PAYLOADS.items()]
    good = _dumps(VALID_PAYLOADS["item-updated"])

    def signed(name: str, status: int, body: str, **kwargs: Any) -> Scenario:
        return Scenario(name, status, body, _auth_headers(body), **kwargs)

    bad_secret = _auth_headers(good) | {SECRET_HEADER: ["not-the-secret"]}
    no_secret = {k: v for k, v in _auth_headers(good).items() if k != SECRET_HEADER}
    bad_signature = _auth_headers(good) | {SIGNATURE_HEADER: ["0" * 64]}
    no_signature = {k: v for k, v in _auth_headers(good).items() if k != SIGNATURE_HEADER}
    two_secrets = _auth_headers(good) | {SECRET_HEADER: [LOCAL_WEBHOOK_SECRET, "other"]}
    spoofed = _auth_headers(good) | {"X-Forwarded-For": [PLUGGY_SOURCE_IP]}
    oversized = _dumps({**VALID_PAYLOADS["item-updated"], "padding": "x" * (300 * 1024)})
    mismatch = _dumps({**VALID_PAYLOADS["item-updated"], "clientId": "00000000-0000-0000-0000-000000000000"})
    result += [
        Scenario("bad-secret", 401, good, bad_secret),
        Scenario("missing-secret", 401, good, no_secret),
        Scenario("duplicate-secret-header", 401, good, two_secrets),
        Scenario("bad-signature", 401, good, bad_signature),
        Scenario("missing-signature", 401, good, no_signature),
        signed("malformed-json", 400, '{"event": "item/updated", "eventId": '),
        signed("missing-event", 400, _dumps({"eventId": "e-1", "itemId": ITEM_ID})),
        signed("empty-event", 400, _dumps({"event": "  ", "eventId": "e-2"})),
        signed("not-an-object", 400, _dumps([VALID_PAYLOADS["item-updated"]])),
        signed("client-id-mismatch", 403, mismatch),
        signed("oversized", 413, oversized),
        signed("wrong-ip", 403, good, source_ip="203.0.113.10"),
        Scenario("spoofed-forwarded-for", 403, good, spoofed, source_ip="203.0.113.10"),
        signed("wrong-method", 405, "", method="GET"),
        signed("wrong-path", 404, good, path="/webhooks/other"),
    ]
    return result


def proxy_event(scenario: Scenario) -> dict[str, Any]:
    """An API Gateway REST proxy event, the shape `sam local generate-event apigateway aws-proxy` gives."""
    headers = {name: values[-1] for name, values in scenario.headers.items()}
    headers.setdefault("User-Agent", "Pluggy-Webhooks")
    return {
        "resource": scenario.path,
        "path": scenario.path,
        "httpMethod": scenario.method,
        "headers": headers,
        "multiValueHeaders": {name: list(values) for name, values in scenario.headers.items()}
        | {"User-Agent": [headers["User-Agent"]]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "resourceId": "abc123",
            "stage": "dev",
            "requestId": f"req-{scenario.name}",
            "requestTime": "22/Nov/2026:10:00:00 +0000",
            "requestTimeEpoch": 1795341600000,
            "identity": {"sourceIp": scenario.source_ip, "userAgent": headers["User-Agent"]},
            "path": f"/dev{scenario.path}",
            "resourcePath": scenario.path,
            "httpMethod": scenario.method,
            "apiId": "1234567890",
            "protocol": "HTTP/1.1",
        },
        "body": scenario.body or None,
        "isBase64Encoded": False,
    }


def write(directory: Path = RECEIVER_EVENTS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for scenario in scenarios():
        path = directory / f"{scenario.name}.json"
        path.write_text(json.dumps(proxy_event(scenario), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write():
        print(written_path.relative_to(REPO_ROOT))
