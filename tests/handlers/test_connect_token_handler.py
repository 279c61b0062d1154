"""ConnectTokenFunction's lambda_handler against moto (built from template.yaml) and the Pluggy emulator.

The token minted here connects an item on the emulator as the Connect widget would (`POST /items` with the
token), and that item's webhook, posted to the URL the token carried, goes through the real receiver and
processor: the stored item is bound to the token's clientUserId.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import requests
from pluggy_emulator import PluggyEmulator
from pluggy_pipeline import connect_token
from pluggy_pipeline import processor as processor_module
from pluggy_pipeline.auth import sign
from pluggy_pipeline.records import RecordStore, item_key
from pluggy_pipeline.secrets import derive_url_token
from pluggy_pipeline_local.devsecrets import LOCAL_SIGNING_KEY, LOCAL_WEBHOOK_SECRET
from pluggy_pipeline_local.stack import sqs_event
from pluggy_pipeline_local.template import function_environment

from tests.conftest import REPO_ROOT, TEMPLATE, Stack, _reset_caches, event_names, load_event

CLIENT_ID = "connect-token-test-client"
CLIENT_SECRET = "connect-token-test-secret"
DOMAIN = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
TOKEN_URL = f"https://{DOMAIN}/dev/webhooks/pluggy/{derive_url_token(LOCAL_WEBHOOK_SECRET)}"
SUB = "5f0c2a9e-7b1d-4c3e-9a8f-2d6b1e4c7a90"
# What each events/connect_token file gets on a fresh emulator (update-mode names an item it does not have).
EXPECTED = {
    "valid": 200,
    "update-mode": 400,
    "bad-body": 400,
    "missing-client-user-id": 400,
    "malformed-json": 400,
    "cognito-own-user": 200,
    "cognito-other-user": 403,
}

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


def _load(function: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{function}_app", REPO_ROOT / f"functions/{function}/app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


APP = _load("connect_token")
RECEIVER = _load("receiver")
PROCESSOR = _load("processor")


def _claims(token: str) -> dict[str, Any]:
    """The emulator's connect token is a JWT whose claims hold the options it was minted with."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


@pytest.fixture
def emulator() -> Iterator[PluggyEmulator]:
    # Deliveries would go to the execute-api host of the events: recorded (events()), never sent.
    emu = PluggyEmulator(CLIENT_ID, CLIENT_SECRET, seed=7, deliver_webhooks=False)
    emu.start()
    yield emu
    emu.stop()


class Env:
    """Sets a function's environment exactly as template.yaml declares it, against moto and the emulator."""

    def __init__(self, stack: Stack, monkeypatch: pytest.MonkeyPatch, emulator: PluggyEmulator) -> None:
        self.stack, self.monkeypatch, self.emulator = stack, monkeypatch, emulator

    def use(self, function: str, **overrides: str) -> dict[str, str]:
        parameters = {"PluggyApiBaseUrl": self.emulator.base_url}
        env = function_environment(TEMPLATE, function, self.stack.resources, parameters=parameters)
        env.update(overrides)
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)
        _reset_caches()
        connect_token.get_service.cache_clear()
        processor_module.get_processor.cache_clear()
        return env

    def credentials(self, client_secret: str = CLIENT_SECRET) -> None:
        arn = self.stack.resources.secrets["PluggyCredentialsSecret"]
        value = json.dumps({"clientId": CLIENT_ID, "clientSecret": client_secret})
        self.stack.secretsmanager.put_secret_value(SecretId=arn, SecretString=value)
        connect_token.get_service.cache_clear()


@pytest.fixture
def env(stack: Stack, monkeypatch: pytest.MonkeyPatch, emulator: PluggyEmulator) -> Iterator[Env]:
    configured = Env(stack, monkeypatch, emulator)
    configured.credentials()
    configured.use("ConnectTokenFunction")
    yield configured
    connect_token.get_service.cache_clear()
    processor_module.get_processor.cache_clear()


