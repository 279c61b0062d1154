"""Receiver benchmark: in-process cost per event, AWS calls per delivery.

Each goal is checked against a baseline measured in the same run:
1. in-process cost of the real lambda_handler (AWS clients replaced by the in-memory fakes of bench/_fakes.py)
   vs. the irreducible work of a delivery (json.loads + HMAC-SHA256 of the body + json.dumps of the answer),
   interleaved per event;
2. AWS API calls per delivery, counted with a botocore hook against moto, vs. the minimum conceivable
   (one conditional write to dedupe + one send = 2 for a new event, 1 for a duplicate, 0 for a 4XX).
The receiver's cold start is measured on the built artifact by bench/coldstart.py.
"""

from __future__ import annotations

import copy
import cProfile
import gc
import hashlib
import hmac
import json
import pstats
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from unittest import mock

import boto3
from moto import mock_aws
from pluggy_pipeline import aws
from pluggy_pipeline import receiver as receiver_module
from pluggy_pipeline.auth import sign
from pluggy_pipeline_cli.webhook_examples import VALID_PAYLOADS
from pluggy_pipeline_local.devsecrets import (
    LOCAL_PLUGGY_CLIENT_ID,
    LOCAL_SIGNING_KEY,
    LOCAL_WEBHOOK_SECRET,
    PLUGGY_SOURCE_IP,
)
from pluggy_pipeline_local.events_corpus import (
    SECRET_HEADER,
    SIGNATURE_HEADER,
    Scenario,
    proxy_event,
    scenarios,
)
from pluggy_pipeline_local.template import LocalResources, create_resources, function_environment

from bench import Measure, Section, Stats, Table, fmt, ratio, verdict
from bench._fakes import FakeAws, FakeDynamoDB, FakeSQS, NoSecretsManager, replay
from bench._harness import (
    AWS_ENV_REMOVED,
    FAKE_AWS_ENV,
    REGION,
    REPO_ROOT,
    CallCounter,
    LambdaContext,
    Stdout,
    load_handler,
    patched_environ,
    progress_of,
    rotated,
    template,
)

EVENTS_DIR = REPO_ROOT / "events" / "receiver"
progress = progress_of("receiver")

# The goals (the only figures written here; everything else is measured).
GOAL_IN_PROCESS_US = 200.0  # median in-process cost per event, excluding AWS I/O
GOAL_IN_PROCESS_RATIO = 8.0  # the same median against the same-run baseline (issue #13)
GOAL_CALLS_NEW = 2
GOAL_CALLS_DUPLICATE = 1
GOAL_CALLS_REJECTED = 0
# The minimum conceivable number of AWS calls: one conditional write to dedupe + one send.
MIN_CALLS_NEW = 2
MIN_CALLS_DUPLICATE = 1
MIN_CALLS_REJECTED = 0


@dataclass(frozen=True)
class Sizes:
    in_process_events: int  # distinct events per in-process run (each run times every one of them)
    chunk: int  # runs are interleaved chunk by chunk
    warmup_events: int
    replay_events: int  # to time the fakes on their own
    profile_events: int  # cProfile sample, only when the in-process goal is missed


FULL = Sizes(20_000, 500, 500, 5_000, 3_000)
QUICK = Sizes(3_000, 250, 200, 1_000, 1_000)
TINY = Sizes(60, 20, 10, 50, 60)  # for the smoke test: exercises everything, measures nothing


# ---------------------------------------------------------------------------------------------------------
# Environment and deliveries
# ---------------------------------------------------------------------------------------------------------


def reset_receiver() -> None:
    aws.reset_clients()
    receiver_module.get_receiver.cache_clear()


def receiver_environment(resources: LocalResources, *, secret_in_env: bool) -> dict[str, str]:
    """ReceiverFunction's environment as the template resolves it, signatures required, source IP pinned.

    secret_in_env: WEBHOOK_SECRET + WEBHOOK_SIGNING_KEY instead of the template's WEBHOOK_SECRET_ARN.
    """
    env = function_environment(
        template(),
        "ReceiverFunction",
        resources,
        parameters={
            "PluggyClientId": LOCAL_PLUGGY_CLIENT_ID,
            "RequireSignature": "true",
            "AllowedSourceCidrs": f"{PLUGGY_SOURCE_IP}/32",
        },
    )
    if secret_in_env:
        env.pop("WEBHOOK_SECRET_ARN", None)
        env["WEBHOOK_SECRET"] = LOCAL_WEBHOOK_SECRET
        env["WEBHOOK_SIGNING_KEY"] = LOCAL_SIGNING_KEY
    return env


