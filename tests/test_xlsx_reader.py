"""The streaming .xlsx reader reads every cell as openpyxl's own reader does."""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from mailmerge import SheetError
from mailmerge.campaign import Recipients
from mailmerge.sheet import open_sheet
from mailmerge.xlsxbook import Workbook
from mailmerge.xlsxrows import BadCell, column_letters, sheet_value

from .workbooks import share_strings

VALUES: list[Any] = [
    "plain", "Zoë 李", "", " padded ", "line\nbreak", "=not a formula", 0, -7, 2**40, 3.25,
    1e-9, 12345678901234567890.0, True, False, dt.date(2024, 2, 29), dt.datetime(1999, 12, 31, 23, 59, 58),
    dt.time(8, 30), dt.timedelta(hours=30, minutes=5), None, "x" * 300,
]


def openpyxl_rows(path: Path, sheet: str) -> list[list[Any]]:
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    rows = [list(r) for r in workbook[sheet].iter_rows(values_only=True)]
    workbook.close()
    return rows


def fast_rows(path: Path, sheet: str) -> list[list[Any]]:
    workbook = Workbook(path)
    try:
        return [record for _, record in workbook.records(sheet)]
    finally:
        workbook.close()


def same(openpyxl_row: list[Any], fast_row: list[Any] | tuple[Any, ...]) -> bool:
    """The same values of the same types (1 != True). A tuple, a row read by its form,
    holds them as a row keeps them: openpyxl's are compared as sheet_value makes them. A
    BadCell is compared as openpyxl reads it: an error as its text, a formula not
    calculated as None."""
    trimmed = list(openpyxl_row)
    while trimmed and trimmed[-1] is None:
        trimmed.pop()
    if isinstance(fast_row, tuple):
        trimmed = [sheet_value(v) for v in trimmed]
    mine = [(v.text or None) if isinstance(v, BadCell) else v for v in fast_row]
    while mine and mine[-1] is None:
        mine.pop()
    return [(type(v), v) for v in trimmed] == [(type(v), v) for v in mine]


@pytest.mark.parametrize("write_only", [False, True], ids=["shared-strings", "write-only"])
@pytest.mark.parametrize("epoch", ["1900", "1904"])
def test_every_kind_of_cell_reads_as_openpyxl_reads_it(tmp_path: Path, write_only: bool,
                                                        epoch: str) -> None:
    workbook = openpyxl.Workbook(write_only=write_only)
    if epoch == "1904":
        workbook.epoch = openpyxl.utils.datetime.CALENDAR_MAC_1904
    sheet = workbook.create_sheet("people") if write_only else workbook.active
    sheet.title = "people"
    sheet.append([f"c{i}" for i in range(len(VALUES))])
    for shift in range(len(VALUES)):
        sheet.append(VALUES[shift:] + VALUES[:shift])
    if not write_only:
        sheet["B40"] = "after a gap"
        sheet["AB41"] = "far right"
    path = tmp_path / "kinds.xlsx"
    workbook.save(path)
    expected = [r for r in openpyxl_rows(path, "people") if any(v is not None for v in r)]
    got = [r for r in fast_rows(path, "people") if r]
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        assert same(want, have), (want, have)


def rewrite_sheet(path: Path, cells_xml: str) -> Path:
    """A workbook whose first sheet holds exactly ``cells_xml`` (inline strings, formulas with
    cached values, errors, booleans, ISO dates: what other programs write)."""
    target = path.with_name("crafted.xlsx")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                text = re.sub(r"<dimension[^>]*/>", "", data.decode())  # openpyxl obeys it
                head, rest = text.split("<sheetData", 1)
                tail = rest.split("</sheetData>", 1)[1] if "</sheetData>" in rest else "</worksheet>"
                data = (head + "<sheetData>" + cells_xml + "</sheetData>" + tail).encode()
            out.writestr(item, data)
    return target


