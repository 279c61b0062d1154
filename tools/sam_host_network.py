"""Run the SAM CLI with its containers on the host's network: `sam local` functions reach 127.0.0.1.

SAM CLI 1.170 accepts `--docker-network host` and ignores it (aws-sam-cli#4236): it creates every container on
Docker's default network, publishes the runtime interface emulator's port 8080 on a free host port, and only
*connects* other networks afterwards (never "host"). A function in such a container cannot reach a server on the
host's 127.0.0.1 (the local stack's moto and Pluggy emulator), and on an engine started without a bridge
(`dockerd --bridge=none`, tools/docker-up.sh) it has no network at all.

This launcher patches docker-py's `ContainerCollection.create`, through which SAM creates its containers, so
that each one gets `network_mode="host"`:

- published ports are dropped (meaningless, and refused with host networking), as are `dns` and networks;
- a Lambda container's runtime interface emulator (entry point /var/rapid/aws-lambda-rie) is told to listen on
  127.0.0.1 at the host port SAM chose for it (SAM then calls it exactly where it expects), and its Runtime API
  moves from the fixed 127.0.0.1:9001 to a free port, so two containers (or anything on 9001) cannot collide.

It also stops `sam local invoke/start-api` from calling AWS STS (GetCallerIdentity, on every run, to fill in
AWS::AccountId): a local run never reaches AWS, even with real credentials in the shell, and AWS::AccountId keeps
SAM's default 123456789012, which is moto's account.

Then it runs SAM's own CLI with the given arguments::

    .venv-sam/bin/python tools/sam_host_network.py local invoke ReceiverFunction -e events/receiver/item-created.json
    .venv-sam/bin/python tools/sam_host_network.py --check IMAGE   # proves it: a container reaches 127.0.0.1

Run it with the SAM virtualenv's Python (.venv-sam). Telemetry is off unless SAM_CLI_TELEMETRY says otherwise.
Linux only: Docker Desktop (macOS, Windows) has no host networking to speak of; there, leave this out and point
the functions at host.docker.internal instead (`pluggy-pipeline local` prints both variants).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RIE_ENTRYPOINT = "/var/rapid/aws-lambda-rie"
RIE_CONTAINER_PORT = "8080"
RIE_ADDRESS_FLAG = "--runtime-interface-emulator-address"
RUNTIME_API_FLAG = "--runtime-api-address"
PATCHED_MARKER = "_pluggy_pipeline_host_network"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _published_host_port(ports: Mapping[str, Any], container_port: str) -> int | None:
    """The host port SAM published `container_port` on: values are a port, (interface, port) or a list of them."""
    for key in (container_port, f"{container_port}/tcp"):
        binding = ports.get(key)
        if isinstance(binding, list) and binding:
            binding = binding[0]
        if isinstance(binding, tuple) and binding:
            binding = binding[-1]
        if isinstance(binding, int | str) and str(binding).isdigit():
            return int(binding)
    return None


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in args)


def host_network_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """docker-py `containers.create` arguments with host networking instead of SAM's port publishing."""
    result = dict(kwargs)
    ports: Mapping[str, Any] = result.pop("ports", None) or {}
    for conflicting in ("network", "networking_config", "network_disabled", "dns", "publish_all_ports"):
        result.pop(conflicting, None)
    result["network_mode"] = "host"
    entrypoint = result.get("entrypoint")
    if isinstance(entrypoint, list | tuple) and entrypoint and entrypoint[0] == RIE_ENTRYPOINT:
        args = [str(arg) for arg in entrypoint]
        rie_port = _published_host_port(ports, RIE_CONTAINER_PORT)
        if rie_port is not None and not _has_flag(args, RIE_ADDRESS_FLAG):
            args += [RIE_ADDRESS_FLAG, f"127.0.0.1:{rie_port}"]
        if not _has_flag(args, RUNTIME_API_FLAG):
            args += [RUNTIME_API_FLAG, f"127.0.0.1:{free_port()}"]
        result["entrypoint"] = args
    return result


def install() -> None:
    """Patch docker-py (idempotent): every container created through it uses the host's network."""
    from docker.models.containers import ContainerCollection  # noqa: PLC0415 - only in .venv-sam

    if getattr(ContainerCollection.create, PATCHED_MARKER, False):
        return
    original = ContainerCollection.create

    def create(self: Any, image: Any, command: Any = None, **kwargs: Any) -> Any:
        return original(self, image, command, **host_network_kwargs(kwargs))

    setattr(create, PATCHED_MARKER, True)
    ContainerCollection.create = create


def skip_account_lookup() -> None:
    """`sam local` without its STS GetCallerIdentity call (AWS::AccountId stays SAM's default, 123456789012)."""
    from samcli.commands.local.cli_common.invoke_context import InvokeContext  # noqa: PLC0415 - only in .venv-sam

    def _no_lookup(self: Any) -> None:
        return None

    InvokeContext._add_account_id_to_global = _no_lookup


# -- the proof ------------------------------------------------------------------------------------------------


class _Token(BaseHTTPRequestHandler):
    token = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.token)))
        self.end_headers()
        self.wfile.write(self.token)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _fetch_from_container(image: str, url: str, *, patched: bool) -> str:
    """What a container of `image` reads from `url` (created like SAM creates one), or the error it got."""
    import docker  # noqa: PLC0415 - only in .venv-sam

    client = docker.from_env()
    code = (
        "import urllib.request\n"
        "try:\n"
        f"    print(urllib.request.urlopen({url!r}, timeout=3).read().decode())\n"
        "except Exception as exc:\n"
        "    print('unreachable:', type(exc).__name__, exc)\n"
    )
    kwargs: dict[str, Any] = {
        # python3 in the official image, python3.13 only in ours (Debian's minbase has no python3 link).
        "entrypoint": ["/bin/sh", "-c", 'exec "$(command -v python3 || command -v python3.13)" -c "$1"', "sh", code],
        "ports": {RIE_CONTAINER_PORT: ("127.0.0.1", free_port())},  # as SAM publishes the emulator's port
        "labels": {"pluggy-pipeline.check": "host-network"},
    }
    if patched:
        kwargs = host_network_kwargs(kwargs)
    container = client.containers.create(image, **kwargs)
    try:
        container.start()
        container.wait(timeout=60)
        return str(container.logs(stdout=True, stderr=True).decode().strip())
    finally:
        container.remove(force=True)


def check(image: str) -> int:
    """Serve a token on 127.0.0.1 and read it from a container, with and without the patch."""
    token = os.urandom(8).hex()
    _Token.token = token.encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Token)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with_patch = _fetch_from_container(image, url, patched=True)
        without_patch = _fetch_from_container(image, url, patched=False)
    finally:
        server.shutdown()
        server.server_close()
    print(f"server on the host: {url}")
    print(f"container, host networking (this launcher): {with_patch}")
    print(f"container, as SAM 1.170 creates it: {without_patch}")
    if with_patch != token:
        print("FAILED: the container did not reach the host's 127.0.0.1 with host networking", file=sys.stderr)
        return 1
    print("OK: with host networking a container reaches a server on the host's 127.0.0.1")
    return 0


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["--check"]:
        if len(argv) != 2:
            print("usage: sam_host_network.py --check IMAGE", file=sys.stderr)
            return 2
        return check(argv[1])
    os.environ.setdefault("SAM_CLI_TELEMETRY", "0")
    install()
    skip_account_lookup()
    from samcli.cli.main import cli  # noqa: PLC0415 - only in .venv-sam

    sys.argv = ["sam", *argv]
    result = cli()  # click exits through SystemExit; a plain return means success
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
