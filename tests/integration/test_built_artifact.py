"""The receiver as `sam build` packaged it: function folder + layer, nothing from the repository.

Needs `make build` (the README's test command runs it first). Talks HTTP to a moto server holding the
template's resources, with the secret read from Secrets Manager as in AWS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pluggy_pipeline_local.events_corpus import scenarios
from pluggy_pipeline_local.invoke import DEFAULT_RUNTIME_DIR, invoke, invoke_on_local_aws
from pluggy_pipeline_local.moto_server import LocalAws, moto_server
from pluggy_pipeline_local.processor_events import DOCUMENTED_OUTCOMES

from tests.conftest import EVENTS_DIR, REPO_ROOT

BUILD_DIR = REPO_ROOT / ".aws-sam" / "build"
# Template parameters, as `sam local invoke --parameter-overrides` takes them. DEBUG: accepted and duplicate
# deliveries log at DEBUG, and this test reads their log lines.
PARAMETERS = {"AllowedSourceCidrs": "177.71.238.212/32", "RequireSignature": "true", "LogLevel": "DEBUG"}


@pytest.fixture(scope="module")
def local_aws() -> Iterator[LocalAws]:
    if not (BUILD_DIR / "template.yaml").is_file():
        pytest.fail("no built artifact: run `make build` (make test does) before this test")
    with moto_server() as local:
        yield local


def _invoke(local: LocalAws, event: str) -> dict:
    return invoke(
        "receiver",
        EVENTS_DIR / "receiver" / f"{event}.json",
        build_dir=BUILD_DIR,
        parameter_overrides=PARAMETERS,
        extra_env=local.env,
        resources=local.resources,
    )


def _queue_depth(local: LocalAws) -> int:
    attributes = local.clients["sqs"].get_queue_attributes(
        QueueUrl=local.resources.queue_urls["EventQueue"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_built_receiver_imports_only_from_the_build(local_aws: LocalAws) -> None:
    report = _invoke(local_aws, "item-created")
    origins = {name: Path(path).resolve() for name, path in report["origins"].items()}
    assert origins["app"].is_relative_to(BUILD_DIR.resolve() / "ReceiverFunction")
    # The layer lands at /opt/python/pluggy_pipeline, i.e. CommonLayer/python/pluggy_pipeline.
    assert origins["pluggy_pipeline"] == BUILD_DIR.resolve() / "CommonLayer/python/pluggy_pipeline/__init__.py"
    assert origins["aws_lambda_powertools"].is_relative_to(BUILD_DIR.resolve() / "CommonLayer/python")
    assert origins["boto3"].is_relative_to(DEFAULT_RUNTIME_DIR.resolve())
    assert report["result"]["statusCode"] == 202
    assert _queue_depth(local_aws) == 1


def test_built_receiver_answers_duplicate_and_bad_secret(local_aws: LocalAws) -> None:
    before = _queue_depth(local_aws)
    duplicate = _invoke(local_aws, "item-created")
    assert duplicate["result"]["statusCode"] == 200
    assert json.loads(duplicate["result"]["body"])["status"] == "duplicate"
    assert _invoke(local_aws, "bad-secret")["result"]["statusCode"] == 401
    assert _invoke(local_aws, "wrong-ip")["result"]["statusCode"] == 403
    assert _queue_depth(local_aws) == before
    # Logs are JSON lines carrying the eventId; the secret never appears in them.
    assert '"eventId":"d876fd7c-e9bd-4c4c-bd46-cc96c62aa001"' in duplicate["output"]
    assert "local-dev-webhook-secret" not in duplicate["output"]


def test_env_vars_file_follows_sam_rules(local_aws: LocalAws) -> None:
    """ "Parameters" is an environment override for every function; undeclared variables are dropped."""
    env_vars = {
        "Parameters": {"LOG_ANYTHING": "x", "ALLOWED_SOURCE_CIDRS": "10.0.0.0/8"},
        "ReceiverFunction": {"WEBHOOK_SECRET": "ignored-by-sam", "REQUIRE_SIGNATURE": "true"},
    }
    report = invoke(
        "receiver",
        EVENTS_DIR / "receiver" / "item-updated.json",
        build_dir=BUILD_DIR,
        env_vars=env_vars,
        extra_env=local_aws.env,
        resources=local_aws.resources,
    )
    assert report["result"]["statusCode"] == 403  # the "Parameters" CIDR applied: 177.71.238.212 is outside it
    assert report["dropped"] == ["LOG_ANYTHING", "WEBHOOK_SECRET"]
    assert "dropped as SAM does: LOG_ANYTHING, WEBHOOK_SECRET" in report["output"]
    shipped = json.loads((EVENTS_DIR / "env.json").read_text())
    declared = invoke(
        "receiver",
        EVENTS_DIR / "receiver" / "item-updated.json",
        build_dir=BUILD_DIR,
        env_vars=shipped,
        extra_env=local_aws.env,
        resources=local_aws.resources,
    )
    assert declared["dropped"] == []  # events/env.json holds only what SAM would apply
    assert declared["result"]["statusCode"] == 202


@pytest.mark.slow
def test_make_invoke_gives_every_event_file_its_documented_outcome() -> None:
    """`make invoke` on each events/ file, alone against a fresh local stack, as the docs table says."""
    if not (BUILD_DIR / "template.yaml").is_file():
        pytest.fail("no built artifact: run `make build` (make test does) before this test")
    env_vars = json.loads((EVENTS_DIR / "env.json").read_text())
    expected_status = {s.name: s.expected_status for s in scenarios()}
    kwargs: dict[str, Any] = {"build_dir": BUILD_DIR, "runtime_dir": DEFAULT_RUNTIME_DIR, "parameter_overrides": {}}
    receiver_files = sorted((EVENTS_DIR / "receiver").glob("*.json"))
    assert len(receiver_files) == len(expected_status)
    with moto_server() as local:  # one stack: every receiver file's eventId or body is its own
        for path in receiver_files:
            report = invoke("receiver", path, env_vars=env_vars, extra_env=local.env, resources=local.resources)
            assert report["result"]["statusCode"] == expected_status[path.stem], path.stem
    processor_files = sorted((EVENTS_DIR / "processor").glob("*.json"))
    assert {p.stem for p in processor_files} == set(DOCUMENTED_OUTCOMES) | {"batch-mixed"}
    for path in processor_files:
        report = invoke_on_local_aws("processor", path, env_vars, kwargs)
        assert report["result"] == {"batchItemFailures": []}, path.stem
        if path.stem == "batch-mixed":
            assert report["queued"]["EventDeadLetterQueue"] == "1"
            continue
        status, detail = DOCUMENTED_OUTCOMES[path.stem]
        [entry] = report["events"].values()
        assert entry["status"] == status, path.stem
        if isinstance(detail, str):
            assert entry["error"] == detail and report["queued"]["EventDeadLetterQueue"] == "1", path.stem
        else:
            assert entry["counts"] == detail and report["queued"]["EventDeadLetterQueue"] == "0", path.stem
