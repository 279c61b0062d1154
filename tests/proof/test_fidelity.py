"""Mirror fidelity: random histories of a Pluggy item, delivered badly, end with mirror == truth.

A history is what happens to one item at Pluggy: created, then 3-6 steps among syncs that create, change and
delete transactions, restate credit-card rows (delete + create under a new id), add an account, item errors
and MFA waits and reconnections, sometimes ending with the item's deletion. The item asks for every product or
for a subset (bills, investments and their transactions, identity, loans; consents come with every item); syncs
may move those products (`products_change`) or remove an investment (`remove_investment`), and the user may
switch the item to the PARTIAL_SUCCESS user and back (PATCH /items/{id}: the card product is then not
updated, and Pluggy keeps serving the bills of the last good sync). Its webhooks are then delivered as badly
as the real world does: duplicated, held back and delivered after later ones, or lost for good.
Once everything is delivered:

- nothing lost and the item's last execution has data: the stored item, accounts, transactions and product
  records equal the emulator's truth field by field (no product record Pluggy does not list), with no
  reconciliation at all;
- something lost, or the item ended in an error/waiting state (the processor then leaves its data to the
  full sync, see test_item_created_processed_after_the_item_failed_*): the item record is checked at once
  when nothing was lost, and everything after reconciliation (the item's last sync is backdated past
  ReconcileAfterHours and the real `pipeline/reconcile` message runs);
- every delivered event is PROCESSED and finished once, or parked in the DLQ with its reason (only late
  transactions webhooks of a deleted item are, with Pluggy's 404);
- no record came back after a delete, and no record was rewritten with different data without a newer
  Pluggy version (WriteLog, from the writes that actually reached DynamoDB); product records, which have no
  version, only with another digest (never the same one again), and after a delete only if Pluggy listed
  them again.

Pluggy throttles meanwhile: the emulator has Pluggy's per-endpoint rate limits (its "pluggy" setting, 360
calls per minute on POST /auth and the account and transaction reads, 20 on PATCH /items/{id}) on Pluggy's
own 60-second window. The window is not shortened: the suites' calls stay under 360 per route in any minute
(a processor-level history even starts on fresh windows, so hypothesis can replay it alone), so the limits
cost no time. The 429s come from another client of the application (a concurrent Lambda behind the same NAT
IP) using up the minute of GET /v2/transactions or GET /accounts at random points (`Throttling.use_up`:
before 1 in 12 deliveries at the processor level, 1 in 10 steps in the stack), plus whatever a busy minute
of the stack brings. Pluggy's 429 then says RateLimit-Reset 60, beyond the client's 10 s of waiting: the
processor raises RateLimitedError, a transient error, and the message goes back to the queue. SQS hands it
over again after the visibility timeout (540 s, longer than Pluggy's minute), before any later message of
its group: the processor-level bench does that itself (`Bench.process`, at most maxReceiveCount receives),
the stack's SQS trigger in compressed time. Neither waits for Pluggy's minute: Throttling (conftest.py) ends
the windows the wait outlasts. The figures count the minutes used up, the 429s met, the waits within the
call and the messages returned to the queue; the end checks above are unchanged. PROOF_RATE_LIMITS=off runs
without limits.

Two levels:
- `test_processor_histories` (hypothesis, PROOF_HISTORIES, default 200, over PROOF_WORKERS processes): the
  real Processor against in-process moto (tables from template.yaml) and the Pluggy emulator; duplicates,
  reordering and losses are applied to the list of events.
- `test_stack_histories` (PROOF_STACK_HISTORIES, default 20, seeded): the whole local stack (HTTP front ->
  real receiver -> SQS FIFO -> real processor), all histories interleaved. Every webhook goes through the
  emulator's delivery worker (signed, retried 3 times); the receiver's SendMessage fails on purpose so
  Pluggy retries (5XX then accepted, which also reorders), or 4 times so Pluggy gives up (lost for good).

The tests after them are the regression tests of what these histories found (docs/reliability.md, findings).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import random
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import boto3
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.dynamodb.responses import DynamoResult
from pluggy_emulator import PluggyEmulator
from pluggy_pipeline import aws
from pluggy_pipeline.errors import TransientError
from pluggy_pipeline.event_queue import EventQueue
from pluggy_pipeline.event_store import ProcessingLog
from pluggy_pipeline.observability import logger, metrics
from pluggy_pipeline.pluggy_client import PluggyClient
from pluggy_pipeline.processor import Processor, QueueMessage
from pluggy_pipeline.receiver import parse_delivery
from pluggy_pipeline.records import RecordStore, from_attributes, item_key
from pluggy_pipeline_local.template import create_resources, load_template

from tests.product_truth import ProductPresence, expected_products, is_product_key
from tests.proof.conftest import (
    HISTORIES,
    OK_USER,
    OPTIONAL_PRODUCTS,
    PARTIAL_USER,
    PLUGGY_MINUTE,
    PROFILE,
    RATE_LIMITED_ROUTES,
    RATE_LIMITS,
    RESULTS,
    SEED,
    STACK_HISTORIES,
    WORKERS,
    AwsFaults,
    FinishCounter,
    Op,
    Resettable,
    StackProbe,
    Throttling,
    WriteLog,
    accounts_of,
    apply_op,
    attribute_is,
    data_ready,
    emulator_rate_limits,
    fast_pluggy_client,
    mirror_problems,
    proof_settings,
    random_op,
    random_products,
    read_mirror,
    status_summary,
)

CLIENT_ID = "proof-client"
CLIENT_SECRET = "proof-secret"  # the emulator's credentials for this bench only
ROTATE_EVERY = 10  # histories per bench (see Bench)
TEMPLATE = load_template()
ITEM_EVENTS = ("item/",)
# SQS's redelivery of a message that failed (template.yaml, EventQueue): after the visibility timeout, at most
# maxReceiveCount receives before the redrive policy moves it to the DLQ.
_QUEUE = TEMPLATE["Resources"]["EventQueue"]["Properties"]
VISIBILITY_TIMEOUT = int(_QUEUE["VisibilityTimeout"])
MAX_RECEIVES = int(_QUEUE["RedrivePolicy"]["maxReceiveCount"])
assert VISIBILITY_TIMEOUT > PLUGGY_MINUTE, "a returned message must come back after Pluggy's window ended"


# --- the processor-level bench -------------------------------------------------------------------------


class CountingLog(ProcessingLog):
    """ProcessingLog counting successful finishes per eventId (processed exactly once in effect)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.finished: Counter[str] = Counter()

    def finish(self, event_id: str, *args: Any, **kwargs: Any) -> None:
        super().finish(event_id, *args, **kwargs)
        self.finished[event_id] += 1


