"""`pluggy-pipeline`: the operator and developer command line.

Commands act on the running local stack (`pluggy-pipeline local`) unless given `--stack NAME` (a deployed
stack, found through its CloudFormation outputs).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError

from pluggy_pipeline_cli.commands import events, local, records, register, secrets, send, urls, watch
from pluggy_pipeline_cli.targets import CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pluggy-pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local.add_parsers(commands)
    send.add_parser(commands)
    register.add_parser(commands)
    events.add_parser(commands)
    records.add_parser(commands)
    urls.add_parsers(commands)
    secrets.add_parsers(commands)
    watch.add_parser(commands)
    return parser


def _aws_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"AWS {exc.operation_name}: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return f"AWS: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        refusal = getattr(args, "refuse_extra_arguments", None)
        if refusal:  # a command whose stray arguments may be secrets: refused without echoing them
            print(f"error: {refusal}", file=sys.stderr)
            return 2
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        result: int = args.func(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"error: {_aws_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (`| head`) went away: stop quietly, as the standard tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
