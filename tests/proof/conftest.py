"""Shared machinery of the proof suites (faults, mirror fidelity, hostile input).

- Sizes come from the environment (PROOF_*), with the CI values as defaults, and hypothesis runs under the
  profile named by HYPOTHESIS_PROFILE (default `ci`: derandomized, so CI explores the same cases every run).
- Every proof test adds its figures to a results file (PROOF_RESULTS_FILE, default
  .pytest_cache/proof-results.json); `python -m tests.proof.report` turns it into docs/reliability.md, and
  PROOF_WRITE_REPORT=1 does that at the end of the test session. No figure in that document is typed by hand.
- AwsFaults injects failures into the boto3 clients `pluggy_pipeline.aws` creates (botocore event hooks),
  WriteLog records every write that reached RecordsTable, and `mirror_problems` compares the mirror with the
  emulator's truth field by field (item, accounts, transactions and every product record of the item: bills,
  investments and their transactions, loans, identity, consents; tests/product_truth.py says what they must be).
- Pluggy's rate limits are on in the instant-mode suites too (PROOF_RATE_LIMITS, default `pluggy`: the
  emulator's "pluggy" limits on Pluggy's own 60-second window, not shortened). `Throttling` counts the 429s
  the processor's client meets and plays the time its waits would take (see its docstring).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import platform
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from hypothesis import HealthCheck, settings
from hypothesis.errors import InvalidArgument
from pluggy_emulator import PLUGGY_RATE_LIMITS, PluggyEmulator
from pluggy_pipeline import aws
from pluggy_pipeline.pluggy_client import RateLimitedError
from pluggy_pipeline.processor import Processor, QueueMessage, get_processor
from pluggy_pipeline.receiver import get_receiver
from pluggy_pipeline.records import RecordStore, from_attributes, item_key
from requests.adapters import HTTPAdapter

from tests.product_truth import (
    PRODUCT_KINDS,
    expected_digest,
    expected_fields,
    expected_products,
    is_product_key,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


# --- sizes -----------------------------------------------------------------------------------------


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


HISTORIES = env_int("PROOF_HISTORIES", 200)  # processor-level hypothesis histories
STACK_HISTORIES = env_int("PROOF_STACK_HISTORIES", 20)  # histories through the whole local stack
TIMED_HISTORIES = env_int("PROOF_TIMED_HISTORIES", 200)  # processor-level histories on the timed emulator
FUZZ_EXAMPLES = env_int("PROOF_FUZZ_EXAMPLES", 2000)  # hostile-input examples, all strategies together
ATHERIS_RUNS = env_int("PROOF_ATHERIS_RUNS", 30000)  # coverage-guided runs (when atheris is installed)
FAULT_ROUNDS = env_int("PROOF_FAULT_ROUNDS", 8)  # random single-fault rounds through the local stack
SEED = env_int("PROOF_SEED", 20261122)
WORKERS = env_int("PROOF_WORKERS", min(2, os.cpu_count() or 1))  # processes for the processor-level histories
# Pluggy's rate limits in the instant-mode suites (test_fidelity.py, test_faults.py): "pluggy" (the default) or "off".
RATE_LIMITS = os.environ.get("PROOF_RATE_LIMITS", "").strip().lower() or "pluggy"
if RATE_LIMITS not in {"pluggy", "off"}:
    raise ValueError(f'PROOF_RATE_LIMITS must be "pluggy" or "off", got {RATE_LIMITS!r}')
SIZE_VARIABLES = (
    "PROOF_HISTORIES",
    "PROOF_STACK_HISTORIES",
    "PROOF_TIMED_HISTORIES",
    "PROOF_FUZZ_EXAMPLES",
    "PROOF_ATHERIS_RUNS",
    "PROOF_FAULT_ROUNDS",
    "PROOF_SEED",
    "PROOF_WORKERS",
    "PROOF_RATE_LIMITS",
    "HYPOTHESIS_PROFILE",
)

# --- hypothesis ------------------------------------------------------------------------------------

_SLOW_IS_FINE = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.function_scoped_fixture,
    HealthCheck.large_base_example,
]
# ci: the same examples every run (a red CI run is reproducible by rerunning it); dev: fresh ones each run.
settings.register_profile(
    "ci", derandomize=True, deadline=None, database=None, print_blob=True, suppress_health_check=_SLOW_IS_FINE
)
settings.register_profile("dev", deadline=None, print_blob=True, suppress_health_check=_SLOW_IS_FINE)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci").strip() or "ci"


def proof_settings(max_examples: int, **overrides: Any) -> settings:
    """The active proof profile with this test's number of examples (profiles are not loaded globally:
    the rest of the suite keeps its own hypothesis settings)."""
    try:
        parent = settings.get_profile(PROFILE)
    except InvalidArgument:
        parent = settings.get_profile("ci")
    return settings(parent, max_examples=max(1, max_examples), **overrides)


# --- results -> docs/reliability.md ----------------------------------------------------------------

RESULTS_FILE = Path(os.environ.get("PROOF_RESULTS_FILE") or REPO_ROOT / ".pytest_cache" / "proof-results.json")


class ProofResults:
    """What this session's proof tests measured; merged into RESULTS_FILE at the end of the session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sections: dict[str, dict[str, Any]] = {}
        self.tests: dict[str, dict[str, Any]] = {}
        self.started = datetime.now(UTC)

    def section(self, name: str) -> dict[str, Any]:
        with self._lock:
            section = self.sections.setdefault(name, {})
            section["recordedAt"] = datetime.now(UTC).isoformat(timespec="seconds")
            return section

    def add_row(self, section: str, row: Mapping[str, Any]) -> None:
        self.section(section).setdefault("rows", []).append(dict(row))

    def bump(self, section: str, key: str, amount: int = 1) -> None:
        counts = self.section(section).setdefault("counts", {})
        counts[key] = counts.get(key, 0) + amount

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps({"sections": self.sections, "tests": self.tests}, default=str))


RESULTS = ProofResults()


