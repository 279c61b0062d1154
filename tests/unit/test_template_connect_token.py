"""The connect-token routes in the SAM-transformed template: AWS_IAM always, the Cognito API only when asked."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.unit.test_template import SOURCE, _transformed

POOL = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Ab12Cd34E"


def _transformed_in_region(parameters: dict[str, str]) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # SAM's translator needs one; module fixtures run first
        return _transformed(parameters)


@pytest.fixture(scope="module")
def default() -> dict[str, Any]:
    return _transformed_in_region({})


@pytest.fixture(scope="module")
def with_pool() -> dict[str, Any]:
    pool = {"ConnectTokenUserPoolArn": POOL, "ConnectTokenAllowedOrigin": "https://app.example.com"}
    return _transformed_in_region(pool)


def _frontend(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in stack["Resources"].items() if k.startswith("ConnectTokenFrontend")}


def test_the_iam_route_is_on_the_webhook_api_and_api_gateway_invokes_the_function(default: dict[str, Any]) -> None:
    operation = default["Resources"]["WebhookApi"]["Properties"]["Body"]["paths"]["/connect-token"]["post"]
    assert operation["security"] == [{"AWS_IAM": []}]
    # Without InvokeRole NONE, SAM passes the caller's credentials and every caller needs lambda:InvokeFunction.
    assert "credentials" not in operation["x-amazon-apigateway-integration"]


@pytest.mark.parametrize("fixture", ["default", "with_pool"])
def test_every_frontend_resource_exists_only_with_a_user_pool(fixture: str, request: pytest.FixtureRequest) -> None:
    stack = request.getfixturevalue(fixture)
    frontend = _frontend(stack)
    types = {v["Type"] for v in frontend.values()}
    assert {"AWS::ApiGateway::RestApi", "AWS::ApiGateway::Stage", "AWS::Lambda::Function"} <= types
    assert {v.get("Condition") for v in frontend.values()} == {"HasConnectTokenUserPool"}
    assert stack["Outputs"]["ConnectTokenFrontendUrl"]["Condition"] == "HasConnectTokenUserPool"
    assert stack["Conditions"]["HasConnectTokenUserPool"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ConnectTokenUserPoolArn"}, ""]}]
    }


def test_the_frontend_route_needs_a_user_of_the_pool(with_pool: dict[str, Any]) -> None:
    body = with_pool["Resources"]["ConnectTokenFrontendApi"]["Properties"]["Body"]
    scheme = body["components"]["securitySchemes"]["ConnectTokenUserPool"]
    authorizer = scheme["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "cognito_user_pools"
    assert authorizer["providerARNs"] == [{"Fn::If": ["HasConnectTokenUserPool", POOL, {"Ref": "AWS::NoValue"}]}]
    path = body["paths"]["/connect-token"]["Fn::If"][1]
    post = path["post"]["Fn::If"][1]
    assert post["security"] == [{"ConnectTokenUserPool": []}]
    assert "security" not in path["options"]  # the CORS preflight carries no token
    responses = body["x-amazon-apigateway-gateway-responses"]
    for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
        origin = responses[kind]["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"]
        assert origin == {"Fn::Sub": "'${ConnectTokenAllowedOrigin}'"}


def test_the_frontend_function_requires_a_user_and_sends_webhooks_to_the_webhook_api(
    with_pool: dict[str, Any],
) -> None:
    function = with_pool["Resources"]["ConnectTokenFrontendFunction"]["Properties"]
    variables = function["Environment"]["Variables"]
    assert variables["REQUIRE_USER_CLAIMS"] == "true"
    assert variables["CORS_ALLOW_ORIGIN"] == {"Ref": "ConnectTokenAllowedOrigin"}
    condition, custom, stage_url = variables["WEBHOOK_BASE_URL"]["Fn::If"]
    assert condition == "HasCustomDomain" and custom == {"Fn::Sub": "https://${CustomDomainName}"}
    assert "${WebhookApi}.execute-api" in stage_url["Fn::Sub"] and stage_url["Fn::Sub"].endswith("/${Stage}")
    assert function["Role"] == {"Fn::GetAtt": ["ConnectTokenRole", "Arn"]}


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("", True),
        (POOL, True),
        ("arn:aws-cn:cognito-idp:cn-north-1:123456789012:userpool/cn-north-1_x", True),
        ("us-east-1_Ab12Cd34E", False),
        ("arn:aws:iam::123456789012:role/x", False),
    ],
)
def test_the_user_pool_parameter_takes_an_arn_or_nothing(value: str, accepted: bool) -> None:
    pattern = SOURCE["Parameters"]["ConnectTokenUserPoolArn"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is accepted


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("*", True),
        ("https://app.example.com", True),
        ("http://localhost:5173", True),
        ("https://app.example.com/", False),
        ("'*'", False),
        ("app.example.com", False),
    ],
)
def test_the_allowed_origin_parameter_is_one_origin(value: str, accepted: bool) -> None:
    pattern = SOURCE["Parameters"]["ConnectTokenAllowedOrigin"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is accepted
