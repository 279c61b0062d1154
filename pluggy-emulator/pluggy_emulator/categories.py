"""Pluggy's category catalog as the emulator serves it: `GET /categories[?parentId=]` and `GET /categories/{id}`.

Shapes follow pluggy-api.md section 19: 8-digit string ids, a two-level tree (`01000000` "Income" holds
`01010000` "Salary"), `description` in English, `descriptionTranslated` in Portuguese, `parentId` and
`parentDescription` on children. The list answers the page envelope the SDK expects. The catalog is the
emulator's own subset: the categories its sandbox rows use, under their parents.
"""

from __future__ import annotations

import copy

from pluggy_emulator.common import JsonDict, PluggyApiError

# id: (description, descriptionTranslated); a child's parent is its first two digits followed by zeros.
_CATALOG: dict[str, tuple[str, str]] = {
    "01000000": ("Income", "Renda"),
    "01010000": ("Salary", "Salario"),
    "01040000": ("Proceeds interests and dividends", "Juros e dividendos"),
    "03000000": ("Investments", "Investimentos"),
    "03010000": ("Fixed income", "Renda fixa"),
    "04000000": ("Withdrawal", "Saque"),
    "05000000": ("Transfers", "Transferencias"),
    "05010000": ("Same person transfer", "Transferencia mesma titularidade"),
    "05030000": ("Transfer - TED", "Transferencia - TED"),
    "05070000": ("Transfer - PIX", "Transferencia - PIX"),
    "05100000": ("Credit card payment", "Pagamento de cartao de credito"),
    "06000000": ("Taxes and fees", "Impostos e tarifas"),
    "06010000": ("Bank fees", "Tarifas bancarias"),
    "06020000": ("Credit card fees", "Tarifas de cartao de credito"),
    "07000000": ("Housing", "Moradia"),
    "07010000": ("Bills", "Contas"),
    "08000000": ("Shopping", "Compras"),
    "08010000": ("Groceries", "Supermercado"),
    "09000000": ("Food and drinks", "Alimentacao"),
    "09010000": ("Eating out", "Restaurantes"),
    "09020000": ("Food delivery", "Delivery de comida"),
    "10000000": ("Digital commerce", "Comercio digital"),
    "10010000": ("Online shopping", "Compras online"),
    "11000000": ("Leisure", "Lazer"),
    "11010000": ("Video streaming", "Streaming de video"),
    "12000000": ("Health", "Saude"),
    "12010000": ("Pharmacy", "Farmacia"),
    "13000000": ("Transportation", "Transporte"),
    "13010000": ("Gas stations", "Postos de gasolina"),
    "14000000": ("Travel", "Viagens"),
    "14010000": ("Taxi and ride-hailing", "Taxi e transporte por aplicativo"),
}


def _parent_id(category_id: str) -> str | None:
    parent = category_id[:2] + "000000"
    return parent if parent != category_id and parent in _CATALOG else None


def _category(category_id: str) -> JsonDict:
    description, translated = _CATALOG[category_id]
    category: JsonDict = {"id": category_id, "description": description, "descriptionTranslated": translated}
    parent = _parent_id(category_id)
    if parent is not None:
        category["parentId"] = parent
        category["parentDescription"] = _CATALOG[parent][0]
    return category


CATEGORIES: dict[str, JsonDict] = {category_id: _category(category_id) for category_id in sorted(_CATALOG)}
# The categories sandbox rows are given (a recategorizing sync picks among them, in this order).
ROW_CATEGORY_IDS: tuple[str, ...] = (
    "01010000",
    "01040000",
    "03010000",
    "04000000",
    "05010000",
    "05030000",
    "05070000",
    "05100000",
    "06010000",
    "06020000",
    "07010000",
    "08010000",
    "09010000",
    "09020000",
    "10010000",
    "11010000",
    "12010000",
    "13010000",
    "14010000",
)


def description_of(category_id: str) -> str:
    """The category's English description (what a transaction's `category` carries)."""
    return str(CATEGORIES[category_id]["description"])


def category_not_found() -> PluggyApiError:
    return PluggyApiError(404, "category not found", "CATEGORY_NOT_FOUND")


def list_categories(parent_id: str | None = None) -> JsonDict:
    """`GET /categories[?parentId=]`: one page with every (matching) category, ids in order."""
    results = [copy.deepcopy(c) for c in CATEGORIES.values() if parent_id is None or c.get("parentId") == parent_id]
    return {"page": 1, "total": len(results), "totalPages": 1, "results": results}


def get_category(category_id: str) -> JsonDict:
    category = CATEGORIES.get(category_id)
    if category is None:
        raise category_not_found()
    return copy.deepcopy(category)
