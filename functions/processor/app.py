"""ProcessorFunction: SQS FIFO -> re-fetch from Pluggy -> items, accounts and transactions in DynamoDB."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pluggy_pipeline.startup import imports_without_gc

with imports_without_gc():
    from pluggy_pipeline.observability import logger, metrics
    from pluggy_pipeline.processor import QueueMessage, get_processor

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, list[dict[str, str]]]:
    # Each message group (one item's events) is coalesced and runs in order; a failure holds back only the
    # rest of its own group, reported as batchItemFailures (ReportBatchItemFailures on the event source).
    messages = [QueueMessage.from_sqs_record(record) for record in event.get("Records") or []]
    failed = get_processor().process_batch(messages, time_left=lambda: context.get_remaining_time_in_millis() / 1000)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
