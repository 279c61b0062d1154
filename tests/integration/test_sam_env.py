"""`LocalStack.sam_env_vars`: the --env-vars file `pluggy-pipeline local` writes for `sam local invoke/start-api`.

SAM overrides declared variables only (and drops the rest silently), so the file must hold exactly the declared
variables whose local value differs from what SAM local would pass by itself (parameter defaults, logical ids).
tests/sam runs the real SAM CLI with it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pluggy_pipeline.config import parse_networks
from pluggy_pipeline_local.banner import banner
from pluggy_pipeline_local.devsecrets import LOCAL_PLUGGY_CLIENT_ID, PLUGGY_SOURCE_IP
from pluggy_pipeline_local.stack import SAM_FUNCTIONS, LocalStack, StackOptions, declared_variables, sam_env_file_path

from tests.conftest import TEMPLATE
from tests.integration.localstack import module_stack


@pytest.fixture(autouse=True)
def _isolated_env() -> Iterator[None]:
    """Replaces conftest's: the module's LocalStack owns the process environment."""
    yield


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "state.json"


@pytest.fixture
def stack(state_file: Path) -> Iterator[LocalStack]:
    with module_stack(StackOptions(port=0, state_file=state_file)) as local:
        yield local


def test_only_declared_variables_and_each_one_needed(stack: LocalStack) -> None:
    assert stack.aws is not None and stack.emulator is not None
    env = stack.sam_env_vars()
    assert set(env) == set(SAM_FUNCTIONS)
    for function, variables in env.items():
        assert set(variables) <= declared_variables(TEMPLATE, function), function
        assert all(isinstance(value, str) for value in variables.values())
    tables, queues, secrets = stack.aws.resources.tables, stack.aws.resources.queue_urls, stack.aws.resources.secrets
    common = {
        "EVENTS_TABLE_NAME": tables["EventsTable"],
        "EVENT_QUEUE_URL": queues["EventQueue"],
        "AWS_ENDPOINT_URL": stack.aws.endpoint,
    }
    assert env["ReceiverFunction"] == {
        **common,
        "WEBHOOK_SECRET_ARN": secrets["WebhookSecret"],
        "REQUIRE_SIGNATURE": "true",
        "ALLOWED_SOURCE_CIDRS": f"{PLUGGY_SOURCE_IP}/32,127.0.0.1/32,::1/128",
        "PLUGGY_CLIENT_ID": LOCAL_PLUGGY_CLIENT_ID,
    }
    assert env["ProcessorFunction"] == {
        **common,
        "RECORDS_TABLE_NAME": tables["RecordsTable"],
        "EVENT_DLQ_URL": queues["EventDeadLetterQueue"],
        "PLUGGY_BASE_URL": stack.emulator.base_url,
        "PLUGGY_CREDENTIALS_SECRET_ARN": secrets["PluggyCredentialsSecret"],
        "PACER_TABLE_NAME": tables["PacerTable"],
    }


def test_allowlist_admits_the_events_source_and_loopback(stack: LocalStack) -> None:
    networks = parse_networks(stack.sam_env_vars()["ReceiverFunction"]["ALLOWED_SOURCE_CIDRS"])
    for address in (PLUGGY_SOURCE_IP, "127.0.0.1", "::1"):
        assert any(ipaddress.ip_address(address) in network for network in networks), address
    assert not any(ipaddress.ip_address("203.0.113.10") in network for network in networks)  # events' wrong-ip


def test_host_is_how_a_container_reaches_this_machine(stack: LocalStack) -> None:
    env = stack.sam_env_vars(host="host.docker.internal")
    urls = [v for variables in env.values() for v in variables.values() if v.startswith("http")]
    assert urls and all(url.startswith("http://host.docker.internal:") for url in urls)


def test_the_file_lives_next_to_the_state_file_and_goes_with_it(stack: LocalStack, state_file: Path) -> None:
    path = sam_env_file_path(state_file)
    assert path == state_file.with_name("state.sam-env.json")
    assert sam_env_file_path(Path(".local-stack.json")).name == ".local-stack.sam-env.json"  # gitignored
    assert state_file.exists() and path.exists()
    stack.stop()
    assert not state_file.exists() and not path.exists()


def test_written_file_and_banner(stack: LocalStack, state_file: Path) -> None:
    path = sam_env_file_path(state_file)
    assert json.loads(path.read_text()) == stack.sam_env_vars()
    out = banner(stack, verbose=False)
    assert f"--env-vars {path}" in out
    assert "sam build --parameter-overrides Architecture=x86_64" in out
    assert "tools/sam_host_network.py local invoke ReceiverFunction -e events/receiver/item-created.json" in out
    assert "tools/sam_host_network.py local start-api" in out
    assert "http://127.0.0.1:3000/webhooks/pluggy" in out and "no stage prefix" in out
    assert "moto accepts any" in out
