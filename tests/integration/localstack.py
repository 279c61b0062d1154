"""What the tests that run the whole local stack share: a module-long stack, and the mirror == Pluggy check."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pluggy_pipeline.observability import SERVICE
from pluggy_pipeline.records import RecordStore, item_key
from pluggy_pipeline_local.stack import LocalStack, StackOptions


@contextlib.contextmanager
def module_stack(options: StackOptions | None = None) -> Iterator[LocalStack]:
    """A LocalStack for a whole module: it owns the process environment (moto endpoint, fake credentials)
    while it runs, and puts back the variables and the functions' shared logger level afterwards."""
    patch = pytest.MonkeyPatch()
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        patch.delenv(key, raising=False)
    shared = logging.getLogger(SERVICE)
    level = shared.level  # LocalStack sets the functions' shared logger to its quiet level
    stack = LocalStack(options or StackOptions(state_file=None)).start()
    try:
        yield stack
    finally:
        stack.stop()
        patch.undo()
        shared.setLevel(level)


def normal(value: Any) -> Any:
    """The emulator holds floats and ints, the store Decimals: compare numbers by value, exactly."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value)).normalize()
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normal(v) for v in value]
    return value


def store_of(local: LocalStack) -> RecordStore:
    assert local.aws is not None
    local_aws = local.aws
    assert local_aws is not None, "the stack is running"
    return RecordStore(lambda: local_aws.clients["dynamodb"], local_aws.resources.tables["RecordsTable"])


def assert_mirror(local: LocalStack, item_id: str, *, timeout: float = 90.0) -> int:
    """Once the pipeline drained: the stored item, accounts and transactions equal the emulator's, field by
    field. Returns how many transactions were compared."""
    assert local.emulator is not None
    assert local.wait_until_idle(timeout=timeout), "pipeline did not drain"
    truth = local.emulator.truth()
    store = store_of(local)
    stored_item = store.get(item_key(item_id))
    assert stored_item is not None and not stored_item.get("deleted")
    assert normal(stored_item["data"]) == normal(truth["items"][item_id])
    accounts = {a["accountId"]: a for a in store.accounts_of_item(item_id)}
    expected_accounts = {k: v for k, v in truth["accounts"].items() if v["itemId"] == item_id}
    assert set(accounts) == set(expected_accounts)
    compared = 0
    for account_id, account in accounts.items():
        assert normal(account["data"]) == normal(expected_accounts[account_id])
        stored = {r["transactionId"]: r["data"] for r in store.transactions_by_date(account_id)}
        expected = truth["transactions"][account_id]
        assert set(stored) == set(expected), account_id
        for tx_id, data in stored.items():
            assert normal(data) == normal(expected[tx_id]), tx_id
        compared += len(stored)
    return compared
