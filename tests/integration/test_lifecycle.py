"""A sandbox item's whole life through the local stack: every webhook goes emulator -> HTTP front -> real
receiver -> SQS (moto server) -> real processor -> DynamoDB, and after each step the stored records equal
the emulator's data field by field."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pluggy_pipeline.records import RecordStore, item_key
from pluggy_pipeline_local.stack import LocalStack, StackOptions


def _normal(value: Any) -> Any:
    # The emulator holds floats and ints, the store Decimals: compare numbers by value, exactly.
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value)).normalize()
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    return value


@pytest.fixture
def local() -> Iterator[LocalStack]:
    # Function scope: the stack's environment must be applied after conftest's autouse isolation.
    with LocalStack(StackOptions(state_file=None)) as stack:
        yield stack


def _store(local: LocalStack) -> RecordStore:
    assert local.aws is not None
    return RecordStore(lambda: local.aws.clients["dynamodb"], local.aws.resources.tables["RecordsTable"])  # type: ignore[union-attr]


def _assert_mirror(local: LocalStack, item_id: str) -> int:
    assert local.emulator is not None
    assert local.wait_until_idle(timeout=90), "pipeline did not drain"
    truth = local.emulator.truth()
    store = _store(local)
    stored_item = store.get(item_key(item_id))
    assert stored_item is not None
    assert _normal(stored_item["data"]) == _normal(truth["items"][item_id])
    accounts = {a["accountId"]: a for a in store.accounts_of_item(item_id)}
    expected_accounts = {k: v for k, v in truth["accounts"].items() if v["itemId"] == item_id}
    assert set(accounts) == set(expected_accounts)
    compared = 0
    for account_id, account in accounts.items():
        assert _normal(account["data"]) == _normal(expected_accounts[account_id])
        stored = {r["transactionId"]: r["data"] for r in store.transactions_by_date(account_id)}
        expected = truth["transactions"][account_id]
        assert set(stored) == set(expected), account_id
        for tx_id, data in stored.items():
            assert _normal(data) == _normal(expected[tx_id]), tx_id
        compared += len(stored)
    return compared


def _event_log(local: LocalStack) -> list[dict[str, Any]]:
    assert local.aws is not None
    return local.aws.clients["dynamodb"].scan(TableName=local.aws.resources.tables["EventsTable"])["Items"]  # type: ignore[no-any-return]


def test_item_lifecycle_mirror_equals_pluggy(local: LocalStack) -> None:
    emulator = local.emulator
    assert emulator is not None
    item = emulator.create_item("lifecycle-user")
    item_id = item["id"]
    assert _assert_mirror(local, item_id) > 0

    emulator.sync_item(item_id, add=4, change=3, delete=2, restate_credit_card=2, new_account=True)
    _assert_mirror(local, item_id)

    emulator.fail_item(item_id, "USER_AUTHORIZATION_PENDING")
    _assert_mirror(local, item_id)
    stored = _store(local).get(item_key(item_id))
    assert stored is not None and stored["errorCode"] == "USER_AUTHORIZATION_PENDING"

    emulator.reconnect_item(item_id)
    emulator.sync_item(item_id, add=2)
    _assert_mirror(local, item_id)

    account_ids = [a["accountId"] for a in _store(local).accounts_of_item(item_id)]
    assert len(account_ids) == 4  # checking, savings, card, and the account added by the sync
    emulator.delete_item(item_id)
    assert local.wait_until_idle(timeout=90)
    store = _store(local)
    tombstone = store.get(item_key(item_id))
    assert tombstone is not None and tombstone["deleted"] is True and tombstone["status"] == "DELETED"
    assert store.accounts_of_item(item_id) == []
    for account_id in account_ids:
        assert list(store.transaction_keys_of_account(account_id)) == []

    # Every webhook Pluggy sent was answered 2XX at the first attempt and processed exactly once.
    deliveries = emulator.deliveries()
    assert deliveries and all(d["statusCode"] in (200, 202) and d["attempt"] == 1 for d in deliveries)
    log = _event_log(local)
    assert {r["status"]["S"] for r in log} == {"PROCESSED"}
    assert all(r["attempts"]["N"] == "1" for r in log)
    assert local.queue_depth("EventDeadLetterQueue") == 0
