"""`secrets put|show`: Pluggy's client credentials in a deployed stack's PluggyCredentialsSecret.

`put` stores {"clientId", "clientSecret"} (other keys already in the secret are kept). The client secret is
read from PLUGGY_CLIENT_SECRET or, with --from-stdin, from standard input (a JSON object with clientSecret
and optionally clientId, or the secret on one line, or the client id and the secret on two lines); with
neither and a terminal, it is asked for without echo. Never from the command line: arguments are visible to
every local user (ps, /proc/PID/cmdline) and end up in shell history, so they are refused.

The client id comes from --client-id, PLUGGY_CLIENT_ID or stdin's JSON/first line; by default it is the one
already in the secret (the stack stores its PluggyClientId parameter there on deploy).

`show` prints each secret's key names with masked values (clientId, which is not secret, in full).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from botocore.exceptions import ClientError

from pluggy_pipeline_local.commands._common import add_target_options, target_of
from pluggy_pipeline_local.targets import CliError, Target

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
