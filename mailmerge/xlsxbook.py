"""What surrounds an .xlsx worksheet's cells: where each sheet is, the shared strings,
which cell styles show dates or durations, and the date epoch.

Read with the standard library's ElementTree from the parts openpyxl's reader reads, and
decided as it decides (the tests compare the two), so that opening a workbook does not
import the workbook library: that import alone was a sixth of a small campaign's start-up.
The cells themselves are :mod:`.xlsxrows`' work.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from collections.abc import Generator, Iterator
from pathlib import Path
from xml.etree import ElementTree

from .xlsxrows import MAC_EPOCH, WINDOWS_EPOCH, Record, shared_strings, worksheet_rows

_MAIN = "application/vnd.openxmlformats-officedocument.spreadsheetml.{}.main+xml"
_MACRO = "application/vnd.ms-excel.{}.macroEnabled.main+xml"
# the workbook part's content types, in the order openpyxl looks for them
_WORKBOOK_TYPES = (_MACRO.format("template"), _MAIN.format("template"),
                   _MACRO.format("sheet"), _MAIN.format("sheet"))
_SHARED_STRINGS = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
_STYLES = "xl/styles.xml"  # openpyxl reads the styles from here, whatever the manifest says

# The built-in number formats that show dates or times (ids 14-22 and 45-47); the other
# built-in ids below 164 have no format code of their own, so they are not dates.
_BUILTIN_FORMATS = {14: "mm-dd-yy", 15: "d-mmm-yy", 16: "d-mmm", 17: "mmm-yy",
                    18: "h:mm AM/PM", 19: "h:mm:ss AM/PM", 20: "h:mm", 21: "h:mm:ss",
                    22: "m/d/yy h:mm", 45: "mm:ss", 46: "[h]:mm:ss", 47: "mmss.0"}
# Quoted text and bracketed sections (colours, locales), but not elapsed [h], [m], [s]
_LITERALS = re.compile(r'".*?"|\[(?!hh?\]|mm?\]|ss?\])[^\]]*\]')
_DATE_LETTER = re.compile(r"(?<![_\\])[dmhysDMHYS]")
_ELAPSED = re.compile(r"\[hh?\](:mm(:ss(\.0*)?)?)?|\[mm?\](:ss(\.0*)?)?|\[ss?\](\.0*)?", re.I)


def is_date_format(code: str | None) -> bool:
    """Whether a number format shows a date or time: a d, m, h, y or s outside quotes and
    brackets (and not escaped) in its first section."""
    if code is None:
        return False
    return _DATE_LETTER.search(_LITERALS.sub("", code.split(";")[0])) is not None


def is_duration_format(code: str | None) -> bool:
    """Whether a number format shows elapsed time ([h]:mm and the like)."""
    return code is not None and _ELAPSED.search(code.split(";")[0]) is not None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(element: ElementTree.Element, name: str) -> Iterator[ElementTree.Element]:
    return (child for child in element if _local(child.tag) == name)


class Workbook:
    """An .xlsx file opened for reading its worksheets' cells.

    Raises zipfile.BadZipFile, KeyError (a part is missing), ValueError or
    ElementTree.ParseError for a file that is not a readable workbook.
    """

    def __init__(self, path: Path) -> None:
        self.archive = zipfile.ZipFile(path)
        try:
            self._read()
        except BaseException:
            self.archive.close()
            raise

    def _read(self) -> None:
        types = ElementTree.fromstring(self.archive.read("[Content_Types].xml"))
        overrides = {o.get("ContentType"): (o.get("PartName") or "")
                     for o in reversed(list(_children(types, "Override")))}
        part = next((overrides[t][1:] for t in _WORKBOOK_TYPES if t in overrides), None)
        if part is None:
            # some programs make a workbook type the default for .xml
            defaults = {d.get("ContentType") for d in _children(types, "Default")}
            if not defaults & set(_WORKBOOK_TYPES):
                raise ValueError("the file holds no workbook part")
            part = "xl/workbook.xml"
        book = ElementTree.fromstring(self.archive.read(part))
        properties = next(_children(book, "workbookPr"), None)
        date1904 = properties.get("date1904") if properties is not None else None
        self.epoch = MAC_EPOCH if date1904 and date1904 not in ("false", "f", "0") \
            else WINDOWS_EPOCH
        targets = self._relations(part)
        members = set(self.archive.namelist())
        self.sheets: dict[str, str] = {}
        for sheets in _children(book, "sheets"):
            for sheet in _children(sheets, "sheet"):
                ref = next((v for k, v in sheet.attrib.items() if k.endswith("}id")), None)
                if not ref:
                    continue  # an old writer's broken entry: openpyxl leaves it out too
                target, kind = targets[ref]
                if target in members and "chartsheet" not in kind:
                    self.sheets[sheet.get("name") or ""] = target
        strings = overrides.get(_SHARED_STRINGS)
        self.strings: list[str] = []
        if strings is not None:
            with self.archive.open(strings[1:]) as source:
                self.strings = shared_strings(source)
        self.dates, self.durations = self._styles(members)

    def _relations(self, part: str) -> dict[str, tuple[str, str]]:
        """Relationship id -> (the part it names, its type), for the workbook part."""
        folder, name = posixpath.split(part)
        rels = ElementTree.fromstring(self.archive.read(f"{folder}/_rels/{name}.rels"
                                                        if folder else f"_rels/{name}.rels"))
        found = {}
        for rel in _children(rels, "Relationship"):
            target = rel.get("Target") or ""
            if rel.get("TargetMode") != "External":
                target = (target[1:] if target.startswith("/")
                          else posixpath.normpath(posixpath.join(folder, target)))
            found[rel.get("Id") or ""] = (target, rel.get("Type") or "")
        return found

    def _styles(self, members: set[str]) -> tuple[set[int], set[int]]:
        """The indexes of the cell styles whose number format shows a date, and those that
        show a duration."""
        dates: set[int] = set()
        durations: set[int] = set()
        if _STYLES not in members:
            return dates, durations
        sheet = ElementTree.fromstring(self.archive.read(_STYLES))
        custom = {int(f.get("numFmtId") or 0): f.get("formatCode")
                  for formats in _children(sheet, "numFmts")
                  for f in _children(formats, "numFmt")}
        for xfs in _children(sheet, "cellXfs"):
            for index, xf in enumerate(_children(xfs, "xf")):
                number = int(xf.get("numFmtId") or 0)
                code = custom[number] if number in custom else _BUILTIN_FORMATS.get(number)
                if is_date_format(code):
                    dates.add(index)
                if is_duration_format(code):
                    durations.add(index)
        return dates, durations

    @property
    def sheetnames(self) -> list[str]:
        return list(self.sheets)

    def records(self, name: str) -> Generator[Record]:
        """(row number, cell values from column A) of each row the sheet holds."""
        with self.archive.open(self.sheets[name]) as source:
            yield from worksheet_rows(source, self.strings, self.epoch, self.dates,
                                      self.durations)

    def close(self) -> None:
        self.archive.close()
