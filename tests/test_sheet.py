from __future__ import annotations

import datetime as dt
from pathlib import Path

import openpyxl
import pytest

from mailmerge import SheetError, open_sheet
from mailmerge.campaign import Recipients
from mailmerge.xlsxrows import BadCell

from .conftest import write_csv, write_xlsx


def read(path: Path, **kw: object) -> tuple[tuple[str, ...], list[tuple[int, dict]]]:
    with open_sheet(Recipients(path=path, **kw)) as sheet:  # type: ignore[arg-type]
        return sheet.columns, [(r.number, dict(r.values)) for r in sheet]


def error_of(path: Path, **kw: object) -> str:
    with pytest.raises(SheetError) as info:
        read(path, **kw)
    return str(info.value)


def test_csv_with_bom_and_stripped_column_names(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes("\ufeff email , name\nzoe@example.org,Zoë\n".encode())
    assert read(path) == (("email", "name"), [(2, {"email": "zoe@example.org", "name": "Zoë"})])


def test_a_csv_cell_may_hold_a_whole_article(tmp_path: Path) -> None:
    article = "Lorem ipsum dolor sit amet. " * 20_000  # 560 KB: over csv's 128 KB default
    path = write_csv(tmp_path / "p.csv", [["email", "body"], ["a@x.org", article]])
    assert read(path)[1] == [(2, {"email": "a@x.org", "body": article})]


@pytest.mark.parametrize("delimiter", [";", "\t", ","])
def test_csv_delimiter_is_detected(tmp_path: Path, delimiter: str) -> None:
    path = write_csv(tmp_path / "p.csv", [["email", "name"], ["a@x.org", "Jones, Carol; Jr"]],
                     delimiter=delimiter)
    assert read(path)[1] == [(2, {"email": "a@x.org", "name": "Jones, Carol; Jr"})]


def test_csv_delimiter_can_be_set(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("email|name\na@x.org|A\n")
    assert read(path, delimiter="|")[1] == [(2, {"email": "a@x.org", "name": "A"})]


def test_csv_other_encodings(tmp_path: Path) -> None:
    latin = write_csv(tmp_path / "l.csv", [["email", "name"], ["a@x.org", "Søren"]],
                      encoding="latin-1")
    gbk = write_csv(tmp_path / "g.csv", [["email", "name"], ["a@x.org", "李小龙"]], encoding="gbk")
    assert read(latin, encoding="latin-1")[1][0][1]["name"] == "Søren"
    assert read(gbk, encoding="gbk")[1][0][1]["name"] == "李小龙"


def test_csv_in_the_wrong_encoding_suggests_encoding(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"email,name\na@x.org,S\xf8ren\n")
    assert error_of(path) == (
        f"{path}, row 2: the file is not valid UTF-8 text (byte 0xf8); save it as UTF-8, or "
        "name its encoding: `recipients: {path: ..., encoding: latin-1}` (or cp1252, gbk ...)")


def test_rows_are_numbered_as_a_spreadsheet_shows_them(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("email,note\na@x.org,\"two\nlines\"\n,\n\nb@x.org,x\n\n\n")
    columns, rows = read(path)
    assert columns == ("email", "note")
    assert [n for n, _ in rows] == [2, 5]
    assert rows[0][1]["note"] == "two\nlines"


@pytest.mark.parametrize("head, first", [("\n", 2), (",,\n", 2), ("\n ,\n\n", 4)])
def test_an_empty_header_row_is_an_error_not_a_reason_to_take_the_next(
        tmp_path: Path, head: str, first: int) -> None:
    path = tmp_path / "p.csv"
    path.write_text(head + "a@x.org,Ann\nb@x.org,Bob\n")
    empty = "row 1 is" if first == 2 else f"rows 1 to {first - 1} are"
    assert error_of(path) == (f"{path}, row 1: {empty} empty, but the column names must be in "
                              f"row 1; row {first} would be taken for the header although it "
                              "may be a recipient; delete the empty rows above the column names")


@pytest.mark.parametrize("leading", [[[None, None]], [], [["", " "]]],
                         ids=["blank-cells", "absent", "spaces"])
def test_an_empty_first_row_of_a_workbook_is_an_error(tmp_path: Path,
                                                     leading: list[list[object]]) -> None:
    path = tmp_path / "p.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for index, row in enumerate(leading or [[None]]):
        for column, value in enumerate(row):
            if leading:
                sheet.cell(index + 1, column + 1, value)
    sheet.cell(2, 1, "a@x.org")
    sheet.cell(2, 2, "Ann")
    workbook.save(path)
    assert error_of(path).startswith(f"{path}, row 1: row 1 is empty, but the column names "
                                     "must be in row 1; row 2 would be taken for the header")


def test_duplicate_column_names_are_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", [["email", "name", "email "], ["a@x.org", "A", "b"]])
    assert error_of(path) == (f"{path}, row 1: column name 'email' appears twice (columns A and "
                              "C); give every column a different name")


def test_unbalanced_quotes_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('email,name\na@x.org,"Carol\n')
    assert error_of(path) == (
        f"{path}, row 2: malformed CSV: unexpected end of data; check the quotes in this row: a "
        "cell that holds the delimiter or a line break must be in double quotes, and a quote "
        'inside it doubled ("")')


def test_cell_under_a_nameless_column_is_a_problem_of_its_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", [["email", "name"], ["a@x.org", "A", "stray"],
                                          ["b@x.org", "B"]])
    with open_sheet(Recipients(path=path)) as sheet:
        first, second = list(sheet)
    assert str(first.problem) == (f"{path}, row 2: cell C2 holds 'stray' but its column has no "
                                  "name in the header row; name the column in the header row "
                                  "or delete the cell")
    assert second.problem is None and second.values == {"email": "b@x.org", "name": "B"}


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_a_column_without_a_name_between_named_ones_keeps_its_cells_out(tmp_path: Path,
                                                                        kind: str) -> None:
    """The usual rows are read without the general loop; a header with a nameless column
    must still send every row through it, so that a cell there is its row's problem and
    no row gets a column named ''."""
    rows = [["email", None if kind == "xlsx" else "", "name"], ["a@x.org", "stray", "A"],
            ["b@x.org", None if kind == "xlsx" else "", "B"], ["c@x.org"]]
    path = (write_csv(tmp_path / "p.csv", rows) if kind == "csv"
            else write_xlsx(tmp_path / "p.xlsx", rows))
    with open_sheet(Recipients(path=path)) as sheet:
        assert sheet.columns == ("email", "", "name")
        first, second, third = list(sheet)
    assert str(first.problem).endswith("row 2: cell B2 holds 'stray' but its column has no "
                                       "name in the header row; name the column in the "
                                       "header row or delete the cell")
    assert first.values == {"email": "a@x.org", "name": "A"}
    assert second.problem is None and second.values == {"email": "b@x.org", "name": "B"}
    assert third.problem is None and third.values == {"email": "c@x.org", "name": ""}


def test_nul_byte_is_a_problem_of_its_row(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"email,name\na@x.org,A\x00B\n")
    with open_sheet(Recipients(path=path)) as sheet:
        (row,) = list(sheet)
    assert str(row.problem) == (f"{path}, row 2, column 'name': the cell holds a NUL byte; "
                                "remove it; a file full of NUL bytes is usually UTF-16: save "
                                "the sheet as UTF-8 CSV")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("")
    assert error_of(path) == (f"{path}: the sheet is empty: no header row; the first row must "
                              "name the columns, e.g. email,name")


def test_xlsx_cell_types(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "p.xlsx", [
        ["email", "points", "price", "joined", "at", "note", "vip"],
        ["a@x.org", 42, 9.5, dt.date(2024, 2, 29), dt.datetime(2024, 1, 1, 12, 30), None, True],
        [None, None, None],
        ["b@x.org", 1001.0, 0, dt.datetime(2020, 1, 1), None, "=HYPERLINK(\"x\")", False],
        [None], [None],
    ])
    columns, rows = read(path)
    assert columns == ("email", "points", "price", "joined", "at", "note", "vip")
    assert rows[0] == (2, {"email": "a@x.org", "points": 42, "price": 9.5,
                           "joined": dt.date(2024, 2, 29), "at": dt.datetime(2024, 1, 1, 12, 30),
                           "note": "", "vip": True})
    assert rows[1][0] == 4
    assert rows[1][1]["points"] == 1001 and isinstance(rows[1][1]["points"], int)
    assert rows[1][1]["joined"] == dt.date(2020, 1, 1)
    assert len(rows) == 2


def test_xlsx_formulas_are_read_as_cached_values_never_evaluated(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "p.xlsx", [["email", "f"], ["a@x.org", "=1+1"]])
    # openpyxl writes no cached value: nothing is computed, and the cell is not taken for
    # an empty one (a message that uses it fails, see test_render)
    assert read(path)[1] == [(2, {"email": "a@x.org", "f": BadCell("B2", "formula")})]


def test_xlsx_named_sheet(tmp_path: Path) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.active.append(["nothing"])
    other = workbook.create_sheet("Kunden")
    other.append(["email"])
    other.append(["k@x.org"])
    workbook.save(tmp_path / "p.xlsx")
    assert read(tmp_path / "p.xlsx", sheet="Kunden")[1] == [(2, {"email": "k@x.org"})]
    assert error_of(tmp_path / "p.xlsx", sheet="Customers") == (
        f"{tmp_path / 'p.xlsx'}: the workbook has no sheet named 'Customers'; its sheets are: "
        "'Sheet', 'Kunden'")


def test_old_xls_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512)
    assert error_of(path) == (
        f"{path}: this is an old Excel .xls workbook, which mailmerge cannot read; open it in a "
        "spreadsheet program and save it as .xlsx (Excel Workbook) or .csv")


