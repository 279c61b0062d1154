"""`pluggy-pipeline` end to end: `main([...])` against a LocalStack (moto + real functions + Pluggy emulator).

One LocalStack serves the module; it writes its state file under tmp_path and PLUGGY_PIPELINE_STATE_FILE
points the CLI at it, so a developer's own `pluggy-pipeline local` is never touched. `demo` runs first: it
starts a private stack in this process, and two stacks cannot share one process environment.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pluggy_pipeline.observability import SERVICE
from pluggy_pipeline.secrets import derive_url_token
from pluggy_pipeline_cli.cli import main
from pluggy_pipeline_cli.commands.local import print_summary
from pluggy_pipeline_cli.targets import STATE_FILE_ENV, CliError, stack_target
from pluggy_pipeline_cli.webhook_examples import VALID_PAYLOADS
from pluggy_pipeline_local.devsecrets import (
    LOCAL_PLUGGY_CLIENT_ID,
    LOCAL_PLUGGY_CLIENT_SECRET,
    LOCAL_SIGNING_KEY,
    LOCAL_WEBHOOK_SECRET,
)
from pluggy_pipeline_local.stack import LocalStack, StackOptions

from tests.conftest import REPO_ROOT

USER = "cli-user"
SECRETS = (LOCAL_WEBHOOK_SECRET, LOCAL_SIGNING_KEY, LOCAL_PLUGGY_CLIENT_SECRET)
_running: list[LocalStack] = []


@pytest.fixture(autouse=True)
def _isolated_env() -> Iterator[None]:
    """Replaces conftest's: the module's LocalStack owns the process environment (moto endpoint, fake
    credentials); resetting it per test would point the running functions at real AWS."""
    yield


@pytest.fixture(scope="module", autouse=True)
def _restore_logger_level() -> Iterator[None]:
    """LocalStack sets the functions' shared logger to its quiet level; later modules expect it untouched."""
    shared = logging.getLogger(SERVICE)
    level = shared.level
    yield
    shared.setLevel(level)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    patch = pytest.MonkeyPatch()
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        patch.delenv(key, raising=False)
    state_file = tmp_path_factory.mktemp("local-stack") / "state.json"
    patch.setenv(STATE_FILE_ENV, str(state_file))
    stack = LocalStack(StackOptions(state_file=state_file)).start()
    _running.append(stack)
    try:
        yield stack
    finally:
        _running.remove(stack)
        stack.stop()
        patch.undo()
    assert not state_file.exists()


@pytest.fixture(scope="module")
def item(pipeline: LocalStack) -> dict[str, Any]:
    assert pipeline.emulator is not None
    created = pipeline.emulator.create_item(USER)
    assert pipeline.wait_until_idle(timeout=30)
    return created


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in out and secret not in err, f"`{' '.join(argv)}` printed a secret"
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out, parse_float=Decimal)


def exact(value: Any) -> Any:
    """The emulator's truth with numbers as the CLI prints the store's (Decimal)."""
    return json.loads(json.dumps(value), parse_float=Decimal)


def event_record(capsys: pytest.CaptureFixture[str], event_id: str) -> dict[str, Any]:
    record: dict[str, Any] = run_json(capsys, "events", "show", event_id)
    return record


# -- demo (first: it runs its own stack in this process) -------------------------------------------


