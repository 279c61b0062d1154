"""What the pipeline costs on AWS: a month of 10k, 1M and 100M webhooks, and per 1,000 calls of the app's routes.

Every function's real handler runs in this process against moto (resources from template.yaml) and the Pluggy
emulator: items being connected (their webhooks and initial sync), a day of their webhooks (receiver -> SQS ->
processor -> RecordsTable -> stream -> publisher -> PutEvents), POST /connect-token and the read API's routes.
Botocore hooks see every AWS request of the handlers: DynamoDB write units come from each written item's images
before and after, for the table and every index of template.yaml that holds it; read units from the bytes read;
EventBridge events from each entry's size. Compute is this thread's CPU time in each handler minus what moto
(and the metering) spent in it, at the function's share of a vCPU, plus a stated allowance per AWS and Pluggy
call. Prices are list prices (us-east-1) written below; the free tier is ignored. Writes docs/cost.md:
`python -m bench.cost [--quick]`, also part of `python -m bench`.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber
from pluggy_emulator import PluggyEmulator
from pluggy_pipeline import aws
from pluggy_pipeline.connect_token import get_service
from pluggy_pipeline.observability import logger
from pluggy_pipeline.processor import get_processor
from pluggy_pipeline.publisher import entry_size, get_publisher
from pluggy_pipeline.read_api import get_reader
from pluggy_pipeline.receiver import get_receiver
from pluggy_pipeline_local.devsecrets import (
    LOCAL_PLUGGY_CLIENT_ID,
    LOCAL_PLUGGY_CLIENT_SECRET,
    LOCAL_SIGNING_KEY,
    LOCAL_WEBHOOK_SECRET,
)
from pluggy_pipeline_local.handlers import LocalContext, load_handler
from pluggy_pipeline_local.routes import handler_folder
from pluggy_pipeline_local.stack import proxy_event_from_http, sqs_event
from pluggy_pipeline_local.stream_poller import StreamPoller
from pluggy_pipeline_local.template import create_resources, function_environment, load_template

from bench import Measure, Section, Table, fmt, ratio
from bench._fakes import FakeAws

ROOT = Path(__file__).resolve().parents[1]
COST_DOC = ROOT / "docs" / "cost.md"
REGION = "us-east-1"

# Public list prices, us-east-1, as published in 2026 (USD). Only these and the allowances below are constants.
PRICES = {
    "api_gateway_rest_per_million": 3.50,
    "lambda_request_per_million": 0.20,
    "lambda_arm_gb_second": 0.0000133334,
    "sqs_fifo_per_million_requests": 0.50,
    "dynamodb_write_request_unit_per_million": 0.625,
    "dynamodb_read_request_unit_per_million": 0.125,
    "dynamodb_streams_read_by_lambda_per_million": 0.0,  # GetRecords of a Lambda trigger are not billed
    "eventbridge_custom_events_per_million": 1.00,  # each 64 KB chunk of a PutEvents entry is one event
    "cloudwatch_logs_ingest_per_gb": 0.50,
    "secrets_manager_secret_month": 0.40,
    "secrets_manager_per_10k_calls": 0.05,
    "dynamodb_storage_gb_month": 0.25,  # Standard table class, beyond the first 25 GB
}
WRITE_UNIT_BYTES = 1024  # a write request unit: up to 1 KB of a table item or an index entry
STORAGE_OVERHEAD_BYTES = 100  # billed per item in the table and per entry in each index, over its size
READ_UNIT_BYTES = 4096  # a read request unit: up to 4 KB strongly consistent, twice that eventually consistent
EVENT_CHUNK_BYTES = 64 * 1024
FULL_VCPU_MB = 1769  # Lambda: 1,769 MB buys one vCPU, less buys that share of one
# Allowances for what this machine cannot measure (network to AWS and Pluggy from Lambda): stated, not hidden.
AWS_CALL_MS = 8.0
PLUGGY_CALL_MS = 150.0
PLATFORM_LOG_BYTES = 500  # Lambda's START and REPORT records (JSON) per invocation; the functions' own are measured
# An illustrative hosted webhook gateway price per million events; replace with your vendor's quote.
HOSTED_GATEWAY_PER_MILLION = 25.0
VOLUMES = (10_000, 1_000_000, 100_000_000)

RECEIVER, PROCESSOR, PUBLISHER = "ReceiverFunction", "ProcessorFunction", "PublisherFunction"
CONNECT_TOKEN, READ_API = "ConnectTokenFunction", "ReadApiFunction"
FUNCTIONS = (RECEIVER, PROCESSOR, PUBLISHER, CONNECT_TOKEN, READ_API)
# The scenarios, each metered on its own: a day of webhooks, items connected, and the app's routes.
DAY, CONNECTED, TOKEN = "day", "items connected", "POST /connect-token"
READS = {  # the read API's routes: their example request in events/read_api/, their path parameter
    "GET /users/{clientUserId}/items": ("items-of-user.json", "clientUserId"),
    "GET /items/{itemId}": ("item.json", "itemId"),
    "GET /accounts/{accountId}/transactions": ("transactions.json", "accountId"),
}

Item = Mapping[str, Mapping[str, Any]]  # a DynamoDB item as the low-level client writes it ({"name": {"S": ...}})

# ---------------------------------------------------------------------------------------------------------
# DynamoDB's and EventBridge's billing rules
# ---------------------------------------------------------------------------------------------------------


def value_bytes(value: Mapping[str, Any]) -> int:
    """The size DynamoDB counts for one typed value, its name aside (developer guide, "Item sizes and formats")."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(str(raw).encode())
    if kind == "N":  # 1 byte per two significant digits, plus 1
        digits = str(raw).upper().split("E")[0].lstrip("-").replace(".", "").strip("0")
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(raw) if isinstance(raw, bytes | bytearray) else len(base64.b64decode(raw))
    if kind in {"BOOL", "NULL"}:
        return 1
    if kind == "M":  # 3 bytes, and 1 per element
        return 3 + sum(len(name.encode()) + value_bytes(inner) + 1 for name, inner in raw.items())
    if kind == "L":
        return 3 + sum(value_bytes(inner) + 1 for inner in raw)
    return sum(value_bytes({kind[0]: element}) for element in raw)  # SS, NS, BS


