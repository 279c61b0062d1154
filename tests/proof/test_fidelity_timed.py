"""Mirror fidelity over Pluggy's time: late and out-of-order rows, MFA, partial success and rate limits.

test_fidelity.py runs its histories on the instant emulator, where a sync happens inside one call and every
row of it is visible at once. Here the emulator is timed (pluggy-emulator/pluggy_emulator/timeline.py):
a sync runs in the background through Pluggy's execution steps, each account's rows appear during it with
`createdAt` values out of order across pages and accounts, and a share of them (`late_fraction`) appears only
after UPDATED, with a `createdAt` older than rows already visible and a transactions/created of its own.
Pluggy's per-endpoint rate limits are on (timed mode), the API is paged (`PAGE_SIZE`), and the processor's
clock is the emulator's, so its overlap window (TX_OVERLAP_MINUTES) is judged in Pluggy's time.

A history (seeded, `plan_of`): an item is created on the sandbox connector, the 1-step MFA connector (token
in the credentials) or the 2-step one (the MFA answered with `POST /items/{id}/mfa` when the item waits for
it), as `user-ok` or the PARTIAL_SUCCESS user `user-ok-account-error`; then 2-5 steps: syncs that add,
change, delete and restate rows or add an account, sometimes an item error, or an update the user asks for
with `PATCH /items/{id}` (on the MFA connectors it needs the token again). Between steps the emulator's clock
either jumps past the overlap window (after every row has appeared), or the test waits until everything
has appeared, or the next sync starts at once while the last one's late rows are still to come.

Every webhook goes to the real Processor (in-process moto, tables from template.yaml) as Pluggy emits it, in
emission order but duplicated, held back and delivered after later ones, or, for the transactions/created of
late rows only, lost for good. Sometimes the minute's budget of a rate-limited route is used up just before
a delivery (another client of the same application), so the processor meets Pluggy's 429 and waits what its
headers say. Pluggy's time stands still while the processor works (`PluggyClock.stopped`; it runs during
its 429 waits), so a history's timeline depends on its seed, not on this machine's load, and runs repeat.
At the end every held webhook is delivered, every row has appeared, the clock jumps past the window, and
one more sync with nothing new sends item/updated: the incremental read it triggers (not a full sync; no
reconciliation runs here) must catch the late rows whose webhooks were lost. Then the mirror must equal
Pluggy's truth field by field, the write log show no resurrection and no rewrite without a newer version,
and every delivered event be PROCESSED and finished once.

Each webhook is also delivered, in the same order, to a second Processor with TX_OVERLAP_MINUTES=0 (its own
tables): the same history without the overlap. Its Pluggy calls are the baseline for the overlap's cost,
and its mirror shows what the overlap buys (it misses the rows whose webhook was lost).
`test_without_the_overlap_a_lost_late_row_stays_missing` is the small deterministic version of that.

Sizes: PROOF_TIMED_HISTORIES (default 200) over PROOF_WORKERS processes; plans come from PROOF_SEED. A failing
history names its plan's seed; `with quiet_timed_bench(0) as bench: run_history(bench, plan_of(seed))` runs
it again alone.
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
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from moto import mock_aws
from moto.dynamodb.responses import DynamoResult
from pluggy_emulator import PluggyEmulator, SyncTiming
from pluggy_emulator.state import parse_iso_ms
from pluggy_pipeline.errors import TransientError
from pluggy_pipeline.event_queue import EventQueue
from pluggy_pipeline.observability import logger, metrics
from pluggy_pipeline.pluggy_client import PluggyClient
from pluggy_pipeline.processor import Processor, QueueMessage
from pluggy_pipeline.receiver import parse_delivery
from pluggy_pipeline.records import RecordStore
from pluggy_pipeline_local.template import create_resources, load_template
from requests.adapters import HTTPAdapter

from tests.proof.conftest import (
    RESULTS,
    SEED,
    TIMED_HISTORIES,
    WORKERS,
    Resettable,
    WriteLog,
    accounts_of,
    mirror_problems,
    read_mirror,
)
from tests.proof.test_fidelity import _FAST_OPERATIONS, CountingLog

HISTORIES = TIMED_HISTORIES
CLIENT_ID = "proof-timed-client"
CLIENT_SECRET = "proof-timed-secret"  # the emulator's credentials for this bench only
TEMPLATE = load_template()
OVERLAP_MINUTES = 30  # the processor's default (template TxOverlapMinutes)
PAST_THE_WINDOW = (OVERLAP_MINUTES + 1) * 60.0  # emulator seconds
TIME_SCALE = 0.001  # 1000 emulator seconds per wall second: a 75 s sync takes 75 ms
PAGE_SIZE = 5  # small, so reads (and the overlap's re-reads) span pages
# A sandbox sync shortened to 75 s (Pluggy's take 2-4 min): the steps keep their order and proportions. A
# quarter of a sync's new rows appear 10-60 s after UPDATED (at least one whenever it creates two or more).
TIMING = SyncTiming(
    creating=1,
    created=2,
    login=6,
    login_mfa=6,
    accounts=6,
    transactions=30,
    payment_data=4,
    credit_cards=18,
    merging=3,
    mfa_timeout=600,
    late_fraction=0.25,
    late_delay=(10, 60),
)
ROTATE_EVERY = 8  # histories per emulator and set of tables (both only grow; see test_fidelity.Bench)
RATE_LIMITED_ROUTES = ("GET /v2/transactions", "GET /accounts")
MFA_TOKEN = "123456"  # Pluggy's sandbox MFA token
PARTIAL_USER = "user-ok-account-error"  # PARTIAL_SUCCESS: the credit card product fails (pluggy-api.md §9)
WAIT_SECONDS = 30.0  # wall seconds any one wait may take before the history fails


# --- the emulator's clock --------------------------------------------------------------------------------


class PluggyClock:
    """The timed emulator's clock (Pluggy's time) for the Processor, stopped while the Processor works.

    The emulator's clock is a scaled wall clock that everything in the emulator reads (timestamps, the
    scheduler, the rate-limit windows); its pause, resume and advance calls do two things here. `advance`
    jumps forward; it is only called when no work is pending, so no scheduled step is skipped over.
    `stopped` holds Pluggy's time still while a webhook is processed: the processor's own work takes no
    Pluggy time, so what a history tests (late rows appearing before or after a read, the window completing
    or not) depends on the history, not on how loaded this machine is; inside it, `running` lets time pass
    again (the processor waiting out a 429).
    """

    def __init__(self, emulator: PluggyEmulator) -> None:
        self.emulator = emulator

    def now(self) -> float:
        """Seconds since the epoch in Pluggy's time (the Processor's clock)."""
        return parse_iso_ms(self.emulator.now()) / 1000

    def advance(self, seconds: float) -> None:
        assert self.emulator.clock_info()["pendingWork"] == 0, "jumping over scheduled work"
        self.emulator.advance_clock(seconds)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        stopped_here = self.emulator.pause_clock()
        try:
            yield
        finally:
            if stopped_here:
                self.emulator.resume_clock()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        resumed_here = self.emulator.resume_clock()
        try:
            yield
        finally:
            if resumed_here:
                self.emulator.pause_clock()


def use_up_rate_limit(emulator: PluggyEmulator, route: str) -> None:
    """Another client of this Pluggy application (a concurrent Lambda behind the same IP) used the route's
    whole budget for the current minute: the next call gets Pluggy's 429 with RateLimit-Reset."""
    limits = emulator.rate_limits
    assert isinstance(limits, dict) and route in limits, "Pluggy's per-route limits are on in timed mode"
    emulator.use_up_rate_limit(route)