class Bench:
    """The real Processor, in-process moto built from template.yaml, and the Pluggy emulator.

    Both are replaced every ROTATE_EVERY histories: moto answers every Query by scanning the whole table, and
    the emulator copies all its events on each events() call, so a bench that only grows gets slower and
    slower. Item ids stay unique across rotations (each emulator has its own seed).
    """

    def __init__(self) -> None:
        credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        self.session = boto3.session.Session(region_name="us-east-1", **credentials)
        self.dynamodb = self.session.client("dynamodb")
        self.sqs = self.session.client("sqs")
        self.secretsmanager = self.session.client("secretsmanager")
        self.rotations = 0
        self.histories = 0
        self.emulator: PluggyEmulator | None = None
        self.throttling = Throttling(None)  # one for all rotations: its counts add up
        self.redelivered = 0  # receives of a message after it failed (transiently)
        self.writes = WriteLog("")
        self.writes.attach(self.dynamodb)
        self._fresh()

    def _fresh(self) -> None:
        if self.emulator is not None:
            self.close()
        self.rotations += 1
        resources = create_resources(TEMPLATE, dynamodb=self.dynamodb, sqs=self.sqs, secretsmanager=self.secretsmanager)
        self.records_table = resources.tables["RecordsTable"]
        self.events_table = resources.tables["EventsTable"]
        self.queue_url = resources.queue_urls["EventQueue"]
        self.dlq_url = resources.queue_urls["EventDeadLetterQueue"]
        self.writes.table = self.records_table
        self.store = RecordStore(lambda: self.dynamodb, self.records_table, sleep=lambda _s: None)
        self.log = CountingLog(lambda: self.dynamodb, self.events_table)
        self.emulator = PluggyEmulator(
            CLIENT_ID, CLIENT_SECRET, seed=SEED + 7919 * self.rotations, **emulator_rate_limits()
        )
        self.emulator.start()
        self.throttling.emulator = self.emulator
        client = PluggyClient(
            self.emulator.base_url,
            lambda: (CLIENT_ID, CLIENT_SECRET),
            session=self.throttling.session(),
            timeout=(2.0, 2.0),
            sleep=self.throttling.sleep,  # no wall time: the windows the wait outlasts end
        )
        self.processor = Processor(
            client,
            self.store,
            self.log,
            EventQueue(lambda: self.sqs, self.queue_url),
            EventQueue(lambda: self.sqs, self.dlq_url),
        )
        self.seen = 0
        self.messages = 0
        self.since_rotation = 0

    def next_history(self) -> PluggyEmulator:
        if self.since_rotation >= ROTATE_EVERY:
            self._fresh()
        self.since_rotation += 1
        self.writes.clear()
        self.log.finished.clear()
        self.throttling.new_minute()  # histories are independent: a used-up minute does not reach the next one
        assert self.emulator is not None
        return self.emulator

    def close(self) -> None:
        assert self.emulator is not None
        self.emulator.stop()
        self.processor.pluggy.close()

    def take(self) -> list[dict[str, Any]]:
        """The webhooks Pluggy emitted since the last take."""
        emitted = self.emulator.events()
        new, self.seen = emitted[self.seen :], len(emitted)
        return [e["payload"] for e in new]

    def deliver(self, payload: dict[str, Any]) -> None:
        """What the receiver queues for this webhook, handed to the processor as its SQS trigger would."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)  # the emulator's exact bytes
        delivery = parse_delivery(body.encode())
        self.messages += 1
        attributes = {"eventId": delivery.event_id, "eventType": delivery.event_type, "groupId": delivery.group_id}
        self.process(QueueMessage(f"m-{self.messages}", body, attributes))

    def process(self, message: QueueMessage) -> None:
        """The processor's SQS trigger: a transient failure (e.g. Pluggy's 429 beyond the client's wait)
        returns the message to the queue, and SQS hands it over again after the visibility timeout, before
        any later message of its group (FIFO: the group waits for it). Histories deliver one message at a time,
        so that is now, with Pluggy's windows ended by the timeout. Failing all MAX_RECEIVES receives would
        park it in the DLQ (redrive policy): a failure of the history here."""
        for receive in range(1, MAX_RECEIVES + 1):
            self.throttling.received(message.message_id)
            if receive > 1:
                self.redelivered += 1
            try:
                self.processor.process(message)
                return
            except TransientError as exc:
                self.throttling.failed(message.message_id, exc)
                if receive == MAX_RECEIVES:
                    raise AssertionError(f"{message.message_id} failed {receive} receives: SQS would park it") from exc

    def _receive(self, queue_url: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
            ).get("Messages", [])
            if not batch:
                return found
            for message in batch:
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            found += batch

    def reconcile(self, item_id: str) -> int:
        """Backdate the item's last sync, run the hourly reconcile message, then the syncs it queued."""
        stored = self.store.get(item_key(item_id))
        if stored is not None and not stored.get("deleted"):
            old = "2000-01-01T00:00:00.000Z"
            self.store.update(item_key(item_id), {"syncedAt": old, "syncSk": old})
        reconcile = json.dumps({"event": "pipeline/reconcile", "eventId": f"reconcile-{uuid.uuid4().hex}"})
        # As the EventBridge schedule sends it: no attributes, the message group "reconcile".
        self.process(QueueMessage(f"r-{uuid.uuid4().hex}", reconcile, {}, group_id="reconcile"))
        queued = self._receive(self.queue_url)
        for message in queued:
            attributes = {k: v["StringValue"] for k, v in (message.get("MessageAttributes") or {}).items()}
            self.process(QueueMessage(message["MessageId"], message["Body"], attributes))
        return len(queued)

    def parked(self) -> list[dict[str, Any]]:
        return self._receive(self.dlq_url)

    def statuses(self, event_ids: Iterable[str]) -> dict[str, str]:
        """EventsTable status of each event (BatchGetItem, 100 keys a call)."""
        ids = list(dict.fromkeys(event_ids))
        found: dict[str, str] = {}
        for start in range(0, len(ids), 100):
            keys = [{"eventId": {"S": i}} for i in ids[start : start + 100]]
            request = {
                self.events_table: {
                    "Keys": keys,
                    "ConsistentRead": True,
                    "ProjectionExpression": "eventId, #s",
                    "ExpressionAttributeNames": {"#s": "status"},
                }
            }
            while request:
                answer = self.dynamodb.batch_get_item(RequestItems=request)
                for row in answer["Responses"].get(self.events_table, []):
                    found[row["eventId"]["S"]] = row["status"]["S"]
                request = answer.get("UnprocessedKeys") or {}
        return found

    def event_log(self, event_id: str) -> dict[str, Any] | None:
        raw = self.dynamodb.get_item(
            TableName=self.events_table, Key={"eventId": {"S": event_id}}, ConsistentRead=True
        ).get("Item")
        return from_attributes(raw) if raw else None


_FAST_OPERATIONS = frozenset({"GetItem", "Query", "Scan", "PutItem", "UpdateItem", "DeleteItem", "BatchGetItem"})


