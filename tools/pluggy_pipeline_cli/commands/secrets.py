"""`secrets put|show`: Pluggy's client credentials in a deployed stack's PluggyCredentialsSecret.

`put` stores {"clientId", "clientSecret"} (other keys already in the secret are kept). The client secret is
read from PLUGGY_CLIENT_SECRET or, with --from-stdin, from standard input (a JSON object with clientSecret
and optionally clientId, or the secret on one line, or the client id and the secret on two lines); with
neither and a terminal, it is asked for without echo. Never from the command line: arguments are visible to
every local user (ps, /proc/PID/cmdline) and end up in shell history, so they are refused.

The client id comes from --client-id, PLUGGY_CLIENT_ID or stdin's JSON/first line; by default it is the
stack's PluggyClientId parameter (else the one already in the secret).

`show` prints each secret's key names with masked values (clientId, which is not secret, in full).

`rotate` rotates the webhook secret (and with it the URL token derived from it) in two steps, so no delivery
is refused: `rotate` makes a new `current` and keeps the old one as `previous`; after Pluggy has the new
header (`register --force`, and `register --per-item` for URL-token items), `rotate --finish` drops
`previous`, which then stops working within 60 s in warm containers.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import secrets as token_source
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from botocore.exceptions import ClientError

from pluggy_pipeline_cli.commands._common import add_target_options, target_of
from pluggy_pipeline_cli.targets import CliError, Target

CLIENT_ID_ENV = "PLUGGY_CLIENT_ID"
CLIENT_SECRET_ENV = "PLUGGY_CLIENT_SECRET"  # noqa: S105 - the name of an environment variable
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MAX_SECRET_CHARS = 1024
_MAX_STDIN_CHARS = 64 * 1024
ARGV_REFUSAL = (
    "refusing to read credentials from the command line: arguments are visible to every local user "
    f"(ps, /proc/PID/cmdline) and saved in shell history. Set {CLIENT_SECRET_ENV}, pipe the secret in with "
    "--from-stdin, or run the command in a terminal to be asked for it (the arguments were not printed)"
)
_NOT_SECRET_KEYS = frozenset({"clientId"})


@dataclass(frozen=True)
class _Input:
    client_id: str | None
    client_id_source: str
    client_secret: str = field(repr=False)
    secret_origin: str


def _refuse_argv(_value: str) -> str:
    raise argparse.ArgumentTypeError(ARGV_REFUSAL)


def _parse_stdin(text: str) -> tuple[str | None, str]:
    """(client id or None, client secret) from a JSON object, one line (the secret) or two (id, secret)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            raise CliError("stdin starts with '{' but is not a JSON object") from None
        if not isinstance(data, dict):
            raise CliError("stdin's JSON must be an object with clientSecret (and optionally clientId)")
        unknown = sorted(set(data) - {"clientId", "clientSecret"})
        if unknown:
            raise CliError(f"stdin's JSON has unexpected keys {', '.join(unknown)}: use clientId and clientSecret")
        client_id, secret = data.get("clientId"), data.get("clientSecret")
        if client_id is not None and not isinstance(client_id, str):
            raise CliError("stdin's clientId must be a string")
        if not isinstance(secret, str):
            raise CliError("stdin's JSON needs clientSecret (a string)")
        return client_id, secret
    lines = [line.strip() for line in stripped.splitlines() if line.strip()]
    if len(lines) == 1:
        return None, lines[0]
    if len(lines) == 2:
        return lines[0], lines[1]
    raise CliError(
        "stdin must be a JSON object {clientId, clientSecret}, the client secret on one line, "
        "or the client id and the client secret on two lines"
    )


def _read_input(args: argparse.Namespace, stdin: TextIO) -> _Input:
    client_id: str | None = None
    id_source = ""
    if args.from_stdin:
        if stdin.isatty():
            secret, origin = getpass.getpass("Pluggy client secret (not echoed): "), "the prompt"
        else:
            text = stdin.read(_MAX_STDIN_CHARS + 1)
            if len(text) > _MAX_STDIN_CHARS:
                raise CliError("stdin is too large for Pluggy credentials")
            client_id, secret = _parse_stdin(text)
            origin = "stdin"
            id_source = "stdin" if client_id is not None else ""
    elif os.environ.get(CLIENT_SECRET_ENV):
        secret, origin = os.environ[CLIENT_SECRET_ENV], CLIENT_SECRET_ENV
    elif stdin.isatty():
        secret, origin = getpass.getpass("Pluggy client secret (not echoed): "), "the prompt"
    else:
        raise CliError(f"no client secret: set {CLIENT_SECRET_ENV}, or pipe it in with --from-stdin")
    if args.client_id:
        if client_id is not None and client_id.strip() != args.client_id.strip():
            raise CliError("--client-id and the client id on stdin differ")
        client_id, id_source = args.client_id, "--client-id"
    elif client_id is None and os.environ.get(CLIENT_ID_ENV):
        client_id, id_source = os.environ[CLIENT_ID_ENV], CLIENT_ID_ENV
    return _Input(client_id.strip() if client_id is not None else None, id_source, secret.strip(), origin)