def _run_metadata() -> dict[str, Any]:
    return {
        "startedAt": RESULTS.started.isoformat(timespec="seconds"),
        "finishedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "arguments": sys.argv[1:],
        "sizes": {name: os.environ.get(name, "") for name in SIZE_VARIABLES},
        "effective": {
            "PROOF_HISTORIES": HISTORIES,
            "PROOF_STACK_HISTORIES": STACK_HISTORIES,
            "PROOF_TIMED_HISTORIES": TIMED_HISTORIES,
            "PROOF_FUZZ_EXAMPLES": FUZZ_EXAMPLES,
            "PROOF_ATHERIS_RUNS": ATHERIS_RUNS,
            "PROOF_FAULT_ROUNDS": FAULT_ROUNDS,
            "PROOF_SEED": SEED,
            "PROOF_WORKERS": WORKERS,
            "PROOF_RATE_LIMITS": RATE_LIMITS,
            "HYPOTHESIS_PROFILE": PROFILE,
        },
    }


COLLECTED: set[str] = set()  # proof tests collected this session, deselected ones included


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.nodeid.startswith("tests/proof/"):
        COLLECTED.add(item.nodeid)


def merge_results(
    previous: Mapping[str, Any], current: Mapping[str, Any], run: Mapping[str, Any], collected: set[str] | None = None
) -> dict[str, Any]:
    """Sections measured now replace the old ones; the others are kept (a partial run updates its part)."""
    merged: dict[str, Any] = {
        "sections": dict(previous.get("sections") or {}),
        "tests": dict(previous.get("tests") or {}),
        "runs": list(previous.get("runs") or [])[-9:],
    }
    merged["sections"].update(current.get("sections") or {})
    # Tests of a module collected now but no longer in it (renamed, removed) leave the results.
    collected = collected or set()
    modules = {name.split("::")[0] for name in collected}
    merged["tests"] = {k: v for k, v in merged["tests"].items() if k in collected or k.split("::")[0] not in modules}
    merged["tests"].update(current.get("tests") or {})
    merged["runs"].append(dict(run))
    return merged


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.nodeid.startswith("tests/proof/"):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        entry = {"outcome": report.outcome, "seconds": round(report.duration, 2)}
        if hasattr(report, "wasxfail"):
            entry["outcome"] = "xfailed" if report.outcome == "skipped" else "xpassed"
        with RESULTS._lock:
            RESULTS.tests[report.nodeid] = entry


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not RESULTS.tests:
        return
    previous: dict[str, Any] = {}
    if RESULTS_FILE.is_file():
        with contextlib.suppress(ValueError):
            previous = json.loads(RESULTS_FILE.read_text(encoding="utf-8"))
    merged = merge_results(previous, RESULTS.snapshot(), _run_metadata(), COLLECTED)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if os.environ.get("PROOF_WRITE_REPORT", "").strip().lower() in {"1", "true", "yes"}:
        from tests.proof.report import write_report

        write_report(merged)


# --- environment ---------------------------------------------------------------------------------------


def reset_caches() -> None:
    aws.reset_clients()
    get_receiver.cache_clear()
    get_processor.cache_clear()


@pytest.fixture(autouse=True)
def _isolated_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """tests/conftest.py's isolation, except for tests on the local stack: that stack owns the environment
    (fake credentials and its own moto endpoint on 127.0.0.1) for as long as it runs."""
    if "local_stack" in request.fixturenames:
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        assert endpoint.startswith("http://127.0.0.1:"), "stack tests must talk to the local moto server only"
        reset_caches()
        yield
        reset_caches()
        return
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    reset_caches()
    yield
    reset_caches()


# --- mirror == truth ---------------------------------------------------------------------------------


