"""The cells of an .xlsx worksheet, streamed from its XML.

:mod:`.xlsxbook` finds the sheets, the shared strings, the date styles and the epoch; the
cells are parsed here. Rows in the plain form spreadsheet programs write are read with one
regular expression, cell by cell; the rows of the one form most rows share (the same cells
with the same attributes) with a pattern made for that form, row by row (about 70,000
rows of 14 columns a second, all told, on a slow machine); any other stretch goes to expat
with four small callbacks (about 27,000). All in constant memory. Each value is converted
exactly as openpyxl's reader converts it (the tests compare them), so a cell reads the
same every way.
"""

from __future__ import annotations

import codecs
import datetime as dt
import html
import operator
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal
from xml.parsers import expat

_CHUNK = 1 << 16
_KNOWN_DATES = 4096
WINDOWS_EPOCH = dt.datetime(1899, 12, 30)  # day 0 of the 1900 date system
MAC_EPOCH = dt.datetime(1904, 1, 1)  # day 0 of the 1904 date system
_LETTERS: dict[str, int] = {}


MAX_COLUMN = 16_384  # XFD, the last column a worksheet can have


# What a cell holds instead of a value: an error a formula gave (t="e": #N/A, #DIV/0! ...),
# a formula whose result the file does not store (a program wrote it without calculating
# it), a date past any date, or, in a CSV file, an error a spreadsheet exported as text.
BadKind = Literal["error", "formula", "date", "exported"]


@dataclass(frozen=True, slots=True)
class BadCell:
    """A cell that holds no value a message can use (see BadKind). As text it is what a
    spreadsheet shows (the error, or nothing); a template that uses it fails its row."""

    reference: str  # "D5"
    kind: BadKind
    text: str = ""  # the error, as "#N/A"

    def __str__(self) -> str:
        return self.text


class FlaggedRow(list[Any]):
    """The cells of a row, one of which at least is a :class:`BadCell`: only such rows
    are looked through for them."""

    __slots__ = ()


def _flagged(row: list[Any]) -> list[Any]:
    return row if row.__class__ is FlaggedRow else FlaggedRow(row)


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


def _cast_number(text: str) -> int | float:
    """A number cell's text as an int, or a float when it has a point or an exponent."""
    if "." in text or "E" in text or "e" in text:
        return float(text)
    return int(text)


def from_excel(value: float, epoch: dt.datetime, timedelta: bool = False) -> Any:
    """A date cell's serial number as a datetime (a time of day below 1, a timedelta for
    a duration style), to the millisecond; the 1900 system's days before its phantom
    29 February 1900 are one day later than their serial says."""
    if timedelta:
        duration = dt.timedelta(days=value)
        if duration.microseconds:
            duration = dt.timedelta(seconds=duration.total_seconds() // 1,
                                    microseconds=round(duration.microseconds, -3))
        return duration
    day, fraction = divmod(value, 1)
    diff = dt.timedelta(milliseconds=round(fraction * 86400 * 1000))
    if 0 <= value < 1 and diff.days == 0:
        minutes, seconds = divmod(diff.seconds, 60)
        hours, minutes = divmod(minutes, 60)
        return dt.time(hours, minutes, seconds, diff.microseconds)
    if 0 < value < 60 and epoch == WINDOWS_EPOCH:
        day += 1
    return epoch + dt.timedelta(days=day) + diff


