"""bench/cost.py measures before it prices: the counts behind docs/cost.md must be the pipeline's, and the billing
rules it applies (DynamoDB item sizes and index writes, read units, EventBridge chunks, Lambda's vCPU share) must
give what a hand computation gives."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pluggy_pipeline.publisher import entry_size
from pluggy_pipeline_local.template import create_resources, load_template

import bench.cost as cost

TEMPLATE = load_template()
RECORDS = cost.TableSchema.of(TEMPLATE["Resources"]["RecordsTable"]["Properties"])


def s(text: str) -> dict[str, str]:
    return {"S": text}


def sized(size: int, **attributes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The attributes plus a `data` string that makes the item exactly `size` bytes as DynamoDB counts them."""
    filler = size - cost.item_bytes(attributes) - len("data")
    return {**attributes, "data": s("x" * filler)}


def item_record(synced_at: str) -> dict[str, dict[str, Any]]:
    keys = {"pk": s("ITEM#i-1"), "sk": s("ITEM"), "userPk": s("USER#u-1"), "userSk": s("ITEM#i-1")}
    return sized(1500, **keys, syncPk=s("ITEM"), syncSk=s(synced_at))


def transaction(amount: str) -> dict[str, dict[str, Any]]:
    keys = {"pk": s("ACCOUNT#a-1"), "sk": s("TX#t-1"), "transactionId": s("t-1"), "txDate": s("2026-01-05#t-1")}
    return sized(1100, **keys, amount={"N": amount})


def test_item_size_follows_dynamodb_rules() -> None:
    item: dict[str, dict[str, Any]] = {
        "pk": s("ab"),  # 2 + 2
        "n": {"N": "-43.340"},  # 1 + (4 significant digits: 2 bytes) + 1
        "z": {"N": "0.05"},  # 1 + (1 digit: 1 byte) + 1
        "m": {"M": {"x": {"BOOL": True}}},  # 1 + 3 + (1 + 1 + 1 per element)
        "l": {"L": [s("é")]},  # 1 + 3 + (2 + 1 per element)
        "b": {"B": b"\x00\x01\x02"},  # 1 + 3 raw bytes
    }
    assert cost.item_bytes(item) == 4 + 4 + 3 + 7 + 7 + 4
    assert cost.item_bytes(sized(1500, pk=s("ITEM#i-1"))) == 1500


def test_write_units_count_every_index_the_item_is_in() -> None:
    """Hand-computed against template.yaml's RecordsTable: LSI byDate (ALL), GSIs byTransactionId (KEYS_ONLY),
    byUser (ALL), bySyncDue (KEYS_ONLY), byConsentExpiry (KEYS_ONLY, only consents: none of the writes below)."""
    assert [(i.name, i.projected, i.local) for i in RECORDS.indexes] == [
        ("byDate", None, True),
        ("byTransactionId", (), False),
        ("byUser", None, False),
        ("bySyncDue", (), False),
        ("byConsentExpiry", (), False),
    ]
    # An item synced again: 1,500 bytes -> 2 units in the table; byUser holds all of it (2 units, its key unchanged);
    # its syncSk moves in bySyncDue: the old entry deleted (1) and the new one put (1).
    synced = cost.write_units(item_record("2026-01-01T00:00:00Z"), item_record("2026-01-02T00:00:00Z"), RECORDS)
    assert synced == Counter(table=2, gsi=2 + 1 + 1)
    # A new transaction of 1,100 bytes: 2 units in the table, 2 in byDate (all of it), 1 in byTransactionId (keys).
    assert cost.write_units(None, transaction("-10.5"), RECORDS) == Counter(table=2, lsi=2, gsi=1)
    # Its amount changed: byDate's entry is updated in place; byTransactionId holds no amount, so no write there.
    assert cost.write_units(transaction("-10.5"), transaction("-12.5"), RECORDS) == Counter(table=2, lsi=2)
    # Rewritten unchanged: the table write only. Deleted: every entry is deleted too.
    assert cost.write_units(transaction("-10.5"), transaction("-10.5"), RECORDS) == Counter(table=2)
    assert cost.write_units(transaction("-10.5"), None, RECORDS) == Counter(table=2, lsi=2, gsi=1)
    # An account ref is in no index: one unit.
    ref = {"pk": s("ACCOUNTREF#a-1"), "sk": s("ACCOUNT"), "kind": s("accountRef"), "itemId": s("i-1")}
    assert cost.write_units(None, ref, RECORDS) == Counter(table=1)
    assert cost.record_kind(ref) == "account ref" and cost.record_kind({"eventId": s("e")}) == "event (EventsTable)"