def normalize(value: Any) -> Any:
    """A truth value as DynamoDB gives it back: every number a Decimal (floats through their repr)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Mapping):
        return {str(k): normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    raise TypeError(f"unexpected value in truth: {value!r}")


def field_diff(expected: Any, stored: Any, path: str = "") -> list[str]:
    """Every field where the stored copy differs from the expected one (both normalized)."""
    if isinstance(expected, Mapping) and isinstance(stored, Mapping):
        problems: list[str] = []
        for key in sorted(set(expected) | set(stored)):
            where = f"{path}.{key}" if path else str(key)
            if key not in stored:
                problems.append(f"{where}: missing (expected {expected[key]!r})")
            elif key not in expected:
                problems.append(f"{where}: unexpected {stored[key]!r}")
            else:
                problems += field_diff(expected[key], stored[key], where)
        return problems
    if isinstance(expected, list) and isinstance(stored, list) and len(expected) == len(stored):
        pairs = enumerate(zip(expected, stored, strict=True))
        return [p for i, (e, s) in pairs for p in field_diff(e, s, f"{path}[{i}]")]
    if type(expected) is not type(stored) or expected != stored:
        return [f"{path}: expected {expected!r}, stored {stored!r}"]
    return []


@dataclass
class MirrorView:
    item: dict[str, Any] | None
    accounts: dict[str, dict[str, Any]]
    transactions: dict[str, dict[str, dict[str, Any]]]  # account id -> transaction id -> record
    by_date: dict[str, set[str]]  # account id -> transaction ids the byDate index returns (when read)
    products: dict[tuple[str, str], dict[str, Any]]  # (pk, sk) -> every product record carrying the item's id


def product_records(store: RecordStore, item_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every product record of the item wherever its key puts it (a Scan on itemId and kind), so a record left
    under a key the item no longer has (a removed investment's transactions, a dropped card's bills) shows too."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    start: dict[str, Any] | None = None
    while True:
        # RecordStore has no Scan (the pipeline never scans); its one door to DynamoDB serves this read.
        page = store._call(
            "scan",
            FilterExpression=f"itemId = :item AND #kind IN ({', '.join(f':k{i}' for i in range(len(PRODUCT_KINDS)))})",
            ExpressionAttributeNames={"#kind": "kind"},
            ExpressionAttributeValues={
                ":item": {"S": item_id},
                **{f":k{i}": {"S": kind} for i, kind in enumerate(PRODUCT_KINDS)},
            },
            ConsistentRead=True,
            **({"ExclusiveStartKey": start} if start else {}),
        )
        for raw in page.get("Items", []):
            record = from_attributes(raw)
            found[str(record["pk"]), str(record["sk"])] = record
        start = page.get("LastEvaluatedKey")
        if not start:
            return found


def read_mirror(store: RecordStore, item_id: str, account_ids: Iterable[str], *, by_date: bool = True) -> MirrorView:
    item = store.get(item_key(item_id))
    accounts = {str(a["accountId"]): a for a in store.accounts_of_item(item_id)}
    transactions: dict[str, dict[str, dict[str, Any]]] = {}
    by_date: dict[str, set[str]] = {}
    for account_id in sorted(set(account_ids) | set(accounts)):
        rows = store.query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"ACCOUNT#{account_id}"}},
            ConsistentRead=True,
        )
        transactions[account_id] = {str(r["transactionId"]): r for r in rows}
        if by_date:  # the byDate index (LSI) must list exactly the table's rows
            by_date[account_id] = {str(r["transactionId"]) for r in store.transactions_by_date(account_id)}
    return MirrorView(item, accounts, transactions, by_date, product_records(store, item_id))


def data_ready(truth: Mapping[str, Any], item_id: str) -> bool:
    """Whether the item is gone, or its last execution collected data (SUCCESS, PARTIAL_SUCCESS): the only
    states in which the processor fetches accounts and transactions (see the findings in docs/reliability.md)."""
    item = truth["items"].get(item_id)
    return item is None or item.get("executionStatus") in {"SUCCESS", "PARTIAL_SUCCESS"}


def mirror_problems(truth: Mapping[str, Any], view: MirrorView, item_id: str, *, item_only: bool = False) -> list[str]:
    """Differences between the stored records of one item and the emulator's truth, field by field."""
    problems: list[str] = []
    truth_item = truth["items"].get(item_id)
    if truth_item is None:  # deleted at Pluggy: a tombstone, and nothing under it
        if view.item is not None and view.item.get("deleted") is not True:
            problems.append(f"item {item_id} is deleted at Pluggy but stored as {view.item.get('status')}")
        problems += [f"account {a} of deleted item still stored" for a in view.accounts]
        problems += [
            f"{len(rows)} transactions of account {a} of a deleted item still stored"
            for a, rows in view.transactions.items()
            if rows
        ]
        problems += [f"product {pk}/{sk} of a deleted item still stored" for pk, sk in sorted(view.products)]
        return problems
    if view.item is None:
        return [f"item {item_id} missing from the mirror"]
    if view.item.get("deleted") is not False:
        problems.append(f"item {item_id} exists at Pluggy but is stored as deleted")
    problems += [f"item.data.{p}" for p in field_diff(normalize(truth_item), view.item.get("data"))]
    derived = {
        "itemId": item_id,
        "status": truth_item.get("status"),
        "executionStatus": truth_item.get("executionStatus"),
        "errorCode": (truth_item.get("error") or {}).get("code"),
        "updatedAt": truth_item.get("updatedAt"),
        "clientUserId": truth_item.get("clientUserId"),
    }
    problems += [f"item.{p}" for p in field_diff(derived, {k: view.item.get(k) for k in derived})]
    if item_only:
        return problems
    expected_accounts = {a: acc for a, acc in truth["accounts"].items() if acc["itemId"] == item_id}
    for account_id in sorted(set(expected_accounts) | set(view.accounts)):
        if account_id not in view.accounts:
            problems.append(f"account {account_id} missing")
            continue
        stored = view.accounts[account_id]
        if account_id not in expected_accounts:
            problems.append(f"account {account_id} stored but not at Pluggy")
            continue
        account = expected_accounts[account_id]
        problems += [f"account {account_id}.data.{p}" for p in field_diff(normalize(account), stored.get("data"))]
        derived = {"accountId": account_id, "itemId": item_id, "updatedAt": account.get("updatedAt")}
        problems += [f"account {account_id}.{p}" for p in field_diff(derived, {k: stored.get(k) for k in derived})]
    for account_id in sorted(set(expected_accounts) | set(view.transactions)):
        expected_rows = truth["transactions"].get(account_id, {}) if account_id in expected_accounts else {}
        stored_rows = view.transactions.get(account_id, {})
        missing = sorted(set(expected_rows) - set(stored_rows))
        extra = sorted(set(stored_rows) - set(expected_rows))
        problems += [f"transaction {account_id}/{t} missing" for t in missing]
        problems += [f"transaction {account_id}/{t} stored but not at Pluggy" for t in extra]
        for tx_id in sorted(set(expected_rows) & set(stored_rows)):
            tx, stored = expected_rows[tx_id], stored_rows[tx_id]
            where = f"transaction {account_id}/{tx_id}"
            problems += [f"{where}.data.{p}" for p in field_diff(normalize(tx), stored.get("data"))]
            derived = {
                "transactionId": tx_id,
                "accountId": account_id,
                "itemId": item_id,
                "txDate": f"{tx['date']}#{tx_id}",
                "updatedAt": tx.get("updatedAt"),
            }
            problems += [f"{where}.{p}" for p in field_diff(derived, {k: stored.get(k) for k in derived})]
        if account_id in view.by_date and view.by_date[account_id] != set(stored_rows):
            problems.append(f"byDate index of {account_id} disagrees with the table")
    return problems + product_problems(truth, view.products, item_id)


def product_problems(
    truth: Mapping[str, Any], stored: Mapping[tuple[str, str], Mapping[str, Any]], item_id: str
) -> list[str]:
    """Every product record of the item (bills, investments and their transactions, loans, identity, consents)
    against the truth: missing, extra (a deletion not followed), `data` field by field, the attributes
    records.py documents, and `digest` = the hash of exactly what Pluggy served. Identity values are never
    shown (personal data): only the path of a differing field."""
    problems: list[str] = []
    expected = expected_products(truth, item_id)
    fields = expected_fields(truth, item_id)
    for pk, sk in sorted(set(expected) - set(stored)):
        problems.append(f"product {pk}/{sk} missing")
    for pk, sk in sorted(set(stored) - set(expected)):
        problems.append(f"product {pk}/{sk} stored but not listed by Pluggy")
    for key in sorted(set(expected) & set(stored)):
        obj, record = expected[key], stored[key]
        where = f"product {key[0]}/{key[1]}"
        found = [f"data.{p}" for p in field_diff(normalize(obj), record.get("data"))]
        derived = fields[key]
        found += field_diff(derived, {k: record.get(k) for k in derived})
        if record.get("digest") != expected_digest(obj):
            found.append("digest: not the hash of Pluggy's object")
        problems += [f"{where}.{_masked(p, whole=key[1] == 'IDENTITY')}" for p in found]
    return problems


