"""The processor's domain logic: one queued event in, Pluggy re-fetched, records written.

Events of one item share an SQS FIFO message group, so they are processed one at a time and in
order; versioned writes (Pluggy's updatedAt) still guard against replays from the dead-letter queue.

A webhook is a signal, not a fact: nothing is deleted and no payment status is stored on a payload's
word. item/deleted deletes only when Pluggy answers 404 for the item, transactions/deleted only the ids
Pluggy no longer returns, and payment statuses come from Pluggy's payments API (a record built from the
payload alone, when Pluggy cannot be asked, says so: verified false, source webhook).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from pluggy_pipeline import aws, coalesce
from pluggy_pipeline.config import ProcessorSettings
from pluggy_pipeline.errors import NotFoundError, PermanentError, RetryLater, TransientError
from pluggy_pipeline.event_queue import EventQueue
from pluggy_pipeline.event_store import ProcessingLog, StartOutcome, iso_now
from pluggy_pipeline.events import ITEM_EVENTS, PAYMENT_EVENTS, EventName
from pluggy_pipeline.observability import logger, metrics
from pluggy_pipeline.pacing import SharedPacer, parse_limits
from pluggy_pipeline.pluggy_client import PluggyAuthError, PluggyClient, PluggyRequestError
from pluggy_pipeline.products import PLURALS, MirrorCounts, ProductMirror
from pluggy_pipeline.records import JSON, RecordStore, account_key, account_ref_key, item_key, transaction_key
from pluggy_pipeline.secrets import pluggy_credentials

# Execution states after which an item's data can be collected (pluggy-api.md §8).
DATA_READY = frozenset({"SUCCESS", "PARTIAL_SUCCESS"})
# Pluggy answers these when the payments API is not enabled for the application: it cannot be asked.
_CANNOT_ASK_STATUSES = frozenset({401, 403, 405, 501})
# The SQS message group of the reconciliation schedule's messages (template ReconcileSchedule).
RECONCILE_GROUP = "reconcile"
# The longest clientUserId an item is bound to (GSI byUser's userPk); POST /connect-token takes the same.
CLIENT_USER_ID_MAX_LENGTH = 256


class AttemptsExhausted(PermanentError):
    """The event failed PROCESSOR_MAX_ATTEMPTS times: parked, to be redriven once the cause is fixed."""


class EventInProgress(TransientError):
    """Another invocation holds this eventId's lease: the message returns to the queue, untouched."""


@dataclass(frozen=True, slots=True)
class QueueMessage:
    message_id: str
    body: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    group_id: str | None = None  # SQS's MessageGroupId (a system attribute nobody but the sender sets)
    receipt_handle: str = ""

    @classmethod
    def from_sqs_record(cls, record: Mapping[str, Any]) -> QueueMessage:
        attributes = {
            name: str(value.get("stringValue", ""))
            for name, value in (record.get("messageAttributes") or {}).items()
            if isinstance(value, Mapping)
        }
        system = record.get("attributes") or {}
        group = system.get("MessageGroupId") if isinstance(system, Mapping) else None
        return cls(
            str(record.get("messageId", "")),
            str(record.get("body", "")),
            attributes,
            str(group) if group else None,
            str(record.get("receiptHandle") or ""),
        )

    @property
    def group(self) -> str:
        """What orders this message: its SQS message group (one item's events), else itself."""
        return self.group_id or self.attributes.get("groupId") or self.message_id

    @property
    def internal(self) -> bool:
        """Sent by the pipeline itself: the processor's fan-out (origin=pipeline) or the reconciliation
        schedule (EventBridge sets only the message group). The receiver marks every delivery
        origin=webhook, and a delivery chooses neither its attributes nor its group."""
        origin = self.attributes.get("origin")
        return origin == "pipeline" or (origin is None and self.group_id == RECONCILE_GROUP)


@dataclass
class Counts:
    values: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, amount: int = 1) -> None:
        if amount:
            self.values[name] = self.values.get(name, 0) + amount


def _parse(message: QueueMessage, body: str) -> tuple[str, str, JSON]:
    try:
        payload = json.loads(body)
    except ValueError:
        raise PermanentError("message body is not JSON") from None
    if not isinstance(payload, dict):
        raise PermanentError("message body is not a JSON object")
    event = payload.get("event")
    if not isinstance(event, str) or not event:
        raise PermanentError("message has no event name")
    event_id = message.attributes.get("eventId") or payload.get("eventId") or f"sqs-{message.message_id}"
    return str(event_id), event, payload


