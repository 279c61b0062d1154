"""template.yaml as the single source of truth for local resources (tests, local stack, built invokes).

Reads the SAM template (CloudFormation short-form tags included) and creates every DynamoDB table and
SQS queue it declares, with the same keys, indexes, TTL and redrive settings, under generated names.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

_TAGS = {
    "!Ref": "Ref",
    "!GetAtt": "Fn::GetAtt",
    "!Sub": "Fn::Sub",
    "!If": "Fn::If",
    "!Equals": "Fn::Equals",
    "!Not": "Fn::Not",
    "!And": "Fn::And",
    "!Or": "Fn::Or",
    "!Join": "Fn::Join",
    "!Select": "Fn::Select",
    "!Split": "Fn::Split",
    "!FindInMap": "Fn::FindInMap",
    "!GetAZs": "Fn::GetAZs",
    "!ImportValue": "Fn::ImportValue",
    "!Base64": "Fn::Base64",
    "!Condition": "Condition",
}


class _CfnLoader(yaml.SafeLoader):
    pass


def _make_constructor(name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return construct


for _tag, _name in _TAGS.items():
    _CfnLoader.add_constructor(_tag, _make_constructor(_name))


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass with CFN tags only
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a template")
    return data


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template.get("Resources", {}).items()
        if resource.get("Type") == resource_type
    }


def parameter_defaults(template: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}


@dataclass
class LocalResources:
    """Physical names of the template's resources as created locally, by logical id."""

    tables: dict[str, str] = field(default_factory=dict)
    queue_urls: dict[str, str] = field(default_factory=dict)
    queue_arns: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # logical id -> ARN
    streams: dict[str, str] = field(default_factory=dict)  # table logical id -> its stream's ARN
    buses: dict[str, str] = field(default_factory=dict)  # EventBridge bus logical id -> name

    def ref(self, logical_id: str) -> str:
        """What CloudFormation's Ref returns for these resource types."""
        for mapping in (self.tables, self.queue_urls, self.secrets, self.buses):
            if logical_id in mapping:
                return mapping[logical_id]
        raise KeyError(logical_id)


def _table_kwargs(properties: Mapping[str, Any], name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if properties.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
    if properties.get("LocalSecondaryIndexes"):
        kwargs["LocalSecondaryIndexes"] = properties["LocalSecondaryIndexes"]
    stream = properties.get("StreamSpecification")
    if stream:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    return kwargs


def _queue_attributes(properties: Mapping[str, Any], resources: LocalResources) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for key in (
        "VisibilityTimeout",
        "MessageRetentionPeriod",
        "DelaySeconds",
        "ReceiveMessageWaitTimeSeconds",
        "DeduplicationScope",
        "FifoThroughputLimit",
    ):
        if key in properties:
            attributes[key] = str(properties[key])
    for key in ("FifoQueue", "ContentBasedDeduplication"):
        if key in properties:
            attributes[key] = "true" if properties[key] in (True, "true") else "false"
    redrive = properties.get("RedrivePolicy")
    if redrive:
        target = redrive["deadLetterTargetArn"]
        logical = target["Fn::GetAtt"][0] if isinstance(target, dict) else None
        arn = resources.queue_arns[logical] if logical else str(target)
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": arn, "maxReceiveCount": int(redrive["maxReceiveCount"])}
        )
    return attributes


def create_resources(
    template: Mapping[str, Any],
    *,
    dynamodb: Any,
    sqs: Any,
    secretsmanager: Any | None = None,
    events: Any | None = None,
    prefix: str | None = None,
    secret_values: Mapping[str, str] | None = None,
) -> LocalResources:
    """Create the template's tables (with their streams), queues (dead-letter queues first), secrets and
    EventBridge buses; return their names."""
    prefix = prefix or f"pp-{uuid.uuid4().hex[:8]}"
    resources = LocalResources()
    for logical, resource in resources_of_type(template, "AWS::DynamoDB::Table").items():
        name = f"{prefix}-{logical}"
        properties = resource["Properties"]
        created = dynamodb.create_table(**_table_kwargs(properties, name))["TableDescription"]
        if created.get("LatestStreamArn"):
            resources.streams[logical] = created["LatestStreamArn"]
        ttl = properties.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        resources.tables[logical] = name
    queues = resources_of_type(template, "AWS::SQS::Queue")
    # Queues without a redrive policy (the dead-letter queues) must exist before those pointing at them.
    for logical in sorted(queues, key=lambda q: "RedrivePolicy" in queues[q].get("Properties", {})):
        properties = queues[logical].get("Properties", {})
        # CloudFormation suffixes generated FIFO queue names with .fifo; SQS requires it.
        suffix = ".fifo" if properties.get("FifoQueue") in (True, "true") else ""
        name = f"{prefix}-{logical}{suffix}"
        url = sqs.create_queue(QueueName=name, Attributes=_queue_attributes(properties, resources))["QueueUrl"]
        resources.queue_urls[logical] = url
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        resources.queue_arns[logical] = arn
    if secretsmanager is not None:
        for logical in resources_of_type(template, "AWS::SecretsManager::Secret"):
            value = (secret_values or {}).get(logical, json.dumps({"current": uuid.uuid4().hex}))
            arn = secretsmanager.create_secret(Name=f"{prefix}-{logical}", SecretString=value)["ARN"]
            resources.secrets[logical] = arn
    if events is not None:
        for logical in resources_of_type(template, "AWS::Events::EventBus"):
            events.create_event_bus(Name=f"{prefix}-{logical}")
            resources.buses[logical] = f"{prefix}-{logical}"
    return resources


def function_environment(
    template: Mapping[str, Any],
    function: str,
    resources: LocalResources,
    parameters: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A function's environment as CloudFormation would resolve it (Globals merged, Refs resolved)."""
    values = {**parameter_defaults(template), **(parameters or {})}
    merged: dict[str, Any] = dict(
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    props = template["Resources"][function]["Properties"]
    merged.update(props.get("Environment", {}).get("Variables", {}))
    env: dict[str, str] = {}
    for key, value in merged.items():
        if isinstance(value, dict) and "Ref" in value:
            target = value["Ref"]
            env[key] = values[target] if target in values else resources.ref(target)
        elif isinstance(value, dict) and "Fn::GetAtt" in value:
            logical, attribute = value["Fn::GetAtt"]
            if attribute == "StreamArn":
                env[key] = resources.streams[logical]
            else:
                env[key] = resources.queue_arns[logical] if attribute == "Arn" else resources.ref(logical)
        else:
            env[key] = str(value)
    # Declared empty for `sam local --env-vars` only; in this process the caller's moto endpoint must stand.
    if not env.get("AWS_ENDPOINT_URL"):
        env.pop("AWS_ENDPOINT_URL", None)
    return env