class _Cells:
    """Expat callbacks that collect one row's cells at a time."""

    def __init__(self, shared: Any, epoch: Any, dates: set[int], durations: set[int]) -> None:
        self.shared, self.epoch, self.dates, self.durations = shared, epoch, dates, durations
        # date cells as converted, by (text, style, type): dates are immutable, and repeat
        self.known_dates: dict[tuple[str, int, str], Any] = {}
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
        self.bad_row = False  # value_of made a BadCell in the row being read
        self.formula = False  # the cell has an <f>
        self.has_value = False  # ... and a <v>
        self.in_data = False
        self.form: _RowForm | None = None  # the form most rows have lately had

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
            self.inline = self.formula = self.has_value = False
        elif name == "v":
            self.collect = self.has_value = True
        elif name == "t":
            self.collect = self.inline and not self.phonetic
        elif name == "is":
            self.inline = True
        elif name == "rPh":
            self.phonetic = True
        elif name == "sheetData":
            self.in_data = True
        elif name == "f":
            self.formula = True
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
            if value is None and self.formula and (self.kind != "str" or not self.has_value):
                value = BadCell(f"{column_letters(self.column)}{self.number}", "formula")
            if value.__class__ is BadCell:
                self.row = _flagged(self.row)
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

    def value_of(self, raw: str, kind: str, style: int, column: int, number: int,
                 inline: bool = False) -> Any:
        """The value of a cell read by a pattern (its text ``raw``, unescaped), as
        :meth:`_value` makes it; a number cell's kept by its text and style, as dates
        repeat down a column."""
        key = (raw, style, kind)
        value = self.known_dates.get(key) if kind == "n" else None
        if value is None:
            self.kind, self.style, self.column = kind, style, column
            self.number, self.inline, self.text = number, inline, [raw]
            value = self._value()
            if value.__class__ is BadCell:  # its own reference: not kept for other cells
                self.bad_row = True
            elif kind == "n":
                if len(self.known_dates) >= _KNOWN_DATES:
                    self.known_dates.clear()
                self.known_dates[key] = value
        return value

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
                except (OverflowError, ValueError):  # a serial past any date: an error
                    return BadCell(f"{column_letters(self.column)}{self.number}", "date",
                                   "#VALUE!")  # as openpyxl reads it
            return value
        if kind == "b":
            return bool(int(text))
        if kind == "e":
            return BadCell(f"{column_letters(self.column)}{self.number}", "error", text)
        if kind == "d":  # an ISO 8601 date, as strict Office Open XML writes them (rare)
            from openpyxl.utils.datetime import from_ISO8601

            return from_ISO8601(text)  # type: ignore[no-untyped-call]  # untyped in the stubs
        return text  # "str" (a formula's text)


