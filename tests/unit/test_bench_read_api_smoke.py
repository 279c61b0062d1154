"""The read API benchmark at a tiny size: every measure runs, and its invariants hold.

The figures of a tiny run mean nothing, but its counts do: one Query per page, and the handler's page holds the
same rows as the raw Query it is compared with. They are asserted here, so a handler that starts making a
second call per page, or pages differently from DynamoDB, fails this test, not only the benchmark report.
"""

from __future__ import annotations

import pytest

from bench import MEETS, MISSES, Section, Stats
from bench import read_api as bench_read_api
from bench.__main__ import available, machine, render_section

VERDICTS = {MEETS, f"**{MISSES}**", "(informative)"}


@pytest.fixture(scope="module")
def section() -> Section:
    return bench_read_api.run(quick=True, sizes=bench_read_api.TINY)


def test_the_benchmark_is_discovered_by_make_bench() -> None:
    assert "read_api" in available()


def test_one_query_per_page_and_the_same_rows_as_the_raw_query(section: Section) -> None:
    assert section.data["queries"] == [bench_read_api.GOAL_QUERIES_PER_PAGE] == [1]
    assert section.data["queries_met"]
    assert section.data["same_rows"] == {"first": True, "deep": True}
    tiny = bench_read_api.TINY
    assert section.data["stored"] == tiny.transactions + 2 + bench_read_api.PAGE + 1
    assert section.data["deep_rows"] == 100  # half of 250, down to a whole page


def test_every_series_has_its_samples_and_the_ratio_is_of_p99s(section: Section) -> None:
    samples = bench_read_api.TINY.samples
    series = section.data["series"]
    assert set(series) == {(p, k) for p in ("first", "deep") for k in ("handler", "raw")} | {("small", "raw")}
    for s in series.values():
        assert len(s.wall_ms) == len(s.own_ms) == len(s.queries) == samples
        assert all(0 < own <= wall for own, wall in zip(s.own_ms, s.wall_ms, strict=True))
        assert Stats.of(s.wall_ms).minimum > 0
    for page in ("first", "deep"):
        p99 = section.data["p99"]
        assert section.data["ratios"][page] == pytest.approx(p99[(page, "handler")] / p99[(page, "raw")])
    assert section.data["latency_met"] == all(
        r <= bench_read_api.GOAL_P99_RATIO for r in section.data["ratios"].values()
    )


def test_the_section_renders(section: Section) -> None:
    assert len(section.summary.rows) == 3
    assert all(row[-1] in VERDICTS for row in section.summary.rows)
    text = render_section(section, machine(), quick=True, seconds=1.0)
    assert text.startswith("<!-- bench:read_api start -->\n## Read API")
    assert text.rstrip().endswith("<!-- bench:read_api end -->")
    assert "p99" in text and "raw Query" in text