@contextlib.contextmanager
def quiet_bench() -> Iterator[Bench]:
    """A Bench inside in-process moto, with the function logs off and moto's DynamoDB answers sped up.

    moto builds each DynamoDB answer with its generic, model-driven serializer; for item operations the
    result is already the JSON dict DynamoDB sends, so it is written with json.dumps instead (3-4x faster
    reads, same bytes to botocore). The stack-level tests run moto unmodified.
    """
    original = DynamoResult.execute_result

    def execute_result(result: DynamoResult, context: Any) -> Any:
        if context.operation_model.name in _FAST_OPERATIONS and isinstance(result.result, dict):
            return 200, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(result.result)
        return original(result, context)

    level = logger.log_level
    logger.setLevel("ERROR")  # one JSON line per event would dominate the run
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        patch.setenv("POWERTOOLS_METRICS_DISABLED", "true")  # nothing flushes them here (no handler)
        patch.setattr(DynamoResult, "execute_result", execute_result)
        created = Bench()
        try:
            yield created
        finally:
            created.close()
            metrics.clear_metrics()
            logger.setLevel(level)


@pytest.fixture
def bench() -> Iterator[Bench]:
    with quiet_bench() as created:
        yield created


# --- strategies ------------------------------------------------------------------------------------------

# Syncs are the common case; weights by repetition. patch-partial: the user's PATCH switches the item to the
# PARTIAL_SUCCESS user (its syncs then say creditCards isUpdated false) until a patch-ok switches it back.
KINDS = ("sync",) * 7 + ("fail", "waiting", "reconnect", "reconnect", "patch-partial", "patch-partial", "patch-ok")
# What happens to one webhook: delivered at once, twice, held back and delivered after later ones, or lost.
FATES = ("now",) * 5 + ("dup", "dup", "hold", "hold", "hold", "lose")
# The item's first webhook is never lost: an item none of whose webhooks arrives is unknown to the mirror, and
# reconciliation only sweeps items it has stored.
FIRST_FATES = ("now", "now", "dup", "hold")
# Before a delivery: nothing, or another client uses up the minute of a route the processor calls (1 in 12).
THROTTLES = (None,) * 22 + RATE_LIMITED_ROUTES


# "card": the card's rows move (a restated row, and the third of three new rows lands on the card), so that a
# PARTIAL_SUCCESS sync leaves Pluggy's bills behind its rows more often.
SYNC_SHAPES = ("add", "add", "change", "delete", "restate", "card", "mixed", "new-account", "nothing")


# What the item asks for: everything (Pluggy's default) or ACCOUNTS, TRANSACTIONS and some of the others.
PRODUCT_SETS = st.one_of(
    st.none(),
    st.sets(st.sampled_from(OPTIONAL_PRODUCTS)).map(
        lambda chosen: ["ACCOUNTS", "TRANSACTIONS", *(p for p in OPTIONAL_PRODUCTS if p in chosen)]
    ),
)


@st.composite
def sync_strategy(draw: st.DrawFn) -> Op:
    shape = draw(st.sampled_from(SYNC_SHAPES))  # mostly one kind of change per sync: fewer, clearer events
    if shape == "add":
        return Op("sync", add=draw(st.integers(1, 3)))
    if shape == "change":
        return Op("sync", change=draw(st.integers(1, 2)))
    if shape == "delete":
        return Op("sync", delete=draw(st.integers(1, 2)))
    if shape == "restate":
        return Op("sync", restate=1)
    if shape == "card":
        return Op("sync", add=3, restate=1)
    if shape == "new-account":
        return Op("sync", new_account=True)
    if shape == "nothing":
        return Op("sync")
    return Op(
        "sync",
        add=draw(st.integers(0, 2)),
        change=draw(st.integers(0, 1)),
        delete=draw(st.integers(0, 1)),
        restate=draw(st.integers(0, 1)),
    )


@st.composite
def op_strategy(draw: st.DrawFn) -> Op:
    kind = draw(st.sampled_from(KINDS))
    if kind == "fail":
        return Op("fail", code=draw(st.sampled_from(("INVALID_CREDENTIALS", "SITE_NOT_AVAILABLE"))))
    if kind != "sync":
        return Op(kind)
    op = draw(sync_strategy())
    # Products move at some syncs (balances, a BUY, a loan installment, the identity), an investment goes at fewer.
    products_change = draw(st.sampled_from((False, False, True)), label="products change")
    remove_investment = draw(st.sampled_from((False,) * 5 + (True,)), label="an investment removed")
    return dataclasses.replace(op, products_change=products_change, remove_investment=remove_investment)


@dataclass
class Tally(Resettable):
    """What the processor-level histories covered (written to docs/reliability.md)."""

    histories: int = 0
    steps: dict[str, int] = field(default_factory=dict)  # not a Counter: asdict() would mangle it
    events: int = 0
    deliveries: int = 0
    duplicates: int = 0
    held: int = 0
    lost: int = 0
    reconciled: int = 0
    reconcile_syncs: int = 0
    recovered_first: int = 0
    parked_after_delete: int = 0
    writes_checked: int = 0
    product_writes_checked: int = 0  # of which to product records (digest changed, none after a delete)
    records_compared: int = 0
    product_records_compared: int = 0  # of which product records (bills, investments, ..., identity, consents)
    partial_steps: int = 0  # steps that ended PARTIAL_SUCCESS with the card product not updated
    partial_with_bills: int = 0  # of which on an item whose card has bills (Pluggy serves the last good ones)
    partial_bills_kept: int = 0  # of which with the card's rows moved in that step
    items_all_products: int = 0  # items asking for every product (the default) / for a subset
    items_some_products: int = 0
    investments_removed: int = 0
    differences: int = 0  # mirror != truth, field by field (each fails its history)
    rate_limit_used_up: int = 0
    answers_429: int = 0
    waited_429: int = 0  # within the call
    returned_429: int = 0  # messages returned to the queue by a 429, processed on a later receive
    redelivered: int = 0
    histories_429: int = 0  # histories that met at least one 429
    seconds: float = 0.0


TALLY = Tally()


def _settle(bench: Bench, payloads: Iterable[dict[str, Any]], delivered: dict[str, int], draws: Draws) -> None:
    for payload in payloads:
        route = draws.throttle()
        if route is not None and bench.throttling.use_up(route):
            TALLY.rate_limit_used_up += 1
        bench.deliver(payload)
        delivered[payload["eventId"]] = delivered.get(payload["eventId"], 0) + 1


class Draws:
    """Choices drawn up front, then consumed in order: how many events a step emits depends on the emulator,
    so drawing per event would make hypothesis' replays draw differently (FlakyStrategyDefinition)."""

    def __init__(self, data: st.DataObject) -> None:
        self.fates = data.draw(st.lists(st.sampled_from(FATES), min_size=48, max_size=48), label="fates")
        self.first = data.draw(st.sampled_from(FIRST_FATES), label="fate of the first webhook")
        self.flags = data.draw(st.lists(st.booleans(), min_size=64, max_size=64), label="flags")
        self.order = random.Random(data.draw(st.integers(0, 2**32 - 1), label="late delivery order"))
        self.throttles = data.draw(st.lists(st.sampled_from(THROTTLES), min_size=48, max_size=48), label="throttles")
        self._fate = self._flag = self._throttle = 0

    def fate(self, first: bool) -> str:
        if first:
            return self.first
        self._fate += 1
        return self.fates[(self._fate - 1) % len(self.fates)]

    def flag(self) -> bool:
        self._flag += 1
        return self.flags[(self._flag - 1) % len(self.flags)]

    def throttle(self) -> str | None:
        """The route whose minute another client uses up before the next delivery, if any."""
        self._throttle += 1
        route: str | None = self.throttles[(self._throttle - 1) % len(self.throttles)]
        return route


