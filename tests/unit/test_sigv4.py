"""The local front's SigV4 check refuses what API Gateway's AWS_IAM authorization refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pluggy_pipeline_local.sigv4 import verify

ACCESS, SECRET, REGION = "local", "local-secret", "us-east-1"
URL = "http://127.0.0.1:3000/dev/accounts/acc-1/transactions?limit=100&from=2026-01-01"


def signed(
    method: str = "GET",
    url: str = URL,
    body: bytes = b"",
    *,
    secret: str = SECRET,
    access: str = ACCESS,
    region: str = REGION,
    token: str | None = None,
) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(access, secret, token), "execute-api", region).add_auth(request)
    return {**dict(request.headers.items()), "Host": "127.0.0.1:3000"}  # as the client's HTTP library sends it


def check(
    headers: dict[str, str], method: str = "GET", url: str = URL, body: bytes = b"", now: datetime | None = None
) -> str | None:
    refusal = verify(method, url, headers, body, access_key=ACCESS, secret_key=SECRET, region=REGION, now=now)
    return None if refusal is None else f"{refusal.status} {refusal.message}"


def test_a_request_signed_by_the_stack_principal_passes() -> None:
    assert check(signed()) is None
    body = b'{"clientUserId": "u-1"}'
    post = "http://127.0.0.1:3000/dev/connect-token"
    assert check(signed("POST", post, body), "POST", post, body) is None
    assert check(signed(token="session")) is None  # temporary credentials sign the token too


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unsigned", "Missing Authentication Token"),
        ("other key", "security token included in the request is invalid"),
        ("wrong secret", "signature we calculated does not match"),
        ("other region", "scoped to a valid region"),
        ("body changed", "signature we calculated does not match"),
        ("query changed", "signature we calculated does not match"),
        ("too old", "Signature expired"),
    ],
)
def test_what_api_gateway_refuses_is_refused(case: str, expected: str) -> None:
    headers, body, url, now = signed(), b"", URL, None
    if case == "unsigned":
        headers = {"Host": "127.0.0.1:3000"}
    elif case == "other key":
        headers = signed(access="someone-else")
    elif case == "wrong secret":
        headers = signed(secret="guess")
    elif case == "other region":
        headers = signed(region="eu-west-1")
    elif case == "body changed":
        headers, body = signed("GET", URL, b"a"), b"b"
    elif case == "query changed":
        url = URL.replace("limit=100", "limit=500")
    elif case == "too old":
        now = datetime.now(UTC) + timedelta(minutes=6)
    refusal = check(headers, "GET", url, body, now)
    assert refusal is not None and refusal.startswith("403") and expected in refusal, refusal
