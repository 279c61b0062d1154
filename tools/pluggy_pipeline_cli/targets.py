"""Where a `pluggy-pipeline` command acts: the running local stack, or a deployed CloudFormation stack.

- No target options: the local stack started by `pluggy-pipeline local` (or `make local`), found through
  its state file (`.local-stack.json` at the repository root, or `$PLUGGY_PIPELINE_STATE_FILE`).
- `--stack NAME [--region R] [--profile P]`: a deployed stack, from its CloudFormation outputs.

Secrets (the webhook secret, Pluggy's client secret) are read only when a command needs them, from
Secrets Manager in both cases, and are never part of a Target's repr.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from pluggy_pipeline.secrets import derive_url_token

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

STATE_FILE_ENV = "PLUGGY_PIPELINE_STATE_FILE"
# The checkout this package is installed from (editable): where `make local` writes the state file.
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_FILE = REPO_ROOT / ".local-stack.json"
DEFAULT_PLUGGY_URL = "https://api.pluggy.ai"
DEFAULT_SECRET_HEADER = "X-Webhook-Secret"  # noqa: S105 - a header name, not a secret
SIGNATURE_HEADER = "X-Pluggy-Signature"
START_HINT = "start it with `pluggy-pipeline local` or `make local`"
# moto accepts any credentials; fixed fake ones keep a real profile from ever being used locally.
_FAKE_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local", "aws_session_token": "local"}
# The outputs the CLI reads from a deployed stack.
STACK_OUTPUTS = (
    "WebhookUrl",
    "EventsTableName",
    "RecordsTableName",
    "EventQueueUrl",
    "EventDeadLetterQueueUrl",
    "WebhookSecretArn",
    "WebhookSecretHeaderName",
    "PluggyCredentialsSecretArn",
)
# Read when present (stacks deployed before the app's side lack them; `watch` then says so).
APP_OUTPUTS = ("ChangeEventBusName", "ApiBaseUrl")
# Every output a user needs after a deploy: the CLI's, plus what operators wire up by hand.
USER_OUTPUTS = (*STACK_OUTPUTS, *APP_OUTPUTS, "AlarmTopicArn", "WebhookUrlWithTokenPattern")


class CliError(Exception):
    """A failure the user can act on: printed as `error: <message>`, exit status 1."""


@dataclass(frozen=True)
class WebhookSecret:
    """The shared secret Pluggy sends in the custom header, and the optional HMAC signing key."""

    current: str = field(repr=False)
    signing_key: str | None = field(default=None, repr=False)
    url_token: str = field(default="", repr=False)  # the URL-token route's token (explicit or derived)


@dataclass(frozen=True)
class PluggyCredentials:
    client_id: str
    client_secret: str = field(repr=False)


@dataclass
class Target:
    """Everything a command needs to act on one pipeline."""

    kind: str  # "local" or "stack"
    label: str  # for messages: "local stack" / "stack <name> (<region>)"
    region: str
    endpoint_url: str | None  # None: real AWS
    events_table: str
    records_table: str
    queue_url: str
    dlq_url: str
    webhook_url: str
    secret_header: str
    webhook_secret_arn: str
    pluggy_credentials_arn: str | None
    pluggy_base_url: str
    pluggy_client_id: str | None = None  # not secret: stamped as clientId on payloads `send` builds
    event_bus: str | None = None  # the change events' EventBridge bus
    api_base_url: str | None = None  # the app's routes (POST /connect-token, the read API)
    session_factory: Callable[[], Any] = field(default=boto3.session.Session, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            if self.endpoint_url is not None:
                self._clients[service] = boto3.client(  # type: ignore[call-overload]
                    service, region_name=self.region, endpoint_url=self.endpoint_url, **_FAKE_CREDENTIALS
                )
            else:
                self._clients[service] = self.session_factory().client(service, region_name=self.region)
        return self._clients[service]

    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self._client("dynamodb")
        return client

    def sqs(self) -> SQSClient:
        client: SQSClient = self._client("sqs")
        return client

    def events(self) -> EventBridgeClient:
        client: EventBridgeClient = self._client("events")
        return client

    def secretsmanager(self) -> SecretsManagerClient:
        client: SecretsManagerClient = self._client("secretsmanager")
        return client

    def _secret_json(self, arn: str, what: str) -> dict[str, Any]:
        raw = self.secretsmanager().get_secret_value(SecretId=arn).get("SecretString") or ""
        try:
            data = json.loads(raw)
        except ValueError:
            raise CliError(f"the {what} secret is not a JSON object") from None
        if not isinstance(data, dict):
            raise CliError(f"the {what} secret is not a JSON object")
        return data

    def webhook_secret(self) -> WebhookSecret:
        """The current shared secret and signing key, from the stack's WebhookSecret."""
        data = self._secret_json(self.webhook_secret_arn, "webhook")
        current = data.get("current")
        if not isinstance(current, str) or not current:
            raise CliError("the webhook secret has no `current` value")
        signing = data.get("signingKey")
        explicit = data.get("urlToken")
        token = explicit if isinstance(explicit, str) and explicit.strip() else derive_url_token(current)
        return WebhookSecret(current, signing if isinstance(signing, str) and signing else None, token)

    def webhook_url_with_token(self) -> str:
        """The URL-token route: for deliveries without custom headers (an item's or Connect token's webhookUrl)."""
        return f"{self.webhook_url.rstrip('/')}/{self.webhook_secret().url_token}"

    def pluggy_credentials(self) -> PluggyCredentials:
        """PLUGGY_CLIENT_ID/PLUGGY_CLIENT_SECRET from the environment, else the stack's credentials secret."""
        if not self.is_local:
            from_env = credentials_from_env()
            if from_env is not None:
                return from_env
        if not self.pluggy_credentials_arn:
            raise CliError("no Pluggy credentials: set PLUGGY_CLIENT_ID and PLUGGY_CLIENT_SECRET")
        data = self._secret_json(self.pluggy_credentials_arn, "Pluggy credentials")
        client_id, client_secret = data.get("clientId"), data.get("clientSecret")
        if not (isinstance(client_id, str) and client_id and isinstance(client_secret, str) and client_secret):
            raise CliError(
                "the Pluggy credentials secret needs clientId and clientSecret: "
                "put them with `pluggy-pipeline secrets put --stack <name>` (PluggyCredentialsSecret)"
            )
        return PluggyCredentials(client_id, client_secret)

    def queue_arn(self, queue_url: str) -> str:
        attributes = self.sqs().get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
        return attributes["QueueArn"]