def _validate(client_id: str, secret: str) -> None:
    # Never echo a rejected value: a secret pasted in the wrong place would end up on screen and in logs.
    if not _UUID.match(client_id):
        raise CliError("the client id is not a Pluggy client id (a UUID such as 4552bee0-b87f-48b5-896b-c23113839319)")
    if not secret:
        raise CliError("the client secret is empty")
    if len(secret) > _MAX_SECRET_CHARS or any(ch.isspace() or not ch.isprintable() for ch in secret):
        raise CliError("the client secret has spaces, control characters or is too long: is it the right value?")
    if secret.lower() == client_id.lower():
        raise CliError("the client secret equals the client id: pass Pluggy's clientSecret, not the clientId")


def _current(target: Target, arn: str) -> dict[str, Any]:
    """The secret's JSON object now ({} if it has no value yet or is not a JSON object)."""
    try:
        raw = target.secretsmanager().get_secret_value(SecretId=arn).get("SecretString") or ""
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            message = exc.response["Error"].get("Message", "").lower()
            if "staging label" in message or "secret value" in message:  # the secret exists, with no value yet
                return {}
        raise
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _credentials_arn(target: Target) -> str:
    if target.is_local:
        raise CliError(
            "secrets put needs --stack NAME: the local stack's Pluggy credentials are the emulator's, "
            "set by `pluggy-pipeline local`"
        )
    if not target.pluggy_credentials_arn:
        raise CliError(f"{target.label} has no PluggyCredentialsSecretArn output")
    return target.pluggy_credentials_arn


def cmd_put(args: argparse.Namespace) -> int:
    target = target_of(args)
    arn = _credentials_arn(target)
    given = _read_input(args, sys.stdin)
    existing = _current(target, arn)
    client_id, id_source = given.client_id, given.client_id_source
    if client_id is None:
        # The stack's parameter first: the receiver checks deliveries against it, so any other id is refused.
        stored = existing.get("clientId")
        if target.pluggy_client_id:
            client_id, id_source = target.pluggy_client_id, "the stack's PluggyClientId parameter"
        elif isinstance(stored, str) and stored.strip():
            client_id, id_source = stored.strip(), "kept from the secret"
        else:
            raise CliError(
                f"no client id: the secret has none and the stack's PluggyClientId is empty; set {CLIENT_ID_ENV} "
                "or pass --client-id"
            )
    _validate(client_id, given.client_secret)
    if target.pluggy_client_id and target.pluggy_client_id.lower() != client_id.lower():
        raise CliError(
            f"the client id {client_id} is not the stack's PluggyClientId ({target.pluggy_client_id}): its "
            "receiver would refuse that client's webhooks (403 client_id_mismatch). Deploy with "
            f"PluggyClientId={client_id} first, then run `secrets put` again"
        )
    value = {**existing, "clientId": client_id, "clientSecret": given.client_secret}
    version = target.secretsmanager().put_secret_value(SecretId=arn, SecretString=json.dumps(value))["VersionId"]
    summary = {
        "action": "stored",
        "target": target.label,
        "secretArn": arn,
        "versionId": version,
        "clientId": client_id,
        "clientIdSource": id_source,
        "clientSecretSource": given.secret_origin,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"stored: Pluggy credentials in {target.label}")
    print(f"  secret        {arn} (version {version})")
    print(f"  clientId      {client_id} ({id_source})")
    print(f"  clientSecret  set from {given.secret_origin}, not shown")
    options = "".join(f" --{name} {value}" for name in ("stack", "region", "profile") if (value := getattr(args, name)))
    print(f"next: `pluggy-pipeline register{options}` creates the Pluggy webhook with these credentials")
    return 0


def _mask(key: str, value: Any) -> str:
    if key in _NOT_SECRET_KEYS and isinstance(value, str):
        return value
    if value is None or value == "":
        return "(empty)"
    return "******** (set)"


def _describe(target: Target, name: str, arn: str) -> dict[str, Any]:
    described = target.secretsmanager().describe_secret(SecretId=arn)
    changed = described.get("LastChangedDate")
    data = _current(target, arn)
    return {
        "secret": name,
        "arn": arn,
        "lastChanged": changed.isoformat() if changed is not None else None,
        "keys": {key: _mask(key, value) for key, value in sorted(data.items())},
    }


