"""The cells of an .xlsx worksheet, streamed from its XML with expat.

openpyxl (read-only) still opens the workbook: the sheet names, the shared strings, the
date formats and the 1900/1904 epoch come from it. Only the cells are parsed here, because
openpyxl builds an element tree per cell and read about 3,000 rows a second; expat with
four small callbacks reads more than ten times that, in constant memory. Each value is
converted exactly as openpyxl converts it (its own helpers are used), so a cell reads the
same either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any
from xml.parsers import expat

from openpyxl.utils.datetime import from_excel, from_ISO8601

# openpyxl's own number conversion; private, so the dependency is pinned below 3.2
from openpyxl.worksheet._reader import _cast_number  # type: ignore[attr-defined]

_CHUNK = 1 << 16
_LETTERS: dict[str, int] = {}


MAX_COLUMN = 16_384  # XFD, the last column a worksheet can have


def _column(reference: str) -> int:
    """1 for "A7", 28 for "AB7". Raises ValueError for a reference that is not like A1 or
    that lies past column XFD: a crafted cell could otherwise make a row of millions."""
    letters = reference.rstrip("0123456789")
    index = _LETTERS.get(letters)
    if index is None or len(letters) == len(reference):
        if not (0 < len(letters) <= 3 and letters.isascii() and letters.isalpha()
                and len(letters) < len(reference)):
            raise ValueError(f"the cell reference {reference[:20]!r} is not like A1")
        index = 0
        for char in letters.upper():
            index = index * 26 + ord(char) - 64
        if index > MAX_COLUMN:
            raise ValueError(f"the cell reference {reference[:20]!r} lies past column XFD, "
                             "the last a worksheet can have")
        _LETTERS[letters] = index
    return index


def column_letters(number: int) -> str:
    """The letters of a column numbered from 1: 1 -> A, 27 -> AA."""
    letters = ""
    while number:
        number, rem = divmod(number - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


class _Cells:
    """Expat callbacks that collect one row's cells at a time."""

    def __init__(self, shared: Any, epoch: Any, dates: set[int], durations: set[int]) -> None:
        self.shared, self.epoch, self.dates, self.durations = shared, epoch, dates, durations
        self.rows: list[tuple[int, list[Any]]] = []
        self.row: list[Any] = []
        self.number = 0
        self.column = 0
        self.kind = "n"
        self.style = 0
        self.text: list[str] = []
        self.collect = False
        self.phonetic = False
        self.inline = False
        self.in_data = False

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if name == "c":
            reference = attrs.get("r")
            self.column = _column(reference) if reference else self.column + 1
            if self.column > MAX_COLUMN:
                raise ValueError("a row has more cells than the 16,384 columns a worksheet "
                                 "can have")
            self.kind = attrs.get("t", "n")
            style = attrs.get("s")
            self.style = int(style) if style else 0
            self.text = []
            self.inline = False
        elif name == "v":
            self.collect = True
        elif name == "t":
            self.collect = self.inline and not self.phonetic
        elif name == "is":
            self.inline = True
        elif name == "rPh":
            self.phonetic = True
        elif name == "sheetData":
            self.in_data = True
        elif ":" in name:  # a writer that gives the namespace a prefix ("x:c")
            self.start(name.rpartition(":")[2], attrs)
        elif name == "row" and self.in_data:
            reference = attrs.get("r")
            self.number = int(reference) if reference else self.number + 1
            self.row = []
            self.column = 0

    def end(self, name: str) -> None:
        if name == "c":
            value = self._value()
            if value is not None:
                row = self.row
                if len(row) < self.column:
                    row.extend([None] * (self.column - len(row)))
                row[self.column - 1] = value
        elif name in ("v", "t"):
            self.collect = False
        elif name == "rPh":
            self.phonetic = False
        elif name == "row" and self.in_data:
            self.rows.append((self.number, self.row))
        elif name == "sheetData":
            self.in_data = False
            self.row = []  # nothing after the cells may touch the last row
        elif ":" in name:
            self.end(name.rpartition(":")[2])

    def data(self, text: str) -> None:
        if self.collect:
            self.text.append(text)

    def _value(self) -> Any:
        """The cell's value as openpyxl's WorkSheetParser.parse_cell gives it (data_only)."""
        kind = self.kind
        if kind == "inlineStr":
            return "".join(self.text) if self.inline else None
        text = "".join(self.text) or None
        if text is None:
            return None
        if kind == "s":
            index = int(text)
            if not 0 <= index < len(self.shared):
                raise ValueError(f"cell {column_letters(self.column)}{self.number} refers to "
                                 f"shared string {index}, but the workbook holds "
                                 f"{len(self.shared)}")
            return self.shared[index]
        if kind == "n":
            value = _cast_number(text)
            if self.style in self.dates:
                try:
                    return from_excel(value, self.epoch, timedelta=self.style in self.durations)
                except (OverflowError, ValueError):
                    return "#VALUE!"
            return value
        if kind == "b":
            return bool(int(text))
        if kind == "d":
            return from_ISO8601(text)  # type: ignore[no-untyped-call]  # untyped in the stubs
        return text  # "str" (a formula's text), "e" (an error such as #N/A)


def worksheet_rows(source: IO[bytes], shared: Any, epoch: Any, dates: set[int],
                   durations: set[int]) -> Iterator[tuple[int, list[Any]]]:
    """(row number, values by column from A) for each row; missing cells are None and rows
    the file leaves out are not yielded."""
    cells = _Cells(shared, epoch, dates, durations)
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = cells.start
    parser.EndElementHandler = cells.end
    parser.CharacterDataHandler = cells.data
    while chunk := source.read(_CHUNK):
        parser.Parse(chunk, False)
        yield from cells.rows
        cells.rows.clear()
    parser.Parse(b"", True)
    yield from cells.rows
