"""Run the Pluggy emulator in the foreground: `python -m pluggy_emulator --port 8765`.

Secrets may come from the environment (PLUGGY_EMULATOR_CLIENT_SECRET, PLUGGY_EMULATOR_SIGNING_KEY) so they
stay out of the process list; they are never printed. Ctrl-C or SIGTERM stops it cleanly. `--timed` runs
syncs like Pluggy, over minutes (or faster with `--time-scale`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from pluggy_emulator.rate_limits import RateLimits
from pluggy_emulator.server import PluggyEmulator
from pluggy_emulator.timeline import SyncTiming

STEP_NAMES = tuple(f.name for f in dataclasses.fields(SyncTiming) if f.name not in ("late_fraction", "late_delay"))


def _step(text: str) -> tuple[str, float]:
    name, _, seconds = text.partition("=")
    if name not in STEP_NAMES:
        raise argparse.ArgumentTypeError(f"unknown step {name!r}; one of {', '.join(STEP_NAMES)}")
    try:
        return name, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be a number") from None


def _delay(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        return float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: MIN,MAX seconds") from None


def _start_time(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: an ISO 8601 date-time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pluggy_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--client-id", default=os.environ.get("PLUGGY_EMULATOR_CLIENT_ID", "emulator-client-id"))
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("PLUGGY_EMULATOR_CLIENT_SECRET", "emulator-client-secret"),
        help="default: $PLUGGY_EMULATOR_CLIENT_SECRET or the emulator's well-known default",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="wall seconds per emulator second: scales the 60 s webhook retry interval and, with --timed, the "
        "emulator's clock (0.01: a 3-minute sync in 1.75 s)",
    )
    parser.add_argument("--page-size", type=int, default=500, help="results per /v2/transactions page")
    parser.add_argument("--api-key-ttl", type=float, default=7200.0, help="API key lifetime in seconds")
    limits = parser.add_mutually_exclusive_group()
    limits.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help="requests per route per window (default: off, Pluggy's with --timed)",
    )
    limits.add_argument(
        "--pluggy-rate-limits", action="store_true", help="Pluggy's per-endpoint limits (360/min reads, 20/min PATCH)"
    )
    limits.add_argument("--no-rate-limit", action="store_true", help="no rate limit, even with --timed")
    parser.add_argument(
        "--rate-limit-window",
        type=float,
        default=60.0,
        help="rate-limit window in seconds (emulator seconds with --timed)",
    )
    timed = parser.add_argument_group("timed mode (syncs run in the background through Pluggy's execution steps)")
    timed.add_argument("--timed", action="store_true", help="run syncs over emulator time, like Pluggy")
    timed.add_argument(
        "--step",
        type=_step,
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help=f"a step's emulator seconds (repeatable): {', '.join(STEP_NAMES)}",
    )
    timed.add_argument(
        "--late-fraction", type=float, default=None, help="share of a sync's new rows that arrive after UPDATED (0.1)"
    )
    timed.add_argument(
        "--late-delay", type=_delay, default=None, metavar="MIN,MAX", help="emulator seconds after UPDATED (15,90)"
    )
    parser.add_argument(
        "--start-time",
        type=_start_time,
        default=None,
        metavar="ISO",
        help="the emulator clock's start (default now; it runs on from there with --timed, stands still without)",
    )
    parser.add_argument("--webhook-timeout", type=float, default=5.0, help="webhook delivery timeout in seconds")
    parser.add_argument(
        "--strict-webhook-urls",
        action="store_true",
        help="refuse loopback (http://127.0.0.1:...) webhook URLs too, exactly as Pluggy does",
    )
    parser.add_argument(
        "--signing-key",
        default=os.environ.get("PLUGGY_EMULATOR_SIGNING_KEY"),
        help="HMAC key for X-Pluggy-Signature (default: $PLUGGY_EMULATOR_SIGNING_KEY; unset = unsigned)",
    )
    return parser


def _timing(args: argparse.Namespace, parser: argparse.ArgumentParser) -> SyncTiming | None:
    changes: dict[str, Any] = dict(args.step)
    if args.late_fraction is not None:
        changes["late_fraction"] = args.late_fraction
    if args.late_delay is not None:
        changes["late_delay"] = args.late_delay
    if not args.timed:
        if changes:
            parser.error("--step, --late-fraction and --late-delay need --timed")
        return None
    try:
        return dataclasses.replace(SyncTiming(), **changes)
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    timing = _timing(args, parser)
    if timing is not None and args.time_scale <= 0:
        parser.error("--timed needs --time-scale > 0")
    rate_limit: RateLimits = "auto"
    if args.rate_limit is not None:
        rate_limit = args.rate_limit
    elif args.pluggy_rate_limits:
        rate_limit = "pluggy"
    elif args.no_rate_limit:
        rate_limit = None
    start = args.start_time
    emulator = PluggyEmulator(
        args.client_id,
        args.client_secret,
        host=args.host,
        port=args.port,
        seed=args.seed,
        api_key_ttl_seconds=args.api_key_ttl,
        time_scale=args.time_scale,
        page_size=args.page_size,
        signing_key=args.signing_key,
        rate_limit_per_minute=rate_limit,
        rate_limit_window_seconds=args.rate_limit_window,
        webhook_timeout_seconds=args.webhook_timeout,
        allow_loopback_webhooks=not args.strict_webhook_urls,
        clock=(lambda: start) if start is not None else None,
        sync_timing=timing,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    # Also handle SIGINT explicitly: a shell that starts us in the background sets it to "ignore".
    signal.signal(signal.SIGINT, _on_signal)
    base_url = emulator.start()
    signed = "signed" if args.signing_key else "unsigned"
    mode = f"timed, time scale {args.time_scale:g}" if timing is not None else "instant syncs"
    print(
        f"Pluggy emulator on {base_url} (client id {args.client_id}, webhooks {signed}, {mode}); Ctrl-C stops it",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        emulator.stop()
        print("Pluggy emulator stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
