"""The app's side through the local stack: the front checks SigV4 as API Gateway does, POST /connect-token mints
a token whose items reach the pipeline, `pluggy-pipeline watch` prints the change events, and the read API
returns what the mirror holds."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pluggy_pipeline_cli.app_api import AppApi
from pluggy_pipeline_cli.cli import main
from pluggy_pipeline_cli.targets import CliError, target_from_state
from pluggy_pipeline_local.demo import widget_connect
from pluggy_pipeline_local.stack import LocalStack, StackOptions

from tests.integration.localstack import module_stack

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _isolated_env() -> Iterator[None]:
    """Replaces conftest's: the module's LocalStack owns the process environment (moto endpoint, fake
    credentials); resetting it per test would point the running functions at real AWS."""
    yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    state = tmp_path_factory.mktemp("app-side") / "stack.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLUGGY_PIPELINE_STATE_FILE", str(state))
        with module_stack(StackOptions(state_file=state)) as running:
            yield running


def api_of(stack: LocalStack) -> AppApi:
    return AppApi(target_from_state(stack.describe()))


@pytest.mark.parametrize("path", ["/connect-token", "/users/u/items", "/items/i", "/accounts/a/transactions"])
def test_unsigned_and_badly_signed_calls_never_reach_a_function(stack: LocalStack, path: str) -> None:
    base = stack.describe()["apiBaseUrl"]
    method = "POST" if path == "/connect-token" else "GET"
    before = stack.invocations["app"]
    unsigned = requests.request(method, base + path, json={"clientUserId": "u"}, timeout=10)
    assert unsigned.status_code == 403 and unsigned.json() == {"message": "Missing Authentication Token"}
    forged = requests.request(
        method,
        base + path,
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=local/20261129/us-east-1/execute-api/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
            "X-Amz-Date": "20261129T000000Z",
        },
        timeout=10,
    )
    assert forged.status_code == 403
    assert stack.invocations["app"] == before


def test_a_connect_token_item_is_watched_and_read_back(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert stack.emulator is not None
    api = api_of(stack)
    ready = threading.Event()
    code: dict[str, int] = {}

    def watch() -> None:
        code["watch"] = main(["watch", "--json", "--timeout", "20", "--count", "4"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    # The tap exists once watch printed its banner; events put before it are not seen (documented).
    for _ in range(100):
        if "watching" in capsys.readouterr().err:
            ready.set()
            break
        threading.Event().wait(0.05)
    assert ready.is_set()
    token = api.connect_token("app-user-1", avoidDuplicates=True)
    assert set(token) >= {"accessToken", "expiresAt"}
    item_id = widget_connect(stack.emulator, token["accessToken"], "user-ok")
    assert stack.wait_until_idle(30)
    watcher.join(30)
    assert code == {"watch": 0}
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    kinds = {e["detail-type"] for e in events}
    assert "Item Status Changed" in kinds and "Transactions Changed" in kinds
    status = next(e["detail"] for e in events if e["detail-type"] == "Item Status Changed")
    assert status["itemId"] == item_id and status["clientUserId"] == "app-user-1"

    (item,) = api.items_of_user("app-user-1")
    assert item["id"] == item_id and item["status"] == "UPDATED"
    truth = stack.emulator.truth()
    for account in api.item(item_id)["accounts"]:
        rows = api.transactions(str(account["id"]), limit=7)  # small pages: the cursor is followed
        assert {r["id"] for r in rows} == set(truth["transactions"][str(account["id"])])
        dates = [r["data"]["date"] for r in rows]
        assert dates == sorted(dates, reverse=True)


def test_bad_input_is_a_clear_error(stack: LocalStack) -> None:
    api = api_of(stack)
    with pytest.raises(CliError, match="400"):
        api.connect_token("")
    with pytest.raises(CliError, match="404"):
        api.item("00000000-0000-0000-0000-000000000000")
    with pytest.raises(CliError, match="400"):
        api.call("GET", "/accounts/a/transactions", query={"limit": "501"})


def test_watch_refuses_a_stack_without_a_bus(tmp_path: Path) -> None:
    from pluggy_pipeline_cli.commands.watch import tap

    state: dict[str, Any] = {
        "awsEndpoint": "http://127.0.0.1:9",
        "tables": {"EventsTable": "e", "RecordsTable": "r"},
        "queues": {"EventQueue": "q", "EventDeadLetterQueue": "d"},
        "webhookUrl": "http://127.0.0.1:9/webhooks/pluggy",
        "secrets": {"WebhookSecret": "s", "PluggyCredentialsSecret": "p"},
    }
    with pytest.raises(CliError, match="no change event bus"), tap(target_from_state(state)):
        pass
