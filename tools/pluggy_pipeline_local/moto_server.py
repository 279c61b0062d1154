"""moto in server mode on 127.0.0.1, so code under test talks real HTTP to "AWS"."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from pluggy_pipeline_local.devsecrets import LOCAL_SIGNING_KEY, LOCAL_WEBHOOK_SECRET
from pluggy_pipeline_local.template import LocalResources, create_resources, load_template

REGION = "us-east-1"
# moto accepts any credentials; fixed fake ones keep a stray real profile from ever being used.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_SESSION_TOKEN": "local"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalAws:
    endpoint: str
    resources: LocalResources
    clients: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to use this moto server as its AWS."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            **FAKE_CREDENTIALS,
        }


def local_secret_value() -> str:
    return json.dumps({"current": LOCAL_WEBHOOK_SECRET, "signingKey": LOCAL_SIGNING_KEY})


LOCAL_SERVICES = ("dynamodb", "sqs", "secretsmanager", "events")


def make_clients(endpoint: str, services: tuple[str, ...] = LOCAL_SERVICES) -> dict[str, Any]:
    credentials = {"aws_access_key_id": "local", "aws_secret_access_key": "local", "aws_session_token": "local"}
    return {
        name: boto3.client(name, region_name=REGION, endpoint_url=endpoint, **credentials)  # type: ignore[call-overload]
        for name in services
    }


@contextmanager
def moto_server(
    template: Mapping[str, Any] | None = None,
    *,
    port: int | None = None,
    prefix: str | None = None,
    secret_values: Mapping[str, str] | None = None,
) -> Iterator[LocalAws]:
    """Start moto, create the template's tables, queues and secrets, stop it on exit."""
    port = port or free_port()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per AWS call is noise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        clients = make_clients(endpoint)
        resources = create_resources(
            template if template is not None else load_template(),
            **clients,
            prefix=prefix,
            secret_values={"WebhookSecret": local_secret_value(), **(secret_values or {})},
        )
        yield LocalAws(endpoint, resources, clients)
    finally:
        server.stop()
