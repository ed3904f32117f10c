"""``mailmerge import``: the classic mailmerge CLI's three files as a campaign folder.

The classic tool keeps a campaign in ``mailmerge_template.txt`` (header fields such as
TO, SUBJECT, FROM, CC, BCC, REPLY-TO and ATTACHMENT above the body, which is text, HTML,
Markdown or a hand-written multipart/alternative), ``mailmerge_database.csv`` and
``mailmerge_server.conf`` (host, port, security, username, ratelimit). :func:`convert`
turns their text into a campaign file and templates (pure); :func:`import_classic` reads
the files, copies the sheet and the attachments, and writes the new folder. What cannot
carry over is listed with what to do; nothing is guessed silently.
"""

from __future__ import annotations

import configparser
import email.parser
import glob
import io
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.errors import MissingHeaderBodySeparatorDefect
from email.message import Message
from pathlib import Path
from typing import BinaryIO

import yaml

from .assets import img_srcs
from .campaign import MAX_HEADER_NAME, RESERVED_HEADERS
from .css import jinja_spans
from .errors import ConfigError

TEMPLATE, DATABASE, CONFIG = ("mailmerge_template.txt", "mailmerge_database.csv",
                              "mailmerge_server.conf")
_OPENER = re.compile(r"\{(?=[{%#])")  # a "{" that would start Jinja markup
# A Markdown image: "![", its text up to the first "]", then "(" and its destination
_MD_MARK = re.compile(r"!\[|\]")
_MD_TARGET = re.compile(r"\(([^)\s]+)")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322: printable ASCII but ":"
# What the classic tool's sample files hold where the user's own values go
_SAMPLE_PLACEHOLDERS = ("YOUR_USERNAME_HERE", "mydomain.com", "bobdomain.com")
_ADDRESS_FIELDS = {"from": "from", "to": "to", "cc": "cc", "bcc": "bcc",
                   "reply-to": "reply_to"}
# Fields the new campaign makes itself, or that only described the classic template.
_DROPPED = {"content-type", "mime-version", "content-transfer-encoding", "date",
            "message-id", "attachment", "subject"}
_SECURITY = {"SSL/TLS": "ssl", "STARTTLS": "starttls", "NEVER": "none"}
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
TOKEN_VARIABLE = "MAILMERGE_SMTP_TOKEN"
MAX_TEXT_FILE = 16 * 1024 * 1024  # a template or a server configuration
# The folder an import writes into before it is renamed: .NAME.PID.RANDOM.importing
_WORK_SUFFIX = ".importing"
_WORK_FOLDER = re.compile(r"\..+\.([1-9][0-9]{0,9})\.[a-z0-9_]{8}\.importing", re.S)
_OLD_WORK_FOLDER = re.compile(r"\..+\.[a-z0-9_]{8}\.importing", re.S)


@dataclass
class Converted:
    """The new campaign as text: the campaign file, its templates, and what to tell."""

    campaign: str
    templates: dict[str, str]  # file name -> text
    attachments: list[str]  # the ATTACHMENT entries as written (relative, in the folder)
    images: list[str]  # ATTACHMENT entries the body shows as images: embedded instead
    todo: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Imported:
    """What ``import_classic`` wrote, what the user must still do, and what changed."""

    written: list[Path]
    todo: list[str]
    notes: list[str]


def _q(text: str) -> str:
    """``text`` as a YAML double-quoted scalar on one line, written by the YAML emitter: no
    value (a file name, a header, a folder named `yes`) can end it or start a key."""
    return yaml.safe_dump(text, default_style='"', allow_unicode=True,
                          width=float("inf")).rstrip("\n")


def _literal(text: str) -> str:
    """``text`` as the campaign's attachment entry reads it back: its glob characters
    (``*``, ``?``, ``[``) match themselves, and a ``{{``, ``{%`` or ``{#`` in it is not
    taken for Jinja."""
    return _OPENER.sub("{{ '{' }}", glob.escape(text))


def _attachment_entry(entry: str) -> str:
    """A classic ATTACHMENT value as an entry of `attachments:`: its Jinja kept, the rest
    of it literal, so that `[DRAFT] report.pdf` attaches that file and not `T report.pdf`."""
    return _join_literals(entry, _literal, lambda jinja: jinja)


def _join_literals(entry: str, literal: Callable[[str], str],
                   jinja: Callable[[str], str]) -> str:
    """``entry`` with its Jinja parts and the text around them each made over."""
    parts, done = [], 0
    for start, end in jinja_spans(entry):  # in linear time, however many "{{" it holds
        parts += [literal(entry[done:start]), jinja(entry[start:end])]
        done = end
    return "".join([*parts, literal(entry[done:])])


