"""Storm benchmark: thousands of webhooks over hundreds of items, through the real processor, under Pluggy's limits.

The emulator enforces Pluggy's rate limits (360 calls per minute per limited route) on a compressed clock: W wall
seconds stand for Pluggy's minute, and every duration of the template (visibility timeout, function timeout, lease,
the pacer's and the client's longest waits) is scaled by W/60 with it. Items are created, then synced again and
again while N processor containers (threads, each its own `Processor` and `PluggyClient`, on moto's DynamoDB
in-process) drain an in-memory SQS FIFO queue. Two modes in one run: the product (each message group of a batch
coalesced, calls paced by `SharedPacer`) and "before" (one message per `process_batch`, no pacing: Pluggy answers
429 and the messages are held). Every figure comes from this run.

The items ask Pluggy for accounts and transactions only (bench.processor.PRODUCTS), the sync this storm has measured
from the start; every emulator item is an Open Finance one, so each item sync also reads its consents (GET /consents,
a route Pluggy does not rate-limit). bench/products.py measures what the other products add to a sync.

The queue is modelled here (`FifoQueue`), not moto's: moto's FIFO, after a visibility change, skips a group's
first message while a later one is in flight and delivers the group out of order.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast
from urllib.parse import urlsplit

import boto3
import requests
from moto import mock_aws
from pluggy_emulator import PluggyEmulator
from pluggy_emulator.rate_limits import PLUGGY_RATE_LIMITS
from pluggy_pipeline.event_queue import EventQueue
from pluggy_pipeline.event_store import ProcessingLog
from pluggy_pipeline.pacing import PACED_ROUTES, SharedPacer, parse_limits
from pluggy_pipeline.pluggy_client import PluggyClient
from pluggy_pipeline.processor import Processor, QueueMessage
from pluggy_pipeline.receiver import parse_delivery, received_at
from pluggy_pipeline.records import RecordStore
from pluggy_pipeline_local.demo import Mirror, compare_mirror
from pluggy_pipeline_local.devsecrets import LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET
from pluggy_pipeline_local.template import LocalResources, create_resources, parameter_defaults
from requests.adapters import HTTPAdapter

from bench import Measure, Section, Table, fmt, ratio, verdict
from bench._harness import AWS_ENV_REMOVED, FAKE_AWS_ENV, REGION, patched_environ, progress_of, template
from bench._plot import figure, link, save_png
from bench.processor import PRODUCTS, fold_routes, quiet_logger

progress = progress_of("storm")

GOAL_DRAIN_RATIO = 1.2  # drain time / floor, the product's mode
ADD, CHANGE = 3, 1  # each sync: 3 new rows (one per account of the sandbox item), 1 changed row
OLD_MAX_RECEIVES = 5  # the old policy: maxReceiveCount 5, every receive counted
PRODUCT, BEFORE = "coalesced + paced", "one by one, unpaced"
CONSENTS_ROUTE = "GET /consents"  # read at every item sync of an Open Finance item, whatever its products


@dataclass(frozen=True)
class Sizes:
    items: int  # the product's mode
    baseline_items: int  # "before": the same storm per item, fewer items (compared by ratios)
    syncs: int  # syncs per item during the storm, after its creation
    transactions_per_account: int  # each item's history before the storm
    window_seconds: float  # W: wall seconds standing for Pluggy's minute
    feed_minutes: float  # the storm arrives over this many Pluggy minutes
    limit: int = 360  # calls per minute per limited route (Pluggy's)
    workers: tuple[int, ...] = (2,)  # containers of the product's mode; "before" runs with the first
    deadline_minutes: float = 90.0  # Pluggy minutes: a run not drained by then is stopped


# W: the containers' CPU per Pluggy request here is ~50 ms and grows with the tables (moto's query sorts the whole
# table), while 2 containers must claim a slot every 2 x W/342 s: at W = 30 they fell behind (1.22x), at 12 far behind.
FULL = Sizes(250, 60, 8, 10, 45.0, 6.0, workers=(2, 4))
QUICK = Sizes(40, 10, 5, 5, 24.0, 1.5)
TINY = Sizes(4, 4, 3, 3, 1.5, 0.5, limit=20, deadline_minutes=40.0)  # the smoke test: exercises, measures nothing


@dataclass(frozen=True)
class Facts:
    """What template.yaml says (durations in Pluggy seconds)."""

    visibility: float
    max_receives: int
    per_minute: int
    max_attempts: int
    timeout: float
    batch: int

    @classmethod
    def read(cls) -> Facts:
        resources, defaults = template()["Resources"], parameter_defaults(template())
        queue, function = resources["EventQueue"]["Properties"], resources["ProcessorFunction"]["Properties"]
        return cls(
            visibility=float(queue["VisibilityTimeout"]),
            max_receives=int(queue["RedrivePolicy"]["maxReceiveCount"]),
            per_minute=int(defaults["PluggyCallsPerMinute"]),
            max_attempts=int(function["Environment"]["Variables"]["PROCESSOR_MAX_ATTEMPTS"]),
            timeout=float(function["Timeout"]),
            batch=int(function["Events"]["Queue"]["Properties"]["BatchSize"]),
        )


@dataclass(eq=False)
class _Queued:
    seq: int
    message: QueueMessage
    receives: int = 0  # ApproximateReceiveCount
    visible_at: float = 0.0
    receipt: str = ""


class FifoQueue:
    """SQS FIFO as the processor sees it: a group with a message in flight delivers nothing; a receive takes the
    oldest available groups' messages in order, several of one group when it has them (as SQS does); a message
    received `max_receives` times goes to `dead_letters` at its next receive (the redrive policy); `hold` is
    ChangeMessageVisibility. `send` and `hold` have EventQueue's signatures: the processor takes this as its queue.
    """

    def __init__(
        self, visibility: float, max_receives: int | None = None, dead_letters: FifoQueue | None = None
    ) -> None:
        self._visibility, self._max_receives, self._dead_letters = visibility, max_receives, dead_letters
        self._groups: dict[str, list[_Queued]] = {}
        self._busy_until: dict[str, float] = {}  # the latest visible_at of a group's messages
        self._receipts: dict[str, tuple[str, _Queued]] = {}
        self._seq = itertools.count()
        self._changed = threading.Condition()
        self.size = self.redriven = 0
        self.deleted_receives: list[int] = []  # each deleted message's receive count
        self.holds: list[float] = []  # seconds of each visibility change

    def send(
        self,
        *,
        event_id: str,
        event_type: str,
        body: str,
        group_id: str | None = None,
        dedup_id: str | None = None,  # EventQueue's signature; every id here is unique, nothing to deduplicate
        extra_attributes: Mapping[str, str] | None = None,
    ) -> str:
        group, seq = group_id or event_id, next(self._seq)
        attributes = {"eventId": event_id, "eventType": event_type, "groupId": group, **(extra_attributes or {})}
        queued = _Queued(seq, QueueMessage(f"m-{seq}", body, attributes, group))
        with self._changed:
            self._groups.setdefault(group, []).append(queued)
            self.size += 1
            self._changed.notify_all()
        return queued.message.message_id

    def receive(self, limit: int, wait: float) -> list[QueueMessage]:
        with self._changed:
            taken = self._take(limit)
            if not taken:
                self._changed.wait(wait)  # woken by a send, delete or hold; an expired visibility by the timeout
                taken = self._take(limit)
            return taken

    def _take(self, limit: int) -> list[QueueMessage]:
        now, out = time.monotonic(), list[QueueMessage]()
        ready = sorted((q[0].seq, g) for g, q in self._groups.items() if self._busy_until.get(g, 0.0) <= now)
        for _, group in ready:
            queued, index = self._groups[group], 0
            while index < len(queued) and len(out) < limit:
                item = queued[index]
                self._receipts.pop(item.receipt, None)
                if self._max_receives is not None and item.receives >= self._max_receives:
                    del queued[index]  # redrive: to the dead-letter queue instead of delivered
                    self.size, self.redriven = self.size - 1, self.redriven + 1
                    if self._dead_letters is not None:
                        a, body = item.message.attributes, item.message.body
                        self._dead_letters.send(event_id=a["eventId"], event_type=a["eventType"], body=body)
                    continue
                item.receives, item.visible_at = item.receives + 1, now + self._visibility
                item.receipt = f"r-{item.seq}-{item.receives}"
                self._receipts[item.receipt] = (group, item)
                out.append(replace(item.message, receipt_handle=item.receipt))
                index += 1
            self._refresh(group)
            if len(out) >= limit:
                break
        return out

    def _refresh(self, group: str) -> None:
        if queued := self._groups.get(group):
            self._busy_until[group] = max(item.visible_at for item in queued)
        else:
            self._groups.pop(group, None)
            self._busy_until.pop(group, None)

    def delete(self, receipts: Sequence[str]) -> None:
        with self._changed:
            for group, item in filter(None, (self._receipts.pop(r, None) for r in receipts)):
                self._groups[group].remove(item)
                self.size -= 1
                self.deleted_receives.append(item.receives)
                self._refresh(group)
            self._changed.notify_all()

    def hold(self, messages: Sequence[tuple[str, float]]) -> None:
        with self._changed:
            for receipt, seconds in messages:
                if found := self._receipts.get(receipt):
                    found[1].visible_at = time.monotonic() + min(43_200, math.ceil(seconds))  # whole seconds
                    self.holds.append(seconds)
                    self._refresh(found[0])
            self._changed.notify_all()


class Serialized:
    """One moto DynamoDB shared by threads, one call at a time: DynamoDB is atomic per request, moto's dicts are not
    (two containers racing on the pacer's conditional counter could both get one slot)."""

    def __init__(self, client: Any, lock: threading.Lock) -> None:
        self._client, self._lock = client, lock

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            with self._lock:
                return method(**kwargs)

        return call


class StormMirror(Mirror):
    """demo.Mirror (what compare_mirror reads) over this benchmark's tables rather than a LocalStack's."""

    def __init__(self, dynamodb: Any, resources: LocalResources) -> None:  # no stack: Mirror.__init__ not called
        self.dynamodb = dynamodb
        self.events_table = resources.tables["EventsTable"]
        self.records = RecordStore(lambda: dynamodb, resources.tables["RecordsTable"])


@dataclass
class Outcome:
    label: str
    workers: int
    items: int
    window: float
    webhooks: Counter[str] = field(default_factory=Counter)  # by type
    requests: dict[str, int] = field(default_factory=dict)  # emulator.stats(): every request, 429s included
    throttled: Counter[str] = field(default_factory=Counter)  # 429s met, by route
    holds: list[float] = field(default_factory=list)
    receives: list[int] = field(default_factory=list)
    drain: float | None = None  # wall seconds, first webhook queued -> queue empty; None: not drained
    wall: float = 0.0
    dlq: int = 0
    mirror: dict[str, Any] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)  # the event log
    cpu_workers: float = 0.0
    cpu_process: float = 0.0
    paced_wait: float = 0.0
    timeline: list[tuple[float, int, dict[str, int]]] = field(default_factory=list)  # (s, backlog, requests)

    @property
    def name(self) -> str:
        return f"{self.label}, {self.workers} containers"

    @property
    def events(self) -> int:
        return sum(self.webhooks.values())

    @property
    def per_webhook(self) -> float:
        return sum(self.requests.values()) / self.events

    @property
    def per_webhook_without_consents(self) -> float:
        """Requests per webhook leaving out the consent reads: the figure runs before products were mirrored gave."""
        return (sum(self.requests.values()) - self.requests.get(CONSENTS_ROUTE, 0)) / self.events

    @property
    def per_minute(self) -> float:
        """Webhooks drained per Pluggy minute."""
        return self.events / (self.drain / self.window) if self.drain else 0.0

    @property
    def equal(self) -> bool:
        return bool(self.mirror.get("matches"))

    def answered(self, route: str) -> int:
        return self.requests.get(route, 0) - self.throttled[route]

    def floor(self, limits: Mapping[str, int]) -> tuple[str, float]:
        """The bottleneck route and the wall seconds its answered calls need at its limit."""
        return max(((r, self.answered(r) / n * self.window) for r, n in limits.items()), key=lambda x: x[1])


