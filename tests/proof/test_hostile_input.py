"""Hostile input: nobody is let in, and nothing anyone sends makes the receiver fail.

Every example is an API Gateway proxy event built around a valid, authenticated delivery and then bent:
malformed JSON, wrong types for every field, huge and deeply nested bodies, random bytes, base64 bodies,
header tricks (duplicates through multiValueHeaders, case variants, non-ASCII values, empty values),
secret and signature near-misses (one character off, prefix, suffix, case, whitespace) and spoofed client-IP
headers. An oracle written from docs/design.md ("The receiver's answers") says what the answer must be;
the properties checked for every example:

- never a 5XX and never an exception;
- the answer is the oracle's: a 4XX with the documented `error` reason for anything not valid and
  authenticated, 202 (new) or 200 (duplicate) for a valid authenticated delivery;
- nothing claimed in EventsTable and nothing queued for a 4XX; a 202 queues the body byte for byte, once.

`test_fuzz_receiver_fast` runs the real WebhookReceiver (real EventStore and EventQueue) on fake boto3
clients that refuse what DynamoDB and SQS refuse (so a body the receiver accepts but AWS would not shows up as
a 503); `test_fuzz_lambda_handler_on_moto` runs a share of the examples through the Lambda handler against
moto built from template.yaml (Secrets Manager, DynamoDB, SQS FIFO). PROOF_FUZZ_EXAMPLES (default 2,000)
is split between them. When atheris is installed, `test_atheris_*` adds a coverage-guided run
(libFuzzer, PROOF_ATHERIS_RUNS inputs) of parse_delivery and the receiver.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st
from pluggy_pipeline.auth import WebhookAuthenticator
from pluggy_pipeline.config import ReceiverSettings
from pluggy_pipeline.event_queue import EventQueue
from pluggy_pipeline.event_store import EventStore
from pluggy_pipeline.http import ApiRequest
from pluggy_pipeline.observability import logger
from pluggy_pipeline.receiver import INLINE_BODY_LIMIT, WebhookReceiver, get_receiver
from pluggy_pipeline.secrets import StaticSecretProvider, WebhookSecrets
from pluggy_pipeline_cli.webhook_examples import VALID_PAYLOADS
from pluggy_pipeline_local.devsecrets import (
    LOCAL_PLUGGY_CLIENT_ID,
    LOCAL_SIGNING_KEY,
    LOCAL_WEBHOOK_SECRET,
    PLUGGY_SOURCE_IP,
)
from pluggy_pipeline_local.handlers import load_handler

from tests.proof.conftest import ATHERIS_RUNS, FUZZ_EXAMPLES, REPO_ROOT, RESULTS, SEED, proof_settings

PATH = "/webhooks/pluggy"
SECRET_HEADER = "X-Webhook-Secret"
SIGNATURE_HEADER = "X-Pluggy-Signature"
MAX_BODY = 262144  # template.yaml's MAX_BODY_BYTES
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/proof-EventQueue.fifo"
FAST_SHARE = 0.8  # of PROOF_FUZZ_EXAMPLES; the rest go through the Lambda handler on moto
EVENTS = sorted({str(p["event"]) for p in VALID_PAYLOADS.values()})


# --- the oracle: docs/design.md, "The receiver's answers" -------------------------------------------------

# What SQS accepts in a message body or attribute (AWS docs), and so what the receiver may queue.
_SQS_CHARS = re.compile("^[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*$")
_SQS_ID = re.compile(r"^[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}$")


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise _Duplicate("duplicate key")
    return dict(pairs)


def _constant(name: str) -> Any:
    raise ValueError(name)


def folded_headers(event: Mapping[str, Any]) -> dict[str, list[str]]:
    """Header name (lower case) -> values, as API Gateway hands them: multiValueHeaders when present."""
    folded: dict[str, list[str]] = {}
    multi = event.get("multiValueHeaders")
    if isinstance(multi, Mapping) and multi:
        for name, values in multi.items():
            if isinstance(values, list):
                folded.setdefault(str(name).lower(), []).extend(str(v) for v in values)
    else:
        for name, value in (event.get("headers") or {}).items():
            if value is not None:
                folded.setdefault(str(name).lower(), []).append(str(value))
    return folded


def raw_body(event: Mapping[str, Any]) -> bytes | None:
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        return None
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            return None
    try:
        return body.encode("utf-8")
    except UnicodeEncodeError:
        return None


def signature_of(body: bytes, key: str = LOCAL_SIGNING_KEY) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def body_verdict(body: bytes) -> tuple[int, str]:
    """(202, "") for a valid body, else the 400/403 and reason the documentation gives."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return 400, "malformed_body"
    if not _SQS_CHARS.match(text):
        return 400, "malformed_body"
    try:
        payload = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_constant)
    except (ValueError, RecursionError):
        return 400, "malformed_body"
    if not isinstance(payload, dict):
        return 400, "malformed_body"
    event = payload.get("event")
    if not isinstance(event, str) or not event.strip() or len(event) > 200 or not _SQS_CHARS.match(event):
        return 400, "malformed_body"
    event_id = payload.get("eventId")
    if event_id is not None and not (
        isinstance(event_id, str) and event_id.strip() and len(event_id) <= 200 and _SQS_CHARS.match(event_id)
    ):
        return 400, "malformed_body"
    client_id = payload.get("clientId")
    if client_id is not None and not isinstance(client_id, str):
        return 400, "malformed_body"
    if client_id is not None and client_id != LOCAL_PLUGGY_CLIENT_ID:
        return 403, "client_id_mismatch"
    return 202, ""