def test_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "p.xlsx"
    path.write_text("email\na@x.org\n")
    assert error_of(path).startswith(f"{path}: not a readable Excel .xlsx workbook (")


def test_truncated_workbook(tmp_path: Path) -> None:
    good = write_xlsx(tmp_path / "good.xlsx", [["email"], ["a@x.org"]])
    path = tmp_path / "p.xlsx"
    path.write_bytes(good.read_bytes()[:2000])
    assert "not a readable Excel .xlsx workbook" in error_of(path)


def test_rows_are_streamed(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("email\na@x.org\nb@x.org,\"broken\n")
    with open_sheet(Recipients(path=path)) as sheet:
        rows = iter(sheet)
        assert next(rows).values == {"email": "a@x.org"}  # read before the broken row is seen
        with pytest.raises(SheetError):
            next(rows)


def test_bad_byte_is_reported_at_its_own_row(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"email,name\n" + b"".join(b"a%d@x.org,A\n" % i for i in range(20000))
                     + b"z@x.org,S\xf8ren\n")
    assert error_of(path).startswith(f"{path}, row 20002: the file is not valid UTF-8 text")


def test_mixed_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"email,name\r\na@x.org,A\rb@x.org,B\nc@x.org,\"C\r\nD\"\r\n")
    assert read(path)[1] == [(2, {"email": "a@x.org", "name": "A"}),
                             (3, {"email": "b@x.org", "name": "B"}),
                             (4, {"email": "c@x.org", "name": "C\r\nD"})]