def test_a_consent_write_reaches_the_sparse_consent_index() -> None:
    # An active consent of 1,200 bytes: 2 units in the table, 1 in byConsentExpiry (its keys only); revoked, it
    # loses consentPk/consentSk and leaves the sparse index: the entry's delete is 1 unit. Rewritten unchanged: 0.
    keys = {"pk": s("ITEM#i-1"), "sk": s("CONSENT#c-1")}
    active = sized(1200, **keys, consentPk=s("CONSENT"), consentSk=s("2027-01-01T00:00:00Z#i-1"))
    revoked = sized(1200, **keys, revokedAt=s("2026-06-01T00:00:00Z"))
    assert cost.write_units(None, active, RECORDS) == Counter(table=2, gsi=1)
    assert cost.write_units(active, revoked, RECORDS) == Counter(table=2, gsi=1)
    assert cost.write_units(active, active, RECORDS) == Counter(table=2)


def test_record_kinds_and_storage_follow_records_py() -> None:
    kinds = {
        ("ITEM#i", "ITEM"): "item",
        ("ITEM#i", "ACCOUNT#a"): "account",
        ("ITEM#i", "INVESTMENT#v"): "investment",
        ("ITEM#i", "LOAN#l"): "loan",
        ("ITEM#i", "IDENTITY"): "identity",
        ("ITEM#i", "CONSENT#c"): "consent",
        ("ACCOUNT#a", "TX#t"): "transaction",
        ("INVESTMENT#v", "ITX#t"): "investment transaction",
        ("BILLS#a", "BILL#2026-01-12#b"): "bill",
        ("PAYMENT_INTENT#p", "STATUS"): "payment intent",
    }
    assert {key: cost.record_kind({"pk": s(key[0]), "sk": s(key[1])}) for key in kinds} == kinds
    # Storage: the item plus 100 bytes; an index entry (here byDate's, ALL: the whole item) plus 100 bytes; a
    # KEYS_ONLY entry holds the table's keys and its own.
    row = transaction("-10.5")
    entry = {name: row[name] for name in ("pk", "sk", "transactionId")}
    assert cost.stored_bytes(row, RECORDS) == Counter(
        table=1100 + 100, lsi=1100 + 100, gsi=cost.item_bytes(entry) + 100
    )


def test_the_meter_applies_the_rules_to_real_calls() -> None:
    """The hooks read each item before and after the write, through moto, and count what write_units says."""
    with mock_aws():
        client: Any = boto3.client("dynamodb", region_name="us-east-1")
        table = create_resources(TEMPLATE, dynamodb=client, sqs=boto3.client("sqs", region_name="us-east-1")).tables
        name = table["RecordsTable"]
        meter = cost.Meter({name: RECORDS}, client)
        session = boto3.session.Session(region_name="us-east-1")
        usage = cost.Usage(memory_mb=512)
        with meter.installed(session):
            metered: Any = session.client("dynamodb")
            meter.active = usage
            metered.put_item(TableName=name, Item=transaction("-10.5"))
            metered.batch_write_item(RequestItems={name: [{"PutRequest": {"Item": transaction("-12.5")}}]})
            metered.delete_item(TableName=name, Key={"pk": s("ACCOUNT#a-1"), "sk": s("TX#t-1")})
            with pytest.raises(metered.exceptions.ConditionalCheckFailedException):
                metered.put_item(TableName=name, Item=transaction("1"), ConditionExpression="attribute_exists(pk)")
            meter.active = None
        assert usage.write_units == Counter(table=2 + 2 + 2 + 2, lsi=2 + 2 + 2, gsi=1 + 1)
        assert usage.by_record == Counter({"transaction:table": 8, "transaction:lsi": 6, "transaction:gsi": 2})
        assert usage.requests == Counter(
            {"dynamodb.PutItem": 2, "dynamodb.BatchWriteItem": 1, "dynamodb.DeleteItem": 1}
        )
        assert meter.excluded > 0  # moto's and the hooks' CPU, kept out of the functions' compute


def test_read_units_event_chunks_and_vcpu_share() -> None:
    assert cost.read_units(4096, consistent=True) == 1 and cost.read_units(4097, consistent=True) == 2
    assert cost.read_units(4097, consistent=False) == 1 and cost.read_units(0, consistent=False) == 0.5
    # EventBridge bills each 64 KB chunk of an entry, sized by its own rule (Time counts 14 bytes).
    assert [cost.event_chunks(n) for n in (1, 65_536, 65_537, 256 * 1024)] == [1, 1, 2, 4]
    entry = {"Source": "pluggy-pipeline", "DetailType": "Transactions Changed", "Detail": "x" * 70_000, "Time": "t"}
    assert entry_size(entry) == 14 + 15 + 20 + 70_000 and cost.event_chunks(entry_size(entry)) == 2
    # 256 MB is 256/1769 of a vCPU: 10 ms of CPU here take 10 / that on Lambda, plus the network allowances.
    usage = cost.Usage(memory_mb=256, cpu_ms=10.0, pluggy_calls=1, requests=Counter({"dynamodb.PutItem": 2}))
    assert usage.billed_ms() == pytest.approx(10 * 1769 / 256 + 2 * cost.AWS_CALL_MS + cost.PLUGGY_CALL_MS)
    assert cost.Usage(memory_mb=3538, cpu_ms=10.0).billed_ms() == 10.0  # one thread uses one vCPU at most


