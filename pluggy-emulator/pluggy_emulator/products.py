"""The products beyond accounts and transactions: credit-card bills, investments and their transactions, loans,
identity and consents (pluggy-api.md sections 13 to 17), and their routes.

An item gets them when a sync succeeds (`collected`, called by item_states.py in both modes), for the products
it requested (`item.products`): 2 or 3 investments with their transactions (INVESTMENTS,
INVESTMENTS_TRANSACTIONS), a personal loan (LOANS), the account holder's identity (IDENTITY, the same fake
name and CPF as the accounts' `owner` and `taxNumber`) and one consent, whose `expiresAt` is the item's
`consentExpiresAt`. Bills follow the card's rows (CREDIT_CARDS): one per closed month, whose id is the rows'
`creditCardMetadata.billId` and whose `totalAmount` is their purchases; the open month becomes a bill when its
closing day (the 5th) has passed at a later sync. Everything comes from the item's own `random.Random`
(derived from the emulator seed and the item id), apart from the transaction rows' generator, so adding
products did not change any row.

`sync_item(..., products_change=True)` moves every investment's balance (the first one by a new BUY), pays one
more loan installment and touches the identity; `remove_investment=True` removes the newest investment with its
transactions (`truth()["deletedInvestmentIds"]`). Both land when the sync succeeds.
"""

from __future__ import annotations

import copy
import math
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pluggy_emulator.common import (
    DAY_MS,
    JsonDict,
    PluggyApiError,
    iso_from_ms,
    money,
    parse_iso_ms,
    sao_paulo_midnight_ms,
)
from pluggy_emulator.connectors import ITEM_PRODUCTS
from pluggy_emulator.sandbox_rows import bill_month, cnpj_from_base, format_cpf, rng_uuid

if TYPE_CHECKING:
    from pluggy_emulator.auth import KeyInfo
    from pluggy_emulator.store import ItemMeta, Store

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 500  # the OAS default for these lists (an SDK comment says 20)
CONSENT_DAYS = 365  # an Open Finance consent lasts up to 12 months
INVESTMENT_TYPES = ("MUTUAL_FUND", "SECURITY", "EQUITY", "COE", "FIXED_INCOME", "ETF", "OTHER")
# statusDetail keys by product (pluggy-api.md section 11).
STATUS_DETAIL_KEYS: dict[str, str] = {
    "ACCOUNTS": "accounts",
    "CREDIT_CARDS": "creditCards",
    "TRANSACTIONS": "transactions",
    "INVESTMENTS": "investments",
    "INVESTMENTS_TRANSACTIONS": "investmentTransactions",
    "IDENTITY": "identity",
    "PAYMENT_DATA": "paymentData",
    "LOANS": "loans",
    "ACCOUNT_STATEMENTS": "accountStatements",
}
_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "ACCOUNTS": ("ACCOUNTS_ALL", "ACCOUNTS_LIST", "ACCOUNTS_BALANCES", "ACCOUNTS_LIMITS"),
    "TRANSACTIONS": ("ACCOUNTS_TRANSACTIONS",),
    "CREDIT_CARDS": (
        "CREDIT_CARDS_ALL",
        "CREDIT_CARDS_LIST",
        "CREDIT_CARDS_LIMITS",
        "CREDIT_CARDS_TRANSACTIONS",
        "CREDIT_CARDS_BILLS",
    ),
    "IDENTITY": (
        "REGISTRATION_ALL",
        "REGISTRATION_IDENTIFICATIONS",
        "REGISTRATION_QUALIFICATIONS",
        "REGISTRATION_FINANCIAL_RELATIONS",
    ),
    "INVESTMENTS": ("INVESTMENTS_ALL",),
    "LOANS": ("CREDIT_OPERATIONS_ALL",),
}
_BANK_CNPJ = cnpj_from_base("000000000001")  # "Pluggy Bank": an obviously made-up CNPJ base
_ISSUER_CNPJ = cnpj_from_base("999999990001")


def _expenses() -> JsonDict:
    keys = (
        "serviceTax",
        "brokerageFee",
        "incomeTax",
        "other",
        "tradingAssetsNoticeFee",
        "maintenanceFee",
        "settlementFee",
        "clearingFee",
        "stockExchangeFee",
        "custodyFee",
        "operatingFee",
    )
    return dict.fromkeys(keys)