# --- one processor and its tables --------------------------------------------------------------------------


class TallyLog(CountingLog):
    """CountingLog that also adds up the counts the processor records per event (overlapLate)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts: Counter[str] = Counter()

    def finish(self, event_id: str, counts: Mapping[str, int], *args: Any, **kwargs: Any) -> None:
        super().finish(event_id, counts, *args, **kwargs)
        self.counts.update(counts)


class Side:
    """A Processor on its own tables and its own Pluggy client, fed the bench's webhooks."""

    def __init__(self, bench: TimedBench, emulator: PluggyEmulator, *, overlap_minutes: int) -> None:
        self.clock = bench.clock
        resources = create_resources(TEMPLATE, dynamodb=bench.dynamodb, sqs=bench.sqs)
        self.records_table = resources.tables["RecordsTable"]
        self.events_table = resources.tables["EventsTable"]
        self.store = RecordStore(lambda: bench.dynamodb, self.records_table, sleep=lambda _s: None)
        self.log = TallyLog(lambda: bench.dynamodb, self.events_table)
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=4, max_retries=0)
        session.mount("http://", adapter)
        session.hooks["response"].append(self._answered)
        self.limited = 0  # 429 answers this processor got
        self.calls: Counter[str] = Counter()  # Pluggy calls answered, by route (a 429 and its retry count once)
        self.client = PluggyClient(
            emulator.base_url,
            lambda: (CLIENT_ID, CLIENT_SECRET),
            session=session,
            timeout=(2.0, 5.0),
            sleep=self._sleep,
        )
        queue = EventQueue(lambda: bench.sqs, resources.queue_urls["EventQueue"])
        dead_letters = EventQueue(lambda: bench.sqs, resources.queue_urls["EventDeadLetterQueue"])
        self.processor = Processor(
            self.client,
            self.store,
            self.log,
            queue,
            dead_letters,
            tx_overlap_minutes=overlap_minutes,
            clock=bench.clock.now,
        )
        self.messages = 0
        self.redelivered = 0

    def _sleep(self, seconds: float) -> None:
        """The client's waits (a 429's RateLimit-Reset) are real, and Pluggy's time runs meanwhile."""
        with self.clock.running():
            time.sleep(min(seconds, 0.5))

    def _answered(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.status_code == 429:
            self.limited += 1
            return
        path = urlsplit(response.request.path_url).path
        route = "/items/{id}" if path.startswith("/items/") else path
        self.calls[f"{response.request.method} {route}"] += 1

    def deliver(self, payload: Mapping[str, Any]) -> None:
        """What the receiver queues for this webhook, processed as the SQS trigger would, and again (as SQS
        redelivers after the visibility timeout) while it fails for a transient reason."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        delivery = parse_delivery(body.encode())
        attributes = {
            "eventId": delivery.event_id,
            "eventType": delivery.event_type,
            "groupId": delivery.group_id,
            "origin": "webhook",
        }
        for attempt in range(5):
            self.messages += 1
            try:
                with self.clock.stopped():
                    self.processor.process(QueueMessage(f"m-{self.messages}", body, attributes))
                return
            except TransientError:
                if attempt == 4:
                    raise
                self.redelivered += 1
                time.sleep(0.05)

    def close(self) -> None:
        self.client.close()


# --- the bench ---------------------------------------------------------------------------------------------


class TimedBench:
    """A timed emulator with Pluggy's rate limits, a Processor with the overlap and one without it.

    Replaced every ROTATE_EVERY histories, as test_fidelity.Bench is (moto scans whole tables, and the
    emulator copies all its events on every events() call).
    """

    def __init__(self, seed: int, timing: SyncTiming = TIMING) -> None:
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        self.dynamodb = session.client("dynamodb")
        self.sqs = session.client("sqs")
        self.seed = seed
        self.timing = timing
        self.rotations = 0
        self.emulator: PluggyEmulator | None = None
        self.writes = WriteLog("")
        self.writes.attach(self.dynamodb)
        self._fresh()

    def _fresh(self) -> None:
        if self.emulator is not None:
            self.close()
        self.rotations += 1
        emulator = PluggyEmulator(
            CLIENT_ID,
            CLIENT_SECRET,
            seed=self.seed * 131 + self.rotations,
            sync_timing=self.timing,
            time_scale=TIME_SCALE,
            page_size=PAGE_SIZE,
        )  # rate limits: "auto", Pluggy's per-route figures in timed mode
        emulator.start()
        self.emulator = emulator
        self.clock = PluggyClock(emulator)
        self.main = Side(self, emulator, overlap_minutes=OVERLAP_MINUTES)
        self.baseline = Side(self, emulator, overlap_minutes=0)
        self.writes.table = self.main.records_table
        self.api = requests.Session()  # the user's app: answers MFA challenges through Pluggy's API
        answer = self.api.post(
            f"{emulator.base_url}/auth", json={"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}, timeout=5
        )
        answer.raise_for_status()
        self.api.headers["X-API-KEY"] = answer.json()["apiKey"]
        self.seen = 0
        self.since_rotation = 0

    def next_history(self) -> PluggyEmulator:
        if self.since_rotation >= ROTATE_EVERY:
            self._fresh()
        self.since_rotation += 1
        self.writes.clear()
        for side in (self.main, self.baseline):
            side.log.finished.clear()
        assert self.emulator is not None
        return self.emulator

    def take(self) -> list[dict[str, Any]]:
        """The webhooks Pluggy emitted since the last take, in emission order."""
        assert self.emulator is not None
        emitted = self.emulator.events()
        new, self.seen = emitted[self.seen :], len(emitted)
        return [e["payload"] for e in new]

    def answer_mfa(self, item_id: str) -> None:
        assert self.emulator is not None
        url = f"{self.emulator.base_url}/items/{item_id}/mfa"
        resp = self.api.post(url, json={"token": MFA_TOKEN}, timeout=5)
        assert resp.status_code == 200, resp.text

    def close(self) -> None:
        assert self.emulator is not None
        self.emulator.stop()
        self.main.close()
        self.baseline.close()
        self.api.close()


@contextlib.contextmanager
def quiet_timed_bench(seed: int, timing: SyncTiming = TIMING) -> Iterator[TimedBench]:
    """A TimedBench inside in-process moto, logs off, DynamoDB answers sped up (see test_fidelity.quiet_bench)."""
    original = DynamoResult.execute_result

    def execute_result(result: DynamoResult, context: Any) -> Any:
        if context.operation_model.name in _FAST_OPERATIONS and isinstance(result.result, dict):
            return 200, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(result.result)
        return original(result, context)

    level = logger.log_level
    logger.setLevel("CRITICAL")  # one JSON line per event, and a warning per 429, would dominate the run
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }.items():
            patch.setenv(key, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        patch.delenv("AWS_PROFILE", raising=False)
        patch.setattr(DynamoResult, "execute_result", execute_result)
        bench = TimedBench(seed, timing)
        try:
            yield bench
        finally:
            bench.close()
            metrics.clear_metrics()
            logger.setLevel(level)


# --- histories ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What happens at Pluggy next, and what happens to the clock before it."""

    gap: str  # jump (past the window, once every row appeared) | settle (every row appeared) | rush (at once)
    kind: str  # sync (with changes, started by Pluggy) | update (PATCH /items/{id} by the user) | fail
    add: int = 0
    change: int = 0
    delete: int = 0
    restate: int = 0
    new_account: bool = False

    def label(self) -> str:
        if self.kind != "sync":
            return f"{self.gap}:{self.kind}"
        counts = (("+", self.add), ("~", self.change), ("-", self.delete), ("r", self.restate))
        parts = [f"{sign}{n}" for sign, n in counts if n] + (["new-account"] if self.new_account else [])
        return f"{self.gap}:sync(" + ",".join(parts) + ")"


@dataclass(frozen=True)
class Plan:
    seed: int
    connector: int  # 0 sandbox, 1 MFA in the credentials, 2 MFA answered through the API
    username: str
    per_account: int
    steps: tuple[Step, ...]
    lose_late: float  # chance that a late rows' transactions/created is lost for good

    def label(self) -> str:
        steps = " ".join(s.label() for s in self.steps)
        return f"seed {self.seed}: connector {self.connector}, {self.username}, {self.per_account}/account; {steps}"


GAPS = ("jump", "jump", "settle", "rush", "rush")
# What happens to a webhook: delivered at once, twice, held back and delivered after later ones, or at once
# right after another client used up the minute's budget of a rate-limited route.
FATES = ("now",) * 8 + ("dup", "dup", "hold", "hold", "hold", "limited")


def plan_of(seed: int) -> Plan:
    rng = random.Random(seed)
    steps: list[Step] = []
    for _ in range(rng.randint(2, 5)):
        gap = rng.choice(GAPS)
        roll = rng.random()
        if roll < 0.2:
            steps.append(Step(gap, "fail" if roll < 0.1 else "update"))
            continue
        steps.append(
            Step(
                gap,
                "sync",
                add=rng.choice((0, 1, 2, 3, 4)),
                change=rng.choice((0, 0, 1, 2)),
                delete=rng.choice((0, 0, 1, 2)),
                restate=rng.choice((0, 0, 0, 1)),
                new_account=rng.random() < 0.12,
            )
        )
    return Plan(
        seed=seed,
        connector=rng.choice((0, 0, 1, 2)),
        username=PARTIAL_USER if rng.random() < 0.25 else "user-ok",
        per_account=rng.randint(2, 6),
        steps=tuple(steps),
        lose_late=rng.choice((0.5, 0.8, 1.0)),
    )


@dataclass
class Tally(Resettable):
    """What the timed histories covered and measured (RESULTS section fidelity_timed)."""

    histories: int = 0
    connectors: dict[str, int] = field(default_factory=dict)
    partial_success: int = 0
    mfa_answered: int = 0
    steps: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, int] = field(default_factory=dict)
    events: int = 0
    deliveries: int = 0
    duplicates: int = 0
    held: int = 0
    rate_limit_used_up: int = 0
    answers_429: int = 0
    redelivered: int = 0
    late_batches: int = 0
    late_rows: int = 0
    lost_late_webhooks: int = 0
    lost_late_rows: int = 0
    overlap_caught: int = 0  # overlapLate: rows only the overlap's re-read wrote
    overlap_rows_read: int = 0
    records_compared: int = 0
    differences: int = 0
    pluggy_calls: int = 0
    pluggy_calls_baseline: int = 0
    transactions_calls: int = 0
    transactions_calls_baseline: int = 0
    baseline_histories_wrong: int = 0
    baseline_missing_rows: int = 0
    worst_history_calls: int = 0  # the largest extra of one history
    histories_with_extra_calls: int = 0
    item_syncs: int = 0  # syncs at Pluggy: the first, the steps', the last one
    full_syncs: int = 0  # histories whose item the processor synced whole (an unknown item's webhook)
    emulator_seconds: float = 0.0
    seconds: float = 0.0


