"""The receiver benchmark at tiny sizes: every measure runs, and what it measured has the expected structure.

The figures of a tiny run mean nothing, but its counts do: AWS calls per delivery are exact, and the goals
on them (bench/receiver.py GOAL_CALLS_*) are asserted here, so a receiver that starts making an extra call
fails this test, not only the benchmark report.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pluggy_pipeline.event_store import Claim, ClaimOutcome, EventStore, KeySource, NewEvent
from pluggy_pipeline_local.events_corpus import scenarios
from pluggy_pipeline_local.template import create_resources

from bench import MEETS, MISSES, Section, Stats
from bench import receiver as bench_receiver
from bench.__main__ import machine, render_section
from bench._fakes import FakeDynamoDB
from bench._harness import template


@pytest.fixture(scope="module")
def section() -> Section:
    return bench_receiver.run(quick=True, sizes=bench_receiver.TINY)


def test_aws_calls_per_delivery_meet_the_goals(section: Section) -> None:
    calls = section.data["aws_calls"]
    operations = " + ".join(calls["new_operations"][0])
    assert calls["new"] == bench_receiver.GOAL_CALLS_NEW, (
        f"a new event costs {calls['new']} AWS calls ({operations}); the goal is {bench_receiver.GOAL_CALLS_NEW}"
    )
    assert calls["new_min"] == calls["new"]  # every event type costs the same
    assert calls["keyless"] == bench_receiver.GOAL_CALLS_NEW
    assert calls["duplicate"] == bench_receiver.GOAL_CALLS_DUPLICATE
    assert calls["duplicate_operations"] == [("dynamodb.PutItem",)]
    assert calls["rejected"] == bench_receiver.GOAL_CALLS_REJECTED


def test_aws_call_counts_cover_the_corpus(section: Section) -> None:
    calls = section.data["aws_calls"]
    expected = [s.expected_status for s in scenarios()]
    assert calls["rejected_count"] == sum(status >= 400 for status in expected)
    assert calls["accepted_count"] == sum(status == 202 for status in expected)
    (new_operations,) = calls["new_operations"]
    assert new_operations.count("dynamodb.PutItem") == 1
    assert new_operations.count("sqs.SendMessage") == 1
    # A duplicate arriving before the processor picked the event up may cost more than the goal (the benchmark
    # reports it), but never more than a new event, and it never queues the event a second time.
    assert bench_receiver.GOAL_CALLS_DUPLICATE <= calls["duplicate_pending"] <= calls["new"]
    assert calls["queue_messages"] == calls["accepted_count"]
    # The template's configuration reads the secret once per container, then caches it.
    assert calls["secrets_manager_first"] == calls["new"] + 1
    assert calls["secrets_manager_next"] == calls["new"]
    assert calls["forged_calls"] == 0


def test_in_process_runs_time_every_event_against_a_baseline(section: Section) -> None:
    in_process = section.data["in_process"]
    n = bench_receiver.TINY.in_process_events
    for key in ("new", "duplicate", "new_pipe", "duplicate_pipe", "receive"):
        run = in_process[key]
        assert run["us"].n == run["baseline_us"].n == n
        assert 0 < run["baseline_us"].median < run["us"].median  # the handler does strictly more than the baseline
        assert run["us"].median <= run["us"].p95 <= run["us"].maximum
    assert in_process["seed_statuses"] == {202: n + bench_receiver.TINY.warmup_events}


def test_section_renders_with_a_verdict_per_goal(section: Section) -> None:
    assert len(section.summary.rows) == 6  # the cold start is bench/coldstart.py's (the built artifact)
    verdicts = [row[-1] for row in section.summary.rows]
    assert all(v in {MEETS, f"**{MISSES}**"} for v in verdicts)
    assert [m.met for m in section.measures] == [
        section.data["in_process"]["goal_met"],
        section.data["aws_calls"]["goal_met"],
    ]
    in_process = section.data["in_process"]
    assert in_process["new"]["met"] == (
        in_process["new"]["us"].median < bench_receiver.GOAL_IN_PROCESS_US
        and in_process["new"]["ratio"] <= bench_receiver.GOAL_IN_PROCESS_RATIO
    )
    text = render_section(section, machine(), quick=True, seconds=1.0)
    assert text.startswith("<!-- bench:receiver start -->\n## Receiver")
    assert "Cold start" not in section.summary.to_markdown()
    separators = [line for line in text.splitlines() if line.startswith("| --- |")]
    assert len(separators) == 3  # the summary and one table per measure


def test_stats_use_nearest_rank_percentiles() -> None:
    stats = Stats.of([float(x) for x in range(100, 0, -1)])
    assert (stats.n, stats.median, stats.p95, stats.minimum, stats.maximum) == (100, 50.5, 95.0, 1.0, 100.0)


def _states(now: int) -> dict[str, dict[str, Any]]:
    def record(status: str, **extra: Any) -> dict[str, Any]:
        item = {"status": {"S": status}, "keySource": {"S": "eventId"}, "receivedAtEpoch": {"N": str(now)}}
        return item | extra

    return {
        "pending": record("RECEIVED"),
        "pending-same-body": record("RECEIVED", bodyHash={"S": "h-mine"}),
        "conflict": record("PROCESSED", bodyHash={"S": "h-other"}),
        "processing": record("PROCESSING"),
        "processed": record("PROCESSED"),
        "failed": record("FAILED"),
        "keyless-recent": record("PROCESSED", keySource={"S": "bodyHash"}),
        "keyless-recent-pending": record("RECEIVED", keySource={"S": "bodyHash"}),
        "keyless-old": record("PROCESSED", keySource={"S": "bodyHash"}, receivedAtEpoch={"N": "0"}),
        "keyless-old-pending": record("RECEIVED", keySource={"S": "bodyHash"}, receivedAtEpoch={"N": "0"}),
    }


EXPECTED_OUTCOMES = {
    "absent": ClaimOutcome.NEW,
    "pending": ClaimOutcome.PENDING,
    "pending-same-body": ClaimOutcome.PENDING,
    "conflict": ClaimOutcome.CONFLICT,
    "processing": ClaimOutcome.DUPLICATE,
    "processed": ClaimOutcome.DUPLICATE,
    "failed": ClaimOutcome.DUPLICATE,
    "keyless-recent": ClaimOutcome.DUPLICATE,
    "keyless-recent-pending": ClaimOutcome.PENDING,
    "keyless-old": ClaimOutcome.NEW,
    "keyless-old-pending": ClaimOutcome.NEW,
}


def test_fake_dynamodb_decides_claims_as_moto_does() -> None:
    """The in-process figures are only worth something if the fakes follow the receiver's real paths."""
    now = int(time.time())
    outcomes: dict[str, dict[str, ClaimOutcome]] = {}
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        table = create_resources(template(), dynamodb=client, sqs=boto3.client("sqs", region_name="us-east-1")).tables[
            "EventsTable"
        ]
        fake = FakeDynamoDB()
        released: dict[str, list[bool]] = {}
        for name, backend in (("moto", client), ("fake", fake)):
            store = EventStore(lambda backend=backend: backend, table)
            outcomes[name], released[name] = {}, []
            for state, attributes in [("absent", None), *_states(now).items()]:
                event_id = f"{name}-{state}"
                if attributes is not None:
                    backend.put_item(TableName=table, Item={"eventId": {"S": event_id}, **attributes})
                source = KeySource.BODY_HASH if state.startswith("keyless") else KeySource.EVENT_ID
                event = NewEvent(
                    event_id=event_id, event_type="item/updated", key_source=source, payload="{}", body_hash="h-mine"
                )
                claim = store.claim(event, keyless_window_seconds=600)
                outcomes[name][state] = claim.outcome
                if claim.outcome is ClaimOutcome.NEW:  # the failed-send path: only our own claim is deleted
                    other = Claim(ClaimOutcome.NEW, event_id, token="another-attempt")
                    released[name].append(store.release(other))
                    released[name].append(store.release(claim))
    assert outcomes["moto"] == EXPECTED_OUTCOMES, json.dumps(outcomes, indent=1)
    assert outcomes["fake"] == outcomes["moto"], json.dumps(outcomes, indent=1)
    assert released["fake"] == released["moto"] == [False, True] * 3
    assert set(outcomes["moto"].values()) == set(ClaimOutcome)  # every path of the receiver is exercised
