"""Workbooks as spreadsheet programs write them, for the tests and the benchmark."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

_INLINE_CELL = re.compile(r'<c r="([A-Z]+\d+)"((?: s="\d+")?) t="inlineStr"><is>'
                          r'<t( xml:space="preserve")?>(.*?)</t></is></c>')


def share_strings(source: Path, target: Path) -> None:
    """``source`` with its inline strings moved into a shared-string table, as Excel and
    most spreadsheet programs write a workbook."""
    strings: dict[tuple[str, str], int] = {}

    def shared(match: re.Match[str]) -> str:
        index = strings.setdefault((match.group(4), match.group(3) or ""), len(strings))
        return f'<c r="{match.group(1)}"{match.group(2)} t="s"><v>{index}</v></c>'

    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w",
                                                          zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = _INLINE_CELL.sub(shared, data.decode("utf-8")).encode("utf-8")
            elif item.filename == "[Content_Types].xml":
                data = data.replace(b"</Types>", (
                    b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
                    b'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
                    b"</Types>"))
            elif item.filename == "xl/_rels/workbook.xml.rels":
                data = data.replace(b"</Relationships>", (
                    b'<Relationship Id="rIdSharedStrings" Type="http://schemas.openxmlformats'
                    b'.org/officeDocument/2006/relationships/sharedStrings" '
                    b'Target="sharedStrings.xml"/></Relationships>'))
            new.writestr(item, data)
        table = "".join(f"<si><t{space}>{text}</t></si>" for text, space in strings)
        new.writestr("xl/sharedStrings.xml", (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<sst xmlns="http://'
            'schemas.openxmlformats.org/spreadsheetml/2006/main" count="'
            f'{len(strings)}" uniqueCount="{len(strings)}">{table}</sst>'))
