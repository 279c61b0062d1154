"""`pluggy-pipeline secrets put|show --stack NAME` against a stack in moto (its outputs name the secrets).

The full deploy (the real template, then `secrets put` and `register`) is rehearsed in test_deploy_rehearsal.py;
here a stack with just the outputs the CLI reads keeps each case fast.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pluggy_pipeline.secrets import build_secrets, derive_url_token
from pluggy_pipeline_cli.cli import main
from pluggy_pipeline_cli.commands import secrets as secrets_command

from tests.conftest import REGION

STACK = "secrets-cli"
CLIENT_ID = "4552bee0-b87f-48b5-896b-c23113839319"
OTHER_CLIENT_ID = "0e5f8a51-6c1b-4d0e-9a57-3f2b8c1d7e90"
NEW_SECRET = "new-client-secret-7f3c9a1e2b"
PLACEHOLDER = "PlaceholderGeneratedByTheStack01"
WEBHOOK_SECRET = "webhook-shared-secret-0123456789abcdef"


@dataclass
class Stack:
    credentials_arn: str
    webhook_arn: str
    secrets: Any

    def credentials(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.secrets.get_secret_value(SecretId=self.credentials_arn)["SecretString"])
        return value


def _create_stack(client_id: str, credentials: dict[str, str] | None, name: str = STACK) -> Stack:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    value = {"SecretString": json.dumps(credentials)} if credentials is not None else {}
    credentials_arn = secrets.create_secret(Name=f"{name}-creds", **value)["ARN"]
    webhook = json.dumps({"current": WEBHOOK_SECRET})
    webhook_arn = secrets.create_secret(Name=f"{name}-webhook", SecretString=webhook)["ARN"]
    outputs = {
        "WebhookUrl": "https://abc123.execute-api.us-east-1.amazonaws.com/prod/webhooks/pluggy",
        "EventsTableName": "events",
        "RecordsTableName": "records",
        "EventQueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q.fifo",
        "EventDeadLetterQueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/dlq.fifo",
        "WebhookSecretArn": webhook_arn,
        "WebhookSecretHeaderName": "X-Webhook-Secret",
        "PluggyCredentialsSecretArn": credentials_arn,
    }
    template = {
        "Parameters": {"PluggyClientId": {"Type": "String", "Default": ""}},
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": "PluggyClientId", "ParameterValue": client_id}],
    )
    return Stack(credentials_arn, webhook_arn, secrets)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    for key in ("PLUGGY_CLIENT_ID", "PLUGGY_CLIENT_SECRET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal, nothing piped
    with mock_aws():
        yield _create_stack(CLIENT_ID, {"clientId": CLIENT_ID, "clientSecret": PLACEHOLDER})


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    """The CLI in process; neither the new secret nor any stored one may appear in its output."""
    if stdin is not None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.stdin", io.StringIO(stdin))
            code = main(list(argv))
    else:
        code = main(list(argv))
    out, err = capsys.readouterr()
    for secret in (NEW_SECRET, PLACEHOLDER, WEBHOOK_SECRET):
        assert secret not in out and secret not in err, f"`{' '.join(argv)}` printed a secret"
    return code, out, err


PUT = ("secrets", "put", "--stack", STACK, "--region", REGION)


def test_put_from_the_environment_takes_the_stack_client_id(
    capsys: pytest.CaptureFixture[str], stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLUGGY_CLIENT_SECRET", NEW_SECRET)
    code, out, err = run(capsys, *PUT)
    assert code == 0, err
    assert stack.credentials() == {"clientId": CLIENT_ID, "clientSecret": NEW_SECRET}
    assert f"stored: Pluggy credentials in stack {STACK} ({REGION})" in out
    assert f"clientId      {CLIENT_ID} (the stack's PluggyClientId parameter)" in out
    assert "clientSecret  set from PLUGGY_CLIENT_SECRET, not shown" in out
    assert f"register --stack {STACK}" in out


@pytest.mark.parametrize(
    ("stdin", "id_source"),
    [
        (json.dumps({"clientSecret": NEW_SECRET}), "the stack's PluggyClientId parameter"),
        (json.dumps({"clientId": CLIENT_ID, "clientSecret": NEW_SECRET}), "stdin"),
        (f"{NEW_SECRET}\n", "the stack's PluggyClientId parameter"),
        (f"{CLIENT_ID}\n{NEW_SECRET}\n", "stdin"),
        (f"\n  {NEW_SECRET}  \r\n\n", "the stack's PluggyClientId parameter"),
    ],
)
def test_put_from_stdin(capsys: pytest.CaptureFixture[str], stack: Stack, stdin: str, id_source: str) -> None:
    code, out, err = run(capsys, *PUT, "--from-stdin", "--json", stdin=stdin)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["clientId"] == CLIENT_ID and summary["clientIdSource"] == id_source
    assert summary["clientSecretSource"] == "stdin" and summary["secretArn"] == stack.credentials_arn
    assert stack.credentials() == {"clientId": CLIENT_ID, "clientSecret": NEW_SECRET}


def test_put_keeps_other_keys_and_prompts_on_a_terminal(
    capsys: pytest.CaptureFixture[str], stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.secrets.put_secret_value(
        SecretId=stack.credentials_arn, SecretString=json.dumps({"clientSecret": PLACEHOLDER, "note": "kept"})
    )

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr(secrets_command.getpass, "getpass", lambda prompt: prompts.append(prompt) or NEW_SECRET)
    code, out, err = run(capsys, *PUT)
    assert code == 0, err
    assert prompts == ["Pluggy client secret (not echoed): "]
    # The secret had no clientId: the stack's PluggyClientId parameter fills it.
    assert stack.credentials() == {"clientId": CLIENT_ID, "clientSecret": NEW_SECRET, "note": "kept"}
    assert "(the stack's PluggyClientId parameter)" in out


def test_put_into_a_secret_without_a_value(capsys: pytest.CaptureFixture[str], stack: Stack) -> None:
    empty = _create_stack("", None, name="no-client-id")
    argv = ["secrets", "put", "--stack", "no-client-id", "--from-stdin"]
    code, _, err = run(capsys, *argv, stdin=NEW_SECRET)
    assert code == 1 and "no client id: the secret has none and the stack's PluggyClientId is empty" in err
    code, out, err = run(capsys, *argv, "--client-id", CLIENT_ID, stdin=NEW_SECRET)
    assert code == 0 and f"clientId      {CLIENT_ID} (--client-id)" in out, err
    assert empty.credentials() == {"clientId": CLIENT_ID, "clientSecret": NEW_SECRET}


@pytest.mark.parametrize(
    "argv",
    [
        ["--client-secret", NEW_SECRET],
        [f"--client-secret={NEW_SECRET}"],
        ["--secret", NEW_SECRET],
        [f"--client={NEW_SECRET}"],
        [NEW_SECRET],
        ["--password", NEW_SECRET],
        ["--from-stdin", CLIENT_ID, NEW_SECRET],
    ],
)
def test_put_refuses_credentials_on_the_command_line(
    capsys: pytest.CaptureFixture[str], stack: Stack, argv: list[str]
) -> None:
    try:
        code, _, err = run(capsys, *PUT, *argv)
    except SystemExit as exited:  # argparse's own error path (a refused option's value)
        code = int(exited.code or 0)
        out, err = capsys.readouterr()
        assert NEW_SECRET not in out + err
    assert code == 2
    assert "refusing to read credentials from the command line" in err and "shell history" in err
    assert "PLUGGY_CLIENT_SECRET" in err and "--from-stdin" in err
    assert stack.credentials()["clientSecret"] == PLACEHOLDER


@pytest.mark.parametrize(
    ("stdin", "extra", "message"),
    [
        ("", [], "no client secret: set PLUGGY_CLIENT_SECRET, or pipe it in with --from-stdin"),
        ("\n\n", ["--from-stdin"], "stdin must be a JSON object"),
        (f"a\nb\n{NEW_SECRET}\n", ["--from-stdin"], "stdin must be a JSON object"),
        ("{not json", ["--from-stdin"], "is not a JSON object"),
        (json.dumps({"clientSecret": NEW_SECRET, "secret": "x"}), ["--from-stdin"], "unexpected keys secret"),
        (json.dumps({"clientId": CLIENT_ID}), ["--from-stdin"], "needs clientSecret"),
        (json.dumps({"clientSecret": ""}), ["--from-stdin"], "the client secret is empty"),
        (f"{NEW_SECRET} {NEW_SECRET}", ["--from-stdin"], "has spaces, control characters"),
        (f"{NEW_SECRET}\n{NEW_SECRET}\n", ["--from-stdin"], "the client id is not a Pluggy client id"),
        (f"{CLIENT_ID}\n{CLIENT_ID}\n", ["--from-stdin"], "the client secret equals the client id"),
        (NEW_SECRET, ["--from-stdin", "--client-id", OTHER_CLIENT_ID], "is not the stack's PluggyClientId"),
        (f"{OTHER_CLIENT_ID}\n{NEW_SECRET}", ["--from-stdin", "--client-id", CLIENT_ID], "differ"),
    ],
)
def test_put_refuses_bad_input_clearly(
    capsys: pytest.CaptureFixture[str], stack: Stack, stdin: str, extra: list[str], message: str
) -> None:
    code, out, err = run(capsys, *PUT, *extra, stdin=stdin)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and message in err, err
    assert stack.credentials()["clientSecret"] == PLACEHOLDER


def test_a_bad_client_id_is_not_echoed(
    capsys: pytest.CaptureFixture[str], stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLUGGY_CLIENT_ID", NEW_SECRET)  # the secret pasted into the wrong variable
    monkeypatch.setenv("PLUGGY_CLIENT_SECRET", "also-a-secret-value")
    code, _, err = run(capsys, *PUT)
    assert code == 1 and "not a Pluggy client id" in err and "also-a-secret-value" not in err


def test_put_needs_a_deployed_stack(capsys: pytest.CaptureFixture[str], stack: Stack) -> None:
    code, _, err = run(capsys, "secrets", "put", "--stack", "no-such-stack", stdin=NEW_SECRET)
    assert code == 1 and "no-such-stack" in err


def test_show_prints_key_names_and_masked_values(capsys: pytest.CaptureFixture[str], stack: Stack) -> None:
    code, out, err = run(capsys, "secrets", "show", "--stack", STACK)
    assert code == 0, err
    assert f"WebhookSecret  {stack.webhook_arn}" in out and f"PluggyCredentialsSecret  {stack.credentials_arn}" in out
    assert "current       ******** (set)" in out
    assert f"clientId      {CLIENT_ID}" in out and "clientSecret  ******** (set)" in out
    shown = json.loads(run(capsys, "secrets", "show", "--stack", STACK, "--json")[1])
    assert [entry["keys"] for entry in shown] == [
        {"current": "******** (set)"},
        {"clientId": CLIENT_ID, "clientSecret": "******** (set)"},
    ]


@pytest.mark.parametrize("argv", [["secrets"], ["secrets", "put"], ["secrets", "show"]])
def test_secrets_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "usage: pluggy-pipeline secrets" in text
    if argv == ["secrets", "put"]:
        assert "--from-stdin" in text and "--client-secret" not in text


def test_other_commands_still_report_unknown_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["events", "list", "--bogus", "value"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --bogus value" in capsys.readouterr().err


def test_rotate_keeps_both_values_then_drops_the_old_one_after_the_cache_bound(
    capsys: pytest.CaptureFixture[str], stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def webhook() -> dict[str, Any]:
        value: dict[str, Any] = json.loads(stack.secrets.get_secret_value(SecretId=stack.webhook_arn)["SecretString"])
        return value

    now = [1_000_000.0]
    monkeypatch.setattr("pluggy_pipeline_cli.commands.secrets.time.time", lambda: now[0])
    rotate = ("secrets", "rotate", "--stack", STACK, "--region", REGION)
    code, out, err = run(capsys, *rotate)
    assert code == 0, err
    started = webhook()
    assert started["previous"] == WEBHOOK_SECRET and started["current"] != WEBHOOK_SECRET
    assert len(started["current"]) >= 40 and started["current"] not in out
    assert "register --stack secrets-cli --force" in out and "--per-item" in out
    # Both values authenticate meanwhile, header and URL token alike (what the receiver builds from the JSON).
    both = build_secrets(started)
    assert {WEBHOOK_SECRET.encode(), started["current"].encode()} == set(both.header_secrets)
    assert derive_url_token(WEBHOOK_SECRET).encode() in both.url_tokens
    assert run(capsys, *rotate)[0] == 1  # one rotation at a time
    now[0] += 30
    code, _, err = run(capsys, *rotate, "--finish")
    assert code == 1 and "wait 31 s" in err  # warm receivers may still hold only the old value
    now[0] += 31
    assert run(capsys, *rotate, "--finish")[0] == 0
    finished = webhook()
    assert finished == {"current": started["current"]}
    assert derive_url_token(WEBHOOK_SECRET).encode() not in build_secrets(finished).url_tokens
    code, _, err = run(capsys, *rotate, "--finish")
    assert code == 1 and "no rotation in progress" in err
