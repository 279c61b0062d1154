"""Receiver benchmark: in-process cost per event, AWS calls per delivery, cold start.

Each goal is checked against a baseline measured in the same run:
1. in-process cost of the real lambda_handler (AWS clients replaced by in-memory fakes) vs. the irreducible
   work of a delivery (json.loads + HMAC-SHA256 of the body + json.dumps of the answer), interleaved per event;
2. AWS API calls per delivery, counted with a botocore hook against moto, vs. the minimum conceivable
   (one conditional write to dedupe + one send = 2 for a new event, 1 for a duplicate, 0 for a 4XX);
3. cold start: a fresh interpreter importing the handler and serving one event against a moto server vs. a
   fresh interpreter that only imports boto3, creates the same two clients and makes a put_item and a
   send_message, interleaved round by round.
"""

from __future__ import annotations

import contextlib
import copy
import cProfile
import functools
import gc
import hashlib
import hmac
import importlib.util
import io
import json
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast
from unittest import mock

import boto3
from botocore.exceptions import ClientError
from moto import mock_aws
from pluggy_pipeline import aws
from pluggy_pipeline import receiver as receiver_module
from pluggy_pipeline.auth import sign
from pluggy_pipeline_cli.webhook_examples import VALID_PAYLOADS
from pluggy_pipeline_local.devsecrets import (
    LOCAL_PLUGGY_CLIENT_ID,
    LOCAL_SIGNING_KEY,
    LOCAL_WEBHOOK_SECRET,
    PLUGGY_SOURCE_IP,
)
from pluggy_pipeline_local.events_corpus import (
    SECRET_HEADER,
    SIGNATURE_HEADER,
    Scenario,
    proxy_event,
    scenarios,
)
from pluggy_pipeline_local.template import LocalResources, create_resources, function_environment, load_template

from bench import Measure, Section, Stats, Table, fmt, ratio, verdict

REPO_ROOT = Path(__file__).resolve().parents[1]
APP_PATH = REPO_ROOT / "functions" / "receiver" / "app.py"
LAYER_DIR = REPO_ROOT / "layers" / "common"
EVENTS_DIR = REPO_ROOT / "events" / "receiver"
REGION = "us-east-1"

# The goals (the only figures written here; everything else is measured).
GOAL_IN_PROCESS_US = 200.0  # median in-process cost per event, excluding AWS I/O
GOAL_CALLS_NEW = 2
GOAL_CALLS_DUPLICATE = 1
GOAL_CALLS_REJECTED = 0
GOAL_COLD_RATIO = 1.25
# The minimum conceivable number of AWS calls: one conditional write to dedupe + one send.
MIN_CALLS_NEW = 2
MIN_CALLS_DUPLICATE = 1
MIN_CALLS_REJECTED = 0


@dataclass(frozen=True)
class Sizes:
    in_process_events: int  # distinct events per in-process run (each run times every one of them)
    chunk: int  # runs are interleaved chunk by chunk
    warmup_events: int
    replay_events: int  # to time the fakes on their own
    profile_events: int  # cProfile sample, only when the in-process goal is missed
    cold_rounds: int  # each round runs every cold-start variant once, in a rotating order
    cold_warmup_rounds: int
    importtime_runs: int


FULL = Sizes(20_000, 500, 500, 5_000, 3_000, 30, 2, 3)
QUICK = Sizes(3_000, 250, 200, 1_000, 1_000, 8, 1, 1)
TINY = Sizes(60, 20, 10, 50, 60, 1, 0, 0)  # for the smoke test: exercises everything, measures nothing


# ---------------------------------------------------------------------------------------------------------
# Environment, template, handler
# ---------------------------------------------------------------------------------------------------------

_AWS_ENV_REMOVED = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE")
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str], remove: Sequence[str] = ()) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        for key in remove:
            os.environ.pop(key, None)
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def reset_receiver() -> None:
    aws.reset_clients()
    receiver_module.get_receiver.cache_clear()


@functools.cache
def template() -> dict[str, Any]:
    return load_template()


def receiver_environment(resources: LocalResources, *, secret_in_env: bool) -> dict[str, str]:
    """ReceiverFunction's environment as the template resolves it, signatures required, source IP pinned.

    secret_in_env: WEBHOOK_SECRET + WEBHOOK_SIGNING_KEY instead of the template's WEBHOOK_SECRET_ARN.
    """
    env = function_environment(
        template(),
        "ReceiverFunction",
        resources,
        parameters={
            "PluggyClientId": LOCAL_PLUGGY_CLIENT_ID,
            "RequireSignature": "true",
            "AllowedSourceCidrs": f"{PLUGGY_SOURCE_IP}/32",
        },
    )
    if secret_in_env:
        env.pop("WEBHOOK_SECRET_ARN", None)
        env["WEBHOOK_SECRET"] = LOCAL_WEBHOOK_SECRET
        env["WEBHOOK_SIGNING_KEY"] = LOCAL_SIGNING_KEY
    return env


def local_secret_value() -> str:
    return json.dumps({"current": LOCAL_WEBHOOK_SECRET, "signingKey": LOCAL_SIGNING_KEY})


def load_app() -> ModuleType:
    """functions/receiver/app.py loaded from its file, as Lambda loads the handler module."""
    spec = importlib.util.spec_from_file_location("bench_receiver_app", APP_PATH)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {APP_PATH}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class LambdaContext:
    function_name: str = "ReceiverFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:ReceiverFunction"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 5000


# ---------------------------------------------------------------------------------------------------------
# Deliveries
# ---------------------------------------------------------------------------------------------------------


def signed_event(payload: Mapping[str, Any], name: str = "bench") -> dict[str, Any]:
    """An API Gateway proxy event delivering `payload` the way Pluggy does (secret header + signature)."""
    body = json.dumps(payload, separators=(",", ":"))
    headers = {
        "Content-Type": ["application/json"],
        SECRET_HEADER: [LOCAL_WEBHOOK_SECRET],
        SIGNATURE_HEADER: [sign(body.encode(), LOCAL_SIGNING_KEY.encode())],
    }
    return proxy_event(Scenario(name, 202, body, headers))


def fresh_payloads(count: int, tag: str) -> list[dict[str, Any]]:
    """`count` new events cycling through every documented Pluggy webhook, each with its own identity."""
    bases = [VALID_PAYLOADS[name] for name in sorted(VALID_PAYLOADS)]
    run = uuid.uuid4().hex[:8]
    payloads = []
    for i in range(count):
        payload = copy.deepcopy(bases[i % len(bases)])
        if "eventId" in payload:
            payload["eventId"] = f"{tag}-{run}-{i:08d}-0000-000000000000"[:36]
        else:  # keyless (connector/status_updated): keyed on the body's hash, so vary the body
            payload["id"] = payload["connectorId"] = f"{run}{i}"
        payloads.append(payload)
    return payloads


def corpus() -> list[tuple[str, int, dict[str, Any]]]:
    """(name, expected status, proxy event) for every file of events/receiver."""
    expected = {s.name: s.expected_status for s in scenarios()}
    out = []
    for path in sorted(EVENTS_DIR.glob("*.json")):
        if path.stem in expected:
            out.append((path.stem, expected[path.stem], json.loads(path.read_text(encoding="utf-8"))))
    return out


