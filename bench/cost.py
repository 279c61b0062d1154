"""Monthly AWS cost for 10k, 1M and 100M webhooks, from calls and durations measured in this run.

The real receiver and processor run in-process against moto (resources from template.yaml) and the Pluggy
emulator, on a realistic mix of events. Botocore hooks count every AWS request and the size of every item
written, so DynamoDB capacity units come from the bytes we actually write. Function time is measured here
(compute only) plus a stated network allowance per AWS and Pluggy call. Prices are public list prices
(us-east-1), written below with their date; the free tier is ignored. Writes docs/cost.md as well.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from bench import Measure, Section, Table

ROOT = Path(__file__).resolve().parents[1]
COST_DOC = ROOT / "docs" / "cost.md"

# Public list prices, us-east-1, as published in 2026 (USD). Only these are constants here.
PRICES = {
    "api_gateway_rest_per_million": 3.50,
    "lambda_request_per_million": 0.20,
    "lambda_arm_gb_second": 0.0000133334,
    "sqs_fifo_per_million_requests": 0.50,
    "dynamodb_write_request_unit_per_million": 0.625,
    "dynamodb_read_request_unit_per_million": 0.125,
    "cloudwatch_logs_ingest_per_gb": 0.50,
    "secrets_manager_secret_month": 0.40,
}
# Allowances for what this machine cannot measure (network to AWS and Pluggy from Lambda): stated, not hidden.
AWS_CALL_MS = 8.0
PLUGGY_CALL_MS = 150.0
RECEIVER_MEMORY_GB = 0.25  # template MemorySize 256
PROCESSOR_MEMORY_GB = 0.5  # template MemorySize 512
LOG_BYTES_PER_INVOCATION = 1200  # START/END/REPORT lines + one JSON line + one EMF blob
# An illustrative hosted webhook gateway price per million events; replace with your vendor's quote.
HOSTED_GATEWAY_PER_MILLION = 25.0
VOLUMES = (10_000, 1_000_000, 100_000_000)


@dataclass
class Usage:
    requests: Counter[str]
    write_units: int = 0
    read_units: int = 0
    pluggy_calls: int = 0
    compute_ms: float = 0.0
    invocations: int = 0


def _item_kb(item: dict[str, Any]) -> int:
    return max(1, math.ceil(len(json.dumps(item, default=str).encode()) / 1024))


@contextmanager
def _counting(usage: Usage) -> Iterator[None]:
    """Count AWS requests and capacity units of every client pluggy_pipeline creates."""
    from pluggy_pipeline import aws

    def before_call(model: Any, params: dict[str, Any], **_: Any) -> None:
        name = f"{model.service_model.service_name}.{model.name}"
        usage.requests[name] += 1
        if model.name in {"PutItem"}:
            usage.write_units += _item_kb(params["Item"])
        elif model.name in {"UpdateItem", "DeleteItem"}:
            usage.write_units += 1
        elif model.name == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                for request in requests:
                    put = request.get("PutRequest")
                    usage.write_units += _item_kb(put["Item"]) if put else 1
        elif model.name in {"GetItem", "Query"}:
            usage.read_units += 1  # one 4 KB strongly consistent unit per call (our reads are small)

    original = aws._session

    def session() -> Any:
        created = original()
        created.events.register("before-parameter-build", before_call, unique_id="bench-cost")
        return created

    aws._session.cache_clear()
    aws.reset_clients()
    # Swap the cached session factory for the run so every client the functions create carries the hook.
    aws._session = session  # type: ignore[assignment]
    try:
        yield
    finally:
        aws._session = original
        aws.reset_clients()


def _measure(quick: bool) -> tuple[Usage, Usage, int, dict[str, int]]:
    """Run a day of a typical item through both functions; return receiver and processor usage."""
    from pluggy_emulator import PluggyEmulator
    from pluggy_pipeline.observability import logger
    from pluggy_pipeline.processor import QueueMessage, get_processor
    from pluggy_pipeline.receiver import get_receiver
    from pluggy_pipeline_local.devsecrets import (
        LOCAL_PLUGGY_CLIENT_ID,
        LOCAL_PLUGGY_CLIENT_SECRET,
        LOCAL_SIGNING_KEY,
        LOCAL_WEBHOOK_SECRET,
    )
    from pluggy_pipeline_local.handlers import LocalContext, load_handler
    from pluggy_pipeline_local.stack import proxy_event_from_http
    from pluggy_pipeline_local.template import create_resources, function_environment, load_template

    template = load_template()
    receiver_usage, processor_usage = Usage(Counter()), Usage(Counter())
    items = 2 if quick else 6
    saved = dict(os.environ)
    emulator = PluggyEmulator(LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET, signing_key=LOCAL_SIGNING_KEY)
    try:
        with mock_aws():
            os.environ.update(
                AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1"
            )
            os.environ.pop("AWS_ENDPOINT_URL", None)
            clients = {n: boto3.client(n, region_name="us-east-1") for n in ("dynamodb", "sqs", "secretsmanager")}
            resources = create_resources(template, **clients)
            emulator.start()
            params = {"PluggyClientId": LOCAL_PLUGGY_CLIENT_ID, "PluggyApiBaseUrl": emulator.base_url}
            for function in ("ReceiverFunction", "ProcessorFunction"):
                os.environ.update(function_environment(template, function, resources, params))
            os.environ.update(
                WEBHOOK_SECRET_ARN="",
                WEBHOOK_SECRET=LOCAL_WEBHOOK_SECRET,
                PLUGGY_CREDENTIALS_SECRET_ARN="",
                PLUGGY_CLIENT_SECRET=LOCAL_PLUGGY_CLIENT_SECRET,
                POWERTOOLS_METRICS_DISABLED="true",
                POWERTOOLS_LOG_LEVEL="ERROR",
            )
            get_receiver.cache_clear()
            get_processor.cache_clear()
            logger.setLevel("ERROR")
            receiver = load_handler("receiver")
            queue_url = resources.queue_urls["EventQueue"]
            sqs = clients["sqs"]
            # Steady state: items already synced once (their initial sync is a one-off, not monthly traffic).
            ids = [emulator.create_item(f"cost-user-{n}")["id"] for n in range(items)]
            processor = get_processor()
            for item_id in ids:
                processor.process(
                    QueueMessage(f"init-{item_id}", json.dumps({"event": "item/created", "itemId": item_id}))
                )
            emulator.wait_for_deliveries(timeout=10)
            emulator.reset_stats()
            deliveries_before = len(emulator.events())
            for item_id in ids:  # a day: Pluggy's auto-sync brings a few new and changed transactions
                emulator.sync_item(item_id, add=3, change=1)
            emulator.set_connector_status("UNSTABLE")
            emulator.send_payment_event("payment_intent/completed")
            events = emulator.events()[deliveries_before:]
            delivered = 0
            with _counting(receiver_usage):
                for event in events:
                    body = json.dumps(event["payload"]).encode()
                    headers = [("X-Webhook-Secret", LOCAL_WEBHOOK_SECRET)]
                    start = time.perf_counter()
                    response = receiver(
                        proxy_event_from_http("POST", "/webhooks/pluggy", headers, body, "127.0.0.1"),
                        LocalContext("ReceiverFunction"),
                    )
                    receiver_usage.compute_ms += (time.perf_counter() - start) * 1000
                    receiver_usage.invocations += 1
                    delivered += response["statusCode"] in (200, 202)
            with _counting(processor_usage):
                while True:
                    batch = sqs.receive_message(
                        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
                    ).get("Messages", [])
                    if not batch:
                        break
                    for message in batch:
                        attributes = {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}
                        start = time.perf_counter()
                        processor.process(QueueMessage(message["MessageId"], message["Body"], attributes))
                        processor_usage.compute_ms += (time.perf_counter() - start) * 1000
                        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                    processor_usage.invocations += 1
            processor_usage.pluggy_calls = sum(emulator.stats().values())
            by_type = Counter(str(e["event"]) for e in events)
    finally:
        emulator.stop()
        logger.setLevel("INFO")
        os.environ.clear()
        os.environ.update(saved)
    return receiver_usage, processor_usage, delivered, dict(by_type)


def _monthly(volume: int, receiver: Usage, processor: Usage, events: int) -> dict[str, float]:
    per = volume / events  # scale the measured mix to the monthly volume
    p = PRICES
    receiver_ms = receiver.compute_ms + sum(receiver.requests.values()) * AWS_CALL_MS
    processor_ms = processor.compute_ms + sum(processor.requests.values()) * AWS_CALL_MS
    processor_ms += processor.pluggy_calls * PLUGGY_CALL_MS
    # SQS requests: the receiver's sends, plus the event source's receive and delete per batch of events.
    sqs_requests = receiver.requests["sqs.SendMessage"] + processor.requests["sqs.SendMessage"] + 2 * events
    lines = {
        "API Gateway (REST)": volume * p["api_gateway_rest_per_million"] / 1e6,
        "Lambda requests": (receiver.invocations + processor.invocations) * per * p["lambda_request_per_million"] / 1e6,
        "Lambda compute (arm64)": (receiver_ms * RECEIVER_MEMORY_GB + processor_ms * PROCESSOR_MEMORY_GB)
        / 1000
        * per
        * p["lambda_arm_gb_second"],
        "SQS FIFO": sqs_requests * per * p["sqs_fifo_per_million_requests"] / 1e6,
        "DynamoDB writes": (receiver.write_units + processor.write_units)
        * per
        * p["dynamodb_write_request_unit_per_million"]
        / 1e6,
        "DynamoDB reads": (receiver.read_units + processor.read_units)
        * per
        * p["dynamodb_read_request_unit_per_million"]
        / 1e6,
        "CloudWatch Logs": (receiver.invocations + events)
        * per
        * LOG_BYTES_PER_INVOCATION
        / 1e9
        * p["cloudwatch_logs_ingest_per_gb"],
        "Secrets Manager (2 secrets)": 2 * p["secrets_manager_secret_month"],
    }
    lines["Total"] = sum(lines.values())
    return lines


def run(quick: bool) -> Section:
    receiver, processor, delivered, by_type = _measure(quick)
    events = receiver.invocations
    monthly = {volume: _monthly(volume, receiver, processor, events) for volume in VOLUMES}
    headers = ("", *(f"{v:,} webhooks/month" for v in VOLUMES))
    rows = [(name, *(f"${monthly[v][name]:,.2f}" for v in VOLUMES)) for name in monthly[VOLUMES[0]]]
    rows.append(("Hosted gateway (illustrative)", *(f"${v * HOSTED_GATEWAY_PER_MILLION / 1e6:,.2f}" for v in VOLUMES)))
    per_event = Table(
        ("per event (measured mix)", "receiver", "processor"),
        (
            (
                "AWS requests",
                f"{sum(receiver.requests.values()) / events:.2f}",
                f"{sum(processor.requests.values()) / events:.2f}",
            ),
            ("DynamoDB write units", f"{receiver.write_units / events:.2f}", f"{processor.write_units / events:.2f}"),
            ("DynamoDB read units", f"{receiver.read_units / events:.2f}", f"{processor.read_units / events:.2f}"),
            ("Pluggy API calls", "0", f"{processor.pluggy_calls / events:.2f}"),
            (
                "compute ms (measured here)",
                f"{receiver.compute_ms / events:.2f}",
                f"{processor.compute_ms / events:.2f}",
            ),
        ),
    )
    notes = (
        f"Measured mix: {events} webhooks ({', '.join(f'{k} x{v}' for k, v in sorted(by_type.items()))}), "
        f"{delivered} answered 2XX; receiver requests {dict(receiver.requests)}, processor requests "
        f"{dict(processor.requests)}.",
        f"Lambda time = compute measured here + {AWS_CALL_MS:.0f} ms per AWS call + {PLUGGY_CALL_MS:.0f} ms per "
        "Pluggy call (network allowances, not measured here).",
        "Prices: us-east-1 list prices (2026), free tier ignored; DynamoDB capacity units from the bytes written.",
        f"The hosted-gateway row uses an illustrative ${HOSTED_GATEWAY_PER_MILLION:.0f} per million events for "
        "reception and delivery only: it still needs a consumer (the processor) and storage on your side.",
    )
    measures = (
        Measure("Monthly cost", Table(headers, tuple(rows)), notes),
        Measure("Per-event usage behind it", per_event),
    )
    total = {v: monthly[v]["Total"] for v in VOLUMES}
    summary = Table(
        ("volume", "AWS total / month", "per million webhooks"),
        tuple((f"{v:,}", f"${total[v]:,.2f}", f"${total[v] / v * 1e6:,.2f}") for v in VOLUMES),
    )
    COST_DOC.write_text(_render_doc(headers, rows, per_event, notes), encoding="utf-8")
    return Section(
        name="cost",
        title="Cost per month (also written to docs/cost.md)",
        summary=summary,
        measures=measures,
        data={"monthly": monthly, "events": events, "delivered": delivered},
    )


def _largest(rows: list[tuple[str, ...]]) -> str:
    lines = [
        (float(r[-1].strip("$").replace(",", "")), r[0]) for r in rows if r[0] not in {"Total"} and "Hosted" not in r[0]
    ]
    value, name = max(lines)
    return f"{name} (${value:,.2f})"


def _render_doc(headers: tuple[str, ...], rows: list[tuple[str, ...]], per_event: Table, notes: tuple[str, ...]) -> str:
    return "\n".join(
        [
            "# Cost",
            "",
            "Generated by `.venv/bin/python -m bench --only cost` (also part of `make bench`); do not edit by hand.",
            "",
            Table(headers, tuple(rows)).to_markdown(),
            "",
            "## Per event",
            "",
            per_event.to_markdown(),
            "",
            "## How it is computed",
            "",
            *(f"- {note}" for note in notes),
            f"- Largest line at 100M webhooks/month: {_largest(rows)}. API Gateway's REST API costs more than an "
            "HTTP API would, but only the REST API takes a resource policy for the IP allowlist (docs/design.md).",
            "",
        ]
    )
