"""The local stack's HTTP front answers like API Gateway: it takes a burst of connections, hands OPTIONS and
HEAD to the function (405, Allow: POST), and refuses a bad or oversized Content-Length itself, with JSON,
without invoking the function. Raw sockets on loopback: an HTTP client library would fix up or refuse the
very requests under test.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pluggy_pipeline_local.stack import MAX_PAYLOAD_BYTES, LocalStack

from tests.integration.localstack import module_stack

CONNECTIONS = 50
TIMEOUT = 10.0  # seconds for any one answer; the front answers these in milliseconds


@pytest.fixture(autouse=True)
def _isolated_env() -> Iterator[None]:
    """Replaces conftest's: the module's LocalStack owns the process environment (moto endpoint, fake
    credentials); resetting it per test would point the running receiver at real AWS."""
    yield


@pytest.fixture(scope="module")
def front() -> Iterator[LocalStack]:
    with module_stack() as stack:
        yield stack


def _address(stack: LocalStack) -> tuple[str, int]:
    host, port = stack._front.server_address[:2]  # type: ignore[union-attr]
    return str(host), int(port)


def _exchange(stack: LocalStack, request: bytes) -> bytes:
    """Send raw bytes, then read until the server closes the connection."""
    with socket.create_connection(_address(stack), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        return _read_to_close(sock)


def _read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP answer: {raw!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status), headers, body


def _footprint(stack: LocalStack) -> tuple[int, int, int]:
    """Receiver invocations, messages in the queue, claims in EventsTable."""
    assert stack.aws is not None
    claims = stack.aws.clients["dynamodb"].scan(
        TableName=stack.aws.resources.tables["EventsTable"], Select="COUNT", ConsistentRead=True
    )["Count"]
    return stack.invocations["receiver"], stack.queue_depth(), int(claims)


# The front as the webhook sender sees it, and the Pluggy emulator as the processor sees it; unauthenticated,
# so every request is refused (4XX) and nothing is queued.
BURSTS = {
    "front": b"POST /webhooks/pluggy HTTP/1.1\r\nHost: front\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    "emulator": b"GET /items/none HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\r\n",
}


@pytest.mark.parametrize("target", sorted(BURSTS))
def test_a_burst_of_connections_is_queued_and_every_one_answered(
    front: LocalStack, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """While a server is busy (its accept loop held here, so the outcome does not hang on thread timing),
    the listener must queue the whole burst: with socketserver's backlog of 5, Linux drops the other SYNs
    (the clients retry 1 s, 3 s ... later) and other systems reset them."""
    server: Any = front._front if target == "front" else front.emulator._server  # type: ignore[union-attr]
    address = server.server_address[:2]
    accepting = threading.Event()
    accept = server.get_request

    def held_accept() -> Any:
        accepting.wait(TIMEOUT)
        return accept()

    monkeypatch.setattr(server, "get_request", held_accept)
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(CONNECTIONS)]
    try:
        with selectors.DefaultSelector() as selector:
            for sock in sockets:
                sock.setblocking(False)
                sock.connect_ex(address)
                selector.register(sock, selectors.EVENT_WRITE)
            # Well under the kernel's 1 s initial SYN retransmission: only queued connections complete.
            deadline = time.monotonic() + 0.5
            pending = set(sockets)
            while pending and (remaining := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(remaining):
                    selector.unregister(key.fileobj)
                    pending.discard(key.fileobj)  # type: ignore[arg-type]
        failed = {s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) for s in sockets if s not in pending} - {0}
        established = CONNECTIONS - len(pending) - len(failed)
        assert (established, failed) == (CONNECTIONS, set()), f"only {established} connections queued, errors {failed}"

        accepting.set()
        request = BURSTS[target]
        for sock in sockets:
            sock.setblocking(True)
            sock.settimeout(TIMEOUT)
            sock.sendall(request)
        answers = [_parse(_read_to_close(sock))[0] for sock in sockets]
    finally:
        accepting.set()
        for sock in sockets:
            sock.close()
    # No credentials: every one is refused, and every one is answered.
    assert len(answers) == CONNECTIONS and len(set(answers)) == 1 and 400 <= answers[0] < 500, answers


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD"])
def test_options_and_head_reach_the_function_and_get_405(front: LocalStack, method: str) -> None:
    before = front.invocations["receiver"]
    raw = _exchange(front, f"{method} /webhooks/pluggy HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n".encode())
    status, headers, body = _parse(raw)
    assert status == 405 and headers.get("allow") == "POST", raw
    assert front.invocations["receiver"] == before + 1  # API Gateway's ANY route handed it to the function
    if method == "HEAD":
        assert body == b"", "a HEAD answer carries no body"
        assert int(headers["content-length"]) > 0  # the length the same request as GET would get
    else:
        assert len(body) == int(headers["content-length"]) and json.loads(body)


@pytest.mark.parametrize(
    ("lengths", "status"),
    [
        (["abc"], 400),
        (["-1"], 400),
        (["1e3"], 400),
        ([""], 400),
        (["2", "3"], 400),  # two different lengths: which one frames the body is anyone's guess
        ([str(MAX_PAYLOAD_BYTES + 1)], 413),  # API Gateway's 10 MB payload limit; the body is never sent
    ],
    ids=["abc", "negative", "float", "empty", "conflicting", "over-10MB"],
)
def test_a_bad_content_length_is_refused_before_the_function(
    front: LocalStack, lengths: list[str], status: int
) -> None:
    before = _footprint(front)
    started = time.monotonic()
    fields = "".join(f"Content-Length: {length}\r\n" for length in lengths)
    # The body is not what Content-Length says (or is not sent at all): none of it may be read as a request.
    raw = _exchange(front, f"POST /webhooks/pluggy HTTP/1.1\r\nHost: front\r\n{fields}\r\n{{}}".encode())
    answered, headers, body = _parse(raw)
    assert answered == status, raw
    assert headers.get("content-type") == "application/json" and headers.get("connection") == "close"
    assert set(json.loads(body)) == {"message"}
    assert time.monotonic() - started < 5  # answered, not waiting for a body that never comes
    assert _footprint(front) == before, "the function ran, or something was queued or claimed"