class _Strings:
    """expat's handlers for the shared-string table: each <si>'s text, as openpyxl's
    read_string_table gives it (its <t>, or its runs' <t>; phonetic runs left out)."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.parts: list[str] = []
        self.inside = False  # in an <si>
        self.text = False  # in a <t> whose text counts
        self.phonetic = 0  # depth in <rPh> and <phoneticPr>

    def start(self, name: str, attrs: dict[str, str]) -> None:
        name = name.rpartition(":")[2]
        if name == "si":
            self.inside, self.parts = True, []
        elif name in ("rPh", "phoneticPr"):
            self.phonetic += 1
        elif name == "t" and self.inside and not self.phonetic:
            self.text = True

    def end(self, name: str) -> None:
        name = name.rpartition(":")[2]
        if name == "t":
            self.text = False
        elif name in ("rPh", "phoneticPr"):
            self.phonetic -= 1
        elif name == "si":
            self.inside = False
            self.strings.append("".join(self.parts).replace("x005F_", ""))

    def data(self, text: str) -> None:
        if self.text:
            self.parts.append(text)


# A table of plain strings, as most programs write it: read with one regular expression.
_PLAIN_SI = re.compile(r'(<si><t(?: xml:space="preserve")?>([^<]*)</t></si>|<si><t/></si>)')
_SST_OPEN = re.compile(r"<sst\b[^>]*>")


def shared_strings(source: IO[bytes]) -> list[str]:
    """The workbook's shared-string table. openpyxl made an object of each string, which
    took longer than reading every cell of the sheet; a table of plain strings is read
    with one regular expression, any other with expat."""
    data = source.read()
    plain = _plain_strings(data)
    if plain is not None:
        return plain
    table = _Strings()
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = table.start
    parser.EndElementHandler = table.end
    parser.CharacterDataHandler = table.data
    parser.Parse(data, True)
    return table.strings


def _other_encoding(head: bytes) -> bool:
    """Whether an XML part's declaration names an encoding other than UTF-8 (which the
    fast paths decode; expat reads the others)."""
    declaration = head[:100].lower()
    return b"encoding=" in declaration and b'encoding="utf-8"' not in declaration


def _plain_strings(data: bytes) -> list[str] | None:
    """The strings of a table that holds only <si><t>text</t></si> items (UTF-8, no
    prefix), or None."""
    if _other_encoding(data):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    opening = _SST_OPEN.search(text)
    closing = text.rfind("</sst>")
    if opening is None or closing < opening.end() or "\x00" in text:
        return None
    items = text[opening.end():closing]
    if "&#" in items and "<!" not in items and "<?" not in items:
        items = _decode_references(items)
    found = _matches(_PLAIN_SI, items)
    if found is None:
        return None
    strings: list[str] = []
    for _, raw in found:
        if "&" in raw or "\r" in raw:
            raw = _as_read(raw)
        strings.append(raw.replace("x005F_", "") if "x005F_" in raw else raw)
    return strings


# (row number, values by column from A): a list as read, a tuple as a row keeps them
Record = tuple[int, list[Any] | tuple[Any, ...]]


def sheet_value(value: Any) -> Any:
    """A cell's value as a row keeps it: numbers stay numbers (integral ones as int),
    date-only cells become dates, empty is ''."""
    kind = value.__class__
    if kind is str or kind is int:  # most cells: nothing to do
        return value
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dt.datetime) and value.time() == dt.time(0) and value.tzinfo is None:
        return value.date()
    return value


def worksheet_rows(source: IO[bytes], shared: Any, epoch: Any, dates: set[int],
                   durations: set[int]) -> Iterator[Record]:
    """(row number, values by column from A) for each row; rows the file leaves out are
    not yielded. A list holds the values as read (a missing cell is None; see
    :func:`sheet_value`); a tuple, from a row read by its form, holds them as a row keeps
    them already, so that 14 cells are not passed through sheet_value again."""
    cells = _Cells(shared, epoch, dates, durations)
    head = source.read(_CHUNK)
    fast = _fast_start(head)
    if fast is None:  # a prefixed namespace, another encoding: expat reads it all
        yield from _expat_rows(cells, head, source)
        return
    yield from _fast_rows(cells, head[fast:], source)


def _expat_rows(cells: _Cells, head: bytes, source: IO[bytes]
                ) -> Iterator[Record]:
    parser = _parser(cells)
    chunk = head
    while chunk:
        parser.Parse(chunk, False)
        yield from cells.rows
        cells.rows.clear()
        chunk = source.read(_CHUNK)
    parser.Parse(b"", True)
    yield from cells.rows


def _parser(cells: _Cells) -> Any:
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = cells.start
    parser.EndElementHandler = cells.end
    parser.CharacterDataHandler = cells.data
    return parser


# --- the fast path ---------------------------------------------------------------------------
# Most workbooks write their rows in one plain form: `<row r="2">`, then cells such as
# `<c r="A2" s="3" t="s"><v>7</v></c>` or `<c r="B2" t="inlineStr"><is><t>Zoë</t></is></c>`,
# then `</row>`. Those are read with one regular expression, in C, about twice as fast as
# expat's callbacks; a stretch of rows in any other form (rich text, comments, CDATA,
# attributes in odd places) is handed to expat, wrapped in a <sheetData> of its own, and
# read exactly as before. Text is unescaped and its line ends normalised as XML does.

_FAST = re.compile(  # group 1 is the whole: their lengths add up when nothing is between
    # cells first, the most of them; possessive (*+) where what follows cannot be taken
    # back anyway: the engine keeps no places to go back to (a fifth of the read's time)
    r'(<c r="([A-Z]{1,3}+)\d++"((?: (?:s|t|cm|vm|ph)="[^"<>&]*+")*+)'
    r'(?:/>|>(?:<f(?: [^<>]*)?/>|<f(?: [^<>]*)?>[^<]*+</f>)?'
    r'(?:<v>([^<]*+)</v>|(<is><t(?: xml:space="preserve")?>([^<]*+)</t></is>))?</c>)'
    r'|<row r="(\d++)"[^>/]*+(/?)>'
    r'|(</row>))')
_ATTRS = re.compile(r'(s|t)="([^"]*)"')
_SHEET_DATA = re.compile(rb"<sheetData(/?)>")


def _fast_start(head: bytes) -> int | None:
    """Where the rows begin in the first chunk, when the fast path can read them."""
    if _other_encoding(head):
        return None
    match = _SHEET_DATA.search(head)
    if match is None or b"<sheetData" in head[:match.start()]:
        return None  # prefixed (x:sheetData), or the chunk ends before it
    return match.start()


def _fast_rows(cells: _Cells, text_head: bytes, source: IO[bytes]
               ) -> Iterator[Record]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = decoder.decode(text_head)
    if pending.startswith("<sheetData/>"):
        return
    pending = pending[len("<sheetData>"):]
    ended = False
    while not ended:
        chunk = source.read(_CHUNK)
        if chunk:
            pending += decoder.decode(chunk)
        else:
            pending += decoder.decode(b"", final=True)
        cut = pending.rfind("</row>")
        closing = pending.find("</sheetData>")
        if closing != -1:  # the last rows: everything up to the end of the data
            rows, pending, ended = pending[:closing], "", True
        elif cut != -1:
            rows, pending = pending[:cut + 6], pending[cut + 6:]
        elif not chunk:
            rows, pending, ended = pending, "", True
        else:
            continue  # one row longer than a chunk: read on
        found = _read_fast(cells, rows)
        yield from found if found is not None else _read_expat(cells, rows)


def _read_fast(cells: _Cells, text: str) -> list[Record] | None:
    """The rows in ``text``, or None when some of it is not in the plain form (or holds a
    NUL byte, which XML does not allow: expat then says the sheet is damaged)."""
    if "\x00" in text:
        return None
    plain = "<!" not in text and "<?" not in text  # no CDATA, comment or instruction
    if plain and "&#" in text:
        text = _decode_references(text)
    form = cells.form
    if form is not None and plain:
        found = form.read(cells, text)
        if found is not None:
            return found
    by_cell = _read_cells(cells, text)
    if by_cell is not None and plain:
        cells.form = _RowForm.learn(cells, text) or form  # the form of the chunk's last row
    return by_cell


def _read_cells(cells: _Cells, text: str) -> list[Record] | None:
    """``_read_fast``, cell by cell."""
    rows: list[Record] = []
    row: list[Any] = []
    number = 0
    letters_index = _LETTERS
    shared, dates = cells.shared, cells.dates
    attributes = _ATTRIBUTES
    found = _matches(_FAST, text)
    if found is None:
        return None
    for whole, letters, attrs, v, inline, inline_text, row_number, empty, _ in found:
        if letters:  # unmatched groups are empty
            index = letters_index.get(letters) or _column(whole[6:whole.index('"', 6)])
            kind_style = attributes.get(attrs)
            if kind_style is None:
                kind_style = attributes[attrs] = _kind_style(attrs)
            kind, style = kind_style
            raw = inline_text if inline else v
            if raw and ("&" in raw or "\r" in raw):
                raw = _as_read(raw)
            value: Any
            if kind == "inlineStr":
                value = raw if inline else None
            elif not raw:
                if "<f" not in whole or (kind == "str" and "<v>" in whole):
                    continue  # empty, or a formula whose value is the empty text
                value, row = BadCell(f"{letters}{number}", "formula"), _flagged(row)
            elif kind == "s" and raw.isdigit() and (position := int(raw)) < len(shared):
                value = shared[position]
            elif kind == "n" and style not in dates:
                value = _cast_number(raw)
            elif kind == "e":
                value, row = BadCell(f"{letters}{number}", "error", raw), _flagged(row)
            else:  # dates, booleans, formulas' text, a bad index: as expat's path
                value = cells.value_of(raw, kind, style, index, number, bool(inline))
            if value is not None:
                if len(row) == index - 1:  # the next column, as most cells are
                    row.append(value)
                else:
                    if len(row) < index:
                        row.extend([None] * (index - len(row)))
                    row[index - 1] = value
        elif row_number:
            number = int(row_number)
            row = []
            if empty:  # <row r="5"/>
                rows.append((number, row))
        else:  # </row>
            if cells.bad_row:
                row, cells.bad_row = _flagged(row), False
            rows.append((number, row))
    cells.number = number
    return rows


_WHOLE = operator.itemgetter(0)
_SHARED, _NUMBER, _DATE, _TEXT = "shared", "number", "date", "text"  # what a form's cell holds
_FORM_CELLS = 256  # wider rows are read cell by cell: a pattern for each would be long to make


class _RowForm:
    """One form of row, learnt from a row the fast path read: cells from A on, with the
    same attributes, each holding a value of the kind it held there (a shared string, a
    number, a date, an inline string). A sheet's rows are mostly of one form; each such row
    is read by one match of a pattern made for it and its values converted by the kind
    already known, with no work per cell to find out what the cell is (about twice as
    fast). Rows of other forms between them are read as before, cell by cell."""

    __slots__ = ("kinds", "pattern")

    def __init__(self, pattern: re.Pattern[str], kinds: tuple[tuple[str, str, int], ...]) -> None:
        self.pattern, self.kinds = pattern, kinds

    @classmethod
    def learn(cls, cells: _Cells, text: str) -> _RowForm | None:
        """The form of the last row in ``text``, when it is one a form can read."""
        start = text.rfind("<row ")
        found = _matches(_FAST, text[start:]) if start != -1 else None
        if (not found or not 3 <= len(found) <= _FORM_CELLS + 2 or not found[0][6]
                or found[0][7] or not found[-1][8]
                or sum(map(len, map(_WHOLE, found))) != len(text) - start):
            return None  # not a row with cells, or one with white space between its parts
        parts = [r'<row r="([0-9]++)"[^>/]*+>']
        kinds: list[tuple[str, str, int]] = []
        for index, (whole, letters, attrs, raw, inline, *_) in enumerate(found[1:-1], 1):
            if not letters or _LETTERS.get(letters) != index or "<f" in whole:
                return None  # a gap before the cell, or a formula
            kind, style = _kind_style(attrs)
            cell = f'<c r="{letters}[0-9]++"{re.escape(attrs)}>'
            if inline and kind == "inlineStr":
                kinds.append((_TEXT, kind, style))
                parts.append(cell + r'<is><t(?: xml:space="preserve")?+>([^<]*+)</t></is></c>')
            elif raw.isascii() and raw.isdigit() and kind == "s":
                kinds.append((_SHARED, kind, style))
                parts.append(cell + "<v>([0-9]++)</v></c>")
            elif raw and kind == "n":
                kinds.append((_DATE if style in cells.dates else _NUMBER, kind, style))
                parts.append(cell + "<v>([^<&\r]++)</v></c>")
            else:
                return None
        return cls(re.compile("(" + "".join(parts) + "</row>)"), tuple(kinds))

    def read(self, cells: _Cells, text: str) -> list[Record] | None:
        """The rows in ``text``: those of this form by its pattern, the others cell by cell
        (or by expat); None when a shared-string index is out of range (the cell by cell
        path then says so)."""
        rows: list[Record] = []
        found = self.pattern.findall(text)
        try:
            if sum(map(len, map(_WHOLE, found))) == len(text):  # every row of this form
                for match in found:
                    number = int(match[1])
                    rows.append((number, self._values(cells, number, match)))
                cells.number = rows[-1][0] if rows else cells.number
                return rows
            at = 0
            mine = 0
            for match in self.pattern.finditer(text) if found else ():  # none: all between
                start = match.start()
                if start != at:
                    rows.extend(_read_between(cells, text[at:start]))
                number = int(match[2])
                rows.append((number, self._values(cells, number, match.groups())))
                cells.number, at, mine = number, match.end(), mine + 1
            if at != len(text):
                rows.extend(_read_between(cells, text[at:]))
        except IndexError:
            return None
        if mine * 2 < len(rows):  # mostly rows of another form now
            cells.form = _RowForm.learn(cells, text) or self
        return rows

    def _values(self, cells: _Cells, number: int, match: tuple[str, ...]
                ) -> tuple[Any, ...] | list[Any]:
        """The row's values as a row keeps them (see :func:`sheet_value`)."""
        shared = cells.shared
        values: list[Any] = []
        for (what, kind, style), raw in zip(self.kinds, match[2:], strict=True):
            if what is _SHARED:
                values.append(shared[int(raw)])
            elif what is _NUMBER:
                values.append(sheet_value(_cast_number(raw)))
            elif what is _TEXT:
                values.append(_as_read(raw) if "&" in raw or "\r" in raw else raw)
            else:
                values.append(sheet_value(cells.value_of(raw, kind, style, len(values) + 1,
                                                         number)))
        if cells.bad_row:  # a date past any date (see _Cells._value)
            cells.bad_row = False
            return FlaggedRow(values)
        return tuple(values)


