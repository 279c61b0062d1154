"""SharedPacer: one slot counter per Pluggy route in PacerTable (moto), shared by every container."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pluggy_pipeline.pacing import PACED_ROUTES, PacingTooSlow, SharedPacer, parse_limits
from pluggy_pipeline_local.template import create_resources

from tests.conftest import REGION, TEMPLATE

T0 = 1_795_341_600.0


class Clock:
    """A clock the pacer's sleeps move forward, as real sleeps would."""

    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


@pytest.fixture
def table() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        pacer_only = {"Resources": {"PacerTable": TEMPLATE["Resources"]["PacerTable"]}}
        yield client, create_resources(pacer_only, dynamodb=client, sqs=None).tables["PacerTable"]


def pacer(table: tuple[Any, str], clock: Clock, per_minute: int = 360, **kwargs: Any) -> SharedPacer:
    client, name = table
    return SharedPacer(lambda: client, name, parse_limits(per_minute), clock=clock, sleep=clock.sleep, **kwargs)


def test_calls_of_one_route_are_spaced_by_the_window_over_the_limit(table: tuple[Any, str]) -> None:
    clock = Clock()
    paced = pacer(table, clock, per_minute=360)  # one call per 1/6 s
    for _ in range(4):
        paced.acquire("GET /v2/transactions")
    assert clock.sleeps == [0.167, 0.167, 0.167]
    paced.acquire("GET /accounts")  # another route: its own counter, free now
    assert len(clock.sleeps) == 3


def test_two_containers_share_the_budget(table: tuple[Any, str]) -> None:
    a, b = Clock(), Clock()  # the same instant in two containers
    first, second = pacer(table, a), pacer(table, b)
    first.acquire("GET /v2/transactions")
    second.acquire("GET /v2/transactions")  # the next slot: after the first container's call
    first.acquire("GET /v2/transactions")  # and the one after
    assert (a.sleeps, b.sleeps) == ([0.334], [0.167])  # 2 slots of 167 ms (whole milliseconds)


def test_an_idle_route_does_not_save_up_a_burst(table: tuple[Any, str]) -> None:
    clock = Clock()
    paced = pacer(table, clock)
    paced.acquire("GET /accounts")
    clock.now += 3600
    paced.acquire("GET /accounts")
    paced.acquire("GET /accounts")
    assert clock.sleeps == [0.167]


def test_no_minute_ever_holds_more_calls_than_the_limit(table: tuple[Any, str]) -> None:
    clock = Clock()
    paced = pacer(table, clock, per_minute=30)
    starts = []
    for _ in range(95):
        paced.acquire("GET /v2/transactions")
        starts.append(clock.now)
    windows = [sum(1 for s in starts if t <= s < t + 60) for t in starts]
    assert max(windows) == 30


def test_a_slot_further_than_the_caller_may_wait_is_a_retry_later(table: tuple[Any, str]) -> None:
    clock = Clock()
    crowd = pacer(table, Clock(), per_minute=6)  # one call per 10 s
    for _ in range(3):
        crowd.acquire("GET /v2/transactions")  # another container's calls, never slept here
    late = pacer(table, clock, per_minute=6, max_wait=20.0)
    with pytest.raises(PacingTooSlow) as raised:
        late.acquire("GET /v2/transactions")
    assert raised.value.retry_after == pytest.approx(30.0)
    assert clock.sleeps == []


def test_routes_without_a_limit_and_a_zero_limit_cost_no_call(table: tuple[Any, str]) -> None:
    client, name = table
    clock = Clock()
    pacer(table, clock).acquire("GET /items/{id}")
    pacer(table, clock, per_minute=0).acquire("GET /v2/transactions")
    assert client.scan(TableName=name)["Items"] == [] and clock.sleeps == []
    assert set(parse_limits(342)) == set(PACED_ROUTES)


def test_a_pacer_that_cannot_reach_its_table_lets_the_call_through_unpaced(table: tuple[Any, str]) -> None:
    client, _ = table
    clock = Clock()
    broken = SharedPacer(lambda: client, "no-such-table", parse_limits(360), clock=clock, sleep=clock.sleep)
    for _ in range(3):
        broken.acquire("GET /v2/transactions")  # ResourceNotFoundException: permanent, yet no message is parked
    assert clock.sleeps == []
