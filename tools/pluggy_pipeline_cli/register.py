"""Create or update the Pluggy webhook that points at a pipeline (seed 002's setup_pluggy_webhook)."""

from __future__ import annotations

from typing import Any

from pluggy_pipeline.pluggy_client import PluggyClient


def register_webhook(
    client: PluggyClient, url: str, header_name: str, secret: str, *, force: bool = False, event: str = "all"
) -> dict[str, Any]:
    """Idempotent: an existing webhook for `url` is kept as is, or brought up to date with --force.

    Returns {"action": "created" | "updated" | "unchanged", "webhook": <Pluggy's webhook object>}.
    "Up to date" means: event, the secret header present, and enabled (Pluggy disables a webhook after
    repeated delivery failures; re-registering with --force re-enables it).
    """
    existing = [w for w in client.list_webhooks() if w.get("url") == url]
    if not existing:
        webhook = client.create_webhook(url, event=event, headers={header_name: secret})
        return {"action": "created", "webhook": webhook}
    webhook = existing[0]
    stale = webhook.get("event") != event or webhook.get("disabledAt") is not None
    if not (force or stale):
        return {"action": "unchanged", "webhook": webhook}
    updated = client.update_webhook(str(webhook["id"]), event=event, headers={header_name: secret}, enabled=True)
    return {"action": "updated", "webhook": updated}
