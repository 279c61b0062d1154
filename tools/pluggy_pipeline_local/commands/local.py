"""`local` (the whole pipeline on this machine, in the foreground) and `demo` (the README's main job)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from pluggy_emulator import PluggyEmulator
from pluggy_emulator.state import SANDBOX_CONNECTOR_ID
from pluggy_emulator.timeline import SyncTiming
from pluggy_pipeline.records import JSON, RecordStore

from pluggy_pipeline_local.commands._common import dumps, money, plain, table, truncate
from pluggy_pipeline_local.commands.events import queue_depth, scan_events
from pluggy_pipeline_local.commands.records import all_items
from pluggy_pipeline_local.stack import LocalStack, StackOptions, sam_env_file_path
from pluggy_pipeline_local.targets import CliError, Target, read_state, state_file_path, target_from_state

LOCAL_LAMBDA_IMAGE = "pluggy-pipeline/lambda-python3.13:x86_64"  # tools/lambda-image.sh
SAM_LOCAL_PORT = 3000  # `sam local start-api`'s default
DEMO_USER = "demo-user"
DEMO_CONNECTOR = str(SANDBOX_CONNECTOR_ID)  # the emulator's sandbox connector, whose status the demo changes
MAX_DIFFERENCES = 20


# -- local ------------------------------------------------------------------------------------------


def _refuse_second_stack() -> None:
    path = state_file_path()
    if not path.exists():
        return
    try:
        state = read_state(path)
    except CliError:
        path.unlink(missing_ok=True)  # left by a stack that was killed: nothing runs behind it
        return
    raise CliError(f"a local stack is already running (pid {state.get('pid')}, {path}); stop it first")


def _print_banner(stack: LocalStack, verbose: bool) -> None:
    state = stack.describe()
    emulator = state["pluggyBaseUrl"]
    lines = [
        f"pluggy-pipeline local stack running (pid {state['pid']})",
        f"Webhook URL: {state['webhookUrl']}",
        f"Pluggy emulator URL: {emulator}  (Pluggy's API; control routes under /_emulator/)",
        _emulator_mode(stack),
        f"AWS (moto) endpoint: {state['awsEndpoint']}",
        f"State file: {state_file_path()}",
        f"The webhook is registered on the emulator (event all, secret in header {state['secretHeader']}).",
        "",
        "Send an event (authenticated with the local secret and signing key):",
        "  pluggy-pipeline send item/updated --item-id <itemId> --wait",
        "Have the emulator connect a sandbox item (Pluggy then sends item/login_succeeded, item/created):",
        f"  curl -s -X POST {emulator}/_emulator/items -H 'Content-Type: application/json' "
        """-d '{"clientUserId": "me"}'""",
        "Then: pluggy-pipeline events list | records items | dlq list",
        "",
        *_sam_lines(stack),
        "",
        "" if verbose else "(function logs hidden; --verbose shows them)",
        "Ctrl-C stops the stack.",
    ]
    print("\n".join(lines), flush=True)


def _emulator_mode(stack: LocalStack) -> str:
    options = stack.options
    if not options.emulator_timed:
        return "Emulator syncs are instant (--timed runs them through Pluggy's steps over emulator time)."
    seconds = SyncTiming().total() * options.emulator_time_scale
    return (
        f"Emulator syncs are timed: Pluggy's steps, late rows and rate limits; one emulator second takes "
        f"{options.emulator_time_scale:g} s, a sandbox sync about {seconds:.2g} s."
    )


def sam_commands(env_file: str, *, host_network: bool = True, invoke_image: str | None = None) -> dict[str, str]:
    """The `sam` command lines that run the template's functions against a local stack through `env_file`."""
    sam = ".venv-sam/bin/python tools/sam_host_network.py" if host_network else ".venv-sam/bin/sam"
    common = f"--env-vars {env_file} --parameter-overrides Architecture=x86_64"
    if invoke_image:
        common += f" --invoke-image {invoke_image} --skip-pull-image"
    return {
        "build": "PATH=$PWD/.venv/bin:$PATH .venv-sam/bin/sam build --parameter-overrides Architecture=x86_64",
        "invoke": f"{sam} local invoke ReceiverFunction -e events/receiver/item-created.json {common}",
        "invoke-processor": f"{sam} local invoke ProcessorFunction -e events/processor/poison-not-json.json {common}",
        "start-api": f"{sam} local start-api {common} --port {SAM_LOCAL_PORT}",
    }


