"""Names, subjects and file names come back exactly as the sheet had them: decoded by
Python's legacy API and by a strict RFC 2047 decoder written here, in every script, with
any spacing, and when the text itself looks like an encoded word. Lines stay within 78
where a fold point exists; every encoded word is at most 75 characters of whole
characters."""

from __future__ import annotations

import base64
import email
import email.policy
import os
import quopri
import re
from email.header import decode_header, make_header
from email.headerregistry import Address

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailmerge.assets import Part
from mailmerge.message import addresses_header, unstructured
from mailmerge.mime import file_part_bytes

EXAMPLES = int(os.environ.get("MAILMERGE_PROPERTY_EXAMPLES", 300))
SCRIPTS = ["Zoë Ängström", "سارة الهاشمي", "张伟（市场部，上海分公司）", "प्रबंधक", "Ирина Петрова",
           "田中 太郎", "Ελένη Παπαδοπούλου", "שרה כהן", "김민준", "Nguyễn Thị Minh Khai", "👩‍💻 Dev",
           "O'Brien, Seán", "Müller\u00a0GmbH"]
LOOK_ALIKES = ["=?utf-8?b?SGVsbG8=?= literal text", "=?utf-8?q?Admin?=", "=?ISO-8859-1?Q?a?=",
               "x =?utf-8?q?y?= z"]
ENCODED = re.compile(r"=\?([^?]+)\?([bBqQ])\?([^?]*)\?=")
pieces = st.sampled_from([*"abcXYZ019 -'.,é ßøĄ中文字한국", "\u00a0", "  ", "ـ", "ि", "्", "🙂",
                          "=?", "?=", "?q?"])
names = st.one_of(st.sampled_from(SCRIPTS + LOOK_ALIKES),
                  st.lists(pieces, min_size=1, max_size=60).map("".join),
                  st.lists(st.sampled_from(SCRIPTS), min_size=1, max_size=4).map(" ".join))


def strict_decode(value: str) -> str:
    """RFC 2047 as written: encoded words separated only by white space are joined (that
    white space is dropped, 6.2); each word must decode to whole UTF-8 characters."""
    value = re.sub(r"\r\n[ \t]", " ", value)
    out: list[str] = []
    last_end, last_was_word = 0, False
    for match in ENCODED.finditer(value):
        between = value[last_end:match.start()]
        if not (last_was_word and between.strip(" \t") == ""):
            out.append(between)
        charset, kind, text = match.groups()
        if kind in "bB":
            raw = base64.b64decode(text)
        else:
            raw = quopri.decodestring(text.replace("_", " ").encode("ascii"), header=True)
        out.append(raw.decode(charset))  # a word cut inside a character fails here
        assert len(match.group(0)) <= 75, match.group(0)
        last_end, last_was_word = match.end(), True
    out.append(value[last_end:])
    return "".join(out)


def field_value(line: str) -> str:
    return line.split(":", 1)[1].lstrip(" ")


def legacy_decode(value: str) -> str:
    return str(make_header(decode_header(re.sub(r"\r\n[ \t]", " ", value))))


def check_lines(header: str) -> None:
    for line in header.split("\r\n"):
        if len(line) > 78:  # allowed only where no fold point exists: a single token
            assert " " not in line.strip()[line.find(":") + 1:].strip() or "=?" not in line, line


@settings(max_examples=EXAMPLES, deadline=None)
@given(subject=names, name_len=st.sampled_from(["Subject", "X-A-Rather-Long-Header-Name"]))
def test_a_subject_decodes_to_exactly_its_text(subject: str, name_len: str) -> None:
    subject = subject.strip(" ") or "x"  # the renderer strips a header value's ends
    header = unstructured(name_len, subject)
    check_lines(header)
    assert strict_decode(field_value(header)) == subject
    assert legacy_decode(field_value(header)) == subject
    parsed = email.message_from_bytes(f"{header}\r\n\r\n".encode(), policy=email.policy.default)
    assert parsed[name_len] == subject


@settings(max_examples=EXAMPLES, deadline=None)
@given(display=names, field=st.sampled_from(["To", "Cc", "Reply-To"]),
       others=st.lists(st.sampled_from([*SCRIPTS, "", "Bo"]), max_size=3))
