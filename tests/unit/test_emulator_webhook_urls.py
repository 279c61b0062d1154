"""Pluggy's webhook URL rules in the emulator (pluggy-api.md section 21) and its loopback exception."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from pluggy_emulator import PluggyApiError, PluggyEmulator
from pluggy_emulator.webhook_urls import check_webhook_url

REFUSED_BY_PLUGGY = [
    "http://example.com/hook",  # https only
    "https://example.com:8443/hook",  # port 443 only
    "https://user:pass@example.com/hook",  # no userinfo
    "https://hooks@example.com/hook",
    "https://93.184.216.34/hook",  # a domain, not an IP
    "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
    "https://localhost/hook",
    "https://api.localhost/hook",
    "https://printer.local/hook",
    "https://metadata.google.internal/hook",
    "https://intranet/hook",  # a single label never resolves publicly
    "example.com/hook",
    "ftp://example.com/hook",
    "https:///hook",
    "https://example.com:99999/hook",
    "https://exa mple.com/hook",
    "",
]
ACCEPTED_BY_PLUGGY = [
    "https://example.com/hook",
    "https://example.com:443/hook",
    "https://hooks.example.com/pluggy?tenant=1",
    "https://abc123.execute-api.sa-east-1.amazonaws.com/prod/webhooks/pluggy",
]
LOOPBACK = [
    "http://127.0.0.1:8080/webhooks/pluggy",
    "http://127.0.0.2/hook",
    "https://127.0.0.1:8443/hook",
    "http://[::1]:9000/hook",
    "http://localhost:3000/hook",
    "http://host.docker.internal:3000/hook",
]


@pytest.mark.parametrize("url", REFUSED_BY_PLUGGY + LOOPBACK)
def test_pluggy_refuses(url: str) -> None:
    with pytest.raises(PluggyApiError) as caught:
        check_webhook_url(url, allow_loopback=False)
    assert caught.value.status == 400
    assert set(caught.value.body()) == {"code", "message"}  # no codeDescription on webhook 400s


@pytest.mark.parametrize("url", ACCEPTED_BY_PLUGGY)
def test_pluggy_accepts(url: str) -> None:
    assert check_webhook_url(url, allow_loopback=False) == url
    assert check_webhook_url(url, allow_loopback=True) == url


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_exception(url: str) -> None:
    assert check_webhook_url(url, allow_loopback=True) == url


@pytest.mark.parametrize("url", [u for u in REFUSED_BY_PLUGGY if "localhost" not in u])
def test_loopback_exception_leaves_every_other_rule(url: str) -> None:
    with pytest.raises(PluggyApiError):
        check_webhook_url(url, allow_loopback=True)


def test_loopback_exception_keeps_refusing_credentials() -> None:
    with pytest.raises(PluggyApiError):
        check_webhook_url("http://user:pass@127.0.0.1:8080/hook", allow_loopback=True)


def test_messages_follow_pluggy_where_quoted() -> None:
    def message(url: str) -> str:
        with pytest.raises(PluggyApiError) as caught:
            check_webhook_url(url, allow_loopback=False)
        return caught.value.message

    assert message("http://example.com/h") == "Webhook url must be a https secured url"
    assert message("https://10.0.0.1/h") == "Webhook url host can't be an IP address"
    assert message("https://localhost/h") == "Webhook url must be valid URL address and not localhost"


# --- through the API ------------------------------------------------------------------------------------


@pytest.fixture
def strict() -> Iterator[tuple[PluggyEmulator, requests.Session]]:
    with PluggyEmulator(allow_loopback_webhooks=False, deliver_webhooks=False) as emulator:
        session = requests.Session()
        session.headers["X-API-KEY"] = emulator.issue_api_key()
        yield emulator, session
        session.close()


def test_strict_emulator_applies_the_rules_everywhere(strict: tuple[PluggyEmulator, requests.Session]) -> None:
    emulator, api = strict
    base = emulator.base_url
    loopback = "http://127.0.0.1:8080/hook"
    assert api.post(f"{base}/webhooks", json={"url": loopback, "event": "all"}, timeout=5).status_code == 400
    body = {"connectorId": 0, "parameters": {"user": "user-ok", "password": "password-ok"}, "webhookUrl": loopback}
    assert api.post(f"{base}/items", json=body, timeout=5).status_code == 400
    token = api.post(f"{base}/connect_token", json={"options": {"webhookUrl": loopback}}, timeout=5)
    assert token.status_code == 400
    item = emulator.create_item("u")
    assert api.patch(f"{base}/items/{item['id']}", json={"webhookUrl": loopback}, timeout=5).status_code == 400
    assert emulator.truth()["items"][item["id"]]["webhookUrl"] is None
    hook = api.post(f"{base}/webhooks", json={"url": "https://example.com/h", "event": "all"}, timeout=5).json()
    assert api.patch(f"{base}/webhooks/{hook['id']}", json={"url": loopback}, timeout=5).status_code == 400
    with pytest.raises(PluggyApiError):
        emulator.create_webhook(loopback)  # the Python control API follows the same rules
    assert not emulator.allow_loopback_webhooks


def test_default_emulator_accepts_loopback_receivers() -> None:
    with PluggyEmulator(deliver_webhooks=False) as emulator:
        assert emulator.allow_loopback_webhooks
        assert emulator.create_webhook("http://127.0.0.1:8080/hook")["url"] == "http://127.0.0.1:8080/hook"
        with pytest.raises(PluggyApiError):
            emulator.create_webhook("https://localhost.example.com:8443/hook")  # not loopback: Pluggy's rules


def test_duplicates_and_the_per_event_limit(strict: tuple[PluggyEmulator, requests.Session]) -> None:
    emulator, api = strict
    url = f"{emulator.base_url}/webhooks"

    def create(hook_url: str, event: str) -> requests.Response:
        return api.post(url, json={"url": hook_url, "event": event}, timeout=5)

    assert create("https://example.com/a", "item/created").status_code == 200
    duplicate = create("https://example.com/a", "item/created")
    assert duplicate.status_code == 400 and "already exists" in duplicate.json()["message"]
    assert create("https://example.com/a", "item/updated").status_code == 200  # another event: fine
    for n in range(4):
        assert create(f"https://example.com/{n}", "item/created").status_code == 200
    assert create("https://example.com/sixth", "item/created").status_code == 400  # 5 per event
    other = create("https://example.com/b", "item/deleted").json()
    moved = api.patch(f"{url}/{other['id']}", json={"event": "item/updated", "url": "https://example.com/a"}, timeout=5)
    assert moved.status_code == 400  # PATCH may not create a duplicate either
    assert api.patch(f"{url}/{other['id']}", json={"url": "https://example.com/b"}, timeout=5).status_code == 200
