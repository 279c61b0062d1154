"""Secret providers: Secrets Manager (cached, refreshed on rotation, rate-limited) and the environment."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from pluggy_pipeline import secrets as secrets_module
from pluggy_pipeline.config import SecretSettings
from pluggy_pipeline.errors import ConfigurationError, PermanentError, PipelineError, TransientError
from pluggy_pipeline.secrets import (
    MIN_REFRESH_INTERVAL_SECONDS,
    SecretsManagerProvider,
    StaticSecretProvider,
    WebhookSecrets,
    build_secrets,
    derive_url_token,
    provider_from_settings,
)

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:webhook"


def expect(headers: tuple[bytes, ...], keys: tuple[bytes, ...]) -> WebhookSecrets:
    """What a provider returns for these header secrets and signing keys (URL tokens derived)."""
    current = derive_url_token(headers[0]) if headers else ""
    return WebhookSecrets(headers, keys, tuple(derive_url_token(h).encode() for h in headers), current)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSecretsManager:
    """In-memory GetSecretValue that counts calls and can be made to fail."""

    def __init__(self, value: dict[str, Any] | str) -> None:
        self.value = value
        self.calls: list[str] = []
        self.error: Exception | None = None

    def put(self, value: dict[str, Any] | str) -> None:
        self.value = value

    def get_secret_value(self, *, SecretId: str) -> dict[str, Any]:
        self.calls.append(SecretId)
        if self.error is not None:
            raise self.error
        raw = self.value if isinstance(self.value, str) else json.dumps(self.value)
        return {"SecretString": raw}


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "GetSecretValue")


def make(value: dict[str, Any] | str, cache_seconds: float = 300) -> tuple[SecretsManagerProvider, Any, Clock]:
    fake, clock = FakeSecretsManager(value), Clock()
    return SecretsManagerProvider(ARN, lambda: fake, cache_seconds, clock), fake, clock


def test_refresh_interval_is_thirty_seconds() -> None:
    assert MIN_REFRESH_INTERVAL_SECONDS == 30


def test_a_removed_secret_stops_working_within_60_seconds_by_default() -> None:
    """End of a rotation: `previous` is removed; a warm container must drop it within a minute."""
    fake, clock = FakeSecretsManager({"current": "new", "previous": "old"}), Clock()
    provider = SecretsManagerProvider(ARN, lambda: fake, clock=clock)
    assert b"old" in provider.get().header_secrets
    fake.put({"current": "new"})
    clock.advance(59.9)
    assert b"old" in provider.get().header_secrets  # still cached
    clock.advance(0.1)
    assert provider.get().header_secrets == (b"new",)
    assert derive_url_token("old").encode() not in provider.get().url_tokens


def test_url_tokens_are_derived_from_the_header_secrets_or_set_explicitly() -> None:
    provider, _, _ = make({"current": "c", "previous": "p"})
    tokens = provider.get().url_tokens
    assert tokens == (derive_url_token("c").encode(), derive_url_token("p").encode())
    assert all(len(t) == 43 and b"/" not in t and b"+" not in t and b"=" not in t for t in tokens)
    assert derive_url_token("c") != derive_url_token("p")
    assert b"c" not in tokens  # the header secret itself never works as a URL token
    explicit, _, _ = make({"current": "c", "urlToken": "tok-1", "previousUrlToken": "tok-0"})
    assert explicit.get().url_tokens[:2] == (b"tok-1", b"tok-0")


def test_reads_all_four_keys() -> None:
    provider, fake, _ = make({"current": "c", "previous": "p", "signingKey": "k", "previousSigningKey": "pk"})
    assert provider.get() == expect((b"c", b"p"), (b"k", b"pk"))
    assert fake.calls == [ARN]


def test_blank_and_non_string_values_are_ignored() -> None:
    provider, _, _ = make({"current": "c", "previous": "  ", "signingKey": 123, "previousSigningKey": None})
    secrets = provider.get()
    assert secrets == expect((b"c",), ())
    assert secrets.configured


def test_empty_secret_is_not_configured() -> None:
    provider, _, _ = make({})
    assert provider.get().configured is False
    assert expect((), (b"k",)).configured is True


def test_get_is_cached_until_cache_seconds() -> None:
    provider, fake, clock = make({"current": "old"}, cache_seconds=300)
    for _ in range(50):
        provider.get()
    assert len(fake.calls) == 1
    fake.put({"current": "new"})
    clock.advance(299)
    assert provider.get().header_secrets == (b"old",)
    clock.advance(1)
    assert provider.get().header_secrets == (b"new",)
    assert len(fake.calls) == 2


def test_refresh_picks_up_a_rotation_but_at_most_once_per_30_seconds() -> None:
    provider, fake, clock = make({"current": "old"})
    provider.get()
    fake.put({"current": "new", "previous": "old"})
    # A flood right after the fetch: no call at all.
    for _ in range(1000):
        assert provider.refresh() is None
    assert len(fake.calls) == 1
    clock.advance(30)
    assert provider.refresh() == expect((b"new", b"old"), ())
    assert len(fake.calls) == 2
    assert provider.get().header_secrets == (b"new", b"old")  # the refresh also updated the cache
    assert len(fake.calls) == 2


def test_flood_of_refreshes_over_time_costs_one_call_per_30_seconds() -> None:
    provider, fake, clock = make({"current": "c"})
    provider.get()
    for _ in range(1800):  # three minutes of forged deliveries, ten per second
        clock.advance(0.1)
        provider.get()
        provider.refresh()
    # one initial read, then at most one per 30 s (180 s / 30 s = 6)
    assert 1 + 5 <= len(fake.calls) <= 1 + 6


def test_failing_refresh_is_rate_limited_too() -> None:
    """Secrets Manager down (or throttling the flood): still at most one GetSecretValue per 30 s."""
    provider, fake, clock = make({"current": "c"})
    provider.get()
    clock.advance(31)
    fake.error = client_error("ThrottlingException")
    for _ in range(600):  # one minute, ten forged deliveries per second
        assert provider.refresh() is None
        clock.advance(0.1)
    assert 1 + 1 <= len(fake.calls) <= 1 + 2
    fake.error = None
    clock.advance(30)
    assert provider.refresh() == expect((b"c",), ())


def test_refresh_keeps_the_cache_when_the_read_fails() -> None:
    provider, fake, clock = make({"current": "c"})
    provider.get()
    clock.advance(31)
    fake.error = EndpointConnectionError(endpoint_url="https://secretsmanager")
    assert provider.refresh() is None
    assert provider.get() == expect((b"c",), ())


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (client_error("ThrottlingException"), TransientError),
        (client_error("InternalServiceError"), TransientError),
        (EndpointConnectionError(endpoint_url="https://secretsmanager"), TransientError),
        (client_error("AccessDeniedException"), PermanentError),
        (client_error("ResourceNotFoundException"), PermanentError),
    ],
)
def test_get_translates_failures(error: Exception, expected: type[PipelineError]) -> None:
    provider, fake, _ = make({"current": "c"})
    fake.error = error
    with pytest.raises(expected, match="reading the webhook secret"):
        provider.get()


@pytest.mark.parametrize("raw", ["not json", '["current", "x"]', '"just a string"', "null"])
def test_secret_that_is_not_a_json_object_is_a_configuration_error(raw: str) -> None:
    provider, _, _ = make(raw)
    with pytest.raises(ConfigurationError, match="not a JSON object"):
        provider.get()


def test_concurrent_cold_gets_read_once() -> None:
    provider, fake, _ = make({"current": "c"})
    barrier = threading.Barrier(16)
    results: list[WebhookSecrets] = []

    def worker() -> None:
        barrier.wait()
        results.append(provider.get())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 16
    assert set(results) == {expect((b"c",), ())}
    assert len(fake.calls) == 1


def test_static_provider_never_refreshes() -> None:
    secrets = expect((b"a",), ())
    provider = StaticSecretProvider(secrets)
    assert provider.get() is secrets
    assert provider.refresh() is None


def test_provider_from_settings_prefers_secrets_manager() -> None:
    fake = FakeSecretsManager({"current": "from-sm"})
    provider = provider_from_settings(SecretSettings(ARN, "from-env", "", "", 60), lambda: fake)
    assert isinstance(provider, SecretsManagerProvider)
    assert provider.get().header_secrets == (b"from-sm",)
    assert fake.calls == [ARN]


def test_provider_from_settings_uses_the_environment_locally() -> None:
    def no_client() -> Any:
        raise AssertionError("no AWS call expected")

    provider = provider_from_settings(SecretSettings("", "cur", "prev", "key", 300), no_client)
    assert isinstance(provider, StaticSecretProvider)
    assert provider.get() == expect((b"cur", b"prev"), (b"key",))
    empty = provider_from_settings(SecretSettings("", "", "", "", 300), no_client)
    assert empty.get().configured is False


def test_cache_seconds_from_settings_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSecretsManager({"current": "c"})
    provider = provider_from_settings(SecretSettings(ARN, "", "", "", 60), lambda: fake)
    now = [0.0]
    monkeypatch.setattr(provider, "_clock", lambda: now[0])
    provider.get()
    now[0] = 59
    provider.get()
    assert len(fake.calls) == 1
    now[0] = 60
    provider.get()
    assert len(fake.calls) == 2


def test_module_constant_is_what_refresh_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, fake, clock = make({"current": "c"})
    provider.get()
    monkeypatch.setattr(secrets_module, "MIN_REFRESH_INTERVAL_SECONDS", 5.0)
    clock.advance(5)
    assert provider.refresh() is not None
    assert len(fake.calls) == 2


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"current": "c", "previous": "p"}, derive_url_token("c")),
        ({"current": "c", "urlToken": "tok-1", "previousUrlToken": "tok-0"}, "tok-1"),
        ({"current": "c", "previousUrlToken": "tok-0"}, derive_url_token("c")),
        ({"previous": "p"}, ""),  # nothing current: no new URL may be minted
        ({}, ""),
    ],
)
def test_new_urls_carry_the_current_token_which_the_route_accepts(data: dict[str, str], expected: str) -> None:
    secrets = build_secrets(data)
    assert secrets.current_url_token == expected
    assert not expected or expected.encode() in secrets.url_tokens