# ---------------------------------------------------------------------------------------------------------
# In-memory fakes of the two AWS clients (same semantics for what the receiver uses)
# ---------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\(|\)|,)|(<>|<=|>=|=|<|>)|(:[A-Za-z0-9_]+)|(#[A-Za-z0-9_]+)|([A-Za-z_][A-Za-z0-9_]*))")
_FUNCTIONS = {"attribute_exists", "attribute_not_exists"}
Item = dict[str, dict[str, Any]]
Predicate = Callable[[Mapping[str, Any], Mapping[str, str], Mapping[str, Any]], bool]


def _tokens(expression: str) -> list[str]:
    out, position = [], 0
    expression = expression.strip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None or match.end() == position:
            raise NotImplementedError(f"fake DynamoDB cannot parse {expression[position:]!r}")
        out.append(match.group(match.lastindex or 0))
        position = match.end()
    return out


def _scalar(value: Mapping[str, Any] | None) -> Any:
    if value is None:
        return None
    if "N" in value:
        return float(value["N"])
    if "S" in value:
        return value["S"]
    if "BOOL" in value:
        return value["BOOL"]
    raise NotImplementedError(f"fake DynamoDB cannot compare {value!r}")


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,  # as moto: a missing attribute is "not equal"
    "<": lambda a, b: a is not None and b is not None and a < b,
    "<=": lambda a, b: a is not None and b is not None and a <= b,
    ">": lambda a, b: a is not None and b is not None and a > b,
    ">=": lambda a, b: a is not None and b is not None and a >= b,
}


@functools.cache
def compile_condition(expression: str) -> Predicate:
    """A DynamoDB condition expression (comparisons, attribute_(not_)exists, AND/OR/NOT, parentheses).

    Anything else raises NotImplementedError: the fake must never silently disagree with DynamoDB.
    """
    tokens = _tokens(expression)
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal position
        token = peek()
        if token is None or (expected is not None and token.upper() != expected):
            raise NotImplementedError(f"fake DynamoDB cannot parse {expression!r} at {token!r}")
        position += 1
        return token

    def operand() -> Callable[[Mapping[str, Any], Mapping[str, str], Mapping[str, Any]], Any]:
        token = take()
        if token.startswith(":"):
            return lambda item, names, values: _scalar(values[token])
        if token.startswith("#") or token[0].isalpha():
            return lambda item, names, values: _scalar(item.get(names.get(token, token)))
        raise NotImplementedError(f"fake DynamoDB cannot parse {expression!r} at {token!r}")

    def primary() -> Predicate:
        token = peek()
        if token == "(":
            take("(")
            inner = disjunction()
            take(")")
            return inner
        if token is not None and token.upper() == "NOT":
            take("NOT")
            negated = primary()
            return lambda item, names, values: not negated(item, names, values)
        if token in _FUNCTIONS:
            take()
            take("(")
            path = take()
            take(")")
            exists = token == "attribute_exists"
            return lambda item, names, values: (names.get(path, path) in item) is exists
        left = operand()
        comparator = take()
        if comparator not in _COMPARE:
            raise NotImplementedError(f"fake DynamoDB cannot parse {expression!r} at {comparator!r}")
        right = operand()
        compare = _COMPARE[comparator]
        return lambda item, names, values: compare(left(item, names, values), right(item, names, values))

    def conjunction() -> Predicate:
        parts = [primary()]
        while (token := peek()) is not None and token.upper() == "AND":
            take("AND")
            parts.append(primary())
        if len(parts) == 1:
            return parts[0]
        return lambda item, names, values: all(p(item, names, values) for p in parts)

    def disjunction() -> Predicate:
        parts = [conjunction()]
        while (token := peek()) is not None and token.upper() == "OR":
            take("OR")
            parts.append(conjunction())
        if len(parts) == 1:
            return parts[0]
        return lambda item, names, values: any(p(item, names, values) for p in parts)

    predicate = disjunction()
    if position != len(tokens):
        raise NotImplementedError(f"fake DynamoDB cannot parse {expression!r} at {peek()!r}")
    return predicate


@functools.cache
def compile_update(expression: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """`SET a = :v, #b = :w REMOVE c, d` -> ((path, value), ...), (removed path, ...)."""
    sets: list[tuple[str, str]] = []
    removes: list[str] = []
    tokens = _tokens(expression)
    clause = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.upper() in {"SET", "REMOVE"}:
            clause, i = token.upper(), i + 1
        elif token == ",":
            i += 1
        elif clause == "SET" and i + 2 < len(tokens) and tokens[i + 1] == "=" and tokens[i + 2].startswith(":"):
            sets.append((token, tokens[i + 2]))
            i += 3
        elif clause == "REMOVE" and not token.startswith(":"):
            removes.append(token)
            i += 1
        else:
            raise NotImplementedError(f"fake DynamoDB cannot apply {expression!r}")
    return tuple(sets), tuple(removes)


def _conditional_failure(operation: str, existing: Item | None, return_values: str | None) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": "ConditionalCheckFailedException", "Message": "The conditional request failed"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    if return_values == "ALL_OLD" and existing is not None:
        response["Item"] = existing
    return ClientError(cast(Any, response), operation)


class FakeDynamoDB:
    """put_item / update_item / delete_item on a single table keyed by eventId, with conditions."""

    def __init__(self, items: Mapping[str, Item] | None = None) -> None:
        self.items: dict[str, Item] = dict(items or {})
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, dict[str, Any]]] | None = None  # set to a list to record calls

    def _check(self, kwargs: Mapping[str, Any], existing: Item | None, operation: str) -> None:
        expression = kwargs.get("ConditionExpression")
        if expression is None:
            return
        names = kwargs.get("ExpressionAttributeNames") or {}
        values = kwargs.get("ExpressionAttributeValues") or {}
        if not compile_condition(expression)(existing or {}, names, values):
            raise _conditional_failure(operation, existing, kwargs.get("ReturnValuesOnConditionCheckFailure"))

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["PutItem"] += 1
        if self.log is not None:
            self.log.append(("put_item", kwargs))
        item: Item = kwargs["Item"]
        key = item["eventId"]["S"]
        self._check(kwargs, self.items.get(key), "PutItem")
        self.items[key] = item
        return {}

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["UpdateItem"] += 1
        if self.log is not None:
            self.log.append(("update_item", kwargs))
        key = kwargs["Key"]["eventId"]["S"]
        existing = self.items.get(key)
        self._check(kwargs, existing, "UpdateItem")
        names = kwargs.get("ExpressionAttributeNames") or {}
        values = kwargs.get("ExpressionAttributeValues") or {}
        sets, removes = compile_update(kwargs["UpdateExpression"])
        item = dict(existing or kwargs["Key"])
        for path, value in sets:
            item[names.get(path, path)] = values[value]
        for path in removes:
            item.pop(names.get(path, path), None)
        self.items[key] = item
        return {}

    def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["DeleteItem"] += 1
        if self.log is not None:
            self.log.append(("delete_item", kwargs))
        key = kwargs["Key"]["eventId"]["S"]
        self._check(kwargs, self.items.get(key), "DeleteItem")
        self.items.pop(key, None)
        return {}


class FakeSQS:
    def __init__(self) -> None:
        self.messages: list[tuple[str, Mapping[str, Any]]] = []
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, dict[str, Any]]] | None = None

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["SendMessage"] += 1
        if self.log is not None:
            self.log.append(("send_message", kwargs))
        if str(kwargs["QueueUrl"]).endswith(".fifo") and not kwargs.get("MessageGroupId"):
            error: Any = {"Error": {"Code": "MissingParameter", "Message": "MessageGroupId is required"}}
            raise ClientError(error, "SendMessage")
        self.messages.append((kwargs["MessageBody"], kwargs.get("MessageAttributes") or {}))
        return {"MessageId": f"fake-{len(self.messages)}"}


