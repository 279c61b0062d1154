"""Writes docs/reliability.md from the proof suites' results file: every figure in it comes from a test run.

    .venv/bin/python -m tests.proof.report [--results PATH] [--output PATH]

The results file is written at the end of any pytest session that ran proof tests (PROOF_RESULTS_FILE,
default .pytest_cache/proof-results.json); `PROOF_WRITE_REPORT=1 .venv/bin/pytest tests/proof` also
writes the document itself at the end of the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = REPO_ROOT / ".pytest_cache" / "proof-results.json"
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "reliability.md"

VARIABLES = [
    ("PROOF_HISTORIES", "200", "processor-level hypothesis histories (test_fidelity.py)"),
    ("PROOF_WORKERS", "min(2, CPUs)", "processes sharing those histories"),
    ("PROOF_STACK_HISTORIES", "20", "histories through the whole local stack, interleaved"),
    ("PROOF_TIMED_HISTORIES", "200", "processor-level histories on the timed emulator (test_fidelity_timed.py)"),
    ("PROOF_FAULT_ROUNDS", "8", "random single-fault rounds (test_faults.py)"),
    ("PROOF_FUZZ_EXAMPLES", "2000", "hostile-input examples: 80% on fakes, 20% through the Lambda handler on moto"),
    ("PROOF_ATHERIS_RUNS", "30000", "coverage-guided atheris runs (skipped when atheris is not installed)"),
    ("PROOF_SEED", "20261122", "seed of every random choice outside hypothesis"),
    ("PROOF_RATE_LIMITS", "pluggy", "Pluggy's rate limits in test_fidelity.py and test_faults.py; `off`: none"),
    ("HYPOTHESIS_PROFILE", "ci", "`ci`: derandomized (same examples every run); `dev`: new examples each run"),
    ("PROOF_RESULTS_FILE", ".pytest_cache/proof-results.json", "where the figures are collected"),
    ("PROOF_WRITE_REPORT", "unset", "`1`: rewrite this document at the end of the pytest session"),
]

# (title, the test that shows it, what it is). Its status in the document comes from that test's outcome.
FINDINGS = [
    (
        "Reconciliation did not heal an item whose last execution failed or waits for the user",
        "tests/proof/test_fidelity.py::test_reconcile_of_an_item_in_error_heals_a_lost_transactions_deleted",
        "Found by the processor-level histories: `Processor.sync_item` returned right after storing the item "
        "when `executionStatus` was not SUCCESS/PARTIAL_SUCCESS, also for reconciliation's full sync, so a "
        "`transactions/deleted` lost before the item went to LOGIN_ERROR/OUTDATED/WAITING_USER_INPUT stayed in "
        "the mirror while the item stayed there (Pluggy keeps serving the data of its last good sync). Fixed in "
        "layers/common/pluggy_pipeline/processor.py: a full sync of an item that has had data "
        "(`lastUpdatedAt`) re-reads its accounts and transactions whatever its status.",
    ),
    (
        "An item whose item/* webhooks were all lost was never reconciled",
        "tests/proof/test_fidelity.py::test_item_known_only_through_transaction_webhooks_is_synced_whole",
        "Reconciliation sweeps `bySyncDue`, i.e. items already in RecordsTable: with `item/login_succeeded`, "
        "`item/created` and `item/updated` lost for good and `transactions/created` delivered, the mirror held "
        "orphan transactions and no item. Fixed in processor.py (`_item_unknown`): a transactions webhook for "
        "an item never stored syncs that item whole first.",
    ),
    (
        "A permanent failure parked, redriven and failing again within 5 minutes vanished from the DLQ",
        "tests/proof/test_fidelity.py::test_parking_the_same_event_again_after_a_redrive_is_not_deduplicated",
        "`Processor._park` sent to the FIFO dead-letter queue with the eventId as MessageDeduplicationId: SQS "
        "accepts a second park of the same event within its 5-minute window without delivering it, the "
        "processor returns normally and the message is deleted from EventQueue, so it ended in neither queue "
        "(moto keeps no deduplication id after a delete, so only the ids sent can be checked here). Fixed in "
        "event_queue.py/processor.py: each park has its own deduplication id (`<eventId>#park-<messageId>`).",
    ),
    (
        "A webhook processed after its item failed leaves the item's data to reconciliation",
        "tests/proof/test_fidelity.py::test_item_created_processed_after_the_item_failed_is_healed_by_reconciliation",
        "By design the processor fetches accounts and transactions on a webhook only when the item's current "
        "execution has data: an `item/created` processed after the item went on to fail (a backlog, a redrive "
        "hours later) stores the item and its error, and the data comes with the next full sync, i.e. within "
        "ReconcileAfterHours plus an hour. The histories check the item record at once and the rest after "
        "reconciliation (the 'ended with the item in error' rows above).",
    ),
]


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _seconds(tests: Mapping[str, Any], prefix: str) -> float:
    return round(sum(t.get("seconds", 0) for name, t in tests.items() if name.startswith(prefix)), 1)


def _answers(answers: Mapping[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(answers.items(), key=lambda kv: (-kv[1], kv[0])))


def _throttled(section: Mapping[str, Any]) -> str:
    """Pluggy's 429s in an instant-mode fidelity section: used up / met / returned to the queue."""
    if section.get("rate_limits") == "off":
        return "rate limits off"
    if "answers_429" not in section:
        return "-"
    return (
        f"{section.get('rate_limit_used_up', 0)} / {section.get('answers_429', 0)} / "
        f"{section.get('returned_429', 0)} (waited out within the call: {section.get('waited_429', 0)})"
    )


