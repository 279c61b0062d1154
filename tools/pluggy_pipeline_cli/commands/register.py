"""`register`: create or update the Pluggy webhook pointing at a pipeline (seed 002's setup_pluggy_webhook)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from pluggy_pipeline_cli.commands._common import add_target_options, target_of
from pluggy_pipeline_cli.commands.urls import call_pluggy, call_target, masked_token_url
from pluggy_pipeline_cli.register import register_webhook
from pluggy_pipeline_cli.targets import (
    DEFAULT_PLUGGY_URL,
    DEFAULT_SECRET_HEADER,
    CliError,
    PluggyCredentials,
    credentials_from_env,
    local_target,
)

SECRET_ENV = "PLUGGY_WEBHOOK_SECRET"  # noqa: S105 - the name of an environment variable


def _plan(args: argparse.Namespace) -> tuple[str, str, str, str, PluggyCredentials, str]:
    """(webhook url, header name, secret, Pluggy base url, credentials, where) for the chosen target."""
    if args.stack or args.local or not args.url:
        target = local_target() if args.local else target_of(args)
        url = args.url or target.webhook_url
        header = args.header_name or target.secret_header
        secret = target.webhook_secret().current
        if target.is_local:
            if args.pluggy_url:
                raise CliError("--pluggy-url does not apply to the local stack (its Pluggy is the emulator)")
            base = target.pluggy_base_url
            where = f"the local Pluggy emulator ({base})"
        else:
            base = args.pluggy_url or target.pluggy_base_url
            where = f"Pluggy ({base})"
        return url, header, secret, base, target.pluggy_credentials(), where
    if args.region or args.profile:
        raise CliError("--region and --profile only apply with --stack")
    credentials = credentials_from_env()
    if credentials is None:
        raise CliError("set PLUGGY_CLIENT_ID and PLUGGY_CLIENT_SECRET (or use --stack for the stack's secret)")
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise CliError(f"set {SECRET_ENV} to the secret your receiver expects (or use --stack)")
    base = args.pluggy_url or DEFAULT_PLUGGY_URL
    return args.url, args.header_name or DEFAULT_SECRET_HEADER, secret, base, credentials, f"Pluggy ({base})"


def cmd_per_item(args: argparse.Namespace) -> int:
    """PATCH each item's webhookUrl to the URL-token route (Pluggy then delivers that item's events there too)."""
    if args.url:
        raise CliError("--per-item sets the target's URL-token route; --url does not apply")
    target = local_target() if args.local else target_of(args)
    url = target.webhook_url_with_token()
    items: list[dict[str, Any]] = call_target(
        target, lambda client: [client.update_item(item_id, webhookUrl=url) for item_id in args.per_item]
    )
    results = [
        {"itemId": item_id, "webhookUrl": masked_token_url(str(item.get("webhookUrl") or ""))}
        for item_id, item in zip(args.per_item, items, strict=True)
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        print(f"updated: item {result['itemId']} webhookUrl {result['webhookUrl']} (URL-token route; a sync starts)")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    if args.local and args.stack:
        raise CliError("--local and --stack are exclusive")
    if args.per_item:
        return cmd_per_item(args)
    url, header, secret, base, credentials, where = _plan(args)
    hint = " (is the real clientSecret in the stack's PluggyCredentialsSecret?)" if args.stack else ""
    result = call_pluggy(
        base,
        credentials,
        lambda client: register_webhook(client, url, header, secret, force=args.force),
        auth_hint=hint,
    )
    webhook = result["webhook"]
    # Never the headers: they hold the secret.
    summary = {
        "action": result["action"],
        "webhookId": webhook.get("id"),
        "url": webhook.get("url"),
        "event": webhook.get("event"),
        "headerName": header,
        "enabled": webhook.get("disabledAt") is None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['action']}: webhook {summary['webhookId']} on {where}")
    print(f"  url     {summary['url']}")
    print(f"  event   {summary['event']}, secret in header {header}")
    if result["action"] == "unchanged":
        print("  (already up to date; --force rewrites it, e.g. after rotating the secret)")
    return 0


def add_parser(commands: Any) -> None:
    register = commands.add_parser(
        "register",
        help="create or update the Pluggy webhook (event all, secret header) for a pipeline",
        description=(
            "Create or update Pluggy's webhook for a pipeline, idempotently: an up-to-date webhook is left "
            "unchanged unless --force (which also re-enables a webhook Pluggy disabled). Targets: no options = "
            "the local stack's URL on the local Pluggy emulator; --stack NAME = the stack's WebhookUrl, secret "
            "and Pluggy credentials (PLUGGY_CLIENT_ID/PLUGGY_CLIENT_SECRET override them); --url URL alone = "
            f"that URL on Pluggy with credentials from PLUGGY_CLIENT_ID/PLUGGY_CLIENT_SECRET and ${SECRET_ENV}."
        ),
    )
    register.add_argument("--url", help="webhook URL to register (default: the target's WebhookUrl)")
    register.add_argument("--force", action="store_true", help="update an existing webhook even if up to date")
    register.add_argument(
        "--header-name", help=f"secret header name (default: the target's, or {DEFAULT_SECRET_HEADER})"
    )
    register.add_argument("--pluggy-url", help=f"Pluggy API base URL (default {DEFAULT_PLUGGY_URL})")
    register.add_argument("--local", action="store_true", help="register on the local stack's Pluggy emulator")
    register.add_argument("--json", action="store_true", help="print the result as JSON (never the headers)")
    register.add_argument(
        "--per-item",
        action="append",
        metavar="ITEM_ID",
        help=(
            "instead: set this item's webhookUrl to the URL-token route (repeatable). Pluggy sends an item's "
            "webhookUrl deliveries without custom headers, so the secret header cannot authenticate them"
        ),
    )
    add_target_options(register)
    register.set_defaults(func=cmd_register)
