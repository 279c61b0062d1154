"""Products benchmark: what mirroring every Pluggy product of an item costs per sync, against accounts and transactions.

One run, in this process: the processor `get_processor()` builds from template.yaml's environment (pacer included),
on moto's DynamoDB (`mock_aws`, every table of template.yaml) and the Pluggy emulator. Items of two shapes, the same
accounts and transactions: "every product" (the emulator's default, all its connector's products: bills,
investments and their transactions, loans, identity) and "accounts + transactions" (bench.processor.PRODUCTS, the
sync measured before the products were mirrored). Both are Open Finance items with one consent, read at every sync.
Three syncs of each item, interleaved item by item (the two shapes take turns going first):
1. the first sync (the emulator's own `item/created`);
2. a later sync where nothing changed (`sync_item()`: its `item/updated`);
3. a sync where the products changed (`sync_item(products_change=True)`: investments' balances move, the first one
   by a new BUY, a loan installment is paid, the identity's phone changes).
For each: Pluggy calls by route, DynamoDB calls, items written, write units (table, GSIs, LSI, by bench.cost's
`Meter`: DynamoDB's rules, every index of template.yaml, the consent's byConsentExpiry entry included), read units,
the processor's CPU (moto excluded), records stored and their billed storage. Checked: the mirror holds what
Pluggy serves, and a sync writes exactly the product records Pluggy changed (none when nothing changed).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import boto3
from moto import mock_aws
from pluggy_emulator import PluggyEmulator
from pluggy_emulator.connectors import ITEM_PRODUCTS
from pluggy_emulator.rate_limits import PLUGGY_RATE_LIMITS
from pluggy_pipeline import aws
from pluggy_pipeline.observability import logger
from pluggy_pipeline.pacing import SharedPacer
from pluggy_pipeline.pluggy_client import pacing_route
from pluggy_pipeline.processor import Processor, get_processor
from pluggy_pipeline_local.devsecrets import LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET
from pluggy_pipeline_local.template import create_resources, function_environment, parameter_defaults

from bench import Measure, Section, Table, fmt, ratio, verdict
from bench._harness import AWS_ENV_REMOVED, FAKE_AWS_ENV, REGION, patched_environ, progress_of, rotated, template
from bench.cost import (
    PROCESSOR,
    CountingSink,
    Meter,
    TableSchema,
    Usage,
    forget_containers,
    record_kind,
    stored_bytes,
)
from bench.processor import PRODUCTS, fold_routes, message_of

progress = progress_of("products")

EVERY, BASE = "every product", "accounts + transactions"
VARIANTS: dict[str, tuple[str, ...]] = {EVERY: tuple(ITEM_PRODUCTS), BASE: PRODUCTS}
FIRST, QUIET, CHANGED = "first sync", "nothing changed", "products changed"
PHASES = (FIRST, QUIET, CHANGED)
# The records products.py writes (record_kind's names): what "writes only what changed" is checked on.
PRODUCT_KINDS = ("bill", "investment", "investment transaction", "loan", "identity", "consent")
WRITES = ("dynamodb.BatchWriteItem", "dynamodb.PutItem", "dynamodb.UpdateItem", "dynamodb.DeleteItem")
# Pluggy's limit per source IP on the data routes (the emulator's copy of pluggy-api.md section 7).
PLUGGY_LIMIT_PER_MINUTE = PLUGGY_RATE_LIMITS["GET /v2/transactions"]
PACED_PER_MINUTE = int(parameter_defaults(template())["PluggyCallsPerMinute"])  # the pacer's share of it


@dataclass(frozen=True)
class Sizes:
    items: int  # per shape
    transactions_per_account: int | None  # None: the emulator's default history


FULL = Sizes(20, None)
QUICK = Sizes(6, None)
TINY = Sizes(2, 5)  # for the smoke test: exercises everything, measures nothing


@dataclass
class Tally:
    """One shape's syncs of one phase, summed over its items."""

    usage: Usage
    syncs: int = 0
    pluggy: Counter[str] = field(default_factory=Counter)  # by the emulator's route template
    stored: Counter[str] = field(default_factory=Counter)  # RecordsTable records by kind, after the phase
    storage: Counter[str] = field(default_factory=Counter)  # their billed bytes: table, gsi, lsi
    changed: Counter[str] = field(default_factory=Counter)  # product objects Pluggy added or changed, by kind
    removed: Counter[str] = field(default_factory=Counter)  # product objects Pluggy no longer serves, by kind
    paced_seconds: float = 0.0  # what the pacer would have slept (virtual_waits)

    def each(self, value: float) -> float:
        """Per item sync."""
        return value / self.syncs

    @property
    def pluggy_calls(self) -> int:
        return sum(self.pluggy.values())

    @property
    def limited_by_route(self) -> Counter[str]:
        """Calls per Pluggy rate limit: the investments routes share one (pacing_route), unlimited routes left out."""
        limited: Counter[str] = Counter()
        for route, n in self.pluggy.items():
            if route in PLUGGY_RATE_LIMITS:
                method, path = route.split(" ", 1)
                limited[pacing_route(method, path)] += n
        return limited

    @property
    def write_calls(self) -> int:
        return sum(self.usage.requests[op] for op in WRITES)

    def product_writes(self, outcome: str) -> Counter[str]:
        """Product records put or deleted, by kind."""
        return +Counter({kind: self.usage.items_written[f"{kind}:{outcome}"] for kind in PRODUCT_KINDS})

    @property
    def syncs_per_minute(self) -> tuple[float, str]:
        """Item syncs a minute one source IP allows, and the rate limit that sets it."""
        return min((PLUGGY_RATE_LIMITS[route] / self.each(n), route) for route, n in self.limited_by_route.items())


