"""The real SAM CLI (1.170, .venv-sam) with a real Docker engine, against the local stack.

What a user runs: `sam build --parameter-overrides Architecture=x86_64`, then `sam local invoke` and
`sam local start-api` with the --env-vars file `pluggy-pipeline local` writes (LocalStack.sam_env_vars), on the
Lambda-compatible image tools/lambda-image.sh builds (the official one cannot be pulled here). SAM 1.170 ignores
`--docker-network host`, so every SAM command goes through tools/sam_host_network.py, which makes it effective:
the function in its container reaches moto and the Pluggy emulator on the host's 127.0.0.1.

Needs an x86_64 machine, a Docker engine (tools/docker-up.sh), the image (tools/lambda-image.sh) and .venv-sam.
Without them the module is skipped with the reason, except in CI (env CI set), where that is a failure:
.ci/run provides all three.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pluggy_pipeline.auth import sign
from pluggy_pipeline.records import item_key
from pluggy_pipeline_cli.commands.watch import subscription
from pluggy_pipeline_cli.webhook_examples import VALID_PAYLOADS
from pluggy_pipeline_local.devsecrets import LOCAL_SIGNING_KEY, LOCAL_WEBHOOK_SECRET
from pluggy_pipeline_local.events_corpus import SECRET_HEADER, SIGNATURE_HEADER, scenarios
from pluggy_pipeline_local.processor_events import DOCUMENTED_OUTCOMES, ITEM_ID, substitute
from pluggy_pipeline_local.stack import SAM_FUNCTIONS, LocalStack, StackOptions, declared_variables

from tests.conftest import EVENTS_DIR, REPO_ROOT, TEMPLATE
from tests.integration.localstack import module_stack, normal, store_of

pytestmark = pytest.mark.sam

IMAGE = os.environ.get("PLUGGY_PIPELINE_LAMBDA_IMAGE", "pluggy-pipeline/lambda-python3.13:x86_64")
SAM_PYTHON = REPO_ROOT / ".venv-sam" / "bin" / "python"
LAUNCHER = REPO_ROOT / "tools" / "sam_host_network.py"
# Not .aws-sam/build: `make build` puts the default (arm64) build there for the other tests.
BUILD_DIR = REPO_ROOT / ".aws-sam" / "sam-local-x86_64" / "build"
BUILT_TEMPLATE = BUILD_DIR / "template.yaml"
ARCHITECTURE = ["--parameter-overrides", "Architecture=x86_64"]
REGION = "us-east-1"
INVOKE_TIMEOUT = 180  # seconds for one `sam local invoke` (a few seconds each here)
START_API_WAIT = 90  # seconds for `sam local start-api` to listen

# What the runs measured, printed at the end of the session (tests/sam/conftest.py).
SUMMARY: list[str] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing() -> str | None:
    """Why the real SAM CLI cannot run here, or None."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the local Lambda image is linux/amd64 only; this machine is {platform.machine()}"
    if not SAM_PYTHON.is_file():
        return "no .venv-sam (make install creates it)"
    docker = shutil.which("docker")
    if docker is None:
        return "no Docker engine: the docker command is not installed (tools/docker-up.sh installs and starts one)"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "no Docker engine: `docker info` did not answer within 30 s"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["?"])[-1]
        return f"no Docker engine: `docker info` failed ({last}); tools/docker-up.sh starts one"
    image = subprocess.run([docker, "image", "inspect", IMAGE], capture_output=True, timeout=30, check=False)
    if image.returncode != 0:
        return f"no Lambda image {IMAGE}: tools/lambda-image.sh builds it"
    return None


# Nothing listens on the discard port: an AWS call that does not go where the env file says fails here, at once.
NOWHERE = "http://127.0.0.1:9"


