"""The processor and pipeline benchmarks at tiny sizes: every measure runs, and its invariants hold.

The figures of a tiny run mean nothing, but its counts do: DynamoDB writes of an initial sync, Pluggy calls of an
incremental sync with nothing new, exactly-once processing through the local stack. They are asserted here, so
a processor that starts writing per transaction, or a pipeline that processes an event twice, fails this test,
not only the benchmark report.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from bench import MEETS, MISSES, Section, Stats
from bench import _plot as bench_plot
from bench import pipeline as bench_pipeline
from bench import processor as bench_processor
from bench.__main__ import machine, render_section

VERDICTS = {MEETS, f"**{MISSES}**", "(informative)"}


@pytest.fixture(scope="module")
def processor_section() -> Section:
    return bench_processor.run(quick=True, sizes=bench_processor.TINY)


@pytest.fixture(scope="module")
def pipeline_section(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Section]:
    with mock.patch.object(bench_plot, "IMG_DIR", tmp_path_factory.mktemp("img")):  # not docs/img
        yield bench_pipeline.run(quick=True, sizes=bench_pipeline.TINY)


# --- processor ---------------------------------------------------------------------------------------------


def test_initial_sync_writes_one_batch_per_25_transactions(processor_section: Section) -> None:
    calls = processor_section.data["calls"]
    shape: dict[str, int] = processor_section.data["shape"]
    tiny = bench_processor.TINY
    assert calls["n"] == sum(shape.values()) == calls["accounts"] * tiny.transactions_per_account
    assert calls["batches"] == math.ceil(calls["n"] / 25)
    assert calls["writes"] == calls["batches"] + calls["excess"]
    # Each account's stream is chunked on its own: exactly ceil(n_a/25) BatchWriteItem per account, plus one for the
    # item's consent (every emulator item is an Open Finance one; the items ask for accounts and transactions only).
    assert calls["consents"] == 1
    per_account = sum(math.ceil(n / 25) for n in shape.values()) + 1
    assert calls["aws_calls"]["dynamodb.BatchWriteItem"] == per_account
    assert calls["record_store_calls"]["batch_write_item"] == per_account
    # The goal: the writes beyond ceil(N/25) do not grow with N.
    assert calls["goal_met"] and calls["excess"] <= calls["small_excess"]
    assert calls["retries"] == 0
    assert "dynamodb.Scan" not in calls["aws_calls"]


def test_initial_sync_pluggy_calls_are_counted_twice_alike(processor_section: Section) -> None:
    calls = processor_section.data["calls"]
    stats = calls["emulator_stats"]
    assert stats == calls["client_requests"]  # the emulator's count and PluggyClient's agree
    pages = sum(max(1, math.ceil(n / bench_processor.PAGE_SIZE)) for n in processor_section.data["shape"].values())
    # Accounts and transactions only (bench_processor.PRODUCTS): no bills, investments, loans nor identity read.
    assert stats == {
        "POST /auth": 1,
        "GET /items/{id}": 1,
        "GET /accounts": 1,
        "GET /v2/transactions": pages,
        "GET /consents": 1,
    }
    assert sum(stats.values()) == calls["pluggy_minimum"]


def test_throughput_and_memory_are_measured_from_the_runs(processor_section: Section) -> None:
    throughput = processor_section.data["throughput"]
    rounds = bench_processor.TINY.rounds
    for key in ("processor_seconds", "raw_seconds", "processor_tx_per_s", "raw_tx_per_s"):
        stats: Stats = throughput[key]
        assert stats.n == rounds and 0 < stats.median <= stats.p95
    assert throughput["ratio"] == pytest.approx(
        throughput["processor_tx_per_s"].median / throughput["raw_tx_per_s"].median
    )
    memory = processor_section.data["memory"]
    assert 0 < memory["rss_before_mb"].median < memory["peak_rss_mb"].median
    assert 0 < memory["traced_peak_mb"] < memory["peak_rss_mb"].maximum
    assert memory["peak_rss_mb"].maximum <= bench_processor.GOAL_PEAK_RSS_MB  # VmHWM: the child's own peak


def test_incremental_sync_with_nothing_new_meets_the_call_goal(processor_section: Section) -> None:
    incremental = processor_section.data["incremental"]
    pluggy = incremental["no_change_pluggy"]
    accounts = processor_section.data["calls"]["accounts"]
    assert incremental["goal_met"], pluggy
    assert pluggy["GET /items/{id}"] == 1 and pluggy["GET /accounts"] == 1 and pluggy["GET /consents"] == 1
    assert pluggy.get("GET /v2/transactions", 0) <= accounts
    assert "POST /auth" not in pluggy  # the key is cached, as in a warm container
    assert incremental["no_change_aws"].get("dynamodb.BatchWriteItem", 0) == 0  # nothing new, nothing batched
    assert incremental["no_change_aws"]["dynamodb.Query"] == 2  # its accounts, its consents' digests
    steps = incremental["steps"]
    # baseline without overlap; right after the initial sync; the one re-read 31 min later; settled; the sync
    assert "no overlap (baseline)" in steps[0].label and "window settled" in steps[3].label
    assert steps[0].pluggy == steps[1].pluggy == steps[3].pluggy  # only the one re-read costs more
    assert incremental["overlap_extra_pluggy_calls"] >= 0
    assert steps[4].label.endswith("`item/updated`")  # the sync's own events follow, item/updated first
    added = sum(step.counts.get("transactions", 0) for step in steps[4:])
    assert added >= bench_processor.TINY.added


def test_processor_section_renders(processor_section: Section) -> None:
    assert len(processor_section.summary.rows) == 4
    assert all(row[-1] in VERDICTS for row in processor_section.summary.rows)
    assert [m.met for m in processor_section.measures] == [
        processor_section.data["calls"]["goal_met"],
        processor_section.data["throughput"]["goal_met"],
        processor_section.data["memory"]["goal_met"],
        processor_section.data["incremental"]["goal_met"],
    ]
    text = render_section(processor_section, machine(), quick=True, seconds=1.0)
    assert text.startswith("<!-- bench:processor start -->\n## Processor")
    assert text.rstrip().endswith("<!-- bench:processor end -->")


# --- pipeline ----------------------------------------------------------------------------------------------


def test_every_delivery_answered_as_expected(pipeline_section: Section) -> None:
    data = pipeline_section.data
    tiny = bench_pipeline.TINY
    assert data["original_statuses"] == {202: tiny.distinct}
    assert data["duplicate_statuses"] == {200: tiny.duplicates}
    assert data["wrong_ids"] == []
    assert data["baseline_ok"]
    assert data["baseline_runs"] == {"one": tiny.baseline_runs, "split": tiny.baseline_runs}
    assert 0 < data["p50_ms"] <= data["p99_ms"] <= data["max_ms"]


def test_every_event_processed_exactly_once(pipeline_section: Section) -> None:
    data = pipeline_section.data
    distinct = bench_pipeline.TINY.distinct
    assert data["processed"] == data["distinct"] == distinct
    assert data["attempts"] == {1: distinct}
    assert data["process_calls"] == {1: distinct}
    assert data["extra_process_calls"] == 0
    assert data["dlq"] == 0 and data["queued"] == 0 and data["idle"]
    assert data["processing_met"]
    assert data["process_seconds"] is not None and data["process_seconds"] > 0
    assert data["process_ms"].n == distinct


def test_item_events_reach_pluggy(pipeline_section: Section) -> None:
    data = pipeline_section.data
    assert data["item_events"] >= 0.1 * data["distinct"]
    # At most one item fetch per item event: the processor coalesces an item's events within a batch.
    assert 1 <= data["pluggy_calls"]["GET /items/{id}"] <= data["item_events"]


def test_pipeline_leaves_nothing_running(pipeline_section: Section) -> None:
    assert pipeline_section.data["threads_left"] == []
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith(("bench-", "front", "sqs-trigger", "pluggy-emulator"))], names


def test_pipeline_section_renders(pipeline_section: Section) -> None:
    assert len(pipeline_section.summary.rows) == 5
    assert all(row[-1] in VERDICTS for row in pipeline_section.summary.rows)
    text = render_section(pipeline_section, machine(), quick=True, seconds=1.0)
    assert text.startswith("<!-- bench:pipeline start -->\n## Pipeline")
    assert "serializes each function like one Lambda container" in text


def test_the_ack_latency_plot_is_linked_and_reproducible(pipeline_section: Section, tmp_path: Path) -> None:
    plot: Path = pipeline_section.data["plot"]
    assert plot.name == f"{bench_pipeline.PLOT_NAME}.png" and plot.read_bytes().startswith(b"\x89PNG")
    text = render_section(pipeline_section, machine(), quick=True, seconds=1.0)
    assert f"](img/{plot.name})" in text  # docs/benchmarks.md links it beside the numbers
    # The same figure gives the same bytes: a rerun does not churn the committed file.
    samples, baseline = [float(n % 97) + 1 for n in range(300)], [float(n % 13) + 0.5 for n in range(300)]
    with mock.patch.object(bench_plot, "IMG_DIR", tmp_path):
        first = bench_pipeline.ack_latency_plot(samples, baseline, 8).read_bytes()
        second = bench_pipeline.ack_latency_plot(samples, baseline, 8).read_bytes()
    assert first == second and b"Software" not in first and b"Matplotlib" not in first
