"""Each function's settings, read from its environment once at cold start and validated there.

A bad deployment (missing table name, malformed CIDR, no authentication configured) raises
ConfigurationError on the first invocation instead of misbehaving on every delivery.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pluggy_pipeline.errors import ConfigurationError

DEFAULT_MAX_BODY_BYTES = 256 * 1024
# Deliveries without an eventId dedupe on their body's hash only for this long: long enough to absorb
# Pluggy's 3 retries one minute apart, short enough that a real repeat (a connector going UNSTABLE
# twice in a day) is not mistaken for a retry. Longer than SQS FIFO's 5-minute deduplication window,
# so a real repeat's send is not dropped by SQS either.
DEFAULT_KEYLESS_DEDUPE_SECONDS = 600
# SQS's window starts at the first send, which lands up to one receiver timeout (6 s) after its claim:
# 300 s plus that, rounded up, so a real repeat claimed after the window is never dropped by SQS.
MIN_KEYLESS_DEDUPE_SECONDS = 310


def _get(env: Mapping[str, str], name: str, default: str = "") -> str:
    return env.get(name, default).strip()


def _required(env: Mapping[str, str], name: str) -> str:
    value = _get(env, name)
    if not value:
        raise ConfigurationError(f"environment variable {name} is required")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    raw = _get(env, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name} must be <= {maximum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(env, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise ConfigurationError(f"{name} must be > 0, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = _get(env, name).lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def parse_networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated IPs or CIDRs; a bare IP means a /32 (or /128)."""
    networks = []
    for part in raw.split(","):
        text = part.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigurationError(f"ALLOWED_SOURCE_CIDRS has an invalid entry {text!r}") from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class SecretSettings:
    """Where the webhook secrets come from: Secrets Manager in AWS, the environment locally."""

    secret_arn: str
    env_secret: str
    env_previous_secret: str
    env_signing_key: str
    cache_seconds: int
    env_url_token: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SecretSettings:
        return cls(
            secret_arn=_get(env, "WEBHOOK_SECRET_ARN"),
            env_secret=_get(env, "WEBHOOK_SECRET"),
            env_previous_secret=_get(env, "WEBHOOK_SECRET_PREVIOUS"),
            env_signing_key=_get(env, "WEBHOOK_SIGNING_KEY"),
            # At most 60: a secret removed at the end of a rotation must stop working within a minute.
            cache_seconds=_int(env, "SECRETS_CACHE_SECONDS", 60, maximum=60),
            env_url_token=_get(env, "WEBHOOK_URL_TOKEN"),
        )


