"""ReceiverFunction: API Gateway POST /webhooks/pluggy -> verify, dedupe, enqueue, answer fast."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pluggy_pipeline.startup import imports_without_gc

with imports_without_gc():
    from pluggy_pipeline.observability import lambda_context_on_first_line, receiver_metrics
    from pluggy_pipeline.receiver import receive, record

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


# Powertools' inject_lambda_context(clear_state=True) and log_metrics, printing the same lines for less
# per invocation (pluggy_pipeline/observability.py).
@lambda_context_on_first_line
@receiver_metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcome = receive(event)
    record(outcome, receiver_metrics)
    return outcome.response.to_proxy()