def history(bench: Bench, data: st.DataObject) -> None:
    """One random history through the real Processor ends with mirror == truth."""
    started = time.monotonic()
    per_account = data.draw(st.integers(1, 3), label="transactions per account")
    products = data.draw(PRODUCT_SETS, label="products the item asks for")
    username = data.draw(st.sampled_from((OK_USER,) * 4 + (PARTIAL_USER,)), label="sandbox user")
    ops = data.draw(st.lists(op_strategy(), min_size=3, max_size=6), label="steps")
    if data.draw(st.sampled_from((False,) * 5 + (True,)), label="ends with the item's deletion"):
        ops.append(Op("delete"))
    draws = Draws(data)
    reconcile_anyway = data.draw(st.sampled_from((False,) * 4 + (True,)), label="reconcile anyway")
    emulator = bench.next_history()
    user = f"proof-user-{uuid.uuid4().hex[:12]}"
    item = emulator.create_item(
        client_user_id=user, username=username, transactions_per_account=per_account, products=products
    )
    item_id = item["id"]
    truth = emulator.truth()
    known_accounts = accounts_of(truth, item_id)
    presence = ProductPresence()
    presence.observe(truth, item_id)
    removed_before = len(truth["deletedInvestmentIds"])
    delivered: dict[str, int] = {}
    held: list[dict[str, Any]] = []
    lost: list[dict[str, Any]] = []
    events = 0

    def route(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal events
        now: list[dict[str, Any]] = []
        for payload in payloads:
            fate = draws.fate(first=events == 0)
            events += 1
            if fate == "now":
                now.append(payload)
            elif fate == "dup":
                now.append(payload)
                if draws.flag():
                    now.append(payload)  # two copies in flight (SQS dedupe window missed)
                else:
                    held.append(payload)  # the copy comes back later, after processing
                TALLY.duplicates += 1
            elif fate == "hold":
                held.append(payload)
                TALLY.held += 1
            else:
                lost.append(payload)
                TALLY.lost += 1
        return now

    throttled = (bench.throttling.snapshot(), bench.redelivered)
    _settle(bench, route(bench.take()), delivered, draws)
    partial: list[str] = []
    for op in ops:
        before = truth
        truth = apply_op(emulator, item_id, op)
        TALLY.steps[op.step_kind()] = TALLY.steps.get(op.step_kind(), 0) + 1
        known_accounts |= accounts_of(truth, item_id)
        presence.observe(truth, item_id)
        partial += partial_step(before, truth, item_id)
        _settle(bench, route(bench.take()), delivered, draws)
        # Some held webhooks arrive now, after newer ones.
        released = [h for h in held if draws.flag()]
        held = [h for h in held if all(h is not r for r in released)]
        _settle(bench, released, delivered, draws)
    draws.order.shuffle(held)
    _settle(bench, held, delivered, draws)

    problems: list[str] = []
    truth = emulator.truth()
    ready = data_ready(truth, item_id)
    if not ready:
        TALLY.recovered_first += 1
    if not ready and not lost:
        # The item record is right at once; the processor reads a failed item's accounts and transactions
        # only in a full sync, so those may wait for reconciliation (test_item_created_processed_after_*).
        view = read_mirror(bench.store, item_id, (), by_date=False)
        found = mirror_problems(truth, view, item_id, item_only=True)
        problems += [f"item in error, before reconciling: {p}" for p in found]
    if lost or not ready or reconcile_anyway:
        TALLY.reconciled += 1
        TALLY.reconcile_syncs += bench.reconcile(item_id)
    truth = emulator.truth()
    view = read_mirror(bench.store, item_id, known_accounts, by_date=False)
    differences = mirror_problems(truth, view, item_id)
    TALLY.differences += len(differences)
    problems += differences
    problems += bench.writes.problems(relisted=presence.relisted)
    problems += [f"event {e} finished {n} times" for e, n in bench.log.finished.items() if n > 1]
    parked = bench.parked()
    for message in parked:
        reason = (message.get("MessageAttributes") or {}).get("failureReason", {}).get("StringValue", "")
        if item_id in truth["items"] or "404" not in reason:
            problems.append(f"parked in the DLQ although the item exists or for another reason: {reason!r}")
    TALLY.parked_after_delete += len(parked)
    parked_ids = {m["MessageAttributes"]["eventId"]["StringValue"] for m in parked}
    statuses = bench.statuses(delivered)
    for event_id in delivered:
        status = statuses.get(event_id)
        if status != "PROCESSED" and not (status == "FAILED" and event_id in parked_ids):
            problems.append(f"delivered event {event_id} ends {status}, neither processed nor parked")
    assert problems == [], (
        f"history of {item_id} ({username}, products {products or 'all'}): {[o.label() for o in ops]}, "
        f"lost {[p['event'] for p in lost]}",
        problems[:25],
    )
    TALLY.histories += 1
    TALLY.events += events
    TALLY.deliveries += sum(delivered.values())
    TALLY.writes_checked += bench.writes.count()
    TALLY.product_writes_checked += bench.writes.count(products=True)
    TALLY.records_compared += (
        1 + len(view.accounts) + sum(len(r) for r in view.transactions.values()) + len(view.products)
    )
    TALLY.product_records_compared += len(view.products)
    TALLY.partial_steps += len(partial)
    TALLY.partial_with_bills += sum(1 for p in partial if p != "partial")
    TALLY.partial_bills_kept += partial.count("bills kept")
    TALLY.items_all_products += products is None
    TALLY.items_some_products += products is not None
    TALLY.investments_removed += len(truth["deletedInvestmentIds"]) - removed_before
    met = bench.throttling.snapshot()
    TALLY.answers_429 += met["answers"] - throttled[0]["answers"]
    TALLY.waited_429 += met["waited"] - throttled[0]["waited"]
    TALLY.returned_429 += met["returned"] - throttled[0]["returned"]
    TALLY.redelivered += bench.redelivered - throttled[1]
    TALLY.histories_429 += met["answers"] > throttled[0]["answers"]
    TALLY.seconds += time.monotonic() - started


def partial_step(before: Mapping[str, Any], after: Mapping[str, Any], item_id: str) -> list[str]:
    """[] unless the step ended PARTIAL_SUCCESS with the card product not updated; then ["bills kept"] when the
    card has bills and its rows moved (Pluggy serves the bills of the last good sync, behind the rows, and so
    must the mirror), ["bills"] when it has bills, ["partial"] otherwise."""
    item = after["items"].get(item_id) or {}
    detail = item.get("statusDetail") or {}
    if item.get("executionStatus") != "PARTIAL_SUCCESS" or (detail.get("creditCards") or {}).get("isUpdated", True):
        return []
    cards = [
        a
        for a, acc in after["accounts"].items()
        if acc["itemId"] == item_id and acc["type"] == "CREDIT" and after["bills"].get(a)
    ]
    if not cards:
        return ["partial"]
    moved = any(after["transactions"].get(a) != before["transactions"].get(a) for a in cards)
    return ["bills kept" if moved else "bills"]


def run_histories(shard: int, examples: int) -> dict[str, Any]:
    """`examples` histories in this process (a worker of the pool, or the test's own process).

    Under the `ci` profile each shard has a fixed seed, so CI runs the same histories every time.
    """
    TALLY.reset()
    started = time.monotonic()
    error = None
    with quiet_bench() as bench:

        def histories(data: st.DataObject) -> None:
            history(bench, data)

        test = given(data=st.data())(histories)
        if PROFILE == "ci":
            test = seed(SEED * 100 + shard)(settings(proof_settings(examples), derandomize=False)(test))
        else:
            test = proof_settings(examples)(test)
        try:
            test()
        except BaseException as exc:  # reported by the parent test, with hypothesis' falsifying example
            error = "".join(traceback.format_exception(exc))
    return {"tally": asdict(TALLY), "error": error, "seconds": time.monotonic() - started}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_processor_histories() -> None:
    """PROOF_HISTORIES random histories through the real Processor end with mirror == truth.

    Split over PROOF_WORKERS processes (default: 2, or 1 on a single CPU), each with its own moto and emulator.
    """
    workers = max(1, min(WORKERS, HISTORIES))
    shares = [HISTORIES // workers + (1 if i < HISTORIES % workers else 0) for i in range(workers)]
    started = time.monotonic()
    if workers == 1:
        results = [run_histories(0, HISTORIES)]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run_histories, range(workers), shares))
    total: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    for result in results:
        tally = dict(result["tally"])
        steps.update(tally.pop("steps"))
        tally.pop("seconds")
        total.update(tally)
    RESULTS.section("fidelity_processor").update(
        histories=total["histories"],
        workers=workers,
        steps=dict(steps),
        events=total["events"],
        deliveries=total["deliveries"],
        duplicates=total["duplicates"],
        held_back=total["held"],
        lost=total["lost"],
        reconciled=total["reconciled"],
        reconcile_syncs=total["reconcile_syncs"],
        ended_in_error=total["recovered_first"],
        parked_after_delete=total["parked_after_delete"],
        writes_checked=total["writes_checked"],
        product_writes_checked=total["product_writes_checked"],
        records_compared=total["records_compared"],
        product_records_compared=total["product_records_compared"],
        partial_steps=total["partial_steps"],
        partial_with_bills=total["partial_with_bills"],
        partial_bills_kept=total["partial_bills_kept"],
        items_all_products=total["items_all_products"],
        items_some_products=total["items_some_products"],
        investments_removed=total["investments_removed"],
        differences=total["differences"],
        rate_limits=RATE_LIMITS,
        rate_limit_used_up=total["rate_limit_used_up"],
        answers_429=total["answers_429"],
        waited_429=total["waited_429"],
        returned_429=total["returned_429"],
        redelivered=total["redelivered"],
        histories_429=total["histories_429"],
        seconds=round(time.monotonic() - started, 1),
    )
    errors = [r["error"] for r in results if r["error"]]
    assert not errors, errors[0]
    assert total["histories"] >= HISTORIES and total["differences"] == 0
    if HISTORIES >= 50 and RATE_LIMITS != "off":
        assert total["answers_429"] > 0 and total["returned_429"] > 0, "the histories never met Pluggy's 429"


