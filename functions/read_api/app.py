"""ReadApiFunction: the app's read API (AWS_IAM): a user's items, an item with its accounts, an account's
transactions newest first in pages, and the item's products (investments and their transactions, a card's
bills, loans, identity, consents). Routes, validation and answers: pluggy_pipeline.read_api."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pluggy_pipeline.startup import imports_without_gc

with imports_without_gc():
    from aws_lambda_powertools.logging import correlation_paths
    from pluggy_pipeline.observability import logger
    from pluggy_pipeline.read_api import handle

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


# log_event=False even if POWERTOOLS_LOGGER_LOG_EVENT is set: an event carries the caller's clientUserId.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, context)
