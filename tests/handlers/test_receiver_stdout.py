"""The receiver's lean observability prints what Powertools' own decorators print, byte for byte.

functions/receiver/app.py uses `lambda_context_on_first_line` and `CountMetrics.log_metrics`
(pluggy_pipeline/observability.py) instead of `@logger.inject_lambda_context(clear_state=True)` and
`@metrics.log_metrics`, and `record()` sets the event's log keys only for a line it writes. Here the same
deliveries (every events/receiver file, their re-deliveries, a conflict, a failed send, a misconfiguration)
go once through a reference handler built the Powertools way, with `record()` as it was, and once through
the real handler, each on fresh tables; everything printed (JSON log lines and EMF blobs, in order) must be
the same, timestamps and the source line numbers aside. The last tests break the lean path on purpose and
check that the comparison notices.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import aws_lambda_powertools.logging.logger as powertools_logger
import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pluggy_pipeline import aws, observability
from pluggy_pipeline import receiver as receiver_module
from pluggy_pipeline.errors import TransientError
from pluggy_pipeline.event_queue import EventQueue
from pluggy_pipeline.observability import METRICS_NAMESPACE, SERVICE, logger, metrics
from pluggy_pipeline.receiver import Outcome, receive
from pluggy_pipeline_local.devsecrets import (
    LOCAL_PLUGGY_CLIENT_ID,
    LOCAL_SIGNING_KEY,
    LOCAL_WEBHOOK_SECRET,
    PLUGGY_SOURCE_IP,
)
from pluggy_pipeline_local.template import create_resources, function_environment

from tests.conftest import REPO_ROOT, TEMPLATE, Stack, event_names, load_event
from tests.handlers.test_receiver_guarantees import ITEM, delivery

APP_PATH = REPO_ROOT / "functions" / "receiver" / "app.py"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class Reference:
    """record() as it was before the lean path, under Powertools' own decorators."""

    @staticmethod
    def record(outcome: Outcome, metrics: Metrics) -> None:  # named record: the log lines' location
        if outcome.event_id:
            logger.append_keys(eventId=outcome.event_id, event=outcome.event_type)
            logger.set_correlation_id(outcome.event_id)
        fields = {"result": outcome.result, "status": outcome.response.status, "reason": outcome.reason}
        if outcome.result == "error":
            logger.warning("delivery " + outcome.result, extra=fields)
        elif outcome.result == "rejected":
            logger.info("delivery " + outcome.result, extra=fields)
        else:
            logger.debug("delivery " + outcome.result, extra=fields)
        name = receiver_module._METRIC_BY_RESULT[outcome.result]
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        if outcome.reason:
            metrics.add_metric(name=f"{name}_{outcome.reason}", unit=MetricUnit.Count, value=1)

    @staticmethod
    def handler() -> Handler:
        @logger.inject_lambda_context(clear_state=True)
        @metrics.log_metrics
        def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            outcome = receive(event)
            Reference.record(outcome, metrics)
            return outcome.response.to_proxy()

        return lambda_handler


def lean_handler() -> Handler:
    """functions/receiver/app.py loaded afresh (as a new container loads it): its first call is the cold one."""
    spec = importlib.util.spec_from_file_location(f"receiver_app_{uuid.uuid4().hex[:8]}", APP_PATH)
    assert spec and spec.loader
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler  # type: ignore[no-any-return]


@dataclass
class Context:
    aws_request_id: str
    function_name: str = "ReceiverFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:ReceiverFunction"

    def get_remaining_time_in_millis(self) -> int:
        return 5000


Step = tuple[str, Callable[[], dict[str, Any]], Callable[[pytest.MonkeyPatch], None] | None]


def failing_send(*_: Any, **__: Any) -> str:
    raise TransientError("SQS is unavailable")


def steps() -> list[Step]:
    """Every corpus delivery, then each again (duplicates, resent), a conflict, a failed send, no configuration."""
    corpus = [(name, (lambda name=name: load_event(f"receiver/{name}")), None) for name in event_names("receiver")]
    conflict = {**ITEM, "eventId": "stdout-conflict", "itemId": "another-item"}
    return [
        *corpus,
        *[(f"again {name}", make, None) for name, make, _ in corpus],
        ("first body", lambda: delivery({**ITEM, "eventId": "stdout-conflict"}), None),
        ("another body, same eventId", lambda: delivery(conflict), None),
        ("a metric from elsewhere", lambda: delivery({**ITEM, "eventId": "stdout-other-metric"}), _metric_elsewhere),
        ("send fails", lambda: delivery({**ITEM, "eventId": "stdout-failed-send"}), _failing_queue),
        ("not configured", lambda: delivery({**ITEM, "eventId": "stdout-misconfigured"}), _no_table),
    ]


def _metric_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Something else counts on Powertools' shared Metrics during the invocation: one blob holds both."""
    handle = receiver_module.WebhookReceiver.handle

    def counting(self: receiver_module.WebhookReceiver, request: Any) -> Outcome:
        metrics.add_metric(name="SomethingElse", unit=MetricUnit.Count, value=1)
        return handle(self, request)

    monkeypatch.setattr(receiver_module.WebhookReceiver, "handle", counting)


def _failing_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EventQueue, "send", failing_send)


def _no_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTS_TABLE_NAME")
    receiver_module.get_receiver.cache_clear()


@contextlib.contextmanager
def captured_stdout() -> Iterator[io.StringIO]:
    """Everything printed, in order: Powertools' log handler writes to the stream it was created with."""
    buffer = io.StringIO()
    handlers = [h for h in logging.getLogger(SERVICE).handlers if isinstance(h, logging.StreamHandler)]
    saved = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = buffer
    try:
        with contextlib.redirect_stdout(buffer):
            yield buffer
    finally:
        for handler, stream in zip(handlers, saved, strict=True):
            handler.stream = stream


