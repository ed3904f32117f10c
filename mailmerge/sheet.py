"""Recipient sheets: CSV and Excel .xlsx, streamed row by row.

Rows are numbered as a spreadsheet shows them: the header row is row 1, and blank rows
still count. An empty first row is an error, not a reason to take the next row for the
header: that row may be the first recipient, whose cells would become column names.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
import zipfile
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self
from xml.etree.ElementTree import ParseError
from xml.parsers import expat
from xml.parsers.expat import ExpatError

from .campaign import Recipients
from .errors import SheetError
from .notices import Notice
from .xlsxrows import BadCell, FlaggedRow, Record, column_letters, sheet_value

CSV_DELIMITERS = (",", ";", "\t")
_OLE_PROBE = 1 << 20  # the start of a file, where an OLE container lists its streams
_ENCRYPTED = "EncryptedPackage".encode("utf-16-le")
_SNIFF_BYTES = 64 * 1024
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")
# csv's default cell limit is 128 KiB; a newsletter cell may hold a whole article.
CSV_CELL_LIMIT = 16 * 1024 * 1024
# The errors a spreadsheet's formula can give, as it shows them (and exports them to CSV)
EXCEL_ERRORS = frozenset({
    "#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA",
    "#SPILL!", "#CALC!", "#FIELD!", "#BLOCKED!", "#CONNECT!", "#BUSY!", "#UNKNOWN!",
    "#EXTERNAL!", "#PYTHON!",
    "#ERROR!"})  # Google Sheets' own; its others are Excel's
# LibreOffice exports most of its errors as Err: and a 3-digit code (Err:502, Err:504)
_CODED_ERROR = re.compile(r"Err:\d{3}")
_ERROR_TEXT = re.compile("#(?:" + "|".join(re.escape(e[1:]) for e in sorted(EXCEL_ERRORS))
                         + r")|Err:\d{3}")


def is_exported_error(cell: str) -> bool:
    """Whether a CSV cell is, whole, a spreadsheet's formula error exported as text."""
    return cell in EXCEL_ERRORS or (cell[:4] == "Err:" and _CODED_ERROR.fullmatch(cell)
                                    is not None)


@dataclass(frozen=True)
class Row:
    """One recipient: its values by column name, and its number as a spreadsheet shows it."""

    number: int
    values: Mapping[str, Any]
    # A problem of this row alone (a stray cell, a NUL byte): the row is reported, the
    # rest of the sheet goes on.
    problem: SheetError | None = None

    @property
    def bad(self) -> Mapping[str, BadCell] | None:
        """The cells that hold no usable value (an error, a formula not calculated), by
        column: a message that uses one fails; the others do not matter."""
        return None


@dataclass(frozen=True)
class RowWithBadCells(Row):
    """A row with cells that hold no usable value: a class of its own, so that the rows
    of a sheet, which have none, are made with a field less (a tenth of a CSV row's
    reading)."""

    cells: Mapping[str, BadCell] = field(default_factory=dict)

    @property
    def bad(self) -> Mapping[str, BadCell] | None:
        return self.cells


def describe_bad_cell(cell: BadCell) -> tuple[str, str]:
    """What is wrong with a cell that holds no usable value, and how to fix it."""
    if cell.kind == "formula":
        return ("the cell holds a formula whose value the file does not store (the program "
                "that wrote it did not calculate it), so the message would show nothing",
                "open the workbook in Excel or LibreOffice and save it, so that it stores the "
                "values; or type the values in")
    if cell.kind == "date":
        return ("the cell is formatted as a date but holds a number past any date",
                "type the date in again, or format the cell as a number")
    if cell.kind == "error":
        return (f"the cell holds the error {cell.text} that its formula gives",
                "correct the formula or the cells it uses, and save the workbook; or type "
                "the value in")
    return (f"the cell holds {cell.text}, a spreadsheet's formula error exported as text",
            "correct the formula in the spreadsheet and export the sheet again; or type the "
            "value in")