# --- what the histories found (docs/reliability.md, findings): regression tests ---------------------------


def test_item_known_only_through_transaction_webhooks_is_synced_whole(bench: Bench) -> None:
    emulator = bench.next_history()
    item = emulator.create_item(client_user_id=f"gap-{uuid.uuid4().hex[:8]}", transactions_per_account=2)
    bench.take()  # item/login_succeeded and item/created: lost for good
    emulator.sync_item(item["id"], add=2)
    for payload in bench.take():
        if not payload["event"].startswith(ITEM_EVENTS):  # item/updated lost too; transactions/created arrive
            bench.deliver(payload)
    bench.reconcile(item["id"])
    truth = emulator.truth()
    view = read_mirror(bench.store, item["id"], accounts_of(truth, item["id"]))
    assert mirror_problems(truth, view, item["id"]) == []


def test_reconcile_of_an_item_in_error_heals_a_lost_transactions_deleted(bench: Bench) -> None:
    emulator = bench.next_history()
    item = emulator.create_item(client_user_id=f"gap-{uuid.uuid4().hex[:8]}", transactions_per_account=2)
    for payload in bench.take():
        bench.deliver(payload)
    emulator.sync_item(item["id"], delete=1)
    for payload in bench.take():
        if payload["event"] != "transactions/deleted":  # lost for good
            bench.deliver(payload)
    emulator.fail_item(item["id"], "SITE_NOT_AVAILABLE")  # Pluggy still serves the item's data
    for payload in bench.take():
        bench.deliver(payload)
    bench.reconcile(item["id"])
    truth = emulator.truth()
    view = read_mirror(bench.store, item["id"], accounts_of(truth, item["id"]))
    assert mirror_problems(truth, view, item["id"]) == []


def test_item_created_processed_after_the_item_failed_is_healed_by_reconciliation(bench: Bench) -> None:
    """A backlog: by the time item/created is processed the item has failed, so the processor stores the item
    only (no data is fetched from a failed item on a webhook); reconciliation's full sync fetches it."""
    emulator = bench.next_history()
    item = emulator.create_item(client_user_id=f"gap-{uuid.uuid4().hex[:8]}", transactions_per_account=2)
    emulator.fail_item(item["id"], "INVALID_CREDENTIALS")
    for payload in bench.take():
        bench.deliver(payload)
    truth = emulator.truth()
    assert mirror_problems(truth, read_mirror(bench.store, item["id"], ()), item["id"], item_only=True) == []
    bench.reconcile(item["id"])
    view = read_mirror(bench.store, item["id"], accounts_of(truth, item["id"]))
    assert mirror_problems(truth, view, item["id"]) == []


def test_parking_the_same_event_again_after_a_redrive_is_not_deduplicated(bench: Bench) -> None:
    """Each park carries its own deduplication id, so SQS FIFO (5-minute window, which moto does not keep
    after a delete) cannot swallow a message parked, redriven and parked again."""
    bench.next_history()
    sent: list[str] = []

    def remember(params: dict[str, Any], **_: Any) -> None:
        if params.get("QueueUrl") == bench.dlq_url:
            sent.append(params["MessageDeduplicationId"])

    bench.sqs.meta.events.register("before-parameter-build.sqs.SendMessage", remember)
    try:
        poison = json.dumps(
            {"event": "transactions/created", "eventId": f"poison-{uuid.uuid4().hex}", "accountId": "a"}
        )
        attributes = {"eventId": json.loads(poison)["eventId"], "eventType": "transactions/created", "groupId": "g"}
        for message_id in ("first-delivery", "after-the-redrive"):
            bench.processor.process(QueueMessage(message_id, poison, attributes))
    finally:
        bench.sqs.meta.events.unregister("before-parameter-build.sqs.SendMessage", remember)
    assert len(sent) == 2 and len(set(sent)) == 2, sent
    assert len(bench.parked()) == 2