def _add_months(ms: int, months: int) -> int:
    day = datetime.fromtimestamp(ms // 1000, tz=UTC)
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return int(day.replace(year=year, month=month, day=min(day.day, 28)).timestamp() * 1000)


def _bill_dates(month: str) -> tuple[int, int]:
    """(closing, due) of the bill of `month` (YYYY-MM): closes on the 5th (Sao Paulo midnight), due 7 days on."""
    year, mon = (int(x) for x in month.split("-"))
    close = datetime(year, mon, 5, 3, tzinfo=UTC)
    return int(close.timestamp() * 1000), int((close + timedelta(days=7)).timestamp() * 1000)


def page_of(rows: list[JsonDict], page: int, page_size: int) -> JsonDict:
    total = len(rows)
    start = (page - 1) * page_size
    return {
        "total": total,
        "totalPages": max(1, math.ceil(total / page_size)),
        "page": page,
        "results": copy.deepcopy(rows[start : start + page_size]),
    }


def paging(query: dict[str, list[str]]) -> tuple[int, int]:
    """(page, pageSize) from the query: page >= 1, 1 <= pageSize <= 500; 400 otherwise."""

    def number(name: str, default: int, high: int | None) -> int:
        raw = (query.get(name) or [""])[-1]
        if raw == "":
            return default
        if not raw.isdigit() or int(raw) < 1 or (high is not None and int(raw) > high):
            limit = f" and <= {high}" if high is not None else ""
            raise PluggyApiError(400, f"{name} must be an integer >= 1{limit}")
        return int(raw)

    return number("page", 1, None), number("pageSize", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _required(query: dict[str, list[str]], name: str) -> str:
    value = (query.get(name) or [""])[-1]
    if not value:
        raise PluggyApiError(400, f"{name} is required", f"{'ITEM' if name == 'itemId' else 'ACCOUNT'}_ID_REQUIRED")
    return value


def check_products(products: Any) -> list[str]:
    """The products an item requests (400 unless a non-empty list of the connector's, each once)."""
    if products is None:
        return list(ITEM_PRODUCTS)
    if (
        not isinstance(products, list)
        or not products
        or any(p not in ITEM_PRODUCTS for p in products)
        or len(set(products)) != len(products)
    ):
        raise PluggyApiError(
            400, f"products must be a non-empty list of distinct values among {', '.join(ITEM_PRODUCTS)}"
        )
    return list(products)


@dataclass
class ItemProducts:
    """One item's product data beside its accounts."""

    rng: random.Random
    generated: bool = False
    requested: frozenset[str] = frozenset()  # the products of its first successful sync
    bills: dict[str, dict[str, JsonDict]] = field(default_factory=dict)  # accountId -> billId -> bill
    investments: dict[str, JsonDict] = field(default_factory=dict)
    investment_tx: dict[str, dict[str, JsonDict]] = field(default_factory=dict)  # investmentId -> id -> row
    loans: dict[str, JsonDict] = field(default_factory=dict)
    identity: JsonDict | None = None
    consents: dict[str, JsonDict] = field(default_factory=dict)
    change_pending: bool = False
    removals_pending: int = 0
    resources_pending: bool = False  # hasResourcesPendingAuthorization after the next successful sync


class Products:
    """Every item's bills, investments, loans, identity and consents, created and changed by its syncs."""

    def __init__(self, store: Store, *, seed: int) -> None:
        self._store = store
        self._seed = seed
        self._items: dict[str, ItemProducts] = {}
        self.deleted_investments: list[str] = []

    def _of(self, item_id: str) -> ItemProducts:
        found = self._items.get(item_id)
        if found is None:
            rng = random.Random(f"pluggy-emulator-products:{self._seed}:{item_id}")  # noqa: S311 - sandbox data
            found = self._items[item_id] = ItemProducts(rng)
        return found

    # --- syncs ---------------------------------------------------------------------------------------------

    def pick_changes(
        self, item_id: str, *, products_change: bool, remove_investment: bool, resources_pending: bool | None = None
    ) -> None:
        """Remember what the item's next successful sync changes; ValueError if no investment is left to remove."""
        data = self._of(item_id)
        if remove_investment:
            left = len(data.investments) - data.removals_pending
            if data.generated and left < 1:
                raise ValueError(f"item {item_id} has no investment left to remove")
            data.removals_pending += 1
        data.change_pending = data.change_pending or products_change
        if resources_pending is not None:
            data.resources_pending = resources_pending

    def collected(self, item: JsonDict, meta: ItemMeta, now_ms: int, *, cards_collected: bool) -> None:
        """A sync succeeded: the item's products as Pluggy would now serve them."""
        item_id = str(item["id"])
        data = self._of(item_id)
        requested = set(item.get("products") or ())
        if not data.generated:
            data.generated = True
            data.requested = frozenset(requested)
            self._generate(item, meta, data, requested, now_ms)
        if data.change_pending:
            data.change_pending = False
            self._change(data, now_ms)
        while data.removals_pending:
            data.removals_pending -= 1
            self._remove_newest_investment(data)
        if "CREDIT_CARDS" in requested and cards_collected:
            self._refresh_bills(meta, data, now_ms)
        if data.consents:
            # Open Finance items (PYSDK models/item.py): the consent's expiry, when resources were last collected,
            # and whether some consented resources still await the holder's authorization at the institution.
            item["consentExpiresAt"] = next(iter(data.consents.values()))["expiresAt"]
            item["resourcesCollectedAt"] = iso_from_ms(now_ms)
            item["hasResourcesPendingAuthorization"] = data.resources_pending

    def forget(self, item_id: str) -> None:
        """The item was deleted: its products go with it (its investments counted deleted, as its accounts)."""
        data = self._items.pop(item_id, None)
        if data is not None:
            self.deleted_investments.extend(data.investments)

    # --- generation ----------------------------------------------------------------------------------------

    def _generate(self, item: JsonDict, meta: ItemMeta, data: ItemProducts, requested: set[str], now_ms: int) -> None:
        rng = data.rng
        if "INVESTMENTS" in requested:
            for maker in rng.sample((_fixed_income, _mutual_fund, _stock, _retirement), rng.randint(2, 3)):
                investment = maker(rng, str(item["id"]), meta.owner, now_ms)
                data.investments[investment["id"]] = investment
                rows = _investment_history(rng, investment, now_ms)
                data.investment_tx[investment["id"]] = (
                    {r["id"]: r for r in rows} if "INVESTMENTS_TRANSACTIONS" in requested else {}
                )
        if "LOANS" in requested:
            loan = _loan(rng, str(item["id"]), now_ms)
            data.loans[loan["id"]] = loan
        if "IDENTITY" in requested:
            data.identity = _identity(rng, str(item["id"]), meta, now_ms)
        consent_id = rng_uuid(rng)
        products = [p for p in item.get("products") or () if p in _PERMISSIONS or p == "PAYMENT_DATA"]
        data.consents[consent_id] = {
            "id": consent_id,
            "itemId": item["id"],
            "products": products,
            "openFinancePermissionsGranted": [perm for p in products for perm in _PERMISSIONS.get(p, ())],
            "createdAt": iso_from_ms(now_ms),
            "expiresAt": iso_from_ms(sao_paulo_midnight_ms(now_ms) + CONSENT_DAYS * DAY_MS),
            "revokedAt": None,
        }

    def _change(self, data: ItemProducts, now_ms: int) -> None:
        """products_change: balances move (the first investment by a new BUY), a loan installment is paid."""
        rng = data.rng
        stamp = iso_from_ms(now_ms)
        for index, investment in enumerate(data.investments.values()):
            if index == 0:
                amount = money(rng.uniform(100, 1000))
                row = _investment_tx(rng, investment, "BUY", amount, now_ms)
                if "INVESTMENTS_TRANSACTIONS" in data.requested:
                    data.investment_tx.setdefault(investment["id"], {})[row["id"]] = row
                investment["amountOriginal"] = money(float(investment["amountOriginal"]) + amount)
                gross = float(investment["amount"]) + amount
            else:
                gross = float(investment["amount"]) * (1 + rng.uniform(-0.02, 0.03))
            _set_investment_amount(investment, gross, stamp)
        for loan in data.loans.values():
            _pay_installment(rng, loan, now_ms)
        if data.identity is not None:
            data.identity["phoneNumbers"][0]["value"] = f"9{rng.randint(1000, 9999)}-{rng.randint(0, 9999):04d}"
            data.identity["updatedAt"] = stamp

    def _remove_newest_investment(self, data: ItemProducts) -> None:
        if not data.investments:
            return
        investment_id = next(reversed(data.investments))
        del data.investments[investment_id]
        data.investment_tx.pop(investment_id, None)
        self.deleted_investments.append(investment_id)

    def _refresh_bills(self, meta: ItemMeta, data: ItemProducts, now_ms: int) -> None:
        """One bill per closed month of each card's rows: created once closed, its total following the rows."""
        store = self._store
        open_month = bill_month(sao_paulo_midnight_ms(now_ms))
        stamp = iso_from_ms(now_ms)
        for account_id in meta.account_ids:
            account = store.accounts.get(account_id)
            if account is None or account["type"] != "CREDIT" or account_id in store.hidden_accounts:
                continue
            totals: dict[str, tuple[str, float]] = {}
            for row in store.transactions[account_id].values():
                metadata = row["creditCardMetadata"] or {}
                month = str(metadata.get("billForecastDate") or "")
                if row["id"] in store.hidden_tx or not month or month >= open_month:
                    continue
                bill_id, total = totals.get(month, (str(metadata["billId"]), 0.0))
                totals[month] = (bill_id, total + (float(row["amount"]) if row["type"] == "DEBIT" else 0.0))
            bills = data.bills.setdefault(account_id, {})
            for month in sorted(totals):
                bill_id, total = totals[month]
                bill = bills.get(bill_id)
                if bill is None:
                    bill = bills[bill_id] = _bill(bill_id, account_id, month, stamp)
                before = copy.deepcopy(bill)
                _settle_bill(bill, money(total), now_ms)
                if bill != before:
                    bill["updatedAt"] = stamp

    # --- the API -------------------------------------------------------------------------------------------

    def _visible(self, item_id: str) -> ItemProducts | None:
        return self._items.get(item_id)

    def _item_products(self, item_id: str, key: KeyInfo) -> ItemProducts | None:
        key.check_scope(item_id)
        self._store.require_item(item_id)
        return self._visible(item_id)

    def list_bills(self, query: dict[str, list[str]], key: KeyInfo) -> JsonDict:
        account_id = _required(query, "accountId")
        page, size = paging(query)
        with self._store.lock:
            account = self._store.visible_account(account_id)
            key.check_scope(str(account["itemId"]))
            data = self._visible(str(account["itemId"]))
            bills = list((data.bills.get(account_id, {}) if data else {}).values())
            bills.sort(key=lambda b: str(b["dueDate"]), reverse=True)
            return page_of(bills, page, size)

    def get_bill(self, bill_id: str) -> JsonDict:
        with self._store.lock:
            for data in self._items.values():
                for bills in data.bills.values():
                    if bill_id in bills:
                        return copy.deepcopy(bills[bill_id])
        raise PluggyApiError(404, "credit card bill not found", "CREDIT_CARD_BILL_NOT_FOUND")

    def list_investments(self, query: dict[str, list[str]], key: KeyInfo) -> JsonDict:
        item_id = _required(query, "itemId")
        kind = (query.get("type") or [""])[-1] or None
        if kind is not None and kind not in INVESTMENT_TYPES:
            raise PluggyApiError(400, f"type must be one of {', '.join(INVESTMENT_TYPES)}")
        page, size = paging(query)
        with self._store.lock:
            data = self._item_products(item_id, key)
            rows = [i for i in (data.investments.values() if data else ()) if kind is None or i["type"] == kind]
            return page_of(rows, page, size)

    def _investment(self, investment_id: str) -> tuple[ItemProducts, JsonDict]:
        for data in self._items.values():
            if investment_id in data.investments:
                return data, data.investments[investment_id]
        raise PluggyApiError(404, "investment not found", "INVESTMENT_NOT_FOUND")

    def get_investment(self, investment_id: str) -> JsonDict:
        with self._store.lock:
            return copy.deepcopy(self._investment(investment_id)[1])

    def list_investment_transactions(self, investment_id: str, query: dict[str, list[str]]) -> JsonDict:
        """Newest first; the SDK's other filters (investmentId, from, to...) are accepted and not applied."""
        page, size = paging(query)
        with self._store.lock:
            data, _ = self._investment(investment_id)
            rows = sorted(
                data.investment_tx.get(investment_id, {}).values(), key=lambda r: str(r["date"]), reverse=True
            )
            return page_of(rows, page, size)

    def list_loans(self, query: dict[str, list[str]], key: KeyInfo) -> JsonDict:
        item_id = _required(query, "itemId")
        page, size = paging(query)
        with self._store.lock:
            data = self._item_products(item_id, key)
            return page_of(list(data.loans.values()) if data else [], page, size)

    def get_loan(self, loan_id: str) -> JsonDict:
        with self._store.lock:
            for data in self._items.values():
                if loan_id in data.loans:
                    return copy.deepcopy(data.loans[loan_id])
        raise PluggyApiError(404, "loan not found", "LOAN_NOT_FOUND")

    def identity_of_item(self, query: dict[str, list[str]], key: KeyInfo) -> JsonDict:
        item_id = _required(query, "itemId")
        try:
            uuid.UUID(item_id)
        except ValueError:
            raise PluggyApiError(400, "itemId must be a UUID") from None
        with self._store.lock:
            key.check_scope(item_id)
            data = self._visible(item_id)
            if item_id not in self._store.items or data is None or data.identity is None:
                raise PluggyApiError(404, "identity not found", "IDENTITY_NOT_FOUND")
            return copy.deepcopy(data.identity)

    def get_identity(self, identity_id: str) -> JsonDict:
        with self._store.lock:
            for data in self._items.values():
                if data.identity is not None and data.identity["id"] == identity_id:
                    return copy.deepcopy(data.identity)
        raise PluggyApiError(404, "identity not found", "IDENTITY_NOT_FOUND")

    def list_consents(self, query: dict[str, list[str]], key: KeyInfo) -> JsonDict:
        item_id = _required(query, "itemId")
        page, size = paging(query)
        with self._store.lock:
            data = self._item_products(item_id, key)
            return page_of(list(data.consents.values()) if data else [], page, size)

    def get_consent(self, consent_id: str) -> JsonDict:
        with self._store.lock:
            for data in self._items.values():
                if consent_id in data.consents:
                    return copy.deepcopy(data.consents[consent_id])
        raise PluggyApiError(404, "consent not found", "CONSENT_NOT_FOUND")

    def truth(self) -> JsonDict:
        """{bills: {accountId: {id: bill}}, investments: {id: ...}, investmentTransactions: {investmentId: {id:
        row}}, loans, identities: {itemId: identity}, consents, deletedInvestmentIds}."""
        items = [d for item_id, d in self._items.items() if item_id in self._store.items]
        return copy.deepcopy(
            {
                "bills": {a: bills for d in items for a, bills in d.bills.items()},
                "investments": {k: v for d in items for k, v in d.investments.items()},
                "investmentTransactions": {k: v for d in items for k, v in d.investment_tx.items()},
                "loans": {k: v for d in items for k, v in d.loans.items()},
                "identities": {v["itemId"]: v for d in items if (v := d.identity) is not None},
                "consents": {k: v for d in items for k, v in d.consents.items()},
                "deletedInvestmentIds": list(self.deleted_investments),
            }
        )


# --- the sandbox's product data ----------------------------------------------------------------------------


def _investment_base(rng: random.Random, item_id: str, owner: str, now_ms: int, **fields: object) -> JsonDict:
    investment: JsonDict = {
        "id": rng_uuid(rng),
        "code": None,
        "issuerCNPJ": None,
        "number": f"{rng.randint(100000, 999999)}",
        "isin": None,
        "itemId": item_id,
        "type": "OTHER",
        "subtype": None,
        "name": "",
        "currencyCode": "BRL",
        "date": iso_from_ms(sao_paulo_midnight_ms(now_ms)),
        "value": None,
        "quantity": None,
        "taxes": None,
        "taxes2": None,
        "balance": 0.0,
        "amount": None,
        "amountWithdrawal": None,
        "amountProfit": None,
        "amountOriginal": None,
        "dueDate": None,
        "issuer": None,
        "issueDate": None,
        "purchaseDate": None,
        "rate": None,
        "rateType": None,
        "fixedAnnualRate": None,
        "lastMonthRate": None,
        "annualRate": None,
        "lastTwelveMonthsRate": None,
        "status": "ACTIVE",
        "transactions": None,  # deprecated: null for applications created after 2023-03-20
        "metadata": None,
        "owner": owner,
        "institution": {"name": "Pluggy Bank", "number": _BANK_CNPJ},
    }
    investment.update(fields)
    original = money(rng.uniform(1000, 50000))
    purchase_ms = sao_paulo_midnight_ms(now_ms) - rng.randint(60, 700) * DAY_MS
    investment["amountOriginal"] = original
    investment["purchaseDate"] = iso_from_ms(purchase_ms)
    _set_investment_amount(investment, original * (1 + rng.uniform(0.01, 0.15)), investment["date"])
    return investment


def _set_investment_amount(investment: JsonDict, gross: float, stamp: str) -> None:
    """Gross amount, taxes, net balance and profit move together; quota funds keep their quantity."""
    amount = money(gross)
    profit = money(amount - float(investment["amountOriginal"]))
    taxes = money(max(0.0, profit) * 0.15) if investment["type"] in ("FIXED_INCOME", "MUTUAL_FUND") else 0.0
    investment.update(amount=amount, amountProfit=profit, taxes=taxes, balance=money(amount - taxes), date=stamp)
    investment["amountWithdrawal"] = investment["balance"]
    quantity = investment["quantity"]
    investment["value"] = money(amount / float(quantity)) if quantity else amount


def _fixed_income(rng: random.Random, item_id: str, owner: str, now_ms: int) -> JsonDict:
    rate = float(rng.choice((100, 105, 110, 115)))
    due_ms = sao_paulo_midnight_ms(now_ms) + rng.randint(200, 1500) * DAY_MS
    return _investment_base(
        rng,
        item_id,
        owner,
        now_ms,
        type="FIXED_INCOME",
        subtype="CDB",
        name=f"CDB Pluggy Bank {rate:.0f}% CDI",
        code=None,
        issuer="Pluggy Bank",
        issuerCNPJ=_BANK_CNPJ,
        rate=rate,
        rateType="CDI",
        fixedAnnualRate=None,
        dueDate=iso_from_ms(due_ms),
        issueDate=iso_from_ms(sao_paulo_midnight_ms(now_ms) - 700 * DAY_MS),
        quantity=1.0,
    )


def _mutual_fund(rng: random.Random, item_id: str, owner: str, now_ms: int) -> JsonDict:
    return _investment_base(
        rng,
        item_id,
        owner,
        now_ms,
        type="MUTUAL_FUND",
        subtype="MULTIMARKET_FUND",
        name="Fundo Exemplo Multimercado FIC FIM",
        code=_ISSUER_CNPJ,
        issuer="Gestora Exemplo Ltda",
        issuerCNPJ=_ISSUER_CNPJ,
        quantity=float(rng.randint(500, 5000)),
        lastMonthRate=round(rng.uniform(0.2, 1.4), 2),
        annualRate=round(rng.uniform(5, 14), 2),
        lastTwelveMonthsRate=round(rng.uniform(6, 15), 2),
    )


def _stock(rng: random.Random, item_id: str, owner: str, now_ms: int) -> JsonDict:
    ticker = rng.choice(("EXMP3", "FAKE4", "PLGY3"))
    return _investment_base(
        rng,
        item_id,
        owner,
        now_ms,
        type="EQUITY",
        subtype="STOCK",
        name=f"Acoes {ticker}",
        code=ticker,
        isin=f"BR{ticker[:4]}ACNOR{rng.randint(0, 9)}",
        quantity=float(rng.randint(10, 800)),
    )


def _retirement(rng: random.Random, item_id: str, owner: str, now_ms: int) -> JsonDict:
    return _investment_base(
        rng,
        item_id,
        owner,
        now_ms,
        type="SECURITY",
        subtype="RETIREMENT",
        name="Previdencia Exemplo PGBL",
        metadata={
            "taxRegime": "PROGRESSIVO",
            "proposalNumber": f"{rng.randint(10**7, 10**8 - 1)}",
            "processNumber": None,
        },
    )


def _investment_tx(rng: random.Random, investment: JsonDict, kind: str, amount: float, date_ms: int) -> JsonDict:
    quantity = investment["quantity"]
    value = float(investment["value"] or amount)
    units = money(amount / value) if quantity and kind in ("BUY", "SELL") else None
    return {
        "id": rng_uuid(rng),
        "type": kind,
        "description": {
            "BUY": "Aplicacao",
            "SELL": "Resgate",
            "TAX": "IR sobre rendimentos",
            "TRANSFER": "Transferencia",
        }[kind],
        "investmentId": investment["id"],
        "quantity": units,
        "value": value if units is not None else None,
        "amount": money(amount),
        "date": iso_from_ms(date_ms),
        "tradeDate": iso_from_ms(date_ms),
        "brokerageNumber": None,
        "netAmount": money(amount),
        "expenses": _expenses(),
        "movementType": "CREDIT" if kind in ("BUY", "TRANSFER") else "DEBIT",
        "agreedRate": investment["rate"] if kind == "BUY" else None,
    }


def _investment_history(rng: random.Random, investment: JsonDict, now_ms: int) -> list[JsonDict]:
    """The BUY that opened the position, maybe a second BUY, maybe a TAX (come-cotas) on funds."""
    purchase_ms = parse_iso_ms(str(investment["purchaseDate"]))
    original = float(investment["amountOriginal"])
    rows = []
    if rng.random() < 0.5:
        first = money(original * rng.uniform(0.4, 0.8))
        rows.append(_investment_tx(rng, investment, "BUY", first, purchase_ms))
        later = purchase_ms + rng.randint(10, max(11, (now_ms - purchase_ms) // DAY_MS - 1)) * DAY_MS
        rows.append(_investment_tx(rng, investment, "BUY", money(original - first), min(later, now_ms)))
    else:
        rows.append(_investment_tx(rng, investment, "BUY", original, purchase_ms))
    if investment["type"] == "MUTUAL_FUND":
        rows.append(_investment_tx(rng, investment, "TAX", money(rng.uniform(5, 80)), now_ms - 30 * DAY_MS))
    return rows


def _loan(rng: random.Random, item_id: str, now_ms: int) -> JsonDict:
    total = rng.choice((24, 36, 48))
    contract_ms = sao_paulo_midnight_ms(now_ms) - rng.randint(120, 600) * DAY_MS
    amount = money(rng.choice((5000, 10000, 15000, 25000)))
    monthly_rate = rng.choice((0.0149, 0.0199, 0.0249))
    loan: JsonDict = {
        "id": rng_uuid(rng),
        "itemId": item_id,
        "contractNumber": f"{rng.randint(10**9, 10**10 - 1)}",
        "ipocCode": f"{_BANK_CNPJ[:8]}0{rng.randint(10**14, 10**15 - 1)}",
        "productName": "Credito Pessoal Pluggy",
        "type": "CREDITO_PESSOAL_SEM_CONSIGNACAO",
        "kind": "LOAN",
        "date": iso_from_ms(sao_paulo_midnight_ms(now_ms)),
        "contractDate": iso_from_ms(contract_ms),
        "disbursementDates": [iso_from_ms(contract_ms + DAY_MS)],
        "settlementDate": None,
        "contractAmount": amount,
        "currencyCode": "BRL",
        "dueDate": iso_from_ms(_add_months(contract_ms, total)),
        "installmentPeriodicity": "MONTHLY",
        "installmentPeriodicityAdditionalInfo": None,
        "firstInstallmentDueDate": iso_from_ms(_add_months(contract_ms, 1)),
        "CET": round((1 + monthly_rate) ** 12 - 1 + 0.02, 4),
        "amortizationScheduled": "PRICE",
        "amortizationScheduledAdditionalInfo": None,
        "cnpjConsignee": None,
        "interestRates": [
            {
                "taxType": "EFFECTIVE",
                "interestRateType": "COMPOUND",
                "taxPeriodicity": "MONTHLY",
                "calculation": "21/252",
                "referentialRateIndexerType": "PRE_FIXADO",
                "referentialRateIndexerSubType": None,
                "referentialRateIndexerAdditionalInfo": None,
                "preFixedRate": monthly_rate,
                "postFixedRate": None,
                "additionalInfo": None,
            }
        ],
        "contractedFees": [
            {
                "name": "Tarifa de cadastro",
                "code": "CADASTRO",
                "chargeType": "UNIQUE",
                "charge": "FIXED",
                "amount": 50.0,
                "rate": None,
            }
        ],
        "contractedFinanceCharges": [
            {"type": "JUROS_REMUNERATORIOS_POR_ATRASO", "additionalInfo": None, "rate": 0.01},
        ],
        "warranties": [],
        "installments": {
            "typeNumberOfInstallments": "MONTH",
            "totalNumberOfInstallments": total,
            "typeContractRemaining": "MONTH",
            "contractRemainingNumber": total,
            "paidInstallments": 0,
            "dueInstallments": total,
            "pastDueInstallments": 0,
            "balloonPayments": None,
        },
        "payments": {"contractOutstandingBalance": amount, "releases": []},
    }
    for paid_ms in range(_add_months(contract_ms, 1), now_ms, 30 * DAY_MS):
        _pay_installment(rng, loan, paid_ms)
    return loan


def _pay_installment(rng: random.Random, loan: JsonDict, paid_ms: int) -> None:
    installments, payments = loan["installments"], loan["payments"]
    if installments["dueInstallments"] == 0:
        return
    total = int(installments["totalNumberOfInstallments"])
    amount = float(loan["contractAmount"])
    rate = float(loan["interestRates"][0]["preFixedRate"])
    installment = money(amount * rate / (1 - (1 + rate) ** -total))  # PRICE: equal installments
    installments["paidInstallments"] += 1
    installments["dueInstallments"] -= 1
    installments["contractRemainingNumber"] = installments["dueInstallments"]
    outstanding = float(payments["contractOutstandingBalance"])
    payments["contractOutstandingBalance"] = money(max(0.0, outstanding * (1 + rate) - installment))
    payments["releases"].append(
        {
            "isOverParcelPayment": False,
            "installmentId": f"{installments['paidInstallments']:03d}-{rng.randint(1000, 9999)}",
            "paidDate": iso_from_ms(sao_paulo_midnight_ms(paid_ms)),
            "currencyCode": "BRL",
            "paidAmount": installment,
            "overParcel": None,
        }
    )
    if installments["dueInstallments"] == 0:
        loan["settlementDate"] = iso_from_ms(sao_paulo_midnight_ms(paid_ms))


def _identity(rng: random.Random, item_id: str, meta: ItemMeta, now_ms: int) -> JsonDict:
    stamp = iso_from_ms(now_ms)
    first, last = meta.owner.split(" ", 1)
    birth = datetime(rng.randint(1960, 2000), rng.randint(1, 12), rng.randint(1, 28), tzinfo=UTC)
    mother = rng.choice(("Ana", "Helena", "Lucia", "Marta")) + f" {last}"
    return {
        "id": rng_uuid(rng),
        "itemId": item_id,
        "birthDate": iso_from_ms(int(birth.timestamp() * 1000)),
        "taxNumber": format_cpf(meta.cpf),
        "document": format_cpf(meta.cpf),
        "documentType": "CPF",
        "jobTitle": rng.choice(("Analista", "Engenheira", "Professor", "Designer")),
        "companyName": None,
        "fullName": meta.owner,
        "phoneNumbers": [
            {"type": "Personal", "value": f"9{rng.randint(1000, 9999)}-{rng.randint(0, 9999):04d}", "areaCode": "11"}
        ],
        "emails": [{"type": "Personal", "value": f"{first.lower()}.{last.lower()}@example.com"}],
        "addresses": [
            {
                "fullAddress": f"Rua Exemplo, {rng.randint(1, 999)}, Sao Paulo - SP, 01000-000",
                "primaryAddress": f"Rua Exemplo, {rng.randint(1, 999)}",
                "city": "Sao Paulo",
                "postalCode": "01000-000",
                "state": "SP",
                "country": "Brasil",
                "type": "Personal",
                "additionalInfo": None,
            }
        ],
        "relations": [{"type": "Mother", "name": mother, "document": None}],
        "investorProfile": rng.choice(("Conservative", "Moderate", "Aggressive")),
        "establishmentName": None,
        "establishmentCode": None,
        "financialRelationships": None,
        "qualifications": None,
        "socialName": None,
        "sex": None,
        "maritalStatus": None,
        "nationality": None,
        "otherDocuments": None,
        "passport": None,
        "incorporationDate": None,
        "parties": None,
        "businessOtherDocuments": None,
        "companiesCnpj": [_BANK_CNPJ],
        "createdAt": stamp,
        "updatedAt": stamp,
    }


def _bill(bill_id: str, account_id: str, month: str, stamp: str) -> JsonDict:
    close_ms, due_ms = _bill_dates(month)
    return {
        "id": bill_id,
        "accountId": account_id,
        "dueDate": iso_from_ms(due_ms),
        "billClosingDate": iso_from_ms(close_ms),
        "totalAmount": 0.0,
        "totalAmountCurrencyCode": "BRL",
        "minimumPaymentAmount": 0.0,
        "allowsInstallments": True,
        "financeCharges": [],
        "payments": [],
        "createdAt": stamp,
        "updatedAt": stamp,
    }


def _settle_bill(bill: JsonDict, total: float, now_ms: int) -> None:
    """Total and minimum from the rows; once due, paid in full by debit (the payment's id is stable)."""
    bill["totalAmount"] = total
    bill["minimumPaymentAmount"] = money(total * 0.15)
    due_ms = parse_iso_ms(str(bill["dueDate"]))
    bill["payments"] = (
        [
            {
                "id": str(uuid.uuid5(uuid.UUID(str(bill["id"])), "payment")),
                "valueType": "FULL_PAYMENT",
                "paymentDate": iso_from_ms(due_ms - DAY_MS),
                "paymentMode": "DEBIT_ACCOUNT",
                "amount": total,
                "currencyCode": "BRL",
            }
        ]
        if due_ms <= now_ms and total > 0
        else []
    )


def product_keys(products: Iterable[str]) -> list[str]:
    """statusDetail keys of the products requested."""
    return [STATUS_DETAIL_KEYS[p] for p in products if p in STATUS_DETAIL_KEYS]
