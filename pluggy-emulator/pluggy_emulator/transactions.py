"""Transactions: `GET /v2/transactions` (cursor pages), the deprecated `GET /transactions` (numbered pages,
served until LEGACY_TRANSACTIONS_LAST_DAY), `GET /transactions/{id}` and `PATCH /transactions/{id}`.

Rows are listed newest date first, then by id (pluggy-api.md section 4); rows a timed sync has not made
visible yet are skipped. The cursor (`after`) is the last row's sort key, so a page boundary survives rows
being added or removed between calls.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from pluggy_emulator.categories import description_of
from pluggy_emulator.common import BRT_OFFSET_MS, JsonDict, PluggyApiError, iso_from_ms, parse_iso_ms
from pluggy_emulator.store import Store

if TYPE_CHECKING:
    from pluggy_emulator.auth import KeyInfo

MAX_IDS = 500
# Legacy `GET /transactions` (pluggy-api.md section 4): served, deprecated, through this day (Sao Paulo time).
LEGACY_TRANSACTIONS_LAST_DAY = "2026-12-31"
LEGACY_DEFAULT_PAGE_SIZE = 20  # the SDK's documented default (the OAS says 500); callers should pass pageSize
MAX_PAGE_SIZE = 500


@dataclass
class PageRequest:
    """A validated `GET /v2/transactions` query (the legacy route builds one too)."""

    account_id: str
    date_from: str | None
    date_to: str | None
    created_at_from: str | None
    ids: set[str] | None
    after: tuple[int, str] | None
    raw: dict[str, str]


class Transactions:
    """The transaction routes over the store's rows."""

    def __init__(self, store: Store, *, page_size: int) -> None:
        self._store = store
        self.page_size = page_size

    def get(self, tx_id: str) -> JsonDict:
        with self._store.lock:
            return copy.deepcopy(self._store.require_transaction(tx_id))

    def update_category(self, tx_id: str, body: Any) -> JsonDict:
        """`PATCH /transactions/{id}` `{categoryId}`: the user's category; answers the updated transaction.

        No webhook: Pluggy documents none for this change (section 19).
        """
        category_id = body.get("categoryId") if isinstance(body, dict) else None
        if not isinstance(category_id, str) or not category_id:
            raise PluggyApiError(400, "categoryId is required")
        with self._store.lock:
            row = self._store.require_transaction(tx_id)
            try:
                description = description_of(category_id)
            except KeyError:
                raise PluggyApiError(400, f"categoryId {category_id} is not a valid category") from None
            row["categoryId"] = category_id
            row["category"] = description
            row["updatedAt"] = iso_from_ms(self._store.clock.now_ms())
            return copy.deepcopy(row)

    def legacy_served(self) -> bool:
        """Whether the emulator's clock is still on or before the legacy endpoint's last day (Sao Paulo)."""
        today = datetime.fromtimestamp((self._store.clock.wall_ms() - BRT_OFFSET_MS) // 1000, tz=UTC).date()
        return today.isoformat() <= LEGACY_TRANSACTIONS_LAST_DAY

    def list_legacy(self, query: Mapping[str, list[str]], key: KeyInfo) -> JsonDict:
        """Deprecated `GET /transactions` (section 4): page-numbered, newest first.

        accountId (required); from/to (yyyy-mm-dd); page (from 1); pageSize (1-500, default 20); ids (at
        most 500, comma-separated or repeated; then from/to are ignored); billId; createdAtFrom.
        """

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        account_id = one("accountId")
        if not account_id:
            raise PluggyApiError(400, "accountId is required", "ACCOUNT_ID_REQUIRED")
        page = self._positive_int(one("page"), "page", 1)
        page_size = self._positive_int(one("pageSize"), "pageSize", LEGACY_DEFAULT_PAGE_SIZE)
        if page_size > MAX_PAGE_SIZE:
            raise PluggyApiError(400, f"pageSize must be at most {MAX_PAGE_SIZE}")
        # The same filters as /v2/transactions (from/to may be ISO date-times: their day counts), except that
        # here from and createdAtFrom may be combined.
        v2_query = {"accountId": [account_id], "ids": list(query.get("ids", []))}
        for legacy, v2 in (("from", "dateFrom"), ("to", "dateTo")):
            value = one(legacy)
            if value is not None:
                v2_query[v2] = [value[:10]]
        request = self.parse_v2_query(v2_query)
        created_raw = one("createdAtFrom")
        if created_raw is not None:
            try:
                request.created_at_from = iso_from_ms(parse_iso_ms(created_raw))
            except ValueError:
                raise PluggyApiError(400, "createdAtFrom must be an ISO 8601 date-time") from None
        bill_id = one("billId")
        with self._store.lock:
            account = self._store.visible_account(account_id)
            key.check_scope(account["itemId"])
            _, ids = self._store.sorted_rows(account_id)
            rows = self._store.transactions[account_id]
            matching = [
                rows[tx_id]
                for tx_id in ids
                if self._matches(rows[tx_id], request)
                and (bill_id is None or (rows[tx_id]["creditCardMetadata"] or {}).get("billId") == bill_id)
            ]
            chunk = [copy.deepcopy(r) for r in matching[(page - 1) * page_size : page * page_size]]
        total_pages = max(1, -(-len(matching) // page_size))
        return {"total": len(matching), "totalPages": total_pages, "page": page, "results": chunk}

    @staticmethod
    def _positive_int(value: str | None, name: str, default: int) -> int:
        if value is None:
            return default
        if not value.isdigit() or int(value) < 1:
            raise PluggyApiError(400, f"{name} must be a positive integer")
        return int(value)

    @staticmethod
    def _encode_cursor(key: tuple[int, str]) -> str:
        return base64.b64encode(json.dumps({"d": key[0], "i": key[1]}, separators=(",", ":")).encode()).decode()

    @staticmethod
    def _decode_cursor(cursor: str) -> tuple[int, str]:
        try:
            # A "+" that was not URL-encoded arrives as a space.
            data = json.loads(base64.b64decode(cursor.replace(" ", "+"), validate=True))
            if not isinstance(data, dict) or set(data) != {"d", "i"}:
                raise ValueError("bad cursor")
            sort_date, tx_id = data["d"], data["i"]
            if isinstance(sort_date, bool) or not isinstance(sort_date, int) or not isinstance(tx_id, str):
                raise ValueError("bad cursor")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise PluggyApiError(400, "Invalid cursor") from None
        return sort_date, tx_id

    @staticmethod
    def parse_v2_query(query: Mapping[str, list[str]]) -> PageRequest:
        """Validate `GET /v2/transactions` parameters (errors are Pluggy-style 400s)."""

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        account_id = one("accountId")
        if not account_id:
            raise PluggyApiError(400, "accountId is required", "ACCOUNT_ID_REQUIRED")
        raw: dict[str, str] = {"accountId": account_id}
        date_from, date_to = one("dateFrom"), one("dateTo")
        for name, value in (("dateFrom", date_from), ("dateTo", date_to)):
            if value is not None:
                try:
                    datetime.strptime(value, "%Y-%m-%d")  # a plain calendar date: no timezone
                except ValueError:
                    raise PluggyApiError(400, f"{name} must be a date (yyyy-mm-dd)") from None
                raw[name] = value
        created_raw = one("createdAtFrom")
        created_at_from: str | None = None
        if created_raw is not None:
            if date_from is not None:
                raise PluggyApiError(400, "createdAtFrom cannot be combined with dateFrom")
            try:
                created_at_from = iso_from_ms(parse_iso_ms(created_raw))
            except ValueError:
                raise PluggyApiError(400, "createdAtFrom must be an ISO 8601 date-time") from None
            raw["createdAtFrom"] = created_raw
        ids: set[str] | None = None
        ids_raw = [v for value in query.get("ids", []) for v in value.split(",") if v.strip()]
        if ids_raw:
            if len(ids_raw) > MAX_IDS:
                raise PluggyApiError(
                    400, f"ids parameter exceeds the maximum of {MAX_IDS} ids", "IDS_PARAMETER_EXCEEDS_MAX_LENGTH"
                )
            ids = {v.strip() for v in ids_raw}
            raw["ids"] = ",".join(v.strip() for v in ids_raw)
        after_raw = one("after")
        after = Transactions._decode_cursor(after_raw) if after_raw is not None else None
        return PageRequest(account_id, date_from, date_to, created_at_from, ids, after, raw)

    def list_v2(self, query: Mapping[str, list[str]], key: KeyInfo) -> JsonDict:
        request = self.parse_v2_query(query)
        with self._store.lock:
            account = self._store.visible_account(request.account_id)
            key.check_scope(account["itemId"])
            keys, ids = self._store.sorted_rows(request.account_id)
            rows = self._store.transactions[request.account_id]
            start = bisect_right(keys, request.after) if request.after is not None else 0
            results: list[JsonDict] = []
            last: tuple[int, str] | None = None
            more = False
            for index in range(start, len(ids)):
                row = rows[ids[index]]
                if not self._matches(row, request):
                    continue
                if len(results) == self.page_size:
                    more = True
                    break
                results.append(copy.deepcopy(row))
                last = keys[index]
        next_query: str | None = None
        if more and last is not None:
            next_query = "?" + urlencode({**request.raw, "after": self._encode_cursor(last)})
        return {"results": results, "next": next_query}

    @staticmethod
    def _matches(row: JsonDict, request: PageRequest) -> bool:
        if request.ids is not None:
            # As documented for the legacy endpoint: with ids, the date filters are ignored.
            if row["id"] not in request.ids:
                return False
        else:
            day = str(row["date"])[:10]
            if request.date_from is not None and day < request.date_from:
                return False
            if request.date_to is not None and day > request.date_to:
                return False
        # Same fixed-width format on both sides, so string order is time order.
        return request.created_at_from is None or str(row["createdAt"]) >= request.created_at_from
