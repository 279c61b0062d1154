"""PublisherFunction: RecordsTable's stream -> change events on the stack's EventBridge bus."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pluggy_pipeline.startup import imports_without_gc

with imports_without_gc():
    from aws_lambda_powertools.metrics import MetricUnit
    from pluggy_pipeline.observability import logger, metrics
    from pluggy_pipeline.publisher import get_publisher

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, list[dict[str, str]]]:
    records = event.get("Records") or []
    result = get_publisher().publish(records)
    metrics.add_metric(name="ChangeEventsPut", unit=MetricUnit.Count, value=result.put)
    if result.failed_sequence:
        metrics.add_metric(name="ChangeEventBatchesRetried", unit=MetricUnit.Count, value=1)
    logger.info("published", extra={"records": len(records), "events": result.events, "put": result.put})
    return result.response()
