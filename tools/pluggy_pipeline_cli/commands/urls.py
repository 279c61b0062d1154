"""`webhook-url` and `connect-token`: the URL-token route, for deliveries that cannot carry a header.

Pluggy sends an item's or a Connect token's `webhookUrl` deliveries without the custom headers a Webhook
resource carries, so the shared-secret header cannot authenticate them; the token in the path does
(`POST /webhooks/pluggy/{token}`, derived from the webhook secret, rotated with it).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from typing import Any

from pluggy_pipeline.errors import PipelineError
from pluggy_pipeline.observability import logger
from pluggy_pipeline.pluggy_client import PluggyAuthError, PluggyClient

from pluggy_pipeline_cli.app_api import AppApi
from pluggy_pipeline_cli.commands._common import add_target_options, target_of
from pluggy_pipeline_cli.targets import CliError, PluggyCredentials, Target, local_target


def masked_token_url(url: str) -> str:
    """The URL with its token cut to 4 characters: enough to tell two apart, not enough to use."""
    base, _, token = url.rpartition("/")
    return f"{base}/{token[:4]}…"


def _target(args: argparse.Namespace) -> Target:
    if getattr(args, "local", False) and args.stack:
        raise CliError("--local and --stack are exclusive")
    return local_target() if getattr(args, "local", False) else target_of(args)


def call_pluggy(
    base_url: str, credentials: PluggyCredentials, action: Callable[[PluggyClient], Any], *, auth_hint: str = ""
) -> Any:
    """Run `action(client)` with a Pluggy client; Pluggy's refusals become CLI errors."""
    client = PluggyClient(base_url, lambda: (credentials.client_id, credentials.client_secret))
    shared = logging.getLogger(logger.name)  # the functions' logger, which PluggyClient logs to
    level = shared.level
    shared.setLevel(max(level, logging.WARNING))  # its INFO lines are for CloudWatch, not this output
    try:
        return action(client)
    except PluggyAuthError as exc:
        raise CliError(f"Pluggy refused the credentials: {exc}{auth_hint}") from None
    except PipelineError as exc:
        raise CliError(f"Pluggy refused: {type(exc).__name__}: {exc}") from None
    finally:
        shared.setLevel(level)
        client.close()


def call_target(target: Target, action: Callable[[PluggyClient], Any]) -> Any:
    return call_pluggy(target.pluggy_base_url, target.pluggy_credentials(), action)


def cmd_webhook_url(args: argparse.Namespace) -> int:
    target = _target(args)
    with_token = target.webhook_url_with_token()
    shown = with_token if args.show_token else masked_token_url(with_token)
    if args.json:
        print(json.dumps({"headerRoute": target.webhook_url, "headerName": target.secret_header, "tokenRoute": shown}))
        return 0
    print(f"header route     {target.webhook_url}   (secret in header {target.secret_header})")
    print(f"URL-token route  {shown}")
    if not args.show_token:
        print("  (token hidden; --show-token prints it: treat the URL as a secret)")
    return 0


def cmd_connect_token(args: argparse.Namespace) -> int:
    target = _target(args)
    if target.api_base_url and not args.direct:
        # The stack's own route, as the app's backend calls it (SigV4): the function picks the webhookUrl.
        answer = AppApi(target).connect_token(
            args.client_user_id,
            itemId=args.item_id,
            avoidDuplicates=True if args.avoid_duplicates else None,
            oauthRedirectUri=args.oauth_redirect_uri,
        )
        token = str(answer["accessToken"])
    else:
        options: dict[str, Any] = {"clientUserId": args.client_user_id, "webhookUrl": target.webhook_url_with_token()}
        if args.avoid_duplicates:
            options["avoidDuplicates"] = True
        if args.oauth_redirect_uri:
            options["oauthRedirectUri"] = args.oauth_redirect_uri
        token = call_target(target, lambda client: client.create_connect_token(args.item_id, options))
    if args.json:
        print(json.dumps({"accessToken": token, "itemId": args.item_id, "clientUserId": args.client_user_id}))
    else:
        print(token)
    return 0


def add_parsers(commands: Any) -> None:
    url = commands.add_parser(
        "webhook-url",
        help="print the webhook URLs: header route, and URL-token route for per-item webhookUrl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    url.add_argument("--show-token", action="store_true", help="print the token in full (it is a secret)")
    url.add_argument("--local", action="store_true", help="the running local stack")
    url.add_argument("--json", action="store_true")
    add_target_options(url)
    url.set_defaults(func=cmd_webhook_url)

    token = commands.add_parser(
        "connect-token",
        help="mint a Connect token whose webhookUrl is the pipeline's URL-token route",
        description=(
            "Through the stack's POST /connect-token (SigV4-signed with your AWS credentials, as your backend "
            "calls it), or with --direct straight at Pluggy's POST /connect_token: either way options.webhookUrl "
            "is the pipeline's URL-token route, so the item's deliveries (which carry no custom header) are "
            "authenticated. Prints the accessToken (30 minutes)."
        ),
    )
    token.add_argument("--client-user-id", required=True, help="your user's id, echoed in item/* webhooks")
    token.add_argument("--item-id", help="update mode: the token only updates this item (e.g. after LOGIN_ERROR)")
    token.add_argument("--avoid-duplicates", action="store_true", help="refuse a second item of the same user")
    token.add_argument("--oauth-redirect-uri", help="where Open Finance OAuth returns")
    token.add_argument("--local", action="store_true", help="the running local stack")
    token.add_argument(
        "--direct", action="store_true", help="call Pluggy with the stack's credentials instead of its route"
    )
    token.add_argument("--json", action="store_true")
    add_target_options(token)
    token.set_defaults(func=cmd_connect_token)
