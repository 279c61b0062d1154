"""The app's read API (AWS_IAM, on the webhook's REST API) over the mirror, routed by Powertools' REST resolver.

    GET /users/{clientUserId}/items                     200 {"items": [item, ...]}
    GET /items/{itemId}                                 200 {"item": item, "accounts": [account, ...]}; 404
    GET /accounts/{accountId}/transactions              200 {"transactions": [tx, ...], "nextCursor": str | null}
        ?from=YYYY-MM-DD&to=YYYY-MM-DD&limit=1..500 (default 100)&cursor=<nextCursor>; 404
    GET /accounts/{accountId}/bills?from=&to=           200 {"bills": [bill, ...]} newest due date first; 404
    GET /investments/{investmentId}/transactions        200 like an account's transactions (same parameters)
    GET /items/{itemId}/investments                     200 {"investments": [investment, ...]}; 404
    GET /items/{itemId}/loans                           200 {"loans": [loan, ...]}; 404
    GET /items/{itemId}/consents                        200 {"consents": [consent, ...]}; 404
    GET /items/{itemId}/identity                        200 {"identity": identity}; 404 (none, or no such item)

What each record looks like, the cursor and the number contract: pluggy_pipeline.reader (the same reader apps
can use directly). Errors are {"error": code, "message": text} plus, for 400, {"fields": {name: problem}}:
400 invalid_request, 404 not_found, 503 unavailable (DynamoDB failed: retry), 500 internal_error (the request
id to look up in the logs; never a stack trace). Logs carry the route template, status and counts, never a
path or query value (a clientUserId may be personal) nor a record.
"""

from __future__ import annotations

import functools
import json
import traceback
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.typing import LambdaContext

from pluggy_pipeline import aws
from pluggy_pipeline.config import ReadApiSettings
from pluggy_pipeline.errors import TransientError
from pluggy_pipeline.observability import logger
from pluggy_pipeline.reader import DEFAULT_LIMIT, InvalidRequest, MirrorReader, RecordNotFound, page_query
from pluggy_pipeline.records import RecordStore

PAGE_PARAMETERS = ("from", "to", "limit", "cursor")
DATE_PARAMETERS = ("from", "to")  # the bills' (a card has a bill a month: no pages)
ROUTES = (
    "/users/{id}/items, /items/{id}, /items/{id}/investments, /items/{id}/loans, /items/{id}/consents, "
    "/items/{id}/identity, /accounts/{id}/transactions, /accounts/{id}/bills, /investments/{id}/transactions"
)
# The answers are people's financial data: no shared cache may keep them.
_HEADERS = {"Cache-Control": "no-store"}

# debug=False, not None: POWERTOOLS_DEV in the environment must not make the resolver print whole events.
app = APIGatewayRestResolver(debug=False)


@functools.cache
def get_reader() -> MirrorReader:
    """Built once per container on first use (never at import); tests clear it with get_reader.cache_clear()."""
    settings = ReadApiSettings.from_env()
    # aws.dynamodb()'s default config: tight timeouts and 2 attempts, for an answer a caller is waiting on.
    return MirrorReader(RecordStore(aws.dynamodb, settings.records_table))


def _json(status: int, body: Mapping[str, Any], **counts: Any) -> Response[str]:
    """The answer, and its one log line: route template, status and counts; never a path or query value."""
    event = app.current_event
    logger.info("read api", extra={"route": f"{event.http_method} {event.resource}", "status": status, **counts})
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        headers=dict(_HEADERS),
    )


def _error(status: int, code: str, message: str, **extra: Any) -> Response[str]:
    return _json(status, {"error": code, "message": message, **extra}, error=code)


def _path_parameter(name: str, matched: str) -> str:
    """API Gateway's own (decoded) value of a path parameter; the resolver's match when there is none."""
    values = app.current_event.path_parameters or {}
    value = values.get(name)
    return value if isinstance(value, str) else matched


def _page_parameters(allowed: tuple[str, ...] = PAGE_PARAMETERS) -> dict[str, str]:
    """`allowed` (some of from/to/limit/cursor) as received; unknown or repeated ones refused (not ignored),
    every problem at once."""
    multi = app.current_event.multi_value_query_string_parameters or {}
    single = app.current_event.query_string_parameters or {}
    values: dict[str, list[str]] = {name: list(v) for name, v in multi.items() if isinstance(v, list)}
    for name, value in single.items():
        values.setdefault(name, [value])
    fields: dict[str, str] = {}
    for name, received in values.items():
        if name not in allowed:
            fields[name[:64]] = f"unknown parameter; the parameters are {', '.join(allowed)}"
        elif len(received) != 1:
            fields[name] = "given more than once"
    given = {name: received[0] for name, received in values.items() if name in allowed}
    try:
        limit = given.get("limit", DEFAULT_LIMIT)
        page_query(date_from=given.get("from"), date_to=given.get("to"), limit=limit, cursor=given.get("cursor"))
    except InvalidRequest as invalid:
        fields.update(invalid.fields)
    if fields:
        raise InvalidRequest(fields)
    return given


