"""ApiRequest.from_proxy_event / ApiResponse.to_proxy: the only code that knows API Gateway's shapes."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pluggy_pipeline.http import ApiRequest, ApiResponse


def proxy(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "resource": "/webhooks/pluggy",
        "path": "/webhooks/pluggy",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "requestContext": {"identity": {"sourceIp": "177.71.238.212"}},
        "body": '{"event":"item/created"}',
        "isBase64Encoded": False,
    }
    event.update(overrides)
    return event


def test_basic_fields() -> None:
    request = ApiRequest.from_proxy_event(proxy(httpMethod="post"))
    assert request.method == "POST"
    assert request.path == "/webhooks/pluggy"
    assert request.body == b'{"event":"item/created"}'
    assert request.source_ip == "177.71.238.212"
    assert request.header_values("content-type") == ("application/json",)
    assert request.header_values("x-absent") == ()


def test_path_falls_back_to_resource() -> None:
    request = ApiRequest.from_proxy_event(proxy(path=None, resource="/webhooks/pluggy"))
    assert request.path == "/webhooks/pluggy"


def test_header_names_are_folded_to_lower_case_and_repeats_kept() -> None:
    event = proxy(multiValueHeaders={"X-Webhook-Secret": ["a"], "x-webhook-secret": ["b"], "X-WEBHOOK-SECRET": ["c"]})
    request = ApiRequest.from_proxy_event(event)
    assert sorted(request.header_values("x-webhook-secret")) == ["a", "b", "c"]
    assert "X-Webhook-Secret" not in request.headers


def test_multi_value_headers_win_over_single_value_headers() -> None:
    event = proxy(headers={"X-Webhook-Secret": "last"}, multiValueHeaders={"X-Webhook-Secret": ["first", "last"]})
    assert ApiRequest.from_proxy_event(event).header_values("x-webhook-secret") == ("first", "last")


@pytest.mark.parametrize("multi", [None, {}])
def test_single_value_headers_when_no_multi_value_headers(multi: Any) -> None:
    event = proxy(headers={"X-Webhook-Secret": "s", "X-Null": None}, multiValueHeaders=multi)
    request = ApiRequest.from_proxy_event(event)
    assert request.header_values("x-webhook-secret") == ("s",)
    assert request.header_values("x-null") == ()


def test_no_headers_at_all() -> None:
    request = ApiRequest.from_proxy_event(proxy(headers=None, multiValueHeaders=None))
    assert request.headers == {}


def test_source_ip_only_from_request_context_never_forwarded_for() -> None:
    event = proxy(
        headers={"X-Forwarded-For": "177.71.238.212", "X-Real-Ip": "177.71.238.212"},
        multiValueHeaders={"X-Forwarded-For": ["177.71.238.212"]},
        requestContext={"identity": {"sourceIp": "203.0.113.10"}},
    )
    assert ApiRequest.from_proxy_event(event).source_ip == "203.0.113.10"
    event["requestContext"] = {"identity": {}}
    assert ApiRequest.from_proxy_event(event).source_ip is None


@pytest.mark.parametrize("context", [None, {}, {"identity": None}, {"identity": "x"}, "not-a-mapping"])
def test_missing_or_odd_request_context_gives_no_source_ip(context: Any) -> None:
    assert ApiRequest.from_proxy_event(proxy(requestContext=context)).source_ip is None


def test_ipv6_source_ip_is_kept() -> None:
    event = proxy(requestContext={"identity": {"sourceIp": "2001:db8::1"}})
    assert ApiRequest.from_proxy_event(event).source_ip == "2001:db8::1"


def test_none_body_is_empty_bytes() -> None:
    assert ApiRequest.from_proxy_event(proxy(body=None)).body == b""


def test_text_body_is_utf8_encoded() -> None:
    assert ApiRequest.from_proxy_event(proxy(body='{"a":"ção"}')).body == '{"a":"ção"}'.encode()


def test_base64_body_is_decoded() -> None:
    raw = b'{"event":"item/created","x":"\xc3\xa7"}'
    event = proxy(body=base64.b64encode(raw).decode(), isBase64Encoded=True)
    assert ApiRequest.from_proxy_event(event).body == raw


@pytest.mark.parametrize("body", ["not base64!", "abc", "YWJj\n===", "ÿÿÿÿ"])
def test_invalid_base64_body_is_none(body: str) -> None:
    assert ApiRequest.from_proxy_event(proxy(body=body, isBase64Encoded=True)).body is None


@pytest.mark.parametrize("body", [{"event": "item/created"}, 123, ["x"]])
def test_non_string_body_is_none(body: Any) -> None:
    assert ApiRequest.from_proxy_event(proxy(body=body)).body is None


def test_lone_surrogate_body_is_none() -> None:
    assert ApiRequest.from_proxy_event(proxy(body='{"event":"\ud800"}')).body is None


def test_response_to_proxy() -> None:
    proxied = ApiResponse(405, {"error": "method_not_allowed", "eventId": "ç"}, {"Allow": "POST"}).to_proxy()
    assert proxied["statusCode"] == 405
    assert proxied["headers"] == {"Content-Type": "application/json", "Allow": "POST"}
    assert json.loads(proxied["body"]) == {"error": "method_not_allowed", "eventId": "ç"}
    assert " " not in proxied["body"]


def test_response_default_headers() -> None:
    proxied = ApiResponse(202, {"status": "accepted"}).to_proxy()
    assert proxied["headers"] == {"Content-Type": "application/json"}
    assert json.loads(proxied["body"]) == {"status": "accepted"}
