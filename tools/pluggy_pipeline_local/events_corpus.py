"""The events/receiver corpus: API Gateway proxy events for every Pluggy webhook and every bad delivery.

`python -m pluggy_pipeline_local.events_corpus` rewrites events/receiver/*.json; a test checks the files
on disk equal what this module builds, so the corpus and the expectations below cannot drift apart.
The valid deliveries carry Pluggy's webhook examples (pluggy_pipeline_cli.webhook_examples) as they are, signed
with the local secrets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pluggy_pipeline.auth import sign
from pluggy_pipeline_cli.webhook_examples import ITEM_ID, VALID_PAYLOADS

from pluggy_pipeline_local.devsecrets import LOCAL_SIGNING_KEY, LOCAL_WEBHOOK_SECRET, PLUGGY_SOURCE_IP
from pluggy_pipeline_local.template import REPO_ROOT

RECEIVER_EVENTS_DIR = REPO_ROOT / "events" / "receiver"
SECRET_HEADER = "X-Webhook-Secret"
SIGNATURE_HEADER = "X-Pluggy-Signature"


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