# Fields holding personal data (names, CPF, account and contract numbers): a difference names the field only.
PERSONAL_FIELDS = frozenset({"owner", "taxNumber", "document", "fullName", "number", "contractNumber", "name"})


def _masked(problem: str, *, whole: bool) -> str:
    """A field_diff line without its values when the field is personal (the whole identity is)."""
    path = problem.split(":", 1)[0]
    last = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return f"{path}: differs" if whole or last in PERSONAL_FIELDS else problem


# --- what reached RecordsTable ---------------------------------------------------------------------------

_PARAMS = "proof_params"
_FAULT = "proof_fault"
_HELD = "proof_held"


def _s(attribute: Any) -> str | None:
    return attribute.get("S") if isinstance(attribute, Mapping) else None


@dataclass
class Write:
    op: str  # put | delete
    data: str | None  # canonical JSON of the record's `data` attribute
    updated_at: str | None  # data.updatedAt: Pluggy's version of the record
    tombstone: bool
    digest: str | None = None  # product records: the hash of Pluggy's object


class WriteLog:
    """Every write that reached RecordsTable through one client, per key, in order (after-call hooks).

    Checked per key: nothing comes back after a delete (no resurrection), and a rewrite that changes a
    record carries a newer Pluggy version (updatedAt); rewriting the same data is idempotent and fine.

    Product records (bills, investments and their transactions, loans, identity, consents: products.py) have
    no Pluggy version: a sync re-reads the whole list and writes what changed. So a rewrite must carry another
    digest and other data (the same digest again is a wasted write; another digest over the same data, an
    unstable hash), and a deleted one comes back only when Pluggy lists it again (`relisted`).
    """

    def __init__(self, table: str) -> None:
        self.table = table
        self.writes: dict[tuple[str, str], list[Write]] = defaultdict(list)
        self._lock = threading.Lock()

    def attach(self, client: Any) -> None:
        events = client.meta.events
        events.register_first("before-parameter-build.dynamodb", self._remember)
        for operation in ("PutItem", "DeleteItem", "BatchWriteItem"):
            events.register_first(f"after-call.dynamodb.{operation}", self._record)

    def clear(self) -> None:
        with self._lock:
            self.writes.clear()

    @staticmethod
    def _remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context[_PARAMS] = params

    def _record(
        self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        params = context.get(_PARAMS) or {}
        if getattr(http_response, "status_code", 500) >= 300:
            return
        if model.name == "PutItem" and params.get("TableName") == self.table:
            self._add(params["Item"], "put")
        elif model.name == "DeleteItem" and params.get("TableName") == self.table:
            self._add(params["Key"], "delete")
        elif model.name == "BatchWriteItem":
            unprocessed = {
                json.dumps(r, sort_keys=True) for r in (parsed.get("UnprocessedItems") or {}).get(self.table, [])
            }
            for request in (params.get("RequestItems") or {}).get(self.table, []):
                if json.dumps(request, sort_keys=True) in unprocessed:
                    continue
                if "PutRequest" in request:
                    self._add(request["PutRequest"]["Item"], "put")
                else:
                    self._add(request["DeleteRequest"]["Key"], "delete")

    def _add(self, item: Mapping[str, Any], op: str) -> None:
        key = (_s(item.get("pk")) or "", _s(item.get("sk")) or "")
        data = item.get("data")
        updated = _s(data["M"].get("updatedAt")) if isinstance(data, Mapping) and "M" in data else None
        write = Write(
            op=op,
            data=json.dumps(data, sort_keys=True) if data is not None else None,
            updated_at=updated,
            tombstone=bool((item.get("deleted") or {}).get("BOOL")),
            digest=_s(item.get("digest")),
        )
        with self._lock:
            self.writes[key].append(write)

    def problems(
        self,
        prefixes: Iterable[str] = ("ITEM#", "ACCOUNT#", "BILLS#", "INVESTMENT#"),
        relisted: Iterable[tuple[str, str]] = (),
    ) -> list[str]:
        found: list[str] = []
        with self._lock:
            writes = {k: list(v) for k, v in self.writes.items()}
        again = set(relisted)
        for (pk, sk), history in writes.items():
            if not pk.startswith(tuple(prefixes)):
                continue
            if is_product_key(sk):
                found += _product_write_problems(pk, sk, history, relisted=(pk, sk) in again)
                continue
            deleted = False
            last: Write | None = None
            for write in history:
                if write.op == "delete" or write.tombstone:
                    deleted = True
                    continue
                if deleted:
                    found.append(f"{pk}/{sk}: written again after it was deleted")
                newer = bool(write.updated_at and last and last.updated_at and write.updated_at > last.updated_at)
                if last is not None and write.data != last.data and not newer:
                    found.append(
                        f"{pk}/{sk}: rewritten with different data without a newer version "
                        f"({last.updated_at} -> {write.updated_at})"
                    )
                last = write
        return found

    def count(self, products: bool | None = None) -> int:
        """Writes logged; `products` True/False: only those to product records / to the others."""
        with self._lock:
            return sum(
                len(v) for (_pk, sk), v in self.writes.items() if products is None or is_product_key(sk) == products
            )


def _product_write_problems(pk: str, sk: str, history: Sequence[Write], *, relisted: bool) -> list[str]:
    found: list[str] = []
    deleted = False
    last: Write | None = None
    for write in history:
        if write.op == "delete":
            deleted, last = True, None
            continue
        if write.digest is None:
            found.append(f"{pk}/{sk}: product record written without a digest")
        if deleted and not relisted:
            found.append(f"{pk}/{sk}: written again after it was deleted, and Pluggy never listed it again")
        if last is not None and write.digest == last.digest:
            found.append(f"{pk}/{sk}: rewritten with the same digest (a wasted write)")
        elif last is not None and write.data == last.data:
            found.append(f"{pk}/{sk}: rewritten with the same data under another digest (an unstable hash)")
        deleted, last = False, write
    return found


# --- fault injection into the pipeline's own boto3 clients ------------------------------------------------


class _FakeHttp:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""
        self.raw = None


# kind -> (error code, HTTP status) of the error response a before-call hook answers with
ERROR_RESPONSES = {
    "throttle": ("ProvisionedThroughputExceededException", 400),
    "dynamodb-500": ("InternalServerError", 500),
    "sqs-throttle": ("RequestThrottled", 403),
    "sqs-500": ("InternalError", 500),
    "secrets-500": ("InternalServiceError", 500),
}
# Other kinds: "connection" and "timeout" raise a network error instead of calling AWS; "lost-answer" lets
# the call reach AWS, then loses the answer (the caller sees a timeout although the write happened).
UNPROCESSED = "unprocessed"  # BatchWriteItem answers part (or all) of the request as UnprocessedItems


@dataclass
class Rule:
    name: str
    target: str  # label of the client (e.g. "receiver.dynamodb")
    operation: str  # botocore operation name (PutItem, SendMessage, ...)
    kind: str
    count: int
    probability: float = 1.0
    match: Callable[[Mapping[str, Any]], bool] | None = None
    fired: int = 0


class AwsFaults:
    """Fails chosen calls of chosen clients, deterministically (a seeded random source decides "at random").

    Hooks on botocore events, so the code under test runs unchanged: `before-parameter-build` decides (it
    sees the API parameters, e.g. the eventId attribute of a SendMessage), `before-call` answers with an
    error response or raises a network error instead of calling AWS, `after-call` loses the answer of a call
    that succeeded or returns part of a batch as UnprocessedItems. An injected failure stands for a call that
    failed after botocore's own retries (a short-circuited call is not retried by botocore).
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rules: list[Rule] = []
        self._lock = threading.Lock()

    def attach(self, client: Any, label: str) -> Any:
        events = client.meta.events
        events.register("before-parameter-build", functools.partial(self._decide, label))
        events.register("before-call", self._answer)
        events.register("after-call", self._after)
        return client

    def add(
        self,
        name: str,
        target: str,
        operation: str,
        kind: str,
        count: int = 1,
        *,
        probability: float = 1.0,
        match: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> Rule:
        rule = Rule(name, target, operation, kind, count, probability, match)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def fired(self) -> int:
        with self._lock:
            return sum(r.fired for r in self.rules)

    def _decide(self, label: str, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        with self._lock:
            for rule in self.rules:
                if rule.target != label or rule.operation != model.name or rule.fired >= rule.count:
                    continue
                if rule.match is not None and not rule.match(params):
                    continue
                if rule.probability < 1.0 and self.rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                context[_FAULT] = rule
                if rule.kind == UNPROCESSED:
                    table, requests = next(iter(params["RequestItems"].items()))
                    keep = self.rng.randrange(0, len(requests))
                    context[_HELD] = (table, list(requests[keep:]), keep == 0)
                    if keep:
                        # A new dict: the caller's own list stays as it passed it.
                        params["RequestItems"] = {table: list(requests[:keep])}
                return

    def _answer(self, context: dict[str, Any], **_: Any) -> Any:
        rule = context.get(_FAULT)
        if rule is None:
            return None
        if rule.kind in ERROR_RESPONSES:
            code, status = ERROR_RESPONSES[rule.kind]
            message = f"injected by the proof suite ({rule.name})"
            return _FakeHttp(status), {
                "Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": 0},
            }
        if rule.kind == "connection":
            raise EndpointConnectionError(endpoint_url="https://injected.invalid")
        if rule.kind == "timeout":
            raise ReadTimeoutError(endpoint_url="https://injected.invalid")
        if rule.kind == UNPROCESSED and context[_HELD][2]:
            # DynamoDB processed none of them (an empty request would not even be valid).
            table, held, _all = context[_HELD]
            return _FakeHttp(200), {"UnprocessedItems": {table: held}, "ResponseMetadata": {"HTTPStatusCode": 200}}
        return None

    def _after(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        rule = context.get(_FAULT)
        if rule is None:
            return
        if rule.kind == "lost-answer":
            raise ReadTimeoutError(endpoint_url="https://injected.invalid/lost-answer")
        if rule.kind == UNPROCESSED and not context[_HELD][2]:
            table, held, _all = context[_HELD]
            parsed.setdefault("UnprocessedItems", {}).setdefault(table, []).extend(held)


def attribute_is(name: str, value: str) -> Callable[[Mapping[str, Any]], bool]:
    """Matches a SendMessage whose message attribute `name` is `value` (e.g. one eventId)."""

    def match(params: Mapping[str, Any]) -> bool:
        attributes = params.get("MessageAttributes") or {}
        return (attributes.get(name) or {}).get("StringValue") == value

    return match


def item_is(item_id: str) -> Callable[[Mapping[str, Any]], bool]:
    """Matches a claim (PutItem on EventsTable) or a send of an event about one item."""

    def match(params: Mapping[str, Any]) -> bool:
        if "Item" in params:
            return _s(params["Item"].get("itemId")) == item_id
        body = params.get("MessageBody")
        return isinstance(body, str) and f'"itemId":"{item_id}"' in body

    return match


# --- histories of one item -------------------------------------------------------------------------------

FAIL_CODES = ("INVALID_CREDENTIALS", "SITE_NOT_AVAILABLE", "USER_AUTHORIZATION_PENDING")
OK_USER = "user-ok"
# The sandbox user whose syncs end PARTIAL_SUCCESS: statusDetail.creditCards says isUpdated false, and Pluggy
# keeps serving the card's bills of the last good sync (the emulator does not refresh them).
PARTIAL_USER = "user-ok-account-error"
# What an item may ask for beside ACCOUNTS and TRANSACTIONS (the products a history's item requests).
OPTIONAL_PRODUCTS = ("CREDIT_CARDS", "PAYMENT_DATA", "INVESTMENTS", "INVESTMENTS_TRANSACTIONS", "IDENTITY", "LOANS")


@dataclass(frozen=True)
class Op:
    """One thing that happens to an item at Pluggy (the emulator's control API, or the user's PATCH)."""

    kind: str  # sync | fail | waiting | reconnect | delete | patch-partial | patch-ok
    add: int = 0
    change: int = 0
    delete: int = 0
    restate: int = 0
    new_account: bool = False
    code: str = "INVALID_CREDENTIALS"
    products_change: bool = False  # balances move, a new BUY, a loan installment paid, the identity touched
    remove_investment: bool = False  # the newest investment is gone with its transactions

    def label(self) -> str:
        if self.kind == "patch-partial":
            return f"patch({PARTIAL_USER})"
        if self.kind == "patch-ok":
            return f"patch({OK_USER})"
        if self.kind != "sync":
            return self.kind if self.kind != "fail" else f"fail({self.code})"
        counts = (("+", self.add), ("~", self.change), ("-", self.delete), ("r", self.restate))
        parts = [f"{sign}{n}" for sign, n in counts if n]
        flags = (
            ("new-account", self.new_account),
            ("products", self.products_change),
            ("remove-investment", self.remove_investment),
        )
        return "sync(" + ",".join(parts + [name for name, on in flags if on]) + ")"

    def step_kind(self) -> str:
        """The kind the figures count: a sync that changes products is counted apart."""
        if self.kind == "sync" and self.remove_investment:
            return "sync-remove-investment"
        if self.kind == "sync" and self.products_change:
            return "sync-products"
        return self.kind


def patch_user(emulator: Any, item_id: str, user: str) -> None:
    """The user updates the item's credentials (`PATCH /items/{id}`, Pluggy's API): a new sync follows.

    PATCH is limited to 20 calls a minute; the user's app waits out a 429 (played: the route's window ends),
    as it is not what the proof is about."""
    body = {"parameters": {"user": user}}
    for _ in range(2):
        answer = requests.patch(
            f"{emulator.base_url}/items/{item_id}",
            json=body,
            headers={"X-API-KEY": emulator.issue_api_key()},
            timeout=10,
        )
        if answer.status_code != 429:
            break
        emulator.reset_rate_limits("PATCH /items/{id}")
    answer.raise_for_status()


def apply_op(emulator: Any, item_id: str, op: Op) -> dict[str, Any]:
    """Run `op` on the emulator (counts clamped to the rows the item has, an investment removed only while
    one is left); returns the truth after it."""
    if op.kind == "sync":
        truth = emulator.truth() if (op.change or op.delete or op.restate or op.remove_investment) else None
        if truth is not None:
            accounts = {a: acc for a, acc in truth["accounts"].items() if acc["itemId"] == item_id}
            rows = sum(len(truth["transactions"][a]) for a in accounts)
            cards = sum(len(truth["transactions"][a]) for a, acc in accounts.items() if acc["type"] == "CREDIT")
        else:
            rows = cards = 0
        restate = min(op.restate, cards)
        delete = min(op.delete, rows - restate)
        change = min(op.change, rows - restate - delete)
        remove = truth is not None and any(i.get("itemId") == item_id for i in truth["investments"].values())
        emulator.sync_item(
            item_id,
            add=op.add,
            change=change,
            delete=delete,
            restate_credit_card=restate,
            new_account=op.new_account,
            products_change=op.products_change,
            remove_investment=op.remove_investment and remove,
        )
    elif op.kind == "patch-partial":
        patch_user(emulator, item_id, PARTIAL_USER)
    elif op.kind == "patch-ok":
        patch_user(emulator, item_id, OK_USER)
    elif op.kind == "fail":
        emulator.fail_item(item_id, op.code)
    elif op.kind == "waiting":
        emulator.set_waiting_user_input(item_id)
    elif op.kind == "reconnect":
        emulator.reconnect_item(item_id)
    elif op.kind == "delete":
        emulator.delete_item(item_id)
    else:
        raise ValueError(op.kind)
    return emulator.truth()  # type: ignore[no-any-return]


def random_op(rng: random.Random, *, allow_delete: bool, products: bool = False) -> Op:
    """A step drawn at random; with `products`, syncs may change the item's products or remove an investment,
    and the user may switch the item to the PARTIAL_SUCCESS user and back (PATCH). Without, the draws are the
    ones test_faults.py's rounds were written with."""
    if products and rng.random() < 0.1:
        return Op(rng.choice(("patch-partial", "patch-partial", "patch-ok")))
    roll = rng.random()
    if roll < 0.62:
        op = Op(
            "sync",
            add=rng.choice((0, 1, 1, 2, 3)),
            change=rng.choice((0, 0, 1, 2)),
            delete=rng.choice((0, 0, 1, 2)),
            restate=rng.choice((0, 0, 0, 1)),
            new_account=rng.random() < 0.08,
        )
        if products:
            op = dataclasses.replace(op, products_change=rng.random() < 0.4, remove_investment=rng.random() < 0.15)
        return op
    if roll < 0.74:
        return Op("fail", code=rng.choice(FAIL_CODES))
    if roll < 0.80:
        return Op("waiting")
    if roll < 0.93 or not allow_delete:
        return Op("reconnect")
    return Op("delete")