def _sam_lines(stack: LocalStack) -> list[str]:
    state_file = stack.options.state_file
    if state_file is None:
        return []
    env_file = sam_env_file_path(state_file)
    try:
        shown = str(env_file.relative_to(Path.cwd()))
    except ValueError:
        shown = str(env_file)
    host_network = stack.options.sam_host == "127.0.0.1"
    commands = sam_commands(shown, host_network=host_network, invoke_image=LOCAL_LAMBDA_IMAGE)
    return [
        f"The real SAM CLI (Docker) against this stack: {shown} is the --env-vars file (real table and queue",
        "names, the moto endpoint, the secrets' ARNs, the emulator as Pluggy, the events/ files' allowlist).",
        "Credentials: SAM hands the shell's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and region to the function;",
        "moto accepts any:  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1",
        f"  {commands['build']}",
        "      (x86_64 machine; on arm64 drop Architecture=x86_64 and --invoke-image: SAM pulls the official image)",
        f"  {commands['invoke']}",
        f"  {commands['invoke-processor']}",
        f"  {commands['start-api']}",
        f"      then POST http://127.0.0.1:{SAM_LOCAL_PORT}/webhooks/pluggy (no stage prefix; SAM local answers",
        "      unknown paths 403 Missing Authentication Token, not the deployed API's 404; source IP 127.0.0.1)",
        (
            "  tools/sam_host_network.py runs SAM with host networking (SAM ignores --docker-network host), so the"
            " function reaches 127.0.0.1;"
            if host_network
            else f"  the functions reach this machine as {stack.options.sam_host} (--sam-host);"
        ),
        "  --invoke-image: the offline image tools/lambda-image.sh builds (drop it where SAM can pull"
        " public.ecr.aws/lambda/python:3.13). The processor of this stack already consumes EventQueue.",
    ]


def cmd_local(args: argparse.Namespace) -> int:
    if args.port < 0 or args.port > 65535:
        raise CliError("--port must be 0..65535 (0 = any free port)")
    if args.reconcile_every is not None and args.reconcile_every <= 0:
        raise CliError("--reconcile-every must be a positive number of seconds")
    if args.time_scale <= 0:
        raise CliError("--time-scale must be a positive number (wall seconds per emulator second)")
    _refuse_second_stack()
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    options = StackOptions(
        port=args.port,
        reconcile_every=args.reconcile_every,
        quiet=not args.verbose,
        state_file=state_file_path(),
        sam_host=args.sam_host,
        emulator_timed=args.timed,
        emulator_time_scale=args.time_scale,
    )
    stack = LocalStack(options)
    try:
        try:
            stack.start()  # on failure it stops whatever it started
        except OSError as exc:
            raise CliError(f"could not start: {exc} (pick another --port; 0 = any free port)") from None
        try:
            _print_banner(stack, args.verbose)
            while not stop.wait(0.2):
                pass
            print("\nstopping...", flush=True)
        finally:
            stack.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("local stack stopped", flush=True)
    return 0


# -- demo -------------------------------------------------------------------------------------------


def _normalize(value: Any) -> Any:
    """The emulator's truth with numbers as the store holds them (floats -> Decimal, via their JSON text)."""
    return json.loads(json.dumps(value), parse_float=Decimal)


def _differences(path: str, stored: Any, truth: Any, out: list[str]) -> None:
    if len(out) >= MAX_DIFFERENCES:
        return
    if isinstance(stored, Mapping) and isinstance(truth, Mapping):
        for key in sorted(set(stored) | set(truth), key=str):
            if key not in truth:
                out.append(f"{path}.{key}: only in the mirror")
            elif key not in stored:
                out.append(f"{path}.{key}: missing from the mirror")
            else:
                _differences(f"{path}.{key}", stored[key], truth[key], out)
        return
    if isinstance(stored, list) and isinstance(truth, list) and len(stored) == len(truth):
        for index, (a, b) in enumerate(zip(stored, truth, strict=True)):
            _differences(f"{path}[{index}]", a, b, out)
        return
    same_type = isinstance(stored, bool) == isinstance(truth, bool)
    if not (same_type and stored == truth):
        mirror, pluggy = truncate(dumps(stored, indent=None), 60), truncate(dumps(truth, indent=None), 60)
        out.append(f"{path}: mirror {mirror} != Pluggy {pluggy}")