# --- products: the cases the histories draw, one by one, and the checks themselves --------------------------


def _deliver_all(bench: Bench) -> None:
    for payload in bench.take():
        bench.deliver(payload)


def _product_writes(bench: Bench) -> dict[tuple[str, str], list[str]]:
    return {k: [w.op for w in v] for k, v in bench.writes.writes.items() if is_product_key(k[1])}


def test_products_change_and_a_removed_investment_are_mirrored_then_the_item_deletion_drops_them(
    bench: Bench,
) -> None:
    emulator = bench.next_history()
    item_id = emulator.create_item(client_user_id=f"prod-{uuid.uuid4().hex[:8]}", transactions_per_account=2)["id"]
    _deliver_all(bench)
    truth = emulator.truth()
    before = expected_products(truth, item_id)
    assert {sk.split("#")[0] for _, sk in before} == {"BILL", "INVESTMENT", "ITX", "LOAN", "IDENTITY", "CONSENT"}
    bench.writes.clear()
    truth = apply_op(emulator, item_id, Op("sync", products_change=True, remove_investment=True))
    _deliver_all(bench)
    removed = truth["deletedInvestmentIds"][-1]
    view = read_mirror(bench.store, item_id, accounts_of(truth, item_id), by_date=False)
    assert mirror_problems(truth, view, item_id) == []
    assert not any(removed in pk or removed in sk for pk, sk in view.products)  # its transactions went with it
    written = _product_writes(bench)
    after = expected_products(truth, item_id)
    changed = {k for k in after if k in before and after[k] != before[k]}
    assert changed, "products_change changed nothing at Pluggy"
    # Exactly what changed was written, what went was deleted, nothing else was touched.
    assert {k for k, ops in written.items() if "put" in ops} == changed | (set(after) - set(before))
    assert {k for k, ops in written.items() if "delete" in ops} == set(before) - set(after)
    assert bench.writes.problems() == []
    apply_op(emulator, item_id, Op("delete"))
    _deliver_all(bench)
    truth = emulator.truth()
    view = read_mirror(bench.store, item_id, (), by_date=False)
    assert view.products == {}  # the identity included
    assert mirror_problems(truth, view, item_id) == []


def test_a_partial_success_keeps_the_bills_of_the_last_good_sync(bench: Bench) -> None:
    """PARTIAL_SUCCESS with statusDetail.creditCards.isUpdated false: Pluggy serves the card's bills of the last
    good sync while the card's rows move on; the mirror keeps those (it does not even read them), then follows
    the next good sync."""
    emulator = bench.next_history()
    item_id = emulator.create_item(client_user_id=f"prod-{uuid.uuid4().hex[:8]}", transactions_per_account=6)["id"]
    _deliver_all(bench)
    bench.writes.clear()
    apply_op(emulator, item_id, Op("patch-partial"))
    truth = apply_op(emulator, item_id, Op("sync", add=3, change=2, restate=1, products_change=True))
    _deliver_all(bench)
    item = truth["items"][item_id]
    assert item["executionStatus"] == "PARTIAL_SUCCESS"
    assert item["statusDetail"]["creditCards"]["isUpdated"] is False
    view = read_mirror(bench.store, item_id, accounts_of(truth, item_id), by_date=False)
    assert mirror_problems(truth, view, item_id) == []
    written = _product_writes(bench)
    assert not any(pk.startswith("BILLS#") for pk, _ in written), "bills written on a sync that did not update them"
    assert any(sk.startswith("INVESTMENT#") for _, sk in written)  # the products that were updated were followed
    truth = apply_op(emulator, item_id, Op("patch-ok"))
    _deliver_all(bench)
    assert truth["items"][item_id]["executionStatus"] == "SUCCESS"
    view = read_mirror(bench.store, item_id, accounts_of(truth, item_id), by_date=False)
    assert mirror_problems(truth, view, item_id) == []
    assert bench.writes.problems() == []


def test_an_item_asking_for_some_products_gets_only_those(bench: Bench) -> None:
    emulator = bench.next_history()
    products = ["ACCOUNTS", "TRANSACTIONS", "INVESTMENTS", "LOANS"]  # no card bills, no investment rows, no identity
    item_id = emulator.create_item(
        client_user_id=f"prod-{uuid.uuid4().hex[:8]}", transactions_per_account=2, products=products
    )["id"]
    _deliver_all(bench)
    truth = apply_op(emulator, item_id, Op("sync", add=1, products_change=True))
    _deliver_all(bench)
    view = read_mirror(bench.store, item_id, accounts_of(truth, item_id), by_date=False)
    assert mirror_problems(truth, view, item_id) == []
    assert {sk.split("#")[0] for _, sk in view.products} == {"INVESTMENT", "LOAN", "CONSENT"}


def test_the_product_checks_fail_on_a_wrong_mirror_and_keep_the_identity_masked(bench: Bench) -> None:
    """The checks themselves: a changed field, a missing record, a record Pluggy does not list and an identity
    that differs are each reported, and no identity value (name, CPF) appears in a report."""
    emulator = bench.next_history()
    item_id = emulator.create_item(client_user_id=f"prod-{uuid.uuid4().hex[:8]}", transactions_per_account=1)["id"]
    _deliver_all(bench)
    truth = emulator.truth()
    accounts = accounts_of(truth, item_id)
    view = read_mirror(bench.store, item_id, accounts, by_date=False)
    assert mirror_problems(truth, view, item_id) == []
    loan = next(k for k in view.products if k[1].startswith("LOAN#"))
    investment = next(k for k in view.products if k[1].startswith("INVESTMENT#"))
    identity = truth["identities"][item_id]
    bench.store.update(dict(zip(("pk", "sk"), loan, strict=True)), {"digest": "0" * 32})
    bench.store.delete(dict(zip(("pk", "sk"), investment, strict=True)))
    bench.store.put({**view.products[loan], "sk": "LOAN#not-at-pluggy"})
    bench.store.update({"pk": f"ITEM#{item_id}", "sk": "IDENTITY"}, {"data": {**identity, "fullName": "Someone Else"}})
    found = mirror_problems(truth, read_mirror(bench.store, item_id, accounts, by_date=False), item_id)
    assert f"product {loan[0]}/{loan[1]}.digest: not the hash of Pluggy's object" in found
    assert f"product {investment[0]}/{investment[1]} missing" in found
    assert f"product {loan[0]}/LOAN#not-at-pluggy stored but not listed by Pluggy" in found
    assert f"product ITEM#{item_id}/IDENTITY.data.fullName: differs" in found
    text = "\n".join(found)
    assert identity["fullName"] not in text and identity["document"] not in text and "Someone Else" not in text