class Storm:
    """One storm: the emulator, the queue, the feeder (Pluggy and the receiver), the containers, a sampler."""

    def __init__(self, label: str, *, coalesce: bool, paced: bool, items: int, workers: int, sizes: Sizes) -> None:
        self.facts, self.sizes, self.coalesce, self.paced = Facts.read(), sizes, coalesce, paced
        self.w, self.scale = sizes.window_seconds, sizes.window_seconds / 60  # Pluggy seconds -> wall seconds
        self.outcome = Outcome(label, workers, items, self.w)
        self.dlq = FifoQueue(self.facts.visibility * self.scale)
        self.queue = FifoQueue(self.facts.visibility * self.scale, self.facts.max_receives, self.dlq)
        self.lock, self.fed, self.stop = threading.Lock(), threading.Event(), threading.Event()
        self.emulator = PluggyEmulator(
            LOCAL_PLUGGY_CLIENT_ID,
            LOCAL_PLUGGY_CLIENT_SECRET,
            seed=13,
            rate_limit_per_minute={route: sizes.limit for route in PLUGGY_RATE_LIMITS},
            rate_limit_window_seconds=self.w,
            deliver_webhooks=False,
        )
        self.seen, self.start, self.pacers = 0, 0.0, list[SharedPacer]()

    def count_429(self, response: requests.Response, *_: Any, **__: Any) -> None:
        if response.status_code == 429:
            label = f"{response.request.method} {urlsplit(response.request.url or '').path}"
            with self.lock:
                self.outcome.throttled.update(fold_routes({label: 1}))

    def container(self, dynamodb: Any, resources: LocalResources) -> Processor:
        """A processor container as get_processor() builds one, every duration scaled."""
        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0))
        session.hooks["response"].append(self.count_429)
        tables, scale = resources.tables, self.scale
        limits = parse_limits(round(self.facts.per_minute * self.sizes.limit / 360))  # the template's headroom
        pacer = SharedPacer(lambda: dynamodb, tables["PacerTable"], limits, window_seconds=self.w, max_wait=20 * scale)
        self.pacers.append(pacer)
        credentials = (LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET)
        return Processor(
            PluggyClient(
                self.emulator.base_url,
                lambda: credentials,
                session=session,
                max_retry_wait=10 * scale,
                pacer=pacer.acquire if self.paced else None,
            ),
            RecordStore(lambda: dynamodb, tables["RecordsTable"]),
            ProcessingLog(lambda: dynamodb, tables["EventsTable"], lease_seconds=120 * scale),
            cast(EventQueue, self.queue),  # duck-typed: send and hold, what the processor calls
            cast(EventQueue, self.dlq),
            max_attempts=self.facts.max_attempts,
            group_budget_seconds=20 * scale,
        )

    def enqueue(self) -> None:
        """What the receiver does with each webhook Pluggy sent since the last call."""
        emitted = self.emulator.events()
        for record in emitted[self.seen :]:
            body = json.dumps(record["payload"], separators=(",", ":"))
            delivery = parse_delivery(body.encode())
            self.queue.send(
                event_id=delivery.event_id,
                event_type=delivery.event_type,
                body=body,
                group_id=delivery.group_id,
                extra_attributes={"receivedAt": received_at(), "origin": "webhook"},
            )
            self.outcome.webhooks[delivery.event_type] += 1
        self.seen = len(emitted)

    def feed(self, ids: Sequence[str]) -> None:
        """The storm: every item synced `syncs` times, delivered in rounds over the first feed_minutes."""
        syncs = [item for _ in range(self.sizes.syncs) for item in ids]
        ticks = max(1, round(self.sizes.feed_minutes * 12))  # a delivery round every 5 Pluggy seconds
        for tick in range(ticks):
            due = self.start + (tick + 1) * self.sizes.feed_minutes * self.w / ticks
            if self.stop.wait(max(0.0, due - time.monotonic())):
                return
            for item in syncs[tick * len(syncs) // ticks : (tick + 1) * len(syncs) // ticks]:
                self.emulator.sync_item(item, add=ADD, change=CHANGE)
            self.enqueue()
        self.fed.set()

    def handle(self, processor: Processor, batch: list[QueueMessage], left: Callable[[], float]) -> list[str]:
        if self.coalesce:
            return processor.process_batch(batch, time_left=left)
        back: list[str] = []  # before: one message at a time; a failure holds back the rest of its group
        for message in batch:
            if any(m.group == message.group for m in batch if m.message_id in back):
                back.append(message.message_id)
                self.queue.hold([(message.receipt_handle, 0.0)])
            else:
                back += processor.process_batch([message], time_left=left)
        return back

    def work(self, processor: Processor) -> None:
        """One Lambda container, fed batches by the event source mapping until the storm has drained."""
        cpu = time.thread_time()
        while not self.stop.is_set():
            batch = self.queue.receive(self.facts.batch, 0.05)
            if not batch:
                if self.fed.is_set() and self.queue.size == 0:
                    break
                continue
            ends = time.monotonic() + self.facts.timeout * self.scale
            back = set(self.handle(processor, batch, lambda ends=ends: ends - time.monotonic()))  # this batch's end
            self.queue.delete([m.receipt_handle for m in batch if m.message_id not in back])
        with self.lock:
            self.outcome.cpu_workers += time.thread_time() - cpu

    def sample(self) -> None:
        while not self.stop.wait(self.w / 60):  # one sample per Pluggy second
            self.outcome.timeline.append((time.monotonic() - self.start, self.queue.size, self.emulator.stats()))

    def run(self) -> Outcome:
        o, sizes = self.outcome, self.sizes
        with (
            patched_environ(FAKE_AWS_ENV, AWS_ENV_REMOVED),
            mock_aws(),
            self.emulator,
            quiet_logger(),
            open(os.devnull, "w") as devnull,
            contextlib.redirect_stdout(devnull),  # Powertools' metrics, flushed every 100 values
        ):
            raw = boto3.client("dynamodb", region_name=REGION)
            resources = create_resources(template(), dynamodb=raw, sqs=boto3.client("sqs", region_name=REGION))
            dynamodb = Serialized(raw, threading.Lock())
            history = sizes.transactions_per_account
            ids = [
                str(self.emulator.create_item(f"storm-{n}", transactions_per_account=history, products=PRODUCTS)["id"])
                for n in range(o.items)
            ]
            processors = [self.container(dynamodb, resources) for _ in range(o.workers)]
            progress(f"{o.name}: {o.items} items x {sizes.syncs} syncs, W = {self.w:g} s")
            cpu, self.start = time.process_time(), time.monotonic()
            self.enqueue()  # the items' creation webhooks open the storm
            threads = [threading.Thread(target=self.feed, args=(ids,)), threading.Thread(target=self.sample)]
            threads += [threading.Thread(target=self.work, args=(p,)) for p in processors]
            for thread in threads:
                thread.start()
            for thread in threads[2:]:
                thread.join(max(0.0, self.start + sizes.deadline_minutes * self.w - time.monotonic()))
            o.wall, o.cpu_process = time.monotonic() - self.start, time.process_time() - cpu
            o.drain = o.wall if self.fed.is_set() and self.queue.size == 0 else None
            self.stop.set()
            for thread in threads:
                thread.join(60)
            o.timeline.append((o.wall, self.queue.size, self.emulator.stats()))
            o.requests, o.paced_wait = self.emulator.stats(), sum(p.waited for p in self.pacers)
            o.holds, o.receives, o.dlq = self.queue.holds, self.queue.deleted_receives, self.dlq.size
            mirror = StormMirror(raw, resources)
            o.mirror = compare_mirror(mirror, self.emulator.truth())
            o.statuses = Counter(str(record.get("status")) for record in mirror.events())
            for processor in processors:
                processor.pluggy.close()
        progress(f"{o.name}: {'drained' if o.drain else 'NOT drained'} in {o.wall:.0f} s")
        return o


# ---------------------------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------------------------


def per_minute(outcome: Outcome, route: str) -> tuple[list[float], list[float]]:
    """(Pluggy minutes, requests to `route` in the Pluggy minute before each sample)."""
    times = [t for t, _, _ in outcome.timeline]
    counts = [stats.get(route, 0) for _, _, stats in outcome.timeline]
    before = [bisect.bisect_right(times, t - outcome.window) - 1 for t in times]
    rates = [float(c - (counts[b] if b >= 0 else 0)) for c, b in zip(counts, before, strict=True)]
    return [t / outcome.window for t in times], rates


def plot(outcomes: Sequence[Outcome], limit: int) -> str:
    fig, (backlog, calls) = figure(12.0, 4.2, columns=2)
    for n, outcome in enumerate(outcomes):
        color, style = f"C{n}", "--" if outcome.label == BEFORE else "-"
        minutes = [t / outcome.window for t, _, _ in outcome.timeline]
        backlog.plot(minutes, [b for _, b, _ in outcome.timeline], style, color=color, label=outcome.name)
        routes = ("GET /v2/transactions",) if n else ("GET /v2/transactions", "GET /accounts")
        for route, width in zip(routes, (1.6, 0.8), strict=False):
            line = per_minute(outcome, route)
            calls.plot(*line, style, color=color, linewidth=width, label=f"{outcome.name}: {route}")
    calls.axhline(limit, color="red", linewidth=1, label=f"Pluggy's limit: {limit}/min per route")
    backlog.set(title="Backlog: messages queued or in flight", xlabel="Pluggy minutes", ylabel="messages")
    calls.set(title="Pluggy requests in the minute before (429s included)", xlabel="Pluggy minutes")
    backlog.legend(fontsize="small")
    calls.legend(fontsize="small", loc="lower center")
    return link(save_png(fig, "storm"), "The storm: backlog and Pluggy requests per minute against the limit")


STORM_COLUMNS = tuple(
    "Mode|Webhooks|Pluggy requests (per webhook)|Bottleneck route, answered|429s|Holds|Receives per message: max; "
    f"> {OLD_MAX_RECEIVES}|Drain; floor (Pluggy min)|Drain / floor|Webhooks per Pluggy min|DLQ|Mirror = Pluggy".split(
        "|"
    )
)
CPU_COLUMNS: tuple[str, ...] = ("Mode", "Wall", "Process CPU", "Containers' CPU", "Containers' CPU per request")
CPU_COLUMNS += ("Paced waits", "Requests by route", "Event log")


def row(o: Outcome, limits: Mapping[str, int]) -> tuple[str, ...]:
    route, floor = o.floor(limits)
    drain = f"{fmt(o.drain / o.window)}" if o.drain else "not drained"
    return (
        o.name,
        f"{o.events} ({o.items} items)",
        f"{sum(o.requests.values())} ({o.per_webhook:.2f})",
        f"{o.answered(route)} {route}",
        str(sum(o.throttled.values())),
        f"{len(o.holds)} ({sum(1 for s in o.holds if s > 0)} rate-limited)",
        f"{max(o.receives, default=0)}; {sum(1 for r in o.receives if r > OLD_MAX_RECEIVES)}",
        f"{drain}; {fmt(floor / o.window)}",
        f"{o.drain / floor:.2f}x" if o.drain else "—",
        fmt(o.per_minute),
        str(o.dlq),
        "yes" if o.equal else "**no**",
    )


def cpu_row(o: Outcome) -> tuple[str, ...]:
    def counts(values: Mapping[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(values.items()))

    cpu = (f"{fmt(s)} s ({s / o.wall:.0%})" for s in (o.cpu_process, o.cpu_workers))
    per_request = f"{fmt(o.cpu_workers / sum(o.requests.values()) * 1000)} ms"
    waits = f"{fmt(o.paced_wait)} s"
    return (o.name, f"{fmt(o.wall)} s", *cpu, per_request, waits, counts(o.requests), counts(o.statuses))


def compared(measure: str, main: float, before: float, shown: Callable[[float], str]) -> tuple[str, ...]:
    """An informative summary row: the product's figure against the "before" mode's."""
    return (measure, "—", shown(main), f"{BEFORE}: {shown(before)}", ratio(main, before), "(informative)")


def run(quick: bool, sizes: Sizes | None = None) -> Section:
    sizes = sizes or (QUICK if quick else FULL)
    facts, limits = Facts.read(), {route: sizes.limit for route in PACED_ROUTES}
    product = [
        Storm(PRODUCT, coalesce=True, paced=True, items=sizes.items, workers=n, sizes=sizes).run()
        for n in sizes.workers
    ]
    n = sizes.workers[0]
    before = Storm(BEFORE, coalesce=False, paced=False, items=sizes.baseline_items, workers=n, sizes=sizes).run()
    outcomes, main = [*product, before], product[0]
    route, floor = main.floor(limits)
    drain_ratio = main.drain / floor if main.drain else math.inf
    throttled = sum(sum(o.throttled.values()) for o in product)
    dlq = ", ".join(f"{o.name}: {o.dlq}" for o in outcomes)
    summary = Table(
        ("Measure", "Goal", "Measured", "Baseline (same run)", "Ratio", "Verdict"),
        (
            (
                f"Drain of {main.events} webhooks, {main.name}",
                f"≤ {GOAL_DRAIN_RATIO}x the floor",
                f"{fmt(main.drain / main.window)} Pluggy min" if main.drain else "not drained",
                f"floor: {main.answered(route)} {route} / {sizes.limit} per min = {fmt(floor / main.window)} min",
                f"{drain_ratio:.2f}x",
                verdict(drain_ratio <= GOAL_DRAIN_RATIO),
            ),
            ("Messages in the DLQ, every mode", "0", dlq, "—", "—", verdict(all(o.dlq == 0 for o in outcomes))),
            (
                "Mirror equal to Pluggy (every item, account, transaction), every mode",
                "equal",
                ", ".join(f"{o.name}: {'equal' if o.equal else 'DIFFERS'}" for o in outcomes),
                "—",
                "—",
                verdict(all(o.equal for o in outcomes)),
            ),
            (
                f"429s met, {PRODUCT}",
                "0",
                str(throttled),
                f"{BEFORE}: {sum(before.throttled.values())}",
                "—",
                verdict(throttled == 0),
            ),
            compared("Pluggy requests per webhook", main.per_webhook, before.per_webhook, lambda x: f"{x:.2f}"),
            compared("Webhooks drained per Pluggy minute", main.per_minute, before.per_minute, fmt),
        ),
    )
    webhooks = "; ".join(f"{o.name}: " + ", ".join(f"{k} {v}" for k, v in sorted(o.webhooks.items())) for o in outcomes)
    storm = Measure(
        "1. The storm, mode by mode",
        Table(
            STORM_COLUMNS,
            tuple(row(o, limits) for o in outcomes),
        ),
        (
            plot(outcomes, sizes.limit),
            f"The emulator enforces Pluggy's limits ({sizes.limit} per minute on {', '.join(PACED_ROUTES)} and the "
            f"other documented routes, fixed windows) with W = {sizes.window_seconds:g} wall seconds for Pluggy's "
            f"minute; syncs complete at once. Template durations (Pluggy seconds) scaled by W/60: visibility "
            f"{facts.visibility:g} s, timeout {facts.timeout:g} s, lease 120 s, pacer's longest wait 20 s, client's "
            "longest 429 sleep 10 s.",
            f"The storm: items created with {sizes.transactions_per_account} rows per account (3 accounts), then each "
            f"synced {sizes.syncs} times ({ADD} new rows, {CHANGE} changed), the syncs delivered every 5 Pluggy "
            f"seconds over the first {fmt(sizes.feed_minutes)} minutes. Webhooks: {webhooks}.",
            "Floor: the bottleneck route's answered calls at its limit, the least time Pluggy allows for the calls the "
            f"mode made (a fixed window lets a burst beat it by up to a minute). The pacer runs at {facts.per_minute} "
            f"of 360 (PluggyCallsPerMinute), so the product's best is {360 / facts.per_minute:.2f}x.",
            f"Queue: an in-memory SQS FIFO (batches of {facts.batch}, visibility, ChangeMessageVisibility, redrive at "
            f"maxReceiveCount {facts.max_receives}). '> {OLD_MAX_RECEIVES}': messages the old policy "
            f"(maxReceiveCount {OLD_MAX_RECEIVES}, every receive counted) would have parked. Holds: visibility "
            "changes, for a rate limit or 0 s for messages handed back unstarted behind a held one.",
            f"{BEFORE}: the same processor, each message in its own `process_batch` call, no pacer; a failed message "
            "holds back the rest of its group in the batch.",
            f"Items created with `products={list(PRODUCTS)}` (the accounts-and-transactions sync). Each is an Open "
            f"Finance item with a consent, so every item sync also makes one {CONSENTS_ROUTE} (not rate-limited, "
            "not paced): "
            + "; ".join(
                f"{o.name}: {o.requests.get(CONSENTS_ROUTE, 0)}, {o.per_webhook_without_consents:.2f} requests per "
                "webhook without them"
                for o in outcomes
            )
            + " (the figure to compare with runs made before the products were mirrored).",
        ),
        met=drain_ratio <= GOAL_DRAIN_RATIO and all(o.dlq == 0 and o.equal for o in outcomes) and throttled == 0,
    )
    cpu = Measure(
        "2. Requests by route, CPU and the event log",
        Table(
            CPU_COLUMNS,
            tuple(cpu_row(o) for o in outcomes),
        ),
        (
            "One Python process (one GIL) runs the emulator, moto's DynamoDB (inside the containers' threads, so in "
            "their CPU), the feeder and the containers. Process CPU near 100% of wall means CPU-bound, not paced: "
            "drain above the floor would then measure this machine, not the pacing.",
            f"The pacer grants a paced route one slot every {fmt(sizes.window_seconds / facts.per_minute * 1000)} "
            f"wall ms here ({fmt(60 / facts.per_minute * 1000)} ms at Pluggy's own pace); a slot nobody claims in "
            "time is lost. Each container is serial, so N containers keep every slot claimed only while their work "
            "between two requests stays under N slots. Most of that work here is moto's, and it grows with the "
            "tables: moto answers every Query by sorting the whole table (DynamoDB reads one partition).",
            "Paced waits: seconds the containers slept in `SharedPacer.acquire` for their route's next slot.",
        ),
    )
    data = {"sizes": sizes, "outcomes": outcomes, "floor": floor, "route": route, "ratio": drain_ratio}
    notes = (
        "Nothing in this section is written by hand: `python -m bench --only storm` regenerates it and the figure.",
    )
    return Section("storm", "Storm (rate-limited Pluggy, real processor)", summary, (storm, cpu), notes, data)
