"""`local` (the whole pipeline on this machine, in the foreground) and `demo` (the README's main job).

Both run the offline stack (moto, the Pluggy emulator: pluggy_pipeline_local), imported only when one of them
runs: building the parser and every other command work without it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from pluggy_pipeline_cli.commands._common import money, table
from pluggy_pipeline_cli.targets import CliError, read_state, state_file_path

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


def cmd_local(args: argparse.Namespace) -> int:
    if args.port < 0 or args.port > 65535:
        raise CliError("--port must be 0..65535 (0 = any free port)")
    if args.reconcile_every is not None and args.reconcile_every <= 0:
        raise CliError("--reconcile-every must be a positive number of seconds")
    if args.time_scale is not None and args.time_scale <= 0:
        raise CliError("--time-scale must be a positive number (wall seconds per emulator second)")
    _refuse_second_stack()
    # The offline stack, only now: the operator commands need none of it.
    from pluggy_pipeline_local.banner import banner  # noqa: PLC0415
    from pluggy_pipeline_local.stack import LocalStack, StackOptions  # noqa: PLC0415

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
    )
    if args.time_scale is not None:
        options.emulator_time_scale = args.time_scale
    stack = LocalStack(options)
    try:
        try:
            stack.start()  # on failure it stops whatever it started
        except OSError as exc:
            raise CliError(f"could not start: {exc} (pick another --port; 0 = any free port)") from None
        try:
            print(banner(stack, verbose=args.verbose), flush=True)
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
    counts = ", ".join(f"{kind} {n}" for kind, n in summary.get("changeEventCounts", {}).items())
    print(f"\nChange events on the bus ({counts})")
    for line in summary.get("changeEvents", []):
        print(f"  {line}")
    read = summary.get("readApi") or {}
    print(
        f"\nRead API (SigV4): {read.get('items')} items of {summary.get('user', 'the demo user')}, "
        f"{read.get('transactions')} transactions paged, {read.get('mismatched')} differing from Pluggy"
    )
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
    from pluggy_pipeline_local.demo import run_demo  # noqa: PLC0415 - the offline stack, only now

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
        metavar="WALL_SECONDS",
        help="wall seconds per emulator second: Pluggy's 60 s between webhook retries and, with --timed, the "
        "emulator's clock (default: the local stack's, which runs a 3-minute sync in under 2 s)",
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
