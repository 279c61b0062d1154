"""`pluggy-pipeline`: the operator and developer command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from typing import Any

from pluggy_pipeline_local.cli_support import LocalContext, load_handler
from pluggy_pipeline_local.devsecrets import (
    LOCAL_PLUGGY_CLIENT_ID,
    LOCAL_SIGNING_KEY,
    LOCAL_WEBHOOK_SECRET,
    PLUGGY_SOURCE_IP,
)
from pluggy_pipeline_local.events_corpus import RECEIVER_EVENTS_DIR
from pluggy_pipeline_local.moto_server import moto_server
from pluggy_pipeline_local.template import function_environment, load_template


@contextmanager
def _environment(values: dict[str, str]) -> Any:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


DEMO_EVENTS = [
    "item-created",
    "item-updated",
    "transactions-created",
    "connector-status-updated",
    "payment-intent-completed",
    "item-created",  # Pluggy retried: a duplicate, answered 2XX and not queued again
    "bad-secret",
    "bad-signature",
    "wrong-ip",
    "malformed-json",
]


def cmd_demo(args: argparse.Namespace) -> int:
    """Receiver against moto: deliveries from events/receiver, then what landed in SQS and DynamoDB."""
    template = load_template()
    with moto_server(template) as local:
        env = function_environment(
            template,
            "ReceiverFunction",
            local.resources,
            parameters={
                "PluggyClientId": LOCAL_PLUGGY_CLIENT_ID,
                "RequireSignature": "true",
                "AllowedSourceCidrs": f"{PLUGGY_SOURCE_IP}/32",
            },
        )
        env.update(local.env, WEBHOOK_SECRET_ARN="", WEBHOOK_SECRET=LOCAL_WEBHOOK_SECRET)
        env["WEBHOOK_SIGNING_KEY"] = LOCAL_SIGNING_KEY
        # The functions log JSON to stdout; keep the summary readable unless asked for them.
        env["POWERTOOLS_LOG_LEVEL"] = "DEBUG" if args.verbose else "ERROR"
        rows = []
        with _environment(env):
            handler = load_handler("receiver")
            for name in DEMO_EVENTS:
                event = json.loads((RECEIVER_EVENTS_DIR / f"{name}.json").read_text())
                metrics = StringIO()
                with redirect_stdout(metrics):  # EMF metric blobs: CloudWatch's, not the reader's
                    response = handler(event, LocalContext())
                if args.verbose:
                    sys.stderr.write(metrics.getvalue())
                rows.append({"event": name, "status": response["statusCode"], "body": json.loads(response["body"])})
        sqs, dynamodb = local.clients["sqs"], local.clients["dynamodb"]
        depth = sqs.get_queue_attributes(
            QueueUrl=local.resources.queue_urls["EventQueue"], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        records = dynamodb.scan(TableName=local.resources.tables["EventsTable"])["Items"]
    event_log = sorted((r["eventType"]["S"], r["status"]["S"]) for r in records)
    summary = {"deliveries": rows, "queued": int(depth), "eventLog": event_log}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print("Receiver demo: ReceiverFunction's real handler against moto (resources from template.yaml)\n")
    for row in rows:
        detail = row["body"].get("eventId") or row["body"].get("message", "")
        print(f"  {row['status']}  {row['event']:<26} {detail}")
    print(f"\nMessages in EventQueue: {summary['queued']}")
    print(f"Event log (EventsTable): {len(records)} records")
    for event_type, status in event_log:
        print(f"  {event_type:<28} {status}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pluggy-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the pipeline locally on the embedded default and print a summary")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--verbose", action="store_true", help="show the functions' logs")
    demo.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