def moto_resources(**secret_values: str) -> tuple[dict[str, Any], LocalResources]:
    """Clients of the running moto (`mock_aws`) and the template's resources created there."""
    clients = {name: boto3.client(name, region_name=REGION) for name in ("dynamodb", "sqs", "secretsmanager")}
    resources = create_resources(
        template(),
        dynamodb=clients["dynamodb"],
        sqs=clients["sqs"],
        secretsmanager=clients["secretsmanager"],
        secret_values=secret_values,
    )
    return clients, resources


def signed_event(payload: Mapping[str, Any], name: str = "bench") -> dict[str, Any]:
    """An API Gateway proxy event delivering `payload` the way Pluggy does (secret header + signature)."""
    body = json.dumps(payload, separators=(",", ":"))
    headers = {
        "Content-Type": ["application/json"],
        SECRET_HEADER: [LOCAL_WEBHOOK_SECRET],
        SIGNATURE_HEADER: [sign(body.encode(), LOCAL_SIGNING_KEY.encode())],
    }
    return proxy_event(Scenario(name, 202, body, headers))


def fresh_payloads(count: int, tag: str) -> list[dict[str, Any]]:
    """`count` new events cycling through every documented Pluggy webhook, each with its own identity."""
    bases = [VALID_PAYLOADS[name] for name in sorted(VALID_PAYLOADS)]
    run = uuid.uuid4().hex[:8]
    payloads = []
    for i in range(count):
        payload = copy.deepcopy(bases[i % len(bases)])
        if "eventId" in payload:
            payload["eventId"] = f"{tag}-{run}-{i:08d}-0000-000000000000"[:36]
        else:  # keyless (connector/status_updated): keyed on the body's hash, so vary the body
            payload["id"] = payload["connectorId"] = f"{run}{i}"
        payloads.append(payload)
    return payloads


def corpus() -> list[tuple[str, int, dict[str, Any]]]:
    """(name, expected status, proxy event) for every file of events/receiver."""
    expected = {s.name: s.expected_status for s in scenarios()}
    return [
        (path.stem, expected[path.stem], json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(EVENTS_DIR.glob("*.json"))
        if path.stem in expected
    ]


# ---------------------------------------------------------------------------------------------------------
# 1. In-process cost per event
# ---------------------------------------------------------------------------------------------------------


def irreducible(body: str, key: bytes) -> str:
    """What any receiver must do per delivery: parse the body, HMAC it, serialize an answer."""
    payload = json.loads(body)
    hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"status": "accepted", "eventId": payload.get("eventId", "")}, separators=(",", ":"))


@dataclass
class Run:
    key: str
    label: str
    sink: str  # where file descriptor 1 points: devnull | pipe
    call: Callable[[dict[str, Any]], int]
    expect: int
    goal: bool  # the in-process goal applies to this run
    fakes: FakeAws = field(default_factory=FakeAws)
    samples: list[int] = field(default_factory=list)
    baseline: list[int] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def _timed_chunk(run: Run, events: Sequence[dict[str, Any]], bodies: Sequence[str], lo: int, hi: int) -> None:
    """Each event timed next to its own baseline, alternating which goes first (neither always runs warmer)."""
    clock = time.perf_counter_ns
    key = LOCAL_SIGNING_KEY.encode()
    call = run.call
    for i in range(lo, hi):
        event, body = events[i], bodies[i]
        if i & 1:
            t0 = clock()
            irreducible(body, key)
            t1 = clock()
            status = call(event)
            t2 = clock()
            run.baseline.append(t1 - t0)
            run.samples.append(t2 - t1)
        else:
            t0 = clock()
            status = call(event)
            t1 = clock()
            irreducible(body, key)
            t2 = clock()
            run.samples.append(t1 - t0)
            run.baseline.append(t2 - t1)
        if status != run.expect and len(run.wrong) < 5:
            run.wrong.append(f"{json.loads(body).get('event')}: {status}")