def _put(log: WriteLog, sk: str, data: str, digest: str | None) -> None:
    item = {"pk": {"S": "ITEM#i"}, "sk": {"S": sk}, "data": {"M": {"v": {"S": data}}}}
    log._add({**item, "digest": {"S": digest}} if digest else item, "put")


def test_the_write_log_flags_wasted_unstable_and_resurrected_product_writes() -> None:
    log = WriteLog("t")
    _put(log, "LOAN#a", "1", "d1")
    _put(log, "LOAN#a", "2", "d2")  # changed: fine
    _put(log, "LOAN#b", "1", "d1")
    _put(log, "LOAN#b", "1", "d1")  # the same digest again
    _put(log, "LOAN#c", "1", "d1")
    _put(log, "LOAN#c", "1", "d9")  # another digest over the same data
    _put(log, "LOAN#d", "1", "d1")
    log._add({"pk": {"S": "ITEM#i"}, "sk": {"S": "LOAN#d"}}, "delete")
    _put(log, "LOAN#d", "1", "d1")  # back after its deletion
    _put(log, "CONSENT#e", "1", None)
    assert sorted(p.split(": ", 1)[1] for p in log.problems()) == [
        "product record written without a digest",
        "rewritten with the same data under another digest (an unstable hash)",
        "rewritten with the same digest (a wasted write)",
        "written again after it was deleted, and Pluggy never listed it again",
    ]
    assert log.problems(relisted={("ITEM#i", "LOAN#d")}) == [p for p in log.problems() if "LOAN#d" not in p]


# --- the whole local stack -------------------------------------------------------------------------------

STACK_FATES = ("now",) * 10 + ("retry",) * 3 + ("dup",) * 2 + ("hold",) * 2 + ("lose",) * 3
STACK_FIRST_FATES = ("now", "now", "retry", "dup")
STACK_THROTTLE = 0.1  # before a step of a history: another client uses up a rate-limited route's minute
SQS_SEND = ("receiver.sqs", "SendMessage", "sqs-500")  # the receiver's send fails: it answers 503


@dataclass
class StackHistory:
    number: int
    ops: list[Op]
    products: list[str] | None = None  # what the item asks for (None: every product, Pluggy's default)
    username: str = OK_USER
    item_id: str = ""
    known_accounts: set[str] = field(default_factory=set)
    presence: ProductPresence = field(default_factory=ProductPresence)
    last: dict[str, Any] = field(default_factory=dict)  # the truth after its last step
    partial: list[str] = field(default_factory=list)  # partial_step of each step
    sent: list[str] = field(default_factory=list)  # eventIds handed to Pluggy's delivery worker
    lost: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)  # sent, but failed 4 times: Pluggy dropped them
    retried: list[str] = field(default_factory=list)
    first: bool = True


