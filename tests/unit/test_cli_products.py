"""`pluggy-pipeline records investments|loans|bills|consents|identity` on RecordsTable (moto, from template.yaml).

The identity is personal data: no command prints any of its values (docs/security.md), `--json` included.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pluggy_pipeline.event_store import iso_now
from pluggy_pipeline.products import (
    bill_record,
    consent_record,
    identity_record,
    investment_record,
    loan_record,
)
from pluggy_pipeline.records import RecordStore, item_key
from pluggy_pipeline_cli.cli import main
from pluggy_pipeline_cli.commands import records as records_command
from pluggy_pipeline_cli.commands._common import mask_name
from pluggy_pipeline_cli.targets import Target
from pluggy_pipeline_local.template import create_resources

from tests.conftest import REGION, TEMPLATE

ITEM, CARD, USER = "item-1", "card-1", "user-1"
DAY = 86_400.0
NAME, CPF = "Maria Aparecida da Silva", "123.456.789-09"
IDENTITY: dict[str, Any] = {
    "id": "identity-1",
    "itemId": ITEM,
    "fullName": NAME,
    "document": CPF,
    "taxNumber": CPF,
    "documentType": "CPF",
    "birthDate": "1985-03-14T00:00:00.000Z",
    "jobTitle": "Engenheira",
    "phoneNumbers": [{"type": "Personal", "value": "98765-4321", "areaCode": "11"}],
    "emails": [{"type": "Personal", "value": "maria.silva@example.com"}],
    "addresses": [
        {
            "fullAddress": "Rua das Flores, 742, Sao Paulo - SP, 01310-000",
            "primaryAddress": "Rua das Flores, 742",
            "postalCode": "01310-000",
            "city": "Sao Paulo",
            "state": "SP",
            "type": "Personal",
        }
    ],
    "relations": [{"type": "Mother", "name": "Helena Souza", "document": "987.654.321-00"}],
    "financialRelationships": {
        "startDate": "2015-06-01T00:00:00.000Z",
        "accounts": [{"compeCode": "001", "branchCode": "4321", "number": "9876543", "checkDigit": "7"}],
    },
    "createdAt": "2026-11-01T10:00:00.000Z",
    "updatedAt": "2026-11-01T10:00:00.000Z",
}
# Every value of the identity that identifies the person (what must never be printed).
PERSONAL = [
    NAME,
    *NAME.split(),
    CPF,
    "12345678909",
    "456.789",
    "1985-03-14",
    "98765-4321",
    "987654321",
    "maria.silva@example.com",
    "Rua das Flores",
    "01310-000",
    "Helena Souza",
    "Helena",
    "Souza",
    "987.654.321-00",
    "98765432100",
    "9876543",
    "2015-06-01",
]


def _personal_in(text: str) -> list[str]:
    # Word boundaries: "da" is in "data", "Silva" must not be anywhere.
    return [value for value in PERSONAL if re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text)]


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordStore]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        only_records = {"Resources": {"RecordsTable": TEMPLATE["Resources"]["RecordsTable"]}}
        table = create_resources(only_records, dynamodb=client, sqs=None).tables["RecordsTable"]
        target = Target(
            kind="stack",
            label="test",
            region=REGION,
            endpoint_url=None,
            events_table="events",
            records_table=table,
            queue_url="",
            dlq_url="",
            webhook_url="",
            secret_header="x-webhook-secret",
            webhook_secret_arn="",
            pluggy_credentials_arn=None,
            pluggy_base_url="http://127.0.0.1:9",
            session_factory=lambda: boto3.session.Session(region_name=REGION),
        )
        monkeypatch.setattr(records_command, "target_of", lambda _args: target)
        yield RecordStore(lambda: client, table)


@pytest.fixture
def mirrored(store: RecordStore) -> RecordStore:
    """One item with each product, its identity included, as the processor writes them."""
    now = 1_795_341_600.0  # only the consent's dates need to be relative to the clock
    store.put({**item_key(ITEM), "kind": "item", "itemId": ITEM, "clientUserId": USER, "data": {"id": ITEM}})
    investment = {
        "id": "inv-1",
        "type": "FIXED_INCOME",
        "subtype": "CDB",
        "name": "CDB Pluggy Bank 110% CDI",
        "number": "555123",
        "owner": NAME,
        "balance": Decimal("1234.5"),
        "currencyCode": "BRL",
        "status": "ACTIVE",
        "dueDate": "2028-01-10T00:00:00.000Z",
    }
    loan = {
        "id": "loan-1",
        "type": "CREDITO_PESSOAL_SEM_CONSIGNACAO",
        "productName": "Credito Pessoal Pluggy",
        "contractNumber": "1234567890",
        "contractAmount": 10000,
        "currencyCode": "BRL",
        "dueDate": "2029-01-10T00:00:00.000Z",
        "installments": {"paidInstallments": 3, "totalNumberOfInstallments": 36},
        "payments": {"contractOutstandingBalance": Decimal("9100.25")},
    }
    bill = {
        "id": "bill-1",
        "dueDate": "2026-11-12T03:00:00.000Z",
        "billClosingDate": "2026-11-05T03:00:00.000Z",
        "totalAmount": Decimal("321.09"),
        "totalAmountCurrencyCode": "BRL",
        "minimumPaymentAmount": Decimal("48.16"),
    }
    records = [
        investment_record(ITEM, investment),
        loan_record(ITEM, loan),
        bill_record(ITEM, CARD, bill),
        # Keyed by id: "a-bill" sorts first by key, the CLI still lists it after the earlier due date.
        bill_record(ITEM, CARD, {**bill, "id": "a-bill", "dueDate": "2026-12-12T03:00:00.000Z"}),
        identity_record(ITEM, IDENTITY),
        consent_record(
            ITEM, {"id": "c-active", "createdAt": iso_now(now - DAY), "expiresAt": "2999-01-01T00:00:00.000Z"}
        ),
        consent_record(ITEM, {"id": "c-revoked", "expiresAt": "2999-02-01T00:00:00.000Z", "revokedAt": iso_now(now)}),
    ]
    store.batch_put(records)
    return store


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(["records", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_mask_name_keeps_only_initials() -> None:
    assert mask_name(NAME) == "M*** A*** d*** S***"
    assert mask_name("  Ana  ") == "A***"
    assert mask_name(None) == mask_name(42) == ""


def test_identity_is_shown_masked_in_the_table_and_in_json(
    capsys: pytest.CaptureFixture[str], mirrored: RecordStore
) -> None:
    out = run(capsys, "identity", ITEM)
    assert "M*** A*** d*** S***" in out and "****8909" in out and "identity-1" in out
    assert _personal_in(out) == []
    shown = json.loads(run(capsys, "identity", ITEM, "--json"))
    assert shown == {
        "itemId": ITEM,
        "identityId": "identity-1",
        "documentType": "CPF",
        "document": "****8909",
        "name": "M*** A*** d*** S***",
        "phoneNumbers": 1,
        "emails": 1,
        "addresses": 1,
        "relations": 1,
        "financialRelationships": True,
        "updatedAt": "2026-11-01T10:00:00.000Z",
    }
    assert _personal_in(json.dumps(shown)) == []
    assert run(capsys, "identity", "unknown-item").strip() == "no identity for item unknown-item"


def test_no_table_of_the_item_prints_its_identity(capsys: pytest.CaptureFixture[str], mirrored: RecordStore) -> None:
    """The investment's `owner` is the same person: its table masks the number and leaves the owner out."""
    outputs = {
        "investments": run(capsys, "investments", ITEM),
        "loans": run(capsys, "loans", ITEM),
        "bills": run(capsys, "bills", CARD),
        "consents": run(capsys, "consents", ITEM),
        "expiring": run(capsys, "consents", "--expiring-within", "7"),
        "items": run(capsys, "items"),
    }
    assert {name: _personal_in(out) for name, out in outputs.items() if _personal_in(out)} == {}
    assert "CDB Pluggy Bank 110% CDI" in outputs["investments"] and "****5123" in outputs["investments"]
    assert "1,234.50 BRL" in outputs["investments"]
    assert "****7890" in outputs["loans"] and "1234567890" not in outputs["loans"]
    assert "9,100.25 BRL" in outputs["loans"] and "3/36" in outputs["loans"]
    assert "2026-11-12" in outputs["bills"] and "321.09 BRL" in outputs["bills"]
    assert [line.split()[0] for line in outputs["bills"].splitlines()[2:]] == ["bill-1", "a-bill"]