def item_bytes(item: Item | None) -> int:
    return sum(len(name.encode()) + value_bytes(value) for name, value in (item or {}).items())


def request_units(size: int, unit: int) -> int:
    """Units of one request over `size` bytes: per `unit`, rounded up, at least one."""
    return max(1, math.ceil(size / unit))


def read_units(size: int, consistent: bool) -> float:
    return request_units(size, READ_UNIT_BYTES) * (1.0 if consistent else 0.5)


def event_chunks(entry_bytes: int) -> int:
    """EventBridge events billed for one PutEvents entry of `entry_bytes` (its size by EventBridge's rule)."""
    return request_units(entry_bytes, EVENT_CHUNK_BYTES)


@dataclass(frozen=True)
class Index:
    name: str
    keys: tuple[str, ...]
    projected: tuple[str, ...] | None  # None: ALL; else the non-key attributes it holds (KEYS_ONLY: none)
    local: bool

    def entry(self, item: Item | None, table_keys: Sequence[str]) -> dict[str, Any] | None:
        """The item's entry in this index; None when the item is not in it (an index key attribute missing)."""
        if item is None or any(key not in item for key in self.keys):
            return None
        names = item if self.projected is None else (*table_keys, *self.keys, *self.projected)
        return {name: item[name] for name in names if name in item}


@dataclass(frozen=True)
class TableSchema:
    keys: tuple[str, ...]
    indexes: tuple[Index, ...] = ()

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> TableSchema:
        """A table of template.yaml (its Properties)."""

        def index(spec: Mapping[str, Any], local: bool) -> Index:
            projection = spec.get("Projection", {})
            projected = projection.get("NonKeyAttributes", ()) if projection.get("ProjectionType") != "ALL" else None
            keys = tuple(k["AttributeName"] for k in spec["KeySchema"])
            return Index(spec["IndexName"], keys, None if projected is None else tuple(projected), local)

        return cls(
            tuple(k["AttributeName"] for k in properties["KeySchema"]),
            tuple(index(s, True) for s in properties.get("LocalSecondaryIndexes", ()))
            + tuple(index(s, False) for s in properties.get("GlobalSecondaryIndexes", ())),
        )


def write_units(old: Item | None, new: Item | None, schema: TableSchema) -> Counter[str]:
    """Write request units of one item write (`new` None: a delete) for the table, its GSIs and its LSIs.

    The table: the larger of the item before and after, per 1 KB. An index: nothing when the item is in it
    neither before nor after, or its entry is unchanged; one write (the larger entry, per 1 KB) to put, update
    or delete the entry; a delete and a put when the write changes the index's key.
    """
    used = Counter(table=request_units(max(item_bytes(old), item_bytes(new)), WRITE_UNIT_BYTES))
    for index in schema.indexes:
        before, after = index.entry(old, schema.keys), index.entry(new, schema.keys)
        if before == after:
            continue
        kind = "lsi" if index.local else "gsi"
        if before and after and any(before[k] != after[k] for k in index.keys):
            used[kind] += request_units(item_bytes(before), WRITE_UNIT_BYTES)
            used[kind] += request_units(item_bytes(after), WRITE_UNIT_BYTES)
        else:
            used[kind] += request_units(max(item_bytes(before), item_bytes(after)), WRITE_UNIT_BYTES)
    return used


def stored_bytes(item: Item, schema: TableSchema) -> Counter[str]:
    """Billed storage of one item: its size plus 100 bytes in the table, its entry plus 100 bytes in each index
    that holds it (developer guide, "Item sizes"; an index entry: its keys, the table's and what it projects)."""
    used = Counter(table=item_bytes(item) + STORAGE_OVERHEAD_BYTES)
    for index in schema.indexes:
        if (entry := index.entry(item, schema.keys)) is not None:
            used["lsi" if index.local else "gsi"] += item_bytes(entry) + STORAGE_OVERHEAD_BYTES
    return used


# RecordsTable's records under ITEM#<itemId>, by their sort key's prefix (records.py).
_UNDER_ITEM = {"ITEM": "item", "ACCOUNT": "account", "INVESTMENT": "investment", "LOAN": "loan", "CONSENT": "consent"}
_BY_PARTITION = {
    "ACCOUNT": "transaction",
    "ACCOUNTREF": "account ref",
    "INVESTMENT": "investment transaction",
    "BILLS": "bill",
}


def record_kind(key: Item) -> str:
    """Which record a written key is (RecordsTable's layout, records.py; EventsTable's events; PacerTable's slots)."""
    pk, sk = (str(key.get(name, {}).get("S", "")) for name in ("pk", "sk"))
    if not pk:
        return "Pluggy pacing slot (PacerTable)" if "route" in key else "event (EventsTable)"
    prefix = pk.split("#")[0]
    if prefix == "ITEM":
        return _UNDER_ITEM.get(sk.split("#")[0], sk.lower())  # IDENTITY -> identity
    return _BY_PARTITION.get(prefix, prefix.lower().replace("_", " "))


