"""Who may deliver: source IP allowlist, shared-secret header or URL token, HMAC signature of the raw body.

Every comparison of secret material uses hmac.compare_digest, and every candidate secret is
compared (no early exit), so timing reveals neither the value nor which candidate matched.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from pluggy_pipeline.config import ReceiverSettings
from pluggy_pipeline.errors import ConfigurationError
from pluggy_pipeline.http import ApiRequest
from pluggy_pipeline.secrets import SecretProvider, WebhookSecrets


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    reason: str  # stable, machine-readable; also the metric dimension
    message: str


def sign(body: bytes, key: bytes) -> str:
    """The signature a sender puts in the signature header: hex HMAC-SHA256 of the raw body."""
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _matches_any(value: bytes, candidates: tuple[bytes, ...]) -> bool:
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(value, candidate)
    return matched


def _single_header(request: ApiRequest, name: str) -> str | None:
    values = request.header_values(name)
    # Two copies of an auth header are ambiguous (which one did a proxy check?): refuse them.
    return values[0] if len(values) == 1 else None


class WebhookAuthenticator:
    def __init__(self, settings: ReceiverSettings, secrets: SecretProvider) -> None:
        self._settings = settings
        self._secrets = secrets

    def check_source(self, request: ApiRequest) -> Rejection | None:
        networks = self._settings.allowed_networks
        if not networks:
            return None
        try:
            address = ipaddress.ip_address(request.source_ip or "")
        except ValueError:
            return Rejection(403, "source_ip_not_allowed", "source IP not allowed")
        if any(address in network for network in networks):
            return None
        return Rejection(403, "source_ip_not_allowed", "source IP not allowed")

    def secrets(self) -> WebhookSecrets:
        secrets = self._secrets.get()
        if not secrets.configured and not self._settings.insecure_local_dev:
            raise ConfigurationError("no webhook secret or signing key is configured")
        if self._settings.require_signature and not secrets.signing_keys:
            raise ConfigurationError("REQUIRE_SIGNATURE is set but no signing key is configured")
        return secrets

    def check_secret(self, request: ApiRequest) -> Rejection | None:
        """The shared-secret header (Pluggy's custom webhook headers); checked before the body is read."""
        return self._with_refresh(lambda secrets: self._check_secret(request, secrets))

    def check_signature(self, request: ApiRequest, body: bytes) -> Rejection | None:
        """HMAC-SHA256 of the raw body, when a signing key is configured."""
        return self._with_refresh(lambda secrets: self._check_signature(request, body, secrets))

    def _with_refresh(self, check: Callable[[WebhookSecrets], Rejection | None]) -> Rejection | None:
        # A failure may mean the secret was rotated since we cached it: re-check once with fresh values.
        rejection = check(self.secrets())
        if rejection is not None:
            fresh = self._secrets.refresh()
            if fresh is not None and fresh.configured:
                rejection = check(fresh)
        return rejection

    def check_url_token(self, token: str) -> Rejection | None:
        """The token in `POST /webhooks/pluggy/{token}`, for deliveries that cannot carry a header."""
        return self._with_refresh(lambda secrets: self._check_url_token(token, secrets))

    def _check_url_token(self, token: str, secrets: WebhookSecrets) -> Rejection | None:
        if not secrets.url_tokens:
            if self._settings.insecure_local_dev and not secrets.configured:
                return None
            return Rejection(401, "bad_url_token", "missing or invalid webhook URL token")
        if not _matches_any(token.encode(), secrets.url_tokens):
            return Rejection(401, "bad_url_token", "missing or invalid webhook URL token")
        return None

    def _check_secret(self, request: ApiRequest, secrets: WebhookSecrets) -> Rejection | None:
        if not secrets.header_secrets:
            return None
        given = _single_header(request, self._settings.secret_header)
        if given is None or not _matches_any(given.encode(), secrets.header_secrets):
            return Rejection(401, "bad_secret", "missing or invalid webhook secret")
        return None

    def _check_signature(self, request: ApiRequest, body: bytes, secrets: WebhookSecrets) -> Rejection | None:
        if not secrets.signing_keys:
            return None
        given = _single_header(request, self._settings.signature_header)
        if given is None:
            return Rejection(401, "bad_signature", "missing or invalid signature")
        digest = given.strip().lower().removeprefix("sha256=").encode()
        expected = tuple(sign(body, key).encode() for key in secrets.signing_keys)
        if not _matches_any(digest, expected):
            return Rejection(401, "bad_signature", "missing or invalid signature")
        return None
