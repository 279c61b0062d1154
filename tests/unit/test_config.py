"""ReceiverSettings.from_env: validated once at cold start; a bad environment raises ConfigurationError."""

from __future__ import annotations

import ipaddress

import pytest
from pluggy_pipeline.config import (
    DEFAULT_KEYLESS_DEDUPE_SECONDS,
    DEFAULT_MAX_BODY_BYTES,
    ReceiverSettings,
    SecretSettings,
    parse_networks,
)
from pluggy_pipeline.errors import ConfigurationError
from pluggy_pipeline_local.template import LocalResources, function_environment

from tests.conftest import TEMPLATE

BASE = {"EVENTS_TABLE_NAME": "events", "EVENT_QUEUE_URL": "https://sqs.example/queue"}


def settings(**extra: str) -> ReceiverSettings:
    return ReceiverSettings.from_env({**BASE, **extra})


def test_defaults() -> None:
    s = settings()
    assert s.events_table == "events"
    assert s.queue_url == "https://sqs.example/queue"
    assert s.secret_header == "x-webhook-secret"
    assert s.signature_header == "x-pluggy-signature"
    assert s.require_signature is False
    assert s.allowed_networks == ()
    assert s.pluggy_client_id == ""
    assert s.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 256 * 1024
    assert s.event_ttl_days == 30
    assert s.keyless_dedupe_seconds == DEFAULT_KEYLESS_DEDUPE_SECONDS
    assert s.insecure_local_dev is False
    assert s.secrets == SecretSettings("", "", "", "", 60)


def test_keyless_window_absorbs_pluggys_retries_and_outlasts_the_sqs_dedupe_window() -> None:
    assert DEFAULT_KEYLESS_DEDUPE_SECONDS > 3 * 60  # absorbs Pluggy's three retries one minute apart
    # A real repeat of a keyless event after the window must not be dropped by SQS's 300 s FIFO dedupe.
    assert DEFAULT_KEYLESS_DEDUPE_SECONDS >= 310


def test_keyless_window_minimum_is_the_sqs_dedupe_window() -> None:
    # The window must outlast SQS's 300 s plus the receiver's timeout (a send lands up to 6 s after its claim).
    assert settings(KEYLESS_DEDUPE_SECONDS="310").keyless_dedupe_seconds == 310
    for too_short in ("309", "300", "120", "1", "0"):
        with pytest.raises(ConfigurationError, match="KEYLESS_DEDUPE_SECONDS must be >= 310"):
            settings(KEYLESS_DEDUPE_SECONDS=too_short)


def test_the_enqueue_lease_is_gone() -> None:
    """No lease any more: the template does not set one, the settings have none."""
    variables = TEMPLATE["Resources"]["ReceiverFunction"]["Properties"]["Environment"]["Variables"]
    assert "ENQUEUE_LEASE_SECONDS" not in variables
    assert not hasattr(settings(), "enqueue_lease_seconds")


def test_header_names_are_configurable_and_lower_cased() -> None:
    s = settings(WEBHOOK_SECRET_HEADER=" X-My-Secret ", WEBHOOK_SIGNATURE_HEADER="X-Other-Sig")
    assert s.secret_header == "x-my-secret"
    assert s.signature_header == "x-other-sig"


def test_values_are_read() -> None:
    s = settings(
        REQUIRE_SIGNATURE="TRUE",
        PLUGGY_CLIENT_ID=" client-1 ",
        MAX_BODY_BYTES="1024",
        EVENT_TTL_DAYS="7",
        KEYLESS_DEDUPE_SECONDS="900",
        INSECURE_LOCAL_DEV_NO_AUTH="yes",
        WEBHOOK_SECRET_ARN="arn:aws:secretsmanager:us-east-1:1:secret:x",
        WEBHOOK_SECRET="cur",
        WEBHOOK_SECRET_PREVIOUS="prev",
        WEBHOOK_SIGNING_KEY="key",
        SECRETS_CACHE_SECONDS="60",
    )
    assert s.require_signature is True
    assert s.pluggy_client_id == "client-1"
    assert (s.max_body_bytes, s.event_ttl_days, s.keyless_dedupe_seconds) == (1024, 7, 900)
    assert s.insecure_local_dev is True
    assert s.secrets == SecretSettings("arn:aws:secretsmanager:us-east-1:1:secret:x", "cur", "prev", "key", 60)