@dataclass(frozen=True, slots=True)
class ReceiverSettings:
    events_table: str
    queue_url: str
    secret_header: str
    signature_header: str
    require_signature: bool
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    pluggy_client_id: str
    max_body_bytes: int
    event_ttl_days: int
    keyless_dedupe_seconds: int
    insecure_local_dev: bool
    secrets: SecretSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReceiverSettings:
        source = os.environ if env is None else env
        return cls(
            events_table=_required(source, "EVENTS_TABLE_NAME"),
            queue_url=_required(source, "EVENT_QUEUE_URL"),
            secret_header=_get(source, "WEBHOOK_SECRET_HEADER", "X-Webhook-Secret").lower(),
            signature_header=_get(source, "WEBHOOK_SIGNATURE_HEADER", "X-Pluggy-Signature").lower(),
            require_signature=_bool(source, "REQUIRE_SIGNATURE"),
            allowed_networks=parse_networks(_get(source, "ALLOWED_SOURCE_CIDRS")),
            pluggy_client_id=_get(source, "PLUGGY_CLIENT_ID"),
            max_body_bytes=_int(source, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            event_ttl_days=_int(source, "EVENT_TTL_DAYS", 30),
            keyless_dedupe_seconds=_int(
                source, "KEYLESS_DEDUPE_SECONDS", DEFAULT_KEYLESS_DEDUPE_SECONDS, minimum=MIN_KEYLESS_DEDUPE_SECONDS
            ),
            insecure_local_dev=_bool(source, "INSECURE_LOCAL_DEV_NO_AUTH"),
            secrets=SecretSettings.from_env(source),
        )


@dataclass(frozen=True, slots=True)
class ProcessorSettings:
    events_table: str
    records_table: str
    queue_url: str
    dead_letter_queue_url: str
    pluggy_base_url: str
    pluggy_credentials_secret_arn: str
    env_pluggy_client_id: str
    env_pluggy_client_secret: str
    reconcile_after_hours: int
    reconcile_batch_limit: int
    event_ttl_days: int
    lease_seconds: float = 120.0
    tx_overlap_minutes: int = 30
    pacer_table: str = ""
    pluggy_calls_per_minute: int = 342
    pluggy_rate_window_seconds: float = 60.0
    max_attempts: int = 5
    # The reconciliation counts active consents expiring within this many days (ConsentsExpiringSoon).
    consent_expiry_alarm_days: int = 7

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProcessorSettings:
        source = os.environ if env is None else env
        settings = cls(
            events_table=_required(source, "EVENTS_TABLE_NAME"),
            records_table=_required(source, "RECORDS_TABLE_NAME"),
            queue_url=_required(source, "EVENT_QUEUE_URL"),
            dead_letter_queue_url=_required(source, "EVENT_DLQ_URL"),
            pluggy_base_url=_get(source, "PLUGGY_BASE_URL", "https://api.pluggy.ai").rstrip("/"),
            pluggy_credentials_secret_arn=_get(source, "PLUGGY_CREDENTIALS_SECRET_ARN"),
            env_pluggy_client_id=_get(source, "PLUGGY_CLIENT_ID"),
            env_pluggy_client_secret=_get(source, "PLUGGY_CLIENT_SECRET"),
            reconcile_after_hours=_int(source, "RECONCILE_AFTER_HOURS", 26),
            reconcile_batch_limit=_int(source, "RECONCILE_BATCH_LIMIT", 500),
            event_ttl_days=_int(source, "EVENT_TTL_DAYS", 30),
            lease_seconds=_float(source, "PROCESSING_LEASE_SECONDS", 120.0),
            # How far before the newest createdAt seen an incremental read starts again (late rows).
            tx_overlap_minutes=_int(source, "TX_OVERLAP_MINUTES", 30, minimum=0),
            # Calls per rate window on each route Pluggy limits to 360/min per source IP, shared by every
            # container (pacing.py): 95% of it leaves room for the connect-token function and retries. 0: off.
            pluggy_calls_per_minute=_int(source, "PLUGGY_CALLS_PER_MINUTE", 342, minimum=0),
            pacer_table=_get(source, "PACER_TABLE_NAME"),
            # Pluggy's window is a minute; an emulator with compressed time has a shorter one.
            pluggy_rate_window_seconds=_float(source, "PLUGGY_RATE_WINDOW_SECONDS", 60.0),
            max_attempts=_int(source, "PROCESSOR_MAX_ATTEMPTS", 5, minimum=1),
            consent_expiry_alarm_days=_int(source, "CONSENT_EXPIRY_ALARM_DAYS", 7, minimum=1),
        )
        has_env_pair = settings.env_pluggy_client_id and settings.env_pluggy_client_secret
        if not (settings.pluggy_credentials_secret_arn or has_env_pair):
            raise ConfigurationError(
                "Pluggy credentials missing: set PLUGGY_CREDENTIALS_SECRET_ARN or PLUGGY_CLIENT_ID/PLUGGY_CLIENT_SECRET"
            )
        return settings


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    event_bus_name: str
    # PutEvents attempts per batch before the stream record is handed back to Lambda (which retries it).
    put_attempts: int = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PublisherSettings:
        source = os.environ if env is None else env
        return cls(
            event_bus_name=_required(source, "CHANGE_EVENT_BUS_NAME"),
            put_attempts=_int(source, "PUBLISHER_PUT_ATTEMPTS", 4, maximum=10),
        )


@dataclass(frozen=True, slots=True)
class ReadApiSettings:
    records_table: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReadApiSettings:
        source = os.environ if env is None else env
        return cls(records_table=_required(source, "RECORDS_TABLE_NAME"))


def _base_url(env: Mapping[str, str], name: str) -> str:
    """An optional absolute http(s) URL without query or fragment, trailing slash removed."""
    raw = _get(env, name)
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
        raise ConfigurationError(f"{name} must be an http(s) URL without query or fragment, got {raw!r}")
    return raw.rstrip("/")


@dataclass(frozen=True, slots=True)
class ConnectTokenSettings:
    pluggy_base_url: str
    pluggy_credentials_secret_arn: str
    env_pluggy_client_id: str
    env_pluggy_client_secret: str
    secrets: SecretSettings
    # Where Pluggy delivers the token's items' webhooks. Empty: the API the request came through (its domain
    # and stage or base path); set for a route on another API than the webhook's (the frontend one).
    webhook_base_url: str = ""
    # The frontend route: refuse any request that did not come through the Cognito authorizer.
    require_user_claims: bool = False
    cors_allow_origin: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConnectTokenSettings:
        source = os.environ if env is None else env
        settings = cls(
            pluggy_base_url=_get(source, "PLUGGY_BASE_URL", "https://api.pluggy.ai").rstrip("/"),
            pluggy_credentials_secret_arn=_get(source, "PLUGGY_CREDENTIALS_SECRET_ARN"),
            env_pluggy_client_id=_get(source, "PLUGGY_CLIENT_ID"),
            env_pluggy_client_secret=_get(source, "PLUGGY_CLIENT_SECRET"),
            secrets=SecretSettings.from_env(source),
            webhook_base_url=_base_url(source, "WEBHOOK_BASE_URL"),
            require_user_claims=_bool(source, "REQUIRE_USER_CLAIMS"),
            cors_allow_origin=_get(source, "CORS_ALLOW_ORIGIN"),
        )
        has_env_pair = settings.env_pluggy_client_id and settings.env_pluggy_client_secret
        if not (settings.pluggy_credentials_secret_arn or has_env_pair):
            raise ConfigurationError(
                "Pluggy credentials missing: set PLUGGY_CREDENTIALS_SECRET_ARN or PLUGGY_CLIENT_ID/PLUGGY_CLIENT_SECRET"
            )
        secrets = settings.secrets
        if not (secrets.secret_arn or secrets.env_secret or secrets.env_url_token):
            # Without it the token's webhookUrl could not carry a URL token the receiver accepts.
            raise ConfigurationError("no webhook secret configured (WEBHOOK_SECRET_ARN, WEBHOOK_SECRET)")
        return settings
