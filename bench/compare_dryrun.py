"""Compare two dry-run folders: the same messages, byte for byte, apart from what varies.

Date, Message-ID and the MIME boundaries differ on every run, and a manifest's sizes
with the Message-ID's length; everything else (every .eml, the gallery's parts and list,
manifest.csv) must be identical. For refactorings that must not change what is sent:

    mailmerge preview campaigns/newsletter.yaml --out /tmp/before -j 1
    (change the code)
    mailmerge preview campaigns/newsletter.yaml --out /tmp/after -j 1
    python bench/compare_dryrun.py /tmp/before /tmp/after

Exit 0 when they match, 1 with the files that differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def normal(data: bytes) -> bytes:
    """``data`` with what differs from run to run replaced by fixed text."""
    boundaries: dict[bytes, bytes] = {}

    def boundary(match: re.Match[bytes]) -> bytes:
        return boundaries.setdefault(match.group(0), b"=_mm_B%d" % len(boundaries))

    data = re.sub(rb"=_mm_[0-9a-f]{24}", boundary, data)
    data = re.sub(rb"(?m)^Date: .*\r\n", b"Date: X\r\n", data)
    data = re.sub(rb"(?m)^Message-ID: .*\r\n", b"Message-ID: X\r\n", data)
    data = re.sub(rb'"date": "[^"]*"', b'"date": "X"', data)  # the gallery's list
    data = re.sub(rb"<[0-9]+\.[0-9]+\.[0-9]+@[^>]+>", b"<ID>", data)  # manifest.csv
    data = re.sub(rb'"size": [0-9]+', b'"size": N', data)  # varies with the ID's length
    return re.sub(rb",[0-9]+,([^,]*),<ID>", rb",N,\1,<ID>", data)


def main() -> int:
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    files = sorted(p.relative_to(before) for p in before.rglob("*") if p.is_file())
    others = sorted(p.relative_to(after) for p in after.rglob("*") if p.is_file())
    if files != others:
        print("not the same files:", sorted(map(str, set(files) ^ set(others)))[:10])
        return 1
    differ = [str(f) for f in files
              if normal((before / f).read_bytes()) != normal((after / f).read_bytes())]
    print(f"{len(files)} files compared, {len(differ)} differ" +
          (": " + ", ".join(differ[:10]) if differ else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
