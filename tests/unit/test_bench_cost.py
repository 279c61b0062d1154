"""bench/cost.py measures before it prices: the counts behind the cost table must be the pipeline's."""

from __future__ import annotations

from pathlib import Path

import bench.cost as cost


def test_cost_is_computed_from_measured_calls(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cost, "COST_DOC", tmp_path / "cost.md")
    section = cost.run(quick=True)
    events = section.data["events"]
    assert events >= 10 and section.data["delivered"] == events  # every webhook of the mix answered 2XX
    monthly = section.data["monthly"]
    for volume in cost.VOLUMES:
        lines = monthly[volume]
        assert abs(lines["Total"] - sum(v for k, v in lines.items() if k != "Total")) < 1e-9
        # API Gateway is priced per request: exactly the volume at the list price.
        assert lines["API Gateway (REST)"] == volume * cost.PRICES["api_gateway_rest_per_million"] / 1e6
    # Costs grow with volume, and the document was written from the same figures.
    assert monthly[100_000_000]["Total"] > monthly[1_000_000]["Total"] > monthly[10_000]["Total"]
    text = (tmp_path / "cost.md").read_text()
    assert f"${monthly[1_000_000]['Total']:,.2f}" in text
