"""The products benchmark at a tiny size: every phase runs for both shapes, and its counts hold.

The figures of a tiny run mean nothing, but its counts do: which Pluggy routes each shape reads per sync, that a
sync where nothing changed writes no product record, that the consent's byConsentExpiry entry is written once, and
that the mirror equals Pluggy after every phase (the run raises otherwise). Asserted here, so a processor that
starts rewriting unchanged products, or reading a product the item did not ask for, fails this test.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench import MEETS, MISSES, Section
from bench import products as bench_products
from bench.__main__ import available, machine, render_section
from bench.processor import fold_routes

VERDICTS = {MEETS, f"**{MISSES}**", "(informative)"}
EVERY, BASE = bench_products.EVERY, bench_products.BASE
FIRST, QUIET, CHANGED = bench_products.PHASES


@pytest.fixture(scope="module")
def section() -> Section:
    return bench_products.run(quick=True, sizes=bench_products.TINY)


def results(section: Section) -> bench_products.Results:
    found: bench_products.Results = section.data["results"]
    assert set(found) == {(s, p) for s in (EVERY, BASE) for p in bench_products.PHASES}
    assert {t.syncs for t in found.values()} == {bench_products.TINY.items}
    return found


def test_the_benchmark_is_discovered_by_make_bench() -> None:
    assert "products" in available()


def test_pluggy_labels_fold_into_the_emulators_route_templates() -> None:
    labels = {
        "GET /investments/3f2a/transactions": 2,
        "GET /investments/9b1c/transactions": 1,
        "GET /items/3f2a": 1,
        "GET /investments": 1,
        "GET /bills": 1,
    }
    assert fold_routes(labels) == {
        "GET /investments/{id}/transactions": 3,
        "GET /items/{id}": 1,
        "GET /investments": 1,
        "GET /bills": 1,
    }


def test_each_shape_reads_its_products_and_its_consents(section: Section) -> None:
    pages = 3  # three accounts of TINY's 5 rows: one page each
    for phase in bench_products.PHASES:
        base, every = results(section)[BASE, phase], results(section)[EVERY, phase]
        items = base.syncs
        assert base.pluggy == Counter(
            {"GET /items/{id}": items, "GET /accounts": items, "GET /v2/transactions": pages * items}
            | {"GET /consents": items}
        )
        investments = every.stored["investment"]  # one transactions list per investment, every sync
        assert every.pluggy - base.pluggy == Counter(
            {"GET /bills": items, "GET /investments": items, "GET /loans": items, "GET /identity": items}
            | {"GET /investments/{id}/transactions": investments}
        )
        # The investments routes count as one rate limit (pacing_route); GET /bills, /loans, /identity, /consents none.
        assert every.limited_by_route["GET /investments"] == items + investments
        assert "GET /consents" not in base.limited_by_route
        # The busiest limited route sets the syncs a minute: 3 transaction pages, or the investments' 1 + n calls.
        assert base.syncs_per_minute == (360 / pages, "GET /v2/transactions")
        busiest = max(pages, (items + investments) / items)
        assert every.syncs_per_minute[0] == pytest.approx(360 / busiest)


def test_writes_follow_pluggys_changes_only(section: Section) -> None:
    found = results(section)
    assert section.data["writes_match"] and section.data["quiet_product_puts"] == 0
    for shape in (EVERY, BASE):
        quiet = found[shape, QUIET]
        assert quiet.product_writes("put") == Counter() == quiet.changed
        assert quiet.usage.requests["dynamodb.BatchWriteItem"] == 0  # nothing new: no batch at all
    changed = found[EVERY, CHANGED].product_writes("put")
    items = bench_products.TINY.items
    # products_change: every investment's balance, one new BUY per item, its loan and its identity.
    assert changed["loan"] == changed["identity"] == changed["investment transaction"] == items
    assert changed["investment"] == found[EVERY, CHANGED].stored["investment"]
    assert found[BASE, CHANGED].product_writes("put") == Counter()


def test_the_consent_index_entry_is_written_once(section: Section) -> None:
    found = results(section)
    items = bench_products.TINY.items
    for shape in (EVERY, BASE):
        assert found[shape, FIRST].usage.by_record["consent:gsi"] == items  # KEYS_ONLY: under 1 KB, one unit each
        assert found[shape, QUIET].usage.by_record["consent:gsi"] == 0
        assert found[shape, FIRST].stored["consent"] == items
    assert found[BASE, FIRST].usage.items_written["consent:put"] == items


def test_the_mirror_holds_the_products_of_every_product_items_only(section: Section) -> None:
    found = results(section)
    extra = found[EVERY, CHANGED].stored - found[BASE, CHANGED].stored
    assert set(extra) == {"bill", "investment", "investment transaction", "loan", "identity"}
    assert extra["identity"] == extra["loan"] == bench_products.TINY.items
    # Investment transactions carry txDate: the byDate LSI holds them too.
    assert found[EVERY, CHANGED].storage["lsi"] > found[BASE, CHANGED].storage["lsi"] > 0
    for phase in bench_products.PHASES:
        every, base = found[EVERY, phase], found[BASE, phase]
        assert every.usage.write_units.total() >= base.usage.write_units.total()
        assert every.usage.cpu_ms > 0 and base.usage.cpu_ms > 0


def test_section_renders(section: Section) -> None:
    assert all(row[-1] in VERDICTS for row in section.summary.rows)
    assert [m.met for m in section.measures][-1] is True
    text = render_section(section, machine(), quick=True, seconds=1.0)
    assert text.startswith("<!-- bench:products start -->\n## Products")
    assert text.rstrip().endswith("<!-- bench:products end -->")
    assert "byConsentExpiry" in text
