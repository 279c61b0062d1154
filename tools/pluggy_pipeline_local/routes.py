"""The app's routes of template.yaml's REST API, as the local front matches them.

Read from the template (each function's `Api` events on WebhookApi), so a route added there is served locally
without another list to keep in step. The receiver's webhook paths keep their own handling in stack.py (the
token route, 405s for other methods); these are the others: the connect-token and read API routes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pluggy_pipeline_local.template import resources_of_type

WEBHOOK_FUNCTION = "ReceiverFunction"


@dataclass(frozen=True, slots=True)
class Route:
    function: str  # logical id, e.g. ReadApiFunction
    method: str  # GET, POST, ... or ANY
    resource: str  # as API Gateway names it: /accounts/{accountId}/transactions
    iam: bool  # AWS_IAM authorization: a SigV4 signature by this account is required
    pattern: re.Pattern[str]

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method.upper()):
            return None
        found = self.pattern.fullmatch(path)
        return dict(found.groupdict()) if found else None


def _pattern(resource: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[A-Za-z0-9_]+\})", resource)
    regex = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(regex)


def app_routes(template: Mapping[str, Any], api: str = "WebhookApi") -> list[Route]:
    routes = []
    for logical, resource in resources_of_type(template, "AWS::Serverless::Function").items():
        if logical == WEBHOOK_FUNCTION or "Condition" in resource:  # conditional ones are off by default
            continue
        for event in (resource["Properties"].get("Events") or {}).values():
            properties = event.get("Properties", {})
            if event.get("Type") != "Api" or properties.get("RestApiId") != {"Ref": api}:
                continue
            authorizer = (properties.get("Auth") or {}).get("Authorizer")
            path, method = properties["Path"], str(properties["Method"]).upper()
            routes.append(Route(logical, method, path, authorizer == "AWS_IAM", _pattern(path)))
    return routes


def match(routes: list[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in routes:
        parameters = route.match(method, path)
        if parameters is not None:
            return route, parameters
    return None


def handler_folder(template: Mapping[str, Any], function: str) -> str:
    """functions/<folder>/ of a function, from its CodeUri."""
    code_uri = str(template["Resources"][function]["Properties"]["CodeUri"])
    return code_uri.rstrip("/").rsplit("/", 1)[-1]