def test_demo_runs_the_main_job_and_the_mirror_matches(capsys: pytest.CaptureFixture[str]) -> None:
    assert not _running, "demo must run before the module's LocalStack starts (one stack per process)"
    started = time.monotonic()
    code, out, err = run(capsys, "demo", "--json")
    summary = json.loads(out)
    assert code == 0, (summary["reasons"], err)
    assert summary["ok"] and summary["reasons"] == []
    assert summary["mirror"]["matches"] and summary["mirror"]["differences"] == []
    assert summary["mirror"]["transactions"] > 0
    assert summary["dlqDepth"] == 0 and summary["queueDepth"] == 0
    assert {s for statuses in summary["events"].values() for s in statuses} == {"PROCESSED"}
    for event in ("item/created", "item/updated", "item/error", "transactions/created", "transactions/deleted"):
        assert event in summary["events"]
    assert "connector/status_updated" in summary["events"] and "payment_intent/completed" in summary["events"]
    # The widget's path: the token's item, the Caixa item pending then approved, then the first item's error.
    assert summary["steps"][0]["item"]["status"] == "UPDATED"
    assert summary["steps"][1]["item"]["errorCode"] == "USER_AUTHORIZATION_PENDING"
    assert summary["steps"][2]["item"]["status"] == "UPDATED"
    assert summary["steps"][4]["item"]["errorCode"] == "USER_AUTHORIZATION_PENDING"
    assert all(i["status"] == "UPDATED" and i["errorCode"] is None for i in summary["items"])
    counts = summary["changeEventCounts"]
    assert set(counts) == {
        "Item Status Changed",
        "Transactions Changed",
        "Payment Status Changed",
        "Connector Status Changed",
        "Products Changed",  # the emulator's items request every product and carry a consent
        "Consent Changed",
    }
    assert sum(1 for line in summary["changeEvents"] if "USER_AUTHORIZATION_PENDING" in line and "pending" in line) == 2
    assert summary["readApi"] == {"items": 2, "transactions": summary["mirror"]["transactions"], "mismatched": 0}
    assert {a["type"] for a in summary["accounts"]} == {"BANK", "CREDIT"}
    assert time.monotonic() - started < 45
    print_summary(summary)  # the table form of the same summary
    text = capsys.readouterr().out
    assert "Mirror MATCHES the emulator's data field by field" in text and "OK: every event processed" in text
    assert "Change events on the bus" in text and "Read API (SigV4): 2 items" in text
    assert summary["items"][0]["itemId"] in text and "Dead-letter queue depth: 0" in text


# -- send -------------------------------------------------------------------------------------------


def test_send_item_updated_is_accepted_and_processed(capsys: pytest.CaptureFixture[str], item: dict[str, Any]) -> None:
    code, out, err = run(capsys, "send", "item/updated", "--item-id", item["id"], "--status", "ACTIVE", "--wait", "20")
    assert code == 0, out + err
    assert "HTTP 202" in out and "PROCESSED" in out
    assert "carry no status" in err  # seed 002's --status ACTIVE: explained, not faked into the payload
    event_id = re.search(r"eventId (\S+)", out).group(1)  # type: ignore[union-attr]
    record = event_record(capsys, event_id)
    assert record["status"] == "PROCESSED" and record["itemId"] == item["id"]
    assert record["payload"]["event"] == "item/updated" and "data" not in record["payload"]
    assert record["payload"]["clientId"] == LOCAL_PLUGGY_CLIENT_ID


def test_send_with_a_wrong_secret_is_refused(capsys: pytest.CaptureFixture[str], pipeline: LocalStack) -> None:
    code, out, _ = run(capsys, "send", "item/updated", "--secret", "not-the-secret")
    assert code != 0
    assert "HTTP 401" in out and "bad_secret" in out


def test_send_with_a_wrong_signing_key_is_refused(capsys: pytest.CaptureFixture[str], pipeline: LocalStack) -> None:
    code, out, _ = run(capsys, "send", "item/updated", "--signing-key", "not-the-key")
    assert code != 0 and "HTTP 401" in out and "bad_signature" in out


@pytest.mark.parametrize(
    "event",
    sorted(
        {p["event"] for p in VALID_PAYLOADS.values()} | {"scheduled_payment/all_created", "payment_request/updated"}
    ),
)
def test_send_builds_a_payload_for_any_event(
    capsys: pytest.CaptureFixture[str], pipeline: LocalStack, event: str
) -> None:
    code, out, _ = run(capsys, "send", event, "--dry-run", "--item-id", "it-1", "--payment-id", "pay-1")
    assert code == 0
    payload = json.loads(out)
    assert payload["event"] == event
    assert payload["clientId"] == LOCAL_PLUGGY_CLIENT_ID
    corpus_ids = {p.get("eventId") for p in VALID_PAYLOADS.values()}
    if event == "connector/status_updated":
        assert "eventId" not in payload  # Pluggy's reference shape: keyed on the body's hash
    else:
        assert payload["eventId"] not in corpus_ids
    if "itemId" in payload:
        assert payload["itemId"] == "it-1"
    if "createdTransactionsLink" in payload:
        assert payload["createdTransactionsLink"].startswith(pipeline.describe()["pluggyBaseUrl"])
    if event.startswith(("payment_intent/", "scheduled_payment/", "payment_request/")):
        assert "pay-1" in payload.values()


