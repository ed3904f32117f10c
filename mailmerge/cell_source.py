"""Finding the sheet cell behind a bad rendered value, so that an error can name its column."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .addresses import HEADER_CONTROL
from .sheet import Row

# What may not stand in a link inside <...> of a header (white space, quotes, commas, <>)
URL_UNSAFE = re.compile(r"[\s<>,\"]")


def longest_value(ctx: Mapping[str, Any], rendered: str) -> str | None:
    row = ctx.get("row", {})
    values = [str(v) for v in row.values() if str(v) and str(v) in rendered]
    return max(values, key=len) if values else None


def source_value(ctx: Mapping[str, Any], rendered: str) -> str | None:
    """The cell value that most likely produced a bad rendered value (for error reports)."""
    row = ctx.get("row", {})
    for value in row.values():
        text = str(value)
        if (text and text.strip() and text.strip() in rendered
                and (HEADER_CONTROL.search(text) or URL_UNSAFE.search(text))):
            return text
    return None


def column_of(row: Row, value: str) -> str | None:
    for column, cell in row.values.items():
        if str(cell) == value:
            return column
    for column, cell in row.values.items():
        if value and value in str(cell):
            return column
    return None
