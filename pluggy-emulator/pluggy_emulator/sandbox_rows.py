"""What the sandbox's transaction rows look like: bank and card rows with Brazilian counterparties.

Pure functions of an item's own `random.Random` (`ItemMeta.rng`), so one item's rows do not depend on any other
item. Bank rows follow Pluggy's signs (DEBIT negative, CREDIT positive); card rows the card convention
(purchases DEBIT positive, bill payments CREDIT negative), with `creditCardMetadata` naming their bill.
Merchants carry valid CNPJs, people valid CPFs (check digits computed, the rest random).
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pluggy_emulator.categories import ROW_CATEGORY_IDS, description_of
from pluggy_emulator.common import BRT_OFFSET_MS, DAY_MS, JsonDict, iso_from_ms, money

if TYPE_CHECKING:
    from pluggy_emulator.store import ItemMeta

_BILL_NAMESPACE = uuid.UUID("6f0b7c52-3c3c-4b7e-9d0a-6b1f5f1c2a10")

PEOPLE = (
    "Maria Silva",
    "Joao Souza",
    "Ana Oliveira",
    "Carlos Pereira",
    "Beatriz Costa",
    "Rafael Lima",
    "Fernanda Alves",
    "Lucas Rocha",
    "Juliana Martins",
    "Pedro Santos",
)
_COMPANIES = (
    "Acme Tecnologia Ltda",
    "Companhia de Energia Paulista",
    "Agua e Esgoto Municipal",
    "Telefonia Brasil SA",
    "Condominio Jardim das Flores",
)


@dataclass(frozen=True)
class _Merchant:
    display: str
    raw: str
    business_name: str
    cnpj_base: str  # 12 digits; the check digits are computed
    cnae: str
    category_id: str
    mcc: int
    low: float
    high: float


_MERCHANTS = (
    _Merchant("Uber", "UBER *TRIP", "Uber Viagens Ltda", "178956460001", "4923002", "14010000", 4121, 9, 80),
    _Merchant(
        "iFood", "IFD*IFOOD", "Ifood Restaurantes Online SA", "143802000001", "8299799", "09020000", 5812, 25, 160
    ),
    _Merchant(
        "Supermercado Bom Preco",
        "SUPERM BOM PRECO",
        "Bom Preco Alimentos Ltda",
        "423187650001",
        "4711302",
        "08010000",
        5411,
        30,
        650,
    ),
    _Merchant(
        "Netflix", "NETFLIX.COM", "Streaming Brasil Ltda", "135905850001", "5911199", "11010000", 4899, 39.9, 55.9
    ),
    _Merchant(
        "Amazon",
        "AMAZON MARKETPLACE",
        "Varejo Online do Brasil Ltda",
        "154369400001",
        "4713004",
        "10010000",
        5942,
        20,
        900,
    ),
    _Merchant(
        "Drogaria Saude",
        "DROGARIA SAUDE 123",
        "Drogaria Saude SA",
        "615858650001",
        "4771701",
        "12010000",
        5912,
        12,
        220,
    ),
    _Merchant(
        "Posto Avenida",
        "POSTO AVENIDA",
        "Auto Posto Avenida Ltda",
        "330412620001",
        "4731800",
        "13010000",
        5541,
        60,
        320,
    ),
    _Merchant(
        "Padaria Pao Quente",
        "PADARIA PAO QUENTE",
        "Pao Quente Padaria Ltda",
        "071234560001",
        "1091102",
        "09010000",
        5814,
        6,
        70,
    ),
)


# Bank rows with no counterparty data: (low, high, description, descriptionRaw, operationType, categoryId).
_SIMPLE_BANK_ROWS: dict[str, tuple[float, float, str, str, str, str]] = {
    "fee": (5, 45, "Tarifa pacote de servicos", "TARIFA PACOTE SERVICOS", "PACOTE_TARIFA_SERVICOS", "06010000"),
    "withdrawal": (50, 300, "Saque 24h", "SAQUE BANCO24HORAS {ddmm}", "SAQUE", "04000000"),
    "card_bill": (300, 2500, "Pagamento fatura cartao", "PAGTO FATURA CARTAO CREDITO", "BOLETO", "05100000"),
    "yield": (0.5, 40, "Rendimento poupanca", "REND POUPANCA", "RENDIMENTO_APLIC_FINANCEIRA", "01040000"),
    "transfer_in": (
        100,
        2000,
        "Transferencia da conta corrente",
        "TRANSF CC P/ POUP",
        "TRANSFERENCIA_MESMA_INSTITUICAO",
        "05010000",
    ),
    "transfer_out": (
        50,
        1000,
        "Transferencia para conta corrente",
        "TRANSF POUP P/ CC",
        "TRANSFERENCIA_MESMA_INSTITUICAO",
        "05010000",
    ),
}
_BANK_CREDIT_KINDS = frozenset({"pix_in", "ted_in", "salary", "yield", "transfer_in"})


def _check_digits(digits: str, weights: Iterable[int]) -> int:
    total = sum(int(d) * w for d, w in zip(digits, weights, strict=True))
    rest = total % 11
    return 0 if rest < 2 else 11 - rest


def fake_cpf(rng: random.Random) -> str:
    """A CPF with valid check digits (digits only)."""
    digits = "".join(str(rng.randint(0, 9)) for _ in range(9))
    digits += str(_check_digits(digits, range(10, 1, -1)))
    digits += str(_check_digits(digits, range(11, 1, -1)))
    return digits


def format_cpf(digits: str) -> str:
    return f"{digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]}"


def cnpj_from_base(base: str) -> str:
    """A 14-digit CNPJ from a 12-digit base, with valid check digits."""
    first = _check_digits(base, (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2))
    second = _check_digits(base + str(first), (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2))
    return f"{base}{first}{second}"


def format_cnpj(digits: str) -> str:
    return f"{digits[:2]}.{digits[2:5]}.{digits[5:8]}/{digits[8:12]}-{digits[12:]}"


def rng_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def bill_month(date_ms: int) -> str:
    """The bill (YYYY-MM) a purchase lands on: the bill closes on day 5 of its month."""
    day = datetime.fromtimestamp((date_ms - BRT_OFFSET_MS) // 1000, tz=UTC)
    year, month = day.year, day.month
    if day.day >= 5:
        month += 1
        if month == 13:
            year, month = year + 1, 1
    return f"{year:04d}-{month:02d}"


def make_tx(meta: ItemMeta, account: JsonDict, date_ms: int, stamp_ms: int, today_ms: int) -> JsonDict:
    """A new row of `account` dated `date_ms`, created at `stamp_ms` (`today_ms`: the Sao Paulo day it is)."""
    rng = meta.rng
    stamp = iso_from_ms(stamp_ms)
    row: JsonDict = {
        "id": rng_uuid(rng),
        "accountId": account["id"],
        "date": iso_from_ms(date_ms),
        "description": "",
        "descriptionRaw": None,
        "currencyCode": "BRL",
        "amount": 0.0,
        "amountInAccountCurrency": None,
        # Bank rows get the running balance when stored; card statements carry none, yet the SDK types a
        # number, so card rows keep 0.
        "balance": 0.0,
        "category": None,
        "categoryId": None,
        "providerCode": f"{rng.randint(0, 999999):06d}",
        "providerId": None,
        "status": "POSTED",
        "type": "DEBIT",
        "operationType": None,
        "operationTypeAdditionalInfo": None,
        "paymentData": None,
        "creditCardMetadata": None,
        "merchant": None,
        "createdAt": stamp,
        "updatedAt": stamp,
    }
    if account["type"] == "CREDIT":
        _fill_card_tx(meta, account, row, date_ms, today_ms)
    else:
        _fill_bank_tx(meta, account, row, date_ms)
    return row


def _set_category(row: JsonDict, category_id: str) -> None:
    row["categoryId"] = category_id
    row["category"] = description_of(category_id)


def _merchant_fields(merchant: _Merchant) -> JsonDict:
    return {
        "name": merchant.display,
        "businessName": merchant.business_name,
        "cnpj": format_cnpj(cnpj_from_base(merchant.cnpj_base)),
        "cnae": merchant.cnae,
        "category": description_of(merchant.category_id),
    }


def _party(rng: random.Random, name: str, cpf: str | None = None) -> JsonDict:
    return {
        "documentNumber": {"type": "CPF", "value": cpf or fake_cpf(rng)},
        "name": name,
        "accountNumber": f"{rng.randint(10000, 999999)}-{rng.randint(0, 9)}",
        "branchNumber": f"{rng.randint(1, 9999):04d}",
        "routingNumber": f"{rng.randint(1, 999):03d}",
        "routingNumberISPB": f"{rng.randint(0, 99999999):08d}",
    }


def _fill_bank_tx(meta: ItemMeta, account: JsonDict, row: JsonDict, date_ms: int) -> None:
    rng = meta.rng
    row["providerId"] = f"{rng.getrandbits(64):016x}"  # institution's own id on bank rows
    if account["subtype"] == "SAVINGS_ACCOUNT":
        kind = rng.choices(("yield", "transfer_in", "transfer_out", "pix_in"), (50, 30, 15, 5))[0]
    else:
        kind = rng.choices(
            ("pix_out", "pix_in", "debit_card", "boleto", "ted_in", "salary", "fee", "withdrawal", "card_bill"),
            (30, 15, 25, 8, 5, 4, 5, 4, 4),
        )[0]
    ddmm = iso_from_ms(date_ms)[8:10] + "/" + iso_from_ms(date_ms)[5:7]
    simple = _SIMPLE_BANK_ROWS.get(kind)
    if simple is not None:
        low, high, description, raw, operation, category_id = simple
        amount = rng.uniform(low, high)
        row.update(description=description, descriptionRaw=raw.format(ddmm=ddmm), operationType=operation)
        _set_category(row, category_id)
    elif kind in ("pix_out", "pix_in"):
        amount = _fill_pix(meta, row, outgoing=kind == "pix_out", ddmm=ddmm)
    elif kind == "debit_card":
        merchant = rng.choice(_MERCHANTS)
        amount = rng.uniform(merchant.low, merchant.high)
        row["description"] = merchant.display
        row["descriptionRaw"] = f"COMPRA CARTAO DEB {merchant.raw} {ddmm}"
        row["operationType"] = "CARTAO"
        row["merchant"] = _merchant_fields(merchant)
        _set_category(row, merchant.category_id)
    elif kind == "boleto":
        amount = _fill_boleto(meta, row)
    else:  # ted_in, salary
        salary = kind == "salary"
        company = _COMPANIES[0] if salary else rng.choice(_COMPANIES)
        amount = rng.uniform(3500, 9000) if salary else rng.uniform(200, 3000)
        row["description"] = f"{'Salario' if salary else 'TED recebida'} - {company}"
        row["descriptionRaw"] = f"{'CRED SALARIO' if salary else 'TED CRED'} {company.upper()}"
        row["operationType"] = "FOLHA_PAGAMENTO" if salary else "TED"
        _set_category(row, "01010000" if salary else "05030000")
    credit = kind in _BANK_CREDIT_KINDS
    # Bank rows: DEBIT negative, CREDIT positive, as in the OAS examples.
    row["type"] = "CREDIT" if credit else "DEBIT"
    row["amount"] = money(amount if credit else -amount)


def _fill_pix(meta: ItemMeta, row: JsonDict, *, outgoing: bool, ddmm: str) -> float:
    rng = meta.rng
    owner = _party(rng, meta.owner, meta.cpf)
    person = rng.choice([p for p in PEOPLE if p != meta.owner])
    other = _party(rng, person)
    row["description"] = f"Pix {'enviado' if outgoing else 'recebido'} - {person}"
    row["descriptionRaw"] = f"PIX {'TRANSF' if outgoing else 'RECEB'} {person.upper()} {ddmm}"
    row["operationType"] = "PIX"
    _set_category(row, "05070000")
    row["paymentData"] = {
        "payer": owner if outgoing else other,
        "receiver": other if outgoing else owner,
        "paymentMethod": "PIX",
        "referenceNumber": f"E{rng.getrandbits(96):024x}",
        "reason": rng.choice((None, "Aluguel", "Jantar", "Presente")),
        "receiverReferenceId": None,
        "boletoMetadata": None,
    }
    return rng.uniform(10, 800) if outgoing else rng.uniform(20, 1500)


def _fill_boleto(meta: ItemMeta, row: JsonDict) -> float:
    rng = meta.rng
    company = rng.choice(_COMPANIES)
    amount = rng.uniform(80, 900)
    row["description"] = f"Pagamento de boleto - {company}"
    row["descriptionRaw"] = f"PAG BOLETO {company.upper()}"
    row["operationType"] = "BOLETO"
    _set_category(row, "07010000")
    line = "".join(str(rng.randint(0, 9)) for _ in range(47))
    row["paymentData"] = {
        "payer": _party(rng, meta.owner, meta.cpf),
        "receiver": None,
        "paymentMethod": "BOLETO",
        "referenceNumber": None,
        "reason": None,
        "receiverReferenceId": None,
        "boletoMetadata": {
            "digitableLine": line,
            "barcode": line[:44],
            "baseAmount": money(amount),
            "penaltyAmount": None,
            "interestAmount": None,
            "discountAmount": None,
        },
    }
    return amount


def _fill_card_tx(meta: ItemMeta, account: JsonDict, row: JsonDict, date_ms: int, today_ms: int) -> None:
    rng = meta.rng
    kind = rng.choices(("purchase", "installment", "payment", "annual_fee"), (75, 15, 6, 4))[0]
    month = bill_month(date_ms)
    metadata: JsonDict = {
        "installmentNumber": None,
        "totalInstallments": None,
        "totalAmount": None,
        "payeeMCC": None,
        "purchaseDate": row["date"],
        "billId": str(uuid.uuid5(_BILL_NAMESPACE, f"{account['id']}:{month}")),
        "cardNumber": account["number"],
        "feeType": None,
        "otherCreditsType": None,
        "billForecastDate": month,
    }
    row["providerId"] = None  # card rows have no institution id: their ids are not stable
    if kind in ("purchase", "installment"):
        merchant = rng.choice(_MERCHANTS)
        row["merchant"] = _merchant_fields(merchant)
        row["descriptionRaw"] = f"{merchant.raw} SAO PAULO BR"
        row["operationType"] = None
        metadata["payeeMCC"] = merchant.mcc
        _set_category(row, merchant.category_id)
        if kind == "installment":
            total = rng.choice((2, 3, 4, 6, 10, 12))
            number = rng.randint(1, total)
            total_amount = money(rng.uniform(300, 3000))
            amount = total_amount / total
            metadata.update(installmentNumber=number, totalInstallments=total, totalAmount=total_amount)
            row["description"] = f"{merchant.display} {number}/{total}"
            row["descriptionRaw"] = f"{merchant.raw} PARC {number:02d}/{total:02d}"
        else:
            amount = rng.uniform(merchant.low, merchant.high)
            row["description"] = merchant.display
        # Recent purchases may still be authorizations (PENDING).
        if today_ms - date_ms < 3 * DAY_MS and rng.random() < 0.5:
            row["status"] = "PENDING"
        row["type"] = "DEBIT"
        row["amount"] = money(amount)
    elif kind == "payment":
        row["description"] = "Pagamento recebido"
        row["descriptionRaw"] = "PAGAMENTO RECEBIDO"
        _set_category(row, "05100000")
        # Card convention: bill payments are CREDIT (negative), purchases DEBIT (positive).
        row["type"] = "CREDIT"
        row["amount"] = money(-rng.uniform(500, 4000))
    else:
        row["description"] = "Anuidade"
        row["descriptionRaw"] = "ANUIDADE DIFERENCIADA"
        metadata["feeType"] = "ANUIDADE"
        _set_category(row, "06020000")
        row["type"] = "DEBIT"
        row["amount"] = money(rng.uniform(20, 60))
    row["creditCardMetadata"] = metadata


def change_tx(meta: ItemMeta, row: JsonDict, stamp: str) -> None:
    """An update Pluggy reports as transactions/updated: a pending row posts, or it is recategorized."""
    if row["status"] == "PENDING":
        row["status"] = "POSTED"
    else:
        choices = [c for c in ROW_CATEGORY_IDS if c != row["categoryId"]]
        _set_category(row, meta.rng.choice(choices))
    row["updatedAt"] = stamp


def restated_copy(meta: ItemMeta, old: JsonDict, stamp: str) -> JsonDict:
    """Same purchase, slightly different text, new id: what an unstable card id looks like."""
    new = copy.deepcopy(old)
    new["id"] = rng_uuid(meta.rng)
    raw = str(old["descriptionRaw"] or old["description"])
    new["descriptionRaw"] = raw.replace("*", " ") if "*" in raw else f"{raw} BR"
    text = str(old["description"])
    new["description"] = text.upper() if text.upper() != text else text.title()
    new["providerCode"] = f"{meta.rng.randint(0, 999999):06d}"
    new["status"] = "POSTED"
    new["createdAt"] = stamp
    new["updatedAt"] = stamp
    return new
