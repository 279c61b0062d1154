"""tools/sam_host_network.py's rewrite of SAM's container arguments (the launcher runs under .venv-sam; its pure
part is tested here, the real effect in tests/sam)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.conftest import REPO_ROOT


def _launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sam_host_network", REPO_ROOT / "tools" / "sam_host_network.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launcher = _launcher()

# What SAM 1.170's Container.create passes to docker-py for a Lambda function (abridged).
SAM_KWARGS = {
    "command": ["app.lambda_handler"],
    "working_dir": "/var/task",
    "volumes": {"/build/ReceiverFunction": {"bind": "/var/task", "mode": "ro,delegated"}},
    "tty": False,
    "use_config_proxy": True,
    "environment": {"EVENTS_TABLE_NAME": "t"},
    "ports": {"8080": ("127.0.0.1", 5123)},
    "entrypoint": ["/var/rapid/aws-lambda-rie", "--log-level", "error"],
    "mem_limit": "256m",
    "labels": {"sam.cli.container.type": "lambda"},
}


def test_lambda_container_gets_host_networking_and_its_emulator_on_the_published_port() -> None:
    result = launcher.host_network_kwargs(SAM_KWARGS)
    assert result["network_mode"] == "host"
    assert "ports" not in result
    entrypoint = result["entrypoint"]
    assert entrypoint[:3] == ["/var/rapid/aws-lambda-rie", "--log-level", "error"]
    # SAM calls the emulator at localhost:5123: with host networking it must listen there itself.
    address = entrypoint[entrypoint.index("--runtime-interface-emulator-address") + 1]
    assert address == "127.0.0.1:5123"
    # The Runtime API leaves the fixed 127.0.0.1:9001, which two host-network containers would share.
    api = entrypoint[entrypoint.index("--runtime-api-address") + 1]
    assert api.startswith("127.0.0.1:") and api != "127.0.0.1:9001"
    unchanged = {k: v for k, v in SAM_KWARGS.items() if k not in ("ports", "entrypoint")}
    assert {k: v for k, v in result.items() if k in unchanged} == unchanged
    assert SAM_KWARGS["ports"] == {"8080": ("127.0.0.1", 5123)}  # the caller's arguments are not mutated


def test_other_containers_only_change_network() -> None:
    kwargs = {"entrypoint": ["/bin/sh"], "ports": {"9229": 9229}, "dns": ["8.8.8.8"], "network": "bridge"}
    assert launcher.host_network_kwargs(kwargs) == {"entrypoint": ["/bin/sh"], "network_mode": "host"}


def test_flags_already_given_are_kept() -> None:
    kwargs = {
        "entrypoint": [
            "/var/rapid/aws-lambda-rie",
            "--runtime-interface-emulator-address=127.0.0.1:7000",
            "--runtime-api-address",
            "127.0.0.1:7001",
        ],
        "ports": {"8080/tcp": [("127.0.0.1", 5999)]},
    }
    assert launcher.host_network_kwargs(kwargs)["entrypoint"] == kwargs["entrypoint"]
