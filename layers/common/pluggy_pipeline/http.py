"""API Gateway REST proxy events in, proxy responses out: the only place that knows their shape."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


# Built for every delivery: NamedTuples, immutable like a frozen dataclass and built in half its time.
class ApiRequest(NamedTuple):
    method: str
    path: str
    # Lower-cased header name -> every value received (API Gateway folds repeated headers here).
    headers: Mapping[str, tuple[str, ...]]
    body: bytes | None  # None when the body could not be decoded (bad base64)
    source_ip: str | None

    def header_values(self, name: str) -> tuple[str, ...]:
        return self.headers.get(name, ())

    @classmethod
    def from_proxy_event(cls, event: Mapping[str, Any]) -> ApiRequest:
        headers: dict[str, tuple[str, ...]] = {}
        multi = event.get("multiValueHeaders") or {}
        if isinstance(multi, Mapping) and multi:
            for name, values in multi.items():
                if isinstance(values, list):
                    key, found = str(name).lower(), tuple(map(str, values))
                    headers[key] = headers[key] + found if key in headers else found
        else:
            for name, value in (event.get("headers") or {}).items():
                if value is not None:
                    key = str(name).lower()
                    headers[key] = (*headers.get(key, ()), str(value))
        context = event.get("requestContext") or {}
        identity = context.get("identity") or {} if isinstance(context, Mapping) else {}
        # Only API Gateway's view of the peer counts; X-Forwarded-For is whatever the caller wrote.
        source_ip = identity.get("sourceIp") if isinstance(identity, Mapping) else None
        return cls(
            method=str(event.get("httpMethod") or "").upper(),
            path=str(event.get("path") or event.get("resource") or ""),
            headers=headers,
            body=_decode_body(event.get("body"), bool(event.get("isBase64Encoded"))),
            source_ip=str(source_ip) if source_ip else None,
        )


def _decode_body(body: Any, is_base64: bool) -> bytes | None:
    if body is None:
        return b""
    if not isinstance(body, str):
        return None
    if is_base64:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return None
    try:
        return body.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be what the sender signed
        return None


class ApiResponse(NamedTuple):
    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = _NO_HEADERS

    def to_proxy(self) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "headers": {"Content-Type": "application/json", **self.headers},
            "body": json.dumps(self.body, separators=(",", ":")),
        }
