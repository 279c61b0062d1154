"""The storm benchmark at tiny sizes: both modes run end to end through the real processor, and what must hold
whatever the machine holds: nothing parked, the mirror equal to the emulator, every webhook processed and deleted
once, and coalescing cheaper in Pluggy calls than one message at a time. Plus the queue model the figures rest on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from unittest import mock

import pytest
from pluggy_pipeline.processor import QueueMessage

from bench import MEETS, MISSES, Section
from bench import _plot as bench_plot
from bench import storm as bench_storm
from bench.__main__ import machine, render_section


@pytest.fixture(scope="module")
def section(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Section]:
    with mock.patch.object(bench_plot, "IMG_DIR", tmp_path_factory.mktemp("img")):  # not docs/img
        yield bench_storm.run(quick=True, sizes=bench_storm.TINY)


def outcomes(section: Section) -> list[bench_storm.Outcome]:
    found: list[bench_storm.Outcome] = section.data["outcomes"]
    assert [o.label for o in found] == [bench_storm.PRODUCT] * len(bench_storm.TINY.workers) + [bench_storm.BEFORE]
    return found


def test_every_mode_parks_nothing_and_mirrors_pluggy(section: Section) -> None:
    for outcome in outcomes(section):
        assert outcome.drain is not None, f"{outcome.name}: not drained before the deadline"
        assert outcome.dlq == 0, f"{outcome.name}: {outcome.dlq} messages in the DLQ"
        assert outcome.equal, f"{outcome.name}: {outcome.mirror['differences']}"
        assert outcome.mirror["items"] == outcome.items
        assert outcome.statuses == {"PROCESSED": outcome.events}  # every webhook, in the event log
        assert len(outcome.receives) == outcome.events  # each message deleted once, none lost


def test_the_storm_is_the_same_for_both_modes(section: Section) -> None:
    product, before = outcomes(section)[0], outcomes(section)[-1]
    tiny = bench_storm.TINY
    per_item = 2 + tiny.syncs * (1 + bench_storm.ADD + bench_storm.CHANGE)  # created + login, then each sync
    assert product.events == tiny.items * per_item
    assert before.events == tiny.baseline_items * per_item
    assert (
        set(product.webhooks)
        == set(before.webhooks)
        == {
            "item/created",
            "item/login_succeeded",
            "item/updated",
            "transactions/created",
            "transactions/updated",
        }
    )


def test_items_sync_accounts_and_transactions_and_their_consents_only(section: Section) -> None:
    """The storm measures the accounts-and-transactions sync: no other product is read; consents are (Open Finance)."""
    for outcome in outcomes(section):
        routes = set(outcome.requests)
        assert not {r for r in routes if r.split(" ")[1].split("/")[1] in {"bills", "investments", "loans", "identity"}}
        consents = outcome.requests[bench_storm.CONSENTS_ROUTE]
        # At most one per item sync: coalescing merges an item's webhooks of one batch into one sync.
        assert 0 < consents <= sum(n for event, n in outcome.webhooks.items() if event.startswith("item/"))
        assert outcome.per_webhook_without_consents == pytest.approx(
            (sum(outcome.requests.values()) - consents) / outcome.events
        )


def test_coalescing_costs_fewer_pluggy_calls_per_webhook(section: Section) -> None:
    product, before = outcomes(section)[0], outcomes(section)[-1]
    assert product.per_webhook < before.per_webhook
    # Unpaced, every rate-limited hold answers a 429 (the client sleeps through the short ones itself).
    assert 0 < sum(1 for s in before.holds if s > 0) <= sum(before.throttled.values())
    assert max(before.receives) >= 2  # held messages came back and were received again


def test_section_renders_with_the_figure(section: Section) -> None:
    verdicts = {row[-1] for row in section.summary.rows}
    assert verdicts <= {MEETS, f"**{MISSES}**", "(informative)"}
    text = render_section(section, machine(), quick=True, seconds=1.0)
    assert text.startswith("<!-- bench:storm start -->\n## Storm")
    assert "![The storm" in text and "](img/storm.png)" in text
    assert len([line for line in text.splitlines() if line.startswith("| --- |")]) == 3
    assert (bench_plot.IMG_DIR / "storm.png").read_bytes().startswith(b"\x89PNG")


def make_queue(max_receives: int | None = None) -> tuple[bench_storm.FifoQueue, bench_storm.FifoQueue]:
    dead = bench_storm.FifoQueue(60)
    return bench_storm.FifoQueue(60, max_receives, dead), dead


def send(queue: bench_storm.FifoQueue, event_id: str, group: str) -> None:
    queue.send(event_id=event_id, event_type="item/updated", body="{}", group_id=group)


def ids(batch: list[QueueMessage]) -> list[str]:
    return [m.attributes["eventId"] for m in batch]


def test_fifo_model_keeps_a_group_in_order_while_a_message_is_in_flight() -> None:
    queue, _ = make_queue()
    for event_id, group in (("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a")):
        send(queue, event_id, group)
    first = queue.receive(2, 0)
    assert ids(first) == ["a1", "a2"]  # the oldest group first, several of its messages, in order
    assert ids(queue.receive(10, 0)) == ["b1"]  # group a is in flight: nothing more of it
    queue.delete([first[1].receipt_handle])  # a2 done, a1 still in flight
    queue.hold([(first[0].receipt_handle, 1)])
    assert queue.receive(10, 0) == []
    time.sleep(1.05)
    again = queue.receive(10, 0)
    assert ids(again) == ["a1", "a3"]  # the held head comes back first
    queue.delete([m.receipt_handle for m in again])
    queue.delete([first[0].receipt_handle])  # a stale receipt deletes nothing
    assert queue.size == 1 and queue.deleted_receives == [1, 2, 1]


def test_fifo_model_redrives_after_max_receives() -> None:
    queue, dead = make_queue(max_receives=2)
    send(queue, "x", "g")
    for _ in range(2):
        (message,) = queue.receive(10, 0)
        queue.hold([(message.receipt_handle, 0)])
    assert queue.receive(10, 0) == []
    assert (queue.size, dead.size) == (0, 1)
    assert ids(dead.receive(10, 0)) == ["x"]