def test_cost_is_computed_from_measured_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost, "COST_DOC", tmp_path / "cost.md")
    section = cost.run(quick=True)
    data = section.data
    events, day = data["events"], data["usage"][cost.DAY]
    assert events >= 10 and data["delivered"] == events  # every webhook of the mix answered 2XX
    assert data["connected_2xx"] == 2 * data["items"] and data["reads"] == {200: 3 * data["calls"]}
    for volume in cost.VOLUMES:
        lines = data["monthly"][volume]
        assert lines["Total"] == pytest.approx(sum(v for k, v in lines.items() if k != "Total"))
        # API Gateway is priced per request: exactly the volume at the list price.
        assert lines["API Gateway (REST)"] == pytest.approx(volume * cost.PRICES["api_gateway_rest_per_million"] / 1e6)
        # Writes: every unit the day's calls consumed, the indexes' included; change events per 64 KB chunk.
        units = sum(u.write_units.total() for u in day.values())
        price = cost.PRICES["dynamodb_write_request_unit_per_million"]
        assert lines["DynamoDB writes (table and indexes)"] == pytest.approx(units * volume / events * price / 1e6)
        chunks = day[cost.PUBLISHER].event_chunks
        price = cost.PRICES["eventbridge_custom_events_per_million"]
        assert lines["EventBridge PutEvents"] == pytest.approx(chunks * volume / events * price / 1e6)
        assert lines["DynamoDB Streams reads (Lambda trigger)"] == 0
    # The processor's writes reach the GSIs (new transactions, every item sync moving syncSk) and the LSI.
    wcu = data["wcu_per_event"]
    assert wcu["gsi"] > 0 and wcu["lsi"] > 0 and wcu["table"] >= 2  # the receiver's claim and the processor's
    assert day[cost.PUBLISHER].events_put > 0 and day[cost.PUBLISHER].records > 0
    # An account ref per account connected, one unit each; the route columns are per 1,000 calls.
    connected = data["usage"][cost.CONNECTED]
    refs = sum(u.by_record["account ref:table"] for u in connected.values())
    assert refs == data["accounts_per_item"] * data["items"] > 0
    api = cost.PRICES["api_gateway_rest_per_million"]
    assert data["apps"]["GET /items/{itemId}"]["API Gateway (REST)"] == pytest.approx(1000 * api / 1e6)
    # Compute excludes moto: the receiver on in-memory fakes (no botocore either) takes less than moto-excluded.
    receiver = day[cost.RECEIVER]
    assert 0 < data["receiver_with_fakes_ms"] < receiver.cpu_ms / receiver.invocations
    # Costs grow with volume, and the document was written from the same figures.
    monthly = data["monthly"]
    assert monthly[100_000_000]["Total"] > monthly[1_000_000]["Total"] > monthly[10_000]["Total"]
    text = (tmp_path / "cost.md").read_text()
    assert f"${monthly[1_000_000]['Total']:,.2f}" in text and "## The app's routes, per 1,000 calls" in text
    assert not math.isnan(monthly[100_000_000]["Total"])
    # Products: bench/products.py's run priced per 1,000 item syncs, both shapes, in the same document.
    from bench import products as bench_products

    every, base = bench_products.EVERY, bench_products.BASE
    first, quiet, _ = bench_products.PHASES
    results, dollars = data["products"], data["products_dollars"]
    tally = results[every, first]
    price = cost.PRICES["dynamodb_write_request_unit_per_million"]
    expected = tally.usage.write_units.total() * 1000 / tally.syncs * price / 1e6
    assert dollars[every, first]["DynamoDB writes (table and indexes)"] == pytest.approx(expected)
    assert dollars[every, quiet]["Total"] > dollars[base, quiet]["Total"] > 0  # more lists read, nothing written
    assert data["products_storage_kb"][every] > data["products_storage_kb"][base] > 0
    assert "## Products: the processor per 1,000 item syncs" in text and "byConsentExpiry" in text
    # The day's items have every product: their product records were written when they were connected.
    written = sum(u.by_record["investment:table"] + u.by_record["consent:gsi"] for u in connected.values())
    assert written > 0