def expected(event: Mapping[str, Any]) -> tuple[int, str]:
    """The documented answer to a delivery: (202, "") means valid and authenticated (202 new, 200 duplicate)."""
    path = str(event.get("path") or event.get("resource") or "")
    if path.rstrip("/") != PATH:
        return 404, "not_found"
    if str(event.get("httpMethod") or "").upper() != "POST":
        return 405, "method_not_allowed"
    identity = (event.get("requestContext") or {}).get("identity") or {}
    try:
        allowed = ipaddress.ip_address(str(identity.get("sourceIp") or "")) == ipaddress.ip_address(PLUGGY_SOURCE_IP)
    except ValueError:
        allowed = False
    if not allowed:
        return 403, "source_ip_not_allowed"
    headers = folded_headers(event)
    if headers.get(SECRET_HEADER.lower(), []) != [LOCAL_WEBHOOK_SECRET]:
        return 401, "bad_secret"
    body = raw_body(event)
    if body is None:
        return 400, "malformed_body"
    if len(body) > MAX_BODY:
        return 413, "body_too_large"
    signatures = headers.get(SIGNATURE_HEADER.lower(), [])
    accepted = {signature_of(body), "sha256=" + signature_of(body)}
    if len(signatures) != 1 or signatures[0].strip().lower() not in accepted:
        return 401, "bad_signature"
    return body_verdict(body)


# --- deliveries ------------------------------------------------------------------------------------------


