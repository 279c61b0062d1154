"""Deploy rehearsal: template.yaml deployed as `sam deploy` would, into moto's CloudFormation, then used.

Steps, as a first-time user takes them (README "Deploy"):
1. `sam package`: every CodeUri/ContentUri directory zipped and uploaded to S3, replaced by its s3:// URI.
2. The AWS::Serverless transform, with SAM's translator exactly as tests/unit/test_template.py runs it, given
   the deploy's parameter values (CloudFormation hands them to the hosted transform the same way).
3. CreateStack in moto's CloudFormation with the parameters `sam deploy --guided` asks a first-time user for
   (Stage, PluggyClientId, AllowedSourceCidrs, AlarmEmail), plus PluggyApiBaseUrl pointing the stack at the
   local Pluggy emulator (the parameter exists for that; nothing here may reach the real Pluggy or AWS).
4. `pluggy-pipeline secrets put --stack NAME` and `pluggy-pipeline register --stack NAME`, through the CLI's
   CloudFormation lookup (targets.stack_target), against the emulator.
5. A second deploy (UpdateStack, a changed parameter), and `register` again.

moto's CloudFormation lacks some resource types and properties this template uses. Each gap is bridged by a
named patch listed in MOTO_PATCHES below (reason, and what the real deploy does instead); what moto accepts
but silently ignores, and this rehearsal therefore does not check, is listed in NOT_REHEARSED.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import io
import json
import re
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import boto3
import pytest
from moto import mock_aws
from moto.apigateway.models import Deployment as MotoApiDeployment
from moto.apigateway.models import RestAPI as MotoRestApi
from moto.awslambda.models import LambdaFunction as MotoLambdaFunction
from moto.awslambda.models import LayerVersion as MotoLayerVersion
from moto.cloudformation import parsing as moto_cfn
from moto.cloudformation.exceptions import UnformattedGetAttTemplateException
from moto.events.models import EventBus as MotoEventBus
from moto.kms.models import Key as MotoKmsKey
from moto.sqs.models import Queue as MotoQueue
from pluggy_emulator import PluggyEmulator
from pluggy_pipeline.pluggy_client import PluggyClient
from pluggy_pipeline_cli.cli import main
from pluggy_pipeline_cli.targets import USER_OUTPUTS
from pluggy_pipeline_local.template import load_template
from samtranslator.translator.transform import transform

from tests.conftest import REPO_ROOT

REGION = "us-east-1"
BUCKET = "sam-artifacts-rehearsal"  # what `sam deploy --guided` creates (aws-sam-cli-managed-default-...)
CLIENT_ID = "0e5f8a51-6c1b-4d0e-9a57-3f2b8c1d7e90"
CLIENT_SECRET = f"rehearsal-{uuid.uuid4().hex}"  # the Pluggy application's secret (the emulator's)
ALARM_EMAIL = "alarms@example.com"
PLUGGY_IP = "177.71.238.212/32"
OFFICE_CIDR = "203.0.113.0/24"


# == moto patches: every departure from a real deploy, in one place =====================================


@dataclass(frozen=True)
class MotoPatch:
    name: str
    target: str
    moto_gap: str  # what moto 5.2.5 lacks or gets wrong
    instead: str  # what the patch does, and what a real deploy does that it does not


MOTO_PATCHES: tuple[MotoPatch, ...] = (
    MotoPatch(
        "fifo-queue-names",
        "AWS::SQS::Queue",
        "moto generates `<stack>-<LogicalId>-<suffix>` for a queue without QueueName and then refuses it for a "
        "FIFO queue ('Queue name must end in .fifo')",
        "appends '.fifo' to the generated name, as CloudFormation does; moto's own queue model does the rest",
    ),
    MotoPatch(
        "secretsmanager-secret",
        "AWS::SecretsManager::Secret",
        "no CloudFormation model at all: moto logs a warning, skips the resource and drops every Ref to it",
        "stand-in: CreateSecret with the value CloudFormation generates (GenerateSecretString: GetRandomPassword "
        "with PasswordLength/Exclude*, put under GenerateStringKey of SecretStringTemplate); Ref = ARN. On update a "
        "changed GenerateSecretString/SecretString writes a new value, as CloudFormation does "
        "(aws-cloudformation/cloudformation-coverage-roadmap#1161, #2210); KmsKeyId, Tags, replicas not applied",
    ),
    MotoPatch(
        "rest-api-body",
        "AWS::ApiGateway::RestApi",
        "moto's model requires Name and ignores Body (SAM's OpenAPI definition): no paths, methods, resource "
        "policy or gateway responses, and the deployment then fails ('No method defined')",
        "stand-in: CreateRestApi named after Body's info.title with x-amazon-apigateway-policy as the policy, "
        "PutRestApi(Body) for paths, methods and Lambda integrations, PutGatewayResponse for "
        "x-amazon-apigateway-gateway-responses; updated in place (same API id), as API Gateway does",
    ),
    MotoPatch(
        "api-deployment-ref",
        "AWS::ApiGateway::Deployment",
        "moto's Deployment has no physical id, so Ref returns the Python object instead of the deployment id",
        "Ref = the deployment id, as in CloudFormation",
    ),
    MotoPatch(
        "api-stage",
        "AWS::ApiGateway::Stage",
        "no CloudFormation model (SAM emits the stage as its own resource)",
        "stand-in: CreateStage (deployment, name, tracing) and MethodSettings throttling through UpdateStage; "
        "on update the stage moves to the new deployment. AccessLogSetting is refused (not rehearsed)",
    ),
    MotoPatch(
        "lambda-layer-ref",
        "AWS::Lambda::LayerVersion",
        "moto's LayerVersion has no physical id, so Ref returns the Python object instead of the version ARN",
        "Ref = the layer version ARN, as in CloudFormation",
    ),
    MotoPatch(
        "lambda-function-layers",
        "AWS::Lambda::Function",
        "moto creates the function without its Layers (and Architectures, LoggingConfig, TracingConfig, Tags)",
        "moto's model, then UpdateFunctionConfiguration(Layers); the other properties stay unrehearsed",
    ),
    MotoPatch(
        "event-bus-ref",
        "AWS::Events::EventBus",
        "moto's EventBus has no physical id, so Ref returns the Python object instead of the bus name",
        "Ref = the bus name, as in CloudFormation",
    ),
    MotoPatch(
        "kms-key-policy-json",
        "AWS::KMS::Key",
        "moto stores KeyPolicy as the template's object, and every KMS call that reads the policy then fails "
        "(json.loads of a dict)",
        "hands moto the policy as a JSON string, as CloudFormation hands it to CreateKey",
    ),
    MotoPatch(
        "sqs-queue-policy",
        "AWS::SQS::QueuePolicy",
        "no CloudFormation model",
        "stand-in: SetQueueAttributes(Policy) on each queue of Queues",
    ),
    MotoPatch(
        "sns-subscription",
        "AWS::SNS::Subscription",
        "no CloudFormation model",
        "stand-in: Subscribe(TopicArn, Protocol, Endpoint); no confirmation e-mail, of course",
    ),
    MotoPatch(
        "cloudwatch-alarm",
        "AWS::CloudWatch::Alarm",
        "no CloudFormation model",
        "stand-in: PutMetricAlarm with the template's properties (name generated like CloudFormation's)",
    ),
    MotoPatch(
        "update-sees-sub-references",
        "UpdateStack",
        "when only parameters change, moto updates the resources that name a changed parameter in a Ref and "
        "misses those that use it in a Fn::Sub string ('${PluggyClientId}')",
        "a parameter named in a Fn::Sub string counts as a reference too, as CloudFormation resolves both",
    ),
)

# Accepted by moto and silently dropped; left unpatched, so this rehearsal does not check them (the translated
# template's property tests in tests/unit/test_template.py do, offline).
NOT_REHEARSED: tuple[str, ...] = (
    "AWS::DynamoDB::Table TimeToLiveSpecification and PointInTimeRecoverySpecification (moto reports both off)",
    "AWS::Lambda::Function Architectures, LoggingConfig (log group, JSON format, ApplicationLogLevel), "
    "TracingConfig, Tags",
    "AWS::ApiGateway::Stage AccessLogSetting (EnableApiAccessLogs=true): the stand-in refuses it",
    "IAM: moto stores the roles' policies but enforces nothing, so no permission is proved here",
    "API Gateway's resource policy and gateway responses are stored, not enforced (no request reaches the API)",
)


class _StandIn:
    """What moto's CloudFormation needs from a resource model (the interface of moto's CloudFormationModel),
    for a resource type moto has no model for. Not a CloudFormationModel subclass: those register themselves in
    moto's global model list, and these must exist only while the rehearsal runs."""

    resource_type: ClassVar[str]
    name_property: ClassVar[str] = ""
    attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, physical_resource_id: str, properties: dict[str, Any], **attributes: str) -> None:
        self.physical_resource_id = physical_resource_id
        self.properties = properties
        self._attributes = attributes

    def is_created(self) -> bool:
        return True

    def get_cfn_attribute(self, name: str) -> str:
        if name not in self._attributes:
            raise UnformattedGetAttTemplateException()
        return self._attributes[name]

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in cls.attributes

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> _StandIn:
        return cls.create(resource_name, cloudformation_json["Properties"], region_name)

    @classmethod
    def create(cls, name: str, properties: dict[str, Any], region: str) -> _StandIn:
        """Each stand-in creates its resource with the service's own calls (abstract here)."""
        raise NotImplementedError

    @classmethod
    def update_from_cloudformation_json(
        cls,
        original_resource: _StandIn,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> _StandIn:
        return original_resource.update(cloudformation_json["Properties"], region_name)

    def update(self, properties: dict[str, Any], region: str) -> _StandIn:
        """Default: replacement (delete, then create under a new name)."""
        self.delete("", region)
        return self.create(f"{self.physical_resource_id}-1", properties, region)

    @classmethod
    def delete_from_cloudformation_json(cls, *_: Any) -> None:
        return None

    def delete(self, account_id: str, region_name: str) -> None:
        return None


def _client(service: str, region: str) -> Any:
    # `service` is a runtime string; boto3-stubs only types literal service names.
    return boto3.client(service, region_name=region)  # type: ignore[call-overload]


class _FifoQueue:
    """fifo-queue-names: moto's queue model, with the '.fifo' CloudFormation adds to a generated name."""

    resource_type = "AWS::SQS::Queue"
    name_property = "QueueName"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return bool(MotoQueue.has_cfn_attr(attr))

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **kw: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        if properties.get("FifoQueue") and "QueueName" not in properties:
            resource_name = f"{resource_name[:75]}.fifo"
        return MotoQueue.create_from_cloudformation_json(
            resource_name, cloudformation_json, account_id, region_name, **kw
        )

    @classmethod
    def update_from_cloudformation_json(cls, **kwargs: Any) -> Any:
        return MotoQueue.update_from_cloudformation_json(**kwargs)

    @classmethod
    def delete_from_cloudformation_json(cls, *args: Any) -> None:
        MotoQueue.delete_from_cloudformation_json(*args)


class _Secret(_StandIn):
    """secretsmanager-secret."""

    resource_type = "AWS::SecretsManager::Secret"
    name_property = "Name"
    attributes = ("Id",)

    @staticmethod
    def _value(properties: dict[str, Any], region: str) -> str:
        if "SecretString" in properties:
            assert "GenerateSecretString" not in properties, "CloudFormation refuses both"
            return str(properties["SecretString"])
        spec = properties.get("GenerateSecretString") or {}
        password = _client("secretsmanager", region).get_random_password(
            PasswordLength=int(spec.get("PasswordLength", 32)),
            ExcludeCharacters=str(spec.get("ExcludeCharacters", "")),
            ExcludeNumbers=bool(spec.get("ExcludeNumbers", False)),
            ExcludePunctuation=bool(spec.get("ExcludePunctuation", False)),
            ExcludeUppercase=bool(spec.get("ExcludeUppercase", False)),
            ExcludeLowercase=bool(spec.get("ExcludeLowercase", False)),
            IncludeSpace=bool(spec.get("IncludeSpace", False)),
            RequireEachIncludedType=bool(spec.get("RequireEachIncludedType", True)),
        )["RandomPassword"]
        if "SecretStringTemplate" not in spec:
            return str(password)
        data = json.loads(spec["SecretStringTemplate"])  # CloudFormation fails the resource on bad JSON too
        data[spec["GenerateStringKey"]] = password
        return json.dumps(data)

    @classmethod
    def create(cls, name: str, properties: dict[str, Any], region: str) -> _StandIn:
        arguments = {"Name": properties.get("Name", name), "SecretString": cls._value(properties, region)}
        if properties.get("Description"):
            arguments["Description"] = properties["Description"]
        arn = _client("secretsmanager", region).create_secret(**arguments)["ARN"]
        return cls(arn, properties, Id=arn)

    def update(self, properties: dict[str, Any], region: str) -> _StandIn:
        secrets = _client("secretsmanager", region)
        if properties.get("Description") != self.properties.get("Description"):
            secrets.update_secret(SecretId=self.physical_resource_id, Description=properties.get("Description", ""))
        value_spec = ("SecretString", "GenerateSecretString")
        if any(properties.get(key) != self.properties.get(key) for key in value_spec):
            secrets.put_secret_value(SecretId=self.physical_resource_id, SecretString=self._value(properties, region))
        return type(self)(self.physical_resource_id, properties, Id=self.physical_resource_id)

    def delete(self, account_id: str, region_name: str) -> None:
        _client("secretsmanager", region_name).delete_secret(SecretId=self.physical_resource_id)


class _RestApi(_StandIn):
    """rest-api-body."""

    resource_type = "AWS::ApiGateway::RestApi"
    attributes = ("RootResourceId", "RestApiId")

    @staticmethod
    def _apply_body(api_id: str, body: dict[str, Any], region: str) -> None:
        apigateway = _client("apigateway", region)
        apigateway.put_rest_api(restApiId=api_id, mode="overwrite", body=json.dumps(body).encode())
        for kind, response in body.get("x-amazon-apigateway-gateway-responses", {}).items():
            apigateway.put_gateway_response(
                restApiId=api_id,
                responseType=kind,
                statusCode=str(response["statusCode"]),
                responseParameters=response.get("responseParameters", {}),
                responseTemplates=response.get("responseTemplates", {}),
            )

    @classmethod
    def create(cls, name: str, properties: dict[str, Any], region: str) -> _StandIn:
        body = properties["Body"]
        arguments: dict[str, Any] = {"name": properties.get("Name") or body["info"]["title"]}
        if "x-amazon-apigateway-policy" in body:
            arguments["policy"] = json.dumps(body["x-amazon-apigateway-policy"])
        if "EndpointConfiguration" in properties:
            arguments["endpointConfiguration"] = {"types": properties["EndpointConfiguration"]["Types"]}
        api = _client("apigateway", region).create_rest_api(**arguments)
        cls._apply_body(api["id"], body, region)
        return cls(api["id"], properties, RootResourceId=api["rootResourceId"], RestApiId=api["id"])

    def update(self, properties: dict[str, Any], region: str) -> _StandIn:
        body = properties["Body"]
        policy = json.dumps(body.get("x-amazon-apigateway-policy", ""))
        _client("apigateway", region).update_rest_api(
            restApiId=self.physical_resource_id, patchOperations=[{"op": "replace", "path": "/policy", "value": policy}]
        )
        self._apply_body(self.physical_resource_id, body, region)
        return type(self)(self.physical_resource_id, properties, **self._attributes)


class _Stage(_StandIn):
    """api-stage."""

    resource_type = "AWS::ApiGateway::Stage"
    name_property = "StageName"

    @staticmethod
    def _method_settings(properties: dict[str, Any]) -> list[dict[str, str]]:
        operations = []
        for setting in properties.get("MethodSettings", []):
            resource = setting["ResourcePath"].lstrip("/").replace("/", "~1") or "~1"
            prefix = f"/{resource}/{setting['HttpMethod']}"
            for key, path in (("ThrottlingRateLimit", "rateLimit"), ("ThrottlingBurstLimit", "burstLimit")):
                if key in setting:
                    value = str(setting[key])
                    operations.append({"op": "replace", "path": f"{prefix}/throttling/{path}", "value": value})
        return operations

    @classmethod
    def create(cls, name: str, properties: dict[str, Any], region: str) -> _StandIn:
        if properties.get("AccessLogSetting"):
            raise NotImplementedError("AccessLogSetting is not rehearsed (see NOT_REHEARSED)")
        apigateway = _client("apigateway", region)
        api_id, stage = properties["RestApiId"], properties["StageName"]
        apigateway.create_stage(
            restApiId=api_id,
            stageName=stage,
            deploymentId=properties["DeploymentId"],
            tracingEnabled=bool(properties.get("TracingEnabled", False)),
        )
        operations = cls._method_settings(properties)
        if operations:
            apigateway.update_stage(restApiId=api_id, stageName=stage, patchOperations=operations)
        return cls(stage, properties)

    def update(self, properties: dict[str, Any], region: str) -> _StandIn:
        assert properties["StageName"] == self.properties["StageName"], "a renamed stage is a replacement"
        operations = [{"op": "replace", "path": "/deploymentId", "value": properties["DeploymentId"]}]
        _client("apigateway", region).update_stage(
            restApiId=properties["RestApiId"],
            stageName=properties["StageName"],
            patchOperations=operations + self._method_settings(properties),
        )
        return type(self)(self.physical_resource_id, properties)


class _LambdaFunction:
    """lambda-function-layers: moto's function model, then the Layers it leaves out."""

    resource_type = "AWS::Lambda::Function"
    name_property = "FunctionName"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return bool(MotoLambdaFunction.has_cfn_attr(attr))

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **kw: Any
    ) -> Any:
        function = MotoLambdaFunction.create_from_cloudformation_json(
            resource_name, cloudformation_json, account_id, region_name, **kw
        )
        layers = cloudformation_json["Properties"].get("Layers")
        if layers:
            _client("lambda", region_name).update_function_configuration(
                FunctionName=function.function_name, Layers=layers
            )
        return function

    @classmethod
    def update_from_cloudformation_json(cls, **kwargs: Any) -> Any:
        return MotoLambdaFunction.update_from_cloudformation_json(**kwargs)  # applies Layers itself

    @classmethod
    def delete_from_cloudformation_json(cls, *args: Any) -> None:
        MotoLambdaFunction.delete_from_cloudformation_json(*args)