# -- routes --------------------------------------------------------------------------------------------


@app.get("/users/<client_user_id>/items")
def items_of_user(client_user_id: str) -> Response[str]:
    items = get_reader().items_of_user(_path_parameter("clientUserId", client_user_id))
    return _json(200, {"items": items}, rows=len(items))


@app.get("/items/<item_id>")
def item(item_id: str) -> Response[str]:
    answer = get_reader().item_with_accounts(_path_parameter("itemId", item_id))
    return _json(200, answer, rows=1 + len(answer["accounts"]))


@app.get("/accounts/<account_id>/transactions")
def transactions(account_id: str) -> Response[str]:
    given = _page_parameters()
    page = get_reader().transactions(
        _path_parameter("accountId", account_id),
        date_from=given.get("from"),
        date_to=given.get("to"),
        limit=given.get("limit", DEFAULT_LIMIT),
        cursor=given.get("cursor"),
    )
    return _json(200, page, rows=len(page["transactions"]), more=page["nextCursor"] is not None)


@app.get("/accounts/<account_id>/bills")
def bills(account_id: str) -> Response[str]:
    given = _page_parameters(DATE_PARAMETERS)
    rows = get_reader().bills(
        _path_parameter("accountId", account_id), date_from=given.get("from"), date_to=given.get("to")
    )
    return _json(200, {"bills": rows}, rows=len(rows))


@app.get("/investments/<investment_id>/transactions")
def investment_transactions(investment_id: str) -> Response[str]:
    given = _page_parameters()
    page = get_reader().investment_transactions(
        _path_parameter("investmentId", investment_id),
        date_from=given.get("from"),
        date_to=given.get("to"),
        limit=given.get("limit", DEFAULT_LIMIT),
        cursor=given.get("cursor"),
    )
    return _json(200, page, rows=len(page["transactions"]), more=page["nextCursor"] is not None)


@app.get("/items/<item_id>/investments")
def investments(item_id: str) -> Response[str]:
    rows = get_reader().investments(_path_parameter("itemId", item_id))
    return _json(200, {"investments": rows}, rows=len(rows))


@app.get("/items/<item_id>/loans")
def loans(item_id: str) -> Response[str]:
    rows = get_reader().loans(_path_parameter("itemId", item_id))
    return _json(200, {"loans": rows}, rows=len(rows))


@app.get("/items/<item_id>/consents")
def consents(item_id: str) -> Response[str]:
    rows = get_reader().consents(_path_parameter("itemId", item_id))
    return _json(200, {"consents": rows}, rows=len(rows))


@app.get("/items/<item_id>/identity")
def identity(item_id: str) -> Response[str]:
    # Personal data (CPF, name, addresses): the answer only; _json logs the route and a count, never the body.
    answer = get_reader().identity(_path_parameter("itemId", item_id))
    return _json(200, {"identity": answer}, rows=1)


# -- errors: the one place exceptions become HTTP answers ------------------------------------------------


def _invalid(error: InvalidRequest) -> Response[str]:
    return _error(400, "invalid_request", "the request has invalid parameters", fields=error.fields)


def _missing(error: RecordNotFound) -> Response[str]:
    return _error(404, "not_found", str(error))


@app.not_found
def _no_route(_: NotFoundError) -> Response[str]:
    return _error(404, "not_found", f"no such route: GET {ROUTES}")


def _unavailable(error: TransientError) -> Response[str]:
    logger.warning("read failed on a dependency", extra={"reason": str(error)})  # "query failed: <code>"
    return _error(503, "unavailable", "the mirror could not be read just now; retry shortly")


def _internal(error: Exception) -> Response[str]:
    # Where it failed, not the message: a message may quote a record (a CPF, an account number).
    where = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in traceback.extract_tb(error.__traceback__)]
    logger.error("read failed", extra={"errorType": type(error).__name__, "at": where[-6:]})
    request_id = getattr(app.lambda_context, "aws_request_id", None)
    return _error(500, "internal_error", f"the read failed (request id {request_id}); see the function's logs")


# Registered by call: Powertools' exception_handler decorator is untyped. The most specific class wins.
app.exception_handler(InvalidRequest)(_invalid)
app.exception_handler(RecordNotFound)(_missing)
app.exception_handler(TransientError)(_unavailable)
app.exception_handler(Exception)(_internal)


def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Route one API Gateway proxy event."""
    try:
        return app.resolve(event, context)
    except Exception as exc:  # an event the resolver cannot even read (never one API Gateway sends)
        logger.error("unreadable event", extra={"errorType": type(exc).__name__})
        body = {"error": "internal_error", "message": f"unreadable event (request id {context.aws_request_id})"}
        return {
            "statusCode": 500,
            "headers": {"Content-Type": content_types.APPLICATION_JSON, **_HEADERS},
            "body": json.dumps(body, separators=(",", ":")),
            "isBase64Encoded": False,
        }