TALLY = Tally()


def _bump(counter: dict[str, int], key: str, amount: int = 1) -> None:
    counter[key] = counter.get(key, 0) + amount


class History:
    """One plan run on the bench: Pluggy's side through the emulator, webhooks to both processors."""

    def __init__(self, bench: TimedBench, plan: Plan) -> None:
        self.bench = bench
        self.plan = plan
        self.emulator = bench.next_history()
        self.rng = random.Random(plan.seed * 7 + 1)
        self.item_id = ""
        self.held: list[dict[str, Any]] = []
        self.delivered: Counter[str] = Counter()
        self.lost: list[dict[str, Any]] = []
        self.lost_rows: set[str] = set()
        self.late: dict[str, list[set[str]]] = {}  # accountId -> late row batches still to be recognised
        self.runs_noted: set[str] = set()
        self.answered_mfa = False
        self.events = 0
        self.full_synced = False

    # -- Pluggy's side ------------------------------------------------------------------------------

    def run(self) -> None:
        plan = self.plan
        user = f"timed-{plan.seed}-{uuid.uuid4().hex[:6]}"
        options: dict[str, Any] = {"transactions_per_account": plan.per_account, "connector_id": plan.connector}
        if plan.connector == 1:
            options["mfa_token"] = MFA_TOKEN
        item = self.emulator.create_item(user, plan.username, **options)
        self.item_id = item["id"]
        self.until_run_ends()
        for step in plan.steps:
            _bump(TALLY.gaps, step.gap)
            if step.gap in ("jump", "settle"):
                self.until_settled()
            if step.gap == "jump":
                self.bench.clock.advance(PAST_THE_WINDOW)
            if step.kind == "fail":
                self.emulator.fail_item(self.item_id, "SITE_NOT_AVAILABLE")
                self.pump(lambda: True)
                _bump(TALLY.steps, "fail")
                continue
            if step.kind == "update":
                self.update()
            else:
                self.sync(step)
            self.until_run_ends()
            # Some held webhooks arrive now, after later ones.
            released = [h for h in self.held if self.rng.random() < 0.4]
            self.held = [h for h in self.held if all(h is not r for r in released)]
            self.release(released)
        self.until_settled()
        assert self.emulator.settle(5)  # nothing left at Pluggy: every row of every sync has appeared
        self.release(self.held)  # and every held webhook arrives, in any order
        self.held = []
        # The window is complete: one more sync, nothing new; its item/updated (delivered as it comes) runs
        # the incremental read that has to find the late rows whose webhooks were lost.
        self.bench.clock.advance(PAST_THE_WINDOW)
        self.emulator.sync_item(self.item_id)
        self.until_run_ends(final=True)
        self.until_settled(final=True)

    def sync(self, step: Step) -> None:
        truth = self.emulator.truth()
        accounts = {a: acc for a, acc in truth["accounts"].items() if acc["itemId"] == self.item_id}
        rows = sum(len(truth["transactions"][a]) for a in accounts)
        cards = sum(len(truth["transactions"][a]) for a, acc in accounts.items() if acc["type"] == "CREDIT")
        restate = min(step.restate, cards)
        delete = min(step.delete, rows - restate)
        change = min(step.change, rows - restate - delete)
        add = step.add if accounts else 0
        self.emulator.sync_item(
            self.item_id,
            add=add,
            change=change,
            delete=delete,
            restate_credit_card=restate,
            new_account=step.new_account,
        )
        _bump(TALLY.steps, "sync")

    def update(self) -> None:
        """The user asks for an update through Pluggy's API (the MFA connectors ask for the token again:
        connector 1 in the request, connector 2 once the item waits for it)."""
        parameters = {"token": MFA_TOKEN} if self.plan.connector == 1 else {}
        url = f"{self.emulator.base_url}/items/{self.item_id}"
        resp = self.bench.api.patch(url, json={"parameters": parameters}, timeout=5)
        assert resp.status_code == 200, resp.text
        _bump(TALLY.steps, "update")

    def run_state(self) -> dict[str, Any]:
        summary = self.emulator.last_sync(self.item_id)
        assert summary is not None
        return summary

    def until_run_ends(self, *, final: bool = False) -> None:
        self.answered_mfa = False

        def ended() -> bool:
            summary = self.run_state()
            if summary["outcome"] is not None:
                self.note_run(summary)
                return True
            last = summary["steps"][-1] if summary["steps"] else {}
            if last.get("executionStatus") == "WAITING_USER_INPUT" and not self.answered_mfa:
                self.bench.answer_mfa(self.item_id)  # as the user does, in the app, through Pluggy's API
                self.answered_mfa = True
                TALLY.mfa_answered += 1
            return False

        self.pump(ended, final=final)

    def until_settled(self, *, final: bool = False) -> None:
        self.pump(lambda: self.emulator.clock_info()["pendingWork"] == 0, final=final)

    def note_run(self, summary: Mapping[str, Any]) -> None:
        """A finished run's late rows, to recognise their transactions/created when it comes."""
        key = summary["steps"][0]["at"] if summary["steps"] else ""
        if key in self.runs_noted:
            return
        self.runs_noted.add(key)
        for account_id, ids in (summary.get("late") or {}).items():
            self.late.setdefault(account_id, []).append(set(ids))
            TALLY.late_batches += 1
            TALLY.late_rows += len(ids)

    # -- webhooks -----------------------------------------------------------------------------------

    def pump(self, done: Callable[[], bool], *, final: bool = False) -> None:
        """Deliver webhooks as Pluggy emits them until `done()` holds with nothing left to deliver."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            new = self.bench.take()
            if not new and done():
                new = self.bench.take()  # emitted while `done` looked
                if not new:
                    return
            for payload in new:
                if final:
                    self.deliver(payload)
                else:
                    self.route(payload)
            if not new:
                time.sleep(0.003)
            assert time.monotonic() < deadline, f"history {self.plan.label()}: Pluggy never got there"

    def late_batch(self, payload: Mapping[str, Any]) -> set[str] | None:
        """The late rows this transactions/created announces, if it is a late batch's webhook."""
        batches = self.late.get(str(payload.get("accountId")), [])
        if not batches:
            return None
        rows = self.emulator.truth()["transactions"].get(str(payload["accountId"]), {})
        for batch in batches:
            if not batch <= set(rows):
                continue  # not visible yet: its webhook is still to come
            if payload.get("transactionsCreatedAtFrom") == min(rows[t]["createdAt"] for t in batch):
                batches.remove(batch)
                return batch
        return None

    def route(self, payload: dict[str, Any]) -> None:
        self.events += 1
        if payload["event"] == "transactions/created":
            summary = self.run_state()
            if summary["outcome"] is not None:
                self.note_run(summary)
            batch = self.late_batch(payload)
            if batch is not None and self.rng.random() < self.plan.lose_late:
                self.lost.append(payload)
                self.lost_rows |= batch
                return
        fate = self.rng.choice(FATES)
        if fate == "hold":
            self.held.append(payload)
            TALLY.held += 1
            return
        if fate == "limited":
            use_up_rate_limit(self.emulator, self.rng.choice(RATE_LIMITED_ROUTES))
            TALLY.rate_limit_used_up += 1
        self.deliver(payload)
        if fate == "dup":
            TALLY.duplicates += 1
            if self.rng.random() < 0.5:
                self.deliver(payload)  # two copies in flight
            else:
                self.held.append(payload)  # the copy comes back later

    def release(self, payloads: list[dict[str, Any]]) -> None:
        self.rng.shuffle(payloads)
        for payload in payloads:
            self.deliver(payload)

    def deliver(self, payload: Mapping[str, Any]) -> None:
        self.delivered[str(payload["eventId"])] += 1
        for side in (self.bench.main, self.bench.baseline):
            side.deliver(payload)

    # -- the verdict --------------------------------------------------------------------------------

    def check(self) -> tuple[list[str], list[str], int]:
        """(differences of the processor with the overlap, of the one without it, records compared)."""
        bench, item_id = self.bench, self.item_id
        truth = self.emulator.truth()
        known = accounts_of(truth, item_id)
        view = read_mirror(bench.main.store, item_id, known, by_date=False)
        problems = mirror_problems(truth, view, item_id)
        problems += bench.writes.problems()
        problems += [f"event {e} finished {n} times" for e, n in bench.main.log.finished.items() if n > 1]
        statuses = event_statuses(bench.dynamodb, bench.main.events_table, self.delivered)
        problems += [f"event {e} ends {statuses.get(e)}" for e in self.delivered if statuses.get(e) != "PROCESSED"]
        baseline = mirror_problems(truth, read_mirror(bench.baseline.store, item_id, known, by_date=False), item_id)
        compared = 1 + len(view.accounts) + sum(len(rows) for rows in view.transactions.values())
        # A transactions webhook of an item not stored yet (all its item/* webhooks held) syncs it whole.
        self.full_synced = bool(view.item and view.item.get("lastFullSyncAt"))
        return problems, baseline, compared