def test_consents_of_an_item_show_expiry_and_revocation(
    capsys: pytest.CaptureFixture[str], mirrored: RecordStore
) -> None:
    lines = run(capsys, "consents", ITEM).splitlines()
    active = next(line for line in lines if line.startswith("c-active"))
    revoked = next(line for line in lines if line.startswith("c-revoked"))
    assert "active" in active and "2999-01-01T00:00:00.000Z" in active
    assert "revoked" in revoked and iso_now(1_795_341_600.0) in revoked
    stored = json.loads(run(capsys, "consents", ITEM, "--json"))
    assert {c["consentId"]: c.get("revokedAt") for c in stored} == {
        "c-active": None,
        "c-revoked": iso_now(1_795_341_600.0),
    }


def test_consents_expiring_soon_are_listed_with_their_user(
    capsys: pytest.CaptureFixture[str], mirrored: RecordStore
) -> None:
    now = time.time()
    soon = {"id": "c-soon", "expiresAt": iso_now(now + 3 * DAY)}
    later = {"id": "c-later", "expiresAt": iso_now(now + 30 * DAY)}
    mirrored.batch_put([consent_record(ITEM, soon), consent_record("item-2", later)])
    listed = json.loads(run(capsys, "consents", "--expiring-within", "7", "--json"))
    assert listed == [{"itemId": ITEM, "expiresAt": soon["expiresAt"], "clientUserId": USER}]
    assert len(json.loads(run(capsys, "consents", "--expiring-within", "31", "--json"))) == 2
    out = run(capsys, "consents", "--expiring-within", "7")
    assert ITEM in out and USER in out and "item-2" not in out


@pytest.mark.parametrize(
    "argv",
    [["consents"], ["consents", ITEM, "--expiring-within", "7"], ["consents", "--expiring-within", "0"]],
)
def test_consents_needs_one_of_item_or_window(
    capsys: pytest.CaptureFixture[str], store: RecordStore, argv: list[str]
) -> None:
    assert main(["records", *argv]) == 1
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["investments", "loans", "bills", "consents", "identity"])
def test_every_product_command_has_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["records", command, "--help"])
    assert exited.value.code == 0
    assert "usage: pluggy-pipeline records" in capsys.readouterr().out