def run(make_handler: Callable[[], Handler], stack: Stack, level: str, env: dict[str, str]) -> list[str]:
    """The steps through a new handler on new tables, as a new container; every line it printed."""
    resources = create_resources(
        TEMPLATE,
        dynamodb=stack.dynamodb,
        sqs=stack.sqs,
        secretsmanager=stack.secretsmanager,
        prefix=f"so-{uuid.uuid4().hex[:8]}",
        secret_values={"WebhookSecret": json.dumps({"current": LOCAL_WEBHOOK_SECRET, "signingKey": LOCAL_SIGNING_KEY})},
    )
    variables = function_environment(
        TEMPLATE,
        "ReceiverFunction",
        resources,
        parameters={"PluggyClientId": LOCAL_PLUGGY_CLIENT_ID, "RequireSignature": "true"},
    )
    saved_level = logger.log_level
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**variables, "ALLOWED_SOURCE_CIDRS": f"{PLUGGY_SOURCE_IP}/32", **env}.items():
            patch.setenv(key, value)
        patch.setattr(powertools_logger, "is_cold_start", True)  # a new container
        aws.reset_clients()
        receiver_module.get_receiver.cache_clear()
        metrics.clear_metrics()
        logger.setLevel(level)
        handler = make_handler()
        try:
            with captured_stdout() as out:
                for number, (_, make_event, setup) in enumerate(steps()):
                    if setup is not None:
                        setup(patch)
                    handler(make_event(), Context(aws_request_id=f"request-{number}"))
        finally:
            logger.setLevel(saved_level)
            aws.reset_clients()
            receiver_module.get_receiver.cache_clear()
            metrics.clear_metrics()
    return out.getvalue().splitlines()


_LOCATION = re.compile(r":\d+$")


def normalized(line: str) -> str:
    """The line with its timestamp and the line number of its location blanked; key order kept."""
    document = json.loads(line)
    if "_aws" in document:
        stamp = document["_aws"]["Timestamp"]
        assert isinstance(stamp, int) and abs(stamp - time.time() * 1000) < 600_000, line
        document["_aws"]["Timestamp"] = 0
    else:
        assert isinstance(document.get("timestamp"), str), line
        document["timestamp"] = "<timestamp>"
        document["location"] = _LOCATION.sub("", document["location"])
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def differences(expected: list[str], actual: list[str]) -> list[str]:
    found = []
    for number, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if normalized(want) != normalized(got):
            found.append(f"line {number}:\n  Powertools: {want}\n  lean:       {got}")
    if len(expected) != len(actual):
        found.append(f"{len(expected)} lines from Powertools' decorators, {len(actual)} from the handler")
    return found


CASES = {
    "info": ("INFO", {}),
    "debug": ("DEBUG", {}),
    "metrics disabled": ("DEBUG", {"POWERTOOLS_METRICS_DISABLED": "true"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_handler_prints_what_powertools_decorators_print(case: str, stack: Stack) -> None:
    level, env = CASES[case]
    expected = run(Reference.handler, stack, level, env)
    actual = run(lean_handler, stack, level, env)
    assert differences(expected, actual) == []
    # The comparison had something to compare: log lines with the context keys, and (enabled) EMF blobs.
    documents = [json.loads(line) for line in expected]
    logs = [d for d in documents if "level" in d]
    blobs = [d for d in documents if "_aws" in d]
    assert logs and all(d["function_request_id"].startswith("request-") for d in logs)
    assert [d["cold_start"] for d in logs if d["function_request_id"] == "request-0"] in ([], [True])
    assert {d["cold_start"] for d in logs if d["function_request_id"] != "request-0"} == {False}
    if "POWERTOOLS_METRICS_DISABLED" in env:
        assert blobs == []
        return
    assert len(blobs) == len(steps())  # one EMF blob per invocation
    for blob in blobs:
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == METRICS_NAMESPACE and directive["Dimensions"] == [["service"]]
        assert blob["service"] == SERVICE
        assert all(m["Unit"] == "Count" and blob[m["Name"]] == [1.0] for m in directive["Metrics"])
    names = {m["Name"] for blob in blobs for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"WebhookAccepted", "WebhookDuplicate_resent", "WebhookConflict_body_mismatch"} <= names
    assert {"WebhookRejected_bad_secret", "WebhookFailed_transient", "WebhookFailed_not_configured"} <= names
    assert any({"SomethingElse", "WebhookAccepted"} <= set(blob) for blob in blobs)
    if level == "DEBUG":  # accepted and duplicate deliveries are logged, with their event's keys
        accepted = [d for d in logs if d["message"] == "delivery accepted"]
        assert accepted and all(d["correlation_id"] == d["eventId"] for d in accepted)


def test_the_comparison_notices_missing_context_keys(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = run(Reference.handler, stack, "INFO", {})
    monkeypatch.setattr(observability._LambdaContextOnFirstLine, "structure", lambda self: None)
    actual = run(lean_handler, stack, "INFO", {})
    # Without them the lines carry whatever keys the Logger held last (here: the reference run's last request).
    assert any('"function_request_id":"request-' in diff for diff in differences(expected, actual))


def test_the_comparison_notices_another_metric_unit(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = run(Reference.handler, stack, "INFO", {})
    monkeypatch.setattr(receiver_module, "_COUNT", MetricUnit.Seconds)
    actual = run(lean_handler, stack, "INFO", {})
    assert any('"Unit":"Seconds"' in diff for diff in differences(expected, actual))