class NoSecretsManager:
    def get_secret_value(self, **_: Any) -> dict[str, Any]:
        raise RuntimeError("the benchmark configures the secret in the environment: no Secrets Manager call expected")


@dataclass
class FakeAws:
    dynamodb: FakeDynamoDB = field(default_factory=FakeDynamoDB)
    sqs: FakeSQS = field(default_factory=FakeSQS)


def replay(calls: Sequence[tuple[str, dict[str, Any]]], fakes: FakeAws) -> None:
    """Make the recorded calls again (to time the fakes on their own); a conditional failure is expected."""
    for method, kwargs in calls:
        target = fakes.sqs if method == "send_message" else fakes.dynamodb
        try:  # noqa: SIM105 - a try that raises nothing costs nothing; suppress() would be timed too
            getattr(target, method)(**kwargs)
        except ClientError:
            pass


# ---------------------------------------------------------------------------------------------------------
# stdout: Powertools prints a log line and an EMF blob per invocation
# ---------------------------------------------------------------------------------------------------------

_PIPE_READER = "import sys\nn = 0\nwhile chunk := sys.stdin.buffer.read(65536):\n    n += len(chunk)\nprint(n)\n"


class Stdout:
    """Points file descriptor 1 at /dev/null or at a pipe drained by another process (as Lambda's log pipe).

    Redirecting the descriptor, not sys.stdout, is what catches Powertools: its Logger keeps the stream it
    was created with. sys.stdout is line-buffered meanwhile, so every line is written as it is logged.
    """

    def __init__(self) -> None:
        self._saved: int | None = None
        self._devnull: int | None = None
        self._reader: subprocess.Popen[bytes] | None = None
        self._line_buffering: bool | None = None

    def __enter__(self) -> Stdout:
        sys.stdout.flush()
        self._saved = os.dup(1)
        self._devnull = os.open(os.devnull, os.O_WRONLY)
        if isinstance(sys.stdout, io.TextIOWrapper):
            self._line_buffering = sys.stdout.line_buffering
            sys.stdout.reconfigure(line_buffering=True)
        self.to("devnull")
        return self

    def to(self, target: str) -> None:
        sys.stdout.flush()
        if target == "devnull":
            assert self._devnull is not None
            os.dup2(self._devnull, 1)
        elif target == "pipe":
            if self._reader is None:
                self._reader = subprocess.Popen(
                    [sys.executable, "-c", _PIPE_READER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
            assert self._reader.stdin is not None
            os.dup2(self._reader.stdin.fileno(), 1)
        else:
            raise ValueError(target)

    def piped_bytes(self) -> int | None:
        """Close the pipe (pointing fd 1 at /dev/null first) and return how many bytes went through it."""
        if self._reader is None:
            return None
        sys.stdout.flush()
        assert self._devnull is not None
        os.dup2(self._devnull, 1)
        reader, self._reader = self._reader, None
        out, _ = reader.communicate(timeout=30)  # closes its stdin: the reader sees EOF and prints the count
        return int(out.strip() or 0)

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(ValueError, OSError):
            sys.stdout.flush()
        self.piped_bytes()
        if self._saved is not None:
            os.dup2(self._saved, 1)
            os.close(self._saved)
        if self._devnull is not None:
            os.close(self._devnull)
        if self._line_buffering is not None and isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(line_buffering=self._line_buffering)


def progress(message: str) -> None:
    print(f"bench.receiver: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# 1. In-process cost per event
# ---------------------------------------------------------------------------------------------------------


def irreducible(body: str, key: bytes) -> str:
    """What any receiver must do per delivery: parse the body, HMAC it, serialize an answer."""
    payload = json.loads(body)
    hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"status": "accepted", "eventId": payload.get("eventId", "")}, separators=(",", ":"))


@dataclass
class Run:
    key: str
    label: str
    sink: str
    call: Callable[[dict[str, Any]], int]
    expect: int
    fakes: FakeAws
    goal: bool  # the in-process goal applies to this run
    samples: list[int] = field(default_factory=list)
    baseline: list[int] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def _timed_chunk(run: Run, events: Sequence[dict[str, Any]], bodies: Sequence[str], lo: int, hi: int) -> None:
    clock = time.perf_counter_ns
    key = LOCAL_SIGNING_KEY.encode()
    call = run.call
    for i in range(lo, hi):
        event, body = events[i], bodies[i]
        if i & 1:  # alternate which goes first, so neither always runs on a warmer cache
            t0 = clock()
            irreducible(body, key)
            t1 = clock()
            status = call(event)
            t2 = clock()
            run.baseline.append(t1 - t0)
            run.samples.append(t2 - t1)
        else:
            t0 = clock()
            status = call(event)
            t1 = clock()
            irreducible(body, key)
            t2 = clock()
            run.samples.append(t1 - t0)
            run.baseline.append(t2 - t1)
        if status != run.expect and len(run.wrong) < 5:
            run.wrong.append(f"{json.loads(body).get('event')}: {status}")


# Where an invocation's time goes, by cumulative time of these functions (file suffix, function, label).
STAGES = (
    ("pluggy_pipeline/receiver.py", "receive", "`receive()` (checks, parsing, claim, send; fakes included)"),
    ("pluggy_pipeline/receiver.py", "record", "`record()` (log line + metric)"),
    ("aws_lambda_powertools/logging/logger.py", "info", "of which Powertools `Logger.info`"),
    ("cloudwatch_emf/cloudwatch.py", "flush_metrics", "`@metrics.log_metrics` EMF flush"),
)
Profile = tuple[list[tuple[str, float, float]], list[tuple[str, float]]]


def _short(filename: str) -> str:
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}/"
    for marker in ("site-packages/", "layers/common/", str(REPO_ROOT) + "/", version):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def profile_top(call: Callable[[], None], top: int = 5) -> Profile:
    """Top functions by own time (label, own share, cumulative share), and the cumulative share of STAGES."""
    profiler = cProfile.Profile()
    profiler.enable()
    call()
    profiler.disable()
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = getattr(pstats.Stats(profiler), "stats")  # noqa: B009 - untyped attribute
    total = sum(v[2] for v in stats.values()) or 1.0
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    functions = [
        (f"{_short(filename)}:{line} {name}" if filename != "~" else name, own / total, cumulative / total)
        for (filename, line, name), (_, _, own, cumulative, _) in rows
    ]

    def cumulative(suffix: str, function: str) -> float:
        found = [v[3] for (f, _, n), v in stats.items() if n == function and f.endswith(suffix)]
        return max(found, default=0.0)

    stages = [(label, cumulative(suffix, name) / total) for suffix, name, label in STAGES]
    wrappers = cumulative("logging/logger.py", "decorate") - cumulative("receiver/app.py", "lambda_handler")
    wrappers -= cumulative("cloudwatch_emf/cloudwatch.py", "flush_metrics")
    stages.append(("Powertools decorators, flush excluded", wrappers / total))
    return functions, [(label, share) for label, share in stages if share > 0]


