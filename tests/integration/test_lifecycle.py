"""A sandbox item's whole life through the local stack: every webhook goes emulator -> HTTP front -> real
receiver -> SQS (moto server) -> real processor -> DynamoDB, and after each step the stored records equal
the emulator's data field by field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pluggy_pipeline.records import item_key
from pluggy_pipeline_local.stack import LocalStack, StackOptions

from tests.integration.localstack import assert_mirror, store_of


@pytest.fixture
def local() -> Iterator[LocalStack]:
    # Function scope: the stack's environment must be applied after conftest's autouse isolation.
    with LocalStack(StackOptions(state_file=None)) as stack:
        yield stack


def _event_log(local: LocalStack) -> list[dict[str, Any]]:
    assert local.aws is not None
    return local.aws.clients["dynamodb"].scan(TableName=local.aws.resources.tables["EventsTable"])["Items"]  # type: ignore[no-any-return]


def test_item_lifecycle_mirror_equals_pluggy(local: LocalStack) -> None:
    emulator = local.emulator
    assert emulator is not None
    item = emulator.create_item("lifecycle-user")
    item_id = item["id"]
    assert assert_mirror(local, item_id) > 0

    emulator.sync_item(item_id, add=4, change=3, delete=2, restate_credit_card=2, new_account=True)
    assert_mirror(local, item_id)

    emulator.fail_item(item_id, "USER_AUTHORIZATION_PENDING")
    assert_mirror(local, item_id)
    stored = store_of(local).get(item_key(item_id))
    assert stored is not None and stored["errorCode"] == "USER_AUTHORIZATION_PENDING"

    emulator.reconnect_item(item_id)
    emulator.sync_item(item_id, add=2)
    assert_mirror(local, item_id)

    account_ids = [a["accountId"] for a in store_of(local).accounts_of_item(item_id)]
    assert len(account_ids) == 4  # checking, savings, card, and the account added by the sync
    emulator.delete_item(item_id)
    assert local.wait_until_idle(timeout=90)
    store = store_of(local)
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