class Sheet:
    """An open recipient sheet: ``columns`` is known at once, rows are read as iterated."""

    def __init__(self, path: Path, columns: tuple[str, ...], rows: Iterator[Row],
                 closer: Any = None) -> None:
        self.path, self.columns, self._rows, self._closer = path, columns, rows, closer

    def __iter__(self) -> Iterator[Row]:
        return self._rows

    @property
    def notices(self) -> list[Notice]:
        """Warnings about the header: columns a reader cannot tell apart."""
        return [Notice.warning(text) for text in look_alike_columns(self.path, self.columns)]

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()
            self._closer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sheet(recipients: Recipients) -> Sheet:
    """Open the recipient sheet and read its header. Raises SheetError when it cannot be read."""
    path = recipients.path
    try:
        with open(path, "rb") as probe:
            head = probe.read(_OLE_PROBE)
    except OSError as exc:
        raise SheetError(f"cannot read the recipient sheet: {exc.strerror}", path=path) from exc
    magic = head[:8]
    suffix = path.suffix.lower()
    if magic.startswith(b"\xd0\xcf\x11\xe0") and _ENCRYPTED in head:
        # an OLE container holding an EncryptedPackage: an .xlsx saved with a password
        raise SheetError("the workbook is encrypted (saved with a password)", path=path,
                         hint="open it in a spreadsheet program and save it again without "
                              "a password, as .xlsx or .csv")
    if magic.startswith(b"\xd0\xcf\x11\xe0"):
        raise SheetError("this is an old Excel .xls workbook, which mailmerge cannot read",
                         path=path, hint="open it in a spreadsheet program and save it as .xlsx "
                                         "(Excel Workbook) or .csv")
    if suffix in (".xlsx", ".xlsm") or magic.startswith(b"PK\x03\x04"):
        return _open_xlsx(recipients)
    if suffix in (".xls", ".ods", ".numbers"):
        raise SheetError(f"{suffix} files cannot be read", path=path,
                         hint="save the sheet as .xlsx or .csv")
    return _open_csv(recipients)


def _header(path: Path, number: int, cells: list[Any]) -> tuple[str, ...]:
    for cell in cells:
        if cell.__class__ is BadCell:
            what, how = describe_bad_cell(cell)
            raise SheetError(f"cell {cell.reference} of the header row: {what}", path=path,
                             row=number, hint=f"{how}: the header names the columns")
    columns = tuple("" if c is None else str(c).strip() for c in cells)
    while columns and not columns[-1]:
        columns = columns[:-1]
    seen: dict[str, int] = {}
    for index, name in enumerate(columns):
        if name and name in seen:
            raise SheetError(f"column name {name!r} appears twice (columns {_letter(seen[name])} "
                             f"and {_letter(index)})", path=path, row=number,
                             hint="give every column a different name")
        seen[name] = index
    if not any(columns):
        raise SheetError("the header row has no column names", path=path, row=number)
    return columns


def _look_alike(name: str) -> str:
    """What a reader sees of a column name: case, compatibility forms and invisible
    characters (zero-width spaces, soft hyphens, a stray BOM) do not show."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if unicodedata.category(c) != "Cf").strip()


def _plain(name: str) -> bool:
    """No compatibility form and no invisible character: such names differ only by case."""
    return (unicodedata.normalize("NFKC", name) == name
            and all(unicodedata.category(c) != "Cf" for c in name))


def look_alike_columns(path: Path, columns: tuple[str, ...]) -> list[str]:
    """One warning for each group of columns whose names differ only invisibly."""
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(columns):
        if name:
            groups.setdefault(_look_alike(name), []).append(index)
    found = []
    for indexes in groups.values():
        if len(indexes) > 1:
            names = " and ".join(f"{columns[i]!r} (column {_letter(i)})" for i in indexes)
            if all(_plain(columns[i]) for i in indexes):
                how = "only by upper and lower case"
            else:
                how = "only by invisible characters or by how the same letters are encoded"
            found.append(f"{path.name}: the columns {names} differ {how}; a template gets "
                         "the one it names exactly, which is easy to mix up: rename one")
    return found


def _empty_header(path: Path, first: int) -> SheetError:
    """The error for a sheet whose first row is empty and whose first filled row is ``first``."""
    empty = "row 1 is" if first == 2 else f"rows 1 to {first - 1} are"
    return SheetError(f"{empty} empty, but the column names must be in row 1; row {first} "
                      "would be taken for the header although it may be a recipient",
                      path=path, row=1, hint="delete the empty rows above the column names")


def _letter(index: int) -> str:
    """Spreadsheet column letter for a 0-based index (0 -> A, 26 -> AA)."""
    return column_letters(index + 1)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _is_usual(cells: Sequence[Any], width: int, named: bool) -> bool:
    """Whether ``_usual_row`` may make the row: every cell under a named column (``named``:
    the header has no empty name; ``width``: its length) and the first cell not blank.
    NUL bytes are the caller's to rule out."""
    return named and 0 < len(cells) <= width and not _is_blank(cells[0])