def measure_in_process(app: ModuleType, sizes: Sizes) -> tuple[Measure, dict[str, Any]]:
    n, warm = sizes.in_process_events, sizes.warmup_events
    payloads = fresh_payloads(n + warm, "inproc")
    events = [signed_event(p) for p in payloads]
    bodies = [str(e["body"]) for e in events]
    timed, warmup = events[:n], events[n:]
    context = LambdaContext()
    holder = FakeAws()

    def handler(event: dict[str, Any]) -> int:
        return int(app.lambda_handler(event, context)["statusCode"])

    def receive_only(event: dict[str, Any]) -> int:
        return int(receiver_module.receive(event).response.to_proxy()["statusCode"])

    def fake_dynamodb(*_: Any) -> FakeDynamoDB:
        return holder.dynamodb

    def fake_sqs(*_: Any) -> FakeSQS:
        return holder.sqs

    def use(fakes: FakeAws) -> None:
        holder.dynamodb, holder.sqs = fakes.dynamodb, fakes.sqs

    data: dict[str, Any] = {}
    with (
        mock.patch.object(aws, "dynamodb", fake_dynamodb),
        mock.patch.object(aws, "sqs", fake_sqs),
        mock.patch.object(aws, "secretsmanager", lambda *_: NoSecretsManager()),
        Stdout() as stdout,
    ):
        receiver_module.get_receiver.cache_clear()
        try:
            # The first call builds the settings, the authenticator, the store and the queue.
            seed = FakeAws()
            seed.dynamodb.log, seed.sqs.log = [], []
            use(seed)
            everything = [*warmup, *timed]
            t0 = time.perf_counter_ns()
            statuses = Counter([handler(everything[0])])
            data["first_call_us"] = (time.perf_counter_ns() - t0) / 1000
            new_calls = [*seed.dynamodb.log, *seed.sqs.log]
            seed.dynamodb.log = seed.sqs.log = None
            # Every event once, untimed: the table a duplicate meets is exactly what the receiver wrote.
            statuses.update(handler(e) for e in everything[1:])
            data["seed_statuses"] = dict(statuses)
            # Duplicates meet the records the receiver wrote, as the processor leaves them (PROCESSED).
            seeded = {key: {**item, "status": {"S": "PROCESSED"}} for key, item in seed.dynamodb.items.items()}
            # The pre-built events are the benchmark's, not the receiver's: keep collections from scanning them.
            gc.collect()
            gc.freeze()

            runs = [
                Run("new", "new event, stdout -> /dev/null", "devnull", handler, 202, FakeAws(), goal=True),
                Run(
                    "duplicate",
                    "duplicate (processed event), stdout -> /dev/null",
                    "devnull",
                    handler,
                    200,
                    FakeAws(),
                    goal=True,
                ),
                Run("new_pipe", "new event, stdout -> pipe", "pipe", handler, 202, FakeAws(), goal=False),
                Run(
                    "duplicate_pipe",
                    "duplicate (processed event), stdout -> pipe",
                    "pipe",
                    handler,
                    200,
                    FakeAws(),
                    goal=False,
                ),
                Run(
                    "receive",
                    "new event, receive() only (no Powertools)",
                    "devnull",
                    receive_only,
                    202,
                    FakeAws(),
                    False,
                ),
            ]
            for run in runs:
                if run.expect == 200:
                    run.fakes = FakeAws(FakeDynamoDB(seeded))
                use(run.fakes)
                stdout.to(run.sink)
                for event in warmup:
                    run.call(event)
            for chunk, lo in enumerate(range(0, n, sizes.chunk)):
                hi = min(n, lo + sizes.chunk)
                shift = chunk % len(runs)
                for run in runs[shift:] + runs[:shift]:
                    use(run.fakes)
                    stdout.to(run.sink)
                    _timed_chunk(run, timed, bodies, lo, hi)
            stdout.to("devnull")
            piped = stdout.piped_bytes()
            pipe_invocations = sum(len(r.samples) + len(warmup) for r in runs if r.sink == "pipe")

            # The fakes on their own: the same calls replayed on fresh fakes (their cost is in the figures above).
            clock = time.perf_counter_ns
            replay_new: list[int] = []
            replay_duplicate: list[int] = []
            put = [c for c in new_calls if c[0] == "put_item"][:1]
            for _ in range(sizes.replay_events):
                fresh = FakeAws()
                t0 = clock()
                replay(new_calls, fresh)
                t1 = clock()
                replay(put, fresh)
                t2 = clock()
                replay_new.append(t1 - t0)
                replay_duplicate.append(t2 - t1)

            profile: Profile | None = None
            new_median_us = Stats.of(runs[0].samples).median / 1000
            if new_median_us >= GOAL_IN_PROCESS_US:
                profiled = FakeAws()
                use(profiled)
                sample = timed[: min(n, sizes.profile_events)]

                def handle_sample() -> None:
                    for event in sample:
                        handler(event)

                profile = profile_top(handle_sample)
        finally:
            gc.unfreeze()
            receiver_module.get_receiver.cache_clear()

    problems = [f"{r.label}: expected {r.expect}, got {r.wrong}" for r in runs if r.wrong]
    if problems:
        raise RuntimeError("in-process benchmark answered wrongly: " + "; ".join(problems))
    expected_sends = len(runs[0].samples) + len(warmup)
    if len(runs[0].fakes.sqs.messages) != expected_sends or runs[1].fakes.sqs.messages:
        raise RuntimeError("in-process benchmark: the fakes did not see one send per new event and none per duplicate")

    rows = []
    goal_met = True
    for run in runs:
        measured = Stats.of(run.samples).scaled(1e-3)
        base = Stats.of(run.baseline).scaled(1e-3)
        ok = measured.median < GOAL_IN_PROCESS_US
        if run.goal:
            goal_met &= ok
        data[run.key] = {"us": measured, "baseline_us": base, "ratio": measured.median / base.median}
        rows.append(
            (
                run.label,
                f"median < {fmt(GOAL_IN_PROCESS_US)} µs" if run.goal else "—",
                f"{fmt(measured.median)} µs",
                f"{fmt(measured.p95)} µs",
                f"{fmt(base.median)} µs / {fmt(base.p95)} µs",
                ratio(measured.median, base.median),
                verdict(ok) if run.goal else "(informative)",
            )
        )
    table = Table(
        (
            "Run (each: the same events, distinct eventIds)",
            "Goal",
            "Median",
            "p95",
            "Baseline median / p95",
            "Ratio (medians)",
            "Verdict",
        ),
        tuple(rows),
    )
    new, dup = data["new"], data["duplicate"]
    fake_new = Stats.of(replay_new).scaled(1e-3) if replay_new else None
    fake_dup = Stats.of(replay_duplicate).scaled(1e-3) if replay_duplicate else None
    pipe_new, receive = data["new_pipe"], data["receive"]
    notes = [
        f"{n} distinct events per run ({len(VALID_PAYLOADS)} webhook types of the corpus in turn, one keyless), "
        f"{warm} warm-up events per run not timed; the five runs are interleaved in chunks of {sizes.chunk} events "
        "(rotating order), and inside each run every event is timed next to its own baseline, alternating which "
        "goes first. Times are wall-clock `perf_counter_ns` per event, GC enabled (the benchmark's own pre-built "
        "events are moved out of its reach with `gc.freeze()`).",
        "The handler is the real `lambda_handler` of functions/receiver/app.py (Powertools decorators, logging and "
        "metrics included), with the template's environment, `REQUIRE_SIGNATURE=true`, the source IP allowlist and "
        "`PLUGGY_CLIENT_ID` set, and the secret in `WEBHOOK_SECRET`/`WEBHOOK_SIGNING_KEY` (no Secrets Manager I/O).",
        "`aws.dynamodb()`/`aws.sqs()` return in-memory fakes (conditional writes evaluated, "
        "ConditionalCheckFailedException with ALL_OLD, FIFO send checks); their own cost is part of the figures: "
        + (
            f"replaying the calls of one new event on fresh fakes takes {fmt(fake_new.median)} µs (median), "
            f"one losing put {fmt(fake_dup.median)} µs."
            if fake_new and fake_dup
            else "not measured in this run."
        ),
        "The duplicate runs deliver the same events again to a table holding the records the receiver wrote for "
        "them, with their status set to PROCESSED (the 1-call path: the losing put, no send).",
        "Baseline: `json.loads` of the body + HMAC-SHA256 of the body + `json.dumps` of a 2-key answer, per event. "
        "The goal is absolute, so its verdict holds for this machine; the ratio to the same-run baseline is the "
        "figure that carries over to another one.",
        "Powertools prints one JSON log line and one EMF metrics blob per invocation. In the /dev/null runs file "
        "descriptor 1 points at /dev/null; in the pipe runs it points at a pipe drained by another process (as "
        "Lambda's log pipe)"
        + (
            f", which received {piped / pipe_invocations:.0f} bytes per invocation"
            if piped and pipe_invocations
            else ""
        )
        + f". Median per new event: {fmt(pipe_new['us'].median)} µs to the pipe against {fmt(new['us'].median)} µs "
        "to /dev/null.",
        f"Without Powertools (`receive()` + the proxy response only) a new event costs {fmt(receive['us'].median)} µs: "
        f"the decorators, the log line and the metrics account for {fmt(new['us'].median - receive['us'].median)} µs "
        "of the handler's median.",
        f"The very first invocation (builds the settings, authenticator, store and queue) took "
        f"{fmt(data['first_call_us'])} µs (one sample).",
    ]
    if profile is not None:
        functions, stages = profile
        notes.append(
            f"**The goal is missed.** cProfile over {min(n, sizes.profile_events)} new events (shares of all profiled "
            "time; the profiler inflates small calls). Where the time goes, by cumulative time: "
            + "; ".join(f"{label} {share:.0%}" for label, share in stages)
            + ". Top 5 functions by own time (cumulative in brackets): "
            + "; ".join(f"`{where}` {own:.0%} ({cum:.0%})" for where, own, cum in functions)
            + "."
        )
    data["profile"] = profile
    data["goal_met"] = goal_met
    data["duplicate_ratio"] = dup["ratio"]
    measure = Measure("1. In-process cost per event (AWS I/O excluded)", table, tuple(notes), met=goal_met)
    return measure, data


