"""ReceiverFunction: API Gateway POST /webhooks/pluggy -> verify, dedupe, enqueue, answer fast."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pluggy_pipeline.observability import logger, metrics
from pluggy_pipeline.receiver import receive, record


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcome = receive(event)
    record(outcome, metrics)
    return outcome.response.to_proxy()