def _read_between(cells: _Cells, text: str) -> Sequence[Record]:
    """Rows between those of a form: cell by cell, or by expat."""
    found = _read_cells(cells, text)
    return found if found is not None else _read_expat(cells, text)


def _matches(pattern: re.Pattern[str], text: str) -> list[tuple[str, ...]] | None:
    """The groups of each match of ``pattern`` in ``text`` (unmatched ones empty), when
    only white space lies between the matches; None when anything else does. The
    pattern's first group is its whole match: when the matches cover the text, one
    ``findall`` in C finds them (no white space between: the usual case)."""
    found: list[tuple[str, ...]] = pattern.findall(text)
    if sum(map(len, map(_WHOLE, found))) == len(text):
        return found
    found = []
    at = 0
    for match in pattern.finditer(text):
        start, end = match.span()
        if start != at and not text[at:start].isspace():
            return None
        at = end
        found.append(match.groups(""))
    if at != len(text) and not text[at:].isspace():
        return None
    return found


_ATTRIBUTES: dict[str, tuple[str, int]] = {}  # a cell's attributes as written -> (t, s)
_OTHER_REFERENCE = re.compile(r"&(?!(?:amp|lt|gt|quot|apos);)")


_UNESCAPED: dict[str, str] = {}  # texts with character references, as read: they repeat
_UNESCAPED_MOST = 4096


