"""WebhookAuthenticator: source IP allowlist, shared-secret header, HMAC-SHA256 signature, rotation."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pluggy_pipeline import auth as auth_module
from pluggy_pipeline.auth import WebhookAuthenticator, sign
from pluggy_pipeline.config import ReceiverSettings
from pluggy_pipeline.errors import ConfigurationError
from pluggy_pipeline.http import ApiRequest
from pluggy_pipeline.secrets import SecretsManagerProvider, StaticSecretProvider, WebhookSecrets

SECRET = "current-secret-value"
PREVIOUS = "previous-secret-value"
KEY = b"current-signing-key"
PREVIOUS_KEY = b"previous-signing-key"
BODY = b'{"event":"item/updated","eventId":"e-1"}'
PLUGGY_IP = "177.71.238.212"


class FakeProvider:
    """get() returns what is cached; refresh() returns `fresh` (a rotation) and counts calls."""

    def __init__(self, cached: WebhookSecrets, fresh: WebhookSecrets | None = None) -> None:
        self.cached = cached
        self.fresh = fresh
        self.refreshes = 0

    def get(self) -> WebhookSecrets:
        return self.cached

    def refresh(self) -> WebhookSecrets | None:
        self.refreshes += 1
        if self.fresh is not None:
            self.cached = self.fresh
        return self.fresh


def receiver_settings(**env: str) -> ReceiverSettings:
    return ReceiverSettings.from_env({"EVENTS_TABLE_NAME": "t", "EVENT_QUEUE_URL": "q", **env})


def authenticator(
    header_secrets: tuple[str, ...] = (SECRET, PREVIOUS),
    signing_keys: tuple[bytes, ...] = (),
    **env: str,
) -> WebhookAuthenticator:
    secrets = WebhookSecrets(tuple(s.encode() for s in header_secrets), signing_keys)
    return WebhookAuthenticator(receiver_settings(**env), StaticSecretProvider(secrets))


def request(
    headers: dict[str, list[str]] | None = None,
    body: bytes | None = BODY,
    source_ip: str | None = PLUGGY_IP,
) -> ApiRequest:
    folded: dict[str, tuple[str, ...]] = {}
    for name, values in (headers or {}).items():
        folded[name.lower()] = folded.get(name.lower(), ()) + tuple(values)
    return ApiRequest("POST", "/webhooks/pluggy", folded, body, source_ip)


def with_secret(value: str = SECRET, name: str = "X-Webhook-Secret") -> ApiRequest:
    return request({name: [value]})


def with_signature(signature: str, body: bytes = BODY) -> ApiRequest:
    return request({"X-Pluggy-Signature": [signature]}, body)


# --- shared secret -----------------------------------------------------------------------------


def test_current_and_previous_secret_accepted() -> None:
    auth = authenticator()
    assert auth.check_secret(with_secret(SECRET)) is None
    assert auth.check_secret(with_secret(PREVIOUS)) is None


@pytest.mark.parametrize(
    "given_value",
    ["wrong", "", " ", SECRET[:-1], SECRET + "x", SECRET.upper(), SECRET + PREVIOUS, f"{SECRET},{PREVIOUS}"],
)
def test_wrong_secret_is_401(given_value: str) -> None:
    rejection = authenticator().check_secret(with_secret(given_value))
    assert rejection is not None
    assert (rejection.status, rejection.reason) == (401, "bad_secret")


def test_missing_secret_is_401() -> None:
    rejection = authenticator().check_secret(request({"Content-Type": ["application/json"]}))
    assert rejection is not None and (rejection.status, rejection.reason) == (401, "bad_secret")


@pytest.mark.parametrize("values", [[SECRET, SECRET], [SECRET, "other"], ["other", SECRET], [SECRET, PREVIOUS]])
def test_two_copies_of_the_secret_header_are_401(values: list[str]) -> None:
    rejection = authenticator().check_secret(request({"X-Webhook-Secret": values}))
    assert rejection is not None and rejection.status == 401


def test_two_copies_under_different_spellings_are_401() -> None:
    event = {
        "httpMethod": "POST",
        "path": "/webhooks/pluggy",
        "multiValueHeaders": {"X-Webhook-Secret": [SECRET], "x-webhook-secret": [SECRET]},
    }
    rejection = authenticator().check_secret(ApiRequest.from_proxy_event(event))
    assert rejection is not None and rejection.status == 401


@pytest.mark.parametrize("name", ["X-Webhook-Secret", "x-webhook-secret", "X-WEBHOOK-SECRET", "x-WeBhOoK-sEcReT"])
def test_header_name_is_case_insensitive(name: str) -> None:
    event = {"httpMethod": "POST", "path": "/webhooks/pluggy", "headers": {name: SECRET}}
    assert authenticator().check_secret(ApiRequest.from_proxy_event(event)) is None


def test_header_name_is_configurable() -> None:
    auth = authenticator(WEBHOOK_SECRET_HEADER="X-Custom-Auth")
    assert auth.check_secret(with_secret(SECRET, "x-custom-auth")) is None
    assert auth.check_secret(with_secret(SECRET, "X-CUSTOM-AUTH")) is None
    rejected = auth.check_secret(with_secret(SECRET, "X-Webhook-Secret"))
    assert rejected is not None and rejected.status == 401


def test_no_header_secret_configured_skips_the_header_check() -> None:
    auth = authenticator(header_secrets=(), signing_keys=(KEY,))
    assert auth.check_secret(request()) is None


def test_all_candidates_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time: every candidate is compared with hmac.compare_digest, even after a match."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    auth = authenticator()
    assert auth.check_secret(with_secret(SECRET)) is None
    assert calls == [(SECRET.encode(), SECRET.encode()), (SECRET.encode(), PREVIOUS.encode())]
    calls.clear()
    assert auth.check_secret(with_secret("forged")) is not None
    assert len(calls) == 2
    calls.clear()
    signed = authenticator(signing_keys=(KEY, PREVIOUS_KEY))
    assert signed.check_signature(with_signature(sign(BODY, KEY)), BODY) is None
    assert len(calls) == 2


# --- rotation ----------------------------------------------------------------------------------


def test_rotated_secret_is_picked_up_after_a_failed_check() -> None:
    old = WebhookSecrets((b"old",), ())
    new = WebhookSecrets((b"new", b"old"), ())
    provider = FakeProvider(old, new)
    auth = WebhookAuthenticator(receiver_settings(), provider)
    assert auth.check_secret(with_secret("old")) is None
    assert provider.refreshes == 0  # a good secret never costs a refresh
    assert auth.check_secret(with_secret("new")) is None
    assert provider.refreshes == 1
    assert auth.check_secret(with_secret("new")) is None
    assert provider.refreshes == 1  # now cached


def test_refresh_not_allowed_keeps_the_rejection() -> None:
    provider = FakeProvider(WebhookSecrets((b"old",), ()), None)
    auth = WebhookAuthenticator(receiver_settings(), provider)
    rejection = auth.check_secret(with_secret("new"))
    assert rejection is not None and rejection.reason == "bad_secret"
    assert provider.refreshes == 1


def test_refresh_to_an_empty_secret_does_not_open_the_door() -> None:
    provider = FakeProvider(WebhookSecrets((b"old",), ()), WebhookSecrets((), ()))
    auth = WebhookAuthenticator(receiver_settings(), provider)
    rejection = auth.check_secret(with_secret("anything"))
    assert rejection is not None and rejection.status == 401


class CountingSecretsManager:
    def __init__(self, value: dict[str, str]) -> None:
        self.value = value
        self.calls = 0

    def get_secret_value(self, **_: Any) -> dict[str, str]:
        self.calls += 1
        return {"SecretString": json.dumps(self.value)}


def test_forged_flood_costs_at_most_one_get_secret_value_per_30_seconds() -> None:
    client = CountingSecretsManager({"current": "old"})
    now = [0.0]
    provider = SecretsManagerProvider("arn", lambda: client, 300, lambda: now[0])
    auth = WebhookAuthenticator(receiver_settings(), provider)
    for _ in range(500):
        assert auth.check_secret(with_secret("forged")) is not None
    assert client.calls == 1
    client.value = {"current": "new", "previous": "old"}
    now[0] = 29.9
    assert auth.check_secret(with_secret("new")) is not None  # rotated, but the re-read is rate-limited
    assert client.calls == 1
    now[0] = 30.0
    assert auth.check_secret(with_secret("new")) is None
    assert client.calls == 2
    assert auth.check_secret(with_secret("old")) is None  # previous still accepted
    for _ in range(500):
        now[0] += 0.01  # five more seconds of forgeries
        assert auth.check_secret(with_secret("forged")) is not None
    assert client.calls == 2


def test_signature_failure_also_triggers_a_refresh() -> None:
    provider = FakeProvider(WebhookSecrets((), (b"old-key",)), WebhookSecrets((), (b"new-key", b"old-key")))
    auth = WebhookAuthenticator(receiver_settings(), provider)
    assert auth.check_signature(with_signature(sign(BODY, b"new-key")), BODY) is None
    assert provider.refreshes == 1


# --- misconfiguration fails closed --------------------------------------------------------------


def test_nothing_configured_fails_closed() -> None:
    auth = authenticator(header_secrets=())
    with pytest.raises(ConfigurationError):
        auth.check_secret(with_secret(SECRET))
    with pytest.raises(ConfigurationError):
        auth.check_signature(request(), BODY)


def test_nothing_configured_with_insecure_local_dev_lets_deliveries_through() -> None:
    auth = authenticator(header_secrets=(), INSECURE_LOCAL_DEV_NO_AUTH="true")
    assert auth.check_secret(request()) is None
    assert auth.check_signature(request(), BODY) is None


@pytest.mark.parametrize("insecure", ["false", "true"])
def test_require_signature_without_a_signing_key_fails_closed(insecure: str) -> None:
    auth = authenticator(REQUIRE_SIGNATURE="true", INSECURE_LOCAL_DEV_NO_AUTH=insecure)
    with pytest.raises(ConfigurationError, match="REQUIRE_SIGNATURE"):
        auth.check_secret(with_secret(SECRET))


def test_require_signature_with_a_signing_key_is_fine() -> None:
    auth = authenticator(signing_keys=(KEY,), REQUIRE_SIGNATURE="true")
    assert auth.check_secret(with_secret(SECRET)) is None


# --- signature ---------------------------------------------------------------------------------


def test_sign_is_hex_hmac_sha256() -> None:
    # RFC 4231 test case 2
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert sign(b"what do ya want for nothing?", b"Jefe") == expected


def good_signature(body: bytes = BODY, key: bytes = KEY) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    "transform",
    [
        lambda s: s,
        lambda s: "sha256=" + s,
        lambda s: s.upper(),
        lambda s: "SHA256=" + s.upper(),
        lambda s: f"  sha256={s} ",
    ],
    ids=["plain", "prefixed", "upper", "upper-prefixed", "whitespace"],
)
def test_signature_spellings_accepted(transform: Callable[[str], str]) -> None:
    auth = authenticator(signing_keys=(KEY,))
    assert auth.check_signature(with_signature(transform(good_signature())), BODY) is None


def test_signature_with_the_previous_key_accepted() -> None:
    auth = authenticator(signing_keys=(KEY, PREVIOUS_KEY))
    assert auth.check_signature(with_signature(good_signature(key=PREVIOUS_KEY)), BODY) is None


def flip(signature: str, index: int) -> str:
    char = signature[index]
    return signature[:index] + ("0" if char != "0" else "1") + signature[index + 1 :]


GOOD = good_signature()


@pytest.mark.parametrize(
    "signature",
    [
        flip(GOOD, 0),
        flip(GOOD, 31),
        flip(GOOD, 63),
        GOOD[:-1],
        GOOD[:32],
        GOOD + "0",
        "sha256=" + GOOD[:-1],
        "sha1=" + GOOD,
        "sha256:" + GOOD,
        good_signature(BODY + b" "),
        good_signature(b'{"event":"item/deleted","eventId":"e-1"}'),
        good_signature(key=b"some-other-key"),
        hashlib.sha256(BODY).hexdigest(),  # a plain hash, no key
        hmac.new(KEY, BODY, hashlib.sha1).hexdigest(),
        "",
        " ",
        "sha256=",
        "0" * 64,
    ],
)
def test_near_miss_signatures_rejected(signature: str) -> None:
    rejection = authenticator(signing_keys=(KEY, PREVIOUS_KEY)).check_signature(with_signature(signature), BODY)
    assert rejection is not None
    assert (rejection.status, rejection.reason) == (401, "bad_signature")


def test_missing_signature_rejected_when_a_key_is_configured() -> None:
    rejection = authenticator(signing_keys=(KEY,)).check_signature(request(), BODY)
    assert rejection is not None and rejection.reason == "bad_signature"


def test_two_signature_headers_rejected() -> None:
    headers = {"X-Pluggy-Signature": [GOOD, GOOD]}
    rejection = authenticator(signing_keys=(KEY,)).check_signature(request(headers), BODY)
    assert rejection is not None and rejection.reason == "bad_signature"


def test_signature_is_over_the_raw_bytes_checked() -> None:
    auth = authenticator(signing_keys=(KEY,))
    reordered = b'{"eventId":"e-1","event":"item/updated"}'
    assert auth.check_signature(with_signature(GOOD, reordered), reordered) is not None


def test_no_signing_key_means_no_signature_check() -> None:
    assert authenticator().check_signature(with_signature("garbage"), BODY) is None


def test_signature_header_name_is_configurable() -> None:
    auth = authenticator(signing_keys=(KEY,), WEBHOOK_SIGNATURE_HEADER="X-Sig")
    assert auth.check_signature(request({"x-sig": [GOOD]}), BODY) is None
    assert auth.check_signature(request({"X-Pluggy-Signature": [GOOD]}), BODY) is not None


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=512), key=st.binary(min_size=1, max_size=64), index=st.integers(0, 63))
def test_signature_property(body: bytes, key: bytes, index: int) -> None:
    auth = authenticator(signing_keys=(key,))
    good = good_signature(body, key)
    assert auth.check_signature(with_signature(good, body), body) is None
    assert auth.check_signature(with_signature(flip(good, index), body), body) is not None
    assert auth.check_signature(with_signature(good, body + b"x"), body + b"x") is not None


# --- source IP allowlist -----------------------------------------------------------------------

ALLOWLIST = "177.71.238.212, 10.0.0.0/8, 2001:db8::/32, ::1"


@pytest.mark.parametrize(
    "ip", ["177.71.238.212", "10.0.0.1", "10.255.255.255", "2001:db8::5", "2001:db8:ffff::1", "::1"]
)
def test_allowed_sources(ip: str) -> None:
    assert authenticator(ALLOWED_SOURCE_CIDRS=ALLOWLIST).check_source(request(source_ip=ip)) is None


@pytest.mark.parametrize(
    "ip", ["177.71.238.213", "177.71.238.211", "11.0.0.1", "9.255.255.255", "2001:db9::1", "::2", "", "garbage", None]
)
def test_other_sources_are_403(ip: str | None) -> None:
    rejection = authenticator(ALLOWED_SOURCE_CIDRS=ALLOWLIST).check_source(request(source_ip=ip))
    assert rejection is not None
    assert (rejection.status, rejection.reason) == (403, "source_ip_not_allowed")


def test_forwarded_for_never_counts() -> None:
    auth = authenticator(ALLOWED_SOURCE_CIDRS="177.71.238.212")
    spoofed = request({"X-Forwarded-For": ["177.71.238.212"], "X-Real-Ip": ["177.71.238.212"]}, source_ip="203.0.113.9")
    assert auth.check_source(spoofed) is not None
    honest = request({"X-Forwarded-For": ["203.0.113.9"]}, source_ip="177.71.238.212")
    assert auth.check_source(honest) is None


def test_no_allowlist_allows_any_source() -> None:
    auth = authenticator()
    assert auth.check_source(request(source_ip="203.0.113.9")) is None
    assert auth.check_source(request(source_ip=None)) is None


def test_source_check_needs_no_secret_material() -> None:
    """The IP check runs before secrets are read: it must not touch the provider."""

    class Exploding(FakeProvider):
        def get(self) -> WebhookSecrets:
            raise AssertionError("secrets read for the source check")

    auth = WebhookAuthenticator(receiver_settings(ALLOWED_SOURCE_CIDRS="10.0.0.0/8"), Exploding(WebhookSecrets((), ())))
    assert auth.check_source(request(source_ip="8.8.8.8")) is not None