def _placeholder(value: str) -> str | None:
    """The classic sample's placeholder ``value`` holds, if any."""
    return next((p for p in _SAMPLE_PLACEHOLDERS if p.lower() in value.lower()), None)


def _shown(body: str) -> set[str]:
    """The images a body shows: HTML ``<img src>`` and Markdown ``![...](target)`` (a "]"
    after "![" ends its text), found in time linear in the body's length."""
    found = {image.src for image in img_srcs(body)}
    opened, done = False, 0
    for mark in _MD_MARK.finditer(body):
        if mark.start() < done:
            continue
        if mark.group() == "![":
            opened = True
            continue
        target = _MD_TARGET.match(body, mark.end()) if opened else None
        opened = False
        if target is not None:
            found.add(target.group(1))
            done = target.end()
    return found


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value).strip()


def _parse_template(text: str, name: str, todo: list[str]) -> Message:
    message = email.parser.Parser().parsestr(text.replace("\r\n", "\n"))
    if any(isinstance(d, MissingHeaderBodySeparatorDefect) for d in message.defects):
        first = next((line for line in text.splitlines()
                      if line.strip() and not re.match(r"[\w-]+:", line)), "")
        todo.append(f"{name}: the line {first!r} among the header fields is not a field; "
                    "the body was taken to start there. Move that logic into the campaign "
                    "file's fields (they are Jinja templates too) or into the body")
    return message


def _bodies(message: Message, name: str, todo: list[str], notes: list[str]
            ) -> dict[str, str]:
    """The body templates by kind (text, html, markdown)."""
    kind = message.get_content_type()
    if message.is_multipart():
        if kind != "multipart/alternative":
            notes.append(f"the {kind} body was read for its text and HTML parts only")
        found: dict[str, str] = {}
        for part in message.walk():
            if part.is_multipart():
                continue
            sub = part.get_content_type()
            key = {"text/plain": "text", "text/html": "html",
                   "text/markdown": "markdown"}.get(sub)
            payload = part.get_payload()
            if key is None or key in found or not isinstance(payload, str):
                todo.append(f"{name}: a {sub} part of the hand-written multipart body was "
                            "left out; add it by hand (attachments go in `attachments:`)")
                continue
            if part.get("Content-Transfer-Encoding", "").lower() not in ("", "7bit", "8bit"):
                todo.append(f"{name}: the {sub} part is written in "
                            f"{part['Content-Transfer-Encoding']}; the template was copied "
                            "as it is: write it as plain text")
            found[key] = payload
        if "markdown" in found and "html" in found:
            found.pop("markdown")
            todo.append(f"{name}: both an HTML and a Markdown part; the HTML was kept")
        return found
    payload = message.get_payload()
    assert isinstance(payload, str)
    key = {"text/html": "html", "text/markdown": "markdown"}.get(kind, "text")
    if kind not in ("text/plain", "text/html", "text/markdown"):
        todo.append(f"{name}: the body's Content-Type {kind} is not text, HTML or Markdown; "
                    "it was imported as text")
    return {key: payload}


def _sample_value(lines: list[str], todo: list[str], where: str, value: str, key: str
                  ) -> None:
    """A to-do, and a comment above the line just written, when ``value`` is the classic
    sample's placeholder rather than the user's own."""
    found = _placeholder(value)
    if found is None:
        return
    todo.append(f"{where} is {value!r}, the classic sample's placeholder ({found}): put "
                f"your own in `{key}:` in campaign.yaml")
    indent = lines[-1][:len(lines[-1]) - len(lines[-1].lstrip())]
    lines.insert(len(lines) - 1, f"{indent}# TODO: {_q(found)} is the classic sample's "
                                 "placeholder: write your own")


def _headers(message: Message, fields: dict[str, list[str]], template_name: str,
             lines: list[str], todo: list[str]) -> None:
    """The other header fields, under `headers:`; one a campaign cannot set is a to-do."""
    names = {k.lower(): k for k in message}
    kept = []
    for key, values in fields.items():
        if key in _DROPPED or key in _ADDRESS_FIELDS:
            continue
        name = names[key]
        if not _FIELD_NAME.fullmatch(name) or len(name) > MAX_HEADER_NAME:
            todo.append(f"{template_name}: the header field {name[:80]!r} was left out: a "
                        f"field name is at most {MAX_HEADER_NAME} printable ASCII characters "
                        "other than ':' (RFC 5322)")
        elif key in RESERVED_HEADERS:
            todo.append(f"{template_name}: the header field {name!r} was left out: "
                        "mailmerge sets it itself (see the campaign keys in the README)")
        else:
            kept += [f"  {_q(name)}: {_q(value)}" for value in values[:1]]
            if len(values) > 1:
                todo.append(f"{template_name}: {name} is given {len(values)} times; the "
                            "first was kept under `headers:`")
    if kept:
        lines += ["headers:", *kept]