def random_products(rng: random.Random) -> list[str] | None:
    """What a stack history's item asks for: every product (None, the default) or ACCOUNTS, TRANSACTIONS and
    a random subset of the others."""
    if rng.random() < 0.5:
        return None
    return ["ACCOUNTS", "TRANSACTIONS", *(p for p in OPTIONAL_PRODUCTS if rng.random() < 0.6)]


def accounts_of(truth: Mapping[str, Any], item_id: str) -> set[str]:
    return {a for a, acc in truth["accounts"].items() if acc["itemId"] == item_id}


# --- Pluggy's rate limits --------------------------------------------------------------------------------

PLUGGY_MINUTE = 60.0  # Pluggy's rate-limit window (pluggy-api.md section 7), not shortened: see Throttling
# The rate-limited routes the processor calls for every item with data (POST /auth only for a new API key).
RATE_LIMITED_ROUTES = ("GET /v2/transactions", "GET /accounts")


def emulator_rate_limits() -> dict[str, Any]:
    """PluggyEmulator options of the instant-mode proof suites: Pluggy's per-endpoint limits (the emulator's
    "pluggy" setting, PLUGGY_RATE_LIMITS) on Pluggy's minute, unless PROOF_RATE_LIMITS=off."""
    if RATE_LIMITS == "off":
        return {"rate_limit_per_minute": None}
    return {"rate_limit_per_minute": "pluggy", "rate_limit_window_seconds": PLUGGY_MINUTE}


