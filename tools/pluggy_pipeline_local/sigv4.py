"""The local front's AWS_IAM check: a SigV4 signature verified as API Gateway verifies it.

API Gateway recomputes the signature of an IAM-authorized request from the caller's secret key and compares;
locally the only principal is the stack's fake one (moto's credentials), so the front does the same with it.
A request that is unsigned, signed by another key, for another service or region, too old, or altered after
signing gets API Gateway's 403 and never reaches the function.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "execute-api"
MAX_SKEW = timedelta(minutes=5)  # API Gateway refuses signatures dated more than 5 minutes off


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    message: str


def _authorization_parts(header: str) -> dict[str, str] | None:
    algorithm, _, rest = header.partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        return None
    parts = {}
    for piece in rest.split(","):
        key, _, value = piece.strip().partition("=")
        parts[key] = value
    return parts if {"Credential", "SignedHeaders", "Signature"} <= set(parts) else None


def verify(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime | None = None,
) -> Refusal | None:
    """None when the request carries a valid signature by `access_key`; API Gateway's refusal otherwise."""
    lower = {k.lower(): v for k, v in headers.items()}
    header = lower.get("authorization", "")
    if not header:
        return Refusal(403, "Missing Authentication Token")
    parts = _authorization_parts(header)
    if parts is None:
        return Refusal(403, "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'")
    key_id, _, scope = parts["Credential"].partition("/")
    scope_parts = scope.split("/")
    if key_id != access_key:
        return Refusal(403, "The security token included in the request is invalid.")
    if len(scope_parts) != 4 or scope_parts[1:] != [region, SERVICE, "aws4_request"]:
        return Refusal(403, f"Credential should be scoped to a valid region and service {SERVICE}.")
    stamp = lower.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return Refusal(403, "Missing or malformed X-Amz-Date.")
    if abs((now or datetime.now(UTC)) - signed_at) > MAX_SKEW or scope_parts[0] != stamp[:8]:
        return Refusal(403, "Signature expired or not yet valid.")
    signed = parts["SignedHeaders"].split(";")
    if "host" not in signed:
        return Refusal(403, "'Host' must be a signed header.")
    request = AWSRequest(method=method, url=url, data=body, headers={h: lower.get(h, "") for h in signed})
    credentials = Credentials(access_key, secret_key, lower.get("x-amz-security-token"))
    signer = SigV4Auth(credentials, SERVICE, region)
    request.context["timestamp"] = stamp  # the request's own date, not now
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    expected = signer.signature(string_to_sign, request)
    if not hmac.compare_digest(expected, parts["Signature"]):
        return Refusal(
            403,
            "The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method.",
        )
    return None
