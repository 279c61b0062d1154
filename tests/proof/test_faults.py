"""Fault injection through the whole local stack: one fault at a time, then at random.

Each scenario connects a fresh item (its webhooks delivered by the emulator, signed, retried 3 times like
Pluggy), arms one fault, runs one sync at Pluggy (new, changed and deleted transactions) and lets the pipeline
drain. Faults are injected where they happen in production:

- AWS calls of the real functions: botocore event hooks on the clients `pluggy_pipeline.aws` creates (the
  receiver's claim PutItem, its SendMessage, its secret; the processor's PutItem, UpdateItem, Query,
  BatchWriteItem and its UnprocessedItems, its dead-letter SendMessage), decided by a seeded random source;
- Pluggy's API: the emulator's faults (500, 429, a delay longer than the client's read timeout, a dropped
  connection) and API keys that expire (or are refused even fresh);
- the processor itself: the Lambda runtime dies after some records of a batch, or a record raises after it
  has written part of its data.

Pluggy's rate limits are on throughout (the emulator's "pluggy" setting: 360 calls per minute on POST /auth and
the account and transaction reads, 20 on PATCH /items/{id}, on Pluggy's own 60-second window; this module's
calls stay under 360 per route in any minute, so the window is not shortened). Some scenarios, and about
half of the random rounds, have another client of the application use up a route's minute first
(`use_up`): the processor meets Pluggy's 429 with RateLimit-Reset 60, beyond its client's 10 s of waiting,
so the message goes back to the queue and is processed when the stack's SQS trigger hands it over again
(Pluggy's minute has then ended: the visibility timeout, 540 s in template.yaml, is longer; Throttling in
conftest.py plays that time for the emulator's windows). The outcome column counts the 429s met.

After the drain (and, when the scenario needs it, reconciliation or an operator's redrive of the DLQ), the
invariants of the promise are checked:

1. every delivery that got a 5XX was retried by Pluggy and accepted (2XX); no authentic delivery got a 4XX;
2. every delivery that got a 2XX is PROCESSED (finished exactly once), or sits in the DLQ with its reason;
3. the mirror equals the emulator's truth field by field (floats as Decimal(str(x)));
4. no record was written again after its deletion, or rewritten with different data without a newer
   Pluggy version (from the writes that reached DynamoDB).

Every scenario adds a row (fault, times injected, outcome) to docs/reliability.md.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from pluggy_pipeline import aws
from pluggy_pipeline.processor import Processor, QueueMessage, get_processor
from pluggy_pipeline.receiver import get_receiver
from pluggy_pipeline.records import RecordStore

from tests.proof.conftest import (
    FAULT_ROUNDS,
    RATE_LIMITED_ROUTES,
    RATE_LIMITS,
    READ_TIMEOUT,
    RESULTS,
    SEED,
    AwsFaults,
    FinishCounter,
    Op,
    StackProbe,
    Throttling,
    WriteLog,
    accounts_of,
    apply_op,
    fast_pluggy_client,
    item_is,
    mirror_problems,
    random_op,
    status_summary,
)

pytestmark = pytest.mark.slow

ITEM_ROUTE = "GET /items/{id}"
ACCOUNTS_ROUTE = "GET /accounts"
TX_ROUTE = "GET /v2/transactions"
AUTH_ROUTE = "POST /auth"
STEP = Op("sync", add=2, change=1, delete=1)  # item/updated + transactions/created, /updated, /deleted


@dataclass
class Pipeline:
    """The local stack with fault hooks on the functions' own clients, for one test."""

    stack: Any
    probe: StackProbe
    faults: AwsFaults
    writes: WriteLog
    finishes: FinishCounter
    monkeypatch: pytest.MonkeyPatch
    rng: random.Random
    key_ttl: float
    throttling: Throttling
    custom: Counter[str] = field(default_factory=Counter)  # injections counted outside AwsFaults
    notes: list[str] = field(default_factory=list)  # what custom injections did, for the outcome column
    pluggy_armed: int = 0  # emulator faults armed (those not consumed are still listed by the emulator)
    fired_before_clear: int = 0
    handed: Counter[str] = field(default_factory=Counter)  # messages handed to Processor.process, by eventId
    afterwards: list[Callable[[], str]] = field(default_factory=list)  # notes computed once the step drained
    drained: bool = False

    @property
    def emulator(self) -> Any:
        return self.stack.emulator

    def injected(self) -> int:
        faults = requests.get(f"{self.emulator.base_url}/_emulator/faults", timeout=5).json()
        pending = sum(f["remaining"] for f in faults)
        return self.fired_before_clear + self.faults.fired() + sum(self.custom.values()) + self.pluggy_armed - pending

    def end_outage(self) -> None:
        """The cause is fixed (what an operator waits for before redriving the DLQ)."""
        self.fired_before_clear += self.faults.fired()
        self.pluggy_armed -= sum(
            f["remaining"] for f in requests.get(f"{self.emulator.base_url}/_emulator/faults", timeout=5).json()
        )
        self.faults.clear()
        self.emulator.clear_faults()
        self.emulator.api_key_ttl_seconds = self.key_ttl