# Where an invocation's time goes, by cumulative time of these functions (file suffix, function, label).
STAGES = (
    ("pluggy_pipeline/receiver.py", "receive", "`receive()` (checks, parsing, claim, send; fakes included)"),
    ("pluggy_pipeline/receiver.py", "record", "`record()` (log line + metrics)"),
    ("pluggy_pipeline/observability.py", "flush", "the EMF line (`CountMetrics.flush`)"),
)
Profile = tuple[list[tuple[str, float, float]], list[tuple[str, float]]]


def _short(filename: str) -> str:
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}/"
    for marker in ("site-packages/", "layers/common/", str(REPO_ROOT) + "/", version):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def profile_top(call: Callable[[], None], top: int = 5) -> Profile:
    """Top functions by own time (label, own share, cumulative share), and the cumulative share of STAGES."""
    profiler = cProfile.Profile()
    profiler.enable()
    call()
    profiler.disable()
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = getattr(pstats.Stats(profiler), "stats")  # noqa: B009 - untyped attribute
    total = sum(v[2] for v in stats.values()) or 1.0
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    functions = [
        (f"{_short(filename)}:{line} {name}" if filename != "~" else name, own / total, cumulative / total)
        for (filename, line, name), (_, _, own, cumulative, _) in rows
    ]

    def cumulative(suffix: str, function: str) -> float:
        return max((v[3] for (f, _, n), v in stats.items() if n == function and f.endswith(suffix)), default=0.0)

    stages = [(label, cumulative(suffix, name) / total) for suffix, name, label in STAGES]
    wrappers = cumulative("pluggy_pipeline/observability.py", "decorate")  # the outer of the handler's two
    wrappers -= cumulative("receiver/app.py", "lambda_handler") + cumulative(
        "pluggy_pipeline/observability.py", "flush"
    )
    stages.append(("the handler's two decorators, flush excluded", wrappers / total))
    return functions, [(label, share) for label, share in stages if share > 0]


def in_process_runs(app: ModuleType, context: LambdaContext) -> list[Run]:
    def handler(event: dict[str, Any]) -> int:
        return int(app.lambda_handler(event, context)["statusCode"])

    def receive_only(event: dict[str, Any]) -> int:
        return int(receiver_module.receive(event).response.to_proxy()["statusCode"])

    duplicate = "duplicate (processed event)"
    return [
        Run("new", "new event, stdout -> /dev/null", "devnull", handler, 202, goal=True),
        Run("duplicate", f"{duplicate}, stdout -> /dev/null", "devnull", handler, 200, goal=True),
        Run("new_pipe", "new event, stdout -> pipe", "pipe", handler, 202, goal=False),
        Run("duplicate_pipe", f"{duplicate}, stdout -> pipe", "pipe", handler, 200, goal=False),
        Run("receive", "new event, receive() only (no Powertools)", "devnull", receive_only, 202, goal=False),
    ]


