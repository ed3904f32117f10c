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
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.errors import MissingHeaderBodySeparatorDefect
from email.message import Message
from pathlib import Path

from .errors import ConfigError

TEMPLATE, DATABASE, CONFIG = ("mailmerge_template.txt", "mailmerge_database.csv",
                              "mailmerge_server.conf")
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_IMG_SRC = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*["']([^"']+)["']|!\[[^\]]*\]\(([^)\s]+)""",
                      re.I)
_ADDRESS_FIELDS = {"from": "from", "to": "to", "cc": "cc", "bcc": "bcc",
                   "reply-to": "reply_to"}
# Fields the new campaign makes itself, or that only described the classic template.
_DROPPED = {"content-type", "mime-version", "content-transfer-encoding", "date",
            "message-id", "attachment", "subject"}
_SECURITY = {"SSL/TLS": "ssl", "STARTTLS": "starttls", "NEVER": "none"}
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
TOKEN_VARIABLE = "MAILMERGE_SMTP_TOKEN"


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
    """A YAML double-quoted scalar (JSON's string syntax is a subset of YAML's)."""
    return json.dumps(text, ensure_ascii=False)


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
    lines = [f"# Imported by `mailmerge import` from {template_name}, {sheet} and "
             f"{config_name if config_text is not None else '(no server configuration)'}.",
             f"name: {name}"]
    if "from" not in fields:
        todo.append(f"{template_name} has no FROM: add `from:` to campaign.yaml (every "
                    "message needs a sender)")
    for key, target in _ADDRESS_FIELDS.items():
        if key in fields:
            lines.append(f"{target}: {_q(', '.join(fields[key]))}")
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

    shown = {m.group(1) or m.group(2) for body in bodies.values()
             for m in _IMG_SRC.finditer(body)}
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
        lines += [f"  - {_q(a)}" for a in attachments]
    extra = [(k, v) for k, values in fields.items() if k not in _DROPPED
             and k not in _ADDRESS_FIELDS for v in values]
    if extra:
        lines.append("headers:")
        names = {k.lower(): k for k in message}
        lines += [f"  {names[k]}: {_q(v)}" for k, v in extra]
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
    pattern = _JINJA.sub("*", entry)
    root = folder.resolve()
    for path in sorted(folder.glob(pattern)) if pattern != entry else [folder / entry]:
        real = path.resolve()
        if real.is_file() and real.is_relative_to(root):
            yield path


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"the classic {what} {path} does not exist",
                          hint="give the folder that holds it, or name it with "
                               f"--{what.split()[0]}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the classic {what} {path}: {exc}",
                          hint="it must be UTF-8 text") from exc


def import_classic(source: Path, target: Path, *, template: Path | None = None,
                   database: Path | None = None, config: Path | None = None) -> Imported:
    """Write a campaign folder ``target`` (new or empty) from the classic files in
    ``source`` (or the files named). Never overwrites a file."""
    template = template or source / TEMPLATE
    database = database or source / DATABASE
    config = config or source / CONFIG
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not empty",
                          hint="choose a new folder; import never overwrites files")
    template_text = _read(template, "template file")
    if not database.is_file():
        raise ConfigError(f"the classic database {database} does not exist",
                          hint="give the folder that holds it, or name it with --database")
    config_text = _read(config, "config file") if config.exists() else None
    name = re.sub(r"[^\w.-]+", "-", target.resolve().name).strip("-.") or "campaign"
    converted = convert(template_text, config_text, name=name, sheet=database.name,
                        template_name=template.name, config_name=config.name)
    todo, notes = converted.todo, converted.notes
    written: list[Path] = []

    def write(relative: str, data: bytes) -> None:
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as handle:
            handle.write(data)
        written.append(path)

    try:
        target.mkdir(parents=True, exist_ok=True)
        write("campaign.yaml", converted.campaign.encode("utf-8"))
        for file_name, text in converted.templates.items():
            write(file_name, text.encode("utf-8"))
        write(database.name, database.read_bytes())
        folder = template.parent
        for entry in converted.attachments + converted.images:
            found = list(_matches(folder, entry))
            if not found:
                todo.append(f"ATTACHMENT {entry}: no such file in {folder} now; put the "
                            "file(s) into the new folder before sending")
            for path in found:
                relative = path.relative_to(folder).as_posix()
                if not (target / relative).exists():
                    write(relative, path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot write into {target}: {exc.strerror or exc}",
                          hint="choose a folder you may write in") from exc
    return Imported(written, todo, notes)