def _security(parser: configparser.RawConfigParser, path: str, lines: list[str],
              todo: list[str], notes: list[str]) -> None:
    section = "smtp_server"
    host = parser.get(section, "host", fallback="localhost")
    port = parser.get(section, "port", fallback=None)
    security = (parser.get(section, "security", fallback="") or "").strip()
    username = parser.get(section, "username", fallback=None)
    ratelimit = parser.get(section, "ratelimit", fallback="0")
    lines += ["smtp:", f"  host: {_q(host)}"]
    if port:
        lines.append(f"  port: {int(port)}")
    upper = security.upper()
    if not security or upper == "NEVER":
        lines.append("  security: none")
        if host not in _LOOPBACK:
            notes.append(f"{path}: no security: mail goes to {host} unencrypted, as before")
    elif upper in _SECURITY:
        lines.append(f"  security: {_SECURITY[upper]}")
    elif upper == "PLAIN" and host in _LOOPBACK:
        lines.append("  security: none")
    elif upper == "PLAIN":
        lines.append("  security: starttls")
        todo.append(f"{path}: `security = PLAIN` logged in to {host} without encryption, "
                    "which mailmerge refuses; the campaign uses STARTTLS instead. Check that "
                    "the server offers it (`mailmerge send --to you@...` tries), or use "
                    "`security: ssl` with port 465")
    elif upper == "XOAUTH":
        lines += ["  security: starttls", "  auth: xoauth2",
                  f"  token_command: \"printenv {TOKEN_VARIABLE}\""]
        todo.append(f"{path}: XOAUTH: the token is no longer typed at a prompt. Export it "
                    f"(`export {TOKEN_VARIABLE}=...`) before `mailmerge send`, or set "
                    "`smtp.token_command` to a command that prints a fresh one (such as "
                    "oauth2ms)")
    else:
        todo.append(f"{path}: unknown `security = {security}`; the campaign uses STARTTLS: "
                    "set `smtp.security` to ssl, starttls or none")
        lines.append("  security: starttls")
    if username and (upper not in ("", "NEVER")):
        lines.append(f"  username: {_q(username)}")
        _sample_value(lines, todo, f"{path}: username", username, "smtp.username")
        if upper != "XOAUTH":
            notes.append("the password is never written in the campaign: export "
                         "MAILMERGE_SMTP_PASSWORD=... before `mailmerge send`, or type it "
                         "when send asks on a terminal")
    try:
        per_minute = int(ratelimit or 0)
    except ValueError:
        todo.append(f"{path}: `ratelimit = {ratelimit}` is not a number; set `smtp.rate` "
                    "(e.g. 30/minute)")
        per_minute = 0
    if per_minute > 0:
        lines.append(f"  rate: {per_minute}/minute")


