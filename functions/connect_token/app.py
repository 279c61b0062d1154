"""ConnectTokenFunction: POST /connect-token -> a Pluggy Connect token bound to the app's user, webhooks to us."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pluggy_pipeline.startup import imports_without_gc

with imports_without_gc():
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
    from aws_lambda_powertools.event_handler.exceptions import NotFoundError
    from aws_lambda_powertools.logging import correlation_paths
    from pluggy_pipeline import connect_token
    from pluggy_pipeline.observability import logger, metrics

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# debug=False whatever POWERTOOLS_DEV says: debug mode would answer an unhandled error with its traceback.
app = APIGatewayRestResolver(debug=False)


@app.post(connect_token.ROUTE)
def mint() -> Response[Any]:
    return connect_token.handle(app.current_event.raw_event)


@app.not_found
def not_found(_: NotFoundError) -> Response[Any]:
    return connect_token.not_found_response()


@app.exception_handler(Exception)
def unexpected(exc: Exception) -> Response[Any]:
    return connect_token.unexpected_error_response(exc)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