@pytest.fixture
def pipeline(local_stack: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    probe = StackProbe(local_stack)  # idle: the previous test drained before it ended
    throttling = Throttling(local_stack.emulator)
    fast_pluggy_client(monkeypatch, throttling)
    rng = random.Random(f"{SEED}:{request.node.name}")
    faults = AwsFaults(rng)
    faults.attach(aws.dynamodb(), "receiver.dynamodb")
    faults.attach(aws.sqs(), "receiver.sqs")
    faults.attach(aws.secretsmanager(), "receiver.secrets")
    processor_dynamodb = aws.dynamodb(aws.PROCESSOR_CONFIG)
    writes = WriteLog(probe.records.table_name)
    writes.attach(processor_dynamodb)
    faults.attach(processor_dynamodb, "processor.dynamodb")
    faults.attach(aws.sqs(aws.PROCESSOR_CONFIG), "processor.sqs")
    faults.attach(aws.secretsmanager(aws.PROCESSOR_CONFIG), "processor.secrets")
    emulator = local_stack.emulator
    emulator.clear_faults()
    ttl = emulator.api_key_ttl_seconds
    pipe = Pipeline(local_stack, probe, faults, writes, FinishCounter(monkeypatch), monkeypatch, rng, ttl, throttling)
    process = Processor.process

    def counted(processor: Processor, message: QueueMessage) -> None:
        pipe.handed[message.attributes.get("eventId", "")] += 1
        process(processor, message)

    monkeypatch.setattr(Processor, "process", counted)
    yield pipe
    pipe.end_outage()
    if not pipe.drained:  # the test stopped early: leave an idle pipeline to the next one
        probe.idle()
    probe.drain_dlq()
    throttling.end_used_up()


# --- one scenario ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    answers: Counter[str]
    dropped: list[str]
    redelivered: int  # events the processor started more than once
    parked: int  # parked by the processor itself (permanent failure), with failureReason
    exhausted: int  # parked after 5 failed attempts (failureKind attempts), the event log has the error
    behind: int  # moved with them: never attempted, held behind a failing message of their group
    redriven: int
    reconciled: bool
    notes: list[str]
    problems: list[str]
    throttled: dict[str, int] = field(default_factory=dict)  # Throttling.snapshot()

    def text(self) -> str:
        retried = sum(n for a, n in self.answers.items() if a.split(",")[0].startswith("5"))
        resent = sum(n for a, n in self.answers.items() if a.endswith("200"))
        parts = list(self.notes)
        answers, waited, returned = (self.throttled.get(k, 0) for k in ("answers", "waited", "returned"))
        if answers:
            how = []
            if waited:
                how.append(f"{waited} waited out within the call")
            if returned:
                how.append(f"{_n(returned, 'message')} returned to the queue, processed on a later receive")
            parts.append(f"{_n(answers, 'call')} answered 429 by Pluggy" + (f" ({', '.join(how)})" if how else ""))
        if retried:
            parts.append(f"{_n(retried, 'delivery', 'deliveries')} answered 503, accepted on Pluggy's retry")
        if resent:
            parts.append(f"{_n(resent, 'retry', 'retries')} answered 200 (claim found: sent again, SQS deduplicates)")
        if self.dropped:
            parts.append(f"{_n(len(self.dropped), 'webhook')} lost for good (Pluggy gave up after 4 tries)")
        if self.redelivered:
            parts.append(f"{_n(self.redelivered, 'event')} handed to the processor again by SQS")
        if self.parked:
            parts.append(f"{_n(self.parked, 'message')} parked in the DLQ by the processor with failureReason")
        if self.exhausted:
            parts.append(f"{_n(self.exhausted, 'message')} parked after 5 failed attempts, error in the event log")
        if self.behind:
            parts.append(f"{_n(self.behind, 'message')} moved with them, never attempted (no error of their own)")
        if self.redriven:
            parts.append(f"{_n(self.redriven, 'message')} redriven by the operator once fixed, then processed")
        if self.reconciled:
            parts.append("healed by reconciliation")
        if not parts:
            parts.append("absorbed by the retries inside the call")
        verdict = "mirror == truth, each event processed once" if not self.problems else "VIOLATED"
        return "; ".join(parts) + f" => {verdict}"


def _n(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def check(
    p: Pipeline,
    item_id: str,
    known_accounts: set[str],
    *,
    allow_dropped: bool = False,
    allow_parked: bool = False,
    reconcile: bool = False,
) -> Outcome:
    """Drain; move on like an operator (fix, redrive what SQS parked) or like the schedule (reconcile what
    was lost); then check the invariants."""
    probe = p.probe
    probe.idle()
    problems: list[str] = []
    parked, exhausted, behind = [], [], []
    for message in probe.drain_dlq():
        attributes = message.get("MessageAttributes") or {}
        event_id = attributes.get("eventId", {}).get("StringValue", "")
        log = probe.event_log(event_id) or {}
        kind = attributes.get("failureKind", {}).get("StringValue")
        if kind == "attempts" or (kind is None and log.get("error")):
            # The processor gave up after PROCESSOR_MAX_ATTEMPTS failures (or SQS's redrive backstop moved it);
            # the event log says why.
            exhausted.append(message)
        elif attributes.get("failureReason", {}).get("StringValue"):
            parked.append(message)  # the processor parked it itself: a permanent failure, with its reason
        elif log.get("status") == "RECEIVED":
            behind.append(message)  # a message of the same group failed ahead of it
        else:
            problems.append(f"{event_id} in the DLQ without a reason (event log: {log})")
    redriven = 0
    if exhausted or behind:
        p.end_outage()
        order = sorted(exhausted + behind, key=lambda m: int(m["Attributes"].get("SequenceNumber", 0)))
        redriven = probe.redrive(order)
        probe.idle()
        parked += probe.drain_dlq()
    if parked and not allow_parked:
        problems.append(f"{len(parked)} parked: {[m['MessageAttributes'].get('failureReason') for m in parked]}")
    emitted = probe.emitted(item_id)
    attempts = probe.attempts(e["eventId"] for e in emitted)
    answers: Counter[str] = Counter()
    dropped = []
    for event in emitted:
        event_id = event["eventId"]
        tries = attempts.get(event_id, [])
        answers[status_summary(tries)] += 1
        codes = [a["statusCode"] for a in tries]
        if any(c is not None and 400 <= c < 500 for c in codes):
            problems.append(f"authentic delivery {event_id} ({event['event']}) refused: {codes}")
        if not any(c is not None and 200 <= c < 300 for c in codes):
            dropped.append(event_id)
            if len(codes) != 4:  # Pluggy gives up only after its 3 retries
                problems.append(f"{event_id} dropped after {len(codes)} attempts: {codes}")
    if dropped and not allow_dropped:
        problems.append(f"{len(dropped)} deliveries never accepted: {[attempts.get(d) for d in dropped][:2]}")
    if reconcile and probe.backdate(item_id):
        probe.reconcile()
    parked_ids = {m["MessageAttributes"]["eventId"]["StringValue"] for m in parked}
    redelivered = sum(1 for e in emitted if p.handed[e["eventId"]] > 1)
    for event in emitted:
        if event["eventId"] in dropped:
            continue
        log = probe.event_log(event["eventId"]) or {}
        status = log.get("status")
        if status != "PROCESSED" and not (status == "FAILED" and event["eventId"] in parked_ids):
            problems.append(f"{event['eventId']} ({event['event']}) accepted but ends {status}")
    problems += [f"{e} finished {n} times" for e, n in p.finishes.over_once().items()]
    problems += p.writes.problems()
    truth = p.emulator.truth()
    problems += mirror_problems(truth, probe.mirror(item_id, known_accounts | accounts_of(truth, item_id)), item_id)
    p.drained = True
    return Outcome(
        answers,
        dropped,
        redelivered,
        len(parked),
        len(exhausted),
        len(behind),
        redriven,
        reconcile,
        p.notes,
        problems,
        p.throttling.snapshot(),
    )


def connect(p: Pipeline) -> tuple[str, set[str]]:
    """A fresh item, created and mirrored without faults."""
    item = p.emulator.create_item(client_user_id=f"fault-{uuid.uuid4().hex[:10]}", transactions_per_account=2)
    p.probe.idle()
    return item["id"], accounts_of(p.emulator.truth(), item["id"])


def record_row(name: str, layer: str, p: Pipeline, outcome: Outcome, started: float, kind: str) -> None:
    RESULTS.add_row(
        "faults",
        {
            "fault": name,
            "layer": layer,
            "kind": kind,
            "injected": p.injected(),
            "outcome": outcome.text(),
            "answers": dict(outcome.answers),
            "dropped": len(outcome.dropped),
            "redelivered": outcome.redelivered,
            "parked": outcome.parked,
            "exhausted": outcome.exhausted,
            "behind": outcome.behind,
            "redriven": outcome.redriven,
            "rate_limit_used_up": outcome.throttled.get("used_up", 0),
            "answers_429": outcome.throttled.get("answers", 0),
            "waited_429": outcome.throttled.get("waited", 0),
            "returned_429": outcome.throttled.get("returned", 0),
            "ok": not outcome.problems,
            "seconds": round(time.monotonic() - started, 1),
        },
    )


def run(
    p: Pipeline, name: str, layer: str, arm: Arm, *, step: Op = STEP, kind: str = "scenario", **options: Any
) -> Outcome:
    started = time.monotonic()
    item_id, accounts = connect(p)
    arm(p, item_id)
    apply_op(p.emulator, item_id, step)
    outcome = check(p, item_id, accounts, **options)
    outcome.notes += [note() for note in p.afterwards]
    record_row(name, layer, p, outcome, started, kind)
    assert outcome.problems == [], outcome.problems[:20]
    if kind == "scenario":
        assert p.injected() >= 1, f"{name}: the fault never fired"
        if p.throttling.used_up:
            assert outcome.throttled["returned"] >= 1, f"{name}: Pluggy's 429 never sent a message back to the queue"
    return outcome


# --- fault builders --------------------------------------------------------------------------------------


Arm = Callable[[Pipeline, str], None]  # sets a fault up, given the scenario's item


def aws_fault(target: str, operation: str, kind: str, count: int = 1, **options: Any) -> Arm:
    def arm(p: Pipeline, item_id: str) -> None:
        p.faults.add(f"{target}.{operation}:{kind}", target, operation, kind, count, **options)

    return arm


def receiver_fault(operation: str, kind: str, count: int = 1) -> Arm:
    """The receiver's call fails for this item's deliveries (claims and sends carry the itemId)."""

    def arm(p: Pipeline, item_id: str) -> None:
        target = "receiver.dynamodb" if operation in {"PutItem", "DeleteItem"} else "receiver.sqs"
        p.faults.add(f"receiver {operation}:{kind}", target, operation, kind, count, match=item_is(item_id))

    return arm


def one_event_of(item_id: str) -> Callable[[Any], bool]:
    """Matches the receiver's claims of one event of the item: the first one it sees, then only that one."""
    bound: list[str] = []

    def match(params: Any) -> bool:
        if not item_is(item_id)(params):
            return False
        event_id = params["Item"]["eventId"]["S"]
        if not bound:
            bound.append(event_id)
        return event_id == bound[0]

    return match


def lose_one_event(p: Pipeline, item_id: str) -> None:
    """The receiver fails all 4 deliveries of one event (claim throttled): Pluggy drops it for good."""
    p.faults.add("claim always throttled", "receiver.dynamodb", "PutItem", "throttle", 4, match=one_event_of(item_id))


def pluggy_fault(route: str, kind: str, count: int, **options: Any) -> Arm:
    def arm(p: Pipeline, item_id: str) -> None:
        p.emulator.fault(route, kind, count, **options)
        p.pluggy_armed += count

    return arm


def use_up(route: str) -> Arm:
    """Another client of the application (a concurrent Lambda behind the same NAT IP) used `route`'s minute."""

    def arm(p: Pipeline, item_id: str) -> None:
        if p.throttling.use_up(route):
            p.custom[f"{route} minute used up"] += 1

    return arm


def all_of(*arms: Arm) -> Arm:
    def arm(p: Pipeline, item_id: str) -> None:
        for one in arms:
            one(p, item_id)

    return arm


def expiring_keys(p: Pipeline, item_id: str) -> None:
    """A new container whose API key expires (at Pluggy) one second after it got it, before its next call."""
    get_processor.cache_clear()
    p.emulator.api_key_ttl_seconds = 1.0
    p.emulator.reconnect_item(item_id)  # an item/updated: the new container authenticates for it
    p.probe.idle()
    time.sleep(1.2)
    p.emulator.reset_stats()
    p.custom["API key expired at Pluggy"] += 1
    p.afterwards.append(
        lambda: f"{_n(p.emulator.stats().get(AUTH_ROUTE, 0), 'new API key')} after Pluggy answered 401 (expired)"
    )


def key_ttl(seconds: float) -> Arm:
    """API keys the emulator issues from now on live `seconds` (the processor's cached key is renewed)."""

    def arm(p: Pipeline, item_id: str) -> None:
        p.emulator.api_key_ttl_seconds = seconds
        p.custom[f"api key ttl {seconds}s"] += 1

    return arm


def crash_after_records(p: Pipeline, item_id: str) -> None:
    """The Lambda runtime dies once, in the first batch of several records, after k of its n records."""
    real = p.stack._processor  # the loaded lambda_handler the SQS trigger emulation calls

    def crashing(event: dict[str, Any], context: Any) -> Any:
        records = event["Records"]
        if p.custom["runtime died mid-batch"] or len(records) < 2:
            return real(event, context)
        k = p.rng.randint(1, len(records) - 1)
        p.custom["runtime died mid-batch"] += 1
        p.notes.append(f"runtime died after {k} of the {len(records)} records of a batch, all redelivered")
        real({"Records": records[:k]}, context)
        raise RuntimeError(f"injected: the Lambda runtime died after {k} of {len(records)} records")

    p.monkeypatch.setattr(p.stack, "_processor", crashing)


def raise_after_first_write(p: Pipeline, item_id: str) -> None:
    """A record raises once, right after its first BatchWriteItem landed (part of its data is written)."""
    original = RecordStore.batch_put

    def batch_put(store: RecordStore, records: Any) -> Any:
        stats = original(store, records)
        if stats.written and not p.custom["record raised after a write"]:
            p.custom["record raised after a write"] += 1
            raise RuntimeError("injected: the record failed after part of its data was written")
        return stats

    p.monkeypatch.setattr(RecordStore, "batch_put", batch_put)


def cold_start(arm: Arm) -> Arm:
    """The fault hits a new Lambda container (secrets and API keys are read at a container's first use)."""

    def armed(p: Pipeline, item_id: str) -> None:
        get_receiver.cache_clear()
        get_processor.cache_clear()
        arm(p, item_id)

    return armed


def finish_fails(p: Pipeline, item_id: str) -> None:
    """The processor's last write of an event (PROCESSED) is throttled: all its data is written, not its log."""
    p.faults.add(
        "finish throttled",
        "processor.dynamodb",
        "UpdateItem",
        "throttle",
        1,
        match=lambda params: "processedAt" in str(params.get("UpdateExpression", "")),
    )


def poison_then(arm: Arm) -> Arm:
    """Also sends a transactions/created without link or createdAtFrom: a permanent failure to park."""

    def armed(p: Pipeline, item_id: str) -> None:
        arm(p, item_id)
        account = sorted(accounts_of(p.emulator.truth(), item_id))[0]
        p.emulator.send_event("transactions/created", itemId=item_id, accountId=account, triggeredBy="SYNC")

    return armed


# --- the deterministic catalogue -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    layer: str
    arm: Arm
    options: dict[str, Any] = field(default_factory=dict)
    step: Op = STEP
    rate_limited: bool = False  # needs Pluggy's rate limits (skipped with PROOF_RATE_LIMITS=off)


SCENARIOS = [
    # receiver: Pluggy sees a 503 and retries a minute later (0.6 s here)
    Scenario("receiver claim PutItem throttled once", "receiver", receiver_fault("PutItem", "throttle")),
    Scenario("receiver claim PutItem throttled 3 times (all but the last try)", "receiver",
             receiver_fault("PutItem", "throttle", 3)),
    Scenario("receiver claim PutItem: connection error", "receiver", receiver_fault("PutItem", "connection")),
    Scenario("receiver claim PutItem: written, answer lost", "receiver", receiver_fault("PutItem", "lost-answer")),
    Scenario("receiver SendMessage 500", "receiver", receiver_fault("SendMessage", "sqs-500")),
    Scenario("receiver SendMessage timeout twice", "receiver", receiver_fault("SendMessage", "timeout", 2)),
    Scenario("receiver SendMessage: queued, answer lost", "receiver", receiver_fault("SendMessage", "lost-answer")),
    Scenario("receiver SendMessage and the claim release both fail", "receiver",
             all_of(receiver_fault("SendMessage", "sqs-500"), receiver_fault("DeleteItem", "dynamodb-500"))),
    Scenario("receiver GetSecretValue 500 (cold start)", "receiver",
             cold_start(aws_fault("receiver.secrets", "GetSecretValue", "secrets-500"))),
    Scenario("receiver claim fails on all 4 tries: Pluggy gives up", "receiver", lose_one_event,
             {"allow_dropped": True, "reconcile": True}),
    # processor: Pluggy's API
    Scenario("Pluggy GET /items 500 x3 (within the client's retries)", "processor", pluggy_fault(ITEM_ROUTE, "500", 3)),
    Scenario("Pluggy GET /items 500 x4 (beyond them)", "processor", pluggy_fault(ITEM_ROUTE, "500", 4)),
    Scenario("Pluggy GET /v2/transactions 429 Retry-After 1 s x2", "processor", pluggy_fault(TX_ROUTE, "429", 2)),
    Scenario("Pluggy GET /accounts 429 Retry-After 120 s", "processor",
             pluggy_fault(ACCOUNTS_ROUTE, "429", 1, retry_after_seconds=120)),
    Scenario("Pluggy's minute of GET /v2/transactions used up by another client", "processor", use_up(TX_ROUTE),
             rate_limited=True),
    Scenario("Pluggy's minute of GET /accounts used up by another client", "processor", use_up(ACCOUNTS_ROUTE),
             rate_limited=True),
    Scenario("Pluggy's minute of POST /auth used up by another client (cold start)", "processor",
             cold_start(use_up(AUTH_ROUTE)), rate_limited=True),
    Scenario(f"Pluggy GET /v2/transactions slower than the {READ_TIMEOUT} s read timeout x4", "processor",
             pluggy_fault(TX_ROUTE, "delay", 4, delay_seconds=READ_TIMEOUT + 0.5)),
    Scenario("Pluggy GET /items connection dropped x2", "processor", pluggy_fault(ITEM_ROUTE, "drop", 2)),
    Scenario("Pluggy GET /accounts connection dropped x5", "processor", pluggy_fault(ACCOUNTS_ROUTE, "drop", 5)),
    Scenario("Pluggy POST /auth 500 x4 (cold start)", "processor", cold_start(pluggy_fault(AUTH_ROUTE, "500", 4))),
    Scenario("Pluggy API key expired between two calls", "processor", expiring_keys),
    Scenario("Pluggy refuses every API key (credentials broken)", "processor", cold_start(key_ttl(0.001)),
             step=Op("sync")),
    Scenario("Pluggy down for longer than 5 attempts", "processor", pluggy_fault(ITEM_ROUTE, "500", 60)),
    # processor: its AWS calls
    Scenario("processor PutItem throttled", "processor", aws_fault("processor.dynamodb", "PutItem", "throttle")),
    Scenario("processor UpdateItem (event log start) throttled", "processor",
             aws_fault("processor.dynamodb", "UpdateItem", "throttle")),
    Scenario("processor UpdateItem (event log PROCESSED) throttled", "processor", finish_fails),
    Scenario("processor Query throttled", "processor", aws_fault("processor.dynamodb", "Query", "throttle")),
    Scenario("processor BatchWriteItem UnprocessedItems x3", "processor",
             aws_fault("processor.dynamodb", "BatchWriteItem", "unprocessed", 3)),
    Scenario("processor BatchWriteItem UnprocessedItems x9 (beyond its 8 retries)", "processor",
             aws_fault("processor.dynamodb", "BatchWriteItem", "unprocessed", 9)),
    Scenario("processor BatchWriteItem throttled", "processor",
             aws_fault("processor.dynamodb", "BatchWriteItem", "throttle")),
    Scenario("processor GetSecretValue (Pluggy credentials) 500 (cold start)", "processor",
             cold_start(aws_fault("processor.secrets", "GetSecretValue", "secrets-500"))),
    Scenario("processor DLQ SendMessage fails while parking a permanent failure", "processor",
             poison_then(aws_fault("processor.sqs", "SendMessage", "sqs-500")), {"allow_parked": True}),
    # processor: the function itself
    Scenario("Lambda runtime dies mid-batch", "processor", crash_after_records),
    Scenario("record raises after part of its data was written", "processor", raise_after_first_write),
]  # fmt: skip


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_single_fault(scenario: Scenario, pipeline: Pipeline) -> None:
    if scenario.rate_limited and RATE_LIMITS == "off":
        pytest.skip("PROOF_RATE_LIMITS=off")
    outcome = run(pipeline, scenario.name, scenario.layer, scenario.arm, step=scenario.step, **scenario.options)
    if scenario.options.get("allow_parked"):
        assert outcome.parked == 1  # the poison message, parked once although its first park failed
    if scenario.options.get("allow_dropped"):
        assert len(outcome.dropped) == 1  # and reconciliation healed what it carried


# --- at random -------------------------------------------------------------------------------------------


def random_fault(rng: random.Random) -> tuple[str, str, Arm]:
    """(description, layer, arm) of one fault drawn from the whole catalogue, with a drawn count."""
    family = rng.randrange(6)
    count = rng.randint(1, 3)
    if family == 0:
        kind = rng.choice(("throttle", "connection", "lost-answer"))
        return f"receiver PutItem {kind} x{count}", "receiver", receiver_fault("PutItem", kind, count)
    if family == 1:
        kind = rng.choice(("sqs-500", "timeout", "lost-answer"))
        return f"receiver SendMessage {kind} x{count}", "receiver", receiver_fault("SendMessage", kind, count)
    if family == 2:
        route, kind, count = (
            rng.choice((ITEM_ROUTE, ACCOUNTS_ROUTE, TX_ROUTE)),
            rng.choice(("500", "429", "drop")),
            rng.randint(1, 6),
        )
        return f"Pluggy {route} {kind} x{count}", "processor", pluggy_fault(route, kind, count)
    if family == 3:
        operation = rng.choice(("PutItem", "UpdateItem", "Query", "GetItem"))
        kind = rng.choice(("throttle", "dynamodb-500", "timeout"))
        arm = aws_fault("processor.dynamodb", operation, kind, count, probability=0.5)
        return f"processor {operation} {kind} x{count} (each call with p=0.5)", "processor", arm
    if family == 4:
        kind, count = rng.choice(("unprocessed", "throttle")), rng.randint(1, 10)
        return (
            f"processor BatchWriteItem {kind} x{count}",
            "processor",
            aws_fault("processor.dynamodb", "BatchWriteItem", kind, count),
        )
    if rng.random() < 0.5:
        return "Lambda runtime dies mid-batch", "processor", crash_after_records
    return "record raises after part of its data was written", "processor", raise_after_first_write


@pytest.mark.parametrize("round_number", range(FAULT_ROUNDS))
def test_random_fault(round_number: int, pipeline: Pipeline) -> None:
    """PROOF_FAULT_ROUNDS rounds: a fault drawn at random (seeded), during a sync drawn at random."""
    rng = random.Random(f"{SEED}:round:{round_number}")
    description, layer, arm = random_fault(rng)
    step = random_op(rng, allow_delete=False)
    if step.kind != "sync":
        step = STEP
    name = f"round {round_number}: {description} during {step.label()}"
    limits = random.Random(f"{SEED}:round:{round_number}:rate-limits")  # apart from `rng`: the rounds stay the same
    if RATE_LIMITS != "off" and limits.random() < 0.5:
        route = limits.choice(RATE_LIMITED_ROUTES)
        arm = all_of(arm, use_up(route))
        name += f", {route}'s minute used up by another client"
    run(pipeline, name, layer, arm, step=step, kind="random")