def _usual_row(number: int, columns: tuple[str, ...], cells: Sequence[Any],
               values: Iterable[Any]) -> Row:
    """The usual row (see ``_is_usual``), without ``_make_row``'s loop. ``values`` are the
    cells as the row keeps them; columns past the last cell are empty."""
    found = dict(zip(columns, values, strict=False))  # fewer cells than columns
    for name in columns[len(cells):]:
        found[name] = ""
    return Row(number, found, None)


def _make_row(path: Path, number: int, columns: tuple[str, ...], cells: list[Any] | tuple[Any, ...],
              convert: Any) -> Row | None:
    """Pair cells with columns; None for a blank row. A stray cell or a NUL byte is kept as
    the row's ``problem``."""
    if (not cells or _is_blank(cells[0])) and all(_is_blank(c) for c in cells):
        return None
    values: dict[str, Any] = {}
    problem = None
    for index, cell in enumerate(cells):
        name = columns[index] if index < len(columns) else ""
        if not name:
            if not _is_blank(cell) and problem is None:
                problem = SheetError(
                    f"cell {_letter(index)}{number} holds {str(cell)[:40]!r} but its column has "
                    "no name in the header row", path=path, row=number,
                    hint="name the column in the header row or delete the cell")
            continue
        if cell.__class__ is str and "\x00" in cell and problem is None:
            problem = SheetError("the cell holds a NUL byte", path=path, row=number, column=name,
                                 hint="remove it; a file full of NUL bytes is usually UTF-16: "
                                      "save the sheet as UTF-8 CSV")
        values[name] = convert(cell) if convert is not None else cell
    if len(values) < len(columns):
        for name in columns:
            if name and name not in values:
                values[name] = ""
    if cells.__class__ is FlaggedRow:
        bad = {name: value for name, value in values.items() if value.__class__ is BadCell}
        if bad:
            return RowWithBadCells(number, values, problem, bad)
    return Row(number, values, problem)


def _may_hold_an_error(text: str) -> bool:
    """Whether ``text`` (a row's cells joined, holding a #) holds a spreadsheet's error."""
    return _ERROR_TEXT.search(text) is not None


def _exported_errors(number: int, record: list[str]) -> list[Any]:
    """A CSV row whose cells that hold a spreadsheet's error (#N/A ...) are BadCells."""
    if not any(map(is_exported_error, record)):
        return record
    return FlaggedRow(BadCell(f"{_letter(index)}{number}", "exported", cell)
                      if is_exported_error(cell) else cell for index, cell in enumerate(record))


# --- CSV -----------------------------------------------------------------------------------

