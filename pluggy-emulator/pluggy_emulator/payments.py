"""Payments: payment requests, payment intents and scheduled payments (Pix Agendado), pluggy-api.md section 12.

A payment webhook sent through `Payments.record_event` first changes these resources the way Pluggy's own
would have changed (creating any the event names that do not exist yet), so re-fetching after the event
sees a state that agrees with it. Statuses only move forward: an event that would take a resource back
(a late `payment_intent/created` after `completed`, a `scheduled_payment/created` after `error`) is still
delivered, as a late or repeated delivery is, but changes nothing; a terminal status is final (a completed
request may still move into a refund). `PaymentsApi` (below) holds the emulator's lock around every call.
"""

from __future__ import annotations

import copy
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pluggy_emulator.common import Clock, JsonDict, PluggyApiError, iso_from_ms

# PaymentRequest [SDK = OAS = PYSDK]; the rank orders the in-progress statuses, so they only move forward.
REQUEST_PROGRESS: dict[str, int] = {
    "CREATED": 0,
    "IN_PROGRESS": 1,
    "WAITING_PAYER_AUTHORIZATION": 2,
    "SCHEDULED": 3,
    "AUTHORIZED": 3,
}
REQUEST_REFUNDS = ("REFUND_IN_PROGRESS", "REFUNDED", "REFUND_ERROR")
REQUEST_TERMINAL = frozenset({"COMPLETED", "ERROR", "EXPIRED", "CANCELED", "REFUNDED", "REFUND_ERROR"})
REQUEST_ERRORS = frozenset({"ERROR", "REFUND_ERROR"})
REQUEST_STATUSES = frozenset({*REQUEST_PROGRESS, *REQUEST_TERMINAL, *REQUEST_REFUNDS})
INTENT_PROGRESS: dict[str, int] = {
    name: rank
    for rank, name in enumerate(
        (
            "STARTED",
            "ENQUEUED",
            "CONSENT_AWAITING_AUTHORIZATION",
            "CONSENT_AUTHORIZED",
            "PAYMENT_PENDING",
            "PAYMENT_PARTIALLY_ACCEPTED",
            "PAYMENT_SETTLEMENT_PROCESSING",
            "PAYMENT_SETTLEMENT_DEBTOR_ACCOUNT",
        )
    )
}
# Success, then the SDK's PAYMENT_INTENT_ERROR_STATUSES.
INTENT_TERMINAL = frozenset(
    {"PAYMENT_COMPLETED", "PAYMENT_REJECTED", "ERROR", "CANCELED", "CONSENT_REJECTED", "EXPIRED"}
)
SCHEDULE_TERMINAL = frozenset({"COMPLETED", "ERROR", "CANCELED"})
SCHEDULE_STATUSES = frozenset({"SCHEDULED", *SCHEDULE_TERMINAL})

PAYMENT_INTENT_EVENTS: dict[str, str] = {
    "payment_intent/created": "CONSENT_AWAITING_AUTHORIZATION",
    "payment_intent/waiting_payer_authorization": "PAYMENT_PARTIALLY_ACCEPTED",
    "payment_intent/completed": "PAYMENT_COMPLETED",
    "payment_intent/error": "PAYMENT_REJECTED",
}
# What the intent's event does to its request (none for an error: the payer may retry with a new intent).
_REQUEST_AFTER_INTENT: dict[str, str | None] = {
    "payment_intent/created": "IN_PROGRESS",
    "payment_intent/waiting_payer_authorization": "WAITING_PAYER_AUTHORIZATION",
    "payment_intent/completed": "COMPLETED",  # SCHEDULED for a request with a schedule
    "payment_intent/error": None,
}
SCHEDULED_PAYMENT_EVENTS: dict[str, str] = {
    "scheduled_payment/created": "SCHEDULED",
    "scheduled_payment/completed": "COMPLETED",
    "scheduled_payment/error": "ERROR",
    "scheduled_payment/canceled": "CANCELED",
}
PAYMENT_REQUEST_EVENTS: dict[str, str | None] = {
    "scheduled_payment/all_created": "SCHEDULED",
    "scheduled_payment/all_completed": "COMPLETED",
    "payment_request/updated": None,  # the status comes with the event (`data.status`)
}
PAYMENT_EVENTS = frozenset({*PAYMENT_INTENT_EVENTS, *SCHEDULED_PAYMENT_EVENTS, *PAYMENT_REQUEST_EVENTS})