def measure_in_process(app: ModuleType, sizes: Sizes) -> tuple[Measure, dict[str, Any]]:
    n, warm = sizes.in_process_events, sizes.warmup_events
    events = [signed_event(p) for p in fresh_payloads(n + warm, "inproc")]
    bodies = [str(e["body"]) for e in events]
    timed, warmup = events[:n], events[n:]
    context = LambdaContext("ReceiverFunction")
    holder = FakeAws()

    def fake_dynamodb(*_: Any) -> FakeDynamoDB:
        return holder.dynamodb

    def fake_sqs(*_: Any) -> FakeSQS:
        return holder.sqs

    def use(fakes: FakeAws) -> None:
        holder.dynamodb, holder.sqs = fakes.dynamodb, fakes.sqs

    data: dict[str, Any] = {}
    runs = in_process_runs(app, context)
    handler = runs[0].call
    with (
        mock.patch.object(aws, "dynamodb", fake_dynamodb),
        mock.patch.object(aws, "sqs", fake_sqs),
        mock.patch.object(aws, "secretsmanager", lambda *_: NoSecretsManager()),
        Stdout() as stdout,
    ):
        receiver_module.get_receiver.cache_clear()
        try:
            # The first call builds the settings, the authenticator, the store and the queue.
            seed = FakeAws()
            seed.dynamodb.log, seed.sqs.log = [], []
            use(seed)
            everything = [*warmup, *timed]
            t0 = time.perf_counter_ns()
            statuses = Counter([handler(everything[0])])
            data["first_call_us"] = (time.perf_counter_ns() - t0) / 1000
            new_calls = [*seed.dynamodb.log, *seed.sqs.log]
            seed.dynamodb.log = seed.sqs.log = None
            # Every event once, untimed: the table a duplicate meets is exactly what the receiver wrote.
            statuses.update(handler(e) for e in everything[1:])
            data["seed_statuses"] = dict(statuses)
            # Duplicates meet the records the receiver wrote, as the processor leaves them (PROCESSED).
            seeded = {key: {**item, "status": {"S": "PROCESSED"}} for key, item in seed.dynamodb.items.items()}
            # The pre-built events are the benchmark's, not the receiver's: keep collections from scanning them.
            gc.collect()
            gc.freeze()

            for run in runs:
                if run.expect == 200:
                    run.fakes = FakeAws(FakeDynamoDB(seeded))
                use(run.fakes)
                stdout.to(run.sink)
                for event in warmup:
                    run.call(event)
            for chunk, lo in enumerate(range(0, n, sizes.chunk)):
                for run in rotated(runs, chunk):
                    use(run.fakes)
                    stdout.to(run.sink)
                    _timed_chunk(run, timed, bodies, lo, min(n, lo + sizes.chunk))
            piped = stdout.piped_bytes()
            pipe_invocations = sum(len(r.samples) + len(warmup) for r in runs if r.sink == "pipe")

            # The fakes on their own: the same calls replayed on fresh fakes (their cost is in the figures above).
            clock = time.perf_counter_ns
            replay_new: list[int] = []
            replay_duplicate: list[int] = []
            put = [c for c in new_calls if c[0] == "put_item"][:1]
            for _ in range(sizes.replay_events):
                fresh = FakeAws()
                t0 = clock()
                replay(new_calls, fresh)
                t1 = clock()
                replay(put, fresh)
                t2 = clock()
                replay_new.append(t1 - t0)
                replay_duplicate.append(t2 - t1)

            profile: Profile | None = None
            new_median_us = Stats.of(runs[0].samples).median / 1000
            baseline_median_us = Stats.of(runs[0].baseline).median / 1000
            if new_median_us >= GOAL_IN_PROCESS_US or new_median_us > GOAL_IN_PROCESS_RATIO * baseline_median_us:
                use(FakeAws())
                sample = timed[: min(n, sizes.profile_events)]

                def handle_sample() -> None:
                    for event in sample:
                        handler(event)

                profile = profile_top(handle_sample)
        finally:
            gc.unfreeze()
            receiver_module.get_receiver.cache_clear()

    problems = [f"{r.label}: expected {r.expect}, got {r.wrong}" for r in runs if r.wrong]
    if problems:
        raise RuntimeError("in-process benchmark answered wrongly: " + "; ".join(problems))
    if len(runs[0].fakes.sqs.messages) != len(runs[0].samples) + len(warmup) or runs[1].fakes.sqs.messages:
        raise RuntimeError("in-process benchmark: the fakes did not see one send per new event and none per duplicate")

    rows = []
    goal_met = True
    goal_text = f"median < {fmt(GOAL_IN_PROCESS_US)} µs, ≤ {GOAL_IN_PROCESS_RATIO:g}x baseline"
    for run in runs:
        measured = Stats.of(run.samples).scaled(1e-3)
        base = Stats.of(run.baseline).scaled(1e-3)
        ok = measured.median < GOAL_IN_PROCESS_US and measured.median <= GOAL_IN_PROCESS_RATIO * base.median
        goal_met &= ok or not run.goal
        data[run.key] = {"us": measured, "baseline_us": base, "ratio": measured.median / base.median, "met": ok}
        rows.append(
            (
                run.label,
                goal_text if run.goal else "—",
                f"{fmt(measured.median)} µs",
                f"{fmt(measured.p95)} µs",
                f"{fmt(base.median)} µs / {fmt(base.p95)} µs",
                ratio(measured.median, base.median),
                verdict(ok) if run.goal else "(informative)",
            )
        )
    headers = ("Run (each: the same events, distinct eventIds)", "Goal", "Median", "p95")
    table = Table((*headers, "Baseline median / p95", "Ratio (medians)", "Verdict"), tuple(rows))
    new, pipe_new, receive = data["new"], data["new_pipe"], data["receive"]
    fake_new = Stats.of(replay_new).scaled(1e-3) if replay_new else None
    fake_dup = Stats.of(replay_duplicate).scaled(1e-3) if replay_duplicate else None
    notes = [
        f"{n} distinct events per run ({len(VALID_PAYLOADS)} webhook types of the corpus in turn, one keyless), "
        f"{warm} warm-up events per run not timed; the five runs are interleaved in chunks of {sizes.chunk} events "
        "(rotating order), and inside each run every event is timed next to its own baseline, alternating which "
        "goes first. Times are wall-clock `perf_counter_ns` per event, GC enabled (the benchmark's own pre-built "
        "events are moved out of its reach with `gc.freeze()`).",
        "The handler is the real `lambda_handler` of functions/receiver/app.py (its Powertools logging and "
        "metrics included), with the template's environment, `REQUIRE_SIGNATURE=true`, the source IP allowlist and "
        "`PLUGGY_CLIENT_ID` set, and the secret in `WEBHOOK_SECRET`/`WEBHOOK_SIGNING_KEY` (no Secrets Manager I/O).",
        "`aws.dynamodb()`/`aws.sqs()` return the in-memory fakes of bench/_fakes.py (conditional writes evaluated, "
        "ConditionalCheckFailedException with ALL_OLD, FIFO send checks); their own cost is part of the figures: "
        + (
            f"replaying the calls of one new event on fresh fakes takes {fmt(fake_new.median)} µs (median), "
            f"one losing put {fmt(fake_dup.median)} µs."
            if fake_new and fake_dup
            else "not measured in this run."
        ),
        "The duplicate runs deliver the same events again to a table holding the records the receiver wrote for "
        "them, with their status set to PROCESSED (the 1-call path: the losing put, no send).",
        "Baseline: `json.loads` of the body + HMAC-SHA256 of the body + `json.dumps` of a 2-key answer, per event. "
        f"The {fmt(GOAL_IN_PROCESS_US)} µs goal is absolute, so its verdict holds for this machine; the ratio to the "
        f"same-run baseline (goal ≤ {GOAL_IN_PROCESS_RATIO:g}x) is the figure that carries over to another one.",
        "The handler prints one EMF metrics blob per invocation, and a JSON log line for rejections and errors "
        "(accepted and duplicate deliveries log at DEBUG). In the /dev/null runs file descriptor 1 points at "
        "/dev/null; in the pipe runs it points at a pipe drained by another process (as Lambda's log pipe)"
        + (
            f", which received {piped / pipe_invocations:.0f} bytes per invocation"
            if piped and pipe_invocations
            else ""
        )
        + f". Median per new event: {fmt(pipe_new['us'].median)} µs to the pipe against {fmt(new['us'].median)} µs "
        "to /dev/null.",
        f"Without Powertools (`receive()` + the proxy response only) a new event costs {fmt(receive['us'].median)} µs: "
        f"the decorators, the log line and the metrics account for {fmt(new['us'].median - receive['us'].median)} µs "
        "of the handler's median. Their lean form (pluggy_pipeline/observability.py) prints what Powertools' "
        "`inject_lambda_context(clear_state=True)` and `log_metrics` print (tests/handlers/test_receiver_stdout.py).",
        f"The very first invocation (builds the settings, authenticator, store and queue) took "
        f"{fmt(data['first_call_us'])} µs (one sample).",
    ]
    if profile is not None:
        functions, stages = profile
        notes.append(
            f"**The goal is missed.** cProfile over {min(n, sizes.profile_events)} new events (shares of all profiled "
            "time; the profiler inflates small calls). Where the time goes, by cumulative time: "
            + "; ".join(f"{label} {share:.0%}" for label, share in stages)
            + ". Top 5 functions by own time (cumulative in brackets): "
            + "; ".join(f"`{where}` {own:.0%} ({cum:.0%})" for where, own, cum in functions)
            + "."
        )
    data.update(profile=profile, goal_met=goal_met, duplicate_ratio=data["duplicate"]["ratio"])
    return Measure("1. In-process cost per event (AWS I/O excluded)", table, tuple(notes), met=goal_met), data