def test_send_puts_status_where_pluggy_does(capsys: pytest.CaptureFixture[str], pipeline: LocalStack) -> None:
    code, out, _ = run(
        capsys, "send", "connector/status_updated", "--status", "OFFLINE", "--connector-id", "7", "--wait"
    )
    assert code == 0 and "PROCESSED" in out
    stored = pipeline.aws.clients["dynamodb"].get_item(  # type: ignore[union-attr]
        TableName=pipeline.aws.resources.tables["RecordsTable"],  # type: ignore[union-attr]
        Key={"pk": {"S": "CONNECTOR#7"}, "sk": {"S": "STATUS"}},
    )["Item"]
    assert stored["status"]["S"] == "OFFLINE"


# -- register ---------------------------------------------------------------------------------------


def test_register_is_idempotent_and_force_updates(capsys: pytest.CaptureFixture[str], pipeline: LocalStack) -> None:
    url = f"{pipeline.webhook_url}?via=cli-test"  # the same receiver under another URL
    first = run_json(capsys, "register", "--local", "--url", url)
    try:
        assert first["action"] == "created" and first["url"] == url and first["event"] == "all"
        assert run_json(capsys, "register", "--local", "--url", url)["action"] == "unchanged"
        forced = run_json(capsys, "register", "--local", "--url", url, "--force")
        assert forced["action"] == "updated" and forced["webhookId"] == first["webhookId"]
        code, out, _ = run(capsys, "register")  # the stack's own webhook, registered when it started
        assert code == 0 and out.startswith("unchanged:") and "headers" not in out
    finally:
        client = pipeline.pluggy_client()
        client.delete_webhook(first["webhookId"])
        client.close()


def test_webhook_url_hides_the_token_unless_asked(capsys: pytest.CaptureFixture[str], pipeline: LocalStack) -> None:
    token = derive_url_token(LOCAL_WEBHOOK_SECRET)
    code, out, _ = run(capsys, "webhook-url")
    assert code == 0 and token not in out and f"{pipeline.webhook_url}/{token[:4]}…" in out
    shown = run_json(capsys, "webhook-url", "--show-token")
    assert shown == {
        "headerRoute": pipeline.webhook_url,
        "headerName": "X-Webhook-Secret",
        "tokenRoute": f"{pipeline.webhook_url}/{token}",
    }


def test_register_per_item_points_the_item_at_the_url_token_route(
    capsys: pytest.CaptureFixture[str], pipeline: LocalStack, item: dict[str, Any]
) -> None:
    assert pipeline.emulator is not None
    token_url = f"{pipeline.webhook_url}/{derive_url_token(LOCAL_WEBHOOK_SECRET)}"
    [result] = run_json(capsys, "register", "--per-item", item["id"])
    assert result["itemId"] == item["id"] and result["webhookUrl"].endswith("…")
    assert pipeline.emulator.truth()["items"][item["id"]]["webhookUrl"] == token_url
    assert pipeline.wait_until_idle(timeout=30)  # the PATCH started a sync; its deliveries use both routes
    per_item = [d for d in pipeline.emulator.deliveries() if d["url"] == token_url]
    assert per_item and {d["statusCode"] for d in per_item} <= {200, 202}


def test_connect_token_sets_the_url_token_route_as_webhook_url(
    capsys: pytest.CaptureFixture[str], pipeline: LocalStack
) -> None:
    minted = run_json(capsys, "connect-token", "--client-user-id", "cli-connect", "--avoid-duplicates")
    assert minted["clientUserId"] == "cli-connect" and minted["accessToken"]
    claims = json.loads(base64.urlsafe_b64decode(minted["accessToken"].split(".")[1] + "=="))
    options = claims["options"]
    assert options["webhookUrl"] == f"{pipeline.webhook_url}/{derive_url_token(LOCAL_WEBHOOK_SECRET)}"
    assert options["clientUserId"] == "cli-connect" and options["avoidDuplicates"] is True


# -- events -----------------------------------------------------------------------------------------