def test_a_display_name_decodes_to_exactly_its_text(display: str, field: str,
                                                    others: list[str]) -> None:
    display = display.strip(" \t") or "x"
    addresses = (Address(display, "first", "example.org"),
                 *(Address(o, f"p{i}", "example.org") for i, o in enumerate(others)))
    header = addresses_header(field, addresses)
    for line in header.split("\r\n"):  # every line has a fold point before its last token
        assert len(line) <= 78 or " " not in line.strip(), line
    parsed = email.message_from_bytes(f"{header}\r\n\r\n".encode(), policy=email.policy.default)
    got = parsed[field].addresses
    assert [a.addr_spec for a in got] == [a.addr_spec for a in addresses]
    phrase = field_value(header).split("<first@example.org>")[0]
    words = ENCODED.findall(phrase)
    if words and not phrase.lstrip().startswith('"'):
        assert strict_decode(phrase).strip(" ") == display
        assert legacy_decode(phrase).strip(" ") == display
    if len(words) > 1:
        # CPython's policy.default keeps the folding white space between two encoded
        # words of a phrase (RFC 2047 6.2 says drop it): a double space at each cut,
        # which the README lists among the readers' bugs (and a space where a word
        # longer than one encoded word had to be cut)
        assert "".join(got[0].display_name.split()) == "".join(display.split())
    elif words:  # CPython's policy.default also collapses runs of spaces it decoded, and
        # strips white space (a no-break space too) at the ends
        assert " ".join(got[0].display_name.split()) == " ".join(display.split())
    else:
        assert got[0].display_name == display


@pytest.mark.parametrize("filename", [
    "Rechnung für Zoë.pdf", "=?utf-8?q?invoice?=.pdf", "报告 2026.pdf", "a" * 120 + ".txt",
    "ملف " * 40 + ".pdf", 'quote"and\\slash.txt', "plain report.pdf", "%41.txt", "x'y.txt"])
def test_a_file_name_decodes_to_exactly_its_text(filename: str) -> None:
    data = "Grüße, привет\n".encode()
    part = file_part_bytes(Part(data, "text", "plain", filename), inline=False)
    head = bytes(part).split(b"\r\n\r\n", 1)[0].decode("ascii")
    # over 78 only where no fold point exists: a single token (a long quoted name, or one
    # of at most nine RFC 2231 sections)
    assert all(len(line) <= 78 or " " not in line.strip() for line in head.split("\r\n")), head
    assert head.count("filename*") <= 9  # Ruby's mail sorts *10 before *2
    parsed = email.message_from_bytes(bytes(part), policy=email.policy.default)
    assert parsed.get_filename() == filename
    assert parsed.get_content_charset() == "utf-8"  # valid UTF-8 text says so
    assert parsed.get_content() == data.decode()


def test_binary_files_get_no_charset() -> None:
    part = file_part_bytes(Part(b"\xff\xfe\x00", "text", "plain", "odd.txt"), inline=False)
    assert b"charset" not in bytes(part).split(b"\r\n\r\n", 1)[0]
    pdf = file_part_bytes(Part(b"%PDF", "application", "pdf", "a.pdf"), inline=False)
    assert b"charset" not in bytes(pdf).split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("name", ["سارة الهاشمي", "张伟（市场部，上海分公司）", "प्रबंधक"])
def test_a_name_that_fits_one_word_is_one_word(name: str) -> None:
    header = addresses_header("To", (Address(name, "a", "example.org"),))
    assert len(ENCODED.findall(header)) == 1


def test_words_are_cut_at_spaces_not_inside_them() -> None:
    name = "Zoë Müller-Lüdenscheidt und Frau Ängström von der Hausverwaltung Nord"
    header = unstructured("Subject", name)
    words = [strict_decode(w) for w in ENCODED.findall(header) and
             re.findall(r"=\?[^?]+\?[qQbB]\?[^?]*\?=", header)]
    assert len(words) > 1
    assert all(w.endswith(" ") for w in words[:-1])  # each cut after a space, kept in
    assert "".join(words) == name


def test_a_cc_line_counts_its_field_name() -> None:
    addresses = (Address("Ünïcödé Persön", "someone.with.a.long.name", "example.org"),)
    for field in ("To", "Cc", "Reply-To"):
        header = addresses_header(field, addresses)
        assert all(len(line) <= 78 for line in header.split("\r\n")), header


file_pieces = st.sampled_from([*"abcXYZ019 -_.,;()[]'%*=?\"\\", "é", "ß", "中文", "ملف", "\u00a0",
                               "=?utf-8?q?x?=", "報告", "🙂", ".pdf", "  "])


@settings(max_examples=EXAMPLES, deadline=None)
@given(name=st.lists(file_pieces, min_size=1, max_size=90).map("".join))
def test_any_file_name_decodes_to_exactly_its_text(name: str) -> None:
    name = name.strip() or "x"
    # Python strips one pair of quotes around any parameter value, decoded RFC 2231 too
    assume(not (len(name) > 1 and name[0] == name[-1] == '"'))
    part = file_part_bytes(Part(b"%PDF-1.4", "application", "pdf", name), inline=False)
    head = bytes(part).split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert all(len(line) <= 78 or " " not in line.strip() for line in head.split("\r\n"))
    assert head.count("filename*") <= 9
    parsed = email.message_from_bytes(bytes(part), policy=email.policy.default)
    assert parsed.get_filename() == name
    legacy = email.message_from_bytes(bytes(part), policy=email.policy.compat32)
    assert legacy.get_filename() == name