@pytest.fixture
def invoke(env: Env, lambda_context: Any) -> Callable[[dict[str, Any]], tuple[int, dict[str, Any], dict[str, Any]]]:
    def _invoke(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
        response = APP.lambda_handler(event, lambda_context)
        headers = {k: v[-1] for k, v in response["multiValueHeaders"].items()}
        assert headers["Content-Type"] == "application/json"
        assert "Traceback" not in response["body"]
        return response["statusCode"], json.loads(response["body"]), headers

    return _invoke


def test_the_events_corpus_is_the_expected_one() -> None:
    assert event_names("connect_token") == sorted(EXPECTED)


def use_frontend(env: Env) -> None:
    """ConnectTokenFrontendFunction's environment; its WEBHOOK_BASE_URL is the webhook API's stage URL (an
    Fn::If CloudFormation resolves, by hand here)."""
    env.use("ConnectTokenFrontendFunction", WEBHOOK_BASE_URL=f"https://{DOMAIN}/dev", CORS_ALLOW_ORIGIN="*")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_event_file_gets_its_answer(name: str, env: Env, invoke: Any) -> None:
    if name.startswith("cognito-"):
        use_frontend(env)  # the files of the frontend API
    status, body, headers = invoke(load_event(f"connect_token/{name}"))
    assert status == EXPECTED[name], body
    assert headers["Cache-Control"] == "no-store"
    if status == 200:
        assert set(body) == {"accessToken", "expiresAt", "clientUserId", "widgetOptions"}
        claims = _claims(body["accessToken"])
        assert claims["options"]["clientUserId"] == body["clientUserId"]
        assert claims["options"]["webhookUrl"] == TOKEN_URL
    else:
        assert body["error"] and body["message"]


def test_an_unknown_item_is_refused_with_pluggy_s_own_message(invoke: Any) -> None:
    status, body, _ = invoke(load_event("connect_token/update-mode"))
    assert (status, body["error"]) == (400, "pluggy_rejected")
    assert "ITEM_NOT_FOUND" in body["fields"]["itemId"]


def test_bad_input_names_every_field(invoke: Any) -> None:
    status, body, _ = invoke(load_event("connect_token/bad-body"))
    assert status == 400 and body["error"] == "invalid_request"
    assert set(body["fields"]) == {
        "clientUserId",
        "itemId",
        "products",
        "connectorIds",
        "oauthRedirectUrl",
        "webhookUrl",
    }


def test_an_item_connected_with_the_token_is_stored_under_its_client_user_id(
    env: Env, invoke: Any, stack: Stack, emulator: PluggyEmulator, lambda_context: Any
) -> None:
    status, body, _ = invoke(load_event("connect_token/valid"))
    assert status == 200
    # The Connect widget, with the token: connect a sandbox item.
    created = requests.post(
        f"{emulator.base_url}/items",
        headers={"X-API-KEY": body["accessToken"]},
        json={"connectorId": 0, "parameters": {"user": "user-ok", "password": "password-ok"}},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    item_id = created.json()["id"]
    # Pluggy knows the item's user and where its webhooks go (GET /items/{id}: the token sees its own items).
    fetched = requests.get(
        f"{emulator.base_url}/items/{item_id}", headers={"X-API-KEY": body["accessToken"]}, timeout=10
    ).json()
    assert (fetched["clientUserId"], fetched["webhookUrl"]) == ("app-user-42", TOKEN_URL)
    # Its item/created, as Pluggy posts it to that URL (no custom header), through the real receiver...
    [delivery] = [e for e in emulator.events() if e["event"] == "item/created" and e["payload"]["itemId"] == item_id]
    assert delivery["urls"] == [TOKEN_URL]
    env.use("ReceiverFunction")
    event = load_event("receiver/item-created")
    path = TOKEN_URL.removeprefix(f"https://{DOMAIN}/dev")
    event["path"], event["body"] = path, json.dumps(delivery["payload"])
    event["resource"] = event["requestContext"]["resourcePath"] = "/webhooks/pluggy/{token}"
    event["requestContext"]["path"] = f"/dev{path}"
    # No secret header on an item's own webhookUrl; the stack's signing key signs every delivery.
    signature = sign(event["body"].encode(), LOCAL_SIGNING_KEY.encode())
    event["headers"].pop("X-Webhook-Secret")
    event["multiValueHeaders"].pop("X-Webhook-Secret")
    event["headers"]["X-Pluggy-Signature"] = signature
    event["multiValueHeaders"]["X-Pluggy-Signature"] = [signature]
    accepted = RECEIVER.lambda_handler(event, lambda_context)
    assert accepted["statusCode"] == 202, accepted
    # ... and the real processor: the stored item is the user's.
    env.use("ProcessorFunction")
    messages = stack.receive_all()
    assert len(messages) == 1
    arn = stack.resources.queue_arns["EventQueue"]
    assert PROCESSOR.lambda_handler(sqs_event(messages, arn, "us-east-1"), lambda_context) == {"batchItemFailures": []}
    records = RecordStore(lambda: stack.dynamodb, stack.resources.tables["RecordsTable"])
    stored = records.get(item_key(item_id))
    assert stored is not None
    assert (stored["clientUserId"], stored["userPk"], stored["clientUserIdSource"]) == (
        "app-user-42",
        "USER#app-user-42",
        "pluggy",
    )


def test_update_mode_mints_a_token_for_an_existing_item(invoke: Any, emulator: PluggyEmulator) -> None:
    item = emulator.create_item("app-user-42")
    event = load_event("connect_token/update-mode")
    event["body"] = json.dumps({"clientUserId": "app-user-42", "itemId": item["id"]})
    status, body, _ = invoke(event)
    assert status == 200, body
    assert body["widgetOptions"] == {"updateItem": item["id"]}
    assert _claims(body["accessToken"])["itemId"] == item["id"]


def test_the_frontend_function_mints_for_the_signed_in_user_only(env: Env, invoke: Any) -> None:
    declared = TEMPLATE["Resources"]["ConnectTokenFrontendFunction"]["Properties"]["Environment"]["Variables"]
    assert declared["REQUIRE_USER_CLAIMS"] == "true"
    use_frontend(env)
    status, body, headers = invoke(load_event("connect_token/cognito-own-user"))
    assert status == 200 and body["clientUserId"] == SUB
    # The request came through the frontend API; the token's webhooks still go to the webhook API.
    assert _claims(body["accessToken"])["options"]["webhookUrl"] == TOKEN_URL
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, body, _ = invoke(load_event("connect_token/cognito-other-user"))
    assert status == 403
    status, body, _ = invoke(load_event("connect_token/valid"))  # AWS_IAM-shaped: no user
    assert (status, body["error"]) == (403, "forbidden")


def test_pluggy_down_or_refusing_our_credentials_is_a_502(env: Env, invoke: Any, emulator: PluggyEmulator) -> None:
    env.credentials(client_secret="wrong")
    status, body, _ = invoke(load_event("connect_token/valid"))
    assert (status, body["error"]) == (502, "pluggy_auth_failed")
    env.credentials()
    emulator.stop()
    status, body, _ = invoke(load_event("connect_token/valid"))
    assert (status, body["error"]) == (502, "pluggy_unavailable")


def test_a_request_on_another_path_is_a_json_404(invoke: Any) -> None:
    event = load_event("connect_token/valid")
    event["path"] = event["resource"] = "/connect-tokens"
    status, body, _ = invoke(event)
    assert (status, body["error"]) == (404, "not_found")


def test_the_iam_route_lets_api_gateway_invoke_the_function() -> None:
    """SAM's default for AWS_IAM invokes with the caller's credentials: every caller would need Lambda rights."""
    events = TEMPLATE["Resources"]["ConnectTokenFunction"]["Properties"]["Events"]
    assert events["ConnectToken"]["Properties"]["Auth"] == {"Authorizer": "AWS_IAM", "InvokeRole": "NONE"}