DEFAULT_SCHEDULE_ERROR: JsonDict = {
    "title": "Pagamento nao realizado",
    "code": "SALDO_INSUFICIENTE",
    "description": "Saldo insuficiente na conta do pagador",
}
DEFAULT_INTENT_ERROR_CODE = "PAGAMENTO_RECUSADO_SPI"
DEFAULT_AMOUNT = 100.0
DEFAULT_DESCRIPTION = "Pagamento via Pix"
SANDBOX_ISPB = "00000000"
_E2E_ALPHABET = string.ascii_uppercase + string.digits
_BRT = timedelta(hours=-3)


def request_not_found() -> PluggyApiError:
    return PluggyApiError(404, "payment request not found", "PAYMENT_REQUEST_NOT_FOUND")


def intent_not_found() -> PluggyApiError:
    return PluggyApiError(404, "payment intent not found", "PAYMENT_INTENT_NOT_FOUND")


def schedule_not_found() -> PluggyApiError:
    # Pluggy's code for this one is not documented anywhere we could read; this name is the emulator's.
    return PluggyApiError(404, "scheduled payment not found", "SCHEDULED_PAYMENT_NOT_FOUND")


def request_may_move(current: str, new: str) -> bool:
    """Whether a payment request in `current` can still become `new` (forward only; refunds after COMPLETED)."""
    if current == new:
        return False
    if current == "COMPLETED":
        return new in REQUEST_REFUNDS
    if current == "REFUND_IN_PROGRESS":
        return new in ("REFUNDED", "REFUND_ERROR")
    if current in REQUEST_TERMINAL:
        return False
    if new in REQUEST_TERMINAL:
        return True
    return new in REQUEST_PROGRESS and REQUEST_PROGRESS[new] > REQUEST_PROGRESS.get(current, 0)


def intent_may_move(current: str, new: str) -> bool:
    if current == new or current in INTENT_TERMINAL:
        return False
    return new in INTENT_TERMINAL or INTENT_PROGRESS.get(new, -1) > INTENT_PROGRESS.get(current, -1)


