"""Processor benchmark: the initial sync of a large item, its calls, throughput, memory; incremental syncs.

Every figure comes from this run, against moto in server mode (real HTTP) and the Pluggy emulator, both
hosted by the benchmark process; the processor runs in child processes so that neither is counted in its
memory:
1. calls of an initial sync (3 accounts x 5,000 transactions) through the real `Processor.process`, built by
   `get_processor()` from the template's environment: Pluggy calls by endpoint, DynamoDB calls by operation
   (botocore hooks and `RecordStore.calls`), against the goal "writes <= ceil(N/25) + a constant", the
   constant measured again at a much smaller N to show it does not grow with N;
2. throughput (transactions/s) against raw BatchWriteItem of the same records, already serialized, in calls
   of 25 from the same kind of child process to the same moto server, interleaved round by round, fresh
   tables every time;
3. peak RSS of the child doing the sync (ru_maxrss), and the tracemalloc peak in a separate run;
4. incremental syncs: `item/updated` with nothing new, then the events of a sync that added a few rows.

The items request accounts and transactions only (`PRODUCTS`): this measures that sync; bench/products.py measures
what the other products (bills, investments, loans, identity) add to it. Every emulator item is an Open Finance one
with a consent, so each sync also reads its consents (one GET /consents, one Query) and the first one writes it.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from pluggy_emulator import PluggyEmulator
from pluggy_pipeline import aws
from pluggy_pipeline.event_queue import EventQueue
from pluggy_pipeline.event_store import ProcessingLog
from pluggy_pipeline.observability import logger
from pluggy_pipeline.pluggy_client import PluggyClient
from pluggy_pipeline.processor import Processor, QueueMessage, transaction_record
from pluggy_pipeline.records import BATCH_SIZE, RecordStore, to_attributes
from pluggy_pipeline_local.devsecrets import LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET
from pluggy_pipeline_local.moto_server import FAKE_CREDENTIALS, LocalAws, local_secret_value, moto_server
from pluggy_pipeline_local.template import LocalResources, create_resources, function_environment

from bench import Measure, Section, Stats, Table, fmt, ratio, verdict
from bench._harness import (
    CallCounter,
    child_environment,
    own_rss_kb,
    progress_of,
    rotated,
    run_child,
    template,
)

progress = progress_of("processor")

# The goals (the only figures written here; everything else is measured).
GOAL_THROUGHPUT_RATIO = 0.7  # processor tx/s / raw BatchWriteItem tx/s
GOAL_PEAK_RSS_MB = 150.0
# Plus at most 1 GET /v2/transactions per account. GET /consents: an Open Finance item's consents are read every sync
# (one may have been revoked), whatever products it asked for.
GOAL_NO_CHANGE_CALLS = {"GET /items/{id}": 1, "GET /accounts": 1, "GET /consents": 1}
# What the items ask Pluggy for: the accounts-and-transactions sync this benchmark has measured from the start.
PRODUCTS = ("ACCOUNTS", "TRANSACTIONS")
TRANSACTIONS_ROUTE = "GET /v2/transactions"
PAGE_SIZE = 500  # the emulator's /v2/transactions page size (its default), passed explicitly
WRITE_OPERATIONS = ("BatchWriteItem", "PutItem", "UpdateItem", "DeleteItem")


@dataclass(frozen=True)
class Sizes:
    transactions_per_account: int  # the large item (the emulator gives a user-ok item 3 accounts)
    rounds: int  # each round runs the processor once and the raw baseline once, order alternating
    small_transactions_per_account: int  # second size, to check the write overhead does not grow with N
    added: int  # rows added by the incremental sync "with a few changes"


FULL = Sizes(5_000, 3, 110, 10)
QUICK = Sizes(300, 2, 40, 10)
TINY = Sizes(30, 1, 7, 4)  # for the smoke test: exercises everything, measures nothing


# ---------------------------------------------------------------------------------------------------------
# The child process: only what the Lambda imports (pluggy_pipeline, boto3), no moto, no emulator
# ---------------------------------------------------------------------------------------------------------

WORKER = r"""
import gc, json, resource, sys, time

def status_kb(key):
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0

def rss_kb():
    return status_kb("VmRSS")

# Linux carries the high-water RSS of the process image replaced by exec into ru_maxrss: read both now.
maxrss_at_start_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hwm_at_start_kb = status_kb("VmHWM")

with open(sys.argv[1], encoding="utf-8") as handle:
    job = json.load(handle)
from pluggy_pipeline import aws
calls = {}
attempts = [0]

def before_call(model=None, **_):
    key = model.service_model.service_name + "." + model.name
    calls[key] = calls.get(key, 0) + 1

def request_created(**_):
    attempts[0] += 1

def hooked(client):
    client.meta.events.register("before-call", before_call)
    client.meta.events.register("request-created", request_created)
    return client

