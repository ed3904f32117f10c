"""Every reader reads the same name: each message of both shipped campaigns and of a
campaign of hard cases is parsed by GMime 3, Node's mailparser and Perl's Email::MIME
(besides Python's own parser, which the other tests use), and each must give back the
sheet's display names, the subject, the text and the attachments' names and sizes.

In CI (`CI` set) a missing reader fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mailmerge import iter_messages, load_campaign
from mailmerge.render import Rendered

from .conftest import CampaignDir

ROOT = Path(__file__).resolve().parent.parent
READERS = Path(__file__).parent / "readers"


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run installs it")
    pytest.skip(reason)


def _command(reader: str) -> list[str]:
    if reader == "gmime":
        python = shutil.which("python3", path="/usr/bin:/bin") or "python3"
        probe = subprocess.run([python, "-c", "import gi; gi.require_version('GMime', '3.0')"],
                               capture_output=True)
        if probe.returncode != 0:
            _missing("GMime 3 through PyGObject is missing (python3-gi, gir1.2-gmime-3.0)")
        return [python, str(READERS / "gmime_read.py")]
    if reader == "node":
        if shutil.which("node") is None or not (READERS / "node_modules" / "mailparser").exists():
            _missing("Node's mailparser is missing (node, and npm install in tests/readers)")
        return ["node", str(READERS / "node_read.js")]
    probe = subprocess.run(["perl", "-MEmail::MIME", "-MJSON::PP", "-e", "1"],
                           capture_output=True)
    if probe.returncode != 0:
        _missing("Perl's Email::MIME is missing (libemail-mime-perl)")
    return ["perl", str(READERS / "perl_read.pl")]


HARD_NAMES = [
    "سارة الهاشمي", "张伟（市场部，上海分公司）", "प्रबंधक", "Zoë Ängström-Lindqvist",
    "Ирина Петрова", "田中 太郎", "Nguyễn Thị Minh Khai", "=?utf-8?q?Admin?=",
    "Müller\u00a0GmbH", "O'Brien, Seán", "Maximilian Alexander von und zu Hohenberg-Falkenstein",
    "Dr. Aleksandra Wiśniewska-Kowalczyk, Leiterin der Abteilung für Öffentlichkeitsarbeit",
]


def hard_campaign(cdir: CampaignDir) -> Path:
    """A campaign of the cases other readers have misread: scripts, look-alikes, long
    names and subjects, non-ASCII attachment names, an inline image, Cc lists, an IDN
    domain and a UTF-8 local part."""
    folder = cdir.folder
    (folder / "files").mkdir()
    for index, name in enumerate(["Rechnung für Zoë.pdf", "报告 2026.txt", "=?utf-8?q?x?=.pdf",
                                  "ملف المشروع النهائي للمراجعة والتدقيق " * 2 + ".pdf"]):
        (folder / "files" / name).write_bytes(bytes([index + 1]) * (1000 + index))
    (folder / "files" / "notes.txt").write_text("Grüße aus Köln\n")
    shutil.copy(ROOT / "templates" / "logo.png", folder / "logo.png")
    (folder / "mail.html").write_text(
        '<html lang="en"><body><img src="logo.png" alt="logo"><p>{{ name }}</p></body></html>')
    (folder / "mail.txt").write_text("Hello {{ name }},\nthis is for you.\n")
    files = ["files/Rechnung für Zoë.pdf", "files/报告 2026.txt", "files/=?utf-8?q?x?=.pdf",
             "files/" + "ملف المشروع النهائي للمراجعة والتدقيق " * 2 + ".pdf", "files/notes.txt"]
    rows = [["email", "name", "cc", "subject", "file"]]
    for index, name in enumerate(HARD_NAMES):
        email = f"p{index}@example.org"
        if index == 4:
            email = "irina@bücher.example"
        if index == 5:
            email = "太郎@example.org"
        cc = "" if index % 3 else f"{HARD_NAMES[(index + 1) % len(HARD_NAMES)]} <cc{index}" \
            f"@example.org>, Plain Person <pp{index}@example.org>"
        subject = ["Your invoice", "=?utf-8?b?SGVsbG8=?= literal text",
                   "Ihre Rechnung für März – bitte prüfen Sie alle Positionen sorgfältig "
                   "und melden Sie sich bei Fragen", "报告：二〇二六年第一季度的市场分析与展望，请查收附件中的详细数据",
                   "  spaced   subject  "][index % 5]
        rows.append([email, name, cc, subject, files[index % len(files)]])
    cdir.csv(rows)
    cdir.yaml(
        'name: readers\nfrom: "Acme Ünïted <news@acme.example>"\n'
        'to: "{{ name }} <{{ email }}>"\ncc: "{{ cc }}"\nsubject: "{{ subject }}"\n'
        "templates: {html: mail.html, text: mail.txt}\nrecipients: people.csv\n"
        'attachments: ["{{ file }}"]\ntransactional: true\n')
    return folder / "campaign.yaml"


def expected(rendered: Rendered) -> dict[str, Any]:
    return {
        "from": [a.display_name for a in rendered.from_],
        "to": [a.display_name for a in rendered.to],
        "cc": [a.display_name for a in rendered.cc],
        "subject": rendered.subject,
        "text": (rendered.text or "").replace("\r\n", "\n").rstrip("\n"),
        "attachments": sorted([a.filename, len(a.data)] for a in rendered.attachments),
    }


def seen(read: dict[str, Any]) -> dict[str, Any]:
    return {
        "from": [name for name, _ in read["from"]],
        "to": [name for name, _ in read["to"]],
        "cc": [name for name, _ in read["cc"]],
        "subject": read["subject"],
        "text": (read["text"] or "").replace("\r\n", "\n").rstrip("\n"),
        "attachments": sorted(read["attachments"]),
    }


# Reader bugs no choice of ours avoids: (reader, field, what the sheet said) -> why.
KNOWN = {
    ("node", "attachments", "=?utf-8?q?x?=.pdf"):
        "mailparser decodes an encoded word inside an RFC 2231 file name",
}


def disagreements(reader: list[str], campaigns: list[Path], folder: Path) -> list[str]:
    """Every field a reader reads otherwise than the sheet says, as 'file: field: ...'."""
    wanted: dict[str, dict[str, Any]] = {}
    for campaign in campaigns:
        for outcome in iter_messages(load_campaign(campaign)):
            assert outcome.built is not None, [str(e) for e in outcome.errors]
            path = folder / f"{campaign.stem}-{campaign.parent.name}-{outcome.row:03d}.eml"
            path.write_bytes(outcome.built.data)
            wanted[str(path)] = expected(outcome.built.rendered)
            if campaign.parent.name == "campaign":  # the hard cases: names as in the sheet
                assert wanted[str(path)]["to"] == [HARD_NAMES[outcome.row - 2]]
    done = subprocess.run([*reader, *wanted], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    found = []
    for line in done.stdout.decode("utf-8").splitlines():
        read = json.loads(line)
        want, got = wanted[read["file"]], seen(read)
        for field in want:
            known = any(k[0] == reader_name(reader) and k[1] == field and k[2] in str(want[field])
                        for k in KNOWN)
            if want[field] != got[field] and not known:
                found.append(f"{Path(read['file']).name}: {field}: {got[field]!r} instead of "
                             f"{want[field]!r}")
    return found


def reader_name(command: list[str]) -> str:
    return Path(command[-1]).stem.split("_")[0]


@pytest.mark.parametrize("reader", ["gmime", "node", "perl"])
def test_other_readers_read_what_the_sheet_says(cdir: CampaignDir, tmp_path: Path,
                                                reader: str) -> None:
    command = _command(reader)
    campaigns = [ROOT / "campaigns" / "newsletter.yaml", ROOT / "campaigns" / "invoices.yaml",
                 hard_campaign(cdir)]
    out = tmp_path / "eml"
    out.mkdir()
    found = disagreements(command, campaigns, out)
    assert found == [], "\n".join(found)
