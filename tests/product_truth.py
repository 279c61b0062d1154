"""What the mirror must hold for an item's products, from the emulator's truth (records.py's product keys)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from pluggy_pipeline.products import digest
from pluggy_pipeline_local.demo import expected_products

Key = tuple[str, str]
__all__ = ["expected_products"]  # the demo checks the same records: one definition, in the demo


def truth_product_rows(truth: Mapping[str, Any], item_id: str) -> int:
    return len(expected_products(truth, item_id))


PRODUCT_KINDS = ("bill", "investment", "investmentTransaction", "loan", "identity", "consent")
# The processor's count of each kind's writes (processor.PLURALS), by the sort key's prefix.
_COUNT_BY_PREFIX = {
    "BILL#": "bills",
    "INVESTMENT#": "investments",
    "ITX#": "investmentTransactions",
    "LOAN#": "loans",
    "IDENTITY": "identities",
    "CONSENT#": "consents",
}


def stored_products(records: Iterable[Mapping[str, Any]], item_id: str) -> dict[Key, Mapping[str, Any]]:
    """(pk, sk) -> record, for the product records of the item among plain (deserialized) records."""
    return {
        (str(r["pk"]), str(r["sk"])): r
        for r in records
        if r.get("kind") in PRODUCT_KINDS and r.get("itemId") == item_id
    }


def product_counts(truth: Mapping[str, Any], item_id: str) -> dict[str, int]:
    """The counts a first sync of the item logs for its products ({"bills": 1, "investments": 3, ...})."""
    counts: dict[str, int] = {}
    for _, sk in expected_products(truth, item_id):
        name = next(n for prefix, n in _COUNT_BY_PREFIX.items() if sk.startswith(prefix))
        counts[name] = counts.get(name, 0) + 1
    return counts


# --- field by field: the proof suites (tests/proof) -------------------------------------------------------

SK_PREFIXES = ("BILL#", "INVESTMENT#", "ITX#", "LOAN#", "IDENTITY", "CONSENT#")  # sort keys of product records


def is_product_key(sk: str) -> bool:
    return sk.startswith(SK_PREFIXES)


def as_pluggy_sent(value: Any) -> Any:
    """Pluggy's object as the pipeline's client parses it (floats as Decimal, ints as int): what it hashes."""
    return json.loads(json.dumps(value), parse_float=Decimal)


def expected_digest(value: Any) -> str:
    return digest(as_pluggy_sent(value))


def expected_fields(truth: Mapping[str, Any], item_id: str) -> dict[Key, dict[str, Any]]:
    """(pk, sk) -> the attributes the product record must carry besides `data` and `digest`, written out from
    records.py's key table (not from products.py's builders); None: the attribute must be absent."""
    fields: dict[Key, dict[str, Any]] = {}
    base = {"itemId": item_id}
    for key, obj in expected_products(truth, item_id).items():
        pk, sk = key
        if sk.startswith("BILL#"):
            account_id = pk.removeprefix("BILLS#")
            due = str(obj.get("dueDate") or "")
            fields[key] = {
                **base,
                "kind": "bill",
                "accountId": account_id,
                "billId": obj["id"],
                "dueDate": due,
                "txDate": f"{due}#{obj['id']}",  # byDate: a card's bills by due date
            }
            fields[key]["txDate"] = f"{due}#{obj['id']}"  # byDate: a card's bills by due date
        elif sk.startswith("INVESTMENT#"):
            fields[key] = {**base, "kind": "investment", "investmentId": obj["id"], "type": obj.get("type")}
        elif sk.startswith("ITX#"):
            fields[key] = {
                **base,
                "kind": "investmentTransaction",
                "investmentId": pk.removeprefix("INVESTMENT#"),
                "investmentTransactionId": obj["id"],
                "txDate": f"{obj.get('date') or ''}#{obj['id']}",
            }
        elif sk.startswith("LOAN#"):
            fields[key] = {**base, "kind": "loan", "loanId": obj["id"]}
        elif sk == "IDENTITY":
            fields[key] = {**base, "kind": "identity", "identityId": str(obj.get("id") or "")}
        else:
            expires, revoked = obj.get("expiresAt"), obj.get("revokedAt")
            active = bool(expires) and not revoked  # byConsentExpiry lists the active consents that expire
            fields[key] = {
                **base,
                "kind": "consent",
                "consentId": obj["id"],
                "expiresAt": expires,
                "revokedAt": revoked,
                "consentPk": "CONSENT" if active else None,
                "consentSk": f"{expires}#{item_id}" if active else None,
            }
    return fields


class ProductPresence:
    """The product keys Pluggy listed after each step of a history: a key listed, then gone (the mirror deletes
    it), then listed again may be written after its deletion; any other key may not."""

    def __init__(self) -> None:
        self.listed: set[Key] = set()
        self.gone: set[Key] = set()
        self.relisted: set[Key] = set()

    def observe(self, truth: Mapping[str, Any], item_id: str) -> None:
        now = set(expected_products(truth, item_id))
        self.relisted |= now & self.gone
        self.gone |= self.listed - now
        self.listed = now