# ---------------------------------------------------------------------------------------------------------
# 2. AWS calls per delivery
# ---------------------------------------------------------------------------------------------------------


class CallCounter:
    """botocore hooks: one `before-call` per API call, one `request-created` per HTTP attempt."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.attempts = 0
        self.callers: dict[str, set[str]] = {}  # operation -> the receiver's functions that made it

    def before_call(self, model: Any = None, **_: Any) -> None:
        operation = f"{model.service_model.service_name}.{model.name}"
        self.calls.append(operation)
        ours = [f for f in reversed(traceback.extract_stack(limit=40)) if "pluggy_pipeline" in f.filename]
        chain = " <- ".join(f"`{Path(f.filename).stem}.{f.name}()`" for f in ours[:3])
        self.callers.setdefault(operation, set()).add(chain or "?")

    def request_created(self, **_: Any) -> None:
        self.attempts += 1

    def attach(self, *clients: Any) -> None:
        for client in clients:
            client.meta.events.register("before-call", self.before_call)
            client.meta.events.register("request-created", self.request_created)

    def take(self) -> tuple[tuple[str, ...], int]:
        calls, attempts = tuple(self.calls), self.attempts
        self.calls, self.attempts = [], 0
        return calls, attempts


@dataclass(frozen=True)
class Delivered:
    name: str
    status: int
    calls: tuple[str, ...]
    attempts: int
    event_id: str


def _group(rows: Sequence[Delivered]) -> str:
    if not rows:
        return "n/a"
    counts = sorted({len(r.calls) for r in rows})
    if len(counts) == 1:
        return f"{counts[0]} (all {len(rows)})" if len(rows) > 1 else str(counts[0])
    return f"{counts[0]} to {counts[-1]} over {len(rows)}"


def _operations(rows: Sequence[Delivered]) -> str:
    seen = sorted({" + ".join(r.calls) or "none" for r in rows})
    return "; ".join(seen) if seen else "—"


def measure_aws_calls(app: ModuleType) -> tuple[Measure, dict[str, Any]]:
    context = LambdaContext()
    data: dict[str, Any] = {}
    with mock_aws(), Stdout():
        clients: dict[str, Any] = {
            name: boto3.client(name, region_name=REGION) for name in ("dynamodb", "sqs", "secretsmanager")
        }
        resources = create_resources(template(), **clients, secret_values={"WebhookSecret": local_secret_value()})
        table = resources.tables["EventsTable"]
        queue_url = resources.queue_urls["EventQueue"]
        counter = CallCounter()

        def configure(secret_in_env: bool) -> dict[str, str]:
            return receiver_environment(resources, secret_in_env=secret_in_env)

        def deliver(name: str, event: dict[str, Any]) -> Delivered:
            counter.take()
            response = app.lambda_handler(event, context)
            calls, attempts = counter.take()
            body = json.loads(response["body"])
            return Delivered(name, int(response["statusCode"]), calls, attempts, str(body.get("eventId", "")))

        def set_record(event_id: str, expression: str, values: dict[str, Any] | None = None) -> None:
            kwargs: dict[str, Any] = {
                "TableName": table,
                "Key": {"eventId": {"S": event_id}},
                "UpdateExpression": expression,
                "ExpressionAttributeNames": {"#status": "status"} if "#status" in expression else {},
            }
            if values:
                kwargs["ExpressionAttributeValues"] = values
            if not kwargs["ExpressionAttributeNames"]:
                del kwargs["ExpressionAttributeNames"]
            clients["dynamodb"].update_item(**kwargs)

        cases = corpus()
        rejected_cases = [(n, s, e) for n, s, e in cases if s >= 400]
        accepted_cases = [(n, s, e) for n, s, e in cases if s < 400]
        with patched_environ(configure(secret_in_env=True)):
            reset_receiver()
            try:
                counter.attach(aws.dynamodb(), aws.sqs(), aws.secretsmanager())
                rejected = [deliver(n, e) for n, _, e in rejected_cases]
                new = [deliver(n, e) for n, _, e in accepted_cases]
                # Pluggy retries before the processor picked the event up: the record is as the receiver left it.
                pending = [deliver(n, e) for n, _, e in accepted_cases]
                for delivered in new:
                    set_record(delivered.event_id, "SET #status = :s", {":s": {"S": "PROCESSING"}})
                processing = [deliver(n, e) for n, _, e in accepted_cases]
                for delivered in new:
                    set_record(delivered.event_id, "SET #status = :s", {":s": {"S": "PROCESSED"}})
                processed = [deliver(n, e) for n, _, e in accepted_cases]
            finally:
                reset_receiver()
        expected = {n: s for n, s, _ in cases}
        wrong = [f"{r.name}: {r.status}" for r in rejected + new if r.status != expected[r.name]]
        wrong += [f"{r.name} (duplicate): {r.status}" for r in pending + processing + processed if r.status != 200]
        if wrong:
            raise RuntimeError("AWS-calls benchmark answered wrongly: " + ", ".join(wrong))
        attributes = clients["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        in_queue = int(attributes.get("ApproximateNumberOfMessages", 0))
        in_queue += int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))

        # The template's own configuration: the secret comes from Secrets Manager, cached per container.
        with patched_environ(configure(secret_in_env=False)):
            reset_receiver()
            try:
                counter.attach(aws.dynamodb(), aws.sqs(), aws.secretsmanager())
                payloads = fresh_payloads(2, "sm")
                cold = [deliver("first delivery of a container", signed_event(payloads[0]))]
                warm = [deliver("second delivery", signed_event(payloads[1]))]
                bad_secret = next(e for n, _, e in rejected_cases if n == "bad-secret")
                forged = [deliver("bad-secret", bad_secret)]
            finally:
                reset_receiver()

    with_id = [r for r in new if not r.event_id.startswith("sha256-")]
    keyless = [r for r in new if r.event_id.startswith("sha256-")]
    duplicates = processing + processed
    worst_new = max(len(r.calls) for r in new)
    worst_duplicate = max(len(r.calls) for r in duplicates)
    worst_pending = max(len(r.calls) for r in pending)
    worst_rejected = max(len(r.calls) for r in rejected)

    def row(label: str, rows: Sequence[Delivered], goal: int | None, minimum: int) -> tuple[str, ...]:
        worst = max(len(r.calls) for r in rows)
        statuses = ", ".join(str(s) for s in sorted({r.status for r in rows}))
        return (
            label,
            str(goal) if goal is not None else "—",
            _group(rows),
            _operations(rows),
            statuses,
            str(minimum),
            ratio(worst, minimum) if minimum else ("—" if worst == 0 else "∞"),
            verdict(worst <= goal) if goal is not None else "(informative)",
        )

    rows = [
        row("New event with eventId (every corpus type)", with_id, GOAL_CALLS_NEW, MIN_CALLS_NEW),
        row("New keyless event (connector/status_updated)", keyless, GOAL_CALLS_NEW, MIN_CALLS_NEW),
        row("Duplicate, event being processed (PROCESSING)", processing, GOAL_CALLS_DUPLICATE, MIN_CALLS_DUPLICATE),
        row("Duplicate, event processed (PROCESSED)", processed, GOAL_CALLS_DUPLICATE, MIN_CALLS_DUPLICATE),
        row(
            "Duplicate before the processor picked it up (RECEIVED)", pending, GOAL_CALLS_DUPLICATE, MIN_CALLS_DUPLICATE
        ),
        row("4XX delivery (every rejection of the corpus)", rejected, GOAL_CALLS_REJECTED, MIN_CALLS_REJECTED),
        row("Template config (secret in Secrets Manager): first delivery", cold, None, MIN_CALLS_NEW),
        row("Template config: next delivery (secret cached)", warm, None, MIN_CALLS_NEW),
        row("Template config: forged delivery (bad secret)", forged, None, MIN_CALLS_REJECTED),
    ]
    goal_rows = [
        ("a new event", new, GOAL_CALLS_NEW),
        ("a duplicate of an event the processor has", duplicates, GOAL_CALLS_DUPLICATE),
        ("a duplicate arriving before the processor picked the event up", pending, GOAL_CALLS_DUPLICATE),
        ("a 4XX delivery", rejected, GOAL_CALLS_REJECTED),
    ]
    met = all(max(len(r.calls) for r in group) <= goal for _, group, goal in goal_rows)
    attempts = sum(r.attempts for _, group, _ in goal_rows for r in group)
    calls = sum(len(r.calls) for _, group, _ in goal_rows for r in group)
    resends = sum(r.calls.count("sqs.SendMessage") for r in pending)
    notes = [
        "Counted against moto (`mock_aws`, tables/queues/secret created from template.yaml) with botocore hooks on "
        "the receiver's own clients (`aws.dynamodb()`, `aws.sqs()`, `aws.secretsmanager()`): `before-call` per API "
        f"call, `request-created` per HTTP attempt ({calls} calls, {attempts} attempts over the goal rows).",
        f"Baseline = the minimum conceivable: {MIN_CALLS_NEW} for a new event (one conditional write to dedupe + "
        f"one send), {MIN_CALLS_DUPLICATE} for a duplicate (the losing conditional write, which returns the record "
        f"with ALL_OLD), {MIN_CALLS_REJECTED} for a 4XX.",
        "Each corpus event is delivered once (new), then again three times: with its record as the receiver left "
        "it, then with the record's status set to PROCESSING, then PROCESSED (as the processor sets them).",
        "Except for the 'Template config' rows, the secret is in the environment (no Secrets Manager call). With the "
        "template's WEBHOOK_SECRET_ARN the first delivery of each container also reads the secret; it is then cached.",
        f"Messages in the queue after these deliveries: {in_queue}, for {len(new)} distinct events accepted and "
        f"{resends} sends made by the duplicates before pick-up"
        + (" (SQS FIFO deduplication on the eventId dropped those)." if resends and in_queue == len(new) else "."),
    ]
    for what, group, goal in goal_rows:
        worst = max(len(r.calls) for r in group)
        if worst <= goal:
            continue
        operations = sorted({op for r in group if len(r.calls) == worst for op in r.calls})
        made_by = [f"{op} (from {', '.join(sorted(counter.callers.get(op, {'?'})))})" for op in operations]
        notes.insert(0, f"**Goal missed**: {what} costs {worst} calls (goal {goal}): {'; '.join(made_by)}.")
    data.update(
        new=worst_new,
        new_min=min(len(r.calls) for r in new),
        keyless=max(len(r.calls) for r in keyless) if keyless else None,
        duplicate=worst_duplicate,
        duplicate_pending=worst_pending,
        rejected=worst_rejected,
        new_operations=sorted({r.calls for r in new}),
        duplicate_operations=sorted({r.calls for r in duplicates}),
        pending_operations=sorted({r.calls for r in pending}),
        rejected_count=len(rejected),
        accepted_count=len(new),
        secrets_manager_first=len(cold[0].calls),
        secrets_manager_next=len(warm[0].calls),
        forged_calls=len(forged[0].calls),
        queue_messages=in_queue,
        goal_met=met,
    )
    table_ = Table(
        (
            "Delivery",
            "Goal (calls)",
            "Measured (calls)",
            "Operations",
            "Status",
            "Baseline: minimum",
            "Ratio",
            "Verdict",
        ),
        tuple(rows),
    )
    return Measure("2. AWS calls per delivery", table_, tuple(notes), met=met), data


# ---------------------------------------------------------------------------------------------------------
# 3. Cold start
# ---------------------------------------------------------------------------------------------------------

HANDLER_PROCESS = """
import json, sys
from importlib import util
spec = util.spec_from_file_location("receiver_app", sys.argv[1])
module = util.module_from_spec(spec)
spec.loader.exec_module(module)
if len(sys.argv) > 2:
    class Context:
        function_name = "ReceiverFunction"
        memory_limit_in_mb = 256
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ReceiverFunction"
        aws_request_id = "00000000-0000-0000-0000-000000000000"
        def get_remaining_time_in_millis(self):
            return 5000
    with open(sys.argv[2], encoding="utf-8") as handle:
        event = json.load(handle)
    response = module.lambda_handler(event, Context())
    if response["statusCode"] != 202:
        sys.exit("unexpected answer: " + json.dumps(response))
