"""The few domain errors the rest of the code branches on.

Adapters (DynamoDB, SQS, Secrets Manager, the Pluggy API) translate their own failures into these,
so callers decide between "retry" and "give up" without knowing which service failed.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error raised on purpose by pluggy_pipeline."""


class ConfigurationError(PipelineError):
    """The function's environment is wrong; raised at cold start so a bad deploy fails loudly."""


class TransientError(PipelineError):
    """A dependency failed in a way that may succeed on retry (throttling, 5XX, timeout, network)."""


class RetryLater(TransientError):
    """A dependency asked us to come back later (a rate limit): the message waits `retry_after` s, unharmed."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(PipelineError):
    """Retrying cannot help (malformed message, 4XX from a dependency other than 404/429)."""


class NotFoundError(PermanentError):
    """The remote resource does not exist (e.g. Pluggy answered 404 for an item): a fact, not a fault."""