out = {}
if job["mode"] == "processor":
    from pluggy_pipeline.processor import QueueMessage, get_processor
    processor = get_processor()
    # The processor's own clients (get_processor binds these factories): created now, hooked.
    for factory in (aws.dynamodb, aws.sqs, aws.secretsmanager):
        hooked(factory(aws.PROCESSOR_CONFIG))
    message = QueueMessage(job["message_id"], job["body"], job["attributes"])
    out["rss_before_kb"] = rss_kb()
    if job["tracemalloc"]:
        import tracemalloc
        tracemalloc.start()
    started = time.perf_counter()
    processor.process(message)
    out["seconds"] = time.perf_counter() - started
    if job["tracemalloc"]:
        out["traced_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    out["record_store_calls"] = processor.records.calls
    out["pluggy_requests"] = processor.pluggy.request_count
else:
    client = hooked(aws.dynamodb(aws.PROCESSOR_CONFIG))
    table = job["table"]
    with open(job["records"], encoding="utf-8") as handle:
        records = json.load(handle)
    gc.freeze()  # the records are long-lived: keep the cyclic collector from walking them again and again
    out["rss_before_kb"] = rss_kb()
    unprocessed = 0
    started = time.perf_counter()
    for start in range(0, len(records), 25):
        pending = [{"PutRequest": {"Item": item}} for item in records[start:start + 25]]
        for _ in range(9):
            pending = client.batch_write_item(RequestItems={table: pending}).get("UnprocessedItems", {}).get(table, [])
            if not pending:
                break
            unprocessed += len(pending)
        if pending:
            sys.exit("raw baseline: items left unprocessed")
    out["seconds"] = time.perf_counter() - started
    out["unprocessed_retries"] = unprocessed
out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out["hwm_kb"] = status_kb("VmHWM")
out["maxrss_at_start_kb"] = maxrss_at_start_kb
out["hwm_at_start_kb"] = hwm_at_start_kb
out["aws_calls"] = calls
out["http_attempts"] = attempts[0]
with open(job["out"], "w", encoding="utf-8") as handle:
    json.dump(out, handle)
"""


@dataclass(frozen=True)
class ChildResult:
    kind: str  # "processor" | "raw"
    seconds: float
    peak_rss_mb: float  # VmHWM at the end: the peak RSS of this process image (since its exec)
    maxrss_mb: float  # ru_maxrss at the end
    maxrss_at_start_mb: float  # ru_maxrss at the child's first line: inherited across exec
    parent_rss_mb: float  # the benchmark process's RSS when it spawned the child
    rss_before_mb: float  # just before the measured work (imports and clients done)
    aws_calls: dict[str, int]
    http_attempts: int
    record_store_calls: dict[str, int]
    pluggy_requests: dict[str, int]  # PluggyClient.request_count, ids folded into route templates
    emulator_stats: dict[str, int]  # the emulator's own count, per route template
    traced_peak_mb: float | None
    stored: int  # items in RecordsTable afterwards

    @classmethod
    def of(cls, kind: str, out: Mapping[str, Any], stored: int, **counts: Any) -> ChildResult:
        traced = out.get("traced_peak_bytes")
        return cls(
            kind=kind,
            seconds=float(out["seconds"]),
            peak_rss_mb=out["hwm_kb"] / 1024,
            maxrss_mb=out["maxrss_kb"] / 1024,
            maxrss_at_start_mb=out["maxrss_at_start_kb"] / 1024,
            parent_rss_mb=out["parent_rss_kb"] / 1024,
            rss_before_mb=out["rss_before_kb"] / 1024,
            aws_calls=dict(out["aws_calls"]),
            http_attempts=int(out["http_attempts"]),
            record_store_calls=dict(counts.get("record_store_calls", {})),
            pluggy_requests=dict(counts.get("pluggy_requests", {})),
            emulator_stats=dict(counts.get("emulator_stats", {})),
            traced_peak_mb=traced / 2**20 if traced is not None else None,
            stored=stored,
        )


class Bench:
    """The moto server, the emulator, the items and the template, shared by every measure."""

    def __init__(self, local: LocalAws, emulator: PluggyEmulator, work: Path) -> None:
        self.local = local
        self.emulator = emulator
        self.work = work
        self.template = template()
        self.base_env = child_environment(work, local.env)

    def fresh_resources(self) -> LocalResources:
        """Every table, queue and secret of template.yaml under a new prefix: empty tables."""
        clients = self.local.clients
        return create_resources(
            self.template,
            dynamodb=clients["dynamodb"],
            sqs=clients["sqs"],
            secretsmanager=clients["secretsmanager"],
            prefix=f"bp-{uuid.uuid4().hex[:8]}",
            secret_values=secret_values(),
        )

    def drop_tables(self, resources: LocalResources) -> None:
        for table in resources.tables.values():
            self.local.clients["dynamodb"].delete_table(TableName=table)

    def count(self, table: str, pk: str | None = None, prefix: str = "TX#") -> int:
        """Items in `table` (a Scan), or in partition `pk` under sort-key `prefix` (a consistent Query)."""
        client, total, start = self.local.clients["dynamodb"], 0, None
        read, where = client.scan, dict[str, Any]()
        if pk is not None:
            read, where = client.query, {"KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)"}
            where |= {"ExpressionAttributeValues": {":pk": {"S": pk}, ":prefix": {"S": prefix}}, "ConsistentRead": True}
        for _ in range(100_000):
            page = read(TableName=table, Select="COUNT", **where, **({"ExclusiveStartKey": start} if start else {}))
            total += int(page["Count"])
            start = page.get("LastEvaluatedKey")
            if not start:
                return total
        raise RuntimeError("count did not end")

    def processor_env(self, resources: LocalResources) -> dict[str, str]:
        # Pacing off: this measures the processor's own work; bench/storm.py measures the pace of many syncs.
        parameters = {
            "PluggyApiBaseUrl": self.emulator.base_url,
            "PluggyClientId": LOCAL_PLUGGY_CLIENT_ID,
            "PluggyCallsPerMinute": "0",
        }
        return {**self.base_env, **function_environment(self.template, "ProcessorFunction", resources, parameters)}

    def run_child(self, job: dict[str, Any], env: Mapping[str, str], name: str) -> dict[str, Any]:
        parent_rss_kb = own_rss_kb()
        result = run_child(WORKER, job, env, self.work, name)
        result["parent_rss_kb"] = parent_rss_kb
        return result

    def sync_in_child(
        self, message: QueueMessage, *, name: str, tracemalloc: bool = False, keep: bool = False
    ) -> tuple[ChildResult, LocalResources]:
        resources = self.fresh_resources()
        job = {
            "mode": "processor",
            "message_id": message.message_id,
            "body": message.body,
            "attributes": dict(message.attributes),
            "tracemalloc": tracemalloc,
        }
        self.emulator.reset_stats()
        out = self.run_child(job, self.processor_env(resources), name)
        stats = self.emulator.stats()
        stored = self.count(resources.tables["RecordsTable"])
        if not keep:
            self.drop_tables(resources)
        result = ChildResult.of(
            "processor",
            out,
            stored,
            record_store_calls=out["record_store_calls"],
            pluggy_requests=fold_routes(out["pluggy_requests"]),
            emulator_stats=stats,
        )
        return result, resources

    def raw_in_child(self, records_file: Path, *, name: str) -> ChildResult:
        resources = self.fresh_resources()
        table = resources.tables["RecordsTable"]
        job = {"mode": "raw", "table": table, "records": str(records_file)}
        out = self.run_child(job, self.base_env, name)
        stored = self.count(table)
        self.drop_tables(resources)
        return ChildResult.of("raw", out, stored)


def secret_values() -> dict[str, str]:
    credentials = {"clientId": LOCAL_PLUGGY_CLIENT_ID, "clientSecret": LOCAL_PLUGGY_CLIENT_SECRET}
    return {"WebhookSecret": local_secret_value(), "PluggyCredentialsSecret": json.dumps(credentials)}


_ID_SEGMENT = re.compile(
    r"^(\w+ /(?:items|accounts|transactions|webhooks|investments|bills|loans|identity|consents))/[^/?]+(/\w+)?$"
)


def fold_routes(requests: Mapping[str, int]) -> dict[str, int]:
    """PluggyClient labels ("GET /investments/<uuid>/transactions") folded into the emulator's route templates
    ("GET /investments/{id}/transactions")."""
    folded: Counter[str] = Counter()
    for label, count in requests.items():
        folded[_ID_SEGMENT.sub(r"\1/{id}\2", label)] += count
    return dict(folded)


def message_of(payload: Mapping[str, Any], message_id: str) -> QueueMessage:
    """The SQS message the receiver would have queued for this Pluggy event (raw body, ids as attributes)."""
    body = json.dumps(payload, separators=(",", ":"))
    attributes = {"eventId": str(payload["eventId"]), "eventType": str(payload["event"])}
    return QueueMessage(message_id, body, attributes)


def emitted(emulator: PluggyEmulator, event: str, item_id: str) -> dict[str, Any]:
    for record in emulator.events():
        payload: dict[str, Any] = record["payload"]
        if record["event"] == event and payload.get("itemId") == item_id:
            return payload
    raise RuntimeError(f"the emulator sent no {event} for {item_id}")


def item_shape(emulator: PluggyEmulator, item_id: str) -> dict[str, int]:
    """{accountId: transactions} of the item, from the emulator's ground truth."""
    truth = emulator.truth()
    accounts = [a for a, account in truth["accounts"].items() if account["itemId"] == item_id]
    return {a: len(truth["transactions"][a]) for a in accounts}


def consents_of(emulator: PluggyEmulator, item_id: str) -> int:
    """The item's consents in the emulator's ground truth (every sandbox item has one)."""
    return sum(1 for consent in emulator.truth()["consents"].values() if consent["itemId"] == item_id)


def serialized_transactions(emulator: PluggyEmulator, item_id: str) -> list[dict[str, Any]]:
    """The item's transaction records exactly as the processor writes them (same code, same order)."""
    client = PluggyClient(emulator.base_url, lambda: (LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET))
    try:
        records = []
        for account in client.list_accounts(item_id):
            for page in client.iter_transactions(str(account["id"])):
                records += [to_attributes(transaction_record(tx, item_id)) for tx in page]
        return records
    finally:
        client.close()


@contextmanager
def quiet_logger() -> Iterator[None]:
    level = logger.log_level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------------------------------------
# 1 + 2 + 3: the initial sync in child processes, against the raw baseline
# ---------------------------------------------------------------------------------------------------------


def writes_of(calls: Mapping[str, int]) -> int:
    return sum(calls.get(f"dynamodb.{op}", 0) for op in WRITE_OPERATIONS)


def dynamodb_ops(calls: Mapping[str, int]) -> str:
    parts = [f"{op.split('.', 1)[1]} {n}" for op, n in sorted(calls.items()) if op.startswith("dynamodb.")]
    return ", ".join(parts) or "none"


def pluggy_ops(stats: Mapping[str, int]) -> str:
    return ", ".join(f"{route} {n}" for route, n in sorted(stats.items())) or "none"


def measure_initial_sync(bench: Bench, sizes: Sizes, data: dict[str, Any]) -> tuple[list[Measure], LocalResources]:
    emulator = bench.emulator
    per_account = f"{sizes.transactions_per_account} and {sizes.small_transactions_per_account}"
    progress(f"creating the items ({per_account} transactions per account)")
    large, small = (
        emulator.create_item(f"bench-{name}", transactions_per_account=count, products=PRODUCTS)
        for name, count in (("large", sizes.transactions_per_account), ("small", sizes.small_transactions_per_account))
    )
    shape, small_shape = item_shape(emulator, large["id"]), item_shape(emulator, small["id"])
    n, accounts = sum(shape.values()), len(shape)
    n_small = sum(small_shape.values())
    created = message_of(emitted(emulator, "item/created", large["id"]), "bench-initial")
    small_created = message_of(emitted(emulator, "item/created", small["id"]), "bench-small")

    with quiet_logger():
        records = serialized_transactions(emulator, large["id"])
    if len(records) != n:
        raise RuntimeError(f"serialized {len(records)} records for {n} transactions")
    records_file = bench.work / "records.json"
    records_file.write_text(json.dumps(records), encoding="utf-8")
    sizes_bytes = [len(json.dumps(r, separators=(",", ":"))) for r in records]
    del records

    processor_runs: list[ChildResult] = []
    raw_runs: list[ChildResult] = []
    kept: LocalResources | None = None
    for round_number in range(sizes.rounds):
        for kind in rotated(("processor", "raw"), round_number):
            progress(f"round {round_number + 1}/{sizes.rounds}: {kind} ({n} transactions)")
            if kind == "raw":
                raw_runs.append(bench.raw_in_child(records_file, name=f"raw-{round_number}"))
                continue
            last = round_number == sizes.rounds - 1
            result, resources = bench.sync_in_child(created, name=f"processor-{round_number}", keep=last)
            processor_runs.append(result)
            if last:
                kept = resources
    assert kept is not None
    progress("tracemalloc run")
    traced, _ = bench.sync_in_child(created, name="tracemalloc", tracemalloc=True)
    progress(f"second size ({n_small} transactions)")
    small_run, _ = bench.sync_in_child(small_created, name="small", tracemalloc=True)

    # Invariants: every run stored the whole item and made the same calls.
    consents = consents_of(emulator, large["id"])
    expected_stored = n + 2 * accounts + 1 + consents  # transactions, accounts and their refs, the item, its consents
    for run in [*processor_runs, traced]:
        if run.stored != expected_stored:
            raise RuntimeError(f"the processor stored {run.stored} records, expected {expected_stored}")
        if run.aws_calls != processor_runs[0].aws_calls or run.emulator_stats != processor_runs[0].emulator_stats:
            raise RuntimeError("two initial syncs of the same item made different calls")
    for run in raw_runs:
        if run.stored != n:
            raise RuntimeError(f"the raw baseline stored {run.stored} records, expected {n}")
    if small_run.stored != n_small + 2 * len(small_shape) + 1 + consents_of(emulator, small["id"]):
        raise RuntimeError("the small item was not stored whole")

    first = processor_runs[0]
    batches = math.ceil(n / BATCH_SIZE)
    writes = writes_of(first.aws_calls)
    excess = writes - batches
    small_batches = math.ceil(n_small / BATCH_SIZE)
    small_excess = writes_of(small_run.aws_calls) - small_batches
    writes_met = excess <= small_excess
    pages = sum(math.ceil(count / PAGE_SIZE) if count else 1 for count in shape.values())
    pluggy_minimum = 1 + 1 + 1 + pages + 1  # auth (new container), item, accounts, transaction pages, consents
    pluggy_total = sum(first.emulator_stats.values())
    client_total = sum(first.pluggy_requests.values())
    retries = first.http_attempts - sum(first.aws_calls.values())
    batch_calls = first.aws_calls.get("dynamodb.BatchWriteItem", 0)
    if batch_calls != first.record_store_calls.get("batch_write_item", 0):
        raise RuntimeError("botocore and RecordStore disagree on the BatchWriteItem count")
    single_writes = {f"dynamodb.{op}": first.aws_calls.get(f"dynamodb.{op}", 0) for op in WRITE_OPERATIONS[1:]}
    reads = {
        op: c
        for op, c in first.aws_calls.items()
        if op.startswith("dynamodb.") and op.split(".", 1)[1] not in WRITE_OPERATIONS
    }
    calls_rows = [
        (
            "DynamoDB write calls (BatchWriteItem + PutItem + UpdateItem + DeleteItem)",
            f"≤ ceil(N/{BATCH_SIZE}) + c, c not growing with N",
            f"{writes} = {batches} + {excess}",
            f"ceil({n}/{BATCH_SIZE}) = {batches}",
            ratio(writes, batches),
            verdict(writes_met),
        ),
        (
            f"same, second size N' = {n_small}",
            "—",
            f"{writes_of(small_run.aws_calls)} = {small_batches} + {small_excess}",
            f"ceil({n_small}/{BATCH_SIZE}) = {small_batches}",
            ratio(writes_of(small_run.aws_calls), small_batches),
            "(reference for c)",
        ),
        (
            "DynamoDB calls by operation (botocore hooks, every table)",
            "—",
            dynamodb_ops(first.aws_calls),
            "—",
            "—",
            "(informative)",
        ),
        (
            "RecordsTable calls (`RecordStore.calls`)",
            "—",
            ", ".join(f"{op} {c}" for op, c in sorted(first.record_store_calls.items())),
            "—",
            "—",
            "(informative)",
        ),
        (
            "Pluggy calls (emulator's count)",
            "—",
            f"{pluggy_total}: {pluggy_ops(first.emulator_stats)}",
            f"{pluggy_minimum}: auth + item + accounts + {pages} pages of {PAGE_SIZE} + consents",
            ratio(pluggy_total, pluggy_minimum),
            "(informative)",
        ),
        (
            "Pluggy calls (`PluggyClient.request_count`)",
            "—",
            f"{client_total}: {pluggy_ops(first.pluggy_requests)}",
            "the emulator's count",
            ratio(client_total, pluggy_total),
            "(informative)",
        ),
        (
            "Other AWS calls",
            "—",
            ", ".join(f"{op} {c}" for op, c in sorted(first.aws_calls.items()) if not op.startswith("dynamodb."))
            or "none",
            "—",
            "—",
            "(informative)",
        ),
    ]
    calls_notes = [
        f"N = {n} transactions in {accounts} accounts ({', '.join(str(c) for c in shape.values())}), item "
        f"`{large['id']}` created on the emulator with `transactions_per_account={sizes.transactions_per_account}` "
        f"and `products={list(PRODUCTS)}` (the accounts-and-transactions sync; bench/products.py adds the other "
        "products); "
        f"the message is the emulator's own `item/created` for it, processed by `Processor.process` in a child "
        "process built by `get_processor()` from the template's environment (credentials from Secrets Manager).",
        f"c = {excess} at N = {n} and {small_excess} at N' = {n_small}: the calls beyond ceil(N/{BATCH_SIZE}) "
        f"are {dynamodb_ops({k: v for k, v in single_writes.items() if v})} (the event log's start and finish, the "
        "item, its accounts and their refs, one watermark per account) plus the batches beyond ceil(N/25) that "
        "come from each account's stream ending with a partial batch, and one for the item's consent (every "
        f"emulator item is an Open Finance one, with {consents}): {batch_calls} BatchWriteItem in all. The "
        f"goal is met when c at N is not larger than at N'. Reads, not counted as writes: {dynamodb_ops(reads)}.",
        f"HTTP attempts beyond calls (botocore retries): {retries}. Every run made the same calls "
        f"({len(processor_runs) + 1} runs compared).",
        "POST /auth and GetSecretValue are made once per container (the API key and credentials are cached).",
    ]
    data["calls"] = {
        "n": n,
        "accounts": accounts,
        "batches": batches,
        "writes": writes,
        "excess": excess,
        "n_small": n_small,
        "small_excess": small_excess,
        "consents": consents,
        "goal_met": writes_met,
        "emulator_stats": first.emulator_stats,
        "client_requests": first.pluggy_requests,
        "aws_calls": first.aws_calls,
        "record_store_calls": first.record_store_calls,
        "pluggy_minimum": pluggy_minimum,
        "retries": retries,
    }
    calls_measure = Measure(
        "1. Initial sync: calls",
        Table(("What", "Goal", "Measured", "Baseline", "Ratio", "Verdict"), tuple(calls_rows)),
        tuple(calls_notes),
        met=writes_met,
    )

    # 2. Throughput
    p_seconds = Stats.of([r.seconds for r in processor_runs])
    r_seconds = Stats.of([r.seconds for r in raw_runs])
    p_rate = Stats.of([n / r.seconds for r in processor_runs])
    r_rate = Stats.of([n / r.seconds for r in raw_runs])
    throughput_ratio = p_rate.median / r_rate.median
    paired = [(n / p.seconds) / (n / r.seconds) for p, r in zip(processor_runs, raw_runs, strict=True)]
    throughput_met = throughput_ratio >= GOAL_THROUGHPUT_RATIO
    rows = [
        (
            "Processor: `Processor.process(item/created)`",
            f"≥ {GOAL_THROUGHPUT_RATIO}x raw",
            f"{fmt(p_seconds.median)} s; {fmt(p_seconds.p95)} s",
            f"{fmt(p_rate.median)}; {fmt(p_rate.p95)}",
            f"{fmt(r_rate.median)} tx/s",
            f"{throughput_ratio:.2f}x",
            verdict(throughput_met),
        ),
        (
            f"Raw: `batch_write_item` of {BATCH_SIZE} pre-serialized records in a loop",
            "—",
            f"{fmt(r_seconds.median)} s; {fmt(r_seconds.p95)} s",
            f"{fmt(r_rate.median)}; {fmt(r_rate.p95)}",
            "—",
            "1.00x",
            "(baseline)",
        ),
    ]
    throughput_notes = [
        f"{sizes.rounds} round(s); each runs both, in an order alternating from round to round, each on fresh "
        f"tables created from template.yaml. Wall time is `perf_counter` around `process()` in the child (the "
        "child's start, imports and client creation excluded; the Pluggy API key and the credentials secret "
        "are fetched inside it, as in a new container) and around the write loop for the raw baseline "
        "(the records read from a file beforehand, excluded).",
        "Per-round processor/raw ratios: "
        + ", ".join(f"{x:.2f}" for x in paired)
        + ". Samples (s): processor "
        + ", ".join(fmt(r.seconds) for r in processor_runs)
        + "; raw "
        + ", ".join(fmt(r.seconds) for r in raw_runs)
        + ".",
        f"Same records for both: the raw baseline writes the {n} transaction records the processor writes, built "
        "by the same code (`transaction_record` + `to_attributes`) from the same emulator pages, in the same "
        f"order; DynamoDB JSON size median {fmt(Stats.of([float(s) for s in sizes_bytes]).median)} bytes, "
        f"{fmt(sum(sizes_bytes) / 2**20)} MB in all.",
        "Backend: moto in server mode (`moto_server()`: ThreadedMotoServer, real HTTP on 127.0.0.1) for both, "
        "because the memory measure needs the backend outside the measured process, and so that the processor "
        "pays the HTTP and serialization cost it pays against AWS. The moto server and the Pluggy emulator run "
        "in the benchmark process; the processor and the raw writer each run in a child process with the same "
        "client configuration (`aws.PROCESSOR_CONFIG`) and the same botocore hooks.",
        "What the processor adds over the raw loop: fetching the pages from the Pluggy emulator, parsing them, "
        "building and serializing the records, the event log, the item and account writes. moto is far slower "
        "than DynamoDB per write, which makes this ratio kinder to the processor than AWS would be.",
    ]
    data["throughput"] = {
        "processor_seconds": p_seconds,
        "raw_seconds": r_seconds,
        "processor_tx_per_s": p_rate,
        "raw_tx_per_s": r_rate,
        "ratio": throughput_ratio,
        "paired": paired,
        "goal_met": throughput_met,
    }
    throughput_measure = Measure(
        "2. Initial sync: throughput against raw BatchWriteItem",
        Table(
            ("Run", "Goal", "Time (median; p95)", "tx/s (median; p95)", "Baseline (raw tx/s)", "Ratio", "Verdict"),
            tuple(rows),
        ),
        tuple(throughput_notes),
        met=throughput_met,
    )

    # 3. Memory
    rss = Stats.of([r.peak_rss_mb for r in processor_runs])
    before = Stats.of([r.rss_before_mb for r in processor_runs])
    maxrss = Stats.of([r.maxrss_mb for r in processor_runs])
    inherited = Stats.of([r.maxrss_at_start_mb for r in processor_runs])
    parent = Stats.of([r.parent_rss_mb for r in processor_runs])
    raw_rss = Stats.of([r.peak_rss_mb for r in raw_runs])
    memory_met = rss.maximum <= GOAL_PEAK_RSS_MB
    assert traced.traced_peak_mb is not None and small_run.traced_peak_mb is not None
    memory_rows = [
        (
            "Peak RSS of the child doing the initial sync (VmHWM at its end)",
            f"≤ {fmt(GOAL_PEAK_RSS_MB)} MB",
            f"{fmt(rss.median)} MB; max {fmt(rss.maximum)} MB",
            f"{fmt(before.median)} MB",
            ratio(rss.median, before.median),
            verdict(memory_met),
        ),
        (
            "`ru_maxrss` of the same child at its end",
            "—",
            f"{fmt(maxrss.median)} MB; max {fmt(maxrss.maximum)} MB",
            f"at its first line: {fmt(inherited.median)} MB (benchmark process at spawn: {fmt(parent.median)} MB)",
            "—",
            "(not the child's own)",
        ),
        (
            f"tracemalloc peak of Python allocations during `process()`, N = {n} (separate run)",
            "—",
            f"{fmt(traced.traced_peak_mb)} MB",
            f"N' = {n_small}: {fmt(small_run.traced_peak_mb)} MB",
            ratio(traced.traced_peak_mb, small_run.traced_peak_mb),
            "(informative)",
        ),
        (
            "Peak RSS (VmHWM) of the tracemalloc run (tracemalloc's own overhead included)",
            "—",
            f"{fmt(traced.peak_rss_mb)} MB",
            f"{fmt(traced.rss_before_mb)} MB",
            ratio(traced.peak_rss_mb, traced.rss_before_mb),
            "(informative)",
        ),
        (
            f"Peak RSS (VmHWM) of the raw writer (holds all {n} records)",
            "—",
            f"{fmt(raw_rss.median)} MB",
            "—",
            "—",
            "(informative)",
        ),
    ]
    memory_notes = [
        "Absolute peak RSS of the child process that does only the processor's work (interpreter, imports of "
        "boto3, Powertools and pluggy_pipeline, the clients, the sync), read from /proc/self/status (VmHWM, the "
        f"high-water mark of the process image since its exec) at its end; median and maximum over "
        f"{len(processor_runs)} run(s), the verdict on the maximum. Baseline: its RSS (VmRSS) just before "
        "`process()`, after imports and client creation.",
        f"`resource.getrusage(RUSAGE_SELF).ru_maxrss` is not the child's own peak here: Linux carries the peak RSS "
        f"of the image that exec replaced (the benchmark process it was forked from) into it. Read at the child's "
        f"first line, before any import, it is already {fmt(inherited.median)} MB, against the "
        f"{fmt(parent.median)} MB the benchmark process (moto's tables, the emulator, the serialized records) had "
        "when it spawned the child; hence VmHWM.",
        "The moto server and the Pluggy emulator run in the benchmark process, not in the measured one: had they "
        "shared it, moto's copy of the tables would have been counted in the figure.",
        f"tracemalloc counts only Python allocations made during `process()`: {fmt(traced.traced_peak_mb)} MB at "
        f"N = {n} against {fmt(small_run.traced_peak_mb)} MB at N' = {n_small} ({n / n_small:.0f} times fewer "
        f"transactions); the sync streams each account's pages ({PAGE_SIZE} rows) into batches of {BATCH_SIZE}. "
        f"The N run took {fmt(traced.seconds)} s (tracemalloc slows allocation): not a throughput sample.",
    ]
    data["memory"] = {
        "peak_rss_mb": rss,
        "rss_before_mb": before,
        "maxrss_mb": maxrss,
        "maxrss_at_start_mb": inherited,
        "parent_rss_mb": parent,
        "traced_peak_mb": traced.traced_peak_mb,
        "small_traced_peak_mb": small_run.traced_peak_mb,
        "traced_run_rss_mb": traced.peak_rss_mb,
        "raw_rss_mb": raw_rss,
        "goal_met": memory_met,
    }
    memory_measure = Measure(
        "3. Initial sync: peak memory",
        Table(("What", "Goal", "Measured", "Baseline (RSS before the sync)", "Ratio", "Verdict"), tuple(memory_rows)),
        tuple(memory_notes),
        met=memory_met,
    )
    data["item_id"] = large["id"]
    data["shape"] = shape
    return [calls_measure, throughput_measure, memory_measure], kept


# ---------------------------------------------------------------------------------------------------------
# 4. Incremental syncs (in the benchmark process: counts only)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    label: str
    pluggy: dict[str, int]
    aws: dict[str, int]
    counts: dict[str, int]


def build_processor(
    bench: Bench,
    resources: LocalResources,
    *,
    tx_overlap_minutes: int = 30,
    clock: Callable[[], float] = time.time,
) -> tuple[Processor, CallCounter]:
    """The processor as get_processor() builds it, on clients pointed at the moto server."""
    session = boto3.session.Session()
    credentials = {
        "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "aws_session_token": FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
    }
    common = {"region_name": "us-east-1", "endpoint_url": bench.local.endpoint, "config": aws.PROCESSOR_CONFIG}
    dynamodb = session.client("dynamodb", **common, **credentials)  # type: ignore[call-overload]
    sqs = session.client("sqs", **common, **credentials)  # type: ignore[call-overload]
    counter = CallCounter()
    counter.attach(dynamodb, sqs)
    pluggy = PluggyClient(bench.emulator.base_url, lambda: (LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET))
    processor = Processor(
        pluggy,
        RecordStore(lambda: dynamodb, resources.tables["RecordsTable"]),
        ProcessingLog(lambda: dynamodb, resources.tables["EventsTable"]),
        EventQueue(lambda: sqs, resources.queue_urls["EventQueue"]),
        EventQueue(lambda: sqs, resources.queue_urls["EventDeadLetterQueue"]),
        tx_overlap_minutes=tx_overlap_minutes,
        clock=clock,
    )
    return processor, counter


def event_counts(bench: Bench, resources: LocalResources, event_id: str) -> tuple[str, dict[str, int]]:
    item = bench.local.clients["dynamodb"].get_item(
        TableName=resources.tables["EventsTable"], Key={"eventId": {"S": event_id}}, ConsistentRead=True
    )["Item"]
    counts = {k: int(v["N"]) for k, v in item.get("counts", {}).get("M", {}).items()}
    return item["status"]["S"], counts


def measure_incremental(bench: Bench, resources: LocalResources, sizes: Sizes, data: dict[str, Any]) -> Measure:
    emulator = bench.emulator
    item_id: str = data["item_id"]
    shape: dict[str, int] = data["shape"]
    accounts = len(shape)
    later = [0.0]  # seconds added to the processor's clock: "31 minutes later" without waiting
    processor, counter = build_processor(bench, resources, clock=lambda: time.time() + later[0])
    without_overlap, baseline_counter = build_processor(bench, resources, tx_overlap_minutes=0)
    steps: list[Step] = []

    def process(label: str, payload: Mapping[str, Any], with_processor: Processor | None = None) -> None:
        chosen = with_processor or processor
        calls_of = baseline_counter if chosen is without_overlap else counter
        emulator.reset_stats()
        chosen.pluggy.request_count.clear()
        calls_of.take()
        chosen.process(message_of(payload, f"bench-{uuid.uuid4().hex[:8]}"))
        stats, calls = emulator.stats(), calls_of.take_counts()
        if sum(stats.values()) != sum(chosen.pluggy.request_count.values()):
            raise RuntimeError("the emulator and PluggyClient disagree on the number of Pluggy calls")
        status, counts = event_counts(bench, resources, str(payload["eventId"]))
        if status != "PROCESSED":
            raise RuntimeError(f"{label}: the event ended {status}")
        steps.append(Step(label, stats, calls, counts))

    try:
        with quiet_logger():
            # A warm container: the API key is cached (the first call of a new one adds POST /auth).
            processor.pluggy.get_item(item_id)
            without_overlap.pluggy.get_item(item_id)

            def updated() -> dict[str, Any]:
                return {
                    "event": "item/updated",
                    "eventId": str(uuid.uuid4()),
                    "clientId": LOCAL_PLUGGY_CLIENT_ID,
                    "itemId": item_id,
                    "triggeredBy": "SYNC",
                    "clientUserId": "bench-large",
                }

            # Baseline, same run: reading only past the watermark (TX_OVERLAP_MINUTES=0), the read before the
            # overlap existed; it misses rows that appear late with an older createdAt.
            process("`item/updated`, nothing new, no overlap (baseline)", updated(), without_overlap)
            process("`item/updated`, nothing new, right after the initial sync (window not complete yet)", updated())
            later[0] = 31 * 60.0
            process("`item/updated`, nothing new, 31 min later (the window re-read once)", updated())
            later[0] = 32 * 60.0
            process("`item/updated`, nothing new, 32 min later (window settled)", updated())
            mark = len(emulator.events())
            emulator.sync_item(item_id, add=sizes.added)
            for record in emulator.events()[mark:]:
                payload = record["payload"]
                process(f"after `sync_item(add={sizes.added})`: `{record['event']}`", payload)
    finally:
        processor.pluggy.close()
        without_overlap.pluggy.close()

    truth = item_shape(emulator, item_id)
    stored = {a: bench.count(resources.tables["RecordsTable"], f"ACCOUNT#{a}") for a in truth}
    if stored != truth:
        raise RuntimeError(f"after the incremental sync the copy holds {stored}, Pluggy {truth}")
    bench.drop_tables(resources)

    baseline, soon, reread, no_change = steps[0], steps[1], steps[2], steps[3]
    pages = no_change.pluggy.get(TRANSACTIONS_ROUTE, 0)
    others = {k: v for k, v in no_change.pluggy.items() if k != TRANSACTIONS_ROUTE}
    no_change_met = others == GOAL_NO_CHANGE_CALLS and pages <= accounts
    goal_text = (
        " + ".join(f"{v} {k}" for k, v in GOAL_NO_CHANGE_CALLS.items()) + f" + ≤ {accounts} {TRANSACTIONS_ROUTE}"
    )
    minimum_dynamodb = 5  # event log start + finish, read the stored item, its accounts, its consents' digests
    rows = []
    for index, step in enumerate(steps):
        dynamodb = {k: v for k, v in step.aws.items() if k.startswith("dynamodb.")}
        rows.append(
            (
                step.label,
                goal_text if index in (0, 1, 3) else "—",
                f"{sum(step.pluggy.values())}: {pluggy_ops(step.pluggy)}",
                f"{sum(dynamodb.values())} ({writes_of(step.aws)} writes): {dynamodb_ops(step.aws)}",
                ", ".join(f"{k} {v}" for k, v in sorted(step.counts.items())) or "none",
                verdict(no_change_met) if index == 3 else "(informative)",
            )
        )
    added_total = sum(s.counts.get("transactions", 0) for s in steps[4:])
    overlap_extra = sum(reread.pluggy.values()) - sum(baseline.pluggy.values())
    soon_extra = sum(soon.pluggy.values()) - sum(baseline.pluggy.values())
    no_change_puts = no_change.aws.get("dynamodb.PutItem", 0)
    notes = [
        f"After the last round's initial sync of the {sum(shape.values())}-transaction item (its tables kept), in "
        "the benchmark process: a `Processor` built like `get_processor()` (RecordStore, ProcessingLog, "
        "EventQueue, PluggyClient) on clients pointed at the same moto server, its API key already cached (one "
        "GET /items/{id} before counting, as in a warm container).",
        f"Nothing new: Pluggy answers the same item; the processor re-reads it, its accounts and each account's "
        "transactions created after the stored watermark, and its consents (every emulator item is an Open Finance "
        "one: its consents are read at every sync, written only when changed). Baseline for DynamoDB: "
        f"{minimum_dynamodb} calls (event log start and finish, read the stored item, its accounts and its consents' "
        "digests) would be the minimum; measured "
        f"{sum(v for k, v in no_change.aws.items() if k.startswith('dynamodb.'))}"
        + (
            f", of which {no_change_puts} PutItem: the item and its accounts are written again although Pluggy's "
            "updatedAt did not move (the versioned put lets an equal version through)."
            if no_change_puts
            else "."
        ),
        f"With changes: `sync_item(add={sizes.added})` on the emulator; each event it emitted (in order) is "
        f"processed as the queue would hand it over. Transactions written across those events: {added_total} for "
        f"{sizes.added} new ones"
        + (
            " (the `transactions/created` events write again what `item/updated` already pulled past the "
            "watermark; the writes are idempotent)."
            if added_total > sizes.added
            else "."
        )
        + " Afterwards the copy holds exactly Pluggy's transactions for every account (checked).",
        "Overlap window (TX_OVERLAP_MINUTES=30): rows can become visible after a read with a createdAt older "
        "than the watermark, within 30 min of it. Reads sooner than that read past the watermark, as the "
        f"baseline (no overlap) does ({soon_extra:+d} calls right after the initial sync); the first read 30 min "
        "after the watermark re-reads the window since what was last complete, once, writing only rows not "
        f"stored or changed (one BatchGetItem per 100 rows): {overlap_extra:+d} Pluggy calls against the "
        f"baseline for this {sum(shape.values()):,}-row item whose whole history shares one sync. After it, reads "
        "cost the baseline's again. What it buys: such a late row is stored by the next incremental instead of waiting "
        "for the daily full sync.",
        "Counts are the `counts` the processor recorded on the event in EventsTable.",
    ]
    data["incremental"] = {
        "steps": steps,
        "overlap_extra_pluggy_calls": overlap_extra,
        "no_change_pluggy": no_change.pluggy,
        "no_change_aws": no_change.aws,
        "goal_met": no_change_met,
        "minimum_dynamodb": minimum_dynamodb,
    }
    return Measure(
        "4. Incremental syncs",
        Table(
            ("Event", "Goal (Pluggy calls)", "Pluggy calls", "DynamoDB calls", "Processor counts", "Verdict"),
            tuple(rows),
        ),
        tuple(notes),
        met=no_change_met,
    )


# ---------------------------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------------------------


def run(quick: bool, sizes: Sizes | None = None) -> Section:
    sizes = sizes or (QUICK if quick else FULL)
    data: dict[str, Any] = {"sizes": sizes}
    started = time.perf_counter()
    emulator = PluggyEmulator(LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET, seed=7, page_size=PAGE_SIZE)
    with (
        tempfile.TemporaryDirectory(prefix="bench-processor-") as tmp,
        moto_server(template(), secret_values=secret_values()) as local,
        emulator,
    ):
        bench = Bench(local, emulator, Path(tmp))
        initial, kept = measure_initial_sync(bench, sizes, data)
        progress("incremental syncs")
        incremental = measure_incremental(bench, kept, sizes, data)
    data["seconds"] = time.perf_counter() - started

    c, t, m, i = data["calls"], data["throughput"], data["memory"], data["incremental"]
    no_change_total = sum(i["no_change_pluggy"].values())
    summary = Table(
        ("Measure", "Goal", "Measured", "Baseline (same run)", "Ratio", "Verdict"),
        (
            (
                f"DynamoDB writes, initial sync of N = {c['n']}",
                f"≤ ceil(N/{BATCH_SIZE}) + c",
                f"{c['writes']} (c = {c['excess']}; {c['small_excess']} at N' = {c['n_small']})",
                f"ceil(N/{BATCH_SIZE}) = {c['batches']}",
                ratio(c["writes"], c["batches"]),
                verdict(c["goal_met"]),
            ),
            (
                "Initial sync throughput (median; p95)",
                f"≥ {GOAL_THROUGHPUT_RATIO}x raw",
                f"{fmt(t['processor_tx_per_s'].median)} tx/s; {fmt(t['processor_tx_per_s'].p95)} tx/s "
                f"({fmt(t['processor_seconds'].median)} s)",
                f"raw BatchWriteItem: {fmt(t['raw_tx_per_s'].median)} tx/s; {fmt(t['raw_tx_per_s'].p95)} tx/s",
                f"{t['ratio']:.2f}x",
                verdict(t["goal_met"]),
            ),
            (
                "Peak RSS, initial sync (median; max)",
                f"≤ {fmt(GOAL_PEAK_RSS_MB)} MB",
                f"{fmt(m['peak_rss_mb'].median)} MB; {fmt(m['peak_rss_mb'].maximum)} MB "
                f"(tracemalloc peak {fmt(m['traced_peak_mb'])} MB)",
                f"before the sync: {fmt(m['rss_before_mb'].median)} MB",
                ratio(m["peak_rss_mb"].median, m["rss_before_mb"].median),
                verdict(m["goal_met"]),
            ),
            (
                "Pluggy calls, `item/updated` with nothing new",
                " + ".join(f"{v} {k}" for k, v in GOAL_NO_CHANGE_CALLS.items())
                + f" + ≤ {c['accounts']} {TRANSACTIONS_ROUTE}",
                f"{no_change_total}: {pluggy_ops(i['no_change_pluggy'])}",
                f"{sum(GOAL_NO_CHANGE_CALLS.values()) + c['accounts']} (the goal's maximum)",
                ratio(no_change_total, sum(GOAL_NO_CHANGE_CALLS.values()) + c["accounts"]),
                verdict(i["goal_met"]),
            ),
        ),
    )
    notes = (
        "The machine is shared and noisy: the throughput goal is a ratio to a baseline measured in the same run, "
        "interleaved with it, and reported as median and p95 (nearest rank).",
        "Nothing in this section is written by hand: `python -m bench` regenerates it.",
    )
    return Section("processor", "Processor", summary, (*initial, incremental), notes, data)