def _detect_delimiter(sample: str) -> str:
    """The most frequent of , ; TAB outside quotes on the header line."""
    counts = dict.fromkeys(CSV_DELIMITERS, 0)
    quoted = False
    for char in sample:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "\r\n":
            break
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(CSV_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


class LineTooLong(Exception):
    """A line of a CSV file longer than a cell may be: raised before it is read whole."""


def _bounded(readline: Callable[[int], Any], limit: int) -> Iterator[Any]:
    """The lines ``readline`` gives, each read with a size limit: a longer line raises
    LineTooLong once ``limit`` of it is read, never read whole (a file of one 1 GB line)."""
    while line := readline(limit + 1):
        if len(line) > limit and line[-1:] not in ("\n", b"\n"):
            raise LineTooLong
        yield line


def _decoded_lines(handle: IO[bytes], encoding: str, limit: int) -> Iterator[str]:
    """Decode line by line, so that a bad byte is reported at its own row.

    Every encoding handled here is ASCII-compatible, so b"\\n" always ends a line; a lone CR
    (old Mac line ends, or mixed endings) ends one too.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    readline, size = handle.readline, limit + 1  # as _bounded, without its generator
    while raw := readline(size):
        if len(raw) > limit and raw[-1:] != b"\n":
            raise LineTooLong
        text = decoder.decode(raw)
        if "\r" in text.rstrip("\r\n"):
            yield from (piece for piece in _LONE_CR.split(text) if piece)
        else:
            yield text
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def _open_csv(recipients: Recipients) -> Sheet:
    path = recipients.path
    if csv.field_size_limit() < CSV_CELL_LIMIT:  # the limit is the csv module's, process-wide
        csv.field_size_limit(CSV_CELL_LIMIT)
    encoding = recipients.encoding or "utf-8-sig"
    try:
        handle = open(path, "rb")  # noqa: SIM115 - the Sheet closes it
        sample = handle.read(_SNIFF_BYTES)
        handle.seek(0)
    except OSError as exc:
        raise SheetError(f"cannot read the recipient sheet: {exc.strerror}", path=path) from exc
    if recipients.encoding is None and sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"  # what spreadsheet programs call "Unicode text"
    if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig"):
        encoding = "utf-8-sig"  # same thing, but a BOM is not part of the first column name
    lines: Iterator[str]
    opened: IO[Any] = handle  # what to close: the text wrapper, if any, closes the file
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        opened = io.TextIOWrapper(handle, encoding=encoding, newline="")
        lines = _bounded(opened.readline, CSV_CELL_LIMIT)
    else:
        lines = _decoded_lines(handle, encoding, CSV_CELL_LIMIT)

    def decode_error(exc: UnicodeDecodeError, number: int) -> SheetError:
        return SheetError(
            f"the file is not valid {recipients.encoding or 'UTF-8'} text "
            f"(byte 0x{exc.object[exc.start]:02x})", path=path, row=number,
            hint="save it as UTF-8, or name its encoding: "
                 "`recipients: {path: ..., encoding: latin-1}` (or cp1252, gbk ...)")

    delimiter = recipients.delimiter or _detect_delimiter(
        sample.decode(encoding, errors="replace"))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    number = 0

    def next_record() -> list[str] | None:
        nonlocal number
        try:
            record = next(reader)
        except StopIteration:
            return None
        except UnicodeDecodeError as exc:
            raise decode_error(exc, number + 1) from exc
        except LineTooLong:
            raise SheetError(f"a line is longer than {CSV_CELL_LIMIT // 1024**2} MB, more than "
                             "a cell may hold; the rest of the file was not read", path=path,
                             row=number + 1,
                             hint="a sheet whose file is a single line has the wrong line "
                                  "ends, or is not a CSV file: export it again as CSV") from None
        except csv.Error as exc:
            raise SheetError(f"malformed CSV: {exc}", path=path, row=number + 1,
                             hint="check the quotes in this row: a cell that holds the "
                                  "delimiter or a line break must be in double quotes, "
                                  'and a quote inside it doubled ("")') from exc
        number += 1
        return record

    try:
        first = record = next_record()
        while record is not None and not any(c.strip() for c in record):
            record = next_record()
        if record is None:
            raise SheetError("the sheet is empty: no header row", path=path,
                             hint="the first row must name the columns, e.g. email,name")
        if record is not first:
            raise _empty_header(path, number)
        columns = _header(path, number, record)
    except SheetError:
        opened.close()
        raise

    def rows() -> Iterator[Row]:
        width, named = len(columns), "" not in columns
        try:
            while (record := next_record()) is not None:
                joined = "".join(record)
                # every error ends in ! but #N/A, #NAME?, #GETTING_DATA and Err:502: tests
                # in C rule out most rows with a # (a link's #fragment) before the pattern
                if (("#" in joined and ("!" in joined or "#N" in joined or "#G" in joined))
                        or "Err:" in joined) and _may_hold_an_error(joined):
                    record = _exported_errors(number, record)
                elif _is_usual(record, width, named) and "\x00" not in joined:
                    yield _usual_row(number, columns, record, record)
                    continue
                row = _make_row(path, number, columns, record, None)
                if row is not None:
                    yield row
        finally:
            opened.close()

    return Sheet(path, columns, rows(), opened)


# --- XLSX ----------------------------------------------------------------------------------

MAX_XLSX_EXPANDED = 2 * 1024**3
MAX_XLSX_STRINGS = 256 * 1024**2


def _refuse_bombs(path: Path) -> None:
    """Refuse a workbook that would expand to gigabytes (a zip bomb), or whose XML declares
    a DTD, before anything parses it."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            total = sum(m.file_size for m in members)
            strings = sum(m.file_size for m in members
                          if m.filename.endswith("sharedStrings.xml"))
            if total > MAX_XLSX_EXPANDED or strings > MAX_XLSX_STRINGS:
                raise SheetError(f"the workbook would expand to {total / 1024**2:,.0f} MB, more "
                                 "than a recipient sheet can need; it may be a zip bomb",
                                 path=path, hint="export the sheet as .csv instead")
            for member in members:
                if member.filename.endswith((".xml", ".rels")) and _declares_dtd(archive, member):
                    raise SheetError(
                        f"the workbook's part {member.filename[:80]!r} declares a DTD "
                        "(<!DOCTYPE>), which no spreadsheet program writes; its entities "
                        "could read local files or expand to gigabytes", path=path,
                        hint="open the file only if you trust where it came from, and save it "
                             "again as .xlsx or export it as .csv")
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zipfile.LargeZipFile) as exc:
        raise SheetError(f"not a readable Excel .xlsx workbook ({type(exc).__name__}: {exc})",
                         path=path, hint="open it in a spreadsheet program and save it again "
                                         "as .xlsx, or export it as .csv") from exc


