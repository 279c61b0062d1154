"""Auth: API keys from `POST /auth` and connect tokens from `POST /connect_token` (pluggy-api.md section 1).

Keys are JWT-shaped but never verified: each one is looked up in the table of keys issued. They expire on
real time (`api_key_ttl_seconds`, connect tokens after 30 minutes), whatever the emulator's clock says. A
connect token sees only its own item and the items created with it.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pluggy_emulator.common import JsonDict, PluggyApiError
from pluggy_emulator.products import check_products
from pluggy_emulator.store import Store, item_not_found

KeyKind = Literal["api", "connect"]
CONNECT_TOKEN_TTL_SECONDS = 30 * 60


@dataclass
class KeyInfo:
    kind: KeyKind
    expires_at: float
    item_ids: set[str] = field(default_factory=set)  # connect tokens: the items they may see
    client_user_id: str | None = None
    webhook_url: str | None = None
    products: list[str] | None = None  # options.products: what items created with the token request

    def check_scope(self, item_id: str) -> None:
        """403 when this is a connect token that may not see the item."""
        if self.kind == "connect" and item_id not in self.item_ids:
            raise PluggyApiError(403, "This connect token cannot access this item")


class Keys:
    """The keys issued so far, and the check every API request goes through."""

    def __init__(
        self,
        store: Store,
        *,
        client_id: str,
        client_secret: str,
        api_key_ttl_seconds: float,
        validate_webhook_url: Callable[[Any], str],
    ) -> None:
        self._store = store
        self._lock: threading.RLock = store.lock
        self.client_id = client_id
        self._client_secret = client_secret
        self.api_key_ttl_seconds = api_key_ttl_seconds
        self._validate_webhook_url = validate_webhook_url
        self._keys: dict[str, KeyInfo] = {}

    @staticmethod
    def _jwt(claims: JsonDict) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = b64(json.dumps(claims, separators=(",", ":")).encode())
        # Looks like a signature; nothing verifies it (keys are looked up in `_keys`).
        return f"{header}.{payload}.{b64(secrets.token_bytes(32))}"

    def issue_api_key(self, client_id: Any, client_secret: Any) -> str:
        """`POST /auth`; 401 CLIENT_KEYS_UNAUTHORIZED on a wrong pair."""
        ok = (
            isinstance(client_id, str)
            and isinstance(client_secret, str)
            and hmac.compare_digest(client_id.encode(), self.client_id.encode())
            and hmac.compare_digest(client_secret.encode(), self._client_secret.encode())
        )
        if not ok:
            raise PluggyApiError(401, "Invalid client credentials", "CLIENT_KEYS_UNAUTHORIZED")
        return self._issue("api", self.api_key_ttl_seconds, {"clientId": self.client_id})

    def issue_own_api_key(self) -> str:
        """An API key without the HTTP round trip (for tools and benchmarks)."""
        return self.issue_api_key(self.client_id, self._client_secret)

    def _issue(self, kind: KeyKind, ttl: float, claims: JsonDict, info: KeyInfo | None = None) -> str:
        now = time.time()
        token = self._jwt({"id": str(uuid.uuid4()), **claims, "iat": int(now), "exp": int(now + ttl), "kind": kind})
        key_info = info or KeyInfo(kind=kind, expires_at=now + ttl)
        key_info.expires_at = now + ttl
        with self._lock:
            self._keys[token] = key_info
        return token

    def issue_connect_token(self, item_id: Any, options: Any) -> str:
        """`POST /connect_token`; the token sees only its item and the items created with it."""
        if options is not None and not isinstance(options, dict):
            raise PluggyApiError(400, "options must be an object")
        opts: JsonDict = options or {}
        info = KeyInfo(kind="connect", expires_at=0.0)
        with self._lock:
            if item_id is not None:
                if not isinstance(item_id, str) or item_id not in self._store.items:
                    raise item_not_found()
                info.item_ids.add(item_id)
        cuid = opts.get("clientUserId")
        hook = opts.get("webhookUrl")
        if hook is not None:
            hook = self._validate_webhook_url(hook)  # the same rules as a Webhook resource (section 21)
        info.client_user_id = cuid if isinstance(cuid, str) else None
        info.webhook_url = hook
        if opts.get("products") is not None:
            info.products = check_products(opts["products"])
        claims: JsonDict = {"clientId": self.client_id, "itemId": item_id, "options": opts}
        return self._issue("connect", CONNECT_TOKEN_TTL_SECONDS, claims, info)

    def authenticate(self, key: str | None) -> KeyInfo:
        """The key's record; 403 when missing or unknown, 401 when expired."""
        with self._lock:
            info = self._keys.get(key) if key else None
        if info is None:
            raise PluggyApiError(403, "Missing or invalid authorization token")
        if info.expires_at <= time.time():
            raise PluggyApiError(401, "Expired authorization token", "API_KEY_EXPIRED")
        return info