def credentials_from_env() -> PluggyCredentials | None:
    client_id = os.environ.get("PLUGGY_CLIENT_ID", "")
    client_secret = os.environ.get("PLUGGY_CLIENT_SECRET", "")
    return PluggyCredentials(client_id, client_secret) if client_id and client_secret else None


def state_file_path() -> Path:
    """The running local stack's state file: $PLUGGY_PIPELINE_STATE_FILE or `.local-stack.json` at the repo root."""
    configured = os.environ.get(STATE_FILE_ENV)
    return Path(configured) if configured else DEFAULT_STATE_FILE


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(path: Path | None = None) -> dict[str, Any]:
    path = path or state_file_path()
    if not path.is_file():
        raise CliError(f"no local stack is running ({path} not found): {START_HINT}")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise CliError(f"{path} is not a local stack state file; remove it, then {START_HINT}") from None
    if not isinstance(state, dict):
        raise CliError(f"{path} is not a local stack state file; remove it, then {START_HINT}")
    pid = state.get("pid")
    if isinstance(pid, int) and not _pid_alive(pid):
        raise CliError(f"the local stack of {path} (pid {pid}) is not running; remove the file, then {START_HINT}")
    return state


def local_target(path: Path | None = None) -> Target:
    """The running local stack (its state file)."""
    return target_from_state(read_state(path))


def target_from_state(state: Mapping[str, Any]) -> Target:
    """A Target from a local stack's `describe()` (what its state file holds)."""
    try:
        secrets = state["secrets"]
        return Target(
            kind="local",
            label="local stack",
            region=str(state.get("region") or "us-east-1"),
            endpoint_url=str(state["awsEndpoint"]),
            events_table=str(state["tables"]["EventsTable"]),
            records_table=str(state["tables"]["RecordsTable"]),
            queue_url=str(state["queues"]["EventQueue"]),
            dlq_url=str(state["queues"]["EventDeadLetterQueue"]),
            webhook_url=str(state["webhookUrl"]),
            secret_header=str(state.get("secretHeader") or DEFAULT_SECRET_HEADER),
            webhook_secret_arn=str(secrets["WebhookSecret"]),
            pluggy_credentials_arn=str(secrets["PluggyCredentialsSecret"]),
            pluggy_base_url=str(state.get("pluggyBaseUrl") or DEFAULT_PLUGGY_URL),
            pluggy_client_id=str(state.get("pluggyClientId") or "") or None,
            event_bus=str(state.get("eventBus") or "") or None,
            api_base_url=str(state.get("apiBaseUrl") or "") or None,
        )
    except (KeyError, TypeError) as exc:
        raise CliError(f"the local stack state lacks {exc}; restart the local stack") from None


def stack_target(
    name: str,
    region: str | None = None,
    profile: str | None = None,
    *,
    session_factory: Callable[..., Any] = boto3.session.Session,
) -> Target:
    """A deployed stack, from `cloudformation describe-stacks` outputs and parameters."""
    session = session_factory(profile_name=profile, region_name=region)
    resolved_region = region or session.region_name
    if not resolved_region:
        raise CliError("no AWS region: pass --region or configure one for the profile")
    stacks = session.client("cloudformation", region_name=resolved_region).describe_stacks(StackName=name)["Stacks"]
    if not stacks:
        raise CliError(f"stack {name} not found in {resolved_region}")
    stack = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [key for key in STACK_OUTPUTS if key not in outputs]
    if missing:
        raise CliError(f"stack {name} lacks outputs {', '.join(missing)}: is it a pluggy-pipeline stack?")
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    return Target(
        kind="stack",
        label=f"stack {name} ({resolved_region})",
        region=resolved_region,
        endpoint_url=None,
        events_table=outputs["EventsTableName"],
        records_table=outputs["RecordsTableName"],
        queue_url=outputs["EventQueueUrl"],
        dlq_url=outputs["EventDeadLetterQueueUrl"],
        webhook_url=outputs["WebhookUrl"],
        secret_header=outputs["WebhookSecretHeaderName"] or DEFAULT_SECRET_HEADER,
        webhook_secret_arn=outputs["WebhookSecretArn"],
        pluggy_credentials_arn=outputs["PluggyCredentialsSecretArn"],
        pluggy_base_url=parameters.get("PluggyApiBaseUrl") or DEFAULT_PLUGGY_URL,
        pluggy_client_id=parameters.get("PluggyClientId") or None,
        event_bus=outputs.get("ChangeEventBusName"),
        api_base_url=outputs.get("ApiBaseUrl"),
        session_factory=lambda: session,
    )


def resolve(stack: str | None = None, region: str | None = None, profile: str | None = None) -> Target:
    """The target of a command's `--stack/--region/--profile` options (none of them: the local stack)."""
    if stack:
        return stack_target(stack, region, profile)
    if region or profile:
        raise CliError("--region and --profile only apply with --stack")
    return local_target()
