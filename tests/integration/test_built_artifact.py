"""The receiver as `sam build` packaged it: function folder + layer, nothing from the repository.

Needs `make build` (the README's test command runs it first). Talks HTTP to a moto server holding the
template's resources, with the secret read from Secrets Manager as in AWS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pluggy_pipeline_local.invoke import DEFAULT_RUNTIME_DIR, invoke
from pluggy_pipeline_local.moto_server import LocalAws, moto_server

from tests.conftest import EVENTS_DIR, REPO_ROOT

BUILD_DIR = REPO_ROOT / ".aws-sam" / "build"
# DEBUG: accepted and duplicate deliveries log at DEBUG, and this test reads their log lines.
ENV_VARS = {"Parameters": {"AllowedSourceCidrs": "177.71.238.212/32", "RequireSignature": "true", "LogLevel": "DEBUG"}}


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
        env_vars=ENV_VARS,
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