def _as_read(raw: str) -> str:
    """A text as written in the XML, as it reads: its line ends as the XML parser makes
    them, its references decoded (see ``_unescape``). For text holding ``&`` or CR."""
    return _unescape(raw.replace("\r\n", "\n").replace("\r", "\n"))


def _unescape(text: str) -> str:
    """XML's five entities by replacement (a URL's &amp; in most sheets); character
    references (`&#252;`, as some writers spell every non-ASCII letter) decoded once per
    distinct text, since a column's values repeat."""
    if not _OTHER_REFERENCE.search(text):
        return (text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
                .replace("&apos;", "'").replace("&amp;", "&"))
    found = _UNESCAPED.get(text)
    if found is None:
        if len(_UNESCAPED) >= _UNESCAPED_MOST:
            _UNESCAPED.clear()
        found = _UNESCAPED[text] = html.unescape(text)
    return found


_NUMERIC_REFERENCE = re.compile(r"&#(?:[0-9]{1,7}|[xX][0-9a-fA-F]{1,6});")
_DECODED: dict[str, str] = {}  # a character reference -> its character, or itself


def _decode_references(text: str) -> str:
    """``text`` with its character references to plain characters decoded, in one pass
    (some writers spell every non-ASCII letter as one, and decoding each text on its own
    took a third of the read). Those to markup characters (< & > " '), to control
    characters and to code points that HTML's rules map elsewhere are left for
    ``_unescape``, so each text reads as before. Only for text with no CDATA, comment or
    processing instruction, whose references are not references."""
    return _NUMERIC_REFERENCE.sub(_decode_reference, text)