def test_utf16_text_from_a_spreadsheet_program(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes("email\tname\r\na@x.org\tZoë\r\n".encode("utf-16"))
    assert read(path)[1] == [(2, {"email": "a@x.org", "name": "Zoë"})]


def test_columns_that_differ_only_invisibly_get_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("email,Name,name,Cafe\u0301,Caf\u00e9,note\u200b,note,\ufb01le,file,other\n"
                    "a@x.org,1,2,3,4,5,6,7,8,9\n")
    with open_sheet(Recipients(path=path)) as sheet:
        texts = [str(n) for n in sheet.notices]
    advice = "; a template gets the one it names exactly, which is easy to mix up: rename one"
    invisible = "only by invisible characters or by how the same letters are encoded"
    assert texts == [
        f"Warning: p.csv: the columns 'Name' (column B) and 'name' (column C) differ only by "
        f"upper and lower case{advice}",
        f"Warning: p.csv: the columns 'Cafe\u0301' (column D) and 'Caf\u00e9' (column E) differ "
        f"{invisible}{advice}",
        f"Warning: p.csv: the columns 'note\\u200b' (column F) and 'note' (column G) differ "
        f"{invisible}{advice}",
        f"Warning: p.csv: the columns '\ufb01le' (column H) and 'file' (column I) differ "
        f"{invisible}{advice}",
    ]


def test_distinct_column_names_get_no_warning(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", [["email", "name", "name2", "Straße", "strasse"],
                                          ["a@x.org", "A", "B", "C", "D"]])
    with open_sheet(Recipients(path=path)) as sheet:
        assert [str(n) for n in sheet.notices] == [
            "Warning: p.csv: the columns 'Straße' (column D) and 'strasse' (column E) differ "
            "only by upper and lower case; a template gets the one it names exactly, which is "
            "easy to mix up: rename one"]