def event_statuses(dynamodb: Any, table: str, event_ids: Iterator[str] | Mapping[str, Any]) -> dict[str, str]:
    """EventsTable status of each event (BatchGetItem, 100 keys a call)."""
    ids = list(dict.fromkeys(event_ids))
    found: dict[str, str] = {}
    for start in range(0, len(ids), 100):
        keys = [{"eventId": {"S": i}} for i in ids[start : start + 100]]
        request: dict[str, Any] = {
            table: {
                "Keys": keys,
                "ConsistentRead": True,
                "ProjectionExpression": "eventId, #s",
                "ExpressionAttributeNames": {"#s": "status"},
            }
        }
        while request:
            answer = dynamodb.batch_get_item(RequestItems=request)
            for row in answer["Responses"].get(table, []):
                found[row["eventId"]["S"]] = row["status"]["S"]
            request = answer.get("UnprocessedKeys") or {}
    return found


def missing_rows(problems: list[str]) -> set[str]:
    """Transaction ids a mirror_problems list reports missing ('transaction <account>/<id> missing')."""
    return {
        p.split(" ", 2)[1].split("/", 1)[1] for p in problems if p.startswith("transaction ") and p.endswith(" missing")
    }


def run_history(bench: TimedBench, plan: Plan) -> list[str]:
    """One history; returns its failures (an empty list when the mirror equals Pluggy's truth)."""
    started = time.monotonic()
    history = History(bench, plan)  # first: it may replace the bench's emulator, processors and clock
    main, baseline, emulator_started = bench.main, bench.baseline, bench.clock.now()
    calls_before = (Counter(main.calls), Counter(baseline.calls))
    limited_before = main.limited + baseline.limited
    redelivered_before = main.redelivered + baseline.redelivered
    caught_before, read_before = main.log.counts["overlapLate"], main.processor.overlap_rows_read
    try:
        history.run()
        problems, baseline_problems, compared = history.check()
    except Exception:
        return [f"history {plan.label()} (item {history.item_id}) raised:\n{traceback.format_exc()}"]
    extra = Counter(main.calls)
    extra.subtract(calls_before[0])
    plain = Counter(baseline.calls)
    plain.subtract(calls_before[1])
    _bump(TALLY.connectors, str(plan.connector))
    TALLY.partial_success += plan.username == PARTIAL_USER
    TALLY.histories += 1
    TALLY.events += history.events
    TALLY.deliveries += sum(history.delivered.values())
    TALLY.answers_429 += main.limited + baseline.limited - limited_before
    TALLY.redelivered += main.redelivered + baseline.redelivered - redelivered_before
    TALLY.lost_late_webhooks += len(history.lost)
    TALLY.lost_late_rows += len(history.lost_rows)
    TALLY.overlap_caught += main.log.counts["overlapLate"] - caught_before
    TALLY.overlap_rows_read += main.processor.overlap_rows_read - read_before
    TALLY.records_compared += compared
    TALLY.differences += len(problems)
    TALLY.pluggy_calls += extra.total()
    TALLY.pluggy_calls_baseline += plain.total()
    TALLY.transactions_calls += extra["GET /v2/transactions"]
    TALLY.transactions_calls_baseline += plain["GET /v2/transactions"]
    TALLY.worst_history_calls = max(TALLY.worst_history_calls, extra.total() - plain.total())
    TALLY.histories_with_extra_calls += extra.total() > plain.total()
    TALLY.item_syncs += 2 + sum(step.kind != "fail" for step in plan.steps)
    TALLY.full_syncs += history.full_synced
    missing = missing_rows(baseline_problems)
    TALLY.baseline_histories_wrong += bool(baseline_problems)
    TALLY.baseline_missing_rows += len(missing)
    TALLY.emulator_seconds += bench.clock.now() - emulator_started
    TALLY.seconds += time.monotonic() - started
    metrics.clear_metrics()  # nothing flushes them here; at 100 values powertools would print them
    failures = []
    if problems:
        failures.append(f"history {plan.label()} (item {history.item_id}): {problems[:20]}")
    # Without the overlap, the only rows missing are late rows whose webhook was lost (the overlap is the
    # one difference between the two processors); anything else would point at another gap.
    other = [p for p in baseline_problems if not (p.endswith(" missing") and p.startswith("transaction "))]
    if other or not missing <= history.lost_rows:
        failures.append(
            f"history {plan.label()}: without the overlap the mirror differs beyond the lost late rows: "
            f"{other[:10]} {sorted(missing - history.lost_rows)[:10]}"
        )
    return failures


