"""The one Logger and Metrics of each function, shared by the handler and the package.

A single parent Logger (not per-module child loggers) so domain code can add keys such as eventId
whether it runs under a Lambda handler, a test or the local tools. Powertools reads its level and
sampling settings from the environment here, once per container, as its documentation expects.

The receiver answers Pluggy within a budget and most of its invocations write no log line and the same
one or two count metrics, so it uses the lean equivalents of Powertools' two decorators below: they print
exactly what `@logger.inject_lambda_context(clear_state=True)` and `@metrics.log_metrics` print (Powertools
still builds every line; tests/handlers/test_receiver_stdout.py compares the two byte for byte), without
their per-invocation cost:
- `lambda_context_on_first_line`: the Lambda context keys are set on the Logger when the invocation writes
  its first line, not on every invocation;
- `CountMetrics`: the EMF line of a metric set is serialized by Powertools the first time that set is seen;
  later invocations with the same set print it again with only the timestamp changed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model
from aws_lambda_powertools.logging.logger import _is_cold_start  # the flag Powertools' own decorator flips
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import is_durable_context, resolve_truthy_env_var_choice

SERVICE = "pluggy-pipeline"
METRICS_NAMESPACE = "PluggyPipeline"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)

# botocore's DEBUG lines carry whole request and response bodies (a RecordsTable write of an identity: name, CPF,
# addresses). With the stack's LogLevel DEBUG, Lambda lowers the root logger to DEBUG: ours log at DEBUG then, the
# AWS SDK's wire logs never (its warnings and errors still pass).
for _sdk in ("botocore", "boto3"):
    logging.getLogger(_sdk).setLevel(logging.WARNING)

Handler = TypeVar("Handler", bound=Callable[..., Any])


class MetricSink(Protocol):
    """What domain code needs to count: Powertools' `Metrics.add_metric` (or `CountMetrics`, or a test's fake)."""

    def add_metric(self, *, name: str, unit: Any, value: float) -> None: ...


# ---------------------------------------------------------------------------------------------- logging


class _LambdaContextOnFirstLine(logging.Filter):
    """Sets the Lambda context keys (as `inject_lambda_context(clear_state=True)` does) when a line is written.

    A filter of the Logger's handler: it runs only for a record that passed the level check, before the
    formatter reads the keys, whichever module logged it.
    """

    def __init__(self, powertools_logger: Logger) -> None:
        super().__init__()
        self._logger = powertools_logger
        self.pending: tuple[bool, Any] | None = None  # (cold_start, context) of the running invocation

    def structure(self) -> None:
        if self.pending is None:
            return
        cold_start, context = self.pending
        self.pending = None
        unwrapped = build_lambda_context_model(context.lambda_context if is_durable_context(context) else context)
        self._logger.structure_logs(cold_start=cold_start, **unwrapped.__dict__)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.pending is not None:
            self.structure()
        return True


_context_filter = _LambdaContextOnFirstLine(logger)
_service_logger = logging.getLogger(logger.name)  # the stdlib logger Powertools' Logger writes through


def logs_at(level: int) -> bool:
    """Whether a line at `level` is written now (Powertools' Logger answers the same through __getattr__)."""
    return _service_logger.isEnabledFor(level)


def ensure_lambda_context() -> None:
    """Set the invocation's context keys now: before appending keys of its own that a line must carry."""
    _context_filter.structure()


def lambda_context_on_first_line(handler: Handler) -> Handler:
    """`@logger.inject_lambda_context(clear_state=True)`, paying for the context keys only when a line is written.

    Powertools' own decorator is used when its per-invocation work prints more than the keys: the event
    logged (POWERTOOLS_LOGGER_LOG_EVENT, read at decoration as Powertools reads it). The Logger above has no
    log buffer, the other thing that decorator does per invocation.
    """
    log_event = resolve_truthy_env_var_choice(env=os.getenv(constants.LOGGER_LOG_EVENT_ENV, "false"))
    if log_event:
        return logger.inject_lambda_context(handler, clear_state=True)
    if _context_filter not in logger.registered_handler.filters:
        logger.registered_handler.addFilter(_context_filter)
    first = [True]

    @functools.wraps(handler)
    def decorate(event: Any, context: Any) -> Any:
        # Powertools' cold-start flag is process-wide: only a process's first decorated invocation can see it set.
        cold_start = _is_cold_start() if first[0] else False
        first[0] = False
        _context_filter.pending = (cold_start, context)
        if logger.sampling_rate and not cold_start:
            logger.refresh_sample_rate_calculation()  # as Powertools: the sampling decision is per invocation
        try:
            return handler(event, context)
        finally:
            _context_filter.pending = None  # a line written after the invocation keeps the last keys set

    return cast(Handler, decorate)  # functools.wraps keeps the signature


# ---------------------------------------------------------------------------------------------- metrics


_TIMESTAMP = -987654321012345  # stands for the EMF timestamp while a metric set's line is serialized once


class CountMetrics:
    """`@metrics.log_metrics` for handlers that emit a few count metrics: one EMF line per invocation.

    Collects `add_metric` calls during the invocation. The first time a metric set is flushed, Powertools
    validates, serializes and prints it, and the line is kept with its timestamp cut out; the next time that
    set is flushed the kept line is printed with the current timestamp. Whenever Powertools' Metrics holds
    anything else (metadata, other metrics, dimensions added at run time, metrics disabled), the invocation's
    metrics go through Powertools' own `add_metric` + `flush_metrics`.
    """

    def __init__(self, powertools_metrics: Metrics) -> None:
        self._metrics = powertools_metrics
        self._added: list[tuple[str, Any, float]] = []
        self._lines: dict[tuple[Any, ...], tuple[str, str]] = {}
        self._disabled_env: tuple[Any, ...] | None = None
        self._disabled = False

    def add_metric(self, *, name: str, unit: Any, value: float) -> None:
        self._added.append((name, unit, value))

    def log_metrics(self, handler: Handler) -> Handler:
        @functools.wraps(handler)
        def decorate(event: Any, context: Any) -> Any:
            try:
                return handler(event, context)
            finally:
                self.flush()

        return cast(Handler, decorate)  # functools.wraps keeps the signature

    def flush(self) -> None:
        added, self._added = tuple(self._added), []
        provider = self._metrics.provider
        if (
            added
            and not self._metrics.metric_set
            and not self._metrics.metadata_set
            and not provider.dimension_sets
            and not self.disabled()
        ):
            key = (*added, *self._metrics.dimension_set.items())
            line = self._lines.get(key)
            if line is not None:
                timestamp = provider.timestamp or int(time.time() * 1000)
                # print()'s bytes in one write (print writes the line, then "\n").
                sys.stdout.write(f"{line[0]}{timestamp}{line[1]}")
                return
            self._lines[key] = self._serialize_once(added)
            return
        for name, unit, value in added:
            self._metrics.add_metric(name=name, unit=unit, value=value)
        self._metrics.flush_metrics()

    def disabled(self) -> bool:
        """Powertools' is_metrics_disabled(), computed again only when its two variables change."""
        env = _read_switches()
        if env != self._disabled_env:
            self._disabled_env, self._disabled = env, is_metrics_disabled()
        return self._disabled

    def _serialize_once(self, added: tuple[tuple[str, Any, float], ...]) -> tuple[str, str]:
        """Print the set's line as Powertools' flush_metrics does; return it split around its timestamp."""
        for name, unit, value in added:
            self._metrics.add_metric(name=name, unit=unit, value=value)
        blob: Any = self._metrics.serialize_metric_set()
        printed = _emf_json(blob)
        blob["_aws"]["Timestamp"] = _TIMESTAMP
        before, marker, after = _emf_json(blob).partition(str(_TIMESTAMP))
        self._metrics.provider.clear_metrics()
        print(printed)
        if not marker or str(_TIMESTAMP) in after:
            raise RuntimeError("cannot place the timestamp in the EMF line")
        return before, after + "\n"


def _switch_reader(*names: str) -> Callable[[], tuple[Any, ...]]:
    """Reads the raw values of a few environment variables, for change detection only."""
    return lambda: tuple(map(os.environ.get, names))


_read_switches = _switch_reader(constants.POWERTOOLS_DEV_ENV, constants.METRICS_DISABLED_ENV)


def _emf_json(blob: Any) -> str:
    return json.dumps(blob, separators=(",", ":"))  # as Powertools' flush_metrics


receiver_metrics = CountMetrics(metrics)