def test_events_list_filters_by_type_and_status(capsys: pytest.CaptureFixture[str], item: dict[str, Any]) -> None:
    everything = run_json(capsys, "events", "list", "--limit", "500")
    assert {r["eventType"] for r in everything} >= {"item/created", "item/login_succeeded"}
    updated = run_json(capsys, "events", "list", "--type", "item/created", "--status", "PROCESSED")
    assert updated and all(r["eventType"] == "item/created" and r["status"] == "PROCESSED" for r in updated)
    assert all("payload" not in r and "attemptToken" not in r for r in updated)
    assert run_json(capsys, "events", "list", "--status", "PROCESSING") == []
    assert run_json(capsys, "events", "list", "--since", "2999-01-01") == []
    assert len(run_json(capsys, "events", "list", "--since", "1h", "--limit", "1")) == 1
    times = [r["receivedAt"] for r in everything]
    assert times == sorted(times, reverse=True)
    code, out, _ = run(capsys, "events", "list", "--type", "item/created")
    assert code == 0 and "item/created" in out and "item/login_succeeded" not in out


def test_events_show(capsys: pytest.CaptureFixture[str], item: dict[str, Any]) -> None:
    event_id = run_json(capsys, "events", "list", "--type", "item/created", "--limit", "1")[0]["eventId"]
    record = event_record(capsys, event_id)
    assert record["eventId"] == event_id and record["payload"]["itemId"] == item["id"]
    code, out, _ = run(capsys, "events", "show", event_id)
    assert code == 0 and "payload:" in out and f'"itemId": "{item["id"]}"' in out
    code, _, err = run(capsys, "events", "show", "no-such-event")
    assert code == 1 and "no event no-such-event" in err


def test_replay_of_a_processed_event_processes_it_again(
    capsys: pytest.CaptureFixture[str], pipeline: LocalStack, item: dict[str, Any]
) -> None:
    event_id = run_json(capsys, "events", "list", "--type", "item/created", "--limit", "1")[0]["eventId"]
    before = event_record(capsys, event_id)
    assert before["status"] == "PROCESSED"
    code, out, _ = run(capsys, "events", "replay", event_id)
    assert code == 0 and f"replayed {event_id}" in out
    assert pipeline.wait_until_idle(timeout=20)
    after = event_record(capsys, event_id)
    assert after["status"] == "PROCESSED"
    assert after["attempts"] == before["attempts"] + 1
    assert after["replays"] == 1 and after["processedAt"] > before["processedAt"]
    code, out, _ = run(capsys, "events", "replay", "--status", "FAILED", "--type", "item/created")
    assert code == 0 and "0 event(s) re-enqueued" in out


# -- dlq --------------------------------------------------------------------------------------------


def test_dlq_list_shows_a_poison_message_and_redrive_moves_it_back(
    capsys: pytest.CaptureFixture[str], pipeline: LocalStack
) -> None:
    assert pipeline.aws is not None
    sqs, queues = pipeline.aws.clients["sqs"], pipeline.aws.resources.queue_urls
    attributes = {"eventId": "poison-1", "eventType": "item/updated", "failureReason": "message body is not JSON"}
    sqs.send_message(
        QueueUrl=queues["EventDeadLetterQueue"],
        MessageBody="{not json",
        MessageGroupId="poison-1",
        MessageDeduplicationId="raw-poison-1",  # not the eventId: the processor parks it again under that
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    )
    listed = run_json(capsys, "dlq", "list")
    assert [(m["eventId"], m["eventType"], m["failureReason"]) for m in listed] == [
        ("poison-1", "item/updated", "message body is not JSON")
    ]
    assert listed[0]["receiveCount"] >= 1
    code, out, _ = run(capsys, "dlq", "list")  # listing leaves the message in place
    assert code == 0 and "poison-1" in out and "message body is not JSON" in out

    code, out, _ = run(capsys, "dlq", "redrive", "--yes")
    assert code == 0 and "moved 1 message(s)" in out
    assert pipeline.wait_until_idle(timeout=20)
    # Back through the processor: still poison, so it is logged FAILED and parked again.
    record = event_record(capsys, "poison-1")
    assert record["status"] == "FAILED" and record["permanent"] is True and record["payload"] == "{not json"
    again = run_json(capsys, "dlq", "list")
    assert [m["eventId"] for m in again] == ["poison-1"] and again[0]["messageId"] != listed[0]["messageId"]
    sqs.purge_queue(QueueUrl=queues["EventDeadLetterQueue"])
    code, out, _ = run(capsys, "dlq", "redrive", "--yes")
    assert code == 0 and "nothing to move" in out


# -- records ----------------------------------------------------------------------------------------


