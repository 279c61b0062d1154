"""Run the Pluggy emulator in the foreground: `python -m pluggy_pipeline_local.emulator --port 8765`.

Secrets may come from the environment (PLUGGY_EMULATOR_CLIENT_SECRET, PLUGGY_EMULATOR_SIGNING_KEY) so they
stay out of the process list; they are never printed. Ctrl-C or SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from pluggy_pipeline_local.emulator.server import PluggyEmulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pluggy_pipeline_local.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--client-id", default=os.environ.get("PLUGGY_EMULATOR_CLIENT_ID", "emulator-client-id"))
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("PLUGGY_EMULATOR_CLIENT_SECRET", "emulator-client-secret"),
        help="default: $PLUGGY_EMULATOR_CLIENT_SECRET or the emulator's well-known default",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-scale", type=float, default=1.0, help="scales the 60 s webhook retry interval")
    parser.add_argument("--page-size", type=int, default=500, help="results per /v2/transactions page")
    parser.add_argument("--api-key-ttl", type=float, default=7200.0, help="API key lifetime in seconds")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per route per window (off by default)")
    parser.add_argument("--rate-limit-window", type=float, default=60.0, help="rate-limit window in seconds")
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        rate_limit_per_minute=args.rate_limit,
        rate_limit_window_seconds=args.rate_limit_window,
        webhook_timeout_seconds=args.webhook_timeout,
        allow_loopback_webhooks=not args.strict_webhook_urls,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    # Also handle SIGINT explicitly: a shell that starts us in the background sets it to "ignore".
    signal.signal(signal.SIGINT, _on_signal)
    base_url = emulator.start()
    signed = "signed" if args.signing_key else "unsigned"
    print(f"Pluggy emulator on {base_url} (client id {args.client_id}, webhooks {signed}); Ctrl-C stops it", flush=True)
    try:
        stop.wait()
    finally:
        emulator.stop()
        print("Pluggy emulator stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
