"""In-memory fakes of the receiver's two AWS clients (DynamoDB, SQS), with the semantics the receiver uses.

Conditions and update expressions are parsed; anything the fakes cannot evaluate raises NotImplementedError,
so a fake never silently disagrees with DynamoDB.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from botocore.exceptions import ClientError

_TOKEN = re.compile(r"\s*(?:(\(|\)|,)|(<>|<=|>=|=|<|>)|(:[A-Za-z0-9_]+)|(#[A-Za-z0-9_]+)|([A-Za-z_][A-Za-z0-9_]*))")
_FUNCTIONS = {"attribute_exists", "attribute_not_exists"}
Item = dict[str, dict[str, Any]]
Predicate = Callable[[Mapping[str, Any], Mapping[str, str], Mapping[str, Any]], bool]


def _tokens(expression: str) -> list[str]:
    out, position = [], 0
    expression = expression.strip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None or match.end() == position:
            raise NotImplementedError(f"fake DynamoDB cannot parse {expression[position:]!r}")
        out.append(match.group(match.lastindex or 0))
        position = match.end()
    return out


def _scalar(value: Mapping[str, Any] | None) -> Any:
    if value is None:
        return None
    if "N" in value:
        return float(value["N"])
    if "S" in value:
        return value["S"]
    if "BOOL" in value:
        return value["BOOL"]
    raise NotImplementedError(f"fake DynamoDB cannot compare {value!r}")


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,  # as moto: a missing attribute is "not equal"
    "<": lambda a, b: a is not None and b is not None and a < b,
    "<=": lambda a, b: a is not None and b is not None and a <= b,
    ">": lambda a, b: a is not None and b is not None and a > b,
    ">=": lambda a, b: a is not None and b is not None and a >= b,
}


@functools.cache
def compile_condition(expression: str) -> Predicate:
    """A DynamoDB condition expression (comparisons, attribute_(not_)exists, AND/OR/NOT, parentheses).

    Anything else raises NotImplementedError: the fake must never silently disagree with DynamoDB.
    """
    tokens = _tokens(expression)
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal position
        token = peek()
        if token is None or (expected is not None and token.upper() != expected):
            raise NotImplementedError(f"fake DynamoDB cannot parse {expression!r} at {token!r}")
        position += 1
        return token

    def operand() -> Callable[[Mapping[str, Any], Mapping[str, str], Mapping[str, Any]], Any]:
        token = take()
        if token.startswith(":"):
            return lambda item, names, values: _scalar(values[token])
        if token.startswith("#") or token[0].isalpha():
            return lambda item, names, values: _scalar(item.get(names.get(token, token)))
        raise NotImplementedError(f"fake DynamoDB cannot parse {expression!r} at {token!r}")

    def primary() -> Predicate:
        token = peek()
        if token == "(":
            take("(")
            inner = disjunction()
            take(")")
            return inner
        if token is not None and token.upper() == "NOT":
            take("NOT")
            negated = primary()
            return lambda item, names, values: not negated(item, names, values)
        if token in _FUNCTIONS:
            take()
            take("(")
            path = take()
            take(")")
            exists = token == "attribute_exists"
            return lambda item, names, values: (names.get(path, path) in item) is exists
        left = operand()
        comparator = take()
        if comparator not in _COMPARE:
            raise NotImplementedError(f"fake DynamoDB cannot parse {expression!r} at {comparator!r}")
        right = operand()
        compare = _COMPARE[comparator]
        return lambda item, names, values: compare(left(item, names, values), right(item, names, values))

    def conjunction() -> Predicate:
        parts = [primary()]
        while (token := peek()) is not None and token.upper() == "AND":
            take("AND")
            parts.append(primary())
        if len(parts) == 1:
            return parts[0]

        def every(item: Mapping[str, Any], names: Mapping[str, str], values: Mapping[str, Any]) -> bool:
            # A loop, not all(<generator>): the fakes' own cost is part of the timed figures.
            for part in parts:  # noqa: SIM110 - see the comment above
                if not part(item, names, values):
                    return False
            return True

        return every

    def disjunction() -> Predicate:
        parts = [conjunction()]
        while (token := peek()) is not None and token.upper() == "OR":
            take("OR")
            parts.append(conjunction())
        if len(parts) == 1:
            return parts[0]

        def some(item: Mapping[str, Any], names: Mapping[str, str], values: Mapping[str, Any]) -> bool:
            for part in parts:  # noqa: SIM110 - a loop, not any(<generator>), for the same reason
                if part(item, names, values):
                    return True
            return False

        return some

    predicate = disjunction()
    if position != len(tokens):
        raise NotImplementedError(f"fake DynamoDB cannot parse {expression!r} at {peek()!r}")
    return predicate


@functools.cache
def compile_update(expression: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """`SET a = :v, #b = :w REMOVE c, d` -> ((path, value), ...), (removed path, ...)."""
    sets: list[tuple[str, str]] = []
    removes: list[str] = []
    tokens = _tokens(expression)
    clause = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.upper() in {"SET", "REMOVE"}:
            clause, i = token.upper(), i + 1
        elif token == ",":
            i += 1
        elif clause == "SET" and i + 2 < len(tokens) and tokens[i + 1] == "=" and tokens[i + 2].startswith(":"):
            sets.append((token, tokens[i + 2]))
            i += 3
        elif clause == "REMOVE" and not token.startswith(":"):
            removes.append(token)
            i += 1
        else:
            raise NotImplementedError(f"fake DynamoDB cannot apply {expression!r}")
    return tuple(sets), tuple(removes)


def _conditional_failure(operation: str, existing: Item | None, return_values: str | None) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": "ConditionalCheckFailedException", "Message": "The conditional request failed"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    if return_values == "ALL_OLD" and existing is not None:
        response["Item"] = existing
    return ClientError(cast(Any, response), operation)


class FakeDynamoDB:
    """put_item / update_item / delete_item on a single table keyed by eventId, with conditions."""

    def __init__(self, items: Mapping[str, Item] | None = None) -> None:
        self.items: dict[str, Item] = dict(items or {})
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, dict[str, Any]]] | None = None  # set to a list to record calls

    def _check(self, kwargs: Mapping[str, Any], existing: Item | None, operation: str) -> None:
        expression = kwargs.get("ConditionExpression")
        if expression is None:
            return
        names = kwargs.get("ExpressionAttributeNames") or {}
        values = kwargs.get("ExpressionAttributeValues") or {}
        if not compile_condition(expression)(existing or {}, names, values):
            raise _conditional_failure(operation, existing, kwargs.get("ReturnValuesOnConditionCheckFailure"))

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["PutItem"] += 1
        if self.log is not None:
            self.log.append(("put_item", kwargs))
        item: Item = kwargs["Item"]
        key = item["eventId"]["S"]
        self._check(kwargs, self.items.get(key), "PutItem")
        self.items[key] = item
        return {}

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["UpdateItem"] += 1
        if self.log is not None:
            self.log.append(("update_item", kwargs))
        key = kwargs["Key"]["eventId"]["S"]
        existing = self.items.get(key)
        self._check(kwargs, existing, "UpdateItem")
        names = kwargs.get("ExpressionAttributeNames") or {}
        values = kwargs.get("ExpressionAttributeValues") or {}
        sets, removes = compile_update(kwargs["UpdateExpression"])
        item = dict(existing or kwargs["Key"])
        for path, value in sets:
            item[names.get(path, path)] = values[value]
        for path in removes:
            item.pop(names.get(path, path), None)
        self.items[key] = item
        return {}

    def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["DeleteItem"] += 1
        if self.log is not None:
            self.log.append(("delete_item", kwargs))
        key = kwargs["Key"]["eventId"]["S"]
        self._check(kwargs, self.items.get(key), "DeleteItem")
        self.items.pop(key, None)
        return {}


class FakeSQS:
    def __init__(self) -> None:
        self.messages: list[tuple[str, Mapping[str, Any]]] = []
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, dict[str, Any]]] | None = None

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["SendMessage"] += 1
        if self.log is not None:
            self.log.append(("send_message", kwargs))
        if str(kwargs["QueueUrl"]).endswith(".fifo") and not kwargs.get("MessageGroupId"):
            error: Any = {"Error": {"Code": "MissingParameter", "Message": "MessageGroupId is required"}}
            raise ClientError(error, "SendMessage")
        self.messages.append((kwargs["MessageBody"], kwargs.get("MessageAttributes") or {}))
        return {"MessageId": f"fake-{len(self.messages)}"}


class NoSecretsManager:
    def get_secret_value(self, **_: Any) -> dict[str, Any]:
        raise RuntimeError("the benchmark configures the secret in the environment: no Secrets Manager call expected")


@dataclass
class FakeAws:
    dynamodb: FakeDynamoDB = field(default_factory=FakeDynamoDB)
    sqs: FakeSQS = field(default_factory=FakeSQS)


def replay(calls: Sequence[tuple[str, dict[str, Any]]], fakes: FakeAws) -> None:
    """Make the recorded calls again (to time the fakes on their own); a conditional failure is expected."""
    for method, kwargs in calls:
        target = fakes.sqs if method == "send_message" else fakes.dynamodb
        try:  # noqa: SIM105 - a try that raises nothing costs nothing; suppress() would be timed too
            getattr(target, method)(**kwargs)
        except ClientError:
            pass