Results = dict[tuple[str, str], Tally]  # (shape, phase)


# ---------------------------------------------------------------------------------------------------------
# Pluggy's side: what an item has, from the emulator's ground truth
# ---------------------------------------------------------------------------------------------------------


def product_objects(truth: Mapping[str, Any], item_id: str) -> dict[str, dict[str, Any]]:
    """The item's product objects in Pluggy (the emulator's truth), by record kind and id."""
    accounts = {a for a, account in truth["accounts"].items() if account["itemId"] == item_id}
    investments = {i: v for i, v in truth["investments"].items() if v["itemId"] == item_id}
    identity = truth["identities"].get(item_id)
    return {
        "bill": {b: v for a in accounts for b, v in truth["bills"].get(a, {}).items()},
        "investment": investments,
        "investment transaction": {
            t: v for i in investments for t, v in truth["investmentTransactions"].get(i, {}).items()
        },
        "loan": {i: v for i, v in truth["loans"].items() if v["itemId"] == item_id},
        "identity": {str(identity["id"]): identity} if identity else {},
        "consent": {i: v for i, v in truth["consents"].items() if v["itemId"] == item_id},
    }


def expected_records(truth: Mapping[str, Any], item_id: str) -> Counter[str]:
    """The records the mirror of this item must hold, by kind."""
    accounts = [a for a, account in truth["accounts"].items() if account["itemId"] == item_id]
    expected = Counter(
        {
            "item": 1,
            "account": len(accounts),
            "account ref": len(accounts),
            "transaction": sum(len(truth["transactions"][a]) for a in accounts),
        }
    )
    expected.update({kind: len(found) for kind, found in product_objects(truth, item_id).items()})
    return +expected