# ---------------------------------------------------------------------------------------------------------
# 2. AWS calls per delivery
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    name: str
    status: int
    calls: tuple[str, ...]
    attempts: int
    event_id: str


def _group(rows: Sequence[Delivered]) -> str:
    if not rows:
        return "n/a"
    counts = sorted({len(r.calls) for r in rows})
    if len(counts) == 1:
        return f"{counts[0]} (all {len(rows)})" if len(rows) > 1 else str(counts[0])
    return f"{counts[0]} to {counts[-1]} over {len(rows)}"


def _worst(rows: Sequence[Delivered]) -> int:
    return max(len(r.calls) for r in rows)


def measure_aws_calls(app: ModuleType) -> tuple[Measure, dict[str, Any]]:
    context = LambdaContext("ReceiverFunction")
    with mock_aws(), Stdout():
        secret = json.dumps({"current": LOCAL_WEBHOOK_SECRET, "signingKey": LOCAL_SIGNING_KEY})
        clients, resources = moto_resources(WebhookSecret=secret)
        table, queue_url = resources.tables["EventsTable"], resources.queue_urls["EventQueue"]
        counter = CallCounter(callers=True)

        def deliver(name: str, event: dict[str, Any]) -> Delivered:
            counter.take()
            response = app.lambda_handler(event, context)
            calls, attempts = counter.take()
            event_id = str(json.loads(response["body"]).get("eventId", ""))
            return Delivered(name, int(response["statusCode"]), calls, attempts, event_id)

        def set_status(rows: Sequence[Delivered], status: str) -> None:
            for row in rows:
                clients["dynamodb"].update_item(
                    TableName=table,
                    Key={"eventId": {"S": row.event_id}},
                    UpdateExpression="SET #status = :s",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={":s": {"S": status}},
                )

        cases = corpus()
        rejected_cases = [(n, e) for n, s, e in cases if s >= 400]
        accepted_cases = [(n, e) for n, s, e in cases if s < 400]
        with patched_environ(receiver_environment(resources, secret_in_env=True)):
            reset_receiver()
            try:
                counter.attach(aws.dynamodb(), aws.sqs(), aws.secretsmanager())
                rejected = [deliver(n, e) for n, e in rejected_cases]
                new = [deliver(n, e) for n, e in accepted_cases]
                # Pluggy retries before the processor picked the event up: the record is as the receiver left it.
                pending = [deliver(n, e) for n, e in accepted_cases]
                set_status(new, "PROCESSING")
                processing = [deliver(n, e) for n, e in accepted_cases]
                set_status(new, "PROCESSED")
                processed = [deliver(n, e) for n, e in accepted_cases]
            finally:
                reset_receiver()
        expected = {n: s for n, s, _ in cases}
        wrong = [f"{r.name}: {r.status}" for r in rejected + new if r.status != expected[r.name]]
        wrong += [f"{r.name} (duplicate): {r.status}" for r in pending + processing + processed if r.status != 200]
        if wrong:
            raise RuntimeError("AWS-calls benchmark answered wrongly: " + ", ".join(wrong))
        attributes = clients["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        in_queue = int(attributes.get("ApproximateNumberOfMessages", 0))
        in_queue += int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))

        # The template's own configuration: the secret comes from Secrets Manager, cached per container.
        with patched_environ(receiver_environment(resources, secret_in_env=False)):
            reset_receiver()
            try:
                counter.attach(aws.dynamodb(), aws.sqs(), aws.secretsmanager())
                payloads = fresh_payloads(2, "sm")
                cold = [deliver("first delivery of a container", signed_event(payloads[0]))]
                warm = [deliver("second delivery", signed_event(payloads[1]))]
                forged = [deliver("bad-secret", next(e for n, e in rejected_cases if n == "bad-secret"))]
            finally:
                reset_receiver()

    keyless = [r for r in new if r.event_id.startswith("sha256-")]
    with_id = [r for r in new if not r.event_id.startswith("sha256-")]
    duplicates = processing + processed

    def row(label: str, rows: Sequence[Delivered], goal: int | None, minimum: int) -> tuple[str, ...]:
        worst = _worst(rows)
        return (
            label,
            str(goal) if goal is not None else "—",
            _group(rows),
            "; ".join(sorted({" + ".join(r.calls) or "none" for r in rows})) or "—",
            ", ".join(str(s) for s in sorted({r.status for r in rows})),
            str(minimum),
            ratio(worst, minimum) if minimum else ("—" if worst == 0 else "∞"),
            verdict(worst <= goal) if goal is not None else "(informative)",
        )

    rows = [
        row("New event with eventId (every corpus type)", with_id, GOAL_CALLS_NEW, MIN_CALLS_NEW),
        row("New keyless event (connector/status_updated)", keyless, GOAL_CALLS_NEW, MIN_CALLS_NEW),
        row("Duplicate, event being processed (PROCESSING)", processing, GOAL_CALLS_DUPLICATE, MIN_CALLS_DUPLICATE),
        row("Duplicate, event processed (PROCESSED)", processed, GOAL_CALLS_DUPLICATE, MIN_CALLS_DUPLICATE),
        row(
            "Duplicate before the processor picked it up (RECEIVED)", pending, GOAL_CALLS_DUPLICATE, MIN_CALLS_DUPLICATE
        ),
        row("4XX delivery (every rejection of the corpus)", rejected, GOAL_CALLS_REJECTED, MIN_CALLS_REJECTED),
        row("Template config (secret in Secrets Manager): first delivery", cold, None, MIN_CALLS_NEW),
        row("Template config: next delivery (secret cached)", warm, None, MIN_CALLS_NEW),
        row("Template config: forged delivery (bad secret)", forged, None, MIN_CALLS_REJECTED),
    ]
    goal_rows = [
        ("a new event", new, GOAL_CALLS_NEW),
        ("a duplicate of an event the processor has", duplicates, GOAL_CALLS_DUPLICATE),
        ("a duplicate arriving before the processor picked the event up", pending, GOAL_CALLS_DUPLICATE),
        ("a 4XX delivery", rejected, GOAL_CALLS_REJECTED),
    ]
    met = all(_worst(group) <= goal for _, group, goal in goal_rows)
    attempts = sum(r.attempts for _, group, _ in goal_rows for r in group)
    calls = sum(len(r.calls) for _, group, _ in goal_rows for r in group)
    resends = sum(r.calls.count("sqs.SendMessage") for r in pending)
    notes = [
        "Counted against moto (`mock_aws`, tables/queues/secret created from template.yaml) with botocore hooks on "
        "the receiver's own clients (`aws.dynamodb()`, `aws.sqs()`, `aws.secretsmanager()`): `before-call` per API "
        f"call, `request-created` per HTTP attempt ({calls} calls, {attempts} attempts over the goal rows).",
        f"Baseline = the minimum conceivable: {MIN_CALLS_NEW} for a new event (one conditional write to dedupe + "
        f"one send), {MIN_CALLS_DUPLICATE} for a duplicate (the losing conditional write, which returns the record "
        f"with ALL_OLD), {MIN_CALLS_REJECTED} for a 4XX.",
        "Each corpus event is delivered once (new), then again three times: with its record as the receiver left "
        "it, then with the record's status set to PROCESSING, then PROCESSED (as the processor sets them).",
        "Except for the 'Template config' rows, the secret is in the environment (no Secrets Manager call). With the "
        "template's WEBHOOK_SECRET_ARN the first delivery of each container also reads the secret; it is then cached.",
        f"Messages in the queue after these deliveries: {in_queue}, for {len(new)} distinct events accepted and "
        f"{resends} sends made by the duplicates before pick-up"
        + (" (SQS FIFO deduplication on the eventId dropped those)." if resends and in_queue == len(new) else "."),
    ]
    callers = counter.callers or {}
    for what, group, goal in goal_rows:
        worst = _worst(group)
        if worst > goal:
            operations = sorted({op for r in group if len(r.calls) == worst for op in r.calls})
            made_by = [f"{op} (from {', '.join(sorted(callers.get(op, {'?'})))})" for op in operations]
            notes.insert(0, f"**Goal missed**: {what} costs {worst} calls (goal {goal}): {'; '.join(made_by)}.")
    data = {
        "new": _worst(new),
        "new_min": min(len(r.calls) for r in new),
        "keyless": _worst(keyless) if keyless else None,
        "duplicate": _worst(duplicates),
        "duplicate_pending": _worst(pending),
        "rejected": _worst(rejected),
        "new_operations": sorted({r.calls for r in new}),
        "duplicate_operations": sorted({r.calls for r in duplicates}),
        "pending_operations": sorted({r.calls for r in pending}),
        "rejected_count": len(rejected),
        "accepted_count": len(new),
        "secrets_manager_first": len(cold[0].calls),
        "secrets_manager_next": len(warm[0].calls),
        "forged_calls": len(forged[0].calls),
        "queue_messages": in_queue,
        "goal_met": met,
    }
    headers = ("Delivery", "Goal (calls)", "Measured (calls)", "Operations", "Status", "Baseline: minimum")
    return Measure(
        "2. AWS calls per delivery", Table((*headers, "Ratio", "Verdict"), tuple(rows)), tuple(notes), met
    ), data