def convert(template_text: str, config_text: str | None, *, name: str, sheet: str,
            template_name: str = TEMPLATE, config_name: str = CONFIG) -> Converted:
    """The campaign for a classic template (and server configuration), as text."""
    todo: list[str] = []
    notes: list[str] = []
    message = _parse_template(template_text, template_name, todo)
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key.lower(), []).append(_unfold(value))
    lines = [f"# Imported by `mailmerge import` from {_q(template_name)}, {_q(sheet)} and "
             f"{_q(config_name) if config_text is not None else '(no server configuration)'}.",
             f"name: {_q(name)}"]
    if "from" not in fields:
        todo.append(f"{template_name} has no FROM: add `from:` to campaign.yaml (every "
                    "message needs a sender)")
    for key, target in _ADDRESS_FIELDS.items():
        if key in fields:
            value = ", ".join(fields[key])
            lines.append(f"{target}: {_q(value)}")
            _sample_value(lines, todo, f"{template_name}: {key.upper()}", value, target)
        elif key == "to":
            lines.append('to: ""  # the classic template had no TO: only Cc and Bcc')
    if "subject" in fields:
        lines.append(f"subject: {_q(fields['subject'][0])}")
    else:
        lines.append('subject: ""  # TODO: write a subject')
        todo.append(f"{template_name} has no SUBJECT: write one in campaign.yaml "
                    "(mailmerge sends no message without a subject)")
    bodies = _bodies(message, template_name, todo, notes)
    files = {"text": "mail.txt", "html": "mail.html", "markdown": "mail.md"}
    lines.append("templates:")
    templates: dict[str, str] = {}
    for key in ("html", "markdown", "text"):
        if key in bodies:
            lines.append(f"  {key}: {files[key]}")
            templates[files[key]] = bodies[key]
    if "markdown" in bodies:
        lines.append("  line_breaks: true  # as the classic tool: a newline is a line break")
        notes.append("Markdown is now CommonMark (with tables); the classic tool's Markdown "
                     "differed in details. Cell values are text, not Markdown: use "
                     "{{ value|safe }} for a column that holds Markdown")
    if "html" in bodies:
        notes.append("HTML templates are now autoescaped: a cell holding <, > or & shows as "
                     "text; use {{ value|safe }} for a column that holds HTML")
        if "text" not in bodies:
            notes.append("the HTML-only body now also gets a plain-text part, made from it")
    lines.append(f"recipients: {_q(sheet)}")

    shown = set().union(*map(_shown, bodies.values()))
    attachments, images = [], []
    for value in fields.get("attachment", []):
        if not value:
            todo.append(f"{template_name}: an empty ATTACHMENT line was left out")
        elif value.startswith("~") or os.path.isabs(value) or ".." in Path(value).parts:
            todo.append(f"ATTACHMENT {value}: outside the classic folder. Copy the file into "
                        "the new folder and add it to `attachments:` in campaign.yaml, as a "
                        "path relative to it (mailmerge attaches only files inside the "
                        "campaign's folder)")
        elif value in shown:
            images.append(value)
            notes.append(f"ATTACHMENT {value} is shown in the body: it is embedded as an "
                         "inline image, not attached as well")
        else:
            attachments.append(value)
    if attachments:
        lines.append("attachments:")
        lines += [f"  - {_q(_attachment_entry(a))}" for a in attachments]
    _headers(message, fields, template_name, lines, todo)
    lines += ["# The classic tool sends one-to-one mail. For a newsletter, remove this line",
              "# and add `unsubscribe:` (see the README).",
              "transactional: true"]
    if config_text is None:
        todo.append(f"no {config_name}: the campaign sends through localhost port 25 until "
                    "you set `smtp:`")
        lines += ["smtp:", "  host: localhost", "  port: 25", "  security: none"]
    else:
        parser = configparser.RawConfigParser()
        try:
            parser.read_string(config_text, source=config_name)
            if not parser.has_section("smtp_server"):
                raise configparser.Error("no [smtp_server] section")
            _security(parser, config_name, lines, todo, notes)
        except (configparser.Error, ValueError) as exc:
            todo.append(f"{config_name} could not be read ({exc}); set `smtp:` in "
                        "campaign.yaml by hand")
            lines += ["smtp:", "  host: localhost", "  port: 25", "  security: none"]
    return Converted("\n".join(lines) + "\n", templates, attachments, images, todo, notes)


def _matches(folder: Path, entry: str) -> Iterator[Path]:
    """The files an ATTACHMENT entry names in the classic folder (a templated part of the
    path matches any name), never outside it."""
    pattern = _join_literals(entry, glob.escape, lambda _: "*")
    root = folder.resolve()
    templated = next(jinja_spans(entry), None) is not None
    for path in sorted(folder.glob(pattern)) if templated else [folder / entry]:
        real = path.resolve()
        if real.is_file() and real.is_relative_to(root):
            yield path