class Deliveries:
    """Routes each webhook of the interleaved histories to its fate, through the emulator's delivery worker."""

    def __init__(self, probe: StackProbe, faults: AwsFaults, rng: random.Random) -> None:
        self.probe = probe
        self.emulator = probe.emulator
        self.faults = faults
        self.rng = rng
        self.held: list[tuple[StackHistory, dict[str, Any]]] = []
        self.duplicates: list[dict[str, Any]] = []
        self.tally: Counter[str] = Counter()
        self.seen = len(self.emulator.events())
        webhooks = [w for w in self.emulator.truth()["webhooks"] if w["url"] == probe.stack.webhook_url]
        self.webhook_id = webhooks[0]["id"]
        self.client = probe.stack.pluggy_client()

    def set_webhook(self, enabled: bool) -> None:
        """Disabling the webhook while an op runs collects its events without sending them."""
        self.client.update_webhook(self.webhook_id, enabled=enabled)

    def run(self, history: StackHistory, action: Any) -> None:
        self.set_webhook(False)
        try:
            action()
        finally:
            self.set_webhook(True)
        emitted = self.emulator.events()
        new, self.seen = emitted[self.seen :], len(emitted)
        for event in new:
            self.route(history, event["payload"])

    def send(self, payload: dict[str, Any]) -> None:
        """Pluggy delivers this webhook (same eventId, same bytes), with its usual retries."""
        fields = {k: v for k, v in payload.items() if k != "event"}
        self.emulator.send_event(payload["event"], **fields)
        self.seen += 1  # send_event records the delivery as another emitted event

    def route(self, history: StackHistory, payload: dict[str, Any]) -> None:
        fate = self.rng.choice(STACK_FIRST_FATES if history.first else STACK_FATES)
        history.first = False
        event_id = payload["eventId"]
        self.tally[fate] += 1
        if fate == "lose" and self.rng.random() < 0.5:
            history.lost.append(event_id)  # never sent
            return
        if fate == "lose":  # sent, and the receiver fails all 4 attempts: Pluggy gives up
            self.faults.add(
                "lose", "receiver.sqs", "SendMessage", "sqs-500", 4, match=attribute_is("eventId", event_id)
            )
            history.lost.append(event_id)
            history.gave_up.append(event_id)
        elif fate == "retry":  # 5XX 1-3 times, then accepted on Pluggy's retry (later webhooks overtake it)
            times = self.rng.randint(1, 3)
            self.faults.add(
                "retry", "receiver.sqs", "SendMessage", "sqs-500", times, match=attribute_is("eventId", event_id)
            )
            history.retried.append(event_id)
        elif fate == "hold":
            self.held.append((history, payload))
            return
        elif fate == "dup":
            self.duplicates.append(payload)
        history.sent.append(event_id)
        self.send(payload)

    def release_some(self) -> None:
        keep = []
        for history, payload in self.held:
            if self.rng.random() < 0.4:
                history.sent.append(payload["eventId"])
                self.send(payload)
            else:
                keep.append((history, payload))
        self.held = keep

    def release_all(self) -> None:
        self.rng.shuffle(self.held)
        for history, payload in self.held:
            history.sent.append(payload["eventId"])
            self.send(payload)
        self.held = []

    def resend_duplicates(self) -> None:
        for payload in self.duplicates:
            self.send(payload)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_stack_histories(local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """PROOF_STACK_HISTORIES interleaved histories through the whole local stack end with mirror == truth."""
    started = time.monotonic()
    probe = StackProbe(local_stack)
    throttling = Throttling(probe.emulator)
    fast_pluggy_client(monkeypatch, throttling)
    probe.idle()
    rng = random.Random(SEED)
    limits_rng = random.Random(f"{SEED}:rate-limits")  # apart from `rng`: the histories stay what they were
    faults = AwsFaults(rng)
    faults.attach(aws.sqs(), "receiver.sqs")
    writes = WriteLog(probe.records.table_name)
    writes.attach(aws.dynamodb(aws.PROCESSOR_CONFIG))
    finishes = FinishCounter(monkeypatch)
    routes = Deliveries(probe, faults, rng)
    removed_before = set(probe.emulator.truth()["deletedInvestmentIds"])  # the module's stack is shared
    histories = [
        StackHistory(
            n,
            [random_op(rng, allow_delete=True, products=True) for _ in range(rng.randint(3, 6))],
            products=random_products(rng),
            username=PARTIAL_USER if rng.random() < 0.15 else OK_USER,
        )
        for n in range(STACK_HISTORIES)
    ]
    for history in histories:
        if "delete" in [o.kind for o in history.ops]:
            history.ops = history.ops[: [o.kind for o in history.ops].index("delete") + 1]
    try:
        for history in histories:

            def create(history: StackHistory = history) -> None:
                user = f"stack-user-{uuid.uuid4().hex[:10]}"
                history.item_id = probe.emulator.create_item(
                    client_user_id=user,
                    username=history.username,
                    transactions_per_account=2,
                    products=history.products,
                )["id"]

            routes.run(history, create)
            truth = probe.emulator.truth()
            history.known_accounts = accounts_of(truth, history.item_id)
            history.presence.observe(truth, history.item_id)
            history.last = truth
        for step in range(max(len(h.ops) for h in histories)):
            for history in histories:
                if step < len(history.ops):
                    if limits_rng.random() < STACK_THROTTLE:  # another client uses up a route's minute
                        throttling.use_up(limits_rng.choice(RATE_LIMITED_ROUTES))
                    op = history.ops[step]
                    routes.run(history, lambda h=history, o=op: apply_op(probe.emulator, h.item_id, o))
                    truth = probe.emulator.truth()
                    history.known_accounts |= accounts_of(truth, history.item_id)
                    history.presence.observe(truth, history.item_id)
                    history.partial += partial_step(history.last, truth, history.item_id)
                    history.last = truth
            routes.release_some()
        routes.release_all()
        probe.idle()
        routes.resend_duplicates()  # after processing: the receiver answers 200 duplicate, nothing re-queued
        probe.idle()
    finally:
        routes.set_webhook(True)
        throttling.end_used_up()
    before_reconcile = 0
    problems: list[str] = []
    truth = probe.emulator.truth()
    in_error = [h for h in histories if not data_ready(truth, h.item_id)]
    for history in (h for h in in_error if not h.lost):  # the item record is right at once; its data may wait
        found = mirror_problems(truth, probe.mirror(history.item_id, ()), history.item_id, item_only=True)
        problems += [f"history {history.number} (item in error, before reconciling): {p}" for p in found]
    for history in histories:
        if not history.lost and history not in in_error:  # the mirror is right without reconciliation
            found = mirror_problems(truth, probe.mirror(history.item_id, history.known_accounts), history.item_id)
            problems += [f"history {history.number} (no loss): {p}" for p in found]
            before_reconcile += 1
    lossy = [h for h in histories if h.lost or h in in_error]
    for history in lossy:
        probe.backdate(history.item_id)
    if lossy:
        probe.reconcile()
    truth = probe.emulator.truth()
    parked = probe.drain_dlq()
    parked_ids = {m["MessageAttributes"]["eventId"]["StringValue"] for m in parked}
    statuses: Counter[str] = Counter()
    products_compared = 0
    for history in histories:
        view = probe.mirror(history.item_id, history.known_accounts)
        problems += [f"history {history.number}: {p}" for p in mirror_problems(truth, view, history.item_id)]
        products_compared += len(view.products)
        attempts = probe.attempts(set(history.sent))
        for event_id in dict.fromkeys(history.sent):
            answers = attempts.get(event_id, [])
            statuses[status_summary(answers)] += 1
            ok = [a for a in answers if a["statusCode"] and 200 <= a["statusCode"] < 300]
            if any(a["statusCode"] and 400 <= a["statusCode"] < 500 for a in answers):
                problems.append(f"authentic delivery {event_id} refused: {status_summary(answers)}")
            if event_id in history.gave_up:
                if ok:
                    problems.append(f"{event_id} should have been dropped by Pluggy: {status_summary(answers)}")
                continue
            if not ok:
                problems.append(f"{event_id} never accepted: {status_summary(answers)}")
                continue
            log = probe.event_log(event_id)
            status = log and log.get("status")
            if status != "PROCESSED" and not (status == "FAILED" and event_id in parked_ids):
                problems.append(f"{event_id} accepted but ends {status}")
    for message in parked:
        reason = (message.get("MessageAttributes") or {}).get("failureReason", {}).get("StringValue", "")
        if "404" not in reason:
            problems.append(f"parked for an unexpected reason: {reason!r}")
    problems += writes.problems(relisted={key for h in histories for key in h.presence.relisted})
    problems += [f"{e} finished {n} times" for e, n in finishes.over_once().items()]
    differences = sum(1 for p in problems if p.startswith("history "))
    met = throttling.snapshot()
    seconds = time.monotonic() - started
    RESULTS.section("fidelity_stack").update(
        histories=len(histories),
        steps=dict(Counter(o.step_kind() for h in histories for o in h.ops)),
        items_all_products=sum(1 for h in histories if h.products is None),
        items_some_products=sum(1 for h in histories if h.products is not None),
        items_partial_user=sum(1 for h in histories if h.username == PARTIAL_USER),
        partial_steps=sum(len(h.partial) for h in histories),
        partial_with_bills=sum(1 for h in histories for p in h.partial if p != "partial"),
        partial_bills_kept=sum(h.partial.count("bills kept") for h in histories),
        investments_removed=len(set(truth["deletedInvestmentIds"]) - removed_before),
        fates=dict(routes.tally),
        checked_before_reconcile=before_reconcile,
        reconciled=len(lossy),
        ended_in_error=len(in_error),
        receiver_faults_injected=faults.fired(),
        gave_up=sum(len(h.gave_up) for h in histories),
        answers=dict(statuses.most_common()),
        parked_after_delete=len(parked),
        writes_checked=writes.count(),
        product_writes_checked=writes.count(products=True),
        product_records_compared=products_compared,
        differences=differences,
        rate_limits=RATE_LIMITS,
        rate_limit_used_up=met["used_up"],
        answers_429=met["answers"],
        waited_429=met["waited"],
        returned_429=met["returned"],
        seconds=round(seconds, 1),
    )
    failing = sorted({int(m.split()[1].rstrip(":")) for m in problems if m.startswith("history ")})
    context = {
        n: {
            "ops": [o.label() for o in histories[n].ops],
            "products": histories[n].products or "all",
            "user": histories[n].username,
            "events": [
                (e, (probe.event_log(e) or {}).get("status"), status_summary(probe.attempts([e]).get(e, [])))
                for e in dict.fromkeys(histories[n].sent)
            ],
            "lost": histories[n].lost,
        }
        for n in failing[:3]
    }
    assert problems == [], (problems[:30], context)
    if STACK_HISTORIES >= 10 and RATE_LIMITS != "off":
        assert met["answers"] > 0 and met["returned"] > 0, f"the histories never met Pluggy's 429: {met}"