def _end_to_end_id(now_ms: int) -> str:
    """A Pix end-to-end id: E + ISPB (8) + yyyyMMddHHmm (UTC) + 11 characters."""
    stamp = datetime.fromtimestamp(now_ms // 1000, tz=UTC).strftime("%Y%m%d%H%M")
    return f"E{SANDBOX_ISPB}{stamp}" + "".join(secrets.choice(_E2E_ALPHABET) for _ in range(11))


def _error_detail(error: Mapping[str, Any], keys: tuple[str, ...]) -> JsonDict:
    detail = {k: error[k] for k in keys if k in error}
    if "detail" in keys and "detail" not in detail and "title" in error:
        detail["detail"] = error["title"]
    return detail


def _request_error_detail(error: Mapping[str, Any] | None) -> JsonDict:
    detail = _error_detail(error or {}, ("code", "providerMessage"))
    return detail if "code" in detail else {"code": DEFAULT_INTENT_ERROR_CODE, **detail}


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """What a payment webhook names and says; ids not given are generated. `status` is
    payment_request/updated's `data.status`."""

    event: str
    payment_request_id: str | None = None
    payment_intent_id: str | None = None
    bulk_payment_id: str | None = None
    scheduled_payment_id: str | None = None
    error: Mapping[str, Any] | None = None
    status: str | None = None
    end_to_end_id: str | None = None
    scheduled_date: str | None = None


class Payments:
    """Payment requests, intents and schedules: the API's reads and the changes behind payment webhooks."""

    def __init__(self, clock: Clock, *, page_size: int = 500) -> None:
        self._clock = clock
        self._page_size = page_size
        self._requests: dict[str, JsonDict] = {}
        self._intents: dict[str, JsonDict] = {}
        self._schedules: dict[str, dict[str, JsonDict]] = {}  # request id -> schedule id -> schedule
        self._schedule_request: dict[str, str] = {}  # schedule id -> its request id

    # --- reads (the API) -------------------------------------------------------------------------

    def get_request(self, request_id: str) -> JsonDict:
        request = self._requests.get(request_id)
        if request is None:
            raise request_not_found()
        return copy.deepcopy(request)

    def list_requests(self, query: Mapping[str, list[str]]) -> JsonDict:
        """`GET /payments/requests?page&pageSize&from&to&status`: newest first; from/to filter the creation day."""
        page = self._positive(query, "page", 1)
        size = min(self._positive(query, "pageSize", self._page_size), 500)
        bounds = {name: (query.get(name) or [""])[-1][:10] for name in ("from", "to")}
        for name, day in bounds.items():
            if day:
                try:
                    datetime.strptime(day, "%Y-%m-%d")
                except ValueError:
                    raise PluggyApiError(400, f"{name} must be a date (yyyy-mm-dd)") from None
        statuses = {v for value in query.get("status", []) for v in value.split(",") if v}
        rows = [
            r
            for r in sorted(self._requests.values(), key=lambda r: str(r["createdAt"]), reverse=True)
            if (not bounds["from"] or str(r["createdAt"])[:10] >= bounds["from"])
            and (not bounds["to"] or str(r["createdAt"])[:10] <= bounds["to"])
            and (not statuses or r["status"] in statuses)
        ]
        total_pages = max(1, -(-len(rows) // size))
        chunk = rows[(page - 1) * size : page * size]
        return {"page": page, "total": len(rows), "totalPages": total_pages, "results": copy.deepcopy(chunk)}

    def get_intent(self, intent_id: str) -> JsonDict:
        intent = self._intents.get(intent_id)
        if intent is None:
            raise intent_not_found()
        return copy.deepcopy(intent)

    def list_intents(self, query: Mapping[str, list[str]]) -> JsonDict:
        """`GET /payments/intents?paymentRequestId=&page&pageSize`: the request's intents, oldest first."""
        request_id = (query.get("paymentRequestId") or [""])[-1]
        if not request_id:
            raise PluggyApiError(400, "paymentRequestId is required")
        page = self._positive(query, "page", 1)
        size = min(self._positive(query, "pageSize", self._page_size), 500)
        rows = [i for i in self._intents.values() if (i["paymentRequest"] or {}).get("id") == request_id]
        total_pages = max(1, -(-len(rows) // size))
        chunk = rows[(page - 1) * size : page * size]
        return {"page": page, "total": len(rows), "totalPages": total_pages, "results": copy.deepcopy(chunk)}

    @staticmethod
    def _positive(query: Mapping[str, list[str]], name: str, default: int) -> int:
        values = query.get(name)
        if not values:
            return default
        value = values[-1]
        if not value.isdigit() or int(value) < 1:
            raise PluggyApiError(400, f"{name} must be a positive integer")
        return int(value)

    def list_schedules(self, request_id: str) -> JsonDict:
        """`GET /payments/requests/{id}/schedules`: one page envelope (Pluggy takes no paging parameters)."""
        if request_id not in self._requests:
            raise request_not_found()
        rows = sorted(self._schedules.get(request_id, {}).values(), key=lambda s: s["scheduledDate"])
        return {"page": 1, "total": len(rows), "totalPages": 1, "results": copy.deepcopy(rows)}

    def get_schedule(self, request_id: str, schedule_id: str) -> JsonDict:
        """`GET /payments/requests/{requestId}/schedules/{scheduleId}` (in the Node SDK only)."""
        if request_id not in self._requests:
            raise request_not_found()
        schedule = self._schedules.get(request_id, {}).get(schedule_id)
        if schedule is None:
            raise schedule_not_found()
        return copy.deepcopy(schedule)

    def truth(self) -> JsonDict:
        return {
            "requests": copy.deepcopy(self._requests),
            "intents": copy.deepcopy(self._intents),
            "schedules": {r: copy.deepcopy(rows) for r, rows in self._schedules.items()},
        }

    # --- changes ---------------------------------------------------------------------------------

    def _now(self) -> str:
        return iso_from_ms(self._clock.now_ms())

    def create_request(
        self,
        *,
        request_id: str | None = None,
        amount: float | None = DEFAULT_AMOUNT,
        description: str = DEFAULT_DESCRIPTION,
        client_payment_id: str | None = None,
        schedule: Mapping[str, Any] | None = None,
        status: str = "CREATED",
    ) -> JsonDict:
        """A PaymentRequest as `POST /payments/requests` makes it (no webhook is sent for it)."""
        rid = request_id or str(uuid.uuid4())
        if rid in self._requests:
            raise ValueError(f"payment request {rid} already exists")
        if status not in REQUEST_STATUSES:
            raise ValueError(f"status must be one of {sorted(REQUEST_STATUSES)}")
        now = self._now()
        request: JsonDict = {
            "id": rid,
            "amount": amount,
            "fees": None,
            "description": description,
            "status": status,
            "clientPaymentId": client_payment_id,
            "callbackUrls": None,
            "recipient": None,
            "customer": None,
            "schedule": dict(schedule) if schedule is not None else None,
            "bulkPaymentId": None,
            "errorDetail": None,
            "isSandbox": True,
            "createdAt": now,
            "updatedAt": now,
        }
        self._requests[rid] = request
        return copy.deepcopy(request)

    def _set_request_status(self, request: JsonDict, status: str, error: Mapping[str, Any] | None = None) -> None:
        if not request_may_move(request["status"], status):
            return
        request["status"] = status
        if status in REQUEST_ERRORS:
            request["errorDetail"] = _request_error_detail(error)
        request["updatedAt"] = self._now()

    def _request_for_event(self, request_id: str, status: str, *, scheduled: bool = False) -> JsonDict:
        """The request an event names; one Pluggy has but the emulator never saw is created in `status`."""
        request = self._requests.get(request_id)
        if request is None:
            schedule = {"type": "CUSTOM"} if scheduled else None
            self.create_request(request_id=request_id, status=status, schedule=schedule)
            return self._requests[request_id]
        if scheduled and request["schedule"] is None:
            # The emulator first saw it through its intent; a schedule event shows it is a scheduled request,
            # so the COMPLETED its intent gave it becomes SCHEDULED (until its schedules end).
            request["schedule"] = {"type": "CUSTOM"}
            if status == "SCHEDULED" and request["status"] == "COMPLETED" and not self._schedules.get(request_id):
                request["status"] = "SCHEDULED"
            request["updatedAt"] = self._now()
        return request

    def record_event(self, sent: PaymentEvent) -> JsonDict:
        """Apply what `event` says happened and return the webhook's fields (ids not given are generated).

        Ids already known keep their owner: an intent or schedule named without a request id is reported
        under the request it belongs to; naming another request raises ValueError.
        """
        event, error = sent.event, sent.error
        if event not in PAYMENT_EVENTS:
            raise ValueError(f"not a payment event: {event}")
        if sent.status is not None and event != "payment_request/updated":
            raise ValueError("status only applies to payment_request/updated")
        if event in PAYMENT_INTENT_EVENTS:
            fields = self._intent_event(
                event, sent.payment_request_id, sent.payment_intent_id, sent.bulk_payment_id, error
            )
        elif event in SCHEDULED_PAYMENT_EVENTS:
            fields = self._schedule_event(
                event,
                request_id=sent.payment_request_id,
                schedule_id=sent.scheduled_payment_id,
                error=error,
                end_to_end_id=sent.end_to_end_id,
                scheduled_date=sent.scheduled_date,
            )
        else:
            fields = self._request_event(event, sent.payment_request_id, sent.status, error)
        if error is not None and "error" not in fields:
            fields["error"] = dict(error)
        return fields

    def _intent_owner(
        self, intent_id: str, request_id: str | None, bulk_id: str | None
    ) -> tuple[str | None, str | None]:
        """(request id, bulk payment id) the intent belongs to; a new one gets a new request unless bulk."""
        intent = self._intents.get(intent_id)
        if intent is None:
            return (None, bulk_id) if bulk_id is not None else (request_id or str(uuid.uuid4()), None)
        owner_request = (intent["paymentRequest"] or {}).get("id")
        owner_bulk = (intent["bulkPayment"] or {}).get("id")
        if bulk_id is not None and bulk_id != owner_bulk:
            raise ValueError(f"payment intent {intent_id} does not belong to bulk payment {bulk_id}")
        if bulk_id is None and request_id is not None and request_id != owner_request:
            raise ValueError(f"payment intent {intent_id} belongs to payment request {owner_request}")
        return owner_request, owner_bulk

    def _intent_event(
        self,
        event: str,
        request_id: str | None,
        intent_id: str | None,
        bulk_id: str | None,
        error: Mapping[str, Any] | None,
    ) -> JsonDict:
        iid = intent_id or str(uuid.uuid4())
        request_id, bulk_id = self._intent_owner(iid, request_id, bulk_id)
        # A bulk payment's intent: Pluggy names the bulk payment instead of a payment request.
        fields: JsonDict = {"bulkPaymentId": bulk_id} if bulk_id is not None else {"paymentRequestId": request_id}
        fields["paymentIntentId"] = iid
        after = _REQUEST_AFTER_INTENT[event]
        request = self._request_for_event(request_id, after or "IN_PROGRESS") if request_id is not None else None
        new_status = PAYMENT_INTENT_EVENTS[event]
        intent = self._intents.get(iid)
        if intent is None:
            intent = {
                "id": iid,
                "status": new_status,
                "paymentRequest": {"id": request_id} if request_id is not None else None,
                "bulkPayment": {"id": bulk_id} if bulk_id is not None else None,
                "connector": None,
                "consentUrl": None,
                "referenceId": None,
                "paymentMethod": "PIX",
                "pixData": None,
                "debtor": None,
                "errorDetail": None,
                "createdAt": None,
                "updatedAt": None,
            }
            self._intents[iid] = intent
        elif intent_may_move(intent["status"], new_status):
            intent["status"] = new_status
        else:
            return fields  # a late or repeated delivery: Pluggy's intent is already past this
        if new_status == "PAYMENT_REJECTED":
            detail = _error_detail(error or {}, ("code", "description", "detail"))
            intent["errorDetail"] = detail if "code" in detail else {"code": DEFAULT_INTENT_ERROR_CODE, **detail}
        elif new_status == "PAYMENT_COMPLETED":
            intent["referenceId"] = _end_to_end_id(self._clock.now_ms())  # the Pix end-to-end id
        intent["updatedAt"] = self._now()
        intent["createdAt"] = intent["createdAt"] or intent["updatedAt"]
        if request is not None and after is not None:
            scheduled = after == "COMPLETED" and request["schedule"] is not None
            self._set_request_status(request, "SCHEDULED" if scheduled else after)
        return fields

    def _default_date(self, request_id: str) -> str:
        """The day after the request's last scheduled date, or tomorrow (Sao Paulo time)."""
        taken = [s["scheduledDate"] for s in self._schedules.get(request_id, {}).values()]
        if taken:
            day = datetime.strptime(max(taken), "%Y-%m-%d").replace(tzinfo=UTC).date()
        else:
            day = (datetime.fromtimestamp(time.time(), tz=UTC) + _BRT).date()
        return (day + timedelta(days=1)).isoformat()

    def _schedule_event(
        self,
        event: str,
        *,
        request_id: str | None,
        schedule_id: str | None,
        error: Mapping[str, Any] | None,
        end_to_end_id: str | None,
        scheduled_date: str | None,
    ) -> JsonDict:
        sid = schedule_id or str(uuid.uuid4())
        owner = self._schedule_request.get(sid)
        if owner is not None and request_id is not None and request_id != owner:
            raise ValueError(f"scheduled payment {sid} belongs to payment request {owner}")
        if scheduled_date is not None:
            try:
                datetime.strptime(scheduled_date, "%Y-%m-%d")
            except ValueError:
                raise ValueError("scheduled_date must be yyyy-mm-dd") from None
        rid = owner or request_id or str(uuid.uuid4())
        fields: JsonDict = {"paymentRequestId": rid, "scheduledPaymentId": sid}
        new_status = SCHEDULED_PAYMENT_EVENTS[event]
        request = self._request_for_event(rid, "SCHEDULED", scheduled=True)
        rows = self._schedules.setdefault(rid, {})
        schedule = rows.get(sid)
        if schedule is None:
            schedule = {
                "id": sid,
                "description": request["description"],
                "status": new_status,
                "scheduledDate": scheduled_date or self._default_date(rid),
                "endToEndId": None,
                "errorDetail": None,
            }
            rows[sid] = schedule
            self._schedule_request[sid] = rid
            changed = True
        else:
            changed = schedule["status"] not in SCHEDULE_TERMINAL and new_status != schedule["status"]
            if changed:
                schedule["status"] = new_status
        if event == "scheduled_payment/error":
            fields["error"] = dict(error or DEFAULT_SCHEDULE_ERROR)
            if changed:
                schedule["errorDetail"] = _error_detail(fields["error"], ("code", "description", "detail"))
        if event == "scheduled_payment/completed":
            if changed:
                schedule["endToEndId"] = end_to_end_id or _end_to_end_id(self._clock.now_ms())
            fields["endToEndId"] = schedule["endToEndId"] or end_to_end_id or _end_to_end_id(self._clock.now_ms())
        if new_status == "SCHEDULED":
            self._set_request_status(request, "SCHEDULED")
        return fields

    def _request_event(
        self, event: str, request_id: str | None, status: str | None, error: Mapping[str, Any] | None
    ) -> JsonDict:
        target = PAYMENT_REQUEST_EVENTS[event]
        if target is None:
            if status is None:
                raise ValueError(f"{event} needs a status (sent as data.status)")
            if status not in REQUEST_STATUSES:
                raise ValueError(f"status must be one of {sorted(REQUEST_STATUSES)}")
            target = status
        rid = request_id or str(uuid.uuid4())
        is_new = rid not in self._requests
        request = self._request_for_event(rid, target, scheduled=event.startswith("scheduled_payment/"))
        if is_new and target in REQUEST_ERRORS:
            request["errorDetail"] = _request_error_detail(error)
        self._set_request_status(request, target, error)
        fields: JsonDict = {"paymentRequestId": rid}
        if event == "payment_request/updated":
            fields["data"] = {"status": target}
        return fields


class PaymentsApi:
    """The payment reads and control calls, each under the emulator's lock; events go out through `emit`."""

    def __init__(self, payments: Payments, lock: threading.RLock, emit: Callable[..., str]) -> None:
        self._payments = payments
        self._lock = lock
        self._emit = emit  # Events.emit

    def truth(self) -> JsonDict:
        return self._payments.truth()

    def send_event(self, sent: PaymentEvent) -> str:
        """A payment_intent/*, scheduled_payment/* or payment_request/updated event Pluggy really sends.

        The resources it names are created or moved first (see payments.py), so the payments API agrees
        with the event; missing ids are generated. `status` is payment_request/updated's `data.status`.
        """
        with self._lock:
            fields = self._payments.record_event(sent)
            # The deprecated `id` (typed as required by the SDK): the most specific resource the event names.
            entity = fields.get("paymentIntentId") or fields.get("scheduledPaymentId") or fields.get("paymentRequestId")
            return self._emit(sent.event, {"id": entity, **fields} if entity else fields)

    def create_payment_request(
        self,
        *,
        payment_request_id: str | None = None,
        amount: float | None = DEFAULT_AMOUNT,
        description: str = DEFAULT_DESCRIPTION,
        client_payment_id: str | None = None,
        schedule: Mapping[str, Any] | None = None,
    ) -> JsonDict:
        with self._lock:
            return self._payments.create_request(
                request_id=payment_request_id,
                amount=amount,
                description=description,
                client_payment_id=client_payment_id,
                schedule=schedule,
            )

    def get_payment_request(self, request_id: str) -> JsonDict:
        with self._lock:
            return self._payments.get_request(request_id)

    def list_payment_requests(self, query: Mapping[str, list[str]]) -> JsonDict:
        with self._lock:
            return self._payments.list_requests(query)

    def get_payment_intent(self, intent_id: str) -> JsonDict:
        with self._lock:
            return self._payments.get_intent(intent_id)

    def list_payment_intents(self, query: Mapping[str, list[str]]) -> JsonDict:
        with self._lock:
            return self._payments.list_intents(query)

    def list_payment_schedules(self, request_id: str) -> JsonDict:
        with self._lock:
            return self._payments.list_schedules(request_id)

    def get_payment_schedule(self, request_id: str, schedule_id: str) -> JsonDict:
        with self._lock:
            return self._payments.get_schedule(request_id, schedule_id)
