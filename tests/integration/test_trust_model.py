"""Webhooks are signals, not facts: the findings of the trust-model review, replayed through the local stack.

Every delivery here goes emulator -> HTTP front -> real receiver -> SQS (moto server) -> real processor, signed
and authenticated as Pluggy sends it: the attacker of these tests holds the shared secret (or the URL token),
which is exactly what the threat model says it must not be enough for. Each test names its finding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pluggy_pipeline.records import item_key
from pluggy_pipeline.secrets import derive_url_token
from pluggy_pipeline_local.devsecrets import LOCAL_WEBHOOK_SECRET
from pluggy_pipeline_local.stack import LocalStack

from tests.integration.localstack import assert_mirror, module_stack, store_of

IDLE_TIMEOUT = 90.0


@pytest.fixture(autouse=True)
def _isolated_env() -> Iterator[None]:
    """Replaces conftest's: the module's LocalStack owns the process environment for all its tests."""
    yield


@pytest.fixture(scope="module")
def local() -> Iterator[LocalStack]:
    with module_stack() as stack:
        yield stack


def _idle(local: LocalStack) -> None:
    assert local.wait_until_idle(timeout=IDLE_TIMEOUT), "pipeline did not drain"


def _event_record(local: LocalStack, event_id: str) -> dict[str, Any] | None:
    assert local.aws is not None
    table = local.aws.resources.tables["EventsTable"]
    item = local.aws.clients["dynamodb"].get_item(TableName=table, Key={"eventId": {"S": event_id}}).get("Item")
    return item  # type: ignore[no-any-return]


def _answers(local: LocalStack, event_id: str) -> list[int | None]:
    assert local.emulator is not None
    return [d["statusCode"] for d in local.emulator.deliveries() if d["eventId"] == event_id]


def _new_item(local: LocalStack, user: str, **options: Any) -> str:
    assert local.emulator is not None
    item = local.emulator.create_item(user, transactions_per_account=3, **options)
    assert_mirror(local, item["id"])
    return str(item["id"])


def _canonical_hash(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- finding 1: forged deletions --------------------------------------------------------------------


def test_forged_item_deleted_and_transactions_deleted_delete_nothing(local: LocalStack) -> None:
    emulator = local.emulator
    assert emulator is not None
    item_id = _new_item(local, "forged-delete")
    rows = assert_mirror(local, item_id)
    truth = emulator.truth()
    account_id = next(a for a, acc in truth["accounts"].items() if acc["itemId"] == item_id)
    tx_ids = list(truth["transactions"][account_id])
    forged_item = emulator.send_event("item/deleted", itemId=item_id, triggeredBy="CLIENT")
    forged_rows = emulator.send_event(
        "transactions/deleted", itemId=item_id, accountId=account_id, transactionIds=tx_ids
    )
    forged_no_account = emulator.send_event("transactions/deleted", itemId=item_id, transactionIds=tx_ids[:1])
    assert assert_mirror(local, item_id) == rows  # Pluggy still has all of it: nothing was deleted
    for event_id in (forged_item, forged_rows, forged_no_account):
        assert _answers(local, event_id) == [202]
        record = _event_record(local, event_id)
        assert record is not None and record["status"]["S"] == "PROCESSED"
    # The genuine deletion still works: Pluggy answers 404, the cascade runs.
    emulator.delete_item(item_id)
    _idle(local)
    tombstone = store_of(local).get(item_key(item_id))
    assert tombstone is not None and tombstone["deleted"] is True
    assert list(store_of(local).transaction_keys_of_account(account_id)) == []


# -- finding 2: payment statuses taken as fact ------------------------------------------------------


def test_forged_payment_completion_is_not_stored_as_completed(local: LocalStack) -> None:
    emulator = local.emulator
    assert emulator is not None
    emulator.send_payment_event("payment_intent/created", payment_request_id="pr-t1", payment_intent_id="pi-t1")
    _idle(local)
    forged = emulator.send_event("payment_intent/completed", paymentRequestId="pr-t1", paymentIntentId="pi-t1")
    _idle(local)
    assert _answers(local, forged) == [202]
    record = store_of(local).get({"pk": "PAYMENT_INTENT#pi-t1", "sk": "STATUS"})
    assert record is not None
    assert (record["status"], record["verified"], record["source"]) == (
        "CONSENT_AWAITING_AUTHORIZATION",
        True,
        "pluggy",
    )
    # Then the genuine completion, and a late genuine created: Pluggy's final word stays.
    emulator.send_payment_event("payment_intent/completed", payment_request_id="pr-t1", payment_intent_id="pi-t1")
    emulator.send_payment_event("payment_intent/created", payment_request_id="pr-t1", payment_intent_id="pi-t1")
    _idle(local)
    record = store_of(local).get({"pk": "PAYMENT_INTENT#pi-t1", "sk": "STATUS"})
    assert record is not None and record["status"] == "PAYMENT_COMPLETED"
    request = store_of(local).get({"pk": "PAYMENT_REQUEST#pr-t1", "sk": "STATUS"})
    assert request is not None and request["status"] == "COMPLETED"
    # A payment Pluggy never heard of: nothing stored at all.
    unknown = emulator.send_event("payment_intent/completed", paymentRequestId="pr-none", paymentIntentId="pi-none")
    _idle(local)
    assert _answers(local, unknown) == [202]
    assert store_of(local).get({"pk": "PAYMENT_INTENT#pi-none", "sk": "STATUS"}) is None


# -- finding 3: internal events accepted from outside -----------------------------------------------


@pytest.mark.parametrize("event", ["pipeline/reconcile", "pipeline/sync_item"])
def test_internal_event_names_are_refused_from_outside(event: str, local: LocalStack) -> None:
    emulator = local.emulator
    assert emulator is not None
    item_id = _new_item(local, f"reserved-{event.rsplit('/', 1)[1]}")
    emulator.reset_stats()
    event_id = emulator.send_event(event, itemId=item_id, full=True)
    _idle(local)
    assert set(_answers(local, event_id)) == {400}  # every attempt (the emulator retries a 400) refused
    assert _event_record(local, event_id) is None
    assert emulator.stats().get("GET /items/{id}", 0) == 0  # no sync was forced
    # The real schedule still runs: its message reaches the queue on a path no delivery can use.
    local.trigger_reconcile()
    _idle(local)
    assert local.queue_depth("EventDeadLetterQueue") == 0


# -- finding 4: keyed and keyless events shared one id space ---------------------------------------


def test_an_outside_event_id_cannot_pre_claim_a_keyless_delivery(local: LocalStack) -> None:
    emulator = local.emulator
    assert emulator is not None
    item_id = _new_item(local, "preclaim")
    # The connector/status_updated Pluggy will send next has no eventId: the receiver keys it on its hash.
    upcoming = {
        "event": "connector/status_updated",
        "id": "0",
        "connectorId": "0",
        "data": {"status": "OFFLINE"},
        "clientId": emulator.client_id,
    }
    squatter = emulator.send_event("item/updated", eventId="sha256-" + _canonical_hash(upcoming), itemId=item_id)
    _idle(local)
    assert _answers(local, squatter) == [202]
    keyless = emulator.set_connector_status("OFFLINE")
    _idle(local)
    assert _answers(local, keyless) == [202]  # accepted, not "duplicate"
    record = store_of(local).get({"pk": "CONNECTOR#0", "sk": "STATUS"})
    assert record is not None and record["status"] == "OFFLINE"
    emulator.set_connector_status("ONLINE")
    _idle(local)


# -- finding 5: one eventId, two bodies -------------------------------------------------------------


def test_a_second_body_under_a_known_event_id_is_answered_200_and_never_processed(local: LocalStack) -> None:
    emulator = local.emulator
    assert emulator is not None
    item_id = _new_item(local, "conflict")
    first = emulator.send_event("item/updated", eventId="conflict-evt-1", itemId=item_id)
    _idle(local)
    second = emulator.send_event("item/updated", eventId="conflict-evt-1", itemId="not-an-item-of-ours")
    _idle(local)
    assert first == second == "conflict-evt-1"
    assert _answers(local, first) == [202, 200]
    answer = next(d["response"] for d in emulator.deliveries() if d["eventId"] == first and d["statusCode"] == 200)
    assert json.loads(answer) == {"status": "conflict", "eventId": first}
    record = _event_record(local, first)
    assert record is not None and json.loads(record["payload"]["S"])["itemId"] == item_id
    assert record["attempts"]["N"] == "1"
    assert store_of(local).get(item_key("not-an-item-of-ours")) is None  # the second body never ran


# -- finding 7: deliveries that cannot carry a header -----------------------------------------------


def test_per_item_webhook_url_deliveries_arrive_through_the_url_token_route(local: LocalStack) -> None:
    emulator = local.emulator
    assert emulator is not None
    client = local.pluggy_client()
    registered = client.list_webhooks()
    for webhook in registered:  # only the item's webhookUrl delivers: no header on any delivery
        client.delete_webhook(str(webhook["id"]))
    try:
        token_url = f"{local.webhook_url}/{derive_url_token(LOCAL_WEBHOOK_SECRET)}"
        item = emulator.create_item("per-item-url", transactions_per_account=3, webhook_url=token_url)
        assert_mirror(local, str(item["id"]))
        emulator.sync_item(str(item["id"]), add=2, change=1, delete=1)
        assert_mirror(local, str(item["id"]))
        deliveries = [d for d in emulator.deliveries() if d["url"] == token_url]
        assert len(deliveries) >= 4 and all(d["statusCode"] == 202 for d in deliveries)
        # The same item with a wrong token: refused (Pluggy does not retry a 401), nothing queued.
        wrong = f"{local.webhook_url}/{derive_url_token('not-our-secret')}"
        other = emulator.create_item("per-item-wrong", transactions_per_account=1, webhook_url=wrong)
        _idle(local)
        assert {d["statusCode"] for d in emulator.deliveries() if d["url"] == wrong} == {401}
        assert store_of(local).get(item_key(str(other["id"]))) is None
    finally:
        local.register()


# -- finding 9: bodies near the size limit ----------------------------------------------------------


def test_a_delivery_at_the_size_limit_is_processed(local: LocalStack) -> None:
    emulator = local.emulator
    assert emulator is not None
    item_id = _new_item(local, "big-body")
    payload = {
        "event": "item/updated",
        "eventId": "big-evt-1",
        "itemId": item_id,
        "pad": "",
        "clientId": emulator.client_id,
    }
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    limit = 256 * 1024
    event_id = emulator.send_event("item/updated", eventId="big-evt-1", itemId=item_id, pad="x" * (limit - size))
    _idle(local)
    [delivery] = [d for d in emulator.deliveries() if d["eventId"] == event_id]
    assert delivery["statusCode"] == 202
    record = _event_record(local, event_id)
    assert record is not None and record["status"]["S"] == "PROCESSED"
    assert len(record["payload"]["S"].encode()) == limit  # the stored copy is the whole body
    assert local.queue_depth("EventDeadLetterQueue") == 0