class _Prolog(Exception):
    """Raised by the prolog scan: a DTD (True) or the root element (False) was reached."""


def _declares_dtd(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bool:
    """Whether an XML part has a <!DOCTYPE>: only its prolog is read, up to the root element.

    Entities are where XML's attacks live (a billion laughs, external files), and the
    packaging rules of Office Open XML forbid a DTD in a package's XML, so one is refused
    before any parser that would expand it sees the file.
    """
    def found(*_: object) -> None:
        raise _Prolog(True)

    def root(*_: object) -> None:
        raise _Prolog(False)

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = found
    parser.StartElementHandler = root
    try:
        with archive.open(member) as source:
            while chunk := source.read(4096):
                parser.Parse(chunk, False)
    except _Prolog as reached:
        return bool(reached.args[0])
    except ExpatError:
        return False  # not well-formed: the reader that needs this part says so
    return False


def _open_xlsx(recipients: Recipients) -> Sheet:
    from .xlsxbook import Workbook

    path = recipients.path
    _refuse_bombs(path)
    try:
        workbook = Workbook(path)
    except (zipfile.BadZipFile, KeyError, ValueError, IndexError,
            OSError, EOFError, zipfile.LargeZipFile, ExpatError, ParseError) as exc:
        raise SheetError(f"not a readable Excel .xlsx workbook ({type(exc).__name__}: {exc})",
                         path=path, hint="open it in a spreadsheet program and save it again "
                                         "as .xlsx, or export it as .csv") from exc
    records: Generator[Record] | None = None
    try:
        if recipients.sheet is not None:
            if recipients.sheet not in workbook.sheetnames:
                raise SheetError(f"the workbook has no sheet named {recipients.sheet!r}",
                                 path=path, hint="its sheets are: " +
                                 ", ".join(repr(s) for s in workbook.sheetnames))
            name = recipients.sheet
        elif workbook.sheetnames:
            name = workbook.sheetnames[0]
        else:
            raise SheetError("the workbook has no worksheet", path=path,
                             hint="open it in a spreadsheet program and save it again")
        records = workbook.records(name)
        for number, record in records:  # noqa: B007 - the header's number, used below
            if not all(_is_blank(c) for c in record):
                break
        else:
            raise SheetError("the sheet is empty: no header row", path=path,
                             hint="the first row must name the columns, e.g. email, name")
        if number != 1:
            raise _empty_header(path, number)
        columns = _header(path, number, list(record))
    except SheetError:
        if records is not None:  # its open worksheet keeps the file open past the archive
            records.close()
        workbook.close()
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, IndexError, OSError, EOFError,
            ExpatError) as exc:
        if records is not None:
            records.close()
        workbook.close()
        raise SheetError(f"the workbook is damaged ({type(exc).__name__}: {exc})", path=path,
                         hint="open it in a spreadsheet program and save it again") from exc

    def rows() -> Iterator[Row]:
        nonlocal number
        width, named = len(columns), "" not in columns
        try:
            for number, record in records:
                if record.__class__ is not FlaggedRow and _is_usual(record, width, named):
                    # (XML cannot hold a NUL byte)
                    yield _usual_row(number, columns, record, record
                                     if record.__class__ is tuple  # as kept already
                                     else map(sheet_value, record))
                    continue
                row = _make_row(path, number, columns, record, sheet_value)
                if row is not None:
                    yield row
        except (zipfile.BadZipFile, KeyError, ValueError, IndexError, OSError, EOFError,
                ExpatError) as exc:
            raise SheetError(f"the workbook is damaged ({type(exc).__name__}: {exc})",
                             path=path, row=number + 1,
                             hint="open it in a spreadsheet program and save it again") from exc
        finally:
            workbook.close()

    return Sheet(path, columns, rows(), workbook)


__all__ = ["Row", "Sheet", "open_sheet"]
