"""The cold-start benchmark at a tiny size: it runs the built artifact, read-only, and every process serves.

Needs `make build` (make test runs it first): the benchmark measures .aws-sam/build, not the repository. The
figures of one round mean nothing; what is asserted is what the run did: every variant ran, each handler queued
its event, nothing was written into the copies, and the layer `sam build` made is compiled.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import MEETS, MISSES, Section
from bench import coldstart as bench_coldstart
from bench.__main__ import available, machine, render_section


@pytest.fixture(scope="module")
def section() -> Section:
    if not (bench_coldstart.BUILD_DIR / "template.yaml").is_file():
        pytest.fail("no built artifact: run `make build` (make test does) before this test")
    return bench_coldstart.run(quick=True, sizes=bench_coldstart.TINY)


def test_the_benchmark_is_discovered_by_make_bench() -> None:
    assert "coldstart" in available()


def test_every_variant_runs_and_each_handler_queues_its_event(section: Section) -> None:
    stats = section.data["stats"]
    assert list(stats) == list(bench_coldstart.LABELS) == ["A", "B", "A_arn", "A_before", "A_gc_on", "B_gc", "floor"]
    assert all(s.n == bench_coldstart.TINY.rounds for s in stats.values())
    assert section.data["queued"] == len(bench_coldstart.SENDS) * bench_coldstart.TINY.rounds
    # An empty interpreter is far cheaper than anything importing boto3.
    assert stats["floor"].median < min(stats["A"].median, stats["B"].median)
    assert section.data["ratio"] == pytest.approx(stats["A"].median / stats["B"].median)
    assert section.data["like_for_like"] == pytest.approx(stats["A"].median / stats["B_gc"].median)
    # Each process reports when it answered: before it exited.
    assert all(section.data["exited"][key].median >= stats[key].median for key in stats)


def test_it_measures_the_compiled_layer_sam_build_made(section: Section) -> None:
    compiled, modules = section.data["layer_compiled"]
    assert modules > 100
    assert compiled == modules, "the built layer is not byte-compiled: run `make build` (layers/common/Makefile)"
    assert section.data["read_only"]


def test_section_renders_with_a_verdict(section: Section) -> None:
    assert section.summary.rows[0][-1] in {MEETS, f"**{MISSES}**"}
    assert section.measures[0].met is section.data["goal_met"]
    text = render_section(section, machine(), quick=True, seconds=1.0)
    assert text.startswith("<!-- bench:coldstart start -->\n## Cold start")
    separators = [line for line in text.splitlines() if line.startswith("| --- |")]
    assert len(separators) == 2  # the summary and the measure's table
    assert len(section.summary.rows) == 4  # A against B; without the GC hold; without .pyc; against B_gc


def test_a_missing_build_says_to_run_make_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bench_coldstart, "BUILD_DIR", tmp_path / "build")
    with pytest.raises(SystemExit, match="run `make build` first"):
        bench_coldstart.run(quick=True, sizes=bench_coldstart.TINY)
