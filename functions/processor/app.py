"""ProcessorFunction: SQS FIFO -> re-fetch from Pluggy -> items, accounts and transactions in DynamoDB."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pluggy_pipeline.observability import logger, metrics
from pluggy_pipeline.processor import QueueMessage, get_processor

# A failure holds back only its own message group (one item's events, kept in order); other groups go on.
batch = SqsFifoPartialProcessor(skip_group_on_error=True)


def record_handler(record: SQSRecord) -> None:
    get_processor().process(QueueMessage.from_sqs_record(record.raw_event))


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=batch, context=context)