def _sam_env() -> dict[str, str]:
    """The SAM CLI's environment: fake credentials (SAM hands them to the container; moto takes any), no profile,
    python3.13 on PATH for `sam build`, no telemetry.

    SAM also hands the function every *declared* variable found in its own environment (env-vars file > shell >
    template). This process holds the in-process stack's values (EVENTS_TABLE_NAME, AWS_ENDPOINT_URL, ...), so
    they are removed: only the env file may make the function work. AWS_ENDPOINT_URL points nowhere, so neither
    SAM nor a function the file failed to configure can ever reach AWS."""
    declared = set().union(*(declared_variables(TEMPLATE, function) for function in SAM_FUNCTIONS))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in declared and not key.startswith("AWS_") and not key.startswith("POWERTOOLS_")
    }
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": NOWHERE,
            "SAM_CLI_TELEMETRY": "0",
            "PATH": f"{REPO_ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def _sam(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """SAM CLI `args` through the host-network launcher."""
    return subprocess.run(
        [str(SAM_PYTHON), str(LAUNCHER), *args],
        cwd=REPO_ROOT,
        env=_sam_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(autouse=True)
def _isolated_env() -> Iterator[None]:
    """Replaces conftest's: each test's LocalStack owns the process environment while it runs."""
    yield


@pytest.fixture(scope="module")
def built() -> Iterator[Path]:
    """`sam build --parameter-overrides Architecture=x86_64` into the module's own build dir."""
    reason = _missing()
    if reason is not None:
        if _in_ci():
            pytest.fail(f"CI must run the real SAM CLI, but: {reason}")
        pytest.skip(reason)  # outside CI only (no Docker or image on a developer's machine); CI fails above
    started = time.monotonic()
    proc = subprocess.run(
        [
            str(REPO_ROOT / ".venv-sam" / "bin" / "sam"),
            "build",
            "--template",
            "template.yaml",
            "--build-dir",
            str(BUILD_DIR),
            *ARCHITECTURE,
        ],
        cwd=REPO_ROOT,
        env=_sam_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"sam build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    SUMMARY.append(f"image {IMAGE}; sam build (Architecture=x86_64): {time.monotonic() - started:.0f} s")
    yield BUILD_DIR
    SUMMARY.append(f"wall time of the module (build included): {time.monotonic() - started:.0f} s")


@pytest.fixture
def stack(built: Path) -> Iterator[LocalStack]:
    """A fresh local stack (moto + Pluggy emulator) whose queue nothing consumes: what reaches EventQueue stays
    there for the test to see, and `sam local invoke ProcessorFunction` is the only processor."""
    with module_stack(StackOptions(port=0, state_file=None, sqs_trigger=False)) as local:
        yield local


def _env_file(stack: LocalStack, directory: Path) -> Path:
    assert stack.aws is not None
    env_vars = stack.sam_env_vars()
    for function in SAM_FUNCTIONS:
        assert env_vars[function]["AWS_ENDPOINT_URL"] == stack.aws.endpoint, "the functions would not use moto"
    path = directory / "sam-env.json"
    path.write_text(json.dumps(env_vars, indent=2))
    return path


def sam_invoke(stack: LocalStack, env_file: Path, function: str, event: Path) -> dict[str, Any]:
    """`sam local invoke FUNCTION -e EVENT --env-vars FILE` on the built template; the function's result."""
    proc = _sam(
        "local",
        "invoke",
        function,
        "--template",
        str(BUILT_TEMPLATE),
        "--event",
        str(event),
        "--env-vars",
        str(env_file),
        "--invoke-image",
        IMAGE,
        "--skip-pull-image",
        *ARCHITECTURE,
        "--region",
        REGION,
        timeout=INVOKE_TIMEOUT,
    )
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, f"sam local invoke failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"no JSON result from sam local invoke:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return result


def _queue_depth(stack: LocalStack, queue: str) -> int:
    assert stack.aws is not None
    attributes = stack.aws.clients["sqs"].get_queue_attributes(
        QueueUrl=stack.aws.resources.queue_urls[queue],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def _event_record(stack: LocalStack, event_id: str) -> dict[str, Any] | None:
    assert stack.aws is not None
    item = stack.aws.clients["dynamodb"].get_item(
        TableName=stack.aws.resources.tables["EventsTable"], Key={"eventId": {"S": event_id}}
    )
    return item.get("Item")


# -- the launcher ---------------------------------------------------------------------------------------------


def test_host_network_launcher_lets_a_container_reach_loopback(built: Path) -> None:
    """The proof behind every test below: with the launcher's patch a container reads a server on the host's
    127.0.0.1; created as SAM 1.170 creates it, it cannot."""
    proc = subprocess.run(
        [str(SAM_PYTHON), str(LAUNCHER), "--check", IMAGE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: with host networking a container reaches a server on the host's 127.0.0.1" in proc.stdout
    assert "as SAM 1.170 creates it: unreachable" in proc.stdout
    SUMMARY.append("host-network launcher: container reaches 127.0.0.1 with it, not without it")


# -- sam local invoke ReceiverFunction ------------------------------------------------------------------------


def test_receiver_new_duplicate_and_bad_secret(stack: LocalStack, tmp_path: Path) -> None:
    env_file = _env_file(stack, tmp_path)
    receiver = EVENTS_DIR / "receiver"
    started = time.monotonic()

    new = sam_invoke(stack, env_file, "ReceiverFunction", receiver / "item-created.json")
    assert new["statusCode"] == 202, new
    event_id = json.loads(new["body"])["eventId"]
    assert _queue_depth(stack, "EventQueue") == 1  # queued, in moto, by the function in its container
    assert _event_record(stack, event_id) is not None  # and claimed in EventsTable

    duplicate = sam_invoke(stack, env_file, "ReceiverFunction", receiver / "item-created.json")
    assert duplicate["statusCode"] == 200, duplicate
    assert json.loads(duplicate["body"])["status"] == "duplicate"

    bad_secret = sam_invoke(stack, env_file, "ReceiverFunction", receiver / "bad-secret.json")
    assert bad_secret["statusCode"] == 401, bad_secret

    assert _queue_depth(stack, "EventQueue") == 1  # neither the duplicate nor the refused one was queued
    SUMMARY.append(f"receiver: new 202, duplicate 200, bad secret 401 ({time.monotonic() - started:.0f} s)")


# -- sam local invoke ProcessorFunction -----------------------------------------------------------------------


def test_processor_syncs_an_item_from_the_emulator(stack: LocalStack, tmp_path: Path) -> None:
    assert stack.emulator is not None and stack.aws is not None
    item = stack.emulator.create_item("sam-local-user")
    item_id = str(item["id"])
    event = substitute(json.loads((EVENTS_DIR / "processor" / "item-created.json").read_text()), {ITEM_ID: item_id})
    event_path = tmp_path / "item-created.json"
    event_path.write_text(json.dumps(event))
    started = time.monotonic()

    result = sam_invoke(stack, _env_file(stack, tmp_path), "ProcessorFunction", event_path)

    assert result == {"batchItemFailures": []}
    # What the processor in its container wrote to moto's RecordsTable is what the emulator (Pluggy) has.
    store, truth = store_of(stack), stack.emulator.truth()
    stored_item = store.get(item_key(item_id))
    assert stored_item is not None, "the item was not written"
    assert normal(stored_item["data"]) == normal(truth["items"][item_id])
    accounts = {a["accountId"]: a for a in store.accounts_of_item(item_id)}
    expected = {k: v for k, v in truth["accounts"].items() if v["itemId"] == item_id}
    assert expected and set(accounts) == set(expected)
    transactions = 0
    for account_id, account in accounts.items():
        assert normal(account["data"]) == normal(expected[account_id])
        stored = {r["transactionId"]: r["data"] for r in store.transactions_by_date(account_id)}
        assert normal(stored) == normal(truth["transactions"][account_id]), account_id
        transactions += len(stored)
    assert _queue_depth(stack, "EventDeadLetterQueue") == 0
    SUMMARY.append(
        f"processor: item synced from the emulator, {len(accounts)} accounts and {transactions} transactions "
        f"equal Pluggy's ({time.monotonic() - started:.0f} s)"
    )


def test_processor_parks_a_poison_message(stack: LocalStack, tmp_path: Path) -> None:
    assert stack.aws is not None
    event_path = EVENTS_DIR / "processor" / "poison-not-json.json"
    body = json.loads(event_path.read_text())["Records"][0]["body"]
    started = time.monotonic()

    result = sam_invoke(stack, _env_file(stack, tmp_path), "ProcessorFunction", event_path)

    assert result == {"batchItemFailures": []}  # parked, not retried
    parked = (
        stack.aws.clients["sqs"]
        .receive_message(
            QueueUrl=stack.aws.resources.queue_urls["EventDeadLetterQueue"],
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=1,
        )
        .get("Messages", [])
    )
    assert [m["Body"] for m in parked] == [body]
    SUMMARY.append(f"processor: poison message parked, batchItemFailures [] ({time.monotonic() - started:.0f} s)")


# -- sam local start-api --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[str], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_API_WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sam local start-api exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"sam local start-api did not listen within {START_API_WAIT} s:\n{log.read_text()[-4000:]}")


def _request(url: str, method: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=INVOKE_TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_start_api_post_round_trip_and_405(stack: LocalStack, tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "start-api.log"
    started = time.monotonic()
    with log.open("w") as output:
        proc = subprocess.Popen(
            [
                str(SAM_PYTHON),
                str(LAUNCHER),
                "local",
                "start-api",
                "--template",
                str(BUILT_TEMPLATE),
                "--env-vars",
                str(_env_file(stack, tmp_path)),
                "--invoke-image",
                IMAGE,
                "--skip-pull-image",
                *ARCHITECTURE,
                "--region",
                REGION,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO_ROOT,
            env=_sam_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        _wait_listening(proc, port, log)
        # SAM local has no stage prefix: the path is the template's, not /dev/webhooks/pluggy.
        url = f"http://127.0.0.1:{port}/webhooks/pluggy"
        event_id = f"sam-start-api-{uuid.uuid4()}"
        body = json.dumps({**VALID_PAYLOADS["item-updated"], "eventId": event_id}, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SECRET_HEADER: LOCAL_WEBHOOK_SECRET,
            SIGNATURE_HEADER: sign(body, LOCAL_SIGNING_KEY.encode()),
        }
        status, _, answer = _request(url, "POST", body, headers)
        assert status == 202, f"{status} {answer!r}\n{log.read_text()[-4000:]}"
        assert json.loads(answer)["eventId"] == event_id
        assert _event_record(stack, event_id) is not None  # the round trip reached moto
        assert _queue_depth(stack, "EventQueue") == 1

        status, answer_headers, answer = _request(url, "GET")
        assert status == 405, f"{status} {answer!r}"
        assert {k.lower(): v for k, v in answer_headers.items()}.get("allow") == "POST"

        # What SAM local does unlike the deployed API (the docs say so): no stage prefix, and an unknown path gets
        # its own 403 "Missing Authentication Token", not the template's 404 gateway response.
        for path in ("/dev/webhooks/pluggy", "/webhooks/other"):
            status, _, answer = _request(f"http://127.0.0.1:{port}{path}", "POST", body, headers)
            assert (status, json.loads(answer)) == (403, {"message": "Missing Authentication Token"}), path
    finally:
        proc.send_signal(signal.SIGINT)  # as Ctrl-C: SAM stops and removes its containers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    SUMMARY.append(
        "start-api: POST 202 (reached moto), GET 405 Allow: POST; /dev/... and unknown paths 403 Missing "
        f"Authentication Token ({time.monotonic() - started:.0f} s)"
    )


# -- every events/receiver file -------------------------------------------------------------------------------


@pytest.mark.timeout(1500)
def test_every_receiver_event_gives_its_documented_status(stack: LocalStack, tmp_path: Path) -> None:
    """Each events/receiver file through `sam local invoke`, on a fresh stack: its Scenario.expected_status."""
    env_file = _env_file(stack, tmp_path)
    expected = {scenario.name: scenario.expected_status for scenario in scenarios()}
    files = sorted((EVENTS_DIR / "receiver").glob("*.json"))
    assert sorted(path.stem for path in files) == sorted(expected), "events/receiver and the corpus differ"
    started = time.monotonic()
    outcomes: dict[str, tuple[int, int]] = {}
    for path in files:
        result = sam_invoke(stack, env_file, "ReceiverFunction", path)
        outcomes[path.stem] = (int(result["statusCode"]), expected[path.stem])
    elapsed = time.monotonic() - started
    wrong = {name: got for name, got in outcomes.items() if got[0] != got[1]}
    matched = len(outcomes) - len(wrong)
    SUMMARY.append(
        f"sam local invoke ReceiverFunction: {matched} of {len(outcomes)} events/receiver files give their "
        f"documented status ({elapsed:.0f} s, {elapsed / len(outcomes):.1f} s each)"
    )
    for name, (got, want) in sorted(outcomes.items()):
        SUMMARY.append(f"    {name}: {got} (documented {want}){'' if got == want else '  <-- WRONG'}")
    assert not wrong, f"status (got, documented): {wrong}"


# -- every events/processor file --------------------------------------------------------------------------------


def _event_log(stack: LocalStack) -> dict[str, dict[str, Any]]:
    """What the processor recorded per event in EventsTable: status, and its counts or error."""
    assert stack.aws is not None
    table = stack.aws.resources.tables["EventsTable"]
    items = stack.aws.clients["dynamodb"].scan(TableName=table, ConsistentRead=True)["Items"]
    log: dict[str, dict[str, Any]] = {}
    for item in items:
        entry: dict[str, Any] = {"status": item["status"]["S"]}
        if "counts" in item:
            entry["counts"] = {k: int(v["N"]) for k, v in item["counts"]["M"].items()}
        if "error" in item:
            entry["error"] = item["error"]["S"]
        log[item["eventId"]["S"]] = entry
    return log


def _processor_outcome(stack: LocalStack, name: str, result: dict[str, Any]) -> tuple[bool, str]:
    """(as documented?, what happened) for one events/processor file invoked alone on a fresh stack."""
    parked = _queue_depth(stack, "EventDeadLetterQueue")
    log = _event_log(stack)
    if result != {"batchItemFailures": []}:
        return False, f"result {result}"
    if name == "batch-mixed":  # one poison message among four good ones
        return parked == 1, f"{len(log)} events logged, {parked} parked"
    if len(log) != 1:
        return False, f"{len(log)} events logged"
    [entry] = log.values()
    status, detail = DOCUMENTED_OUTCOMES[name]
    if isinstance(detail, str):
        happened = f"{entry['status']} {entry.get('error')}, {parked} parked"
        return (entry["status"], entry.get("error"), parked) == (status, detail, 1), happened
    happened = f"{entry['status']} {entry.get('counts')}, {parked} parked"
    return (entry["status"], entry.get("counts"), parked) == (status, detail, 0), happened


@pytest.mark.timeout(1500)
def test_every_processor_event_gives_its_documented_outcome(built: Path, tmp_path: Path) -> None:
    """Each events/processor file through `sam local invoke ProcessorFunction`, alone on a fresh stack (the
    emulator knows none of the files' items or payments): processor_events.DOCUMENTED_OUTCOMES."""
    files = sorted((EVENTS_DIR / "processor").glob("*.json"))
    assert {path.stem for path in files} == set(DOCUMENTED_OUTCOMES) | {"batch-mixed"}
    started = time.monotonic()
    outcomes: dict[str, tuple[bool, str]] = {}
    for path in files:
        with module_stack(StackOptions(port=0, state_file=None, sqs_trigger=False)) as stack:
            result = sam_invoke(stack, _env_file(stack, tmp_path), "ProcessorFunction", path)
            outcomes[path.stem] = _processor_outcome(stack, path.stem, result)
    elapsed = time.monotonic() - started
    wrong = {name: happened for name, (ok, happened) in outcomes.items() if not ok}
    SUMMARY.append(
        f"sam local invoke ProcessorFunction: {len(outcomes) - len(wrong)} of {len(outcomes)} events/processor "
        f"files give their documented outcome ({elapsed:.0f} s, a fresh stack each)"
    )
    for name, (ok, happened) in sorted(outcomes.items()):
        SUMMARY.append(f"    {name}: {happened}{'' if ok else '  <-- NOT AS DOCUMENTED'}")
    assert not wrong, wrong


# -- the app's side ---------------------------------------------------------------------------------------------


def test_the_app_functions_run_in_their_containers(stack: LocalStack, tmp_path: Path) -> None:
    """PublisherFunction puts its events on moto's bus, ConnectTokenFunction mints a token at the emulator, and
    ReadApiFunction reads moto's RecordsTable: each from the built template, in the Lambda image, through the
    env file `make local` writes (so every variable they need reaches them)."""
    assert stack.aws is not None
    env_file = _env_file(stack, tmp_path)
    sqs, events = stack.aws.clients["sqs"], stack.aws.clients["events"]
    bus = stack.aws.resources.buses["ChangeEventBus"]
    started = time.monotonic()

    with subscription(sqs, events, bus, f"sam-tap-{uuid.uuid4().hex[:8]}") as tap:
        published = sam_invoke(
            stack, env_file, "PublisherFunction", EVENTS_DIR / "publisher" / "transactions-changed.json"
        )
        messages = sqs.receive_message(QueueUrl=tap, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
    assert published == {"batchItemFailures": []}
    (event,) = [json.loads(m["Body"]) for m in messages]
    assert event["detail-type"] == "Transactions Changed" and len(event["detail"]["added"]) == 2

    minted = sam_invoke(stack, env_file, "ConnectTokenFunction", EVENTS_DIR / "connect_token" / "valid.json")
    assert minted["statusCode"] == 200, minted
    assert json.loads(minted["body"])["accessToken"]

    read = sam_invoke(stack, env_file, "ReadApiFunction", EVENTS_DIR / "read_api" / "items-of-unknown-user.json")
    assert read["statusCode"] == 200 and json.loads(read["body"]) == {"items": []}
    SUMMARY.append(
        f"app's side: publisher put its event on moto's bus, a connect token minted at the emulator, the read API "
        f"answered from moto ({time.monotonic() - started:.0f} s)"
    )
