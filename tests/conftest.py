"""Shared helpers: campaigns written into tmp_path, messages parsed back as a client would."""

from __future__ import annotations

import csv
import email
import email.policy
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailmerge import Built, Outcome, iter_messages, load_campaign

HTML = """<!DOCTYPE html>
<html lang="en"><head><title>Hello</title><style>p { color: #336699; }</style></head>
<body><p>Hello {{ name }}</p></body></html>
"""


# A shell starts a background job (`pytest ... &`) with SIGINT ignored; every process the
# tests start would inherit that, and Python leaves an ignored SIGINT ignored, so the
# Ctrl-C tests would signal processes that never hear it. Handled here, it is the default
# again in each of them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def kept_results_in_a_folder_of_the_tests(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """What mailmerge keeps between runs (see diskmemo) goes to a folder of this test run,
    not to the user's own cache; the processes the tests start inherit it."""
    from mailmerge import css

    folder = tmp_path_factory.mktemp("kept")
    saved = {name: os.environ.pop(name, None)
             for name in ("MAILMERGE_CACHE_DIR", "MAILMERGE_NO_CACHE")}
    os.environ["MAILMERGE_CACHE_DIR"] = str(folder)
    css._memo = None  # made again from the environment when first used
    yield folder
    css._memo = None
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value


def write_csv(path: Path, rows: Sequence[Sequence[Any]], delimiter: str = ",",
              encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding) as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    return path


def write_xlsx(path: Path, rows: Sequence[Sequence[Any]], title: str = "Sheet1") -> Path:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = title
    for row in rows:
        sheet.append(list(row))
    workbook.save(path)
    return path


def parse(data: bytes) -> EmailMessage:
    """Parse as a mail client would (a UTF-8 header block is read as UTF-8: SMTPUTF8)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    if head.isascii():
        message = email.message_from_bytes(data, policy=email.policy.default)
    else:
        message = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def content(msg: EmailMessage, kind: str) -> str:
    """The decoded text of the plain or html body, with line ends as a client shows them."""
    body = msg.get_body((kind,))
    assert body is not None, f"no {kind} part"
    return body.get_content().replace("\r\n", "\n")


def tree(part: EmailMessage) -> Any:
    """The MIME structure as nested tuples: ('multipart/mixed', [children]) or a type."""
    if part.is_multipart():
        return (part.get_content_type(), [tree(p) for p in part.iter_parts()])
    return part.get_content_type()


class CampaignDir:
    """A campaign folder under tmp_path, with files written by the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "templates").mkdir(parents=True)
        (root / "campaign").mkdir()

    @property
    def folder(self) -> Path:
        return self.root / "campaign"

    def file(self, relative: str, content: str | bytes) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content), encoding="utf-8")
        return path

    def yaml(self, text: str, name: str = "campaign.yaml") -> Path:
        return self.file(f"campaign/{name}", text)

    def csv(self, rows: Sequence[Sequence[Any]], name: str = "people.csv", **kw: Any) -> Path:
        return write_csv(self.folder / name, rows, **kw)

    def xlsx(self, rows: Sequence[Sequence[Any]], name: str = "people.xlsx") -> Path:
        return write_xlsx(self.folder / name, rows)

    def outcomes(self, name: str = "campaign.yaml") -> list[Outcome]:
        return list(iter_messages(load_campaign(self.folder / name)))

    def messages(self, name: str = "campaign.yaml") -> list[tuple[Built, EmailMessage]]:
        result = []
        for outcome in self.outcomes(name):
            assert outcome.built is not None, [str(e) for e in outcome.errors]
            result.append((outcome.built, parse(outcome.built.data)))
        return result

    def errors(self, name: str = "campaign.yaml") -> list[str]:
        return [str(e) for o in self.outcomes(name) for e in o.errors]


@pytest.fixture
def cdir(tmp_path: Path) -> CampaignDir:
    return CampaignDir(tmp_path)


@pytest.fixture
def basic(cdir: CampaignDir) -> Callable[..., CampaignDir]:
    """A minimal working campaign; keyword arguments add or replace YAML lines."""

    def make(extra: str = "", html: str | None = HTML, text: str | None = None,
             rows: Sequence[Sequence[Any]] | None = None) -> CampaignDir:
        templates = []
        if html is not None:
            cdir.file("templates/mail.html", html)
            templates.append("  html: ../templates/mail.html")
        if text is not None:
            cdir.file("templates/mail.txt", text)
            templates.append("  text: ../templates/mail.txt")
        cdir.csv(rows or [["email", "name"], ["zoe@example.org", "Zoë"]])
        body = textwrap.dedent(extra)
        blocks = {"name": "name: test", "from": 'from: "Acme <news@acme.example>"',
                  "subject": 'subject: "Hi {{ name }}"', "recipients": "recipients: people.csv",
                  "templates": "\n".join(["templates:", *templates])}
        given = {line.split(":")[0] for line in body.splitlines() if line and not line[0].isspace()}
        for key in given:
            blocks.pop(key, None)
        lines = list(blocks.values())
        if "transactional" not in given and "unsubscribe" not in given:
            body += "\ntransactional: true\n"  # last, so that line numbers stay put
        cdir.yaml("\n".join(lines) + "\n" + body)
        return cdir

    return make


@pytest.fixture(params=[True, False], ids=["pipelining", "classic"])
def smtp_server(request):
    """A real SMTP server, with and without PIPELINING (RFC 2920), which changes how the
    client talks to it."""
    from .smtpserver import Server

    server = Server(pipelining=request.param)
    yield server
    server.stop()


SMTP_BLOCK = """\
smtp:
  host: 127.0.0.1
  port: {port}
  security: none
  timeout: 5
  retry_delay: 0.01
  retry_for: 30
"""


@pytest.fixture
def dovecot():
    """A real Dovecot (IMAP) on a free loopback port, with a user `news`."""
    from .imapserver import DOVECOT, Dovecot

    if DOVECOT is None:
        if os.environ.get("CI"):
            pytest.fail("Dovecot is missing; .ci/run installs the dovecot-imapd package")
        pytest.skip("needs the dovecot-imapd package")
    server = Dovecot()
    yield server
    server.stop()


def scanned_alone(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by Python in a process of its own from the project's folder, stopped
    after 30 s: a regular expression holds the interpreter while it runs, so a scan that
    takes time growing with the square of its input can only be stopped from outside."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).resolve().parent.parent)