class Throttling:
    """Pluggy's rate limits as a proof harness meets them: the 429s a processor's client gets, and the time
    its waits take, which a proof run cannot spend.

    The instant emulator counts calls per route in fixed windows of wall time, Pluggy's minute. The suites'
    own calls stay under Pluggy's 360 per route in any minute (about 350 in the busiest minute of the local
    stack here, far fewer per history at the processor level), so the window is not shortened and costs no
    time; the 429s come from `use_up` (another client of the application, e.g. a concurrent Lambda behind
    the same NAT IP, used a route's minute: the next call gets a 429 with RateLimit-Reset 60) and, should a
    faster machine make more calls in a minute, from the suites' own calls. Two waits follow a 429, and both
    are played by ending the windows they outlast (`reset_rate_limits(route)`) instead of sleeping through
    them:

    - the client's own wait, when RateLimit-Reset is within its max_retry_wait (`sleep`): Pluggy's windows
      that end within it end;
    - a message returned to the queue (a RateLimitedError: the reset is further away than the client waits;
      or any transient failure) comes back after the queue's visibility timeout (540 s in template.yaml,
      longer than Pluggy's minute): at its next receive (`received`), every window that was open when it
      failed (`failed`) has ended.

    Only the emulator's windows are touched; SQS still redelivers the message itself, in order within its
    message group (the local stack's trigger, or the harness as SQS would).
    """

    def __init__(self, emulator: PluggyEmulator | None, *, window: float = PLUGGY_MINUTE) -> None:
        self.emulator = emulator
        self.window = window
        self.answers = 0  # 429 answers the client got (Pluggy's rate limits, and 429 faults where injected)
        self.waited = 0  # waits of the client after a 429, within the call
        self.returned = 0  # messages returned to the queue by a 429 (RateLimitedError), processed on a later receive
        self.used_up = 0  # route minutes used up by another client (`use_up`)
        self.used_up_routes: set[str] = set()
        self._failed: dict[str, float] = {}  # message id -> when it last failed (time.monotonic)
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def on(self) -> bool:
        return self.emulator is not None and bool(self.emulator.rate_limits)

    def routes(self) -> list[str]:
        limits = self.emulator.rate_limits if self.emulator is not None else None
        if not isinstance(limits, dict):
            return []
        return sorted(route for route in limits if route != "*")

    def use_up(self, route: str) -> bool:
        """Another client used `route`'s minute: the next call on it gets Pluggy's 429. False when limits are off."""
        if not self.on or self.emulator is None:
            return False
        self.emulator.use_up_rate_limit(route)
        with self._lock:
            self.used_up += 1
            self.used_up_routes.add(route)
        return True

    def new_minute(self) -> None:
        """Every route starts a fresh window (between independent histories, so each can be replayed alone)."""
        if self.on and self.emulator is not None:
            self.emulator.reset_rate_limits()
        self.used_up_routes.clear()

    def end_used_up(self) -> None:
        """Forget the minutes `use_up` used (a scenario's own doing must not reach the next scenario)."""
        if self.emulator is not None:
            for route in sorted(self.used_up_routes):
                self.emulator.reset_rate_limits(route)
        self.used_up_routes.clear()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"answers": self.answers, "waited": self.waited, "returned": self.returned, "used_up": self.used_up}

    # -- the client -------------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """A session for the processor's PluggyClient (like its own: no adapter retries) counting 429s."""
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.hooks["response"].append(self._answered)
        return session

    def _answered(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        limited = response.status_code == 429
        self._local.limited = limited
        if limited:
            with self._lock:
                self.answers += 1

    def sleep(self, seconds: float, *, real: float = 0.0) -> None:
        """The client waits `seconds` (after a 429, RateLimit-Reset; else a backoff): Pluggy's windows that end
        within them end. The test itself sleeps at most `real` seconds."""
        if getattr(self._local, "limited", False):
            self._local.limited = False
            with self._lock:
                self.waited += 1
        self._end_windows(lambda now, left: left <= seconds)
        if real > 0:
            time.sleep(min(seconds, real))

    # -- the queue --------------------------------------------------------------------------------------

    def failed(self, message_id: str, error: BaseException) -> None:
        """The message goes back to the queue; SQS hands it over again after the visibility timeout."""
        with self._lock:
            self._failed[message_id] = time.monotonic()
            if isinstance(error, RateLimitedError):
                self.returned += 1

    def received(self, message_id: str) -> None:
        """A receive of the message: after a failure, the visibility timeout has passed, for Pluggy too."""
        with self._lock:
            failed_at = self._failed.pop(message_id, None)
        if failed_at is not None:
            # A window open when the message failed started by then, so it ends by failed_at + window.
            self._end_windows(lambda now, left: now + left <= failed_at + self.window + 0.01)

    def _end_windows(self, ends: Callable[[float, float], bool]) -> None:
        if self.emulator is None:
            return
        for route in self.routes():
            now = time.monotonic()
            budget = self.emulator.rate_limit_budget(route)
            if budget["used"] and ends(now, float(budget["resetSeconds"])):
                self.emulator.reset_rate_limits(route)


def throttle_processor(monkeypatch: pytest.MonkeyPatch, throttling: Throttling) -> None:
    """The processor tells `throttling` when a message fails and when it is received again (the stack's
    SQS trigger redelivers it; SQS message ids are stable across receives). Every message goes through
    `_process_group` (a batch's groups, or `process` of one message)."""
    original = Processor._process_group

    def process_group(
        processor: Processor, group: Sequence[QueueMessage]
    ) -> tuple[list[QueueMessage], BaseException | None]:
        for message in group:
            throttling.received(message.message_id)
        failed, error = original(processor, group)
        for message in failed:
            throttling.failed(message.message_id, error or RuntimeError("handed back"))
        return failed, error

    monkeypatch.setattr(Processor, "_process_group", process_group)


# --- the local stack --------------------------------------------------------------------------------------

READ_TIMEOUT = 0.5  # the processor's Pluggy read timeout in stack tests; "delay" faults last longer


def fast_pluggy_client(monkeypatch: pytest.MonkeyPatch, throttling: Throttling | None = None) -> None:
    """The processor's real PluggyClient (short read timeout) and RecordStore, with backoff sleeps capped at 0.1 s.

    With `throttling`, the client's session counts its 429s, its waits end the rate-limit windows they outlast
    (Throttling.sleep) and a message that fails comes back, for Pluggy's windows, after the visibility timeout.
    """
    from pluggy_pipeline import processor as processor_module
    from pluggy_pipeline.pluggy_client import PluggyClient

    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, 0.1))

    client: Callable[..., PluggyClient] = functools.partial(PluggyClient, timeout=(2.0, READ_TIMEOUT), sleep=sleep)
    if throttling is not None:

        def client(base_url: str, credentials: Callable[[], tuple[str, str]], **options: Any) -> PluggyClient:
            return PluggyClient(
                base_url,
                credentials,
                session=throttling.session(),
                timeout=(2.0, READ_TIMEOUT),
                sleep=functools.partial(throttling.sleep, real=0.1),
                **options,
            )

        throttle_processor(monkeypatch, throttling)
    monkeypatch.setattr(processor_module, "PluggyClient", client)
    monkeypatch.setattr(processor_module, "RecordStore", functools.partial(RecordStore, sleep=sleep))
    get_processor.cache_clear()