# ---------------------------------------------------------------------------------------------------------
# metering
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Usage:
    """What one function used over the invocations of one scenario."""

    memory_mb: int
    invocations: int = 0
    records: int = 0  # SQS messages or stream records handed to it
    cpu_ms: float = 0.0  # this thread's CPU in the handler, moto and metering excluded
    log_bytes: int = 0  # what it printed: log lines, EMF metrics
    pluggy_calls: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # AWS API calls by "service.Operation"
    write_units: Counter[str] = field(default_factory=Counter)  # table, gsi, lsi
    by_record: Counter[str] = field(default_factory=Counter)  # "<record kind>:<table|gsi|lsi>"
    items_written: Counter[str] = field(default_factory=Counter)  # "<record kind>:<put|delete|refused>"
    read_units: float = 0.0
    events_put: int = 0  # PutEvents entries
    event_chunks: int = 0  # their billed 64 KB chunks

    def billed_ms(self) -> float:
        """Lambda's duration: the CPU at the function's share of a vCPU, plus the network allowances."""
        share = min(1.0, self.memory_mb / FULL_VCPU_MB)
        return self.cpu_ms / share + self.requests.total() * AWS_CALL_MS + self.pluggy_calls * PLUGGY_CALL_MS


class Meter:
    """Botocore hooks on pluggy_pipeline's session: the AWS calls of the invocation running and what they bill.

    A write's item is read before and after it with `peek`, a client without the hooks. The CPU spent in the hooks
    and in moto (BotocoreStubber, which serves every call) is added to `excluded`, to keep it out of compute.
    """

    WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"})

    def __init__(self, schemas: Mapping[str, TableSchema], peek: Any) -> None:
        self.schemas, self.peek = schemas, peek  # schemas by physical table name
        self.active: Usage | None = None
        self.excluded = 0.0  # seconds
        self._depth = 0

    @contextlib.contextmanager
    def excluding(self) -> Iterator[None]:
        self._depth += 1
        started = time.thread_time()
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth:  # moto serving a peek inside a hook counts once
                self.excluded += time.thread_time() - started

    @contextlib.contextmanager
    def installed(self, session: Any) -> Iterator[None]:
        serve = BotocoreStubber.__call__

        def served(stubber: BotocoreStubber, *args: Any, **kwargs: Any) -> Any:
            with self.excluding():
                return serve(stubber, *args, **kwargs)

        session.events.register("before-parameter-build", self._before)
        session.events.register("after-call", self._after)
        with mock.patch.object(BotocoreStubber, "__call__", served):
            yield

    def _image(self, table: str, key: Item) -> Item | None:
        item: Item | None = self.peek.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        return item

    def _written(self, operation: str, params: Mapping[str, Any]) -> Iterator[tuple[str, Item, Item | None]]:
        """(table, key, item put or None) of each item a write request touches."""
        if operation == "BatchWriteItem":
            batches = params["RequestItems"].items()
            touched = [
                (t, r.get("PutRequest", {}).get("Item"), r.get("DeleteRequest", {}).get("Key"))
                for t, b in batches
                for r in b
            ]
        else:  # PutItem has an Item, UpdateItem and DeleteItem a Key
            touched = [(params["TableName"], params.get("Item"), params.get("Key"))]
        for table, new, key in touched:
            yield table, key or {name: new[name] for name in self.schemas[table].keys}, new

    def _before(self, model: Any, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        if (usage := self.active) is None:
            return
        with self.excluding():
            usage.requests[f"{model.service_model.service_name}.{model.name}"] += 1
            if model.name in self.WRITES:
                written = self._written(model.name, params)
                context["cost.writes"] = [(table, key, new, self._image(table, key)) for table, key, new in written]
            elif model.name == "BatchGetItem":
                context["cost.reads"] = {
                    t: (r.get("ConsistentRead", False), len(r["Keys"])) for t, r in params["RequestItems"].items()
                }
            elif model.name in {"GetItem", "Query"}:
                context["cost.reads"] = params.get("ConsistentRead", False)
            elif model.name == "PutEvents":
                usage.events_put += len(params["Entries"])
                usage.event_chunks += sum(event_chunks(entry_size(entry)) for entry in params["Entries"])

    def _after(self, model: Any, parsed: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        if (usage := self.active) is None:
            return
        with self.excluding():
            for table, key, new, old in context.pop("cost.writes", ()):
                if "Error" in parsed:  # a refused conditional write costs the larger of the stored and proposed item
                    units = Counter(table=request_units(max(item_bytes(old), item_bytes(new)), WRITE_UNIT_BYTES))
                    outcome = "refused"
                else:
                    after = self._image(table, key)
                    units = write_units(old, after, self.schemas[table])
                    outcome = "put" if after is not None else "delete"
                usage.write_units.update(units)
                usage.by_record.update({f"{record_kind(key)}:{part}": n for part, n in units.items()})
                usage.items_written[f"{record_kind(key)}:{outcome}"] += 1
            consistent = context.pop("cost.reads", None)
            if model.name == "GetItem":
                usage.read_units += read_units(item_bytes(parsed.get("Item")), consistent)
            elif model.name == "Query":
                usage.read_units += read_units(sum(item_bytes(i) for i in parsed.get("Items", ())), consistent)
            elif model.name == "BatchGetItem":  # each key is a read of its own, found or not
                for table, (strong, keys) in consistent.items():
                    found = parsed.get("Responses", {}).get(table, [])
                    usage.read_units += sum(read_units(item_bytes(i), strong) for i in found)
                    usage.read_units += read_units(0, strong) * (keys - len(found))


class CountingSink(io.TextIOBase):
    """The functions' stdout: counts what they print (Lambda sends it to CloudWatch Logs)."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)


# ---------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------


def app_event(example: str, path: str, parameters: Mapping[str, str] | None) -> dict[str, Any]:
    """An example request of events/ (API Gateway's proxy event of an app route), for another path."""
    event: dict[str, Any] = json.loads((ROOT / "events" / example).read_text(encoding="utf-8"))
    event.update(path=path, pathParameters=dict(parameters) if parameters else None)
    event["requestContext"]["path"] = f"/{event['requestContext']['stage']}{path}"
    return event


class Run:
    """Every function of the template in this process, fed as its event source would, metered per scenario."""

    def __init__(self, template: Mapping[str, Any], resources: Any, emulator: PluggyEmulator, meter: Meter) -> None:
        self.resources, self.emulator, self.meter = resources, emulator, meter
        default_mb = template["Globals"]["Function"].get("MemorySize", 128)
        properties = {f: template["Resources"][f]["Properties"] for f in FUNCTIONS}
        self.memory = {f: int(properties[f].get("MemorySize", default_mb)) for f in FUNCTIONS}
        self.handlers = {f: load_handler(handler_folder(template, f)) for f in FUNCTIONS}
        self.usage: dict[str, dict[str, Usage]] = {}
        self.scenario: str | None = None  # None: warming up, not metered
        self.stdout = CountingSink()
        self.sqs: Any = boto3.client("sqs", region_name=REGION)  # the event source mappings' calls: not the functions'
        streams = boto3.client("dynamodbstreams", region_name=REGION)
        stream_arn = resources.streams["RecordsTable"]
        self.stream = StreamPoller(streams, stream_arn, lambda event: self.invoke(PUBLISHER, event), batch_size=100)

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        if self.scenario is None:
            return self.handlers[function](event, LocalContext(function))
        usage = self.usage.setdefault(self.scenario, {}).setdefault(function, Usage(self.memory[function]))
        usage.records += len(event.get("Records", ()))
        pluggy_before, printed_before = sum(self.emulator.stats().values()), self.stdout.bytes
        excluded_before, self.meter.active = self.meter.excluded, usage
        started = time.thread_time()
        try:
            return self.handlers[function](event, LocalContext(function))
        finally:
            usage.cpu_ms += (time.thread_time() - started - (self.meter.excluded - excluded_before)) * 1000
            self.meter.active = None
            usage.invocations += 1
            usage.log_bytes += self.stdout.bytes - printed_before
            usage.pluggy_calls += sum(self.emulator.stats().values()) - pluggy_before

    def deliver(self, deliveries: Sequence[Mapping[str, Any]]) -> int:
        """Pluggy's deliveries through the receiver, the queue through the processor (batches of up to 10), the
        stream through the publisher (up to 100 records); how many deliveries were answered 2XX."""
        answered = 0
        for delivery in deliveries:
            answered += self.invoke(RECEIVER, webhook_request(delivery))["statusCode"] in (200, 202)
        queue_url, queue_arn = self.resources.queue_urls["EventQueue"], self.resources.queue_arns["EventQueue"]
        receive = {"MaxNumberOfMessages": 10, "MessageAttributeNames": ["All"], "AttributeNames": ["All"]}
        while batch := self.sqs.receive_message(QueueUrl=queue_url, **receive).get("Messages", []):
            self.invoke(PROCESSOR, sqs_event(batch, queue_arn, REGION))
            entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)]
            self.sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        self.stream.drain()
        return answered

    def connect(self, user: str) -> tuple[str, int]:
        """A new item: its webhooks, initial sync and change events; (its id, deliveries answered 2XX)."""
        seen = len(self.emulator.events())
        # Every product of the connector (the emulator's default when none is named): their syncs are in the day.
        item_id = str(self.emulator.create_item(user)["id"])
        self.emulator.wait_for_deliveries(timeout=10)
        return item_id, self.deliver(self.emulator.events()[seen:])


def webhook_request(delivery: Mapping[str, Any]) -> dict[str, Any]:
    headers = [("X-Webhook-Secret", LOCAL_WEBHOOK_SECRET), ("Content-Type", "application/json")]
    return proxy_event_from_http(
        "POST", "/webhooks/pluggy", headers, json.dumps(delivery["payload"]).encode(), "127.0.0.1"
    )


def forget_containers() -> None:
    """Every function's per-container state (clients, settings) is built again from the environment."""
    aws.reset_clients()
    for cached in (get_receiver, get_processor, get_publisher, get_service, get_reader):
        cached.cache_clear()


def _measure(quick: bool) -> tuple[Run, dict[str, Any]]:
    template = load_template()
    saved_env, saved_level = dict(os.environ), logger.log_level
    emulator = PluggyEmulator(LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET, signing_key=LOCAL_SIGNING_KEY)
    try:
        with mock_aws():
            os.environ.update(
                AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION
            )
            os.environ.pop("AWS_ENDPOINT_URL", None)
            clients: dict[str, Any] = {
                n: boto3.client(n, region_name=REGION) for n in ("dynamodb", "sqs", "secretsmanager", "events")
            }
            resources = create_resources(template, **clients)
            emulator.start()
            params = {"PluggyClientId": LOCAL_PLUGGY_CLIENT_ID, "PluggyApiBaseUrl": emulator.base_url}
            for function in FUNCTIONS:  # the template's environments: LogLevel INFO, metrics on, as deployed
                os.environ.update(function_environment(template, function, resources, params))
            os.environ.update(  # secrets from the environment (deployed: Secrets Manager, read once a minute)
                WEBHOOK_SECRET_ARN="",
                WEBHOOK_SECRET=LOCAL_WEBHOOK_SECRET,
                PLUGGY_CREDENTIALS_SECRET_ARN="",
                PLUGGY_CLIENT_ID=LOCAL_PLUGGY_CLIENT_ID,
                PLUGGY_CLIENT_SECRET=LOCAL_PLUGGY_CLIENT_SECRET,
            )
            logger.setLevel(os.environ["POWERTOOLS_LOG_LEVEL"])  # the shared logger read its level at import
            tables = {
                n: r["Properties"] for n, r in template["Resources"].items() if r["Type"] == "AWS::DynamoDB::Table"
            }
            meter = Meter({resources.tables[n]: TableSchema.of(p) for n, p in tables.items()}, clients["dynamodb"])
            forget_containers()
            run = Run(template, resources, emulator, meter)
            with (
                meter.installed(aws._session()),
                contextlib.redirect_stdout(run.stdout),
                mock.patch.object(logger.registered_handler, "stream", run.stdout),
            ):
                facts = _scenarios(run, *((2, 5) if quick else (6, 20)))
                facts["receiver_with_fakes_ms"] = _receiver_with_fakes(run, facts.pop("deliveries"))
    finally:
        emulator.stop()
        logger.setLevel(saved_level)
        os.environ.clear()
        os.environ.update(saved_env)
        forget_containers()
    return run, facts


def _scenarios(run: Run, items: int, calls: int) -> dict[str, Any]:
    """Warm each function up, then meter each scenario; what the document says about them."""
    emulator = run.emulator
    token = app_event("connect_token/valid.json", "/connect-token", None)
    run.connect("cost-user-warm")  # the measured invocations are warm ones, as nearly all are
    run.invoke(CONNECT_TOKEN, token)
    run.scenario = CONNECTED
    connected = [run.connect(f"cost-user-{n}") for n in range(items)]
    run.scenario = TOKEN
    minted = Counter(run.invoke(CONNECT_TOKEN, token)["statusCode"] for _ in range(calls))
    # A day of those items: Pluggy's auto-sync brings a few new and changed transactions; a connector's status
    # and a payment change too.
    seen, ids = len(emulator.events()), [item_id for item_id, _ in connected]
    for item_id in ids:
        emulator.sync_item(item_id, add=3, change=1)
    emulator.set_connector_status("UNSTABLE")
    emulator.send_payment_event("payment_intent/completed")
    emulator.wait_for_deliveries(timeout=10)
    day = emulator.events()[seen:]
    run.scenario = DAY
    delivered = run.deliver(day)
    truth = emulator.truth()
    accounts = [a for a, account in truth["accounts"].items() if account.get("itemId") in ids]
    targets = dict(zip(READS, ([f"cost-user-{n}" for n in range(items)], ids, accounts), strict=True))
    answers: Counter[int] = Counter()
    for route, (example, name) in READS.items():
        path = route.split(" ")[1].replace("{" + name + "}", "{}")
        cycled = itertools.islice(itertools.cycle(targets[route]), calls)
        requests = [app_event(f"read_api/{example}", path.format(value), {name: value}) for value in cycled]
        run.scenario = None
        run.invoke(READ_API, requests[0])
        run.scenario = route
        answers.update(run.invoke(READ_API, request)["statusCode"] for request in requests)
    run.scenario = None
    return {
        "items": items,
        "calls": calls,
        "connected_2xx": sum(answered for _, answered in connected),
        "minted": dict(minted),
        "events": len(day),
        "delivered": delivered,
        "deliveries": day,
        "by_type": Counter(str(e["event"]) for e in day),
        "reads": dict(answers),
        "accounts_per_item": len(accounts) / items,
        "transactions_per_account": sum(len(truth["transactions"].get(a, ())) for a in accounts) / len(accounts),
    }


def _receiver_with_fakes(run: Run, deliveries: Sequence[Mapping[str, Any]]) -> float:
    """The receiver's CPU ms per delivery on bench/_fakes.py's in-memory clients (no botocore, no moto)."""
    fakes, requests = FakeAws(), [webhook_request(d) for d in deliveries]
    with (
        mock.patch.object(aws, "dynamodb", lambda *_: fakes.dynamodb),
        mock.patch.object(aws, "sqs", lambda *_: fakes.sqs),
    ):
        get_receiver.cache_clear()
        run.handlers[RECEIVER](requests[0], LocalContext(RECEIVER))  # warm up
        fakes.dynamodb.items.clear()
        started = time.thread_time()
        for request in requests:
            run.handlers[RECEIVER](request, LocalContext(RECEIVER))
        spent = time.thread_time() - started
        get_receiver.cache_clear()
    return spent * 1000 / len(requests)


# ---------------------------------------------------------------------------------------------------------
# prices and the document
# ---------------------------------------------------------------------------------------------------------


def cost_lines(usages: Mapping[str, Usage], api_requests: int) -> dict[str, float]:
    """Dollars of what one scenario used: its functions' usage and the API Gateway requests that started it."""
    p, every = PRICES, list(usages.values())
    queued = usages[PROCESSOR].records if PROCESSOR in usages else 0
    stream_batches = usages[PUBLISHER].invocations if PUBLISHER in usages else 0
    return {
        "API Gateway (REST)": api_requests * p["api_gateway_rest_per_million"] / 1e6,
        "Lambda requests": sum(u.invocations for u in every) * p["lambda_request_per_million"] / 1e6,
        "Lambda compute (arm64)": sum(u.billed_ms() / 1000 * u.memory_mb / 1024 for u in every)
        * p["lambda_arm_gb_second"],
        # The sends, then the event source's receive and delete of each message (batched: fewer).
        "SQS FIFO": (sum(u.requests["sqs.SendMessage"] for u in every) + 2 * queued)
        * p["sqs_fifo_per_million_requests"]
        / 1e6,
        "DynamoDB writes (table and indexes)": sum(u.write_units.total() for u in every)
        * p["dynamodb_write_request_unit_per_million"]
        / 1e6,
        "DynamoDB reads": sum(u.read_units for u in every) * p["dynamodb_read_request_unit_per_million"] / 1e6,
        "DynamoDB Streams reads (Lambda trigger)": stream_batches
        * p["dynamodb_streams_read_by_lambda_per_million"]
        / 1e6,
        "EventBridge PutEvents": sum(u.event_chunks for u in every) * p["eventbridge_custom_events_per_million"] / 1e6,
        "CloudWatch Logs": sum(u.log_bytes + u.invocations * PLATFORM_LOG_BYTES for u in every)
        / 1e9
        * p["cloudwatch_logs_ingest_per_gb"],
    }


def per(lines: Mapping[str, float], factor: float, **fixed: float) -> dict[str, float]:
    """`lines` times `factor`, the fixed monthly lines, and their total."""
    out = {name: value * factor for name, value in lines.items()} | fixed
    return out | {"Total": sum(out.values())}


def run(quick: bool) -> Section:
    measured, facts = _measure(quick)
    usage, events, items, calls = measured.usage, facts["events"], facts["items"], facts["calls"]
    day = usage[DAY]
    secrets = {"Secrets Manager (2 secrets)": 2 * PRICES["secrets_manager_secret_month"]}
    monthly = {v: per(cost_lines(day, events), v / events, **secrets) for v in VOLUMES}
    rows = [(name, *(f"${monthly[v][name]:,.2f}" for v in VOLUMES)) for name in monthly[VOLUMES[0]]]
    rows.append(("Hosted gateway (illustrative)", *(f"${v * HOSTED_GATEWAY_PER_MILLION / 1e6:,.2f}" for v in VOLUMES)))
    month = Table(("", *(f"{v:,} webhooks/month" for v in VOLUMES)), tuple(rows))
    apps = {route: per(cost_lines(usage[route], calls), 1000 / calls) for route in (TOKEN, *READS)}
    apps[CONNECTED] = per(cost_lines(usage[CONNECTED], usage[CONNECTED][RECEIVER].invocations), 1000 / items)
    shown = [line for line in apps[CONNECTED] if any(costs[line] for costs in apps.values())]
    routes = Table(
        ("per 1,000", *(f"`{name}`" if name != CONNECTED else name for name in apps)),
        tuple((line, *(f"${costs[line]:.4f}" for costs in apps.values())) for line in shown),
    )
    pipeline = (RECEIVER, PROCESSOR, PUBLISHER)
    webhook = Table(
        ("per webhook (the measured day)", *(f.removesuffix("Function").lower() for f in pipeline)),
        tuple((label, *(value(day[f]) for f in pipeline)) for label, value in _per_webhook(events)),
    )
    by_record = _by_record({DAY: (day, events), CONNECTED: (usage[CONNECTED], items)})
    wcu = {part: sum(u.write_units[part] for u in day.values()) / events for part in ("table", "gsi", "lsi")}
    notes = _notes(measured, facts, wcu, month)
    products, product_facts = _products(quick)
    measures = (
        Measure("A month of webhooks", month),
        Measure("The app's routes, per 1,000 calls", routes, notes["routes"]),
        Measure("Per webhook", webhook),
        Measure("DynamoDB write units by record", by_record),
        *products,
    )
    COST_DOC.write_text(_render_doc(measures, notes["month"]), encoding="utf-8")
    return Section(
        name="cost",
        title="Cost per month (also written to docs/cost.md)",
        summary=Table(
            ("volume", "AWS total / month", "per million webhooks"),
            tuple(
                (f"{v:,}", f"${monthly[v]['Total']:,.2f}", f"${monthly[v]['Total'] / v * 1e6:,.2f}") for v in VOLUMES
            ),
        ),
        measures=(replace(measures[0], notes=notes["month"]), *measures[1:]),
        data={"monthly": monthly, "apps": apps, "wcu_per_event": wcu, "usage": usage, **facts, **product_facts},
    )


def _products(quick: bool) -> tuple[tuple[Measure, Measure], dict[str, Any]]:
    """What mirroring every product costs per item sync against accounts and transactions: bench/products.py's run
    (the processor metered by this module's Meter), priced as above."""
    from bench import products as bench_products  # it imports this module: imported when called, not at the top

    sizes = bench_products.TINY if quick else bench_products.FULL
    results = bench_products.measure(sizes)
    shapes, phases = tuple(bench_products.VARIANTS), bench_products.PHASES
    columns = [(shape, phase) for phase in phases for shape in shapes]
    dollars = {key: per(cost_lines({PROCESSOR: results[key].usage}, 0), 1000 / results[key].syncs) for key in columns}
    shown = [line for line in dollars[columns[0]] if any(costs[line] for costs in dollars.values())]
    headers = tuple(f"{phase}: {shape}" if shape == shapes[0] else shape for shape, phase in columns)
    money = Table(
        ("per 1,000 item syncs", *headers),
        tuple((line, *(f"${dollars[key][line]:.4f}" for key in columns)) for line in shown),
    )

    def each(key: tuple[str, str], value: float) -> str:
        return fmt(value / results[key].syncs)

    def limit(key: tuple[str, str]) -> str:
        syncs, route = results[key].syncs_per_minute
        return f"{fmt(syncs)} ({route})"

    pluggy_rows: list[tuple[str, ...]] = [
        ("Pluggy calls (not billed by AWS)", *(each(k, results[k].pluggy_calls) for k in columns)),
        (
            "on a rate-limited route",
            *(each(k, sum(results[k].limited_by_route.values())) for k in columns),
        ),
        (
            f"item syncs a minute one source IP allows ({bench_products.PLUGGY_LIMIT_PER_MINUTE} per limited route)",
            *(limit(k) for k in columns),
        ),
        ("DynamoDB write units", *(each(k, results[k].usage.write_units.total()) for k in columns)),
        ("of which byConsentExpiry", *(each(k, results[k].usage.by_record["consent:gsi"]) for k in columns)),
        ("DynamoDB read units", *(each(k, results[k].usage.read_units) for k in columns)),
        ("billed ms (processor)", *(each(k, results[k].usage.billed_ms()) for k in columns)),
    ]
    calls = Table(("per item sync", *headers), tuple(pluggy_rows))
    stored = {shape: results[shape, phases[-1]] for shape in shapes}
    kb = {shape: stored[shape].storage.total() / stored[shape].syncs / 1024 for shape in shapes}
    month = {shape: kb[shape] * 1024 * 1000 / 2**30 * PRICES["dynamodb_storage_gb_month"] for shape in shapes}
    quiet = {shape: dollars[shape, phases[1]]["Total"] for shape in shapes}
    notes = (
        f"Measured by bench/products.py in this run ({sizes.items} items of each shape, three syncs each): the "
        "processor as `get_processor()` builds it from the template, on moto and the Pluggy emulator, metered by "
        "this module's `Meter`. Every-product items ask for "
        f"{', '.join(bench_products.VARIANTS[shapes[0]])}; the others for "
        f"{', '.join(bench_products.VARIANTS[shapes[1]])}, the same accounts and transactions. Both have a consent "
        "(Open Finance), read at every sync and written, with its byConsentExpiry entry, only when it changes.",
        "Only the processor's lines: the webhook's own (API Gateway, receiver, SQS) do not depend on the products "
        "and are in the month table above, whose measured day already syncs every-product items (the emulator's "
        "default when neither the item nor its connect token names products). Lambda requests count one "
        "invocation per sync; batched at volume (up to 10 messages), fewer.",
        f"A sync where nothing changed: ${quiet[shapes[0]]:.4f} against ${quiet[shapes[1]]:.4f} per 1,000 "
        f"({ratio(quiet[shapes[0]], quiet[shapes[1]])}): each product list is read from Pluggy and compared "
        "with the stored digests (one Query each) even when nothing changed; nothing is written for it. Most of it "
        "is Lambda duration, and most of that the 150 ms allowance per Pluggy call.",
        f"Storage after the three syncs: {fmt(kb[shapes[0]])} KB an item with every product, {fmt(kb[shapes[1]])} "
        f"KB with accounts and transactions (table and indexes, {STORAGE_OVERHEAD_BYTES} bytes of overhead per item "
        f"and per index entry): ${month[shapes[0]]:.4f} against ${month[shapes[1]]:.4f} per 1,000 items a month "
        f"at ${PRICES['dynamodb_storage_gb_month']:.2f} per GB-month (GB = 2^30 bytes).",
        "Pluggy's calls are not billed by AWS but count against its rate limits (per source IP, per route; the "
        "investments routes share one): the busiest limited route of a sync sets how many item syncs a minute one "
        "egress IP allows.",
    )
    measures = (
        Measure("Products: the processor per 1,000 item syncs, every product against accounts and transactions", money),
        Measure("Products: Pluggy calls, rate limits and DynamoDB units per item sync", calls, notes),
    )
    facts = {
        "products": results,
        "products_dollars": dollars,
        "products_storage_kb": kb,
        "products_storage_month": month,
    }
    return measures, facts


def _per_webhook(events: int) -> tuple[tuple[str, Any], ...]:
    def each(value: float) -> str:
        return fmt(value / events)

    return (
        ("invocations", lambda u: each(u.invocations)),
        ("AWS requests", lambda u: each(u.requests.total())),
        ("DynamoDB write units: table", lambda u: each(u.write_units["table"])),
        ("DynamoDB write units: GSIs", lambda u: each(u.write_units["gsi"])),
        ("DynamoDB write units: LSI", lambda u: each(u.write_units["lsi"])),
        ("DynamoDB read units", lambda u: each(u.read_units)),
        ("Pluggy API calls", lambda u: each(u.pluggy_calls)),
        ("PutEvents entries (billed 64 KB chunks)", lambda u: f"{each(u.events_put)} ({each(u.event_chunks)})"),
        ("CPU ms measured here, moto excluded", lambda u: each(u.cpu_ms)),
        ("billed ms (CPU at its vCPU share + allowances)", lambda u: each(u.billed_ms())),
        ("bytes printed (log lines, EMF metrics)", lambda u: each(u.log_bytes)),
    )


def _by_record(scenarios: Mapping[str, tuple[Mapping[str, Usage], int]]) -> Table:
    """Write units by record, for the table and the indexes, per webhook and per item connected."""
    units = {name: Counter[str]() for name in scenarios}
    for name, (usages, count) in scenarios.items():
        for usage in usages.values():
            units[name].update({key: value / count for key, value in usage.by_record.items()})
    return Table(
        ("write units", "per webhook: table", "GSIs", "LSI", "per item connected: table", "GSIs", "LSI"),
        tuple(
            (kind, *(fmt(units[name][f"{kind}:{part}"]) for name in scenarios for part in ("table", "gsi", "lsi")))
            for kind in sorted({key.split(":")[0] for counts in units.values() for key in counts})
        ),
    )


def _notes(
    measured: Run, facts: Mapping[str, Any], wcu: Mapping[str, float], month: Table
) -> dict[str, tuple[str, ...]]:
    day, events, items = measured.usage[DAY], facts["events"], facts["items"]
    receiver, publisher, connected = day[RECEIVER], day[PUBLISHER], measured.usage[CONNECTED]
    shares = ", ".join(f"{mb} MB: {mb / FULL_VCPU_MB:.3f}" for mb in sorted(set(measured.memory.values())))
    requests = "; ".join(f"{f.removesuffix('Function').lower()} {dict(day[f].requests)}" for f in day)
    pluggy_per_minute = day[PROCESSOR].pluggy_calls / events * VOLUMES[-1] / (30 * 24 * 60)
    lines = month.rows[:-2]  # not the total nor the hosted gateway
    largest = max((float(row[-1].strip("$").replace(",", "")), row[0]) for row in lines)
    month_notes = (
        f"The measured day: {events} webhooks ({', '.join(f'{k} x{v}' for k, v in sorted(facts['by_type'].items()))}) "
        f"of {items} items, each with every product of its connector (bills, investments and their transactions, "
        f"loans, identity, a consent; the Products tables below compare with accounts and transactions alone), "
        f"{facts['delivered']} answered 2XX; every line scales linearly from it. AWS requests: "
        f"{requests}.",
        f"DynamoDB write units per webhook: {fmt(wcu['table'])} table + {fmt(wcu['gsi'])} GSIs + {fmt(wcu['lsi'])} "
        f"LSI = {fmt(sum(wcu.values()))}. moto answers ReturnConsumedCapacity with a flat 1 per call, so they are "
        "computed from each write's item, read before and after it (a consistent GetItem on a client without the "
        "hooks), with DynamoDB's rules: the table costs the larger image per 1 KB; each index of template.yaml costs "
        "nothing when the item is in it neither before nor after or its entry did not change, one write (the larger "
        "entry per 1 KB: the whole item for ALL, the keys for KEYS_ONLY) to put, update or delete the entry, and two "
        "when the write changes its key (an item's `syncSk` in `bySyncDue`, on every sync). A refused conditional "
        "write costs the larger of the stored and the proposed item.",
        "DynamoDB read units: the bytes each read returned per 4 KB (per key for BatchGetItem), half when eventually "
        "consistent. A projected read is counted on what it returned; DynamoDB counts the whole item, the same "
        "units for our projected reads of rows under 4 KB.",
        "Compute: the handler thread's CPU time (`time.thread_time`: the emulator's threads and the waits are not in "
        "it) minus what moto spent serving each call (`BotocoreStubber`) and what the metering hooks spent; botocore "
        "building requests and parsing answers stays in, as on Lambda. Check: the receiver takes "
        f"{fmt(receiver.cpu_ms / receiver.invocations)} ms a webhook this way, {fmt(facts['receiver_with_fakes_ms'])} "
        "ms on bench/_fakes.py's in-memory clients (no botocore either). Billed duration = that CPU divided by the "
        f"function's share of a vCPU (1,769 MB buys one: {shares}; this machine's core counted as one) + "
        f"{AWS_CALL_MS:.0f} ms per AWS call + {PLUGGY_CALL_MS:.0f} ms per Pluggy call (network, not measured here).",
        f"DynamoDB Streams: {fmt(publisher.records / events)} stream records and "
        f"{fmt(publisher.invocations / events)} publisher invocations per webhook. The GetRecords calls of a Lambda "
        'trigger are not billed (DynamoDB developer guide, "Evaluate your DynamoDB streams usage").',
        f"EventBridge: {fmt(publisher.events_put / events)} change events per webhook, "
        f"${PRICES['eventbridge_custom_events_per_million']:.2f} per million custom events, an entry billed per "
        "64 KB chunk of its size by EventBridge's rule (`publisher.entry_size`); delivery to the rules' targets in "
        "the account is not billed.",
        "Invocations: the processor and the publisher get what waits in their sources (up to 10 messages, up to "
        "100 stream records), as at volume; at a few events a minute each event is an invocation of its own, which "
        f"adds Lambda requests (${PRICES['lambda_request_per_million']:.2f} per million) and the per-invocation "
        "work.",
        "CloudWatch Logs: what the functions printed at the template's LogLevel (INFO) with their metrics, plus "
        f"{PLATFORM_LOG_BYTES} bytes of Lambda's own START and REPORT records per invocation.",
        f"Secrets Manager: ${PRICES['secrets_manager_secret_month']:.2f} per secret a month; a warm container reads "
        f"a secret at most once a minute, 43,200 calls (${43_200 * PRICES['secrets_manager_per_10k_calls'] / 1e4:.2f}) "
        "a month per container at most, whatever the volume (here the secrets come from the environment).",
        f"Prices: us-east-1 list prices (2026), free tier ignored. The hosted-gateway row is an illustrative "
        f"${HOSTED_GATEWAY_PER_MILLION:.0f} per million events for reception and delivery only: it still needs a "
        "consumer (the processor) and storage on your side.",
        f"Largest line at 100M webhooks/month: {largest[1]} (${largest[0]:,.2f}). API Gateway's REST API costs more "
        "than an HTTP API would, but only the REST API takes a resource policy for the IP allowlist (docs/design.md).",
        f"At 100M webhooks a month the processor would call Pluggy about {pluggy_per_minute:,.0f} times a minute, "
        "where Pluggy allows one source IP 360 calls a minute per endpoint: that column prices the AWS side of a "
        "volume that needs more than one egress IP.",
    )
    refs = sum(u.by_record["account ref:table"] for u in connected.values()) / items
    route_notes = (
        f"Each route: {facts['calls']} calls of its handler on the mirror this run built (answers "
        f"{facts['reads']} for the reads, {facts['minted']} for the tokens), priced as above. Pluggy's API is not "
        f"billed by AWS: the token's {fmt(measured.usage[TOKEN][CONNECT_TOKEN].pluggy_calls / facts['calls'])} "
        "Pluggy calls per request (the API key is cached per container) only add their allowance to its duration.",
        f"The reads: a user's items (one each), an item with its {fmt(facts['accounts_per_item'])} accounts, a page "
        f"of up to 100 (the default) of an account with {fmt(facts['transactions_per_account'])} transactions.",
        f"Items connected: each item's {fmt(connected[RECEIVER].invocations / items)} webhooks (login, creation), "
        f"its initial sync ({fmt(facts['accounts_per_item'])} accounts and their history) and its change events; "
        "add its `POST /connect-token` call (first column). An `ACCOUNTREF#<id>` record is written before each "
        f"account's first record: {fmt(refs)} write units an item (no index holds it).",
    )
    return {"month": month_notes, "routes": route_notes}


def _render_doc(measures: Sequence[Measure], method: Sequence[str]) -> str:
    lines = [
        "# Cost",
        "",
        "Generated by `.venv/bin/python -m bench.cost` (also part of `make bench`); do not edit by hand.",
    ]
    for measure in measures:
        lines += ["", f"## {measure.title}", "", measure.table.to_markdown()]
        lines += ["", *(f"- {note}" for note in measure.notes)] if measure.notes else []
    return "\n".join([*lines, "", "## How it is computed", "", *(f"- {note}" for note in method), ""])


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv[1:]).summary.to_markdown())
    print(f"wrote {COST_DOC}", file=sys.stderr)