def run_histories(shard: int, count: int) -> dict[str, Any]:
    """`count` histories in this process (a worker of the pool, or the test's own process)."""
    TALLY.reset()
    started = time.monotonic()
    failures: list[str] = []
    with quiet_timed_bench(SEED + shard) as bench:
        for number in range(count):
            failures += run_history(bench, plan_of(SEED * 1000 + shard * 100_000 + number))
    return {"tally": asdict(TALLY), "failures": failures, "seconds": time.monotonic() - started}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_timed_histories() -> None:
    """PROOF_TIMED_HISTORIES histories over Pluggy's time end with mirror == truth, with no reconciliation."""
    workers = max(1, min(WORKERS, HISTORIES))
    shares = [HISTORIES // workers + (1 if i < HISTORIES % workers else 0) for i in range(workers)]
    started = time.monotonic()
    if workers == 1:
        results = [run_histories(0, HISTORIES)]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run_histories, range(workers), shares))
    total: Counter[str] = Counter()
    by_key: dict[str, Counter[str]] = {"connectors": Counter(), "steps": Counter(), "gaps": Counter()}
    for result in results:
        tally = dict(result["tally"])
        for key, counter in by_key.items():
            counter.update(tally.pop(key))
        worst = tally.pop("worst_history_calls")
        total["worst_history_calls"] = max(total["worst_history_calls"], worst)
        total.update({k: v for k, v in tally.items() if k not in ("seconds", "emulator_seconds")})
    emulator_hours = sum(r["tally"]["emulator_seconds"] for r in results) / 3600
    extra_calls = total["pluggy_calls"] - total["pluggy_calls_baseline"]
    extra_transactions = total["transactions_calls"] - total["transactions_calls_baseline"]
    section = RESULTS.section("fidelity_timed")
    section.update(
        histories=total["histories"],
        workers=workers,
        time_scale=TIME_SCALE,
        page_size=PAGE_SIZE,
        overlap_minutes=OVERLAP_MINUTES,
        late_fraction=TIMING.late_fraction,
        connectors={f"connector {k}": v for k, v in sorted(by_key["connectors"].items())},
        partial_success=total["partial_success"],
        mfa_answered_through_the_api=total["mfa_answered"],
        steps=dict(by_key["steps"]),
        gaps=dict(by_key["gaps"]),
        events=total["events"],
        deliveries=total["deliveries"],
        duplicates=total["duplicates"],
        held_back=total["held"],
        rate_limit_used_up=total["rate_limit_used_up"],
        answers_429=total["answers_429"],
        redelivered=total["redelivered"],
        late_batches=total["late_batches"],
        late_rows=total["late_rows"],
        lost_late_webhooks=total["lost_late_webhooks"],
        lost_late_rows=total["lost_late_rows"],
        overlap_caught_rows=total["overlap_caught"],
        overlap_rows_reread=total["overlap_rows_read"],
        records_compared=total["records_compared"],
        differences=total["differences"],
        pluggy_calls=total["pluggy_calls"],
        pluggy_calls_without_overlap=total["pluggy_calls_baseline"],
        extra_pluggy_calls=extra_calls,
        extra_pluggy_calls_per_history=round(extra_calls / max(1, total["histories"]), 2),
        extra_pluggy_calls_per_sync=round(extra_calls / max(1, total["item_syncs"]), 3),
        histories_with_extra_calls=total["histories_with_extra_calls"],
        item_syncs=total["item_syncs"],
        full_syncs=total["full_syncs"],
        extra_transactions_calls=extra_transactions,
        worst_history_extra_calls=total["worst_history_calls"],
        without_overlap_histories_wrong=total["baseline_histories_wrong"],
        without_overlap_missing_rows=total["baseline_missing_rows"],
        emulator_hours=round(emulator_hours, 1),
        seconds=round(time.monotonic() - started, 1),
    )
    print(json.dumps(section, indent=1, sort_keys=True))
    failures = [f for r in results for f in r["failures"]]
    assert not failures, f"{len(failures)} failures; first: {failures[:3]}"
    assert total["histories"] >= HISTORIES and total["differences"] == 0
    # The run met what it is about: late rows whose webhook was lost, and the overlap catching them.
    if HISTORIES >= 50:
        assert total["lost_late_rows"] > 0 and total["overlap_caught"] >= total["baseline_missing_rows"] > 0
        assert total["answers_429"] > 0 and total["mfa_answered"] > 0 and total["partial_success"] > 0