def _open_regular(path: Path, what: str) -> io.BufferedReader[io.FileIO]:
    """``path`` opened for reading, if it is a regular file. Raises ConfigError when it is
    missing, cannot be read, or is something else (a FIFO would block the import for
    ever, a device would never end)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before it can be refused
        handle = io.BufferedReader(io.FileIO(path, "rb", opener=_nonblocking))
    except FileNotFoundError:
        raise ConfigError(f"the classic {what} {path} does not exist",
                          hint="give the folder that holds it, or name it with "
                               f"--{what.split()[0]}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the classic {what} {path}: {exc.strerror or exc}",
                          hint=f"give a {what} you may read") from exc
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise ConfigError(f"the classic {what} {path} is not a regular file",
                          hint=f"give the {what} itself, not a pipe, device or folder")
    os.set_blocking(handle.fileno(), True)
    return handle


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


def _read(path: Path, what: str) -> str:
    """The text of a template or config file, read up to MAX_TEXT_FILE: no more is held."""
    with _open_regular(path, what) as handle:
        try:
            data = bytearray()  # in blocks: read(n) would take n bytes at once
            while (block := handle.read(64 * 1024)) and len(data) <= MAX_TEXT_FILE:
                data += block
            if len(data) > MAX_TEXT_FILE:
                raise ConfigError(f"the classic {what} {path} is larger than "
                                  f"{MAX_TEXT_FILE // 1024**2} MB; it holds text of a few KB",
                                  hint=f"give the {what} itself")
            return data.decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the classic {what} {path}: {exc}",
                              hint="it must be UTF-8 text") from exc


def import_classic(source: Path, target: Path, *, template: Path | None = None,
                   database: Path | None = None, config: Path | None = None) -> Imported:
    """Write a campaign folder ``target`` (new or empty) from the classic files in
    ``source`` (or the files named). Never overwrites a file; written into a new folder
    beside ``target`` and renamed at the end, so that a failed import leaves nothing."""
    template = template or source / TEMPLATE
    database = database or source / DATABASE
    config = config or source / CONFIG
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not empty",
                          hint="choose a new folder; import never overwrites files")
    template_text = _read(template, "template file")
    config_text = _read(config, "config file") if config.exists() or config.is_symlink() \
        else None
    name = re.sub(r"[^\w.-]+", "-", target.resolve().name).strip("-.") or "campaign"
    converted = convert(template_text, config_text, name=name, sheet=database.name,
                        template_name=template.name, config_name=config.name)
    with _open_regular(database, "database") as sheet:
        found = _placeholder(sheet.peek(8192)[:8192].decode("utf-8", "replace"))
        if found is not None:
            converted.todo.append(f"{database.name} holds the classic sample's rows (with "
                                  f"{found}): put your own recipients in it")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            converted.notes += _remove_leftovers(target.parent)
            work = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.",
                                         suffix=_WORK_SUFFIX, dir=target.parent))
        except OSError as exc:
            raise ConfigError(f"cannot write into {target.parent}: {exc.strerror or exc}",
                              hint="choose a folder you may write in") from exc
        try:
            written = _write(work, converted, sheet, database.name, template.parent)
            work.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a folder is not
            work.rename(target)
        except OSError as exc:
            raise ConfigError(f"cannot write into {target}: {exc.strerror or exc}",
                              hint="choose a new folder, one you may write in") from exc
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return Imported([target / path for path in written], converted.todo, converted.notes)


def _remove_leftovers(folder: Path) -> list[str]:
    """Remove the work folders that imports killed before their end (SIGKILL, a power
    cut) left in ``folder``: those whose process no longer runs. A note for each one
    whose owner is unknown (an import of an older version)."""
    notes = []
    with os.scandir(folder) as entries:
        found = [entry for entry in entries if entry.name.startswith(".")
                 and entry.name.endswith(_WORK_SUFFIX) and entry.is_dir(follow_symlinks=False)]
    for entry in found:
        owner = _WORK_FOLDER.fullmatch(entry.name)
        if owner is None:
            if _OLD_WORK_FOLDER.fullmatch(entry.name):
                notes.append(f"{entry.path} looks like what an interrupted import left: "
                             "remove it if no import is running")
        elif not _runs(int(owner.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
    return notes


def _runs(pid: int) -> bool:
    """Whether a process ``pid`` runs (or may: one of another user)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write(work: Path, converted: Converted, sheet: BinaryIO, sheet_name: str,
           folder: Path) -> list[Path]:
    """The campaign's files in the folder ``work``; their paths relative to it. The sheet
    and the attachments are copied a block at a time (a sheet may be gigabytes)."""
    written: list[Path] = []

    def write(relative: str, data: bytes | BinaryIO) -> None:
        path = work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                shutil.copyfileobj(data, handle)
        written.append(Path(relative))

    write("campaign.yaml", converted.campaign.encode("utf-8"))
    for file_name, text in converted.templates.items():
        write(file_name, text.encode("utf-8"))
    write(sheet_name, sheet)
    for entry in converted.attachments + converted.images:
        found = list(_matches(folder, entry))
        if not found:
            converted.todo.append(f"ATTACHMENT {entry}: no such file in {folder} now; put "
                                  "the file(s) into the new folder before sending")
        for path in found:
            relative = path.relative_to(folder).as_posix()
            if not (work / relative).exists():
                with _open_regular(path, "attachment") as data:
                    write(relative, data)
    return written