def _decode_reference(match: re.Match[str]) -> str:
    reference = match.group()
    found = _DECODED.get(reference)
    if found is None:
        body = reference[2:-1]
        code = int(body[1:], 16) if body[0] in "xX" else int(body)
        plain = ((0x20 <= code < 0x7F and chr(code) not in "<&>\"'") or 0xA0 <= code < 0xD800
                 or 0xE000 <= code < 0xFDD0 or 0xFDF0 <= code < 0xFFFE
                 or (0x10000 <= code <= 0x10FFFF and code & 0xFFFE != 0xFFFE))
        found = chr(code) if plain else reference
        if len(_DECODED) < _UNESCAPED_MOST:
            _DECODED[reference] = found
    return found


def _kind_style(attrs: str) -> tuple[str, int]:
    kind, style = "n", 0
    for name, value in _ATTRS.findall(attrs):
        if name == "t":
            kind = value
        elif value:
            style = int(value)
    return kind, style


def _read_expat(cells: _Cells, text: str) -> list[tuple[int, list[Any]]]:
    """Rows in any form, read by expat as the whole-sheet path reads them."""
    parser = _parser(cells)
    parser.Parse(("<sheetData>" + text + "</sheetData>").encode("utf-8"), True)
    found = list(cells.rows)
    cells.rows.clear()
    return found
