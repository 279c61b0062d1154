"""Benchmarks of pluggy-pipeline: `python -m bench` runs every module here and writes docs/benchmarks.md.

A benchmark module (bench/receiver.py, bench/processor.py, ...) exposes `run(quick: bool) -> Section`.
Everything a section says comes from the run that produced it: goals are the only constants, every measured
figure and every baseline is measured in the same run. What the modules share is in the underscored ones
(not benchmarks): bench/_harness.py (environment, handlers, call counters, stdout, child processes),
bench/_fakes.py (in-memory DynamoDB and SQS) and bench/_plot.py (figures in docs/img/).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MEETS = "meets"
MISSES = "misses"


def verdict(ok: bool) -> str:
    return MEETS if ok else f"**{MISSES}**"


@dataclass(frozen=True)
class Stats:
    """Summary of one series of samples (in whatever unit they were taken)."""

    n: int
    median: float
    p95: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)
        # Nearest-rank percentile: an observed value, never an interpolation between two.
        rank = max(1, math.ceil(0.95 * len(ordered)))
        return cls(
            n=len(ordered),
            median=statistics.median(ordered),
            p95=ordered[rank - 1],
            minimum=ordered[0],
            maximum=ordered[-1],
        )

    def scaled(self, factor: float) -> Stats:
        return Stats(self.n, self.median * factor, self.p95 * factor, self.minimum * factor, self.maximum * factor)


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def to_markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"

        out = [line(self.headers), "| " + " | ".join("---" for _ in self.headers) + " |"]
        out += [line(row) for row in self.rows]
        return "\n".join(out)


@dataclass(frozen=True)
class Measure:
    """One measured question: its table (goal, measured, baseline, ratio, verdict) and what to know about it."""

    title: str
    table: Table
    notes: tuple[str, ...] = ()
    met: bool | None = None  # None: informative only, no goal


@dataclass(frozen=True)
class Section:
    """What a benchmark module returns: rendered into docs/benchmarks.md by bench.__main__."""

    name: str  # the module name, e.g. "receiver"; used by --only and as the section's marker
    title: str
    summary: Table  # one row per measure: goal, measured, baseline, ratio, verdict
    measures: tuple[Measure, ...]
    notes: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)  # the raw figures, for tests and tooling

    @property
    def missed(self) -> tuple[str, ...]:
        return tuple(m.title for m in self.measures if m.met is False)

    @property
    def table(self) -> str:
        """Every table of the section as markdown."""
        parts = [self.summary.to_markdown()]
        parts += [f"#### {m.title}\n\n{m.table.to_markdown()}" for m in self.measures]
        return "\n\n".join(parts)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1): an observed value, never an interpolation between two."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def fmt(value: float, digits: int = 3) -> str:
    """A figure with `digits` significant digits, no scientific notation for the ranges used here."""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def ratio(numerator: float, denominator: float) -> str:
    return "n/a" if denominator == 0 else f"{numerator / denominator:.2f}x"