"""

BOTO3_PROCESS = """
import json, sys, time, uuid
from datetime import UTC, datetime
import boto3
from botocore.config import Config
with open(sys.argv[1], encoding="utf-8") as handle:
    job = json.load(handle)
config = Config(connect_timeout=1, read_timeout=1.5, retries={"max_attempts": 2, "mode": "standard"})
session = boto3.session.Session()
dynamodb = session.client("dynamodb", config=config)
sqs = session.client("sqs", config=config)
now = time.time()
item = {
    "eventId": {"S": job["event_id"]},
    "eventType": {"S": job["event_type"]},
    "status": {"S": "RECEIVED"},
    "keySource": {"S": "eventId"},
    "payload": {"S": job["body"]},
    "receivedAt": {"S": datetime.fromtimestamp(now, UTC).isoformat()},
    "receivedAtEpoch": {"N": str(int(now))},
    "expiresAt": {"N": str(int(now) + 30 * 86400)},
    "attemptToken": {"S": uuid.uuid4().hex},
}
dynamodb.put_item(TableName=job["table"], Item=item, ConditionExpression="attribute_not_exists(eventId)")
fifo = {"MessageGroupId": job["event_id"], "MessageDeduplicationId": job["event_id"]}
sqs.send_message(
    QueueUrl=job["queue_url"],
    MessageBody=job["body"],
    MessageAttributes={
        "eventId": {"DataType": "String", "StringValue": job["event_id"]},
        "eventType": {"DataType": "String", "StringValue": job["event_type"]},
    },
    **(fifo if job["queue_url"].endswith(".fifo") else {}),
)
"""


@dataclass
class Variant:
    key: str
    label: str
    argv: Callable[[int], list[str]]  # round number -> the arguments after `python -c CODE`
    code: str
    env: dict[str, str]
    sends: int  # messages it queues
    samples: list[float] = field(default_factory=list)


def python_executable() -> str:
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _run_process(python: str, variant: Variant, round_number: int) -> float:
    argv = [python, "-c", variant.code, *variant.argv(round_number)]
    started = time.perf_counter()
    done = subprocess.run(
        argv, env=variant.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False, timeout=120
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cold-start process {variant.key} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return elapsed * 1000


IMPORT_GROUPS = (
    ("boto3", "`boto3` (B imports it too)"),
    ("aws_lambda_powertools", "`aws_lambda_powertools`"),
)


def import_times(python: str, env: dict[str, str], runs: int) -> list[tuple[str, float]]:
    """Median over `runs` of `-X importtime` for A's import only (ms): the whole, the big packages, our own code."""
    figures: dict[str, list[float]] = {}
    for _ in range(runs):
        done = subprocess.run(
            [python, "-X", "importtime", "-c", HANDLER_PROCESS, str(APP_PATH)],
            env=env,
            capture_output=True,
            check=True,
            timeout=120,
        )
        total = own = 0.0
        packages: dict[str, float] = {}
        for line in done.stderr.decode(errors="replace").splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            self_us, cumulative_us, raw_name = line.removeprefix("import time:").split("|")
            name = raw_name.strip()
            if raw_name[1:] == raw_name[1:].lstrip():  # not indented: imported by the program itself
                total += int(cumulative_us) / 1000
            if name in dict(IMPORT_GROUPS):
                packages[name] = max(packages.get(name, 0.0), int(cumulative_us) / 1000)
            if name.split(".")[0] == "pluggy_pipeline":
                own += int(self_us) / 1000
        figures.setdefault("all imports", []).append(total)
        for name, label in IMPORT_GROUPS:
            figures.setdefault(label, []).append(packages.get(name, 0.0))
        figures.setdefault("`pluggy_pipeline` modules' own time", []).append(own)
    return [(label, Stats.of(values).median) for label, values in figures.items()]