@pytest.fixture(scope="module")
def local_stack() -> Iterator[Any]:
    """The whole pipeline on this machine (moto server, HTTP front, SQS trigger, emulator), one per module.

    Its emulator has Pluggy's rate limits (emulator_rate_limits), through StackOptions.emulator_options.
    """
    from pluggy_pipeline_local import stack as stack_module

    options = stack_module.StackOptions(
        state_file=None,
        retry_delay=1.0,
        emulator_seed=SEED % 997,
        quiet=True,
        emulator_options=emulator_rate_limits(),
    )
    with contextlib.ExitStack() as running:
        stack = running.enter_context(stack_module.LocalStack(options))
        assert stack.emulator is not None
        assert stack.emulator.rate_limits == (dict(PLUGGY_RATE_LIMITS) if RATE_LIMITS == "pluggy" else None)
        yield stack


class Resettable:
    """A dataclass of figures a worker process zeroes before its histories (each process keeps its own)."""

    def reset(self) -> None:
        fresh: Any = type(self)()  # the subclass is the dataclass
        for spec in dataclasses.fields(fresh):
            setattr(self, spec.name, getattr(fresh, spec.name))


class FinishCounter:
    """Counts successful ProcessingLog.finish calls per eventId (processed exactly once in effect)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from pluggy_pipeline.event_store import ProcessingLog

        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        original = ProcessingLog.finish

        def finish(log: Any, event_id: str, *args: Any, **kwargs: Any) -> None:
            original(log, event_id, *args, **kwargs)
            with self._lock:
                self.counts[event_id] += 1

        monkeypatch.setattr(ProcessingLog, "finish", finish)

    def over_once(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in self.counts.items() if v > 1}


class StackProbe:
    """Looks at a running LocalStack from outside (its own moto clients, never the pipeline's)."""

    OLD = "2000-01-01T00:00:00.000Z"

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.emulator = stack.emulator
        clients, resources = stack.aws.clients, stack.aws.resources
        self.dynamodb, self.sqs = clients["dynamodb"], clients["sqs"]
        self.records = RecordStore(lambda: self.dynamodb, resources.tables["RecordsTable"])
        self.events_table = resources.tables["EventsTable"]
        self.queue_url = resources.queue_urls["EventQueue"]
        self.dlq_url = resources.queue_urls["EventDeadLetterQueue"]

    def idle(self, timeout: float = 90.0) -> None:
        assert self.stack.wait_until_idle(timeout=timeout, settle=0.1), "the pipeline did not drain"

    def event_log(self, event_id: str) -> dict[str, Any] | None:
        item = self.dynamodb.get_item(
            TableName=self.events_table, Key={"eventId": {"S": event_id}}, ConsistentRead=True
        ).get("Item")
        return from_attributes(item) if item else None

    def emitted(self, item_id: str) -> list[dict[str, Any]]:
        """The item's events as Pluggy emitted them, first emission of each eventId, in order."""
        seen: dict[str, dict[str, Any]] = {}
        for event in self.emulator.events():
            if event["payload"].get("itemId") == item_id and event["eventId"] not in seen:
                seen[event["eventId"]] = event["payload"]
        return list(seen.values())

    def attempts(self, event_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        wanted = set(event_ids)
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for attempt in self.emulator.deliveries():
            if attempt["eventId"] in wanted and attempt["url"] == self.stack.webhook_url:
                found[attempt["eventId"]].append(attempt)
        return found

    def drain_dlq(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
            ).get("Messages", [])
            if not batch:
                return found
            for message in batch:
                self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=message["ReceiptHandle"])
            found += batch

    def redrive(self, messages: Iterable[dict[str, Any]]) -> int:
        """What an operator does once the cause is fixed: send the parked messages back to EventQueue."""
        sent = 0
        for message in messages:
            attributes = {
                k: {"DataType": "String", "StringValue": v["StringValue"]}
                for k, v in (message.get("MessageAttributes") or {}).items()
                if k != "failureReason" and "StringValue" in v
            }
            group = (attributes.get("groupId") or {}).get("StringValue") or message["Attributes"]["MessageGroupId"]
            self.sqs.send_message(
                QueueUrl=self.queue_url,
                MessageBody=message["Body"],
                MessageAttributes=attributes,
                MessageGroupId=group,
                MessageDeduplicationId=f"redrive-{message['MessageId']}",
            )
            sent += 1
        return sent

    def backdate(self, item_id: str) -> bool:
        """Make the item due for reconciliation (as if ReconcileAfterHours had passed since its last sync)."""
        stored = self.records.get(item_key(item_id))
        if stored is None or stored.get("deleted"):
            return False
        self.records.update(item_key(item_id), {"syncedAt": self.OLD, "syncSk": self.OLD})
        return True

    def reconcile(self) -> None:
        self.stack.trigger_reconcile()
        self.idle()

    def mirror(self, item_id: str, known_accounts: Iterable[str]) -> MirrorView:
        return read_mirror(self.records, item_id, known_accounts)


def status_summary(attempts: Iterable[Mapping[str, Any]]) -> str:
    """e.g. '503,503,202': the answers one event got, in order (a network error shows as 'err')."""
    return ",".join(str(a["statusCode"]) if a["statusCode"] is not None else "err" for a in attempts)