def proxy_event(
    body: str | None,
    headers: Mapping[str, list[str]],
    *,
    method: str = "POST",
    path: str = PATH,
    source_ip: Any = PLUGGY_SOURCE_IP,
    is_base64: bool = False,
    single: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event (the shape events/receiver/*.json have)."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": dict(single) if single is not None else {k: v[-1] for k, v in headers.items() if v},
        "multiValueHeaders": {k: list(v) for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "stage": "dev",
            "requestId": "proof",
            "identity": {"sourceIp": source_ip, "userAgent": "Pluggy-Webhooks"},
            "path": f"/dev{path}",
            "resourcePath": path,
            "httpMethod": method,
            "protocol": "HTTP/1.1",
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def signed_headers(body: bytes, *, secret_name: str = SECRET_HEADER) -> dict[str, list[str]]:
    return {
        "Content-Type": ["application/json"],
        secret_name: [LOCAL_WEBHOOK_SECRET],
        SIGNATURE_HEADER: [signature_of(body)],
    }


def authentic(body: str | bytes, **options: Any) -> dict[str, Any]:
    """An authenticated delivery of `body` (bytes travel base64-encoded, as API Gateway sends binary)."""
    if isinstance(body, bytes):
        return proxy_event(base64.b64encode(body).decode(), signed_headers(body), is_base64=True, **options)
    return proxy_event(body, signed_headers(body.encode("utf-8", "surrogatepass")), **options)


SAFE_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)
ANY_TEXT = st.text(max_size=40)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    ANY_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(ANY_TEXT, inner, max_size=4)),
    max_leaves=12,
)
WRONG_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.just(""),
    st.just("   "),
    st.text(min_size=201, max_size=260),
    st.lists(JSON_LEAVES, max_size=3),
    st.dictionaries(SAFE_TEXT, JSON_LEAVES, max_size=3),
    st.sampled_from(["\x00", "\x1f", "\ufffe", "\uffff", "\ud800", "a\u0000b", "\x7f"]),
)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A valid Pluggy-like payload: a known (or new) event name, ids, and arbitrary extra fields."""
    payload: dict[str, Any] = {"event": draw(st.one_of(st.sampled_from(EVENTS), SAFE_TEXT.filter(str.strip)))}
    if draw(st.booleans()):
        payload["eventId"] = draw(st.one_of(st.uuids().map(str), SAFE_TEXT.filter(str.strip)))
    if draw(st.booleans()):
        payload["clientId"] = LOCAL_PLUGGY_CLIENT_ID
    if draw(st.booleans()):
        payload["itemId"] = draw(st.one_of(st.uuids().map(str), ANY_TEXT, JSON_LEAVES))
    for name, value in draw(st.dictionaries(SAFE_TEXT, JSON_VALUES, max_size=4)).items():
        payload.setdefault(name, value)
    return payload


def dumps(payload: Any, ascii_only: bool) -> str:
    return json.dumps(payload, ensure_ascii=ascii_only, separators=(",", ":"))


@st.composite
def valid(draw: st.DrawFn) -> dict[str, Any]:
    body = dumps(draw(payloads()), draw(st.booleans()))
    name = draw(st.sampled_from([SECRET_HEADER, SECRET_HEADER.lower(), SECRET_HEADER.upper(), "x-WEBHOOK-secret"]))
    event = proxy_event(body, signed_headers(body.encode("utf-8", "surrogatepass"), secret_name=name))
    if draw(st.booleans()):  # the same body, base64-encoded (binary media type)
        event["body"], event["isBase64Encoded"] = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode(), True
    return event


def near_misses(good: str) -> st.SearchStrategy[str]:
    """Values one step away from `good`: a character changed, dropped or added, case, whitespace, affixes."""
    index = st.integers(0, max(0, len(good) - 1))
    return st.one_of(
        st.builds(lambda i, c: good[:i] + c + good[i + 1 :], index, st.characters(codec="utf-8")),
        st.builds(lambda i: good[:i] + good[i + 1 :], index),
        st.builds(lambda i, c: good[:i] + c + good[i:], index, st.characters(codec="utf-8")),
        st.sampled_from(
            [
                good.upper(),
                good.lower(),
                good.swapcase(),
                " " + good,
                good + " ",
                "\t" + good,
                good + "\n",
                good[:-1],
                good[1:],
                good + good[-1],
                "x" + good,
                good + "\u00e9",
                "",
                " ",
                good.encode().decode("latin-1"),
                good.replace("-", "\u2010"),
                "sha256=" + good,
                good[: len(good) // 2],
            ]
        ),
    )


@st.composite
def secret_tricks(draw: st.DrawFn) -> dict[str, Any]:
    body = dumps(draw(payloads()), True)
    headers = signed_headers(body.encode())
    trick = draw(st.sampled_from(["near-miss", "missing", "twice", "two-names", "headers-only-disagree"]))
    if trick == "near-miss":
        headers[SECRET_HEADER] = [draw(near_misses(LOCAL_WEBHOOK_SECRET))]
    elif trick == "missing":
        del headers[SECRET_HEADER]
    elif trick == "twice":
        headers[SECRET_HEADER] = draw(st.permutations([LOCAL_WEBHOOK_SECRET, draw(near_misses(LOCAL_WEBHOOK_SECRET))]))
    elif trick == "two-names":  # the same header under two spellings: two values once folded
        headers[SECRET_HEADER.lower()] = [LOCAL_WEBHOOK_SECRET]
    else:  # single-value `headers` says yes, multiValueHeaders (what counts) says no
        wrong = draw(near_misses(LOCAL_WEBHOOK_SECRET))
        event = proxy_event(body, {**headers, SECRET_HEADER: [wrong]})
        event["headers"][SECRET_HEADER] = LOCAL_WEBHOOK_SECRET
        return event
    return proxy_event(body, headers)


@st.composite
def signature_tricks(draw: st.DrawFn) -> dict[str, Any]:
    body = dumps(draw(payloads()), True)
    good = signature_of(body.encode())
    headers = signed_headers(body.encode())
    trick = draw(st.sampled_from(["near-miss", "missing", "twice", "other-body", "other-key", "benign"]))
    if trick == "near-miss":
        headers[SIGNATURE_HEADER] = [draw(near_misses(good))]
    elif trick == "missing":
        del headers[SIGNATURE_HEADER]
    elif trick == "twice":
        headers[SIGNATURE_HEADER] = [good, good]
    elif trick == "other-body":
        headers[SIGNATURE_HEADER] = [signature_of(body.encode() + b" ")]
    elif trick == "other-key":
        headers[SIGNATURE_HEADER] = [signature_of(body.encode(), draw(near_misses(LOCAL_SIGNING_KEY)))]
    else:  # the same HMAC written differently: upper case, sha256= prefix, surrounding whitespace
        headers[SIGNATURE_HEADER] = [
            draw(st.sampled_from([good.upper(), f"sha256={good}", f" {good} ", f"SHA256={good}"]))
        ]
    return proxy_event(body, headers)


SPOOF_HEADERS = ["X-Forwarded-For", "X-Real-IP", "Forwarded", "True-Client-IP", "CF-Connecting-IP", "X-Client-IP"]


@st.composite
def ip_tricks(draw: st.DrawFn) -> dict[str, Any]:
    body = dumps(draw(payloads()), True)
    headers = signed_headers(body.encode())
    for name in draw(st.lists(st.sampled_from(SPOOF_HEADERS), unique=True, max_size=3)):
        headers[name] = [
            draw(st.sampled_from([PLUGGY_SOURCE_IP, f"{PLUGGY_SOURCE_IP}, 10.0.0.1", f"for={PLUGGY_SOURCE_IP}"]))
        ]
    source = draw(
        st.one_of(
            st.ip_addresses().map(str),
            st.sampled_from(["", "unknown", f"{PLUGGY_SOURCE_IP}, 1.2.3.4", f" {PLUGGY_SOURCE_IP}", "177.71.238.213"]),
            st.none(),
            st.just(PLUGGY_SOURCE_IP),  # the real peer: accepted whatever the other headers say
        )
    )
    return proxy_event(body, headers, source_ip=source)


@st.composite
def route_tricks(draw: st.DrawFn) -> dict[str, Any]:
    body = dumps(VALID_PAYLOADS["item-updated"], True)
    method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "post", "POST", ""]))
    path = draw(
        st.one_of(
            st.sampled_from(
                [PATH, PATH + "/", "/webhooks/pluggy//", "/WEBHOOKS/PLUGGY", "/webhooks/pluggy/../pluggy", "/", ""]
            ),
            st.text(max_size=30).map(lambda s: "/" + s),
        )
    )
    return proxy_event(body, signed_headers(body.encode()), method=method, path=path)


@st.composite
def header_tricks(draw: st.DrawFn) -> dict[str, Any]:
    body = dumps(draw(payloads()), True)
    headers = signed_headers(body.encode())
    for name, value in draw(
        st.dictionaries(st.text(min_size=1, max_size=20), st.lists(ANY_TEXT, max_size=2), max_size=4)
    ).items():
        if name.lower() not in {SECRET_HEADER.lower(), SIGNATURE_HEADER.lower()}:
            headers[name] = value
    trick = draw(st.sampled_from(["extra", "empty-values", "no-multi", "none-values", "signature-name-case"]))
    if trick == "empty-values":
        headers[draw(st.sampled_from([SECRET_HEADER, SIGNATURE_HEADER]))] = [""]
    elif trick == "no-multi":  # only single-value headers (an older proxy integration)
        event = proxy_event(body, headers)
        event["multiValueHeaders"] = None
        return event
    elif trick == "none-values":
        event = proxy_event(body, {})
        event["multiValueHeaders"] = {}
        event["headers"] = {SECRET_HEADER: LOCAL_WEBHOOK_SECRET, SIGNATURE_HEADER: None, "X-Other": None}
        return event
    elif trick == "signature-name-case":
        headers[SIGNATURE_HEADER.upper()] = headers.pop(SIGNATURE_HEADER)
    return proxy_event(body, headers)


@st.composite
def json_tricks(draw: st.DrawFn) -> dict[str, Any]:
    """Signed and authenticated, so the body's shape is what is judged."""
    payload = dict(VALID_PAYLOADS[draw(st.sampled_from(sorted(VALID_PAYLOADS)))])
    trick = draw(st.sampled_from(["wrong-type", "not-an-object", "truncated", "duplicate-key", "constant", "garbage"]))
    if trick == "wrong-type":
        payload[draw(st.sampled_from(["event", "eventId", "clientId", "itemId"]))] = draw(WRONG_TYPES)
        body = dumps(payload, draw(st.booleans()))
    elif trick == "not-an-object":
        body = dumps(draw(st.one_of(JSON_LEAVES, st.lists(JSON_LEAVES, max_size=3))), True)
    elif trick == "truncated":
        full = dumps(payload, True)
        body = full[: draw(st.integers(0, len(full) - 1))]
    elif trick == "duplicate-key":
        full = dumps(payload, True)
        key = draw(st.sampled_from(sorted(payload)))
        body = full[:-1] + "," + json.dumps(key) + ":" + dumps(draw(JSON_LEAVES), True) + "}"
    elif trick == "constant":
        body = dumps(payload, True)[:-1] + ',"amount":' + draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])) + "}"
    else:
        body = (
            draw(st.sampled_from(["\ufeff", "", " ", "[", "null"]))
            + dumps(payload, True)
            + draw(st.sampled_from(["", " ", "x", "}", "\x00"]))
        )
    return authentic(body)


@st.composite
def byte_bodies(draw: st.DrawFn) -> dict[str, Any]:
    raw = draw(
        st.one_of(
            st.binary(max_size=512),
            st.builds(lambda p: dumps(p, False).encode("latin-1", "replace"), payloads()),
            st.builds(lambda p: dumps(p, False).encode("utf-16"), payloads()),
            st.builds(lambda p, b: dumps(p, True).encode() + b, payloads(), st.binary(min_size=1, max_size=4)),
        )
    )
    event = authentic(raw)
    trick = draw(st.sampled_from(["base64", "bad-base64", "signed-the-base64-text", "text-with-surrogate"]))
    if trick == "bad-base64":
        event["body"] = event["body"] + draw(st.sampled_from(["!", "=", "A", "====", " "]))
    elif trick == "signed-the-base64-text":
        event["multiValueHeaders"][SIGNATURE_HEADER] = [signature_of(event["body"].encode())]
    elif trick == "text-with-surrogate":  # a body that is not even valid UTF-16/UTF-8 text
        event = proxy_event('{"event":"item/updated","x":"\ud800"}', signed_headers(b"irrelevant"))
    return event


@st.composite
def unicode_bodies(draw: st.DrawFn) -> dict[str, Any]:
    payload = dict(VALID_PAYLOADS["item-updated"])
    payload["eventId"] = str(draw(st.uuids()))
    odd = draw(st.sampled_from(["\x00", "\x01", "\x1b", "\x7f", "\u0085", "\u200b", "\u202e", "\ufeff", "\ufffe",
                                "\uffff", "\U0001f4a9", "\U0010ffff", "\ud800", "\udfff"]))  # fmt: skip
    where = draw(st.sampled_from(["value", "key", "event", "eventId"]))
    if where == "value":
        payload["description"] = f"a{odd}b"
    elif where == "key":
        payload[f"k{odd}"] = 1
    else:
        payload[where] = f"{payload[where]}{odd}"
    return authentic(dumps(payload, draw(st.booleans())))


@st.composite
def sizes(draw: st.DrawFn) -> dict[str, Any]:
    payload = dict(VALID_PAYLOADS["item-updated"])
    payload["eventId"] = str(draw(st.uuids()))
    base = len(dumps({**payload, "padding": ""}, True))
    target = draw(st.one_of(st.sampled_from([MAX_BODY - 1, MAX_BODY, MAX_BODY + 1]), st.integers(base, 2 * MAX_BODY)))
    return authentic(dumps({**payload, "padding": "x" * max(0, target - base)}, True))


@st.composite
def nesting(draw: st.DrawFn) -> dict[str, Any]:
    depth = draw(st.one_of(st.sampled_from([10, 100, 500, 5000, 20000, 100000]), st.integers(900, 1100)))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opener * depth + "1" + closer * depth
    shape = draw(st.sampled_from(["inside", "inside-keyless", "top"]))
    if shape == "top":
        body = nested
    else:  # inside an otherwise valid payload; without an eventId the receiver also hashes it (json.dumps)
        head = (
            {"event": "item/updated"}
            if shape == "inside-keyless"
            else {"event": "item/updated", "eventId": str(draw(st.uuids()))}
        )
        body = dumps(head, True)[:-1] + ',"data":' + nested + "}"
    return authentic(body)


FAMILIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "valid deliveries (random payloads, header-name case, base64)": valid(),
    "secret near-misses, missing, repeated, split across spellings": secret_tricks(),
    "signature near-misses, other body/key, repeated, benign forms": signature_tricks(),
    "spoofed client-IP headers, other source IPs": ip_tricks(),
    "other methods and paths": route_tricks(),
    "header tricks (extra, empty, None, no multiValueHeaders)": header_tricks(),
    "malformed JSON and wrong types for every field": json_tricks(),
    "random bytes, other encodings, bad base64": byte_bodies(),
    "control and non-character code points": unicode_bodies(),
    "bodies around and far over 256 KiB": sizes(),
    "deeply nested bodies": nesting(),
}
DELIVERIES = st.sampled_from(sorted(FAMILIES)).flatmap(lambda name: st.tuples(st.just(name), FAMILIES[name]))


# --- a receiver on fakes that refuse what AWS refuses ------------------------------------------------------


def _client_error(code: str, operation: str, message: str, **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, **extra}, operation)


class FakeDynamoDB:
    """EventsTable's claim and release, refusing what DynamoDB refuses (invalid UTF-8, oversize items)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()

    def put_item(self, *, TableName: str, Item: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.calls["PutItem"] += 1
        size = 0
        for name, value in Item.items():
            text = next(iter(value.values()))
            try:
                size += len(name.encode()) + len(str(text).encode("utf-8"))
            except UnicodeEncodeError:
                raise _client_error("ValidationException", "PutItem", "invalid UTF-8") from None
        if size > 400 * 1024 or not Item["eventId"]["S"] or len(Item["eventId"]["S"].encode()) > 2048:
            raise _client_error("ValidationException", "PutItem", "item or key too large")
        event_id = Item["eventId"]["S"]
        if event_id in self.items:
            raise _client_error("ConditionalCheckFailedException", "PutItem", "exists", Item=self.items[event_id])
        self.items[event_id] = Item
        return {}

    def delete_item(self, *, TableName: str, Key: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.calls["DeleteItem"] += 1
        self.items.pop(Key["eventId"]["S"], None)
        return {}


class FakeSQS:
    """A FIFO queue refusing what SQS refuses (characters, ids, 1 MiB) and deduplicating for 5 minutes."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.dedup: set[str] = set()
        self.calls: Counter[str] = Counter()

    def send_message(
        self,
        *,
        QueueUrl: str,
        MessageBody: str,
        MessageAttributes: dict[str, Any],
        MessageGroupId: str | None = None,
        MessageDeduplicationId: str | None = None,
    ) -> dict[str, Any]:
        self.calls["SendMessage"] += 1
        values = [MessageBody] + [a["StringValue"] for a in MessageAttributes.values()]
        if not all(_SQS_CHARS.match(v) for v in values):
            raise _client_error("InvalidMessageContents", "SendMessage", "invalid characters")
        size = sum(len(v.encode("utf-8", "surrogatepass")) for v in values) + sum(len(k) for k in MessageAttributes)
        if size > 1024 * 1024 or not MessageBody:
            raise _client_error("InvalidParameterValue", "SendMessage", "message too long or empty")
        if not (MessageGroupId and _SQS_ID.match(MessageGroupId)):
            raise _client_error("InvalidParameterValue", "SendMessage", "bad MessageGroupId")
        if not (MessageDeduplicationId and _SQS_ID.match(MessageDeduplicationId)):
            raise _client_error("InvalidParameterValue", "SendMessage", "bad MessageDeduplicationId")
        if MessageDeduplicationId not in self.dedup:
            self.dedup.add(MessageDeduplicationId)
            self.messages.append({"Body": MessageBody, "MessageAttributes": MessageAttributes})
        return {"MessageId": f"m-{self.calls['SendMessage']}"}


@dataclass
class FastReceiver:
    dynamodb: FakeDynamoDB = field(default_factory=FakeDynamoDB)
    sqs: FakeSQS = field(default_factory=FakeSQS)

    def __post_init__(self) -> None:
        settings = ReceiverSettings.from_env(
            {
                "EVENTS_TABLE_NAME": "proof-EventsTable",
                "EVENT_QUEUE_URL": QUEUE_URL,
                "WEBHOOK_SECRET_HEADER": SECRET_HEADER,
                "REQUIRE_SIGNATURE": "true",
                "ALLOWED_SOURCE_CIDRS": f"{PLUGGY_SOURCE_IP}/32",
                "PLUGGY_CLIENT_ID": LOCAL_PLUGGY_CLIENT_ID,
                "MAX_BODY_BYTES": str(MAX_BODY),
            }
        )
        secrets = StaticSecretProvider(WebhookSecrets((LOCAL_WEBHOOK_SECRET.encode(),), (LOCAL_SIGNING_KEY.encode(),)))
        self.receiver = WebhookReceiver(
            settings,
            WebhookAuthenticator(settings, secrets),
            EventStore(lambda: self.dynamodb, settings.events_table),
            EventQueue(lambda: self.sqs, QUEUE_URL),
        )

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        return self.receiver.handle(ApiRequest.from_proxy_event(event)).response.to_proxy()

    def writes(self) -> int:
        return self.dynamodb.calls["PutItem"] + self.dynamodb.calls["DeleteItem"] + self.sqs.calls["SendMessage"]


# --- the properties --------------------------------------------------------------------------------------


@dataclass
class FuzzTally:
    examples: Counter[str] = field(default_factory=Counter)
    answers: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, family: str, status: int, reason: str) -> None:
        self.examples[family] += 1
        self.answers.setdefault(family, Counter())[f"{status} {reason}".strip()] += 1

    def record(self, section: str) -> None:
        RESULTS.section(section).update(
            examples=sum(self.examples.values()),
            seconds=round(self.seconds, 1),
            families={
                name: {"examples": self.examples[name], "answers": dict(self.answers[name])} for name in self.examples
            },
        )


def judge(event: dict[str, Any], response: dict[str, Any], wrote: bool) -> tuple[int, str]:
    """Check one answer against the oracle; returns (status, reason) for the tally."""
    status = int(response["statusCode"])
    body = json.loads(response["body"])
    want, reason = expected(event)
    assert status < 500, (status, body)
    if want == 202:
        assert status in (200, 202), (status, body, "a valid authenticated delivery must be accepted")
        assert body.get("eventId"), body
        return status, str(body.get("status"))
    assert (status, body.get("error")) == (want, reason), (status, body, "expected", want, reason)
    assert isinstance(body.get("message"), str) and body["message"], body
    assert not wrote, "something was claimed or queued for a 4XX"
    if status == 405:
        assert response["headers"].get("Allow") == "POST"
    return status, reason


FAST = FuzzTally()


def assert_queued_as_sent(message: dict[str, Any], body: bytes | None) -> None:
    """The queued body is the delivery byte for byte, or, above the inline limit, a pointer to EventsTable."""
    assert body is not None
    pointer = message["MessageAttributes"].get("payload", {}).get("StringValue") == "eventsTable"
    if len(body) > INLINE_BODY_LIMIT:
        assert pointer and json.loads(message["Body"])["payloadInEventsTable"] is True
    else:
        assert not pointer and message["Body"] == body.decode("utf-8")


@pytest.fixture(scope="module")
def fast_receiver() -> FastReceiver:
    return FastReceiver()


@pytest.mark.slow
@proof_settings(int(FUZZ_EXAMPLES * FAST_SHARE))
@given(case=DELIVERIES)
def test_fuzz_receiver_fast(fast_receiver: FastReceiver, case: tuple[str, dict[str, Any]]) -> None:
    family, event = case
    started = time.monotonic()
    receiver = fast_receiver
    before_writes, before_queued = receiver.writes(), len(receiver.sqs.messages)
    response = receiver(event)
    status, reason = judge(event, response, wrote=receiver.writes() != before_writes)
    queued = receiver.sqs.messages[before_queued:]
    if status == 202:
        [message] = queued  # accepted once, byte for byte (or, over the inline limit, as a pointer to it)
        assert_queued_as_sent(message, raw_body(event))
        assert message["MessageAttributes"]["eventId"]["StringValue"] == json.loads(response["body"])["eventId"]
        again = receiver(event)  # Pluggy's retry of the same delivery
        assert again["statusCode"] == 200 and len(receiver.sqs.messages) == before_queued + 1
    elif status == 200:
        assert queued == []
    FAST.add(family, status, reason)
    FAST.seconds += time.monotonic() - started
    FAST.record("hostile_fast")


# --- the Lambda handler on moto ---------------------------------------------------------------------------

MOTO = FuzzTally()


@pytest.fixture
def handler(receiver_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("ALLOWED_SOURCE_CIDRS", f"{PLUGGY_SOURCE_IP}/32")
    level = logger.log_level
    logger.setLevel("ERROR")  # a log line per rejected delivery would dominate the run
    get_receiver.cache_clear()
    yield load_handler("receiver")
    logger.setLevel(level)


def drain(stack: Any) -> list[dict[str, Any]]:
    """Receive and delete everything queued (FIFO holds a group back while one of its messages is in flight)."""
    found = stack.receive_all()
    for message in found:
        stack.sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found


@pytest.mark.slow
@proof_settings(FUZZ_EXAMPLES - int(FUZZ_EXAMPLES * FAST_SHARE))
@given(case=DELIVERIES)
def test_fuzz_lambda_handler_on_moto(
    handler: Any, stack: Any, lambda_context: Any, case: tuple[str, dict[str, Any]]
) -> None:
    family, event = case
    started = time.monotonic()
    claims = stack.event_count()
    response = handler(event, lambda_context)
    queued = drain(stack)  # each example sees only what it queued
    status, reason = judge(event, response, wrote=stack.event_count() != claims or bool(queued))
    event_id = json.loads(response["body"]).get("eventId")
    if status == 202:
        [message] = queued
        assert_queued_as_sent(message, raw_body(event))
        record = stack.event_record(event_id)
        assert record is not None and record["status"]["S"] == "RECEIVED"
        assert record["payload"]["S"] == raw_body(event).decode("utf-8")  # type: ignore[union-attr]
    elif status == 200:
        # A claim still RECEIVED (no processor here) is sent again; SQS drops it within its 5-minute window,
        # moto only while the first copy is still queued: at most that one copy, never another event.
        assert [m["MessageAttributes"]["eventId"]["StringValue"] for m in queued] in ([], [event_id])
    MOTO.add(family, status, reason)
    MOTO.seconds += time.monotonic() - started
    MOTO.record("hostile_moto")


# --- atheris (coverage-guided), when installed -------------------------------------------------------------


def _atheris_one_input(receiver: FastReceiver, data: bytes) -> None:
    import atheris
    from pluggy_pipeline.receiver import BadPayload, parse_delivery

    provider = atheris.FuzzedDataProvider(data)
    flags = provider.ConsumeIntInRange(0, 15)
    body = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 8192))
    with contextlib.suppress(BadPayload):  # anything else escaping is a crash
        parse_delivery(body)
    if flags & 1:  # as text (when it is UTF-8) or as base64
        try:
            event = proxy_event(body.decode("utf-8"), signed_headers(body))
        except UnicodeDecodeError:
            event = authentic(body)
    else:
        event = authentic(body)
    if flags & 2:
        event["multiValueHeaders"][SECRET_HEADER] = [provider.ConsumeUnicodeNoSurrogates(64)]
    if flags & 4:
        event["multiValueHeaders"][SIGNATURE_HEADER] = [provider.ConsumeUnicodeNoSurrogates(80)]
    if flags & 8:
        event["requestContext"]["identity"]["sourceIp"] = provider.ConsumeUnicodeNoSurrogates(40)
    before = receiver.writes()
    judge(event, receiver(event), wrote=receiver.writes() != before)


# Run as `python -c ATHERIS_MAIN <libFuzzer flags>`: the receiver's modules are instrumented as they are imported
# (instrumenting everything already loaded would cost a minute), then the harness below is imported.
ATHERIS_MAIN = """
import sys
import atheris
with atheris.instrument_imports(include=["pluggy_pipeline"]):
    import pluggy_pipeline.receiver
from tests.proof.test_hostile_input import FastReceiver, _atheris_one_input, logger
logger.setLevel("CRITICAL")
receiver = FastReceiver()
atheris.Setup(sys.argv, lambda data: _atheris_one_input(receiver, data))
atheris.Fuzz()
"""


@pytest.mark.slow
def test_atheris_parse_delivery_and_receiver() -> None:
    """PROOF_ATHERIS_RUNS coverage-guided inputs (libFuzzer through atheris), seeded with the corpus' bodies."""
    pytest.importorskip("atheris")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as corpus:
        for name, payload in VALID_PAYLOADS.items():
            Path(corpus, name).write_bytes(b"\x00" + dumps(payload, True).encode())
        command = [
            sys.executable,
            "-c",
            ATHERIS_MAIN,
            f"-runs={ATHERIS_RUNS}",
            f"-seed={SEED % 2**31}",
            "-max_total_time=240",
            "-max_len=8300",
            corpus,
        ]
        env = {**os.environ, "POWERTOOLS_LOG_LEVEL": "CRITICAL", "POWERTOOLS_METRICS_DISABLED": "true"}
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env, check=False)
    output = done.stderr
    assert done.returncode == 0, output[-6000:]
    runs = re.findall(r"Done (\d+) runs in (\d+) second", output)
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", output)
    RESULTS.section("atheris").update(
        runs=int(runs[-1][0]) if runs else None,
        coverage_edges=int(coverage[-1][0]) if coverage else None,
        features=int(coverage[-1][1]) if coverage else None,
        seconds=round(time.monotonic() - started, 1),
        atheris=__import__("importlib.metadata").metadata.version("atheris"),
    )
    assert runs and int(runs[-1][0]) >= min(ATHERIS_RUNS, 1)