def test_cells_other_programs_write_read_as_openpyxl_reads_them(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(["a"])
    workbook.save(tmp_path / "base.xlsx")
    crafted = rewrite_sheet(tmp_path / "base.xlsx", (
        '<row r="1"><c r="A1" t="inlineStr"><is><t>email</t></is></c>'
        '<c r="B1" t="inlineStr"><is><r><t>na</t></r><r><t xml:space="preserve">me </t></r>'
        '<rPh sb="0" eb="1"><t>ignored</t></rPh></is></c><c r="C1" t="str"><f>A1</f><v>x</v></c>'
        '</row><row r="3"><c r="A3" t="e"><v>#N/A</v></c><c r="B3" t="b"><v>1</v></c>'
        '<c r="C3"><f>1+1</f><v>2</v></c><c r="D3" t="d"><v>2024-05-06T07:08:09</v></c>'
        '<c r="E3" t="inlineStr"/><c r="F3"><v>1.5E3</v></c></row>'
        '<row><c t="inlineStr"><is><t>no refs</t></is></c><c><v>4</v></c></row>'))
    expected = [r for r in openpyxl_rows(crafted, "Sheet") if any(v is not None for v in r)]
    got = [r for r in fast_rows(crafted, "Sheet") if r]
    assert len(got) == len(expected) == 3
    for want, have in zip(expected, got, strict=True):
        assert same(want, have), (want, have)
    numbers = [n for n, _ in Workbook(crafted).records("Sheet")]
    assert numbers == [1, 3, 4]


def test_row_numbers_are_the_spreadsheet_rows(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet["A1"], sheet["B1"] = "email", "name"
    sheet["A4"], sheet["B4"] = "a@example.org", "A"
    sheet["A7"], sheet["B7"] = "not-an-address", "B"
    workbook.save(tmp_path / "gaps.xlsx")
    with open_sheet(Recipients(path=tmp_path / "gaps.xlsx")) as rows:
        assert [(r.number, r.values["name"]) for r in rows] == [(4, "A"), (7, "B")]


def test_a_namespace_prefix_is_read_like_the_default_namespace(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(["a"])
    workbook.save(tmp_path / "base.xlsx")
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    crafted = rewrite_sheet(tmp_path / "base.xlsx", (
        f'<x:row xmlns:x="{main}" r="1"><x:c r="A1" t="inlineStr"><x:is><x:t>email</x:t></x:is>'
        '</x:c><x:c r="B1"><x:v>7</x:v></x:c></x:row>'))
    assert fast_rows(crafted, "Sheet") == [["email", 7]]


@pytest.mark.parametrize("reference, reason", [
    ("ZZZZZZ2", "the cell reference 'ZZZZZZ2' is not like A1"),  # 6 letters: ~300 million
    ("XFE2", "the cell reference 'XFE2' lies past column XFD, the last a worksheet can have"),
    ("@2", "the cell reference '@2' is not like A1"),  # once written over column A
    ("B", "the cell reference 'B' is not like A1"),
])
def test_a_cell_reference_past_xfd_or_unreadable_is_refused(tmp_path: Path, reference: str,
                                                            reason: str) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(["a"])
    workbook.save(tmp_path / "base.xlsx")
    crafted = rewrite_sheet(tmp_path / "base.xlsx", (
        '<row r="1"><c r="A1" t="inlineStr"><is><t>email</t></is></c></row>'
        f'<row r="2"><c r="A2" t="inlineStr"><is><t>a@x.org</t></is></c>'
        f'<c r="{reference}" t="inlineStr"><is><t>bomb</t></is></c></row>'))
    with pytest.raises(SheetError) as info, open_sheet(Recipients(path=crafted)) as rows:
        list(rows)
    # read in one piece with the header here, so the reference itself names the row
    assert str(info.value) == (f"{crafted}: the workbook is damaged (ValueError: {reason}); "
                               "open it in a spreadsheet program and save it again")


CONTENT_TYPE = ("application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings"
                "+xml")
RELATION = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"
LAUGHS = ('<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
          + "".join(f'<!ENTITY {b} "{("&" + a + ";") * 10}">'
                    for a, b in zip("abcdefgh", "bcdefghi", strict=True)) + "]>")
EXTERNAL = '<!DOCTYPE x [<!ENTITY i SYSTEM "file:///etc/passwd">]>'


def shared_strings_book(tmp_path: Path, index: str = "1", doctype: dict[str, str] | None = None
                        ) -> Path:
    """email | name, one row; the name (and the header "name") from the shared strings, as
    Excel writes them. ``doctype`` puts a DTD whose entity ``&i;`` is used into a part."""
    workbook = openpyxl.Workbook()
    workbook.active.append(["email", "name"])
    workbook.active.append(["a@example.org", "x"])
    workbook.save(tmp_path / "base.xlsx")
    doctype = doctype or {}
    parts = {"xl/sharedStrings.xml": '<sst xmlns="http://schemas.openxmlformats.org/'
                                     'spreadsheetml/2006/main"><si><t>name</t></si>'
                                     '<si><t>Ann</t></si></sst>'}
    target = tmp_path / "strings.xlsx"
    with zipfile.ZipFile(tmp_path / "base.xlsx") as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            text = source.read(item.filename).decode()
            if item.filename == "xl/worksheets/sheet1.xml":
                text = re.sub(r'<c r="B1".*?</c>', '<c r="B1" t="s"><v>0</v></c>', text)
                text = re.sub(r'<c r="B2".*?</c>', f'<c r="B2" t="s"><v>{index}</v></c>', text)
            elif item.filename == "[Content_Types].xml":
                text = text.replace("</Types>", '<Override PartName="/xl/sharedStrings.xml" '
                                                f'ContentType="{CONTENT_TYPE}"/></Types>')
            elif item.filename == "xl/_rels/workbook.xml.rels":
                text = text.replace("</Relationships>", f'<Relationship Id="rIdS" Type='
                                    f'"{RELATION}" Target="sharedStrings.xml"/></Relationships>')
            parts.setdefault(item.filename, text)
        for name, text in parts.items():
            if name in doctype:
                text = text.split("?>", 1)[-1]  # the DTD comes after the XML declaration
                text = doctype[name] + text.replace("a@example.org", "&i;", 1).replace(
                    "<t>Ann</t>", "<t>&i;</t>")
            out.writestr(name, text)
    return target


def test_shared_strings_read_as_excel_writes_them(tmp_path: Path) -> None:
    with open_sheet(Recipients(path=shared_strings_book(tmp_path))) as rows:
        assert [dict(r.values) for r in rows] == [{"email": "a@example.org", "name": "Ann"}]


@pytest.mark.parametrize("index", ["2", "99", "-1"])
def test_a_shared_string_index_out_of_range_is_refused(tmp_path: Path, index: str) -> None:
    crafted = shared_strings_book(tmp_path, index)
    with pytest.raises(SheetError) as info, open_sheet(Recipients(path=crafted)) as rows:
        list(rows)
    assert str(info.value) == (f"{crafted}: the workbook is damaged (ValueError: cell B2 "
                               f"refers to shared string {index}, but the workbook holds 2); "
                               "open it in a spreadsheet program and save it again")


@pytest.mark.parametrize("part", ["xl/sharedStrings.xml", "xl/worksheets/sheet1.xml",
                                  "xl/workbook.xml", "[Content_Types].xml"])
@pytest.mark.parametrize("dtd", [LAUGHS, EXTERNAL], ids=["billion-laughs", "external-entity"])
def test_a_dtd_in_any_part_is_refused_before_it_is_parsed(tmp_path: Path, part: str,
                                                          dtd: str) -> None:
    crafted = shared_strings_book(tmp_path, doctype={part: dtd})
    with pytest.raises(SheetError) as info:
        open_sheet(Recipients(path=crafted))
    assert str(info.value).startswith(
        f"{crafted}: the workbook's part {part!r} declares a DTD (<!DOCTYPE>), which no "
        "spreadsheet program writes")


def test_plain_rows_and_other_forms_mixed_in_a_large_sheet_read_as_openpyxl_reads_them(
        tmp_path: Path) -> None:
    """The plain form is read by the fast path and every other stretch by expat; a sheet
    of several chunks with both, entities, line ends and pretty-printing reads the same."""
    workbook = openpyxl.Workbook()
    workbook.active.append(["a"])
    workbook.save(tmp_path / "base.xlsx")
    rows = ['<row r="1"><c r="A1" t="inlineStr"><is><t>email</t></is></c>'
            '<c r="B1" t="inlineStr"><is><t>note</t></is></c><c r="C1" t="inlineStr"><is><t>n'
            '</t></is></c></row>']
    for number in range(2, 4000):
        if number == 1500:  # rich text, a phonetic run and a formula: expat's part
            rows.append(f'<row r="{number}"><c r="A{number}" t="inlineStr"><is><r><t>ri</t></r>'
                        f'<r><t xml:space="preserve">ch </t></r><rPh sb="0" eb="1"><t>x</t>'
                        f'</rPh></is></c><c r="C{number}"><f>1+1</f><v>2</v></c></row>')
        elif number == 2500:  # pretty-printed
            rows.append(f'<row r="{number}">\n  <c r="A{number}" t="inlineStr"><is><t>p</t>'
                        f'</is></c>\n  <c r="C{number}" s="0"><v>{number}</v></c>\n</row>')
        elif number == 3000:
            rows.append(f'<row r="{number}"/>')
        else:
            rows.append(f'<row r="{number}" spans="1:3"><c r="A{number}" t="inlineStr"><is>'
                        f'<t xml:space="preserve">u{number}@x.org &amp; &lt;b&gt; &#10;'
                        f'z\r\nw </t></is></c><c r="B{number}" t="b"><v>{number % 2}</v></c>'
                        f'<c r="C{number}"><v>{number * 1.5}</v></c><c r="D{number}" t="e">'
                        f'<v>#N/A</v></c><c r="E{number}" t="str"><f>A1</f><v>s{number}</v></c>'
                        f'<c r="F{number}"><f t="shared" ref="F2:F3999" si="0"/><v>{number}</v>'
                        '</c></row>')
    crafted = rewrite_sheet(tmp_path / "base.xlsx", "".join(rows))
    assert crafted.stat().st_size > 3 * 1024  # compressed; well over one 64 KB chunk inside
    expected = [r for r in openpyxl_rows(crafted, "Sheet") if any(v is not None for v in r)]
    got = [r for r in fast_rows(crafted, "Sheet") if r]
    assert len(got) == len(expected) == 3998  # rows 1 to 3999 but the empty one
    for want, have in zip(expected, got, strict=True):
        assert same(want, have), (want, have)


SST = '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">{}</sst>'
TABLES = {
    "plain": "<si><t>Ann</t></si><si><t/></si><si><t xml:space=\"preserve\">  spaced  </t>"
             "</si><si><t>Z&#252;rich &amp; &lt;b&gt; &quot;q&quot;</t></si>"
             "<si><t>line\r\nbreak</t></si><si><t>a_x005F_x000D_b</t></si>",
    "rich": "<si><r><rPr><b/></rPr><t>Bold</t></r><r><t xml:space=\"preserve\"> and "
            "plain</t></r></si><si><t>Ann</t></si>",
    "phonetic": "<si><t>東京</t><rPh sb=\"0\" eb=\"2\"><t>トウキョウ</t></rPh>"
                "<phoneticPr fontId=\"1\"/></si>",
    "prefixed": "<x:si xmlns:x=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\">"
                "<x:t>Ann</x:t></x:si>",
}


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_the_shared_string_table_reads_as_openpyxl_reads_it(kind: str) -> None:
    import io

    from openpyxl.reader.strings import read_string_table

    from mailmerge.xlsxrows import shared_strings

    data = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            + SST.format(TABLES[kind])).encode("utf-8")
    expected = read_string_table(io.BytesIO(data))
    assert shared_strings(io.BytesIO(data)) == expected
    assert len(expected) >= 1


def test_a_date_column_that_repeats_reads_each_cell_as_openpyxl_does(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["email", "joined", "when"])
    for i in range(30):
        sheet.append([f"p{i}@example.org", dt.date(2020, 1, 1 + i % 3),
                      dt.datetime(2020, 1, 1, 12, 30) if i % 2 else 43831])
    path = tmp_path / "dates.xlsx"
    workbook.save(path)
    expected = openpyxl_rows(path, "Sheet")
    with open_sheet(Recipients(path=path)) as rows:
        got = [[r.values["email"], r.values["joined"], r.values["when"]] for r in rows]
    assert [g[1] for g in got] == [dt.date(2020, 1, 1 + i % 3) for i in range(30)]
    assert [g[2] for g in got] == [e[2] if i % 2 else 43831 for i, e in
                                   enumerate(expected[1:])]
    assert got[1][2] == dt.datetime(2020, 1, 1, 12, 30)


FORMATS = ["General", "0", "0.00", "yyyy-mm-dd", "d/m/yyyy h:mm", "[h]:mm:ss", "[mm]:ss",
           "[ss].00", "mm:ss", "h:mm AM/PM", '"day "0', '0 "hours"', "[Red]0.00", "[$-409]d mmm",
           r"0\d", "_d0", "#,##0;[Red]-yyyy", "@", "0.00E+00", "[$EUR ]#,##0.00_-",
           "dd.mm.yy;@", "m/d/yy h:mm", "mmss.0", "[hh]:mm", "hh:mm:ss.000"]


@pytest.mark.parametrize("epoch", ["1900", "1904"])
def test_sheets_date_styles_and_epoch_are_found_as_openpyxl_finds_them(tmp_path: Path,
                                                                       epoch: str) -> None:
    workbook = openpyxl.Workbook()
    if epoch == "1904":
        workbook.epoch = openpyxl.utils.datetime.CALENDAR_MAC_1904
    sheet = workbook.active
    sheet.title = "first"
    for row, code in enumerate(FORMATS, start=1):
        sheet.cell(row, 1, 45000.5).number_format = code
    workbook.create_sheet("Zweite Seite")
    workbook.create_chartsheet("chart")
    workbook.create_sheet("dritte")
    path = tmp_path / "formats.xlsx"
    workbook.save(path)
    # built-in format ids that openpyxl knows no code for (27-36: East Asian dates)
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    styles = parts["xl/styles.xml"].decode()
    styles = styles.replace('<cellXfs count="', '<cellXfs count="2').replace(
        "</cellXfs>", '<xf numFmtId="30" fontId="0" fillId="0" borderId="0" '
                      'applyNumberFormat="1"/><xf numFmtId="46"/></cellXfs>')
    parts["xl/styles.xml"] = styles.encode()
    with zipfile.ZipFile(path, "w") as target:
        for name, data in parts.items():
            target.writestr(name, data)

    theirs = openpyxl.reader.excel.ExcelReader(str(path), read_only=True, data_only=True)
    theirs.read_manifest()
    theirs.read_workbook()
    openpyxl.styles.stylesheet.apply_stylesheet(theirs.archive, theirs.wb)
    ours = Workbook(path)
    try:
        assert ours.sheetnames == ["first", "Zweite Seite", "dritte"] == [
            sheet.name for sheet, rel in theirs.parser.find_sheets() if "chartsheet" not in rel.Type]
        assert ours.epoch == theirs.wb.epoch
        assert ours.dates == set(theirs.wb._date_formats) and len(ours.dates) > 10
        assert ours.durations == set(theirs.wb._timedelta_formats) and len(ours.durations) >= 4
    finally:
        ours.close()
        theirs.archive.close()


def test_a_workbook_in_another_folder_and_a_template_type_is_read(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(["email", "joined"])
    workbook.active.append(["a@example.org", dt.date(2024, 5, 1)])
    path = tmp_path / "moved.xlsx"
    workbook.save(path)
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    moved = {name.replace("xl/", "book/", 1) if name.startswith("xl/") and name != "xl/styles.xml"
             else name: data for name, data in parts.items()}
    moved["[Content_Types].xml"] = (parts["[Content_Types].xml"].decode()
                                    .replace('"/xl/', '"/book/')
                                    .replace('"/book/styles.xml"', '"/xl/styles.xml"')
                                    .replace("sheet.main+xml", "template.main+xml").encode())
    moved["_rels/.rels"] = parts["_rels/.rels"].replace(b"xl/workbook.xml", b"book/workbook.xml")
    # a target relative to the workbook's folder, as most programs write it
    moved["book/_rels/workbook.xml.rels"] = moved["book/_rels/workbook.xml.rels"].replace(
        b'"/xl/worksheets/', b'"worksheets/')
    with zipfile.ZipFile(path, "w") as target:
        for name, data in moved.items():
            target.writestr(name, data)
    assert openpyxl_rows(path, "Sheet") == [["email", "joined"],
                                            ["a@example.org", dt.datetime(2024, 5, 1)]]
    assert fast_rows(path, "Sheet") == openpyxl_rows(path, "Sheet")


def test_a_workbook_without_a_workbook_part_is_not_readable(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(["email"])
    path = tmp_path / "people.xlsx"
    workbook.save(path)
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(b"sheet.main+xml",
                                                                        b"other+xml")
    with zipfile.ZipFile(path, "w") as target:
        for name, data in parts.items():
            target.writestr(name, data)
    with pytest.raises(SheetError, match=r"not a readable Excel \.xlsx workbook.*no workbook part"):
        open_sheet(Recipients(path=path))


def rewrite_parts(path: Path, change: Any) -> Path:
    """A copy of the workbook with each XML part's text passed through ``change(name, text)``."""
    target = path.with_name(path.stem + "-rewritten.xlsx")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith(".xml"):
                data = change(item.filename, data.decode()).encode()
            out.writestr(item, data)
    return target


def as_references(text: str) -> str:
    """Every non-ASCII letter of an XML part as a character reference, as some writers
    spell them; markup characters and line ends in text too."""
    text = re.sub(r"[^\x00-\x7f]", lambda m: f"&#{ord(m.group())};", text)
    return text.replace("&lt;", "&#60;").replace("&quot;", "&#x22;").replace("&amp;", "&#38;")


def form_sheet(tmp_path: Path, write_only: bool) -> Path:
    """Thousands of rows (many 64 KB chunks) of one form: strings, a whole number (written
    7.0, as some programs write them), a float, a date,
    a date and time, a duration; every 97th row of another form (a blank cell, a boolean, a
    formula; one with rich text); non-ASCII letters and markup characters as character references."""
    workbook = openpyxl.Workbook(write_only=write_only)
    sheet = workbook.create_sheet("people") if write_only else workbook.active
    sheet.title = "people"
    sheet.append(["email", "name", "points", "ratio", "joined", "seen", "spent", "note"])
    for i in range(6000):
        row: list[Any] = [f"p{i}@example.org", f"Zoë {i} <b> & \"q\"", i * 7, i / 8 + 1e-9,
                          dt.date(2020, 1, 1 + i % 28), dt.datetime(2021, 5, 6, i % 24, 30),
                          dt.timedelta(hours=i % 50, minutes=5), "tab\there" if i % 2 else "李"]
        if i % 97 == 5:
            row[2] = None
        elif i % 97 == 50:
            row[3] = i % 2 == 0
        elif i % 97 == 70:
            row[7] = "=1+1"
        sheet.append(row)
    path = tmp_path / "forms.xlsx"
    workbook.save(path)
    if not write_only:  # openpyxl writes strings inline: moved to the table, as Excel has them
        share_strings(path, tmp_path / "shared.xlsx")
        path = tmp_path / "shared.xlsx"
    rich = '<c r="I4000" t="inlineStr"><is><r><t>ri</t></r><r><t>ch</t></r></is></c></row>'

    def change(name: str, text: str) -> str:
        if name.startswith("xl/worksheets/"):  # and a row only expat reads, among them
            text = re.sub(r'(<row r="4000".*?)</row>', lambda m: m.group(1) + rich, text)
            text = re.sub(r"<dimension[^>]*/>", "", text)  # openpyxl reads no cell past it
            text = re.sub(r'(<c r="C[0-9]+"(?![^>]*t="s")[^>]*><v>[0-9]+)(</v>)', r"\1.0\2",
                          text)  # numbers, not the header's shared string
        return as_references(text) if name.startswith(("xl/worksheets/", "xl/sharedStrings")) \
            else text
    return rewrite_parts(path, change)


@pytest.mark.parametrize("write_only", [False, True], ids=["shared-strings", "inline-strings"])
def test_rows_of_one_form_read_as_openpyxl_reads_them(tmp_path: Path, write_only: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of the form most rows have are read by one pattern per row; they, and the rows
    of other forms between them, read exactly as openpyxl reads them."""
    from mailmerge import xlsxrows

    read_by_form = []
    values = xlsxrows._RowForm._values
    monkeypatch.setattr(xlsxrows._RowForm, "_values",
                        lambda self, *args: read_by_form.append(1) or values(self, *args))
    path = form_sheet(tmp_path, write_only)
    expected = openpyxl_rows(path, "people")
    got = fast_rows(path, "people")
    assert len(got) == len(expected) == 6001
    for want, have in zip(expected, got, strict=True):
        assert same(want, have), (want, have)
    assert got[1][1] == 'Zoë 0 <b> & "q"' and got[2][7] == "tab\there" and got[3999][8] == "rich"
    assert len(read_by_form) > 5000  # the form is what read them, not the cell-by-cell path


def test_references_in_cdata_are_text_and_not_decoded(tmp_path: Path) -> None:
    cdata = '<c r="B3000" t="inlineStr"><is><t><![CDATA[&#235; <kept>]]></t></is></c>'
    path = rewrite_parts(form_sheet(tmp_path, True), lambda name, text: re.sub(
        r'<c r="B3000".*?</c>', cdata, text) if name.startswith("xl/worksheets/") else text)
    expected = openpyxl_rows(path, "people")
    got = fast_rows(path, "people")
    assert got[2999][1] == expected[2999][1] == "&#235; <kept>"
    assert all(same(want, have) for want, have in zip(expected, got, strict=True))


def test_a_shared_string_index_out_of_range_in_a_row_of_the_usual_form_is_refused(
        tmp_path: Path) -> None:
    path = rewrite_parts(form_sheet(tmp_path, False), lambda name, text: re.sub(
        r'(<c r="B5000" t="s"><v>)\d+', r"\g<1>999999", text))
    with pytest.raises(SheetError, match="cell B5000 refers to shared string 999999, but "
                                         "the workbook holds"), \
            open_sheet(Recipients(path=path)) as rows:
        list(rows)


ERRORS = ["#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA",
          "#SPILL!", "#CALC!"]


def bad_cells_row(number: int) -> tuple[str, list[Any]]:
    """A row of error cells of every kind and of formulas with and without a saved value
    (as Excel, LibreOffice and openpyxl write them), and the values it reads as."""
    cells = [f'<c r="{column_letters(i + 1)}{number}" t="e"><f>X1</f><v>{error}</v></c>'
             for i, error in enumerate(ERRORS)]
    values: list[Any] = [BadCell(f"{column_letters(i + 1)}{number}", "error", error)
                         for i, error in enumerate(ERRORS)]
    more = [  # (the cell's XML after its reference, the value it reads as; None: a formula)
        ("><f>A1*2</f></c>", None),  # no <v>: a script's workbook
        ("><f>A1*2</f><v></v></c>", None),  # openpyxl's
        (' t="str"><f>A1</f><v></v></c>', ""),  # the formula's value is the empty text
        ("><f>A1*2</f><v>4</v></c>", 4),  # calculated
        (f'><f t="shared" ref="O{number}:P{number}" si="0">A1</f></c>', None),
        (' t="n"><f t="shared" si="0"/></c>', None),
        (f'><f t="array" ref="Q{number}:Q{number + 1}">A1:A2*2</f></c>', None),
        (' t="e"><f>1/0</f><v>#DIV/0!</v></c>', "#DIV/0!"),
        (' t="b"><f>TRUE()</f></c>', None),
    ]
    for offset, (xml, value) in enumerate(more, len(ERRORS) + 1):
        reference = f"{column_letters(offset)}{number}"
        cells.append(f'<c r="{reference}"{xml}')
        values.append(BadCell(reference, "formula") if value is None else
                      BadCell(reference, "error", value) if value == "#DIV/0!" else
                      value if value != "" else None)
    return f'<row r="{number}">{"".join(cells)}</row>', values


@pytest.mark.parametrize("path", ["cells", "expat", "form"])
def test_error_cells_and_formulas_without_a_value_are_bad_cells_on_every_path(
        tmp_path: Path, path: str) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(["a"])
    workbook.save(tmp_path / "base.xlsx")
    plain = "".join(f'<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>p{n}@x.org</t></is></c>'
                    f'<c r="B{n}"><v>{n}</v></c></row>' for n in range(1, 3001))
    bad, expected = bad_cells_row(3001)
    xml = {"cells": bad, "expat": "<!-- read by expat -->" + bad, "form": plain + bad}[path]
    crafted = rewrite_sheet(tmp_path / "base.xlsx", xml)
    records = fast_rows(crafted, "Sheet")
    assert type(records[-1]).__name__ == "FlaggedRow"
    assert list(records[-1]) == expected
    assert not any(isinstance(v, BadCell) for row in records[:-1] for v in row)
    # and openpyxl reads them as the errors' texts and as no value
    assert same(openpyxl_rows(crafted, "Sheet")[-1], records[-1])


@pytest.mark.parametrize("path", ["cells", "expat", "form"])
def test_a_date_cell_past_any_date_is_a_bad_cell_as_openpyxl_reads_it(tmp_path: Path,
                                                                      path: str) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(["email", dt.date(2024, 1, 1)])
    workbook.save(tmp_path / "base.xlsx")
    with zipfile.ZipFile(tmp_path / "base.xlsx") as book:
        style = re.search(r'<c r="B1" s="(\d+)"', book.read("xl/worksheets/sheet1.xml")
                          .decode()).group(1)  # type: ignore[union-attr]

    def row(n: int, serial: str) -> str:
        return (f'<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>p{n}@x.org</t></is></c>'
                f'<c r="B{n}" s="{style}"><v>{serial}</v></c></row>')

    plain = "".join(row(n, str(45000 + n % 300)) for n in range(1, 3001))
    bad = row(3001, "1e10") + row(3002, "1e10")
    xml = {"cells": bad, "expat": "<!-- read by expat -->" + bad, "form": plain + bad}[path]
    crafted = rewrite_sheet(tmp_path / "base.xlsx", xml)
    records = fast_rows(crafted, "Sheet")
    assert [type(r).__name__ for r in records[-2:]] == ["FlaggedRow", "FlaggedRow"]
    assert [r[1] for r in records[-2:]] == [BadCell("B3001", "date", "#VALUE!"),
                                            BadCell("B3002", "date", "#VALUE!")]
    assert not any(isinstance(v, BadCell) for row in records[:-2] for v in row)
    with pytest.warns(UserWarning, match="outside the limits for dates"):
        expected = openpyxl_rows(crafted, "Sheet")[-2:]  # "will be treated as an error"
    assert all(same(want, have) for want, have in zip(expected, records[-2:], strict=True))