def test_reads_os_environ_when_no_mapping_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MAX_BODY_BYTES", "77")
    assert ReceiverSettings.from_env().max_body_bytes == 77


@pytest.mark.parametrize("missing", ["EVENTS_TABLE_NAME", "EVENT_QUEUE_URL"])
def test_missing_required_variable(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigurationError, match=missing):
        ReceiverSettings.from_env(env)
    with pytest.raises(ConfigurationError, match=missing):
        ReceiverSettings.from_env({**env, missing: "   "})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_BODY_BYTES", "abc"),
        ("MAX_BODY_BYTES", "1.5"),
        ("MAX_BODY_BYTES", "256k"),
        ("MAX_BODY_BYTES", "0"),
        ("MAX_BODY_BYTES", "-1"),
        ("EVENT_TTL_DAYS", "x"),
        ("KEYLESS_DEDUPE_SECONDS", "ten"),
        ("KEYLESS_DEDUPE_SECONDS", "309"),
        ("SECRETS_CACHE_SECONDS", "nope"),
        ("SECRETS_CACHE_SECONDS", "61"),  # a removed secret must stop working within a minute
        ("REQUIRE_SIGNATURE", "maybe"),
        ("INSECURE_LOCAL_DEV_NO_AUTH", "2"),
    ],
)
def test_bad_values_raise(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        settings(**{name: value})


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("on", True), ("No", False), ("off", False), ("", False)])
def test_booleans(raw: str, expected: bool) -> None:
    assert settings(REQUIRE_SIGNATURE=raw).require_signature is expected


@pytest.mark.parametrize(
    "raw", ["10.0.0.0/33", "not-an-ip", "177.71.238.212/", "300.1.1.1", "2001:db8::/129", "10.0.0.0/8;1.2.3.4"]
)
def test_bad_cidr_raises(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="ALLOWED_SOURCE_CIDRS"):
        settings(ALLOWED_SOURCE_CIDRS=f"177.71.238.212,{raw}")


def test_networks_bare_ips_cidrs_ipv4_and_ipv6() -> None:
    networks = parse_networks(" 177.71.238.212 , 10.1.2.3/8,, 2001:db8::/32, ::1 ,")
    assert networks == (
        ipaddress.ip_network("177.71.238.212/32"),
        ipaddress.ip_network("10.0.0.0/8"),  # host bits are tolerated (strict=False)
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert settings(ALLOWED_SOURCE_CIDRS="177.71.238.212").allowed_networks == networks[:1]


def test_empty_allowlist_is_no_allowlist() -> None:
    assert parse_networks("") == ()
    assert parse_networks(" , ,") == ()


def test_template_environment_parses() -> None:
    """ReceiverFunction's environment as template.yaml defines it is valid, with the template's defaults."""
    resources = LocalResources(
        tables={"EventsTable": "t-events"},
        queue_urls={"EventQueue": "https://q/events", "EventDeadLetterQueue": "https://q/dlq"},
        queue_arns={"EventQueue": "arn:q", "EventDeadLetterQueue": "arn:dlq"},
        secrets={"WebhookSecret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:s"},
    )
    env = function_environment(TEMPLATE, "ReceiverFunction", resources)
    s = ReceiverSettings.from_env(env)
    assert s.events_table == "t-events"
    assert s.queue_url == "https://q/events"
    assert s.secrets.secret_arn == resources.secrets["WebhookSecret"]
    assert s.secret_header == "x-webhook-secret"
    assert s.require_signature is False
    assert s.max_body_bytes == 262144
    assert s.insecure_local_dev is False
    signed = function_environment(
        TEMPLATE,
        "ReceiverFunction",
        resources,
        {"RequireSignature": "true", "AllowedSourceCidrs": "177.71.238.212,10.0.0.0/8"},
    )
    s = ReceiverSettings.from_env(signed)
    assert s.require_signature is True
    assert len(s.allowed_networks) == 2