def _partial(section: Mapping[str, Any]) -> str:
    return " / ".join(str(section.get(k, "-")) for k in ("partial_steps", "partial_with_bills", "partial_bills_kept"))


def render(results: Mapping[str, Any]) -> str:
    sections = results.get("sections") or {}
    tests = results.get("tests") or {}
    runs = results.get("runs") or [{}]
    run = runs[-1]
    lines = [
        "# Reliability: what the proof suites checked",
        "",
        "Generated by `python -m tests.proof.report` from the figures the proof tests recorded "
        f"(last run finished {run.get('finishedAt', '?')} on {run.get('platform', '?')}, {run.get('cpus', '?')} "
        f"CPUs, Python {run.get('python', '?')}). Do not edit by hand: rerun the tests, then the script.",
        "",
        "The promise: nothing lost, nothing duplicated, nobody let in. The proof suites (tests/proof) check it "
        "through the real functions: the whole local stack (moto server, HTTP front calling the real receiver, "
        "SQS trigger emulation with redrive to the DLQ, reconciliation schedule) with the Pluggy emulator "
        "delivering signed webhooks and retrying them like Pluggy, the real Processor against moto, and the "
        "real receiver against hostile input.",
        "",
        "## Summary",
        "",
    ]
    outcomes: dict[str, int] = {}
    for entry in tests.values():
        outcomes[entry.get("outcome", "?")] = outcomes.get(entry.get("outcome", "?"), 0) + 1
    fidelity = sections.get("fidelity_processor") or {}
    stack = sections.get("fidelity_stack") or {}
    timed = sections.get("fidelity_timed") or {}
    fast = sections.get("hostile_fast") or {}
    moto = sections.get("hostile_moto") or {}
    atheris = sections.get("atheris") or {}
    fault_rows = (sections.get("faults") or {}).get("rows") or []
    fault_429s = sum(int(r.get("answers_429") or 0) for r in fault_rows)
    fidelity_429s = int(fidelity.get("answers_429") or 0) + int(stack.get("answers_429") or 0)
    fidelity_differences = int(fidelity.get("differences") or 0) + int(stack.get("differences") or 0)
    fidelity_products = int(fidelity.get("product_records_compared") or 0) + int(
        stack.get("product_records_compared") or 0
    )
    lines += _table(
        ["suite", "what ran", "seconds"],
        [
            (
                "test_faults.py",
                f"{sum(1 for r in fault_rows if r.get('kind') == 'scenario')} single-fault scenarios and "
                f"{sum(1 for r in fault_rows if r.get('kind') == 'random')} random rounds, "
                f"{sum(int(r.get('injected') or 0) for r in fault_rows)} faults injected, "
                f"{fault_429s} Pluggy 429s met",
                _seconds(tests, "tests/proof/test_faults.py"),
            ),
            (
                "test_fidelity.py",
                f"{fidelity.get('histories', 0)} processor-level histories ({fidelity.get('workers', '?')} processes), "
                f"{stack.get('histories', 0)} full-stack histories, {fidelity_429s} Pluggy 429s met, "
                f"{fidelity_products} product records compared, {fidelity_differences} differences",
                _seconds(tests, "tests/proof/test_fidelity.py"),
            ),
            (
                "test_fidelity_timed.py",
                f"{timed.get('histories', 0)} processor-level histories on the timed emulator "
                f"({timed.get('workers', '?')} processes), {timed.get('differences', '?')} differences",
                _seconds(tests, "tests/proof/test_fidelity_timed.py"),
            ),
            (
                "test_hostile_input.py",
                f"{fast.get('examples', 0) + moto.get('examples', 0)} hypothesis examples "
                f"({fast.get('examples', 0)} on fakes, {moto.get('examples', 0)} through the handler on moto), "
                + (f"{atheris.get('runs')} atheris runs" if atheris.get("runs") else "atheris not run"),
                _seconds(tests, "tests/proof/test_hostile_input.py"),
            ),
        ],
    )
    lines += [
        "",
        "Test outcomes: "
        + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
        + f"; {_seconds(tests, 'tests/proof/')} s in the tests themselves.",
        "",
        "## 1. Faults injected (tests/proof/test_faults.py)",
        "",
        "Each row: a fresh item, one fault armed, one sync at Pluggy (new, changed and deleted transactions, or "
        "the sync drawn for a random round), the pipeline drained; where SQS's redrive policy parked messages, "
        "the cause is removed and the operator's redrive replayed; where a webhook was lost for good, "
        "reconciliation ran. Then, for every row: each 5XX was followed by Pluggy's retry and a 2XX, no "
        "authentic delivery got a 4XX, every accepted event is PROCESSED and finished once (or parked in the "
        "DLQ with its reason), the mirror equals the emulator's truth field by field, and no record was "
        "written again after its deletion or rewritten with different data without a newer Pluggy version. "
        "AWS faults are botocore event hooks on the clients `pluggy_pipeline.aws` creates (an injected failure "
        "stands for a call that failed after botocore's own retries); Pluggy faults are the emulator's. "
        "Pluggy's rate limits are on in every row (360 calls a minute per route on POST /auth and the account "
        "and transaction reads, 20 on PATCH /items/{id}, on Pluggy's 60-second window). In the rows that say "
        "so, another client of the application used up a route's minute first: the processor's call gets "
        "Pluggy's 429 with RateLimit-Reset 60, longer than its client waits, and the message goes back to the "
        "queue until SQS hands it over again (after the visibility timeout, 540 s, when Pluggy's minute has "
        "ended; the test plays that time for the emulator's windows instead of waiting).",
        "",
    ]
    lines += _table(
        ["#", "fault", "layer", "injected", "outcome", "result", "s"],
        [
            (
                n,
                row.get("fault"),
                row.get("layer"),
                row.get("injected"),
                row.get("outcome"),
                "pass" if row.get("ok") else "FAIL",
                row.get("seconds"),
            )
            for n, row in enumerate(fault_rows, start=1)
        ],
    )
    lines += ["", "## 2. Mirror fidelity (tests/proof/test_fidelity.py)", ""]
    per_stack_history = float(stack.get("seconds") or 0) / max(1, int(stack.get("histories") or 1))
    lines += [
        "Random histories of one item each: created, then 3-6 steps (syncs creating, changing and deleting "
        "transactions, credit-card restatements, new accounts, item errors, MFA waits, reconnections), "
        "sometimes ending with the item's deletion. Their webhooks are delivered at once, twice (at once or "
        "after processing), held back and delivered after newer ones, or lost for good. A history where "
        "nothing was lost and whose item ends with data must give mirror == truth with no reconciliation at "
        "all; when something was lost, or the item ended in an error or waiting state (finding 4), the item "
        "record is checked at once (if nothing was lost) and everything after reconciliation: the item's last "
        "sync is backdated past ReconcileAfterHours and the real `pipeline/reconcile` message is processed. "
        "Every delivered event must be PROCESSED and finished once (or parked with its reason: only late "
        "transactions webhooks of a deleted item are), and the write log show no resurrection and no rewrite "
        "without a newer version.",
        "",
        "The items' other products are in every history: an item asks for every product (Pluggy's default) or "
        "for ACCOUNTS, TRANSACTIONS and a random subset of the others (credit-card bills, investments, their "
        "transactions, identity, loans), and is created as `user-ok` or as the PARTIAL_SUCCESS user. Syncs may "
        "move the products (`sync-products`: investment balances and a new BUY, a loan installment paid, the "
        "identity changed) or remove the newest investment with its transactions (`sync-remove-investment`), "
        "and the user may switch the item to the PARTIAL_SUCCESS user and back (`patch-partial`, `patch-ok`: "
        "`PATCH /items/{id}`): its syncs then end with `statusDetail.creditCards.isUpdated` false, Pluggy keeps "
        "serving the bills of the last good sync while the card's rows move on, and so must the mirror. Every "
        "product record of the item (found by a Scan on its id, wherever its key puts it) must equal Pluggy's "
        "object field by field, carry the attributes records.py documents and the hash of exactly what Pluggy "
        "served (`digest`), and none may be left that Pluggy does not list (a removed investment's "
        "transactions, everything of a deleted item, identity included). Product records have no Pluggy "
        "version, so the write log holds them to their own rule: rewritten only with another digest and other "
        "data (never the same digest again: a wasted write), and never written after their deletion unless "
        "Pluggy listed them again. Differences in the identity name the field, never its value.",
        "",
        f"The {fidelity.get('histories', '?')} hypothesis histories run at the processor level (the real "
        "Processor on in-process moto and the emulator; duplicates, reordering and losses applied to the list "
        "of events): through the whole stack a history costs about "
        f"{per_stack_history:.1f} s here even interleaved, too much for the CI budget at that count. "
        f"{stack.get('histories', '?')} seeded histories run through the whole local stack, where every webhook "
        "goes through the emulator's delivery worker and the real receiver (5XX answers forced on SendMessage "
        "make Pluggy retry, which also reorders; 4 failures make Pluggy give up).",
        "",
        "Pluggy throttles meanwhile: both levels run with Pluggy's per-endpoint rate limits on Pluggy's "
        "60-second window (their calls stay under 360 per route in any minute, so it is not shortened), and at "
        "random points another client of the application uses up the minute of GET /v2/transactions or GET "
        "/accounts (before 1 in 12 deliveries at the processor level, before 1 in 10 steps in the stack). The "
        "processor meets Pluggy's 429 with RateLimit-Reset 60, beyond its client's 10 s of waiting, raises a "
        "transient error, and the message is handed over again after the visibility timeout, before any later "
        "message of its group (the processor-level bench does that as SQS would, the stack's SQS trigger in "
        "compressed time; Pluggy's windows end meanwhile, played instead of waited for). Every check above "
        "holds with them.",
        "",
    ]

    def steps(section: Mapping[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted((section.get("steps") or {}).items()))

    def both(label: str, key: str) -> tuple[str, Any, Any]:
        return label, fidelity.get(key, "-"), stack.get(key, "-")

    lines += _table(
        ["", "processor level", "whole local stack"],
        [
            both("histories", "histories"),
            ("steps by kind", steps(fidelity), steps(stack)),
            (
                "webhooks emitted / deliveries (stack: answers per event)",
                f"{fidelity.get('events', '-')} / {fidelity.get('deliveries', '-')}",
                _answers(stack.get("answers") or {}),
            ),
            (
                "duplicated / held back / lost for good (stack: fates)",
                f"{fidelity.get('duplicates', '-')} / {fidelity.get('held_back', '-')} / {fidelity.get('lost', '-')}",
                _answers(stack.get("fates") or {}),
            ),
            ("receiver faults injected (Pluggy retried)", "-", stack.get("receiver_faults_injected", "-")),
            ("histories checked without any reconciliation", "-", stack.get("checked_before_reconcile", "-")),
            both("reconciled", "reconciled"),
            both("ended with the item in error (data checked after reconciliation, finding 4)", "ended_in_error"),
            both("late events for a deleted item parked in the DLQ (404)", "parked_after_delete"),
            (
                "items asking for every product / for a subset (stack: and created as the PARTIAL_SUCCESS user)",
                f"{fidelity.get('items_all_products', '-')} / {fidelity.get('items_some_products', '-')}",
                f"{stack.get('items_all_products', '-')} / {stack.get('items_some_products', '-')} "
                f"({stack.get('items_partial_user', '-')})",
            ),
            (
                "steps ending PARTIAL_SUCCESS with the card product not updated / of which on a card with bills "
                "(Pluggy serves the last good ones) / of which with the card's rows moved in that step",
                _partial(fidelity),
                _partial(stack),
            ),
            both(
                "investments gone at Pluggy, with their transactions (removed, or with their item)",
                "investments_removed",
            ),
            both("writes checked (no resurrection, newer version)", "writes_checked"),
            both(
                "of which to product records (another digest each time, none after a delete)",
                "product_writes_checked",
            ),
            both("records compared field by field", "records_compared"),
            both("of which product records", "product_records_compared"),
            both("differences (mirror != truth)", "differences"),
            (
                "Pluggy's rate limits: minutes used up by another client / 429 answers met / messages returned to "
                "the queue by a 429, processed on a later receive",
                _throttled(fidelity),
                _throttled(stack),
            ),
            both("histories that met a 429", "histories_429"),
            both("seconds", "seconds"),
        ],
    )
    lines += ["", "### Over Pluggy's time (tests/proof/test_fidelity_timed.py)", ""]
    lines += [
        "The histories above run on the instant emulator, where a sync happens inside one call. These run on "
        "the timed one: each sync goes through Pluggy's execution steps in the background (time scale "
        f"{timed.get('time_scale', '?')}), rows appear during it with `createdAt` out of order across pages and "
        f"accounts (page size {timed.get('page_size', '?')}), {timed.get('late_fraction', '?')} of each sync's "
        "new rows appear after UPDATED with an older `createdAt` and a transactions/created of their own, and "
        "Pluggy's per-endpoint rate limits are on. Items are created on the sandbox connector, the 1-step MFA "
        "connector or the 2-step one (the MFA answered through `POST /items/{id}/mfa`), some as the "
        "PARTIAL_SUCCESS user; 2-5 steps follow (syncs adding, changing, deleting and restating rows or adding "
        "an account, item errors, updates the user asks for with `PATCH /items/{id}`, which on the MFA "
        "connectors need the token again). Between steps the emulator's clock jumps past the overlap window, "
        "or the test waits for every row to appear, or the next sync starts at once. The real Processor, its "
        "clock the emulator's (stopped while it works, so a history's timeline depends on its seed, not on "
        "this machine's load), gets every webhook as it is emitted: at once, twice, held back and delivered after "
        "later ones, right after another client used up a rate-limited route's minute (so it meets Pluggy's "
        "429), or, for late rows' transactions/created only, never. At the end every held webhook arrives, "
        f"the clock jumps past the {timed.get('overlap_minutes', '?')}-minute window and one more sync sends "
        "item/updated: with no reconciliation, the mirror must equal Pluggy's truth field by field (a "
        "transactions webhook of an item not stored yet, its item/* webhooks all held back, syncs that item "
        "whole: counted below). A second Processor with TX_OVERLAP_MINUTES=0 gets the same webhooks: its calls "
        "are the baseline of the overlap's cost, and the rows its mirror misses are the rows only the overlap "
        "caught.",
        "",
    ]
    lines += _table(
        ["", "value"],
        [
            ("histories (processes)", f"{timed.get('histories', '-')} ({timed.get('workers', '-')})"),
            ("items by connector / PARTIAL_SUCCESS / MFA answered through the API",
             f"{_answers(timed.get('connectors') or {})} / {timed.get('partial_success', '-')} / "
             f"{timed.get('mfa_answered_through_the_api', '-')}"),
            ("steps by kind / gaps before them", f"{steps(timed)} / {_answers(timed.get('gaps') or {})}"),
            ("webhooks emitted / deliveries", f"{timed.get('events', '-')} / {timed.get('deliveries', '-')}"),
            ("duplicated / held back", f"{timed.get('duplicates', '-')} / {timed.get('held_back', '-')}"),
            ("rate limit used up before a delivery / 429 answers met",
             f"{timed.get('rate_limit_used_up', '-')} / {timed.get('answers_429', '-')}"),
            ("late rows (batches)", f"{timed.get('late_rows', '-')} ({timed.get('late_batches', '-')})"),
            ("late rows' webhooks lost for good (rows)",
             f"{timed.get('lost_late_webhooks', '-')} ({timed.get('lost_late_rows', '-')})"),
            ("rows the overlap's re-reads wrote (new or changed) / rows they re-read",
             f"{timed.get('overlap_caught_rows', '-')} / {timed.get('overlap_rows_reread', '-')}"),
            ("differences with the overlap (records compared)",
             f"{timed.get('differences', '-')} ({timed.get('records_compared', '-')})"),
            ("without the overlap: histories with rows missing (rows)",
             f"{timed.get('without_overlap_histories_wrong', '-')} ({timed.get('without_overlap_missing_rows', '-')})"),
            ("Pluggy calls with / without the overlap",
             f"{timed.get('pluggy_calls', '-')} / {timed.get('pluggy_calls_without_overlap', '-')}"),
            ("extra Pluggy calls: total, per history, per sync (of which GET /v2/transactions)",
             f"{timed.get('extra_pluggy_calls', '-')}, {timed.get('extra_pluggy_calls_per_history', '-')}, "
             f"{timed.get('extra_pluggy_calls_per_sync', '-')} ({timed.get('extra_transactions_calls', '-')})"),
            ("items synced whole (first known through a transactions webhook)", timed.get("full_syncs", "-")),
            ("histories costing more calls / most extra calls in one history",
             f"{timed.get('histories_with_extra_calls', '-')} / {timed.get('worst_history_extra_calls', '-')}"),
            ("emulator hours covered / seconds", f"{timed.get('emulator_hours', '-')} / {timed.get('seconds', '-')}"),
        ],
    )  # fmt: skip
    lines += ["", "## 3. Hostile input (tests/proof/test_hostile_input.py)", ""]
    lines += [
        'Every example is judged by an oracle written from docs/design.md ("The receiver\'s answers"): never a '
        "5XX, never an exception, the documented 4XX and `error` reason for anything not valid and "
        "authenticated, 202/200 for valid authenticated deliveries; nothing claimed or queued for a 4XX; a 202 "
        "queues the body byte for byte once, and the same delivery again answers 200 without queueing. The fast "
        "run uses the real WebhookReceiver, EventStore and EventQueue on fake clients that refuse what DynamoDB "
        "and SQS refuse; the moto run goes through the Lambda handler (Secrets Manager, DynamoDB, SQS FIFO).",
        "",
    ]
    families: dict[str, dict[str, Any]] = {}
    for section in (fast, moto):
        for name, family in (section.get("families") or {}).items():
            merged = families.setdefault(name, {"examples": 0, "answers": {}})
            merged["examples"] += family["examples"]
            for answer, count in family["answers"].items():
                merged["answers"][answer] = merged["answers"].get(answer, 0) + count
    lines += _table(
        ["inputs tried", "examples", "answers"],
        [(name, f["examples"], _answers(f["answers"])) for name, f in sorted(families.items())],
    )
    fast_test = tests.get("tests/proof/test_hostile_input.py::test_fuzz_receiver_fast") or {}
    moto_test = tests.get("tests/proof/test_hostile_input.py::test_fuzz_lambda_handler_on_moto") or {}
    lines += [
        "",
        f"Fast run: {fast.get('examples', 0)} examples, {fast_test.get('seconds', '-')} s with generation "
        f"({fast.get('seconds', '-')} s in the receiver); Lambda handler on moto: {moto.get('examples', 0)} examples, "
        f"{moto_test.get('seconds', '-')} s.",
        "",
    ]
    if atheris.get("runs"):
        lines += [
            f"atheris {atheris.get('atheris')}: {atheris['runs']} coverage-guided inputs on `parse_delivery` and the "
            f"receiver (seeded with the events/ corpus bodies), {atheris.get('coverage_edges')} edges and "
            f"{atheris.get('features')} features of pluggy_pipeline covered, {atheris.get('seconds')} s, no crash "
            "and no property violated. atheris ships wheels for Linux x86_64 only, so the dev dependency is "
            "marked for that platform and the test is skipped elsewhere.",
            "",
        ]
    else:
        lines += ["atheris did not run (not installed on this platform): hypothesis only.", ""]
    lines += [
        "## Findings",
        "",
        "What the suites found. The first three were bugs, fixed in the code while this suite was written; "
        "their tests stay as regression tests. The others are how the pipeline behaves, worth knowing when "
        "operating it.",
        "",
    ]
    number = 0
    for title, test, text in FINDINGS:
        number += 1
        outcome = (tests.get(test) or {}).get("outcome", "not run")
        status = {
            "passed": "its test passes in this run",
            "failed": "REGRESSED: its test fails in this run",
            "xfailed": "open: its strict xfail test fails as expected",
        }.get(outcome, f"test {outcome}")
        lines += [f"{number}. **{title}** ({status}: `{test.split('::')[1]}`). {text}", ""]
    parked = int(fidelity.get("parked_after_delete") or 0) + int(stack.get("parked_after_delete") or 0)
    number += 1
    lines += [
        f"{number}. **Late transactions webhooks for a deleted item go to the DLQ** (observed {parked} times in the "
        "histories of this run). A `transactions/created` or `/updated` processed after its item was deleted gets "
        "404 ACCOUNT_NOT_FOUND from Pluggy, a permanent error: the message is parked with its reason, the mirror "
        "stays right (nothing is resurrected), but the DLQ alarm fires for a fact, not a fault. Suggested: treat "
        "`PluggyNotFoundError` in those two handlers like `sync_item` does (the account is gone: finish).",
        "",
    ]
    behind = sum(int(r.get("behind") or 0) for r in fault_rows)
    number += 1
    lines += [
        f"{number}. **Messages queued behind a failing one no longer reach the DLQ without a failure of their "
        f"own** (observed {behind} times in this run's fault scenarios). Before, a group's later records were "
        "reported as failures with the failing one and SQS's redrive (5 receives) moved them too, with EventsTable "
        "still RECEIVED. Now the processor counts attempts itself (EventsTable `attempts`; a hold for a rate limit, "
        "or a message handed back unstarted, is not one), parks an event after 5 failed attempts with "
        "`failureKind: attempts`, and SQS's redrive (100 receives) is only a backstop for what never reaches the "
        "processor's code.",
        "",
    ]
    lines += ["## Reproduce", ""]
    lines += [
        "```sh",
        "# the heavy proof tests (marked slow; CI runs them too, with everything else, through `make test`)",
        ".venv/bin/pytest tests/proof -m slow",
        "# the whole proof suite (heavy tests and the regression tests of the findings), rewriting this document",
        "PROOF_WRITE_REPORT=1 .venv/bin/pytest tests/proof",
        ".venv/bin/python -m tests.proof.report   # from the last results file, without rerunning",
        "# bigger and fresh (new hypothesis examples, other seeds)",
        "HYPOTHESIS_PROFILE=dev PROOF_HISTORIES=2000 PROOF_STACK_HISTORIES=60 PROOF_FAULT_ROUNDS=60 \\",
        "  PROOF_FUZZ_EXAMPLES=20000 PROOF_ATHERIS_RUNS=1000000 PROOF_SEED=$RANDOM .venv/bin/pytest tests/proof",
        "```",
        "",
    ]
    effective = run.get("effective") or {}
    lines += _table(
        ["variable", "default", "this run", "meaning"],
        [(f"`{name}`", default, effective.get(name, (run.get("sizes") or {}).get(name) or "-"), meaning)
         for name, default, meaning in VARIABLES],
    )  # fmt: skip
    lines += [
        "",
        "A failing hypothesis test prints its falsifying example and a `@reproduce_failure` blob; under the `ci` "
        "profile the same examples run again on the next run, so a red CI run reproduces locally with the same "
        "command.",
        "",
    ]
    return "\n".join(lines)


def write_report(results: Mapping[str, Any], output: Path = DEFAULT_OUTPUT) -> Path:
    output.write_text(render(results), encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    options = parser.parse_args(argv)
    if not options.results.is_file():
        print(f"no results at {options.results}: run `.venv/bin/pytest tests/proof` first", file=sys.stderr)
        return 1
    written = write_report(json.loads(options.results.read_text(encoding="utf-8")), options.output)
    print(written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
