"""Properties of the deployed stack, checked on the SAM-transformed template (SAM's translator, offline).

A later edit of template.yaml that drops encryption, widens a policy or loosens a queue fails here.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from pluggy_pipeline_cli.targets import USER_OUTPUTS
from pluggy_pipeline_local.template import load_template
from samtranslator.translator.transform import transform

SOURCE = load_template()


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def _transformed(parameters: dict[str, str] | None = None) -> dict[str, Any]:
    template = copy.deepcopy(SOURCE)
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        # What `sam package` does: local paths become S3 URIs.
        if "CodeUri" in properties:
            properties["CodeUri"] = "s3://bucket/code.zip"
        if "ContentUri" in properties:
            properties["ContentUri"] = "s3://bucket/layer.zip"
    return transform(template, parameters or {}, _NoManagedPolicies())  # type: ignore[no-any-return]


@pytest.fixture(scope="module", autouse=True)
def _region(monkeypatch_module: Any) -> None:
    monkeypatch_module.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return _transformed({"AllowedSourceCidrs": "177.71.238.212/32"})


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for policy in role["Properties"].get("Policies", []):
        statements = policy["PolicyDocument"]["Statement"]
        found.extend(statements if isinstance(statements, list) else [statements])
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_roles_are_least_privilege(stack: dict[str, Any]) -> None:
    roles = _of_type(stack, "AWS::IAM::Role")
    functions = {"Receiver", "Processor", "Publisher", "ConnectToken", "ReadApi"}
    assert set(roles) == {f"{f}Role" for f in functions}, "functions must use the explicit roles"
    for name, role in roles.items():
        assert not role["Properties"].get("ManagedPolicyArns"), f"{name}: managed policies grant '*'"
        for statement in _statements(role):
            actions = _as_list(statement["Action"])
            assert all("*" not in action for action in actions), (name, actions)
            if statement["Resource"] == "*":
                # X-Ray and dynamodb:ListStreams have no resource-level permissions; nothing else may use "*".
                allowed = {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "dynamodb:ListStreams"}
                assert set(actions) <= allowed, (name, actions)


def test_receiver_can_only_claim_enqueue_and_read_its_secret(stack: dict[str, Any]) -> None:
    actions = {a for s in _statements(stack["Resources"]["ReceiverRole"]) for a in _as_list(s["Action"])}
    assert actions == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",
    }


def test_functions_use_their_roles_and_no_secret_in_environment(stack: dict[str, Any]) -> None:
    functions = _of_type(stack, "AWS::Lambda::Function")
    assert {"ReceiverFunction", "ProcessorFunction"} <= set(functions)
    # The frontend route's function is the same code with the same needs: it shares ConnectTokenRole.
    shared = {"ConnectTokenFrontendFunction": "ConnectTokenRole"}
    for name, function in functions.items():
        properties = function["Properties"]
        role = shared.get(name, name.replace("Function", "Role"))
        assert properties["Role"] == {"Fn::GetAtt": [role, "Arn"]}
        assert properties["Architectures"] == [{"Ref": "Architecture"}] and properties["Runtime"] == "python3.13"
        assert properties["TracingConfig"] == {"Mode": "Active"}
        variables = properties["Environment"]["Variables"]
        for key, value in variables.items():
            # Secrets are referenced by ARN only, never placed in the environment.
            assert not (key.endswith(("SECRET", "_KEY", "PASSWORD")) and value), (name, key)


def test_data_is_encrypted_and_recoverable(stack: dict[str, Any]) -> None:
    for name, table in _of_type(stack, "AWS::DynamoDB::Table").items():
        properties = table["Properties"]
        assert properties["SSESpecification"]["SSEEnabled"] is True, name
        assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, name
        assert properties["BillingMode"] == "PAY_PER_REQUEST", name
        assert "TableName" not in properties, f"{name}: fixed physical names stop a second stack"
    for name, queue in _of_type(stack, "AWS::SQS::Queue").items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True, name
        assert "QueueName" not in queue["Properties"], name
    for name, log_group in _of_type(stack, "AWS::Logs::LogGroup").items():
        assert "RetentionInDays" in log_group["Properties"], name
        assert "LogGroupName" not in log_group["Properties"], name


def test_queue_redrive_and_visibility(stack: dict[str, Any]) -> None:
    queue = stack["Resources"]["EventQueue"]["Properties"]
    dlq = stack["Resources"]["EventDeadLetterQueue"]["Properties"]
    processor = stack["Resources"]["ProcessorFunction"]["Properties"]
    assert queue["FifoQueue"] is True and dlq["FifoQueue"] is True
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 5
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["EventDeadLetterQueue", "Arn"]}
    assert dlq["MessageRetentionPeriod"] == 14 * 86400
    assert queue["VisibilityTimeout"] >= 6 * processor["Timeout"]


def test_event_source_mapping(stack: dict[str, Any]) -> None:
    mappings = {
        m["Properties"]["FunctionName"]["Ref"]: m for m in _of_type(stack, "AWS::Lambda::EventSourceMapping").values()
    }
    assert set(mappings) == {"ProcessorFunction", "PublisherFunction"}
    properties = mappings["ProcessorFunction"]["Properties"]
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BatchSize"] <= 10
    assert properties["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "ProcessorMaxConcurrency"}
    assert int(SOURCE["Parameters"]["ProcessorMaxConcurrency"]["Default"]) <= 5


def test_the_publisher_never_drops_a_stream_record_it_could_still_retry(stack: dict[str, Any]) -> None:
    mappings = {
        m["Properties"]["FunctionName"]["Ref"]: m for m in _of_type(stack, "AWS::Lambda::EventSourceMapping").values()
    }
    properties = mappings["PublisherFunction"]["Properties"]
    assert properties["EventSourceArn"] == {"Fn::GetAtt": ["RecordsTable", "StreamArn"]}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BisectBatchOnFunctionError"] is True
    # Retried until the record would leave the stream (24 h), then parked, never silently skipped.
    assert properties["MaximumRetryAttempts"] == -1 and properties["MaximumRecordAgeInSeconds"] == -1
    destination = properties["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == {"Fn::GetAtt": ["PublisherFailureQueue", "Arn"]}
    stream = stack["Resources"]["RecordsTable"]["Properties"]["StreamSpecification"]
    assert stream["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    alarms = _of_type(stack, "AWS::CloudWatch::Alarm")
    assert {"PublisherLagAlarm", "PublisherFailuresAlarm"} <= set(alarms)


APP_ROUTES = {
    ("/connect-token", "post"),
    ("/users/{clientUserId}/items", "get"),
    ("/items/{itemId}", "get"),
    ("/accounts/{accountId}/transactions", "get"),
    ("/accounts/{accountId}/bills", "get"),
    ("/investments/{investmentId}/transactions", "get"),
    ("/items/{itemId}/investments", "get"),
    ("/items/{itemId}/loans", "get"),
    ("/items/{itemId}/consents", "get"),
    ("/items/{itemId}/identity", "get"),
}


def _security(operation: Any) -> Any:
    return operation.get("security") if isinstance(operation, dict) else None


def test_the_app_routes_need_a_signature_from_this_account(stack: dict[str, Any]) -> None:
    body = stack["Resources"]["WebhookApi"]["Properties"]["Body"]
    for path, method in APP_ROUTES:
        operation = body["paths"][path][method]
        assert operation["security"] == [{"AWS_IAM": []}], (path, method)
    for branch in body["x-amazon-apigateway-policy"]["Statement"]["Fn::If"][1:]:
        public = [s for s in branch if s["Principal"] == "*"]
        # Anything public is a webhook path: with "Principal: *", a SigV4 request from any account would pass.
        assert all("webhooks/pluggy" in r for s in public for r in _as_list(s["Resource"])), public
        (own,) = [s for s in branch if s["Principal"] != "*"]
        assert own["Principal"]["AWS"]["Fn::Sub"].endswith(":iam::${AWS::AccountId}:root"), own
        assert own["Effect"] == "Allow", own
        # Every app route is this account's to call, and nothing else is ("*" matches any characters, "/" too).
        calls = {f"execute-api:/stage/{method.upper()}{path}" for path, method in APP_ROUTES}
        others = {f"execute-api:/stage/{m.upper()}{p}" for p, ops in body["paths"].items() for m in ops} - calls
        resources = _as_list(own["Resource"])
        covers = {
            r: {c for c in calls | others if re.fullmatch(re.escape(r).replace(r"\*", ".*"), c)} for r in resources
        }
        assert all(covers.values()) and set().union(*covers.values()) == calls, covers
    signed = {(p, m) for p, ops in body["paths"].items() for m, op in ops.items() if _security(op) == [{"AWS_IAM": []}]}
    assert signed == APP_ROUTES  # a new AWS_IAM route must be listed above (and allowed by the policy)


def test_api_enforces_the_ip_allowlist_and_throttles(stack: dict[str, Any]) -> None:
    body = stack["Resources"]["WebhookApi"]["Properties"]["Body"]
    with_cidrs, _without = body["x-amazon-apigateway-policy"]["Statement"]["Fn::If"][1:]
    deny = [s for s in with_cidrs if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"]["NotIpAddress"]["aws:SourceIp"] == {"Fn::Split": [",", "177.71.238.212/32"]}
    # The allowlist is Pluggy's: the app's own backend calls its routes from elsewhere.
    assert all("webhooks/pluggy" in r for r in deny[0]["Resource"])
    assert set(body["paths"]["/webhooks/pluggy"]) >= {"post", "x-amazon-apigateway-any-method"}
    assert set(body["paths"]["/webhooks/pluggy/{token}"]) >= {"post", "x-amazon-apigateway-any-method"}
    stage = _stages_of(stack, "WebhookApi")[0]
    settings = stage["Properties"]["MethodSettings"][0]
    assert 0 < settings["ThrottlingRateLimit"] <= 1000 and 0 < settings["ThrottlingBurstLimit"] <= 2000


def test_the_url_token_stays_out_of_access_logs_and_traces(stack: dict[str, Any]) -> None:
    """The token route carries a secret in its URL: no stage log or trace may record the request path."""
    (stage,) = _stages_of(stack, "WebhookApi")
    assert stage["Properties"]["TracingEnabled"] is False  # an API Gateway trace records the full URL
    fmt = json.dumps(SOURCE["Resources"]["WebhookApi"]["Properties"]["AccessLogSetting"])
    assert "$context.resourcePath" in fmt
    assert "$context.path" not in fmt and "$context.requestOverride" not in fmt
    for settings in stage["Properties"]["MethodSettings"]:
        # Execution logs (LoggingLevel) and data tracing would log the full request, URL included.
        assert settings.get("LoggingLevel", "OFF") == "OFF"
        assert not settings.get("DataTraceEnabled", False)


def test_alarms_cover_the_failure_modes(stack: dict[str, Any]) -> None:
    alarms = _of_type(stack, "AWS::CloudWatch::Alarm")
    assert set(alarms) >= {
        "DeadLetterQueueNotEmptyAlarm",
        "QueueBacklogAlarm",
        "ReceiverFailuresAlarm",
        "ProcessorErrorsAlarm",
        "ProcessorThrottlesAlarm",
        "PluggyAuthFailuresAlarm",
        "StaleItemsAlarm",
        "ConsentsExpiringSoonAlarm",
    }
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
    assert _of_type(stack, "AWS::CloudWatch::Dashboard")


def test_custom_metrics_named_in_alarms_are_emitted_by_the_code() -> None:
    package = Path(__file__).resolve().parents[2] / "layers/common/pluggy_pipeline"
    code = "".join(p.read_text() for p in package.glob("*.py"))
    text = json.dumps(SOURCE)
    for metric in ("WebhookFailed", "EventsFailed", "PluggyAuthFailed", "StaleItems", "ConsentsExpiringSoon"):
        assert metric in text
        assert f'"{metric}"' in code, f"alarm on {metric}, which no code emits"


def test_outputs_needed_by_register_and_operators(stack: dict[str, Any]) -> None:
    assert set(stack["Outputs"]) >= set(USER_OUTPUTS)
    assert "SecretString" not in json.dumps(stack["Outputs"])


# -- first-deploy defects (each was wrong in a translated template once) ---------------------------------


def test_alarm_topic_uses_a_key_cloudwatch_may_use(stack: dict[str, Any]) -> None:
    """With the AWS managed aws/sns key, CloudWatch cannot publish: alarm e-mails would never arrive."""
    topic = stack["Resources"]["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    key = stack["Resources"]["AlarmTopicKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    grants = [
        s
        for s in key["KeyPolicy"]["Statement"]
        if s["Effect"] == "Allow" and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert grants and {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(_as_list(grants[0]["Action"]))


def _stages_of(stack: dict[str, Any], api: str) -> list[dict[str, Any]]:
    stages = _of_type(stack, "AWS::ApiGateway::Stage").values()
    return [s for s in stages if s["Properties"]["RestApiId"] == {"Ref": api}]


def test_the_api_has_exactly_the_configured_stage(stack: dict[str, Any]) -> None:
    """Without OpenApiVersion SAM adds a stage named "Stage", without throttling, that reaches the receiver."""
    apis = _of_type(stack, "AWS::ApiGateway::RestApi")
    assert set(apis) == {"WebhookApi", "ConnectTokenFrontendApi"}
    assert apis["ConnectTokenFrontendApi"]["Condition"] == "HasConnectTokenUserPool"
    assert len(_of_type(stack, "AWS::ApiGateway::Stage")) == len(apis)
    for api in apis:
        (stage,) = _stages_of(stack, api)
        assert stage["Properties"]["StageName"] == {"Ref": "Stage"}


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARN", "ERROR"])
def test_lambda_never_filters_metric_lines(level: str, stack: dict[str, Any]) -> None:
    """EMF lines carry no level and count as INFO: ApplicationLogLevel WARN/ERROR would drop every metric."""
    conditions = stack["Conditions"]
    for name, function in _of_type(stack, "AWS::Lambda::Function").items():
        setting = function["Properties"]["LoggingConfig"]["ApplicationLogLevel"]
        condition, if_true, if_false = setting["Fn::If"]
        assert conditions[condition] == {"Fn::Equals": [{"Ref": "LogLevel"}, "DEBUG"]}
        resolved = if_true if level == "DEBUG" else if_false
        assert resolved in {"DEBUG", "INFO"}, (name, level, resolved)
        assert function["Properties"]["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("", True),
        ("177.71.238.212", True),
        ("177.71.238.212/32,10.0.0.0/8", True),
        ("2001:db8::/32,177.71.238.212/32", True),
        ("177.71.238.212/32, 10.0.0.0/8", False),  # " 10.0.0.0/8" would be an invalid policy entry
        (" 177.71.238.212", False),
        ("177.71.238.212;10.0.0.1", False),
    ],
)
def test_allowed_source_cidrs_refuses_what_the_policy_split_would_break(value: str, accepted: bool) -> None:
    pattern = SOURCE["Parameters"]["AllowedSourceCidrs"]["AllowedPattern"]
    assert (re.fullmatch(pattern, value) is not None) is accepted


def test_variables_declared_for_local_runs_are_harmless_when_deployed(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sam local --env-vars` only overrides declared variables; their deployed value must change nothing."""
    for function in _of_type(stack, "AWS::Lambda::Function").values():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["AWS_ENDPOINT_URL"] == ""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    for service in ("dynamodb", "sqs", "secretsmanager"):
        client = boto3.client(service, region_name="us-east-1")  # type: ignore[call-overload]
        assert client.meta.endpoint_url == f"https://{service}.us-east-1.amazonaws.com"


@pytest.mark.parametrize("architecture", ["arm64", "x86_64"])
def test_architecture_parameter(architecture: str) -> None:
    translated = _transformed({"Architecture": architecture})
    for function in _of_type(translated, "AWS::Lambda::Function").values():
        assert function["Properties"]["Architectures"] in ([architecture], [{"Ref": "Architecture"}])
    assert SOURCE["Parameters"]["Architecture"]["Default"] == "arm64"
    layer = next(iter(_of_type(translated, "AWS::Lambda::LayerVersion").values()))
    assert architecture in layer["Properties"]["CompatibleArchitectures"]
