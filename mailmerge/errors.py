"""One exception base for everything a user can fix; location is formatted once, here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class MailmergeError(Exception):
    """Base class. ``str(err)`` is the whole user-facing message: where, what, how to fix.

    ``exit_code`` is what the command line exits with: 2 for set-up and configuration
    problems, 1 for problems in the data.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.row = row
        self.column = column
        self.hint = hint

    def __reduce__(self) -> tuple[object, ...]:
        # rebuilt from its attributes: subclasses' constructors differ (worker processes
        # send errors to the parent pickled)
        return _restore, (type(self), dict(self.__dict__))

    @property
    def where(self) -> str:
        parts = [str(self.path)] if self.path else []
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        return ", ".join(parts)

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text}; {self.hint}" if self.hint else text


class ConfigError(MailmergeError):
    """The campaign file (or a file it names) is wrong: nothing can run until it is fixed."""


class SheetError(MailmergeError):
    """The recipient sheet cannot be read, or a row of it is malformed."""

    exit_code = 1


class TemplateError(MailmergeError):
    """A template does not compile, or fails while rendering a row."""


class RowError(MailmergeError):
    """A row produced an invalid message (bad address, header injection, missing attachment ...)."""

    exit_code = 1


class SendError(MailmergeError):
    """Delivery failed in a way that stops the campaign."""


class JournalError(MailmergeError):
    """The journal cannot be read or does not match the campaign."""


class RowErrors(MailmergeError):
    """Every problem found in one row, so that ``check`` can list them all at once."""

    exit_code = 1

    def __init__(self, row: int, errors: Sequence[MailmergeError]) -> None:
        super().__init__("; ".join(str(e) for e in errors), row=row)
        self.errors = list(errors)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def _restore(cls: type[MailmergeError], state: dict[str, object]) -> MailmergeError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message"))
    error.__dict__.update(state)
    return error


class CellError(RowError):
    """A row's cell holds no value its message can use (an error, a formula that was not
    calculated); ``cell`` is its reference, as "D5"."""

    def __init__(self, message: str, *, cell: str, path: str | Path | None = None,
                 row: int | None = None, column: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, path=path, row=row, column=column, hint=hint)
        self.cell = cell

    @property
    def where(self) -> str:
        # said of one row; the same problem on many rows is said once with their numbers,
        # and its column says where
        return f"{super().where} (cell {self.cell})" if self.row is not None else super().where