def measure_cold_start(sizes: Sizes, new_event_calls: str) -> tuple[Measure, dict[str, Any]]:
    import logging

    from pluggy_pipeline_local.moto_server import moto_server

    python = python_executable()
    data: dict[str, Any] = {}
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    rounds = sizes.cold_warmup_rounds + sizes.cold_rounds
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp, moto_server(template()) as local:
        work = Path(tmp)
        resources = local.resources
        table, queue_url = resources.tables["EventsTable"], resources.queue_urls["EventQueue"]
        base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
        common = {
            **base,
            **local.env,
            "AWS_CONFIG_FILE": str(work / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONPATH": str(LAYER_DIR),  # as Lambda puts the layer's /opt/python on sys.path
        }
        env_secret = {**common, **receiver_environment(resources, secret_in_env=True)}
        env_arn = {**common, **receiver_environment(resources, secret_in_env=False)}
        for kind in ("a", "sm", "b"):
            for i, generated in enumerate(fresh_payloads(rounds, f"cold{kind}")):
                payload = generated
                if "eventId" not in payload:  # keep every cold-start event the same shape
                    payload = {**VALID_PAYLOADS["item-updated"], "eventId": f"cold{kind}-{uuid.uuid4()}"}
                if kind == "b":
                    body = json.dumps(payload, separators=(",", ":"))
                    job = {
                        "table": table,
                        "queue_url": queue_url,
                        "event_id": payload["eventId"],
                        "event_type": payload["event"],
                        "body": body,
                    }
                    (work / f"b-{i}.json").write_text(json.dumps(job), encoding="utf-8")
                else:
                    (work / f"{kind}-{i}.json").write_text(json.dumps(signed_event(payload)), encoding="utf-8")
        app = str(APP_PATH)
        variants = [
            Variant(
                "A",
                "A: handler imported, serves one event",
                lambda r: [app, str(work / f"a-{r}.json")],
                HANDLER_PROCESS,
                env_secret,
                1,
            ),
            Variant(
                "B",
                "B: boto3, two clients, put_item + send_message",
                lambda r: [str(work / f"b-{r}.json")],
                BOTO3_PROCESS,
                env_secret,
                1,
            ),
            Variant("A_import", "A, import only (no event)", lambda r: [app], HANDLER_PROCESS, env_secret, 0),
            Variant(
                "A_sm",
                "A with the template's WEBHOOK_SECRET_ARN (+ GetSecretValue)",
                lambda r: [app, str(work / f"sm-{r}.json")],
                HANDLER_PROCESS,
                env_arn,
                1,
            ),
            Variant("floor", "`python -c pass` (interpreter start and exit)", lambda r: [], "pass", env_secret, 0),
        ]
        for round_number in range(rounds):
            shift = round_number % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                elapsed = _run_process(python, variant, round_number)
                if round_number >= sizes.cold_warmup_rounds:
                    variant.samples.append(elapsed)
            if round_number and round_number % 5 == 0:
                progress(f"cold start: round {round_number}/{rounds}")
        attributes = local.clients["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        queued = int(attributes.get("ApproximateNumberOfMessages", 0))
        expected_queued = rounds * sum(v.sends for v in variants)
        if queued != expected_queued:
            raise RuntimeError(f"cold start: {queued} messages queued, expected {expected_queued}")
        imports = import_times(python, env_secret, sizes.importtime_runs) if sizes.importtime_runs else None
    werkzeug.setLevel(level)

    by_key = {v.key: v for v in variants}
    stats = {v.key: Stats.of(v.samples) for v in variants}
    a, b = stats["A"], stats["B"]
    paired = [x / y for x, y in zip(by_key["A"].samples, by_key["B"].samples, strict=True)]
    cold_ratio = a.median / b.median
    met = cold_ratio <= GOAL_COLD_RATIO
    rows = []
    for variant in variants:
        s = stats[variant.key]
        is_goal = variant.key == "A"
        rows.append(
            (
                variant.label,
                f"A/B ≤ {GOAL_COLD_RATIO}" if is_goal else "—",
                f"{fmt(s.median)} ms",
                f"{fmt(s.p95)} ms",
                f"{fmt(b.median)} ms" if variant.key != "B" else "—",
                ratio(s.median, b.median) if variant.key != "B" else "1.00x",
                verdict(met) if is_goal else "(informative)",
            )
        )
    notes = [
        f"{sizes.cold_rounds} rounds after {sizes.cold_warmup_rounds} warm-up round(s); each round runs every "
        "process once, in an order rotating from round to round. Wall time is `perf_counter` around "
        f"`subprocess.run` of `{python} -c ...` (start, imports, work, exit).",
        f"p95 ratio A/B: {ratio(a.p95, b.p95)}; median of the per-round A/B ratios: {fmt(Stats.of(paired).median)}. "
        f"A costs {fmt(a.median - b.median)} ms more than B at the median.",
        "Both talk real HTTP to one moto server (`ThreadedMotoServer` on 127.0.0.1 in the benchmark process, "
        "resources from template.yaml); both get the same environment (the receiver's, `AWS_ENDPOINT_URL`, fake "
        "credentials, no AWS config files, PYTHONPATH=layers/common as Lambda's /opt/python).",
        f"A makes the receiver's calls for a new event ({new_event_calls}); B makes exactly "
        "two (the minimum). What A adds over B: importing Powertools and pluggy_pipeline, building the Logger, "
        "Metrics and settings, the log and metrics output, and the receiver's extra work per event.",
        "Lambda's own cold start (sandbox, runtime bootstrap) is not in either figure; it adds the same to both.",
    ]
    if imports is not None:
        notes.append(
            f"`python -X importtime` of A's import only (median of {sizes.importtime_runs} runs; importtime adds "
            "its own overhead): " + ", ".join(f"{label} {fmt(ms)} ms" for label, ms in imports) + "."
        )
    if not met:
        notes.insert(
            0,
            f"**Goal missed**: A/B = {cold_ratio:.2f} (goal ≤ {GOAL_COLD_RATIO}). Importing the handler alone "
            f"takes {fmt(stats['A_import'].median)} ms against {fmt(stats['floor'].median)} ms for an empty "
            "interpreter; see the import times below.",
        )
    data.update(stats=stats, ratio=cold_ratio, paired_ratio=Stats.of(paired).median, goal_met=met, imports=imports)
    cold_table = Table(
        ("Process", "Goal", "Median", "p95", "Baseline (B) median", "Ratio to B (medians)", "Verdict"), tuple(rows)
    )
    return Measure("3. Cold start (fresh process, one event)", cold_table, tuple(notes), met=met), data


# ---------------------------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------------------------


def run(quick: bool, sizes: Sizes | None = None) -> Section:
    sizes = sizes or (QUICK if quick else FULL)
    data: dict[str, Any] = {"sizes": sizes}
    with patched_environ(_AWS_ENV, remove=_AWS_ENV_REMOVED):
        # Names only: the in-process run talks to fakes, but its environment is the template's.
        with mock_aws():
            names = create_resources(
                template(),
                dynamodb=boto3.client("dynamodb", region_name=REGION),
                sqs=boto3.client("sqs", region_name=REGION),
                secretsmanager=boto3.client("secretsmanager", region_name=REGION),
            )
        with patched_environ(receiver_environment(names, secret_in_env=True)):
            reset_receiver()
            app = load_app()
            progress(f"in-process: {sizes.in_process_events} events x 5 runs")
            in_process, data["in_process"] = measure_in_process(app, sizes)
        progress("AWS calls per delivery (moto)")
        calls, data["aws_calls"] = measure_aws_calls(app)
        reset_receiver()
    progress(f"cold start: {sizes.cold_rounds} rounds x 5 processes")
    operations = data["aws_calls"]["new_operations"]
    described = " + ".join(operations[0]) if len(operations) == 1 else "see measure 2"
    cold, data["cold_start"] = measure_cold_start(sizes, described)

    ip, ac, cs = data["in_process"], data["aws_calls"], data["cold_start"]
    summary = Table(
        ("Measure", "Goal", "Measured", "Baseline (same run)", "Ratio", "Verdict"),
        (
            (
                "In-process cost, new event (median; p95)",
                f"< {fmt(GOAL_IN_PROCESS_US)} µs",
                f"{fmt(ip['new']['us'].median)} µs; {fmt(ip['new']['us'].p95)} µs",
                f"{fmt(ip['new']['baseline_us'].median)} µs; {fmt(ip['new']['baseline_us'].p95)} µs",
                ratio(ip["new"]["us"].median, ip["new"]["baseline_us"].median),
                verdict(ip["new"]["us"].median < GOAL_IN_PROCESS_US),
            ),
            (
                "In-process cost, duplicate of a processed event (median; p95)",
                f"< {fmt(GOAL_IN_PROCESS_US)} µs",
                f"{fmt(ip['duplicate']['us'].median)} µs; {fmt(ip['duplicate']['us'].p95)} µs",
                f"{fmt(ip['duplicate']['baseline_us'].median)} µs; {fmt(ip['duplicate']['baseline_us'].p95)} µs",
                ratio(ip["duplicate"]["us"].median, ip["duplicate"]["baseline_us"].median),
                verdict(ip["duplicate"]["us"].median < GOAL_IN_PROCESS_US),
            ),
            (
                "AWS calls, new event",
                str(GOAL_CALLS_NEW),
                str(ac["new"]),
                f"{MIN_CALLS_NEW} (minimum conceivable)",
                ratio(ac["new"], MIN_CALLS_NEW),
                verdict(ac["new"] <= GOAL_CALLS_NEW),
            ),
            (
                "AWS calls, duplicate (the processor has the event)",
                str(GOAL_CALLS_DUPLICATE),
                str(ac["duplicate"]),
                f"{MIN_CALLS_DUPLICATE} (minimum conceivable)",
                ratio(ac["duplicate"], MIN_CALLS_DUPLICATE),
                verdict(ac["duplicate"] <= GOAL_CALLS_DUPLICATE),
            ),
            (
                "AWS calls, duplicate before the processor picked it up",
                str(GOAL_CALLS_DUPLICATE),
                str(ac["duplicate_pending"]),
                f"{MIN_CALLS_DUPLICATE} (minimum conceivable)",
                ratio(ac["duplicate_pending"], MIN_CALLS_DUPLICATE),
                verdict(ac["duplicate_pending"] <= GOAL_CALLS_DUPLICATE),
            ),
            (
                "AWS calls, 4XX delivery",
                str(GOAL_CALLS_REJECTED),
                str(ac["rejected"]),
                f"{MIN_CALLS_REJECTED} (minimum conceivable)",
                "—",
                verdict(ac["rejected"] <= GOAL_CALLS_REJECTED),
            ),
            (
                "Cold start, A (median; p95)",
                f"A/B ≤ {GOAL_COLD_RATIO}",
                f"{fmt(cs['stats']['A'].median)} ms; {fmt(cs['stats']['A'].p95)} ms",
                f"B: {fmt(cs['stats']['B'].median)} ms; {fmt(cs['stats']['B'].p95)} ms",
                f"{cs['ratio']:.2f}x",
                verdict(cs["goal_met"]),
            ),
        ),
    )
    notes = (
        "The machine is shared and noisy: every figure is set against a baseline measured in the same run, "
        "interleaved with it, and reported as median and p95 (nearest rank).",
        "Nothing in this section is written by hand: `python -m bench` regenerates it.",
    )
    return Section("receiver", "Receiver", summary, (in_process, calls, cold), notes, data)