def test_records_json_is_what_the_emulator_has(
    capsys: pytest.CaptureFixture[str], pipeline: LocalStack, item: dict[str, Any]
) -> None:
    assert pipeline.emulator is not None and pipeline.wait_until_idle(timeout=20)
    truth = exact(pipeline.emulator.truth())
    items = run_json(capsys, "records", "items", "--user", USER)
    assert [r["data"] for r in items] == [truth["items"][item["id"]]]
    assert item["id"] in {r["itemId"] for r in run_json(capsys, "records", "items")}
    assert run_json(capsys, "records", "items", "--user", "nobody") == []

    accounts = run_json(capsys, "records", "accounts", item["id"])
    expected = {a: v for a, v in truth["accounts"].items() if v["itemId"] == item["id"]}
    assert {r["accountId"]: r["data"] for r in accounts} == expected

    account_id = next(iter(expected))
    rows = run_json(capsys, "records", "transactions", account_id, "--limit", "1000")
    assert {r["transactionId"]: r["data"] for r in rows} == truth["transactions"][account_id]
    dates = [r["data"]["date"] for r in rows]
    assert dates == sorted(dates, reverse=True)  # newest first
    assert len(run_json(capsys, "records", "transactions", account_id, "--limit", "3")) == 3
    day = dates[0][:10]
    on_day = run_json(capsys, "records", "transactions", account_id, "--from", day, "--to", day)
    assert on_day and all(r["data"]["date"][:10] == day for r in on_day)


def test_tables_mask_account_and_tax_numbers(
    capsys: pytest.CaptureFixture[str], pipeline: LocalStack, item: dict[str, Any]
) -> None:
    assert pipeline.emulator is not None
    accounts = [a for a in pipeline.emulator.truth()["accounts"].values() if a["itemId"] == item["id"]]
    code, out, _ = run(capsys, "records", "accounts", item["id"])
    assert code == 0
    for account in accounts:
        number_digits = re.sub(r"\D", "", account["number"])
        tax_digits = re.sub(r"\D", "", account["taxNumber"])
        assert f"****{number_digits[-4:]}" in out and f"****{tax_digits[-4:]}" in out
        assert account["taxNumber"] not in out and tax_digits not in out
        if len(number_digits) > 4:
            assert account["number"] not in out and number_digits not in out
    bank = next(a for a in accounts if a["type"] == "BANK")
    code, out, _ = run(capsys, "records", "transactions", bank["id"], "--limit", "1000")
    assert code == 0
    documents = {
        str(party["documentNumber"]["value"])
        for tx in pipeline.emulator.truth()["transactions"][bank["id"]].values()
        for party in ((tx.get("paymentData") or {}).get("payer"), (tx.get("paymentData") or {}).get("receiver"))
        if party and party.get("documentNumber")
    }
    assert not any(doc in out for doc in documents)
    code, out, _ = run(capsys, "records", "items")
    assert code == 0 and item["id"] in out


def test_product_commands_show_the_mirror_and_never_the_identity(
    capsys: pytest.CaptureFixture[str], pipeline: LocalStack, item: dict[str, Any]
) -> None:
    assert pipeline.emulator is not None and pipeline.wait_until_idle(timeout=20)
    truth = pipeline.emulator.truth()
    identity = truth["identities"][item["id"]]
    cards = [a for a, v in truth["accounts"].items() if v["itemId"] == item["id"] and v["type"] == "CREDIT"]
    outputs = [
        run(capsys, "records", *argv)
        for argv in (
            ["identity", item["id"]],
            ["identity", item["id"], "--json"],
            ["investments", item["id"]],
            ["loans", item["id"]],
            ["consents", item["id"]],
            *(["bills", card] for card in cards),
        )
    ]
    assert all(code == 0 for code, _, _ in outputs)
    personal = [
        identity["fullName"],
        identity["document"],
        re.sub(r"\D", "", identity["document"]),
        identity["birthDate"][:10],
        *(p["value"] for p in identity["phoneNumbers"]),
        *(e["value"] for e in identity["emails"]),
        *(a["fullAddress"] for a in identity["addresses"]),
        *(r["name"] for r in identity["relations"]),
    ]
    text = "\n".join(out for _, out, _ in outputs)
    assert [value for value in personal if value in text] == []
    assert f"****{re.sub(r'[^0-9]', '', identity['document'])[-4:]}" in outputs[0][1]
    consents = run_json(capsys, "records", "consents", item["id"])
    assert consents and {c["consentId"]: c["data"] for c in consents} == {
        k: v for k, v in exact(truth["consents"]).items() if v["itemId"] == item["id"]
    }