def _compare_sets(what: str, stored: Mapping[str, Any], truth: Mapping[str, Any], out: list[str]) -> None:
    for key in sorted(set(truth) - set(stored)):
        out.append(f"{what} {key}: missing from the mirror")
    for key in sorted(set(stored) - set(truth)):
        out.append(f"{what} {key}: in the mirror but not in Pluggy")
    for key in sorted(set(stored) & set(truth)):
        _differences(f"{what} {key}", stored[key], truth[key], out)


def compare_mirror(target: Target, truth: Mapping[str, Any]) -> dict[str, Any]:
    """Every stored item, account and transaction (`data`) against the emulator's truth, field by field."""
    truth = _normalize(truth)
    client = target.dynamodb()
    store = RecordStore(lambda: client, target.records_table)
    differences: list[str] = []
    items = {str(r["itemId"]): r for r in all_items(target)}
    live = {item_id: r.get("data") for item_id, r in items.items() if not r.get("deleted")}
    _compare_sets("item", live, truth["items"], differences)
    for item_id in truth.get("deletedItemIds", []):
        if item_id in live:
            differences.append(f"item {item_id}: deleted in Pluggy, still live in the mirror")
    accounts = transactions = 0
    for item_id in truth["items"]:
        stored_accounts = {str(a["accountId"]): a.get("data") for a in store.accounts_of_item(item_id)}
        truth_accounts = {a: v for a, v in truth["accounts"].items() if v.get("itemId") == item_id}
        _compare_sets("account", stored_accounts, truth_accounts, differences)
        accounts += len(stored_accounts)
        for account_id in truth_accounts:
            stored_tx = {str(t["transactionId"]): t.get("data") for t in store.transactions_by_date(account_id)}
            _compare_sets(
                f"account {account_id} transaction", stored_tx, truth["transactions"][account_id], differences
            )
            transactions += len(stored_tx)
    return {
        "matches": not differences,
        "items": len(live),
        "accounts": accounts,
        "transactions": transactions,
        "differences": differences[:MAX_DIFFERENCES],
    }


def _item_state(target: Target, item_id: str) -> dict[str, Any]:
    client = target.dynamodb()
    record = RecordStore(lambda: client, target.records_table).get({"pk": f"ITEM#{item_id}", "sk": "ITEM"}) or {}
    return {k: record.get(k) for k in ("status", "executionStatus", "errorCode")}


