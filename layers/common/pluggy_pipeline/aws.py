"""boto3 clients, created lazily once per container and reset by tests.

Timeouts are tight on purpose: the receiver must answer Pluggy within 5 s, so one slow AWS call
may not eat the budget; botocore's standard retry mode covers throttling and transient 5XX.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pluggy_pipeline.errors import PermanentError, TransientError

# Budget of the receiver: at most ~2 attempts x (1 s connect + 1.5 s read) per call, two calls per event.
RECEIVER_CONFIG = Config(connect_timeout=1, read_timeout=1.5, retries={"max_attempts": 2, "mode": "standard"})
# The processor has minutes, so it lets botocore retry throttling longer before failing the record.
PROCESSOR_CONFIG = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 5, "mode": "standard"})

_PERMANENT_CODES = frozenset(
    {
        "ValidationException",
        "AccessDeniedException",
        "AccessDenied",
        "ResourceNotFoundException",
        "InvalidParameterValue",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
    }
)


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


if TYPE_CHECKING:  # the stubs are a dev dependency; nothing here is imported at run time
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient


# One client per service and config for the life of the container (clients are thread-safe).
@functools.cache
def dynamodb(config: Config = RECEIVER_CONFIG) -> DynamoDBClient:
    return _session().client("dynamodb", config=config)


@functools.cache
def sqs(config: Config = RECEIVER_CONFIG) -> SQSClient:
    return _session().client("sqs", config=config)


@functools.cache
def secretsmanager(config: Config = RECEIVER_CONFIG) -> SecretsManagerClient:
    return _session().client("secretsmanager", config=config)


@functools.cache
def events(config: Config = PROCESSOR_CONFIG) -> EventBridgeClient:
    return _session().client("events", config=config)


def reset_clients() -> None:
    """Forget cached clients (tests switch moto backends and environments)."""
    for factory in (dynamodb, sqs, secretsmanager, events, _session):
        factory.cache_clear()


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__


def translate(exc: BaseException, action: str) -> TransientError | PermanentError:
    """Map a botocore failure onto the retry/give-up split the domain understands."""
    code = error_code(exc)
    if isinstance(exc, ClientError) and code in _PERMANENT_CODES:
        return PermanentError(f"{action} failed: {code}")
    if isinstance(exc, ClientError | BotoCoreError):
        return TransientError(f"{action} failed: {code}")
    return TransientError(f"{action} failed: {type(exc).__name__}")