# -- targets ----------------------------------------------------------------------------------------


def test_no_local_stack_gives_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STATE_FILE_ENV, str(tmp_path / "absent.json"))
    code, _, err = run(capsys, "events", "list")
    assert code == 1 and "pluggy-pipeline local" in err and "make local" in err


class _FakeCloudFormation:
    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        return {
            "Stacks": [
                {
                    "StackName": StackName,
                    "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()],
                    "Parameters": [{"ParameterKey": "PluggyClientId", "ParameterValue": "client-1"}],
                }
            ]
        }


class _FakeSession:
    def __init__(self, outputs: dict[str, str], **kwargs: Any) -> None:
        self.kwargs, self.region_name, self.outputs = kwargs, "sa-east-1", outputs

    def client(self, service: str, region_name: str | None = None) -> Any:
        assert service == "cloudformation"
        return _FakeCloudFormation(self.outputs)


def test_stack_target_comes_from_cloudformation_outputs() -> None:
    outputs = {
        "WebhookUrl": "https://abc.execute-api.sa-east-1.amazonaws.com/dev/webhooks/pluggy",
        "EventsTableName": "events",
        "RecordsTableName": "records",
        "EventQueueUrl": "https://sqs/q.fifo",
        "EventDeadLetterQueueUrl": "https://sqs/dlq.fifo",
        "WebhookSecretArn": "arn:secret:webhook",
        "WebhookSecretHeaderName": "X-Webhook-Secret",
        "PluggyCredentialsSecretArn": "arn:secret:pluggy",
    }
    target = stack_target("prod", profile="ops", session_factory=lambda **kw: _FakeSession(outputs, **kw))
    assert (target.region, target.endpoint_url, target.events_table, target.dlq_url) == (
        "sa-east-1",
        None,
        "events",
        "https://sqs/dlq.fifo",
    )
    assert target.pluggy_client_id == "client-1" and target.pluggy_base_url == "https://api.pluggy.ai"
    del outputs["WebhookSecretArn"]
    with pytest.raises(CliError, match="WebhookSecretArn"):
        stack_target("prod", session_factory=lambda **kw: _FakeSession(outputs, **kw))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["local"],
        ["demo"],
        ["send"],
        ["register"],
        ["webhook-url"],
        ["connect-token"],
        ["events"],
        ["events", "list"],
        ["events", "show"],
        ["events", "replay"],
        ["dlq", "list"],
        ["dlq", "redrive"],
        ["records", "items"],
        ["records", "accounts"],
        ["records", "transactions"],
        ["records", "identity"],
        ["records", "consents"],
    ],
)
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    assert "usage: pluggy-pipeline" in capsys.readouterr().out


# -- local (a real process, stopped with Ctrl-C) ------------------------------------------------------


def _read_until(process: subprocess.Popen[str], last_line: str, timeout: float) -> str:
    """The process's output up to and including the line containing `last_line`."""
    seen: list[str] = []
    done = threading.Event()

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            if last_line in line:
                done.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    assert done.wait(timeout), f"no {last_line!r} within {timeout} s; output: {''.join(seen)}"
    return "".join(seen)


def test_local_runs_until_ctrl_c_and_cleans_up(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_file = tmp_path / "local.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
    env[STATE_FILE_ENV] = str(state_file)
    command = [str(Path(sys.executable).parent / "pluggy-pipeline"), "local", "--port", "0"]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        banner = _read_until(process, "Ctrl-C stops", 30)
        match = re.search(r"Webhook URL: (http://127\.0\.0\.1:\d+/webhooks/pluggy)", banner)
        assert match, banner
        assert "Pluggy emulator URL: http://127.0.0.1:" in banner
        assert state_file.exists() and json.loads(state_file.read_text())["webhookUrl"] == match.group(1)
        monkeypatch.setenv(STATE_FILE_ENV, str(state_file))
        code, out, err = run(capsys, "send", "item/created", "--wait", "20")
        assert code == 0, out + err
        assert f"POST {match.group(1)}" in out and "HTTP 202" in out and "PROCESSED" in out
        code, _, err = run(capsys, "local", "--port", "0")  # one local stack per state file
        assert code == 1 and "already running" in err

        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
        assert not state_file.exists()
        rest = process.stdout.read() if process.stdout else ""
        assert "local stack stopped" in rest and "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