def cmd_show(args: argparse.Namespace) -> int:
    target = target_of(args)
    secrets = [("WebhookSecret", target.webhook_secret_arn)]
    if target.pluggy_credentials_arn:
        secrets.append(("PluggyCredentialsSecret", target.pluggy_credentials_arn))
    shown = [_describe(target, name, arn) for name, arn in secrets]
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    for entry in shown:
        print(f"{entry['secret']}  {entry['arn']}")
        print(f"  last changed  {entry['lastChanged'] or 'unknown'}")
        for key, masked in entry["keys"].items():
            print(f"  {key:<13} {masked}")
        if not entry["keys"]:
            print("  (no keys)")
    return 0


# Warm receivers re-read the webhook secret at least this often (SECRETS_CACHE_SECONDS is refused above it).
SECRET_CACHE_BOUND_SECONDS = 60


def cmd_rotate(args: argparse.Namespace) -> int:
    target = target_of(args)
    arn = target.webhook_secret_arn
    current = _current(target, arn)
    old = current.get("current")
    if not isinstance(old, str) or not old:
        raise CliError("the webhook secret has no `current` value to rotate")
    now = time.time()
    if args.finish:
        if not current.get("previous"):
            raise CliError("no rotation in progress: the webhook secret has no `previous` value")
        started = float(current.get("rotationStartedAt") or 0)
        if now - started < SECRET_CACHE_BOUND_SECONDS and not args.now:
            wait = int(SECRET_CACHE_BOUND_SECONDS - (now - started)) + 1
            raise CliError(
                f"the new secret may not have reached every warm receiver yet: wait {wait} s (or --now, if Pluggy "
                "already delivers with the new header and every token-route item was updated)"
            )
        value = {k: v for k, v in current.items() if k not in {"previous", "previousUrlToken", "rotationStartedAt"}}
        action = "finished: `previous` dropped; it stops working within 60 s in warm receivers"
    else:
        if current.get("previous"):
            raise CliError("a rotation is in progress (the secret has `previous`): run `secrets rotate --finish` first")
        value = {**current, "current": token_source.token_urlsafe(36), "previous": old, "rotationStartedAt": now}
        action = "started: a new `current`, the old one kept as `previous` (both accepted)"
    target.secretsmanager().put_secret_value(SecretId=arn, SecretString=json.dumps(value))
    summary = {"secret": "WebhookSecret", "arn": arn, "action": action}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"rotation {action}")
    if not args.finish:
        stack = f"--stack {args.stack}" if args.stack else ""
        print(f"next: pluggy-pipeline register {stack} --force   (Pluggy's webhook header)")
        print(f"      pluggy-pipeline register {stack} --per-item ITEM_ID ...   (items on the URL-token route)")
        print(
            f"      then, {SECRET_CACHE_BOUND_SECONDS} s or more from now: "
            f"pluggy-pipeline secrets rotate {stack} --finish"
        )
    return 0


def add_parsers(commands: Any) -> None:
    secrets = commands.add_parser(
        "secrets",
        help="store Pluggy's client credentials in a stack (never from argv); show secrets masked",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = secrets.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    put = actions.add_parser(
        "put",
        allow_abbrev=False,  # `--client=VALUE` would otherwise be echoed back in an "ambiguous option" error
        help="store clientId/clientSecret in the stack's PluggyCredentialsSecret",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    put.add_argument(
        "--from-stdin",
        action="store_true",
        help="read the credentials from stdin: JSON {clientId?, clientSecret}, the secret alone, or id and secret "
        f"on two lines (default: ${CLIENT_SECRET_ENV})",
    )
    put.add_argument(
        "--client-id",
        help=f"Pluggy client id, not secret (default: ${CLIENT_ID_ENV}, else the one already in the secret)",
    )
    # Caught so they are refused with the reason instead of argparse echoing the value back.
    for option in ("--client-secret", "--secret", "--clientSecret"):
        put.add_argument(option, type=_refuse_argv, help=argparse.SUPPRESS)
    put.add_argument("--json", action="store_true", help="print the result as JSON (never the secret)")
    add_target_options(put)
    put.set_defaults(func=cmd_put, refuse_extra_arguments=ARGV_REFUSAL)

    show = actions.add_parser(
        "show",
        help="the stack's secrets: key names and masked values (clientId in full)",
        description="Key names of the webhook secret and of the Pluggy credentials secret, values masked.",
    )
    show.add_argument("--json", action="store_true")
    add_target_options(show)
    show.set_defaults(func=cmd_show)

    rotate = actions.add_parser(
        "rotate",
        help="rotate the webhook secret (and its URL token) in two steps without refusing a delivery",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rotate.add_argument("--finish", action="store_true", help="drop the old value (at least 60 s after the start)")
    rotate.add_argument("--now", action="store_true", help="with --finish: do not wait for the 60 s bound")
    rotate.add_argument("--json", action="store_true")
    add_target_options(rotate)
    rotate.set_defaults(func=cmd_rotate)