def test_csv_cells_holding_a_spreadsheets_errors_are_bad_cells(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", [["email", "total", "note"],
                                          ["a@x.org", "#DIV/0!", "see #N/A below"],
                                          ["b@x.org", "3", "#N/A"], ["c@x.org", "4", "#5"]])
    with open_sheet(Recipients(path=path)) as sheet:
        rows = [(r.number, r.values, r.bad) for r in sheet]
    bad_total, bad_note = BadCell("B2", "exported", "#DIV/0!"), BadCell("C3", "exported", "#N/A")
    assert rows == [
        (2, {"email": "a@x.org", "total": bad_total, "note": "see #N/A below"},
         {"total": bad_total}),
        (3, {"email": "b@x.org", "total": "3", "note": bad_note}, {"note": bad_note}),
        (4, {"email": "c@x.org", "total": "4", "note": "#5"}, None)]


def test_a_header_cell_with_a_formula_not_calculated_is_refused(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "p.xlsx", [["email", "=\"na\"&\"me\""], ["a@x.org", "A"]])
    assert error_of(path) == (
        f"{path}, row 1: cell B1 of the header row: the cell holds a formula whose value the "
        "file does not store (the program that wrote it did not calculate it), so the message "
        "would show nothing; open the workbook in Excel or LibreOffice and save it, so that "
        "it stores the values; or type the values in: the header names the columns")


def test_each_kind_of_bad_cell_says_what_it_is_and_how_to_fix_it() -> None:
    from mailmerge.sheet import describe_bad_cell

    assert describe_bad_cell(BadCell("B2", "date", "#VALUE!")) == (
        "the cell is formatted as a date but holds a number past any date",
        "type the date in again, or format the cell as a number")
    assert describe_bad_cell(BadCell("B2", "error", "#SPILL!"))[0] == (
        "the cell holds the error #SPILL! that its formula gives")


def test_csv_cells_holding_libreoffice_and_google_sheets_errors_are_bad_cells(
        tmp_path: Path) -> None:
    """LibreOffice exports an error as Err:502 (or its #NAME? ...), Google Sheets as #ERROR!:
    both went out as text."""
    path = write_csv(tmp_path / "p.csv", [["email", "a", "b", "c"],
                                          ["a@x.org", "Err:502", "#ERROR!", "Err:504"],
                                          ["b@x.org", "Err:5021", "Err:50", "see Err:502"]])
    with open_sheet(Recipients(path=path)) as sheet:
        rows = [(r.number, r.bad) for r in sheet]
    assert rows == [(2, {"a": BadCell("B2", "exported", "Err:502"),
                         "b": BadCell("C2", "exported", "#ERROR!"),
                         "c": BadCell("D2", "exported", "Err:504")}),
                    (3, None)]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_a_csv_line_longer_than_a_cell_may_be_is_never_read_whole(
        tmp_path: Path, encoding: str) -> None:
    """A line of 64 MB was read whole (and decoded) before the csv module found its
    field too long: memory grew with the longest line of the file."""
    import tracemalloc

    from mailmerge.sheet import CSV_CELL_LIMIT

    path = tmp_path / "p.csv"
    with open(path, "w", encoding=encoding, newline="") as handle:
        handle.write("email,name\r\na@x.org,A\r\nb@x.org,")
        handle.writelines("x" * 1024**2 for _ in range(64))
        handle.write("\r\n")
    tracemalloc.start()
    try:
        message = error_of(path, encoding=encoding)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message.startswith(f"{path}, row 3: a line is longer than 16 MB"), message
    assert peak < 2.5 * CSV_CELL_LIMIT * (4 if encoding == "utf-16" else 1), peak
