"""The webhook URL rules Pluggy enforces (pluggy-api.md section 21), plus the emulator's loopback exception.

Pluggy refuses with a 400 (a `{code, message}` body, no `codeDescription`): a scheme other than https, a port
other than 443, `user:pass@` in the URL, an IP literal as host, and `localhost`, `*.localhost`, `*.local`,
`*.internal` or other reserved names. The same rules apply to `POST`/`PATCH /webhooks` and to the `webhookUrl`
of an item or a connect token.

The emulator's one exception (DELIBERATE_DIFFERENCES "loopback-webhooks"): with `allow_loopback=True` a URL
whose host is this machine's loopback (127.0.0.0/8, ::1, `localhost`, or `host.docker.internal` for
containers) may use http and any port, so tests and the local stack can receive deliveries. Everything else
still follows Pluggy's rules, so a URL that Pluggy would refuse for another reason is refused here too.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import SplitResult, urlsplit

from pluggy_emulator.common import PluggyApiError

# Messages as Pluggy words them where a source quotes one (the https and IP rules, the malformed URL).
HTTPS_ONLY = "Webhook url must be a https secured url"
NOT_AN_IP = "Webhook url host can't be an IP address"
INVALID_OR_LOCAL = "Webhook url must be valid URL address and not localhost"
DEFAULT_PORT_ONLY = "Webhook url must use the default https port (443)"
NO_CREDENTIALS = "Webhook url must not contain credentials (user:password@)"

# Names that never reach a public server: RFC 6761/6762 special-use and private-use suffixes.
RESERVED_SUFFIXES = (".localhost", ".local", ".internal", ".invalid", ".test", ".example", ".home.arpa", ".lan")
LOOPBACK_NAMES = frozenset({"localhost", "host.docker.internal"})


def _bad(message: str) -> PluggyApiError:
    return PluggyApiError(400, message)  # webhook 400s carry no codeDescription (pluggy-api.md section 20)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1, `localhost` or `host.docker.internal`: the machine the emulator runs on."""
    if host in LOOPBACK_NAMES:
        return True
    address = _ip(host)
    return address is not None and address.is_loopback


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        raise _bad(INVALID_OR_LOCAL) from None


def check_webhook_url(url: Any, *, allow_loopback: bool) -> str:
    """The URL unchanged if Pluggy (or the emulator's loopback exception) accepts it; a 400 otherwise."""
    if not isinstance(url, str) or not url.strip() or any(c.isspace() for c in url):
        raise _bad(INVALID_OR_LOCAL)
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if parts.scheme not in ("http", "https") or not host:
        raise _bad(INVALID_OR_LOCAL)
    port = _port(parts)
    if parts.username is not None or parts.password is not None:
        raise _bad(NO_CREDENTIALS)
    if allow_loopback and is_loopback_host(host):
        return url
    if parts.scheme != "https":
        raise _bad(HTTPS_ONLY)
    if port is not None and port != 443:
        raise _bad(DEFAULT_PORT_ONLY)
    if _ip(host) is not None:
        raise _bad(NOT_AN_IP)
    if host == "localhost" or host.endswith(RESERVED_SUFFIXES) or "." not in host:
        raise _bad(INVALID_OR_LOCAL)
    return url