def differences(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> tuple[Counter[str], Counter[str]]:
    """(objects added or changed, objects removed) by kind, between two snapshots of product_objects."""
    changed, removed = Counter[str](), Counter[str]()
    for kind, now in after.items():
        then = before.get(kind, {})
        changed[kind] += sum(1 for key, value in now.items() if then.get(key) != value)
        removed[kind] += sum(1 for key in then if key not in now)
    return +changed, +removed


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


class Run:
    """The processor as deployed (get_processor), metered; the emulator; RecordsTable read back."""

    def __init__(self, emulator: PluggyEmulator, clients: Mapping[str, Any], resources: Any, meter: Meter) -> None:
        self.emulator, self.clients, self.resources, self.meter = emulator, clients, resources, meter
        self.records_table = resources.tables["RecordsTable"]
        self.schema = meter.schemas[self.records_table]
        properties = template()["Resources"][PROCESSOR]["Properties"]
        self.memory_mb = int(properties.get("MemorySize", template()["Globals"]["Function"].get("MemorySize", 128)))
        self.sink = CountingSink()
        self.processor: Processor = get_processor()
        self.paced_wait = virtual_waits(self.processor)

    def process(self, payload: Mapping[str, Any], tally: Tally) -> None:
        """One webhook through Processor.process, its AWS calls metered and its Pluggy calls counted."""
        self.emulator.reset_stats()
        self.processor.pluggy.request_count.clear()
        excluded_before, printed_before, paced_before = self.meter.excluded, self.sink.bytes, self.paced_wait()
        self.meter.active = tally.usage
        started = time.thread_time()
        try:
            self.processor.process(message_of(payload, f"bench-{uuid.uuid4().hex[:8]}"))
        finally:
            spent = time.thread_time() - started - (self.meter.excluded - excluded_before)
            self.meter.active = None
        stats = self.emulator.stats()
        if stats != fold_routes(self.processor.pluggy.request_count):
            raise RuntimeError(f"the emulator and PluggyClient disagree: {stats}")
        tally.pluggy.update(stats)
        usage = tally.usage
        usage.cpu_ms += spent * 1000
        usage.invocations += 1
        usage.pluggy_calls += sum(stats.values())
        usage.log_bytes += self.sink.bytes - printed_before
        tally.paced_seconds += self.paced_wait() - paced_before

    def stored(self) -> dict[str, list[dict[str, Any]]]:
        """RecordsTable's records by item (a Scan on the unmetered client)."""
        by_item: dict[str, list[dict[str, Any]]] = {}
        start: dict[str, Any] | None = None
        for _ in range(100_000):
            page = self.clients["dynamodb"].scan(
                TableName=self.records_table, **({"ExclusiveStartKey": start} if start else {})
            )
            for record in page["Items"]:
                item_id = record.get("itemId", {}).get("S")
                if item_id is None:
                    raise RuntimeError(f"a record without itemId: {record['pk']} {record['sk']}")
                by_item.setdefault(item_id, []).append(record)
            start = page.get("LastEvaluatedKey")
            if not start:
                return by_item
        raise RuntimeError("scan did not end")

    def check_and_count(self, ids: Sequence[str], tally: Tally) -> None:
        """The mirror of each item equals Pluggy's (records by kind); their count and storage into `tally`."""
        truth, stored = self.emulator.truth(), self.stored()
        for item_id in ids:
            records = stored.get(item_id, [])
            kinds = Counter(record_kind(r) for r in records)
            expected = expected_records(truth, item_id)
            if kinds != expected:
                raise RuntimeError(f"item {item_id}: the mirror holds {dict(kinds)}, Pluggy {dict(expected)}")
            tally.stored.update(kinds)
            for record in records:
                tally.storage.update(stored_bytes(record, self.schema))


def virtual_waits(processor: Processor) -> Callable[[], float]:
    """The pacer's waits on a clock of its own, moved forward by each wait instead of sleeping: the same slots and
    slot-counter writes, without minutes of wall time asleep. Returns the seconds it would have slept."""
    pacer = getattr(processor.pluggy._pacer, "__self__", None)  # get_processor passes SharedPacer.acquire
    if not isinstance(pacer, SharedPacer):
        raise RuntimeError("get_processor() no longer paces with a SharedPacer: adapt the benchmark")
    ahead = [0.0]
    pacer._clock = lambda: time.time() + ahead[0]
    pacer._sleep = lambda seconds: ahead.__setitem__(0, ahead[0] + seconds)
    return lambda: pacer.waited


@contextlib.contextmanager
def deployed(emulator: PluggyEmulator) -> Iterator[Run]:
    """moto with template.yaml's resources, the processor's environment as the template sets it, the meter on."""
    tpl = template()
    with patched_environ(FAKE_AWS_ENV, AWS_ENV_REMOVED), mock_aws():
        clients: dict[str, Any] = {
            "dynamodb": boto3.client("dynamodb", region_name=REGION),
            "sqs": boto3.client("sqs", region_name=REGION),
            "secretsmanager": boto3.client("secretsmanager", region_name=REGION),
            "events": boto3.client("events", region_name=REGION),
        }
        resources = create_resources(tpl, **clients)
        params = {"PluggyClientId": LOCAL_PLUGGY_CLIENT_ID, "PluggyApiBaseUrl": emulator.base_url}
        os.environ.update(function_environment(tpl, PROCESSOR, resources, params))
        os.environ.update(  # the credentials from the environment (deployed: Secrets Manager, read once a minute)
            PLUGGY_CREDENTIALS_SECRET_ARN="",
            PLUGGY_CLIENT_ID=LOCAL_PLUGGY_CLIENT_ID,
            PLUGGY_CLIENT_SECRET=LOCAL_PLUGGY_CLIENT_SECRET,
        )
        tables = {n: r["Properties"] for n, r in tpl["Resources"].items() if r["Type"] == "AWS::DynamoDB::Table"}
        meter = Meter({resources.tables[n]: TableSchema.of(p) for n, p in tables.items()}, clients["dynamodb"])
        saved_level = logger.log_level
        forget_containers()
        try:
            logger.setLevel(os.environ["POWERTOOLS_LOG_LEVEL"])  # the template's level, as deployed
            with meter.installed(aws._session()):
                run = Run(emulator, clients, resources, meter)
                with (
                    contextlib.redirect_stdout(run.sink),  # what Lambda sends to CloudWatch Logs: counted
                    mock.patch.object(logger.registered_handler, "stream", run.sink),
                ):
                    yield run
                    run.processor.pluggy.close()
        finally:
            logger.setLevel(saved_level)
            forget_containers()  # no client bound to this moto backend outlives it


def measure(sizes: Sizes) -> Results:
    """Every item of both shapes through its three syncs; the tallies by (shape, phase)."""
    emulator = PluggyEmulator(LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET, seed=11)
    results: Results = {}
    with emulator, deployed(emulator) as run:
        for shape in VARIANTS:
            for phase in PHASES:
                results[shape, phase] = Tally(Usage(run.memory_mb))
        progress(f"creating {sizes.items} items of each shape")
        ids: dict[str, list[str]] = {shape: [] for shape in VARIANTS}
        created: dict[str, dict[str, Any]] = {}
        for n in range(sizes.items):
            for shape in rotated(list(VARIANTS), n):
                mark = len(emulator.events())
                item = emulator.create_item(
                    f"products-{n}",
                    transactions_per_account=sizes.transactions_per_account,
                    products=list(VARIANTS[shape]),
                )
                item_id = str(item["id"])
                ids[shape].append(item_id)
                created[item_id] = next(e["payload"] for e in emulator.events()[mark:] if e["event"] == "item/created")
        run.processor.pluggy.get_item(ids[BASE][0])  # a warm container: the API key is cached

        def sync(item_id: str, tally: Tally, **knobs: Any) -> None:
            truth = emulator.truth()
            before = product_objects(truth, item_id)
            mark = len(emulator.events())
            emulator.sync_item(item_id, **knobs)
            changed, removed = differences(before, product_objects(emulator.truth(), item_id))
            tally.changed.update(changed)
            tally.removed.update(removed)
            for record in emulator.events()[mark:]:
                run.process(record["payload"], tally)
            tally.syncs += 1

        def first(item_id: str, tally: Tally) -> None:
            tally.changed.update({k: len(v) for k, v in product_objects(emulator.truth(), item_id).items()})
            run.process(created[item_id], tally)
            tally.syncs += 1

        steps: dict[str, Callable[[str, Tally], None]] = {
            FIRST: first,
            QUIET: sync,
            CHANGED: lambda item_id, tally: sync(item_id, tally, products_change=True),
        }
        for phase in PHASES:
            progress(f"{phase}: {sizes.items} items of each shape")
            for n in range(sizes.items):
                for shape in rotated(list(VARIANTS), n):
                    steps[phase](ids[shape][n], results[shape, phase])
            for shape in VARIANTS:
                run.check_and_count(ids[shape], results[shape, phase])
    return results


# ---------------------------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------------------------


def cells(results: Results, value: Callable[[Tally], float], shown: Callable[[float], str] = fmt) -> tuple[str, ...]:
    """For each phase: every product, accounts + transactions, their ratio (per item sync)."""
    out: list[str] = []
    for phase in PHASES:
        every, base = (value(results[shape, phase]) for shape in (EVERY, BASE))
        out += [shown(every), shown(base), ratio(every, base)]
    return tuple(out)


def per_sync(get: Callable[[Tally], float]) -> Callable[[Tally], float]:
    return lambda t: t.each(get(t))


HEADERS = ("per item sync", *(f"{p}: {s}" if s == EVERY else s for p in PHASES for s in (EVERY, BASE, "ratio")))
PER_SYNC: tuple[tuple[str, Callable[[Tally], float]], ...] = (
    ("Pluggy calls", per_sync(lambda t: t.pluggy_calls)),
    ("of which on a rate-limited route", per_sync(lambda t: sum(t.limited_by_route.values()))),
    ("DynamoDB calls", per_sync(lambda t: t.usage.requests.total())),
    ("DynamoDB write calls", per_sync(lambda t: t.write_calls)),
    ("items written (put, updated, deleted or refused)", per_sync(lambda t: t.usage.items_written.total())),
    ("write units: table", per_sync(lambda t: t.usage.write_units["table"])),
    ("write units: GSIs", per_sync(lambda t: t.usage.write_units["gsi"])),
    ("of which byConsentExpiry (consents)", per_sync(lambda t: t.usage.by_record["consent:gsi"])),
    ("write units: LSI", per_sync(lambda t: t.usage.write_units["lsi"])),
    ("write units: total", per_sync(lambda t: t.usage.write_units.total())),
    ("read units", per_sync(lambda t: t.usage.read_units)),
    ("processor CPU ms (moto excluded)", per_sync(lambda t: t.usage.cpu_ms)),
    ("billed ms (bench.cost's model)", lambda t: t.each(t.usage.billed_ms())),
    ("pacer's waits, ms (one container)", per_sync(lambda t: t.paced_seconds * 1000)),
    ("bytes logged", per_sync(lambda t: t.usage.log_bytes)),
    ("records stored per item, after", per_sync(lambda t: t.stored.total())),
    ("billed storage per item after (KB: table + indexes)", lambda t: t.each(t.storage.total()) / 1024),
)


def routes_table(results: Results) -> Table:
    routes = sorted({route for tally in results.values() for route in tally.pluggy})

    def calls(route: str) -> Callable[[Tally], float]:
        return per_sync(lambda t: t.pluggy[route])

    return Table(HEADERS, tuple((route, *cells(results, calls(route))) for route in routes))


def records_table(results: Results) -> Table:
    kinds = sorted({key.split(":")[0] for tally in results.values() for key in tally.usage.by_record})
    rows = []
    for kind in kinds:

        def units(t: Tally, k: str = kind) -> float:
            return t.each(sum(t.usage.by_record[f"{k}:{part}"] for part in ("table", "gsi", "lsi")))

        rows.append((kind, *cells(results, units)))
    return Table(HEADERS, tuple(rows))


def stored_table(results: Results) -> Table:
    kinds = sorted({kind for tally in results.values() for kind in tally.stored})
    last = {shape: results[shape, CHANGED] for shape in VARIANTS}
    rows = [(kind, *(fmt(last[s].each(last[s].stored[kind])) for s in VARIANTS)) for kind in kinds]
    rows.append(("all", *(fmt(last[s].each(last[s].stored.total())) for s in VARIANTS)))
    rows.append(
        (
            "billed storage (KB): table + GSIs + LSI",
            *(
                " + ".join(fmt(last[s].each(last[s].storage[p]) / 1024) for p in ("table", "gsi", "lsi"))
                for s in VARIANTS
            ),
        )
    )
    return Table(("records per item, after the three syncs", *VARIANTS), tuple(rows))


def writes_check(results: Results) -> tuple[bool, list[tuple[str, ...]]]:
    """Each phase: product records put and deleted against the objects Pluggy added/changed and removed."""
    ok, rows = True, list[tuple[str, ...]]()
    for phase in PHASES:
        for shape in VARIANTS:
            tally = results[shape, phase]
            put, deleted = tally.product_writes("put"), tally.product_writes("delete")
            met = put == tally.changed and deleted == tally.removed
            ok = ok and met
            goal = "0" if phase == QUIET else "= Pluggy's changes"
            rows.append(
                (
                    f"{phase}, {shape}",
                    goal,
                    f"{put.total()} put, {deleted.total()} deleted: {_kinds(put + deleted)}",
                    f"{tally.changed.total()} added or changed, {tally.removed.total()} removed: "
                    f"{_kinds(tally.changed + tally.removed)}",
                    ratio(put.total() + deleted.total(), tally.changed.total() + tally.removed.total()),
                    verdict(met),
                )
            )
    return ok, rows


def _kinds(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "none"


def run(quick: bool, sizes: Sizes | None = None) -> Section:
    sizes = sizes or (QUICK if quick else FULL)
    started = time.perf_counter()
    results = measure(sizes)
    seconds = time.perf_counter() - started
    met, check_rows = writes_check(results)
    every, base = results[EVERY, FIRST], results[BASE, FIRST]

    def compared(label: str, value: Callable[[Tally], float], phase: str) -> tuple[str, ...]:
        e, b = value(results[EVERY, phase]), value(results[BASE, phase])
        return (label, "—", fmt(e), f"{BASE}: {fmt(b)}", ratio(e, b), "(informative)")

    calls, units = PER_SYNC[0][1], PER_SYNC[9][1]
    quiet_put = sum(results[s, QUIET].product_writes("put").total() for s in VARIANTS)
    summary = Table(
        ("Measure", "Goal", "Measured (every product)", "Baseline (same run)", "Ratio", "Verdict"),
        (
            *(compared(f"Pluggy calls per item sync, {phase}", calls, phase) for phase in PHASES),
            *(compared(f"DynamoDB write units per item sync, {phase}", units, phase) for phase in PHASES),
            compared("Records stored per item", lambda t: t.each(t.stored.total()), CHANGED),
            (
                "Product records written when nothing changed",
                "0",
                str(quiet_put),
                "—",
                "—",
                verdict(quiet_put == 0),
            ),
            (
                "Product records written = what Pluggy changed, every phase and shape",
                "equal",
                "equal" if met else "differ",
                "Pluggy's changes (emulator truth, before and after)",
                "—",
                verdict(met),
            ),
        ),
    )
    every_rate, every_route = results[EVERY, QUIET].syncs_per_minute
    base_rate, base_route = results[BASE, QUIET].syncs_per_minute
    stored = results[BASE, FIRST].stored
    history = (
        f"{sizes.transactions_per_account}"
        if sizes.transactions_per_account
        else f"{fmt(stored['transaction'] / stored['account'])} (the emulator's default)"
    )
    accounts = round(stored["account"] / sizes.items)
    notes_per_sync = (
        f"{sizes.items} items of each shape, each synced three times (the rows of a phase are per item sync: its "
        f"totals over {sizes.items} syncs / {sizes.items}), {history} transactions per account in {accounts} "
        "accounts (two bank accounts and a credit card). Same accounts and transactions in both shapes: the "
        f"every-product items request {', '.join(VARIANTS[EVERY])}; the others {', '.join(VARIANTS[BASE])}.",
        f"The processor is `get_processor()` on the template's environment (ProcessorFunction, {run_memory(results)} "
        "MB): the pacer's slot counters (a conditional UpdateItem on PacerTable per paced Pluggy call, one more, "
        "refused, when the route's counter had fallen behind the clock) and the event log are in the DynamoDB "
        "figures. A warm container: the Pluggy API key was fetched before the first measured sync.",
        "Write units: bench.cost's `Meter` (botocore hooks; each written item read before and after it, DynamoDB's "
        "rules for the table and each index of template.yaml). The consent is the only record in byConsentExpiry "
        "(KEYS_ONLY, sparse: active consents that expire); an unchanged consent is not rewritten, so its index entry "
        "is written once, at the first sync.",
        "Read units: bytes each read returned per 4 KB, half when eventually consistent (as bench.cost). Each "
        "product list read from Pluggy is compared with the stored digests (one Query per list), so every product "
        "adds reads at every sync, even when nothing changed.",
        "CPU: this thread's `time.thread_time` in `Processor.process`, minus moto's and the meter's (bench.cost); "
        "the emulator answers from its own threads. Billed ms: bench.cost's model (CPU at the function's vCPU "
        "share, plus 8 ms per AWS call and 150 ms per Pluggy call for the network). The pacer's waits are not "
        f"in it: with {PACED_PER_MINUTE} calls a minute per paced route (PluggyCallsPerMinute), calls of one route "
        "made back to back wait for their slots; here one container syncs the items one after another, as fast as "
        "it can (its pacer's clock is moved forward instead of sleeping: same slots, same writes).",
        f"Rate limits: Pluggy allows one source IP {PLUGGY_LIMIT_PER_MINUTE} calls a minute per limited route, the "
        "investments routes counting as one. On a sync where nothing changed, the busiest limited route caps item "
        f"syncs at {fmt(every_rate)} a minute with every product ({every_route}) against {fmt(base_rate)} "
        f"({base_route}) with accounts and transactions.",
    )
    check_notes = (
        "Pluggy's changes: the item's bills, investments, investment transactions, loans, identity and consents in "
        "the emulator's truth before and after the sync (at the first sync: all of them), objects added or whose "
        "JSON changed, and those gone. Measured: product records the processor's writes put or deleted (the "
        "meter's images after each write). Equal means every change was written once and nothing unchanged was.",
        "After each phase the mirror of every item is read back (a Scan) and compared with Pluggy's, record kind by "
        "record kind: the runs stop on a difference.",
    )
    measures = (
        Measure(
            "1. Per item sync, every product against accounts and transactions",
            Table(HEADERS, tuple((label, *cells(results, value)) for label, value in PER_SYNC)),
            notes_per_sync,
        ),
        Measure("2. Pluggy calls by route, per item sync", routes_table(results)),
        Measure("3. DynamoDB write units by record (table + indexes), per item sync", records_table(results)),
        Measure("4. Records stored per item", stored_table(results)),
        Measure(
            "5. Product records written against Pluggy's changes",
            Table(("Phase, shape", "Goal", "Written", "Baseline: Pluggy", "Ratio", "Verdict"), tuple(check_rows)),
            check_notes,
            met=met,
        ),
    )
    data = {
        "sizes": sizes,
        "results": results,
        "seconds": seconds,
        "writes_match": met,
        "quiet_product_puts": quiet_put,
        "first_calls_ratio": every.pluggy_calls / base.pluggy_calls,
    }
    notes = ("Nothing in this section is written by hand: `python -m bench --only products` regenerates it.",)
    return Section(
        "products", "Products (every Pluggy product against accounts and transactions)", summary, measures, notes, data
    )


def run_memory(results: Results) -> int:
    return next(iter(results.values())).usage.memory_mb
