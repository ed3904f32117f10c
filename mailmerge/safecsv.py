"""CSV that a spreadsheet opens as data: the dry run's manifest and ``status --csv``."""

from __future__ import annotations


def csv_safe(value: object) -> object:
    """Keep a spreadsheet from running a cell as a formula when it opens this CSV."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
