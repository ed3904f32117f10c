"""Suppression lists: addresses that must never be mailed (unsubscribes, bounces, complaints).

A file is either a CSV whose header names an ``email`` or ``address`` column, or a plain
list with one address per line (blank lines and ``#`` comments are ignored). Addresses
are compared without regard to case, with the domain in its ASCII form.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from .addresses import address_key
from .errors import ConfigError
from .localfiles import MIB, open_text

MAX_SUPPRESSION_LIST = 512 * MIB  # some ten million addresses
_COLUMNS = ("email", "e-mail", "address", "email address", "mail")


def load_suppressions(paths: Iterable[Path]) -> frozenset[str]:
    """Every address in the given files. Raises ConfigError when a file cannot be read."""
    found: set[str] = set()
    for path in paths:
        try:
            with open_text(path, MAX_SUPPRESSION_LIST, encoding="utf-8-sig") as handle:
                first = handle.readline()
                handle.seek(0)
                header = [c.strip().lower() for c in next(csv.reader([first]), [])]
                column = next((i for i, name in enumerate(header) if name in _COLUMNS), None)
                if column is not None:
                    rows = csv.reader(handle)
                    next(rows)
                    found.update(address_key(row[column]) for row in rows
                                 if len(row) > column and "@" in row[column])
                else:
                    found.update(address_key(line.split("#")[0]) for line in handle
                                 if "@" in line.split("#")[0])
        except IsADirectoryError:
            raise ConfigError(f"the suppression list {path} is a folder, not a file",
                              hint="name a text file in `suppress:`: a CSV with an `email` "
                                   "column, or one address per line") from None
        except FileNotFoundError:
            raise ConfigError(f"the suppression list {path} does not exist",
                              hint="`suppress:` paths are relative to the campaign file") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"the suppression list {path} cannot be read: {exc}",
                              hint="save it as UTF-8 text: a CSV with an `email` column, or "
                                   "one address per line") from exc
    return frozenset(found)