class _KmsKey:
    """kms-key-policy-json."""

    resource_type = "AWS::KMS::Key"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return bool(MotoKmsKey.has_cfn_attr(attr))

    @staticmethod
    def _with_json_policy(cloudformation_json: dict[str, Any]) -> dict[str, Any]:
        patched = copy.deepcopy(cloudformation_json)
        policy = patched["Properties"].get("KeyPolicy")
        if isinstance(policy, dict):
            patched["Properties"]["KeyPolicy"] = json.dumps(policy)
        return patched

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **kw: Any
    ) -> Any:
        return MotoKmsKey.create_from_cloudformation_json(
            resource_name, cls._with_json_policy(cloudformation_json), account_id, region_name, **kw
        )

    @classmethod
    def update_from_cloudformation_json(cls, **kwargs: Any) -> Any:
        kwargs["cloudformation_json"] = cls._with_json_policy(kwargs["cloudformation_json"])
        return MotoKmsKey.update_from_cloudformation_json(**kwargs)

    @classmethod
    def delete_from_cloudformation_json(cls, *args: Any) -> None:
        MotoKmsKey.delete_from_cloudformation_json(*args)


class _QueuePolicy(_StandIn):
    """sqs-queue-policy."""

    resource_type = "AWS::SQS::QueuePolicy"

    @classmethod
    def create(cls, name: str, properties: dict[str, Any], region: str) -> _StandIn:
        for url in properties["Queues"]:
            _client("sqs", region).set_queue_attributes(
                QueueUrl=url, Attributes={"Policy": json.dumps(properties["PolicyDocument"])}
            )
        return cls(name, properties)

    def update(self, properties: dict[str, Any], region: str) -> _StandIn:
        return self.create(self.physical_resource_id, properties, region)