def _required_str(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise PermanentError(f"event has no {name}")
    return value


def usable_client_user_id(value: Any) -> str | None:
    """`value` if an item can be bound to it: 1-256 printable characters, no surrounding whitespace."""
    if not isinstance(value, str) or not value or len(value) > CLIENT_USER_ID_MAX_LENGTH:
        return None
    return value if value.isprintable() and value == value.strip() else None


def bind_user(item: JSON, stored: JSON | None, from_webhook: str | None) -> tuple[str | None, str | None]:
    """(clientUserId, where it came from) the item is stored under.

    Pluggy's own value wins; else the binding already stored; else the webhook's (items created with a Connect
    token whose `GET /items/{id}` lacks clientUserId). A webhook is a signal, not a fact: its value never
    replaces Pluggy's or an earlier binding, and a disagreement is logged (without the ids themselves).
    """
    own = usable_client_user_id(item.get("clientUserId"))
    earlier = usable_client_user_id(stored.get("clientUserId")) if stored else None
    if own:
        user, source = own, "pluggy"
        if earlier and earlier != own:
            logger.warning("Pluggy's clientUserId differs from the stored binding: Pluggy's replaces it")
    elif earlier:
        user, source = earlier, str((stored or {}).get("clientUserIdSource") or "pluggy")
    elif from_webhook:
        user, source = from_webhook, "webhook"
    else:
        return None, None
    if from_webhook and from_webhook != user:
        logger.warning("the webhook's clientUserId differs from the item's binding: ignored", extra={"kept": source})
    return user, source


def item_record(
    item: JSON,
    synced_at: str,
    *,
    full_sync_at: str | None = None,
    user: tuple[str | None, str | None] | None = None,
) -> JSON:
    """The item's record; `user` is (clientUserId, source) from bind_user, else Pluggy's own clientUserId."""
    item_id = str(item["id"])
    client_user_id, source = user if user is not None else (usable_client_user_id(item.get("clientUserId")), "pluggy")
    record: JSON = {
        **item_key(item_id),
        "kind": "item",
        "itemId": item_id,
        "status": item.get("status"),
        "executionStatus": item.get("executionStatus"),
        "errorCode": (item.get("error") or {}).get("code"),
        "updatedAt": item.get("updatedAt") or "",
        "syncedAt": synced_at,
        "lastFullSyncAt": full_sync_at,
        "deleted": False,
        "data": item,
        "syncPk": "ITEM",
        "syncSk": synced_at,
        # Open Finance: when the consent ends, and whether consented resources await the holder's authorization
        # at the institution (the app asks its user to authorize them); both are in `data` too.
        "consentExpiresAt": item.get("consentExpiresAt"),
        "resourcesPendingAuthorization": item.get("hasResourcesPendingAuthorization"),
    }
    if client_user_id:
        record.update(
            clientUserId=client_user_id,
            clientUserIdSource=source,  # "pluggy" (the item itself) or "webhook" (only an item/* payload said so)
            userPk=f"USER#{client_user_id}",
            userSk=f"ITEM#{item_id}",
        )
    return record


def account_record(account: JSON, item_id: str, watermark: str | None, settled: str | None = None) -> JSON:
    return {
        **account_key(item_id, str(account["id"])),
        "kind": "account",
        "accountId": str(account["id"]),
        "itemId": item_id,
        "updatedAt": account.get("updatedAt") or "",
        "txWatermark": watermark,  # the newest createdAt read
        "txSettled": settled,  # rows created up to here were read late enough that none can still appear
        "data": account,
    }


def account_ref_record(account_id: str, item_id: str) -> JSON:
    return {**account_ref_key(account_id), "kind": "accountRef", "accountId": account_id, "itemId": item_id}


def transaction_record(tx: JSON, item_id: str | None) -> JSON:
    account_id, tx_id = str(tx["accountId"]), str(tx["id"])
    return {
        **transaction_key(account_id, tx_id),
        "kind": "transaction",
        "transactionId": tx_id,
        "accountId": account_id,
        "itemId": item_id,
        "txDate": f"{tx.get('date') or ''}#{tx_id}",
        "updatedAt": tx.get("updatedAt") or "",
        "data": tx,
    }


def _instant(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def after(timestamp: str) -> str:
    """The instant just past a timestamp: +1 ms, Pluggy's timestamp resolution."""
    return _iso(_instant(timestamp) + timedelta(milliseconds=1))


def overlap_start(watermark: str, overlap: timedelta) -> str:
    """Where an incremental read starts: `overlap` before the newest createdAt seen.

    createdAt is when Pluggy ingested a row, and rows of one sync become visible out of order (parallel
    ingestion, rows after UPDATED): a row can appear later with a createdAt *older* than rows already read.
    Re-reading a window before the watermark catches those; rows already stored are recognised by their
    updatedAt and not written again.
    """
    if not overlap:
        return after(watermark)  # no overlap: just past the newest row read (createdAt is inclusive)
    return _iso(_instant(watermark) - overlap)


def _max(current: str | None, candidates: Iterable[Any]) -> str | None:
    values = [str(v) for v in candidates if v]
    if current:
        values.append(current)
    return max(values) if values else None


def _count_products(mirrored: MirrorCounts, counts: Counts) -> None:
    """A product mirror's writes and deletions as the sync's counts ("investments", "billsDeleted"...)."""
    for kind, amount in mirrored.written.items():
        counts.add(PLURALS[kind], amount)
    for kind, amount in mirrored.deleted.items():
        counts.add(f"{PLURALS[kind]}Deleted", amount)


def _count(name: str, value: int = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


class Processor:
    def __init__(
        self,
        pluggy: PluggyClient,
        records: RecordStore,
        log: ProcessingLog,
        queue: EventQueue,
        dead_letters: EventQueue,
        *,
        reconcile_after_hours: int = 26,
        reconcile_batch_limit: int = 500,
        consent_expiry_days: int = 7,
        tx_overlap_minutes: int = 30,
        max_attempts: int = 5,
        group_budget_seconds: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`max_attempts`: failed attempts before an event is parked (rate-limit holds do not count);
        `group_budget_seconds`: the time left below which a batch's remaining groups go back unstarted."""
        self.pluggy = pluggy
        self.records = records
        self.products = ProductMirror(pluggy, records)
        self._log = log
        self._queue = queue
        self._dead_letters = dead_letters
        self._reconcile_after = timedelta(hours=reconcile_after_hours)
        self._reconcile_limit = reconcile_batch_limit
        self._consent_expiry = timedelta(days=consent_expiry_days)
        self._tx_overlap = timedelta(minutes=tx_overlap_minutes)
        self.overlap_rows_read = 0
        self._max_attempts = max_attempts
        self._group_budget = group_budget_seconds
        self._clock = clock

    # -- a batch: each message group's events coalesced ------------------------------------------------

    def process_batch(
        self, messages: Sequence[QueueMessage], *, time_left: Callable[[], float] | None = None
    ) -> list[str]:
        """Handle an SQS batch group by group; the message ids to hand back to SQS (batchItemFailures).

        A group's events run as one unit (coalesce.plan). A failure hands back the group's messages from the
        failing one on, so its order holds, while other groups go on. Messages handed back for a rate limit,
        or not started for lack of time, are made visible again when they can run (EventQueue.hold), and
        those receives do not count as attempts.
        """
        back: list[str] = []
        holds: list[tuple[QueueMessage, float]] = []
        for group in coalesce.groups(messages, lambda message: message.group):
            if time_left is not None and time_left() < self._group_budget:
                holds.extend((message, 0.0) for message in group)  # never started: back at once
                back.extend(message.message_id for message in group)
                continue
            failed, error = self._process_group(group)
            back.extend(message.message_id for message in failed)
            if isinstance(error, RetryLater):
                holds.extend((message, error.retry_after) for message in failed)
        if holds:
            _count("MessagesHeld", len(holds))
            self._queue.hold(
                [(message.receipt_handle, seconds) for message, seconds in holds if message.receipt_handle]
            )
        return back

    def process(self, message: QueueMessage) -> None:
        """Handle one message. Transient errors propagate (the message returns to the queue); permanent
        ones are recorded and the message is parked in the dead-letter queue at once."""
        _, error = self._process_group([message])
        if error is not None:
            raise error

    def _process_group(self, group: Sequence[QueueMessage]) -> tuple[list[QueueMessage], BaseException | None]:
        """(messages to hand back, why): the events that could start run as one unit, in order."""
        prepared: list[tuple[QueueMessage, coalesce.Event]] = []
        rest: list[QueueMessage] = []
        rest_error: BaseException | None = None
        for index, message in enumerate(group):
            try:
                event = self._prepare(message)
            except Exception as exc:  # it cannot start now: it and its group's later messages wait
                rest, rest_error = list(group[index:]), exc
                break
            if event is not None:
                prepared.append((message, event))
        if prepared:
            failed, error = self._run_unit(prepared)
            if error is not None:
                return failed + rest, error
        return rest, rest_error

    def _prepare(self, message: QueueMessage) -> coalesce.Event | None:
        """Parse the message and start its event; None when there is nothing left to do (done or parked)."""
        event_id = message.attributes.get("eventId") or f"sqs-{message.message_id}"
        event_type = message.attributes.get("eventType") or "unknown"
        started = False
        try:
            body = message.body
            if message.attributes.get("payload") == "eventsTable":
                body = self._log.stored_payload(event_id)  # a large delivery: the receiver stored it whole
            event_id, event_type, payload = _parse(message, body)
            logger.append_keys(eventId=event_id, event=event_type)
            logger.set_correlation_id(event_id)
            if event_type.startswith("pipeline/") and not message.internal:
                raise PermanentError(f"{event_type} is reserved for the pipeline's own messages")
            from_delivery = message.attributes.get("origin") == "webhook"
            outcome, attempts = self._log.start_attempt(
                event_id, event_type, message.body, copy_payload=not from_delivery
            )
            if outcome is StartOutcome.ALREADY_PROCESSED:
                logger.info("already processed; skipping redelivered message")
                return None
            if outcome is StartOutcome.IN_PROGRESS:
                raise EventInProgress(f"event {event_id} is being processed by another invocation")
            started = True
            if attempts > self._max_attempts:
                # Holds (rate limits, a group waiting) are not attempts: only real failures get here.
                raise AttemptsExhausted(f"gave up after {attempts - 1} failed attempts")
        except EventInProgress:
            _count("EventsFailed")
            raise  # not ours to mark FAILED: the holder of the lease finishes it
        except AttemptsExhausted as exc:
            self._log.give_up(event_id)
            self._park(message, event_id, str(exc), exhausted=True)
            _count("EventsParked")
            return None
        except PermanentError as exc:
            self._record_failure(event_id, event_type, message.body, exc, permanent=True, started=started)
            self._park(message, event_id, str(exc))
            _count("EventsParked")
            return None
        except Exception as exc:
            self._record_failure(event_id, event_type, message.body, exc, permanent=False, started=started)
            _count("EventsFailed")
            raise
        return coalesce.Event(event_id, event_type, payload, message.attributes.get("receivedAt"))

    def _run_unit(
        self, prepared: Sequence[tuple[QueueMessage, coalesce.Event]]
    ) -> tuple[list[QueueMessage], BaseException | None]:
        """Run started events together; (messages to hand back, why), every event recorded either way."""
        events = [event for _, event in prepared]
        messages = [message for message, _ in prepared]
        counts = Counts()
        if len(events) > 1:
            logger.append_keys(eventId=events[0].event_id, event=events[0].name, coalescedEvents=len(events))
        try:
            handled = self._execute(events, counts)
        except RetryLater as exc:
            for event in events:
                self._release(event.event_id, f"{type(exc).__name__}: {exc}")
            return messages, exc
        except PluggyAuthError as exc:
            # Our credentials, not the messages: they stay queued and count as attempts.
            self._fail_all(events, exc)
            _count("PluggyAuthFailed")
            return messages, exc
        except PermanentError as exc:
            if len(prepared) == 1:
                message, event = prepared[0]
                self._record_failure(event.event_id, event.name, message.body, exc, permanent=True, started=True)
                self._park(message, event.event_id, str(exc))
                _count("EventsParked")
                return [], None
            # Which event is at fault is not known: each on its own, as if never coalesced.
            logger.warning("coalesced events failed together; handling them one by one", extra={"error": str(exc)})
            for index in range(len(prepared)):
                failed, error = self._run_unit(prepared[index : index + 1])
                if error is not None:
                    for event in events[index + 1 :]:
                        self._release(event.event_id, "an earlier event of its message group failed")
                    return failed + messages[index + 1 :], error
            return [], None
        except Exception as exc:
            self._fail_all(events, exc)
            return messages, exc
        shared = {**counts.values, "coalesced": len(events)} if len(events) > 1 else counts.values
        for index, event in enumerate(events):
            try:
                self._log.finish(event.event_id, shared, handled=handled.get(event.event_id, True))
            except Exception as exc:  # the work is done; the unfinished records' leases lapse and they rerun
                _count("EventsFailed", len(events) - index)
                return messages[index:], exc
        _count("EventsProcessed", len(events))
        logger.info("event processed", extra={"counts": shared, "handled": all(handled.values())})
        return [], None

    def _fail_all(self, events: Sequence[coalesce.Event], exc: BaseException) -> None:
        for event in events:
            self._record_failure(event.event_id, event.name, "", exc, permanent=False, started=True)
        _count("EventsFailed", len(events))

    def _release(self, event_id: str, reason: str) -> None:
        """A started event handed back unharmed (not its failure): best effort, it then starts again anyway."""
        try:
            self._log.hold(event_id, reason)
        except Exception as log_error:
            logger.error("could not record the hold in the event log", extra={"error": str(log_error)})

    def _record_failure(
        self, event_id: str, event_type: str, body: str, exc: BaseException, *, permanent: bool, started: bool
    ) -> None:
        """Best effort: the event log says why; failing to say so must not hide the original error."""
        try:
            if started or self._log.start(event_id, event_type, body) is StartOutcome.STARTED:
                self._log.fail(event_id, f"{type(exc).__name__}: {exc}", permanent=permanent)
        except Exception as log_error:
            logger.error("could not record the failure in the event log", extra={"error": str(log_error)})

    def _park(self, message: QueueMessage, event_id: str, reason: str, *, exhausted: bool = False) -> None:
        """`failureKind` tells the operator what to do: `permanent` needs a fix or nothing (a malformed
        message), `attempts` (transient failures, e.g. a Pluggy outage) is redriven once the cause is gone."""
        logger.error("parking message in the dead-letter queue", extra={"reason": reason})
        self._dead_letters.send(
            event_id=event_id,
            event_type=message.attributes.get("eventType", "unknown"),
            body=message.body,
            group_id=message.attributes.get("groupId") or event_id,
            # Unique per SQS message: parking the same event again (after a redrive) must not be deduplicated.
            dedup_id=f"{event_id}#park-{message.message_id}",
            extra_attributes={"failureReason": reason[:256], "failureKind": "attempts" if exhausted else "permanent"},
        )

    def _execute(self, events: Sequence[coalesce.Event], counts: Counts) -> dict[str, bool]:
        """Run the plan of `events`; {eventId: handled} (False for an event name this version does not know)."""
        handled = {event.event_id: True for event in events}
        gone: set[str] = set()  # items Pluggy answered 404 for: nothing of theirs is read again
        for step in coalesce.plan(events, usable_client_user_id):
            if isinstance(step, coalesce.ItemSync):
                if not self.sync_item(
                    step.item_id, counts, full=step.full, client_user_id=step.client_user_id, tx_from=step.tx_from
                ):
                    gone.add(step.item_id)
            elif isinstance(step, coalesce.IdsCheck):
                # Updated rows of an item never stored: sync it whole instead (deletions need no item).
                unknown = bool(step.updated) and self._item_unknown(step.item_id, counts)
                if step.item_id not in gone and not unknown:
                    self._check_ids(step, counts)
            else:
                event = step.event
                handled[event.event_id] = self.dispatch(
                    event.name, event.payload, counts, received_at=event.received_at
                )
        return handled

    def dispatch(self, event: str, payload: JSON, counts: Counts, *, received_at: str | None = None) -> bool:
        """Run the event's handler; False when the event is unknown (recorded, not failed).

        `received_at` (the receiver's receivedAt message attribute) versions records built from the event
        itself, so an old event replayed from the DLQ never overwrites a newer status.
        """
        name = EventName.parse(event)
        if name is EventName.ITEM_DELETED:
            # Deleted only if Pluggy says 404; an item Pluggy still has is synced instead.
            self.sync_item(_required_str(payload, "itemId"), counts)
        elif name in ITEM_EVENTS:
            # Pluggy echoes clientUserId on item/* events: it binds an item whose GET /items lacks it.
            user = usable_client_user_id(payload.get("clientUserId"))
            self.sync_item(_required_str(payload, "itemId"), counts, client_user_id=user)
        elif name in {EventName.ACCOUNT_CREATED, EventName.ACCOUNT_UPDATED}:
            self.sync_item(_required_str(payload, "itemId"), counts)
        elif name is EventName.PIPELINE_SYNC_ITEM:
            self.sync_item(_required_str(payload, "itemId"), counts, full=bool(payload.get("full")))
        elif name is EventName.TRANSACTIONS_CREATED:
            self.transactions_created(payload, counts)
        elif name is EventName.TRANSACTIONS_UPDATED:
            self.transactions_updated(payload, counts)
        elif name is EventName.TRANSACTIONS_DELETED:
            self.transactions_deleted(payload, counts)
        elif name is EventName.CONNECTOR_STATUS_UPDATED:
            self.connector_status(payload, counts, received_at=received_at)
        elif name in PAYMENT_EVENTS:
            self.payment_status(event, payload, counts, received_at=received_at)
        elif name is EventName.PIPELINE_RECONCILE:
            self.reconcile(counts)
        else:
            return False
        return True

    # -- items ----------------------------------------------------------------------------------------

    def sync_item(
        self,
        item_id: str,
        counts: Counts,
        *,
        full: bool = False,
        client_user_id: str | None = None,
        tx_from: Mapping[str, str] | None = None,
    ) -> bool:
        """Re-fetch the item; when its execution finished with data, refresh accounts and transactions.
        False when Pluggy no longer has the item (it is then deleted here too).

        `client_user_id` is the event's word for the item's user, used only as bind_user allows. `tx_from`
        names accounts whose transactions must be read from at least that createdAt whatever the item's
        state (the `transactions/created` events this sync serves).
        """
        try:
            item = self.pluggy.get_item(item_id)
        except NotFoundError:
            self.delete_item(item_id, counts)  # Pluggy says it is gone: that is the truth to mirror
            return False
        tx_from = tx_from or {}
        now = iso_now(self._clock())
        stored = self.records.get(item_key(item_id))
        ready = item.get("executionStatus") in DATA_READY
        previous_full = stored.get("lastFullSyncAt") if stored else None
        record = item_record(
            item,
            now,
            full_sync_at=now if (full and ready) else previous_full,
            user=bind_user(item, stored, client_user_id),
        )
        fresh = self.records.put_versioned(record)
        counts.add("items" if fresh else "staleItem")  # stale: a newer copy is stored already (a replay)
        detail = item.get("statusDetail") or {}

        def updated(*products: str) -> bool:
            # statusDetail is null on SUCCESS; on PARTIAL_SUCCESS only products with isUpdated true changed.
            return any((detail.get(p) or {}).get("isUpdated", True) is not False for p in products)

        if not fresh or not (ready or (full and item.get("lastUpdatedAt"))):
            # A replay, or error / waiting for the user: status and error are stored, there is no new data. A
            # full (reconciliation) sync still re-reads what Pluggy serves from the item's last good sync, so a
            # webhook lost before the item failed is healed while it stays failed.
            if tx_from:
                self._sync_accounts(item_id, counts, full=False, transactions=False, tx_from=tx_from)
            return True
        listed: list[JSON] | None = None
        if not ready:
            listed = self._sync_accounts(item_id, counts, full=True, transactions=True)
        elif updated("accounts", "creditCards") or updated("transactions") or tx_from:
            listed = self._sync_accounts(
                item_id, counts, full=full, transactions=updated("transactions"), tx_from=tx_from
            )

        def accounts() -> list[JSON]:  # bills need the card accounts: from this sync, else from the mirror
            if listed is not None:
                return listed
            return [dict(a["data"]) for a in self.records.accounts_of_item(item_id)]

        _count_products(self.products.sync(item, accounts, full=full or not ready), counts)
        return True

    def _sync_accounts(
        self, item_id: str, counts: Counts, *, full: bool, transactions: bool, tx_from: Mapping[str, str] | None = None
    ) -> list[JSON]:
        """Pluggy's accounts of the item, mirrored (and with `transactions`, their transactions); the list read."""
        tx_from = tx_from or {}
        accounts = self.pluggy.list_accounts(item_id)
        stored = {str(a["accountId"]): a for a in self.records.accounts_of_item(item_id)}
        for account in accounts:
            account_id = str(account["id"])
            previous = stored.get(account_id)
            watermark = previous.get("txWatermark") if previous else None
            settled = previous.get("txSettled") if previous else None
            if previous is None:  # before the account's record: a retry after a failure in between writes it again
                self.records.put(account_ref_record(account_id, item_id))
            if self.records.put_versioned(account_record(account, item_id, watermark, settled)):
                counts.add("accounts")
            if transactions or account_id in tx_from:
                marks = (None, None) if full else (watermark, settled)
                self._sync_transactions(item_id, account_id, *marks, counts, full=full, floor=tx_from.get(account_id))
        current = {str(a["id"]) for a in accounts}
        for account_id in set(stored) - current:  # the account is gone from Pluggy
            self._drop_account(item_id, account_id, counts)
        return accounts

    def _sync_transactions(
        self,
        item_id: str,
        account_id: str,
        watermark: str | None,
        settled: str | None,
        counts: Counts,
        *,
        full: bool,
        floor: str | None = None,
    ) -> None:
        """Pull what was created since the watermark (all history the first time) and advance it; from
        `floor` at the latest (a transactions/created event's createdAtFrom).

        Rows can become visible after we read with a createdAt older than the watermark (out-of-order
        ingestion, rows after UPDATED), at most `overlap` after their createdAt. Everything up to `settled` was
        read late enough to be complete. The window (settled, watermark] is re-read once, by the first read
        that comes `overlap` after the watermark (then all of it is complete); earlier reads start past the
        watermark, as without an overlap, so frequent events do not re-read a sync's rows again and again.
        """
        newest = watermark
        seen: set[str] = set()
        horizon = _iso(datetime.fromtimestamp(self._clock(), UTC) - self._tx_overlap)  # older rows are complete
        created_from = after(watermark) if watermark else None
        if watermark and self._tx_overlap and horizon >= watermark and (not settled or settled < watermark):
            # The window is complete now: re-read it once, from where completeness was last established.
            created_from = after(settled) if settled else overlap_start(watermark, self._tx_overlap)
        if floor and created_from and _iso(_instant(floor)) < created_from:
            created_from = _iso(_instant(floor))
        # Contiguous with what was complete before: this read can extend it up to its horizon.
        contiguous = created_from is None or (
            after(settled) >= created_from if settled else created_from < after(watermark or "")
        )
        boundary = _instant(watermark) if watermark else None

        def rows() -> Iterator[JSON]:
            nonlocal newest
            for page in self.pluggy.iter_transactions(account_id, created_at_from=created_from):
                newest = _max(newest, (tx.get("createdAt") for tx in page))
                if full:
                    seen.update(str(tx["id"]) for tx in page)
                if boundary is None:
                    fresh = page
                else:
                    # Rows from the overlap window were mostly read before: write only new or changed ones.
                    old = [tx for tx in page if tx.get("createdAt") and _instant(str(tx["createdAt"])) <= boundary]
                    fresh = [
                        tx for tx in page if not (tx.get("createdAt") and _instant(str(tx["createdAt"])) <= boundary)
                    ]
                    if old:
                        changed = self.records.changed_transactions(account_id, old)
                        self.overlap_rows_read += len(old)  # the overlap's cost, for the benchmarks
                        counts.add("overlapLate", len(changed))  # rows only the overlap caught
                        fresh = fresh + changed
                yield from (transaction_record(tx, item_id) for tx in fresh)

        # One stream per account: BatchWriteItem chunks stay full (25) whatever Pluggy's page size is.
        counts.add("transactions", self.records.batch_put(rows()).written)
        if full:
            # A full sync also heals deletions whose transactions/deleted webhook was lost.
            stale = [k for k in self.records.transaction_keys_of_account(account_id) if k["sk"][3:] not in seen]
            counts.add("transactionsDeleted", self.records.batch_delete(stale).written)
        marks: dict[str, Any] = {}
        if newest and newest != watermark:
            marks["txWatermark"] = newest
        if newest and self._tx_overlap and contiguous:
            reached = min(newest, horizon)
            if not settled or reached > settled:
                marks["txSettled"] = reached
        if marks:
            self.records.update(account_key(item_id, account_id), marks)

    def _drop_account(self, item_id: str, account_id: str, counts: Counts) -> None:
        counts.add(
            "transactionsDeleted",
            self.records.batch_delete(self.records.transaction_keys_of_account(account_id)).written,
        )
        mirrored = MirrorCounts.empty()
        self.products.drop_bills(account_id, mirrored)  # a card's bills go with it
        _count_products(mirrored, counts)
        self.records.delete(account_key(item_id, account_id))
        self.records.delete(account_ref_key(account_id))
        counts.add("accountsDeleted")

    def delete_item(self, item_id: str, counts: Counts) -> None:
        """item/deleted (or a 404): remove accounts and transactions, keep a tombstone of the item."""
        for account in self.records.accounts_of_item(item_id):
            self._drop_account(item_id, str(account["accountId"]), counts)
        mirrored = MirrorCounts.empty()
        self.products.drop_item_products(item_id, mirrored)  # the identity's personal data included
        _count_products(mirrored, counts)
        stored = self.records.get(item_key(item_id)) or {}
        tombstone = {
            **item_key(item_id),
            "kind": "item",
            "itemId": item_id,
            "status": "DELETED",
            "deleted": True,
            "deletedAt": iso_now(self._clock()),
            "updatedAt": stored.get("updatedAt", ""),
            "data": stored.get("data"),
            "clientUserId": stored.get("clientUserId"),
            "userPk": stored.get("userPk"),
            "userSk": stored.get("userSk"),
        }
        self.records.batch_put([tombstone])  # unconditional: a deletion wins over any earlier version
        counts.add("itemsDeleted")

    # -- transactions ---------------------------------------------------------------------------------

    def _item_unknown(self, item_id: str | None, counts: Counts) -> bool:
        """An item we never stored (its item/* webhooks were lost): sync it whole instead; True if done."""
        if item_id and self.records.get(item_key(item_id)) is None:
            self.sync_item(item_id, counts, full=True)
            return True
        return False

    def transactions_created(self, payload: JSON, counts: Counts) -> None:
        account_id = _required_str(payload, "accountId")
        item_id = payload.get("itemId") if isinstance(payload.get("itemId"), str) else None
        if self._item_unknown(item_id, counts):
            return
        created_from = payload.get("transactionsCreatedAtFrom")
        link = payload.get("createdTransactionsLinkV2") or payload.get("createdTransactionsLink")
        if isinstance(link, str) and link:
            pages = self.pluggy.iter_link(link, account_id=account_id)
        elif isinstance(created_from, str) and created_from:
            pages = self.pluggy.iter_transactions(account_id, created_at_from=created_from)
        else:
            raise PermanentError("transactions/created has neither a link nor transactionsCreatedAtFrom")
        newest: str | None = None

        def rows() -> Iterator[JSON]:
            nonlocal newest
            for page in pages:
                newest = _max(newest, (tx.get("createdAt") for tx in page))
                yield from (transaction_record(tx, item_id) for tx in page)

        counts.add("transactions", self.records.batch_put(rows()).written)
        if item_id and newest and isinstance(created_from, str):
            self._advance_watermark(item_id, account_id, created_from, newest)

    def _advance_watermark(self, item_id: str, account_id: str, created_from: str, newest: str) -> None:
        # Only when contiguous: moving past a gap would skip transactions created inside it forever.
        account = self.records.get(account_key(item_id, account_id))
        watermark = account.get("txWatermark") if account else None
        if watermark and watermark >= created_from and newest > watermark:
            self.records.update(account_key(item_id, account_id), {"txWatermark": newest})

    def transactions_updated(self, payload: JSON, counts: Counts) -> None:
        check = coalesce.IdsCheck(_required_str(payload, "accountId"), item_id=coalesce.str_field(payload, "itemId"))
        check.updated.update(dict.fromkeys(str(i) for i in payload.get("transactionIds") or []))
        if not self._item_unknown(check.item_id, counts):
            self._check_ids(check, counts)

    def transactions_deleted(self, payload: JSON, counts: Counts) -> None:
        """Delete only the ids Pluggy no longer returns: the payload names candidates, Pluggy decides."""
        ids = dict.fromkeys(str(i) for i in payload.get("transactionIds") or [])
        account_id = coalesce.str_field(payload, "accountId")
        checks: dict[str, coalesce.IdsCheck] = {}
        if account_id:
            checks[account_id] = coalesce.IdsCheck(account_id, deleted=ids)
        else:  # which account holds each id: our own copy says
            for row in filter(None, (self.records.find_transaction(i) for i in ids)):
                account = str(row["accountId"])
                checks.setdefault(account, coalesce.IdsCheck(account)).deleted[str(row["transactionId"])] = None
        for check in checks.values():
            self._check_ids(check, counts)

    def _check_ids(self, check: coalesce.IdsCheck, counts: Counts) -> None:
        """Ask Pluggy for every id at once: rows it returns for updated ids are written, ids it no longer
        returns are deleted (they were deleted since the events were sent)."""
        ids = list({**check.updated, **check.deleted})
        try:
            found = self.pluggy.get_transactions_by_ids(check.account_id, ids)
        except NotFoundError:
            found = []  # Pluggy no longer knows the account: none of its rows exist
        there = {str(tx["id"]) for tx in found}
        fresh = (transaction_record(tx, check.item_id) for tx in found if str(tx["id"]) in check.updated)
        counts.add("transactions", self.records.batch_put(fresh).written)
        counts.add("transactionsKept", sum(1 for i in check.deleted if i in there and i not in check.updated))
        gone = (transaction_key(check.account_id, i) for i in ids if i not in there)
        counts.add("transactionsDeleted", self.records.batch_delete(gone).written)

    # -- connectors and payments (never re-fetched: the event is the data) ----------------------------

    def connector_status(self, payload: JSON, counts: Counts, *, received_at: str | None = None) -> None:
        data: JSON = payload["data"] if isinstance(payload.get("data"), dict) else {}
        connector_id = payload.get("connectorId") or payload.get("id") or data.get("connectorId")
        if connector_id is None:
            raise PermanentError("connector/status_updated has no connector id")
        record = {
            "pk": f"CONNECTOR#{connector_id}",
            "sk": "STATUS",
            "kind": "connector",
            "connectorId": str(connector_id),
            "status": data.get("status"),
            "version": received_at or iso_now(self._clock()),
            "data": payload,
        }
        if self.records.put_versioned(record, version_attribute="version"):
            counts.add("connectors")

    def payment_status(self, event: str, payload: JSON, counts: Counts, *, received_at: str | None = None) -> None:
        """Store what Pluggy's payments API says now about the payment(s) the event names."""
        family, _, action = event.partition("/")
        request_id = payload.get("paymentRequestId") if isinstance(payload.get("paymentRequestId"), str) else None
        targets: list[tuple[str, str]] = []
        if family == "payment_intent":
            if isinstance(payload.get("paymentIntentId"), str) and payload["paymentIntentId"]:
                targets.append(("PAYMENT_INTENT", payload["paymentIntentId"]))
            if request_id:
                targets.append(("PAYMENT_REQUEST", request_id))
        elif family == "scheduled_payment" and not action.startswith("all_"):
            schedule_id = payload.get("scheduledPaymentId")
            if isinstance(schedule_id, str) and schedule_id and request_id:
                targets.append(("SCHEDULED_PAYMENT", schedule_id))
        elif request_id:
            targets.append(("PAYMENT_REQUEST", request_id))
        if not targets:
            raise PermanentError(f"{event} has no payment id")
        for entity, entity_id in targets:
            self._mirror_payment(
                entity, entity_id, event, payload, counts, request_id=request_id, received_at=received_at
            )

    def _fetch_payment(self, entity: str, entity_id: str, request_id: str | None) -> JSON:
        if entity == "PAYMENT_INTENT":
            return self.pluggy.get_payment_intent(entity_id)
        if entity == "SCHEDULED_PAYMENT":
            return self.pluggy.get_payment_schedule(str(request_id), entity_id)
        return self.pluggy.get_payment_request(entity_id)

    def _mirror_payment(
        self,
        entity: str,
        entity_id: str,
        event: str,
        payload: JSON,
        counts: Counts,
        *,
        request_id: str | None,
        received_at: str | None,
    ) -> None:
        record: JSON = {
            "pk": f"{entity}#{entity_id}",
            "sk": "STATUS",
            "kind": entity.lower(),
            "paymentId": entity_id,
            "paymentRequestId": request_id,
            "bulkPaymentId": payload.get("bulkPaymentId"),
            "event": event,
        }
        try:
            fetched = self._fetch_payment(entity, entity_id, request_id)
        except NotFoundError:
            # Pluggy does not know it: a forged or mistaken event. Nothing is stored on its word.
            logger.warning("payment named by the event is unknown to Pluggy; not stored", extra={"entity": entity})
            counts.add("paymentsNotFound")
            return
        except PluggyRequestError as exc:
            if exc.status not in _CANNOT_ASK_STATUSES:
                raise
            # Pluggy cannot be asked (payments not enabled for this application): keep the signal, marked as
            # such, ranked below anything verified so a verified status always wins.
            record.update(
                status=f"WEBHOOK:{event.partition('/')[2].upper()}",
                verified=False,
                source="webhook",
                version=f"0#{received_at or iso_now(self._clock())}",
                error=payload.get("error"),
                data=payload,
            )
        else:
            # Versioned on Pluggy's updatedAt: a late event re-fetches too, so it can only store newer data.
            record.update(
                status=fetched.get("status"),
                verified=True,
                source="pluggy",
                version=f"1#{fetched.get('updatedAt') or iso_now(self._clock())}",
                error=fetched.get("errorDetail"),
                data=fetched,
            )
        if self.records.put_versioned(record, version_attribute="version"):
            counts.add("payments")

    # -- reconciliation -------------------------------------------------------------------------------

    def reconcile(self, counts: Counts) -> None:
        """Queue a full sync of every item not synced within the window: heals lost webhooks. Then count the
        active consents that expire soon (ConsentsExpiringSoon): their users must renew them."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        cutoff = iso_now((now - self._reconcile_after).timestamp())
        bucket = now.strftime("%Y%m%d%H")
        stale = self.records.items_synced_before(cutoff, self._reconcile_limit)
        _count("StaleItems", len(stale))  # emitted when 0 too, so the alarm sees healthy sweeps
        for item_id in stale:
            body = json.dumps({"event": EventName.PIPELINE_SYNC_ITEM.value, "itemId": item_id, "full": True})
            self._queue.send(
                event_id=f"sync-{item_id}-{bucket}",
                event_type=EventName.PIPELINE_SYNC_ITEM.value,
                body=body,
                group_id=f"item:{item_id}",
                extra_attributes={"origin": "pipeline"},  # what lets the processor run a pipeline/* event
            )
            counts.add("itemsQueued")
        self._check_consent_expiry(now)

    def _check_consent_expiry(self, now: datetime) -> None:
        start, end = iso_now(now.timestamp()), iso_now((now + self._consent_expiry).timestamp())
        expiring = consents_expiring(self.records, start, end)
        _count("ConsentsExpiringSoon", len(expiring))  # 0 too: the alarm goes back to OK on data, not silence
        if expiring:
            # Item ids, counts and a date only: never personal data.
            items = sorted({item_id for _, item_id in expiring})
            logger.info(
                "consents expiring soon",
                extra={"consents": len(expiring), "itemIds": items[:100], "soonest": expiring[0][0]},
            )


def consents_expiring(records: RecordStore, start: str, end: str) -> list[tuple[str, str]]:
    """(expiresAt, itemId) of the active consents expiring from `start` to `end` (ISO), soonest first.

    GSI byConsentExpiry holds only active consents with an expiry (products.consent_record); one already expired
    is left out (it is past renewing in time; the item's status shows it), so the alarm does not fire forever for
    a consent its user never renews.
    """
    rows = records.query(
        IndexName="byConsentExpiry",
        KeyConditionExpression="consentPk = :p AND consentSk BETWEEN :start AND :end",
        ExpressionAttributeValues={":p": {"S": "CONSENT"}, ":start": {"S": start}, ":end": {"S": end}},
    )
    found = []
    for row in rows:
        expires, _, item_id = str(row["consentSk"]).partition("#")
        found.append((expires, item_id))
    return found


@functools.cache
def get_processor() -> Processor:
    """Built once per container: the Pluggy API key and HTTP pool survive across invocations."""
    settings = ProcessorSettings.from_env()
    dynamodb = functools.partial(aws.dynamodb, aws.PROCESSOR_CONFIG)
    sqs = functools.partial(aws.sqs, aws.PROCESSOR_CONFIG)
    # Without a table (an older template, a hand-made environment) calls are not paced.
    limits = parse_limits(settings.pluggy_calls_per_minute) if settings.pacer_table else {}
    pacer = SharedPacer(dynamodb, settings.pacer_table, limits, window_seconds=settings.pluggy_rate_window_seconds)
    return Processor(
        PluggyClient(settings.pluggy_base_url, pluggy_credentials(settings), pacer=pacer.acquire),
        RecordStore(dynamodb, settings.records_table),
        ProcessingLog(
            dynamodb, settings.events_table, ttl_days=settings.event_ttl_days, lease_seconds=settings.lease_seconds
        ),
        EventQueue(sqs, settings.queue_url),
        EventQueue(sqs, settings.dead_letter_queue_url),
        reconcile_after_hours=settings.reconcile_after_hours,
        reconcile_batch_limit=settings.reconcile_batch_limit,
        consent_expiry_days=settings.consent_expiry_alarm_days,
        tx_overlap_minutes=settings.tx_overlap_minutes,
        max_attempts=settings.max_attempts,
    )
