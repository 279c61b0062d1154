"""The app's routes of a stack (POST /connect-token, the read API), called as an app's backend calls them:
SigV4-signed with this account's credentials (AWS_IAM), the profile's for a deployed stack, the local stack's
fake ones for the local front (which checks the signature as API Gateway does)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from pluggy_pipeline_cli.targets import CliError, Target

_LOCAL_CREDENTIALS = Credentials("local", "local", "local")  # what moto and the local front accept


class AppApi:
    def __init__(self, target: Target, *, timeout: float = 15.0) -> None:
        if not target.api_base_url:
            raise CliError(f"{target.label} has no app API (ApiBaseUrl output): deployed before the app's side?")
        self.base_url = target.api_base_url.rstrip("/")
        self._target = target
        self._timeout = timeout
        self._session = requests.Session()

    def _credentials(self) -> Credentials:
        if self._target.is_local:
            return _LOCAL_CREDENTIALS
        credentials = self._target.session_factory().get_credentials()
        if credentials is None:
            raise CliError("no AWS credentials to sign the request with (configure a profile)")
        frozen = credentials.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    def call(self, method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        """The route's JSON answer; CliError with the API's message for anything but 200."""
        url = (
            self.base_url
            + path
            + (f"?{urlencode({k: v for k, v in (query or {}).items() if v is not None})}" if query else "")
        )
        data = json.dumps(body).encode() if body is not None else b""
        request = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"})
        SigV4Auth(self._credentials(), "execute-api", self._target.region).add_auth(request)
        answer = self._session.request(
            method, url, data=data, headers=dict(request.headers.items()), timeout=self._timeout
        )
        try:
            payload = answer.json()
        except ValueError:
            payload = {"message": answer.text[:200]}
        if answer.status_code != 200:
            detail = payload.get("message") or payload.get("error") if isinstance(payload, dict) else payload
            raise CliError(f"{method} {path} answered {answer.status_code}: {detail}")
        return payload

    def connect_token(self, client_user_id: str, **options: Any) -> dict[str, Any]:
        body = {"clientUserId": client_user_id, **{k: v for k, v in options.items() if v is not None}}
        answer: dict[str, Any] = self.call("POST", "/connect-token", body=body)
        return answer

    def items_of_user(self, client_user_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call("GET", f"/users/{client_user_id}/items")["items"]
        return items

    def item(self, item_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", f"/items/{item_id}")
        return answer

    def transactions(self, account_id: str, *, limit: int = 500, **filters: str | None) -> list[dict[str, Any]]:
        """Every transaction of the account, newest first, following the cursor."""
        rows: list[dict[str, Any]] = []
        cursor = None
        for _ in range(10_000):  # bounded: 5 million rows at 500 a page
            query = {"limit": limit, "cursor": cursor, "from": filters.get("date_from"), "to": filters.get("date_to")}
            page = self.call("GET", f"/accounts/{account_id}/transactions", query=query)
            rows.extend(page["transactions"])
            cursor = page.get("nextCursor")
            if not cursor:
                return rows
        raise CliError("the transactions cursor did not end")