class _Subscription(_StandIn):
    """sns-subscription."""

    resource_type = "AWS::SNS::Subscription"

    @classmethod
    def create(cls, name: str, properties: dict[str, Any], region: str) -> _StandIn:
        arn = _client("sns", region).subscribe(
            TopicArn=properties["TopicArn"],
            Protocol=properties["Protocol"],
            Endpoint=properties["Endpoint"],
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        return cls(arn, properties)

    def delete(self, account_id: str, region_name: str) -> None:
        _client("sns", region_name).unsubscribe(SubscriptionArn=self.physical_resource_id)


class _Alarm(_StandIn):
    """cloudwatch-alarm."""

    resource_type = "AWS::CloudWatch::Alarm"
    name_property = "AlarmName"
    attributes = ("Arn",)

    @classmethod
    def create(cls, name: str, properties: dict[str, Any], region: str) -> _StandIn:
        arguments = {"AlarmName": name, **properties}
        cloudwatch = _client("cloudwatch", region)
        cloudwatch.put_metric_alarm(**arguments)
        (alarm,) = cloudwatch.describe_alarms(AlarmNames=[arguments["AlarmName"]])["MetricAlarms"]
        return cls(arguments["AlarmName"], properties, Arn=alarm["AlarmArn"])

    def update(self, properties: dict[str, Any], region: str) -> _StandIn:
        return self.create(self.physical_resource_id, properties, region)

    def delete(self, account_id: str, region_name: str) -> None:
        _client("cloudwatch", region_name).delete_alarms(AlarmNames=[self.physical_resource_id])


_MODELS: tuple[Any, ...] = (
    _FifoQueue,
    _Secret,
    _RestApi,
    _Stage,
    _LambdaFunction,
    _KmsKey,
    _QueuePolicy,
    _Subscription,
    _Alarm,
)
# The stand-ins for types moto has no CloudFormation model for (the RestApi stand-in replaces one that ignores Body).
_MISSING_IN_MOTO = {c.resource_type for c in _MODELS if issubclass(c, _StandIn)} - {"AWS::ApiGateway::RestApi"}
# moto as installed, before any patch (the module's fixtures patch it while its tests run).
_MOTO_OWN_TYPES = frozenset(moto_cfn.get_model_map())
_MOTO_HAS_REFS = {
    "AWS::ApiGateway::Deployment": hasattr(MotoApiDeployment, "physical_resource_id"),
    "AWS::Lambda::LayerVersion": hasattr(MotoLayerVersion, "physical_resource_id"),
}


_SUB_VARIABLE = re.compile(r"\$\{([^!}][^}]*)\}")


def _references(template: Any) -> list[str]:
    """update-sees-sub-references: moto's get_references_from_template, plus the names in Fn::Sub strings."""
    found: list[str] = []
    if isinstance(template, dict):
        for key, value in template.items():
            if key == "Ref":
                found.append(value)
                continue
            if key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found.extend(name.split(".")[0] for name in _SUB_VARIABLE.findall(text))
            found.extend(_references(value))
    elif isinstance(template, list):
        for item in template:
            found.extend(_references(item))
    return found


@pytest.fixture(scope="module")
def moto_patched() -> Iterator[None]:
    """moto's CloudFormation with MOTO_PATCHES applied; undone when the module ends."""
    assert {p.target for p in MOTO_PATCHES} == {c.resource_type for c in _MODELS} | {
        "AWS::ApiGateway::Deployment",
        "AWS::Lambda::LayerVersion",
        "AWS::Events::EventBus",
        "UpdateStack",
    }, "every patch is listed in MOTO_PATCHES, and only those"
    own_models, own_names = moto_cfn.get_model_map, moto_cfn.get_name_type_map
    names = {c.resource_type: c.name_property for c in _MODELS if getattr(c, "name_property", "")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(moto_cfn, "get_model_map", lambda: {**own_models(), **{c.resource_type: c for c in _MODELS}})
        patch.setattr(
            moto_cfn,
            "get_name_type_map",
            lambda: {**own_names(), **names},
        )
        # api-deployment-ref and lambda-layer-ref: Ref gives the id / ARN, not the Python object.
        patch.setattr(MotoApiDeployment, "physical_resource_id", property(lambda self: self.id), raising=False)
        patch.setattr(MotoLayerVersion, "physical_resource_id", property(lambda self: self.arn), raising=False)
        # event-bus-ref: Ref gives the bus name.
        patch.setattr(MotoEventBus, "physical_resource_id", property(lambda self: self.name), raising=False)
        patch.setattr(moto_cfn, "get_references_from_template", _references)
        yield


# == the deploy ============================================================================================


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def _zip_directory(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = zipfile.ZipInfo(str(path.relative_to(directory)), date_time=(1980, 1, 1, 0, 0, 0))
                archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def sam_package(template: dict[str, Any]) -> dict[str, Any]:
    """What `sam package` does: each local CodeUri/ContentUri zipped, uploaded, replaced by its s3:// URI."""
    packaged = copy.deepcopy(template)
    s3 = _client("s3", REGION)
    for resource in packaged["Resources"].values():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
                body = _zip_directory(REPO_ROOT / properties[key])
                object_key = hashlib.md5(body).hexdigest()
                s3.put_object(Bucket=BUCKET, Key=object_key, Body=body)
                properties[key] = f"s3://{BUCKET}/{object_key}"
    return packaged


def translate(packaged: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """The AWS::Serverless transform, as tests/unit/test_template.py runs it."""
    translated: dict[str, Any] = transform(copy.deepcopy(packaged), parameters, _NoManagedPolicies())
    return translated


def _as_cfn_parameters(parameters: dict[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]


@dataclass
class Deployed:
    name: str
    parameters: dict[str, str]
    template: dict[str, Any]  # the translated template CloudFormation created
    packaged: dict[str, Any]
    emulator: PluggyEmulator

    def stack(self) -> dict[str, Any]:
        stack: dict[str, Any] = _client("cloudformation", REGION).describe_stacks(StackName=self.name)["Stacks"][0]
        return stack

    def outputs(self) -> dict[str, str]:
        return {o["OutputKey"]: o["OutputValue"] for o in self.stack().get("Outputs", [])}

    def physical_ids(self) -> dict[str, str]:
        summaries = _client("cloudformation", REGION).list_stack_resources(StackName=self.name)
        return {
            s["LogicalResourceId"]: s["PhysicalResourceId"]
            for s in summaries["StackResourceSummaries"]
            if s.get("LogicalResourceId")
        }

    def secret_json(self, output: str) -> dict[str, Any]:
        raw = _client("secretsmanager", REGION).get_secret_value(SecretId=self.outputs()[output])["SecretString"]
        value: dict[str, Any] = json.loads(raw)
        return value

    def function_environment(self, logical_id: str) -> dict[str, str]:
        name = self.physical_ids()[logical_id]
        configuration = _client("lambda", REGION).get_function_configuration(FunctionName=name)
        return {k: str(v) for k, v in configuration["Environment"]["Variables"].items()}

    def deploy_update(self, parameters: dict[str, str]) -> None:
        """A later `sam deploy`: the same package, transformed with the new values, as UpdateStack."""
        template = translate(self.packaged, parameters)
        _client("cloudformation", REGION).update_stack(
            StackName=self.name,
            TemplateBody=json.dumps(template),
            Parameters=_as_cfn_parameters(parameters),
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        self.parameters, self.template = parameters, template


def first_deploy_parameters(emulator: PluggyEmulator) -> dict[str, str]:
    return {
        "Stage": "prod",
        "PluggyClientId": CLIENT_ID,
        "AllowedSourceCidrs": PLUGGY_IP,
        "AlarmEmail": ALARM_EMAIL,
        "PluggyApiBaseUrl": emulator.base_url,
    }


def deploy(name: str, emulator: PluggyEmulator, parameters: dict[str, str] | None = None) -> Deployed:
    """`sam package` + `sam deploy` of template.yaml as stack `name` (CreateStack)."""
    parameters = parameters or first_deploy_parameters(emulator)
    packaged = sam_package(load_template())
    template = translate(packaged, parameters)
    _client("cloudformation", REGION).create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=_as_cfn_parameters(parameters),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    return Deployed(name, parameters, template, packaged, emulator)


@pytest.fixture(autouse=True)
def _isolated_env() -> Iterator[None]:
    """Replaces conftest's: the module's moto and environment are set up once, in `aws` below."""
    yield


@pytest.fixture(scope="module")
def aws(moto_patched: None) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as env:
        for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "PLUGGY_CLIENT_ID", "PLUGGY_CLIENT_SECRET"):
            env.delenv(key, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        env.setenv("AWS_REGION", REGION)
        with mock_aws():
            _client("s3", REGION).create_bucket(Bucket=BUCKET)
            yield


@pytest.fixture(scope="module")
def emulator() -> Iterator[PluggyEmulator]:
    pluggy = PluggyEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    pluggy.start()
    try:
        yield pluggy
    finally:
        pluggy.stop()


@pytest.fixture(scope="module")
def deployed(aws: None, emulator: PluggyEmulator) -> Deployed:
    started = time.monotonic()
    stack = deploy("pluggy-pipeline-rehearsal", emulator)
    assert time.monotonic() - started < 15
    return stack


def run(capsys: pytest.CaptureFixture[str], deployed: Deployed, *argv: str) -> tuple[int, str, str]:
    """The CLI, in process; no secret of the stack or of Pluggy may appear in what it prints."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    secrets = [CLIENT_SECRET, deployed.secret_json("WebhookSecretArn")["current"]]
    for secret in secrets:
        assert secret not in out and secret not in err, f"`{' '.join(argv)}` printed a secret"
    return code, out, err


def _webhooks_at_pluggy(emulator: PluggyEmulator) -> list[dict[str, Any]]:
    client = PluggyClient(emulator.base_url, lambda: (CLIENT_ID, CLIENT_SECRET))
    try:
        return client.list_webhooks()
    finally:
        client.close()


# == the checks =============================================================================================


def test_the_stack_is_created_with_every_resource(deployed: Deployed) -> None:
    stack = deployed.stack()
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}["PluggyClientId"] == CLIENT_ID
    # moto skips a resource type it has no model for with nothing but a log line: every resource the
    # template creates (conditions applied) must have a physical id, or a patch is missing.
    # No user pool by default: no frontend connect-token API.
    conditions = {"HasCustomDomain": False, "ApiAccessLogs": False, "HasAlarmEmail": True}
    conditions["HasConnectTokenUserPool"] = False
    expected = {
        name
        for name, resource in deployed.template["Resources"].items()
        if conditions.get(resource.get("Condition", ""), True)
    }
    physical = deployed.physical_ids()
    assert set(physical) == expected
    # moto's Lambda permissions have no physical id (the wiring test finds them in the function's policy).
    unnamed = {n for n in expected if not physical[n]}
    assert {deployed.template["Resources"][n]["Type"] for n in unnamed} <= {"AWS::Lambda::Permission"}, unnamed


def test_every_output_a_user_needs_points_at_a_real_resource(deployed: Deployed) -> None:
    outputs = deployed.outputs()
    assert set(USER_OUTPUTS) <= set(outputs), set(USER_OUTPUTS) - set(outputs)
    physical = deployed.physical_ids()
    ddb, sqs = _client("dynamodb", REGION), _client("sqs", REGION)
    for output, logical in (("EventsTableName", "EventsTable"), ("RecordsTableName", "RecordsTable")):
        assert outputs[output] == physical[logical]
        assert ddb.describe_table(TableName=outputs[output])["Table"]["TableStatus"] == "ACTIVE"
    for output in ("EventQueueUrl", "EventDeadLetterQueueUrl"):
        attributes = sqs.get_queue_attributes(QueueUrl=outputs[output], AttributeNames=["All"])["Attributes"]
        assert attributes["FifoQueue"] == "true" and outputs[output].endswith(".fifo")
    for output in ("WebhookSecretArn", "PluggyCredentialsSecretArn"):
        assert _client("secretsmanager", REGION).describe_secret(SecretId=outputs[output])["ARN"] == outputs[output]
    assert _client("sns", REGION).get_topic_attributes(TopicArn=outputs["AlarmTopicArn"])["Attributes"]
    assert outputs["WebhookSecretHeaderName"] == "X-Webhook-Secret"

    # The webhook URL is this stack's API, stage and route.
    url = urlsplit(outputs["WebhookUrl"])
    assert url.scheme == "https" and url.hostname == f"{physical['WebhookApi']}.execute-api.{REGION}.amazonaws.com"
    assert url.path == "/prod/webhooks/pluggy"
    assert outputs["WebhookUrlWithTokenPattern"] == outputs["WebhookUrl"] + "/{token}"
    apigateway = _client("apigateway", REGION)
    api_id = physical["WebhookApi"]
    assert [s["stageName"] for s in apigateway.get_stages(restApiId=api_id)["item"]] == ["prod"]
    routes = {r["path"]: set(r.get("resourceMethods", {})) for r in apigateway.get_resources(restApiId=api_id)["items"]}
    assert {"POST"} <= routes["/webhooks/pluggy"] and {"POST"} <= routes["/webhooks/pluggy/{token}"]


def test_the_deployed_pieces_are_wired_to_each_other(deployed: Deployed) -> None:
    outputs, physical = deployed.outputs(), deployed.physical_ids()
    receiver = deployed.function_environment("ReceiverFunction")
    processor = deployed.function_environment("ProcessorFunction")
    assert receiver["EVENTS_TABLE_NAME"] == processor["EVENTS_TABLE_NAME"] == outputs["EventsTableName"]
    assert receiver["EVENT_QUEUE_URL"] == outputs["EventQueueUrl"]
    assert receiver["WEBHOOK_SECRET_ARN"] == outputs["WebhookSecretArn"]
    assert receiver["WEBHOOK_SECRET_HEADER"] == outputs["WebhookSecretHeaderName"]
    assert receiver["PLUGGY_CLIENT_ID"] == CLIENT_ID and receiver["ALLOWED_SOURCE_CIDRS"] == PLUGGY_IP
    assert processor["RECORDS_TABLE_NAME"] == outputs["RecordsTableName"]
    assert processor["EVENT_DLQ_URL"] == outputs["EventDeadLetterQueueUrl"]
    assert processor["PLUGGY_CREDENTIALS_SECRET_ARN"] == outputs["PluggyCredentialsSecretArn"]
    assert processor["PLUGGY_BASE_URL"] == deployed.emulator.base_url
    assert receiver["AWS_ENDPOINT_URL"] == processor["AWS_ENDPOINT_URL"] == ""

    lam = _client("lambda", REGION)
    layer_arn = physical[next(n for n in physical if n.startswith("CommonLayer"))]
    for function in (
        "ReceiverFunction",
        "ProcessorFunction",
        "PublisherFunction",
        "ConnectTokenFunction",
        "ReadApiFunction",
    ):
        configuration = lam.get_function_configuration(FunctionName=physical[function])
        assert [layer["Arn"] for layer in configuration["Layers"]] == [layer_arn], function
        assert configuration["Role"].endswith(physical[function.replace("Function", "Role")])
    (mapping,) = lam.list_event_source_mappings(FunctionName=physical["ProcessorFunction"])["EventSourceMappings"]
    sqs = _client("sqs", REGION)
    queue = sqs.get_queue_attributes(QueueUrl=outputs["EventQueueUrl"], AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=outputs["EventDeadLetterQueueUrl"], AttributeNames=["QueueArn"])
    assert mapping["EventSourceArn"] == queue["QueueArn"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert json.loads(queue["RedrivePolicy"])["deadLetterTargetArn"] == dlq_arn["Attributes"]["QueueArn"]

    # RecordsTable's stream feeds the publisher, which puts on the stack's bus.
    (stream_mapping,) = lam.list_event_source_mappings(FunctionName=physical["PublisherFunction"])[
        "EventSourceMappings"
    ]
    table = _client("dynamodb", REGION).describe_table(TableName=outputs["RecordsTableName"])["Table"]
    assert stream_mapping["EventSourceArn"] == table["LatestStreamArn"]
    assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    publisher = lam.get_function_configuration(FunctionName=physical["PublisherFunction"])
    assert publisher["Environment"]["Variables"]["CHANGE_EVENT_BUS_NAME"] == outputs["ChangeEventBusName"]
    assert (
        _client("events", REGION).describe_event_bus(Name=outputs["ChangeEventBusName"])["Arn"]
        == outputs["ChangeEventBusArn"]
    )

    # The API calls the receiver; only Pluggy's address may (resource policy).
    apigateway = _client("apigateway", REGION)
    api_id = physical["WebhookApi"]
    post = next(r for r in apigateway.get_resources(restApiId=api_id)["items"] if r["path"] == "/webhooks/pluggy")
    integration = apigateway.get_integration(restApiId=api_id, resourceId=post["id"], httpMethod="POST")
    assert integration["type"].upper() == "AWS_PROXY"
    assert f":function:{physical['ReceiverFunction']}/" in integration["uri"]
    permissions = json.loads(lam.get_policy(FunctionName=physical["ReceiverFunction"])["Policy"])["Statement"]
    assert len(permissions) == 4  # POST and ANY, on both routes
    for permission in permissions:
        assert permission["Principal"] == {"Service": "apigateway.amazonaws.com"}
        assert f":{api_id}/" in permission["Condition"]["ArnLike"]["AWS:SourceArn"]
    policy = json.loads(apigateway.get_rest_api(restApiId=api_id)["policy"])
    deny = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"]["NotIpAddress"]["aws:SourceIp"] == [PLUGGY_IP]
    responses = apigateway.get_gateway_responses(restApiId=api_id)["items"]
    assert any(r["responseType"] == "MISSING_AUTHENTICATION_TOKEN" and r["statusCode"] == "404" for r in responses)

    # The hourly reconciliation reaches the queue, and the queue lets exactly that rule send.
    events = _client("events", REGION)
    (target,) = events.list_targets_by_rule(Rule=physical["ReconcileSchedule"])["Targets"]
    assert target["Arn"] == queue["QueueArn"] and target["SqsParameters"] == {"MessageGroupId": "reconcile"}
    rule_arn = events.describe_rule(Name=physical["ReconcileSchedule"])["Arn"]
    (statement,) = json.loads(queue["Policy"])["Statement"]
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == rule_arn

    # Alarms go to the topic, the topic to the e-mail, and CloudWatch may use the topic's key.
    alarms = _client("cloudwatch", REGION).describe_alarms()["MetricAlarms"]
    assert len(alarms) == 10 and all(a["AlarmActions"] == [outputs["AlarmTopicArn"]] for a in alarms)
    sns = _client("sns", REGION)
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=outputs["AlarmTopicArn"])["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", ALARM_EMAIL)]
    key_id = sns.get_topic_attributes(TopicArn=outputs["AlarmTopicArn"])["Attributes"]["KmsMasterKeyId"]
    assert key_id == physical["AlarmTopicKey"]
    key_policy = json.loads(_client("kms", REGION).get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert any(s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} for s in key_policy["Statement"])


def test_the_stack_generated_its_secrets(deployed: Deployed) -> None:
    webhook = deployed.secret_json("WebhookSecretArn")
    assert set(webhook) == {"current"} and len(webhook["current"]) == 48 and webhook["current"].isalnum()
    credentials = deployed.secret_json("PluggyCredentialsSecretArn")
    # A placeholder until `secrets put` (which takes clientId from the PluggyClientId parameter): the template
    # stays constant, since CloudFormation regenerates a secret whose GenerateSecretString changes.
    assert set(credentials) == {"clientSecret"} and len(credentials["clientSecret"]) == 32


def test_secrets_put_then_register_against_the_stack(capsys: pytest.CaptureFixture[str], deployed: Deployed) -> None:
    placeholder = deployed.secret_json("PluggyCredentialsSecretArn")["clientSecret"]
    # Before: Pluggy refuses the placeholder, and register says where the real secret goes.
    code, _, err = run(capsys, deployed, "register", "--stack", deployed.name, "--region", REGION)
    assert code == 1 and "secrets put --stack" in err and "PluggyCredentialsSecret" in err
    assert placeholder not in err

    with pytest.MonkeyPatch.context() as env:
        env.setattr("sys.stdin", io.StringIO(CLIENT_SECRET + "\n"))
        code, out, err = run(capsys, deployed, "secrets", "put", "--stack", deployed.name, "--from-stdin")
    assert code == 0, err
    assert out.startswith(f"stored: Pluggy credentials in stack {deployed.name} ({REGION})")
    assert f"clientId      {CLIENT_ID} (the stack's PluggyClientId parameter)" in out and placeholder not in out
    assert deployed.secret_json("PluggyCredentialsSecretArn") == {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}

    code, out, err = run(capsys, deployed, "secrets", "show", "--stack", deployed.name)
    assert code == 0, err
    assert f"clientId      {CLIENT_ID}" in out and "clientSecret  ******** (set)" in out
    assert "current       ******** (set)" in out

    # register with no PLUGGY_CLIENT_* in the environment: the credentials come from the stack's secret.
    code, out, err = run(capsys, deployed, "register", "--stack", deployed.name, "--region", REGION)
    assert code == 0, err
    outputs = deployed.outputs()
    assert out.startswith("created: webhook ") and f"on Pluggy ({deployed.emulator.base_url})" in out
    assert outputs["WebhookUrl"] in out
    (webhook,) = _webhooks_at_pluggy(deployed.emulator)
    assert webhook["url"] == outputs["WebhookUrl"] and webhook["event"] == "all"
    current = deployed.secret_json("WebhookSecretArn")["current"]
    assert webhook["headers"] == {outputs["WebhookSecretHeaderName"]: current}

    code, out, _ = run(capsys, deployed, "register", "--stack", deployed.name)
    assert code == 0 and out.startswith("unchanged: webhook ")
    code, out, _ = run(capsys, deployed, "events", "list", "--stack", deployed.name, "--json")
    assert code == 0 and json.loads(out) == []  # the CLI reads the stack's own tables


def test_a_second_deploy_updates_the_stack_in_place(capsys: pytest.CaptureFixture[str], deployed: Deployed) -> None:
    before = deployed.outputs()
    webhook_secret = deployed.secret_json("WebhookSecretArn")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PLUGGY_CLIENT_SECRET", CLIENT_SECRET)
        code, _, err = run(capsys, deployed, "secrets", "put", "--stack", deployed.name)
    assert code == 0, err

    parameters = {**deployed.parameters, "AllowedSourceCidrs": f"{PLUGGY_IP},{OFFICE_CIDR}"}
    deployed.deploy_update(parameters)

    assert deployed.stack()["StackStatus"] == "UPDATE_COMPLETE"
    assert deployed.outputs() == before  # same API, tables, queues and secrets: nothing was replaced
    receiver = deployed.function_environment("ReceiverFunction")
    assert receiver["ALLOWED_SOURCE_CIDRS"] == f"{PLUGGY_IP},{OFFICE_CIDR}"
    apigateway = _client("apigateway", REGION)
    api_id = deployed.physical_ids()["WebhookApi"]
    policy = json.loads(apigateway.get_rest_api(restApiId=api_id)["policy"])
    (deny,) = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"]["NotIpAddress"]["aws:SourceIp"] == [PLUGGY_IP, OFFICE_CIDR]
    (stage,) = apigateway.get_stages(restApiId=api_id)["item"]
    deployment = next(n for n in deployed.template["Resources"] if n.startswith("WebhookApiDeployment"))
    assert stage["deploymentId"] == deployed.physical_ids()[deployment]  # the new API definition is live
    # What the user set up after the first deploy survives the second.
    assert deployed.secret_json("WebhookSecretArn") == webhook_secret
    assert deployed.secret_json("PluggyCredentialsSecretArn")["clientSecret"] == CLIENT_SECRET
    code, out, err = run(capsys, deployed, "register", "--stack", deployed.name)
    assert code == 0 and out.startswith("unchanged: webhook "), out + err


def test_changing_the_client_id_keeps_the_stored_client_secret(
    capsys: pytest.CaptureFixture[str], aws: None, emulator: PluggyEmulator
) -> None:
    stack = deploy("pluggy-pipeline-client-id-change", emulator)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PLUGGY_CLIENT_SECRET", CLIENT_SECRET)
        assert main(["secrets", "put", "--stack", stack.name]) == 0
    capsys.readouterr()
    new_client_id = str(uuid.uuid4())
    stack.deploy_update({**stack.parameters, "PluggyClientId": new_client_id})
    assert stack.stack()["StackStatus"] == "UPDATE_COMPLETE"
    assert stack.secret_json("PluggyCredentialsSecretArn")["clientSecret"] == CLIENT_SECRET


def test_each_stand_in_covers_a_type_moto_still_lacks() -> None:
    """When a moto upgrade adds one of these models, its stand-in (and MOTO_PATCHES entry) should go."""
    assert not (_MISSING_IN_MOTO & _MOTO_OWN_TYPES), _MISSING_IN_MOTO & _MOTO_OWN_TYPES
    assert not any(_MOTO_HAS_REFS.values()), _MOTO_HAS_REFS
    assert "Body" not in inspect.getsource(MotoRestApi.create_from_cloudformation_json)