# ---------------------------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------------------------


def run(quick: bool, sizes: Sizes | None = None) -> Section:
    sizes = sizes or (QUICK if quick else FULL)
    data: dict[str, Any] = {"sizes": sizes}
    with patched_environ(FAKE_AWS_ENV, remove=AWS_ENV_REMOVED):
        # Names only: the in-process run talks to fakes, but its environment is the template's.
        with mock_aws():
            _, names = moto_resources()
        with patched_environ(receiver_environment(names, secret_in_env=True)):
            reset_receiver()
            app = load_handler("receiver")
            progress(f"in-process: {sizes.in_process_events} events x 5 runs")
            in_process, data["in_process"] = measure_in_process(app, sizes)
        progress("AWS calls per delivery (moto)")
        calls, data["aws_calls"] = measure_aws_calls(app)
        reset_receiver()

    ip, ac = data["in_process"], data["aws_calls"]

    def in_process_row(label: str, key: str) -> tuple[str, ...]:
        measured, base = ip[key]["us"], ip[key]["baseline_us"]
        return (
            f"In-process cost, {label} (median; p95)",
            f"< {fmt(GOAL_IN_PROCESS_US)} µs; ≤ {GOAL_IN_PROCESS_RATIO:g}x baseline",
            f"{fmt(measured.median)} µs; {fmt(measured.p95)} µs",
            f"{fmt(base.median)} µs; {fmt(base.p95)} µs",
            ratio(measured.median, base.median),
            verdict(ip[key]["met"]),
        )

    def calls_row(label: str, measured: int, goal: int, minimum: int) -> tuple[str, ...]:
        shown = ratio(measured, minimum) if minimum else "—"
        return (
            f"AWS calls, {label}",
            str(goal),
            str(measured),
            f"{minimum} (minimum conceivable)",
            shown,
            verdict(measured <= goal),
        )

    summary = Table(
        ("Measure", "Goal", "Measured", "Baseline (same run)", "Ratio", "Verdict"),
        (
            in_process_row("new event", "new"),
            in_process_row("duplicate of a processed event", "duplicate"),
            calls_row("new event", ac["new"], GOAL_CALLS_NEW, MIN_CALLS_NEW),
            calls_row(
                "duplicate (the processor has the event)", ac["duplicate"], GOAL_CALLS_DUPLICATE, MIN_CALLS_DUPLICATE
            ),
            calls_row(
                "duplicate before the processor picked it up",
                ac["duplicate_pending"],
                GOAL_CALLS_DUPLICATE,
                MIN_CALLS_DUPLICATE,
            ),
            calls_row("4XX delivery", ac["rejected"], GOAL_CALLS_REJECTED, MIN_CALLS_REJECTED),
        ),
    )
    notes = (
        "The machine is shared and noisy: every figure is set against a baseline measured in the same run, "
        "interleaved with it, and reported as median and p95 (nearest rank).",
        "The receiver's cold start is measured on the built artifact: see the Cold start section.",
        "Nothing in this section is written by hand: `python -m bench` regenerates it.",
    )
    return Section("receiver", "Receiver", summary, (in_process, calls), notes, data)
