"""Helpers shared by the commands: target options, JSON that keeps DynamoDB numbers exact, tables, masking."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from pluggy_pipeline_cli.targets import Target, resolve

_DECIMAL_MARK = "\u0000decimal:"
_DECIMAL_TOKEN = re.compile(r'"\\u0000decimal:([-+0-9.eE]+)"')


def add_target_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target (default: the running local stack, see `pluggy-pipeline local`)")
    group.add_argument("--stack", metavar="NAME", help="a deployed CloudFormation stack instead of the local one")
    group.add_argument("--region", help="AWS region of --stack (default: the profile's)")
    group.add_argument("--profile", help="AWS profile for --stack")


def target_of(args: argparse.Namespace) -> Target:
    return resolve(getattr(args, "stack", None), getattr(args, "region", None), getattr(args, "profile", None))


def _mark_decimals(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{_DECIMAL_MARK}{value}"
    if isinstance(value, Mapping):
        return {str(k): _mark_decimals(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_mark_decimals(v) for v in items]
    if isinstance(value, bytes | bytearray):
        return value.hex()
    return value


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """JSON in which DynamoDB's Decimal numbers appear exactly as stored (never through float)."""
    text = json.dumps(_mark_decimals(value), indent=indent, ensure_ascii=False, default=str)
    return _DECIMAL_TOKEN.sub(lambda m: m.group(1), text)


def plain(value: Any) -> Any:
    """Decimals as int/float for summaries (JSON-ready)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def mask_digits(value: Any) -> str:
    """An account or tax number reduced to its last 4 digits: 123.456.789-09 -> ****8909."""
    if value is None or value == "":
        return ""
    digits = re.sub(r"\D", "", str(value))
    if not digits:
        return "****"
    return "****" + digits[-4:]


def mask_name(value: Any) -> str:
    """A person's or company's name reduced to each word's initial: Maria da Silva -> M*** d*** S***.

    A fixed "***" whatever the word's length, so the mask tells no more than the initials.
    """
    if not isinstance(value, str):
        return ""
    return " ".join(word[0] + "***" for word in value.split())


def money(value: Any, currency: Any = None) -> str:
    if value is None:
        return ""
    amount = Decimal(str(value)).quantize(Decimal("0.01"))
    return f"{amount:,.2f} {currency}".strip() if currency else f"{amount:,.2f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    text_rows = [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in text_rows]
    return "\n".join(lines)


def truncate(text: Any, width: int) -> str:
    value = "" if text is None else str(text)
    return value if len(value) <= width else value[: width - 1] + "…"