def _events_by_type(records: list[JSON]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for record in records:
        counts.setdefault(str(record.get("eventType")), Counter())[str(record.get("status"))] += 1
    return {event: dict(sorted(c.items())) for event, c in sorted(counts.items())}


def _drive(stack: LocalStack, emulator: PluggyEmulator, target: Target, reasons: list[str]) -> list[dict[str, Any]]:
    """The demo's story, told to the emulator; the mirror's item state after each step."""
    steps: list[dict[str, Any]] = []

    def settle(step: str) -> None:
        if not stack.wait_until_idle(timeout=30):
            reasons.append(f"the pipeline did not go idle after: {step}")

    item_id = str(emulator.create_item(DEMO_USER)["id"])
    settle("create item")
    steps.append({"step": f"sandbox item connected for clientUserId {DEMO_USER}", "item": _item_state(target, item_id)})
    emulator.sync_item(item_id, add=5, change=3, delete=2, restate_credit_card=1)
    settle("sync")
    steps.append(
        {
            "step": "sync with changes: 5 new, 3 changed, 2 deleted, 1 card row restated (new id)",
            "item": _item_state(target, item_id),
        }
    )
    emulator.fail_item(item_id, "USER_AUTHORIZATION_PENDING")
    settle("item error")
    steps.append({"step": "item/error USER_AUTHORIZATION_PENDING", "item": _item_state(target, item_id)})
    emulator.reconnect_item(item_id)
    emulator.set_connector_status("UNSTABLE")
    emulator.send_payment_event("payment_intent/completed")
    settle("reconnect, connector status, payment")
    steps.append(
        {
            "step": "reconnected; connector status UNSTABLE; payment_intent/completed",
            "item": _item_state(target, item_id),
        }
    )
    return steps


def _check_processing(emulator: PluggyEmulator, records: list[JSON], reasons: list[str]) -> None:
    """Every event Pluggy sent was delivered, logged and PROCESSED."""
    not_processed = [r for r in records if r.get("status") != "PROCESSED"]
    if not_processed:
        listed = ", ".join(f"{r.get('eventType')} {r.get('status')}" for r in not_processed[:5])
        reasons.append(f"{len(not_processed)} event(s) not PROCESSED: {listed}")
    logged = {str(r.get("eventId")) for r in records}
    emitted = emulator.events()
    missing = [e for e in emitted if "eventId" in e["payload"] and e["eventId"] not in logged]
    if missing:
        reasons.append(f"{len(missing)} emitted event(s) missing from the event log")
    if len(records) < len(emitted):
        reasons.append(f"Pluggy sent {len(emitted)} events, the log holds {len(records)}")
    dropped = [d for d in emulator.deliveries() if d.get("outcome") == "dropped"]
    if dropped:
        reasons.append(f"{len(dropped)} webhook delivery(ies) dropped by Pluggy")


def _inventory(target: Target) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items, accounts with their transaction counts) as the mirror holds them."""
    client = target.dynamodb()
    store = RecordStore(lambda: client, target.records_table)
    items = [{k: r.get(k) for k in ("itemId", "status", "executionStatus", "errorCode")} for r in all_items(target)]
    accounts = []
    for item in items:
        for account in store.accounts_of_item(str(item["itemId"])):
            data = account.get("data") or {}
            accounts.append(
                {
                    "id": account["accountId"],
                    "itemId": item["itemId"],
                    **{k: data.get(k) for k in ("name", "type", "subtype", "balance", "currencyCode")},
                    "transactions": sum(1 for _ in store.transaction_keys_of_account(str(account["accountId"]))),
                }
            )
    return items, accounts


def _connector_status(target: Target, truth: Mapping[str, Any], reasons: list[str]) -> str | None:
    client = target.dynamodb()
    stored = RecordStore(lambda: client, target.records_table).get(
        {"pk": f"CONNECTOR#{DEMO_CONNECTOR}", "sk": "STATUS"}
    )
    expected: Mapping[str, Any] = next((c for c in truth["connectors"] if str(c.get("id")) == DEMO_CONNECTOR), {})
    status = stored.get("status") if stored else None
    if status is None:
        reasons.append("the connector status was not stored")
    elif status != (expected.get("health") or {}).get("status"):
        reasons.append("the stored connector status differs from Pluggy's")
    return str(status) if status is not None else None


def run_demo(verbose: bool = False) -> dict[str, Any]:
    """Run the demo on a private local stack; the summary (JSON-ready), with `ok` and the `reasons` if not."""
    started = time.monotonic()
    reasons: list[str] = []
    with LocalStack(StackOptions(port=0, state_file=None, quiet=not verbose)) as stack:
        emulator = stack.emulator
        if emulator is None:
            raise CliError("the local stack started without its Pluggy emulator")
        target = target_from_state(stack.describe())
        steps = _drive(stack, emulator, target, reasons)
        records = list(scan_events(target))
        _check_processing(emulator, records, reasons)
        dlq, queued = queue_depth(target, target.dlq_url), queue_depth(target, target.queue_url)
        if dlq:
            reasons.append(f"{dlq} message(s) in the dead-letter queue")
        if queued:
            reasons.append(f"{queued} message(s) still in EventQueue")
        truth = emulator.truth()
        mirror = compare_mirror(target, truth)
        if not mirror["matches"]:
            reasons.append(f"the mirror differs from Pluggy's data ({len(mirror['differences'])}+ differences)")
        items, accounts = _inventory(target)
        summary = {
            "ok": not reasons,
            "reasons": reasons,
            "steps": steps,
            "items": items,
            "accounts": accounts,
            "events": _events_by_type(records),
            "eventCount": len(records),
            "webhookDeliveries": len(emulator.deliveries()),
            "connector": {"id": DEMO_CONNECTOR, "status": _connector_status(target, truth, reasons)},
            "dlqDepth": dlq,
            "queueDepth": queued,
            "mirror": mirror,
        }
    summary["ok"] = not reasons
    summary["elapsedSeconds"] = round(time.monotonic() - started, 1)
    result: dict[str, Any] = plain(summary)
    return result


def _describe_item(state: Mapping[str, Any]) -> str:
    error = f", error {state['errorCode']}" if state.get("errorCode") else ""
    return f"{state.get('status')} / {state.get('executionStatus')}{error}"


def print_summary(summary: Mapping[str, Any]) -> None:
    print("pluggy-pipeline demo: moto + the real receiver and processor + the Pluggy emulator, all local\n")
    print("Steps (mirror's item state after each)")
    for index, step in enumerate(summary["steps"], 1):
        print(f"  {index}. {step['step']}\n       -> {_describe_item(step['item'])}")
    print("\nItems")
    rows = [[i["itemId"], i["status"], i["executionStatus"], i["errorCode"] or ""] for i in summary["items"]]
    print(_indent(table(["ID", "STATUS", "EXECUTION", "ERROR"], rows)))
    print("\nAccounts")
    rows = [
        [a["name"], f"{a['type']}/{a['subtype']}", money(a["balance"], a["currencyCode"]), a["transactions"]]
        for a in summary["accounts"]
    ]
    print(_indent(table(["NAME", "TYPE", "BALANCE", "TRANSACTIONS"], rows)))
    print(f"\nEvents (EventsTable: {summary['eventCount']}; {summary['webhookDeliveries']} webhook deliveries)")
    rows = [
        [event, ", ".join(f"{s} {n}" for s, n in statuses.items())] for event, statuses in summary["events"].items()
    ]
    print(_indent(table(["TYPE", "STATUS"], rows)))
    print(f"\nConnector {summary['connector']['id']} status: {summary['connector']['status']}")
    print(f"Dead-letter queue depth: {summary['dlqDepth']}   EventQueue depth: {summary['queueDepth']}")
    mirror = summary["mirror"]
    verdict = "MATCHES" if mirror["matches"] else "DIFFERS from"
    print(
        f"Mirror {verdict} the emulator's data field by field "
        f"({mirror['items']} item, {mirror['accounts']} accounts, {mirror['transactions']} transactions)"
    )
    for difference in mirror["differences"]:
        print(f"  {difference}")
    print()
    if summary["ok"]:
        print(f"OK: every event processed, nothing parked, mirror faithful ({summary['elapsedSeconds']} s)")
    else:
        print(f"FAILED ({summary['elapsedSeconds']} s):")
        for reason in summary["reasons"]:
            print(f"  - {reason}")


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def cmd_demo(args: argparse.Namespace) -> int:
    summary = run_demo(verbose=args.verbose)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    if not summary["ok"]:
        print("demo failed: " + "; ".join(summary["reasons"]), file=sys.stderr)
        return 1
    return 0


def add_parsers(commands: Any) -> None:
    local = commands.add_parser(
        "local",
        help="run the whole pipeline locally in the foreground (Ctrl-C stops it)",
        description=(
            "Run the pipeline on this machine: moto as AWS (the template's tables, queues, secrets), an HTTP "
            "front calling the real ReceiverFunction, SQS trigger emulation calling the real ProcessorFunction, "
            "and the Pluggy emulator with the webhook registered. Other commands find it through its state file "
            "($PLUGGY_PIPELINE_STATE_FILE, default .local-stack.json), removed on exit. Ctrl-C or SIGTERM stops it."
        ),
    )
    local.add_argument("--port", type=int, default=8080, help="webhook HTTP port (default 8080; 0 = any free port)")
    local.add_argument(
        "--reconcile-every", type=float, metavar="SECONDS", help="put pipeline/reconcile in the queue this often"
    )
    local.add_argument("--verbose", action="store_true", help="show the functions' logs")
    local.add_argument(
        "--timed",
        action="store_true",
        help="the Pluggy emulator runs syncs like Pluggy: in the background through its execution steps, with "
        "rows that arrive after UPDATED and Pluggy's rate limits (default: instant syncs)",
    )
    local.add_argument(
        "--time-scale",
        type=float,
        default=StackOptions.emulator_time_scale,
        metavar="WALL_SECONDS",
        help="wall seconds per emulator second: Pluggy's 60 s between webhook retries and, with --timed, the "
        "emulator's clock (default %(default)s: a 3-minute sync in under 2 s)",
    )
    local.add_argument(
        "--sam-host",
        default="127.0.0.1",
        metavar="HOST",
        help=(
            "how `sam local` containers reach this machine's 127.0.0.1, in the --env-vars file written beside the "
            "state file (default 127.0.0.1: host networking, tools/sam_host_network.py; host.docker.internal "
            "on Docker Desktop)"
        ),
    )
    local.set_defaults(func=cmd_local)

    demo = commands.add_parser(
        "demo",
        help="run the main job end to end locally and check the mirror against Pluggy's data",
        description=(
            "Start a private local stack (own ports, no state file, so it runs beside `local`), connect a sandbox "
            "item, sync it with new, changed, deleted and restated transactions, fail it with "
            "USER_AUTHORIZATION_PENDING and reconnect it, change a connector's status and complete a payment; "
            "then print items, accounts, events and the DLQ, and compare every stored record with the emulator's "
            "data field by field. Exit 0 only if everything was processed and the mirror matches."
        ),
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--verbose", action="store_true", help="show the functions' logs")
    demo.set_defaults(func=cmd_demo)