def test_without_the_overlap_a_lost_late_row_stays_missing() -> None:
    """Why the overlap exists, deterministically: a first sync's rows that appear after UPDATED, with an older
    createdAt, whose transactions/created is lost. Both processors read the item at item/created, before
    those rows appear; 31 minutes later an item/updated with nothing new arrives. The processor with the
    overlap re-reads the now complete window and stores them; with TX_OVERLAP_MINUTES=0 it reads past its
    watermark only, and they stay missing until a full sync."""
    timing = dataclasses.replace(TIMING, late_fraction=0.5, late_delay=(300, 300))  # 0.3 s after UPDATED
    with quiet_timed_bench(SEED, timing) as bench:
        emulator = bench.next_history()
        item_id = emulator.create_item("overlap-proof", transactions_per_account=6)["id"]
        assert emulator.wait_for_item(item_id)["executionStatus"] == "SUCCESS"
        for payload in bench.take():  # item/login_succeeded, item/created
            for side in (bench.main, bench.baseline):
                side.deliver(payload)
        summary = emulator.last_sync(item_id)
        assert summary is not None
        late = {t for ids in summary["late"].values() for t in ids}
        assert late, "the sync left rows to appear after UPDATED"
        stored = {
            str(r["transactionId"])
            for side in (bench.main, bench.baseline)
            for a in accounts_of(emulator.truth(), item_id)
            for r in side.store.query(
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"ACCOUNT#{a}"}},
                ConsistentRead=True,
            )
        }
        assert not late & stored, "the first read came after the late rows appeared: nothing to prove"
        assert emulator.settle(10)
        lost = bench.take()
        assert {p["event"] for p in lost} == {"transactions/created"} and len(lost) == len(summary["late"])
        truth = emulator.truth()
        newest_read = max(
            truth["transactions"][a][t]["createdAt"]
            for a in summary["late"]
            for t in truth["transactions"][a]
            if t not in late
        )
        assert all(
            truth["transactions"][a][t]["createdAt"] < newest_read for a, ids in summary["late"].items() for t in ids
        )
        bench.clock.advance(PAST_THE_WINDOW)
        emulator.sync_item(item_id)  # nothing new: item/login_succeeded, item/updated
        assert emulator.wait_for_item(item_id)["status"] == "UPDATED" and emulator.settle(10)
        for payload in bench.take():
            for side in (bench.main, bench.baseline):
                side.deliver(payload)
        truth = emulator.truth()
        known = accounts_of(truth, item_id)
        with_overlap = mirror_problems(truth, read_mirror(bench.main.store, item_id, known), item_id)
        without = mirror_problems(truth, read_mirror(bench.baseline.store, item_id, known), item_id)
        assert with_overlap == []
        assert bench.main.log.counts["overlapLate"] == len(late)
        assert missing_rows(without) == late and len(without) == len(late), without
