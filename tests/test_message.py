"""The six kinds of mail, built from campaign files and parsed back as a mail client would."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

import pytest

from .conftest import CampaignDir, content, parse, tree

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
       b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe"
       b"\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82")


def assert_standard_headers(msg, sender_domain: str = "acme.example") -> None:
    for name in ("From", "Date", "Message-ID", "MIME-Version", "Subject"):
        assert len(msg.get_all(name, [])) == 1, name
    assert msg["MIME-Version"] == "1.0"
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert re.fullmatch(r"<[^@<>]+@" + re.escape(sender_domain) + ">", msg["Message-ID"])
    assert msg.get_all("Bcc") is None
    assert not msg.defects


def test_plain_utf8_text(basic) -> None:
    c = basic(html=None, text="Grüße, {{ name }}!\nZeile zwei.\n")
    (built, msg), = c.messages()
    assert tree(msg) == "text/plain"
    assert msg.get_content() == "Grüße, Zoë!\r\nZeile zwei.\r\n"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg["Subject"] == "Hi Zoë"
    assert b"Subject: =?utf-8?q?Hi_Zo=C3=AB?=" in built.data  # RFC 2047 on the wire
    assert b"\r\n" in built.data and b"\n" not in built.data.replace(b"\r\n", b"")
    assert_standard_headers(msg)


def test_html_gets_a_derived_text_part_and_inlined_css(basic) -> None:
    c = basic()
    (built, msg), = c.messages()
    assert tree(msg) == ("multipart/alternative", ["text/plain", "text/html"])
    text = content(msg, "plain")
    html = content(msg, "html")
    assert text == "Hello Zoë\n"
    assert '<p style="color:#369">Hello Zoë</p>' in html
    assert "<style" not in html
    assert_standard_headers(msg)


def test_html_with_an_embedded_image(cdir: CampaignDir) -> None:
    cdir.file("templates/logo.png", PNG)
    cdir.file("templates/mail.html", """\
        <html><body><img src="logo.png" alt="Logo"><img src='logo.png'>
        <img src="https://cdn.acme.example/x.png"><img src="data:image/gif;base64,R0lG">
        <p>{{ name }}</p></body></html>""")
    cdir.file("templates/mail.txt", "{{ name }}\n")
    cdir.csv([["email", "name"], ["zoe@example.org", "Zoë"]])
    cdir.yaml("""\
        name: t
        from: news@acme.example
        subject: Hi
        recipients: people.csv
        templates: {html: ../templates/mail.html, text: ../templates/mail.txt}
        """)
    (built, msg), = cdir.messages()
    assert tree(msg) == ("multipart/alternative",
                         ["text/plain", ("multipart/related", ["text/html", "image/png"])])
    html = content(msg, "html")
    image = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    cid = image["Content-ID"].strip("<>")
    assert html.count(f'src="cid:{cid}"') == 1 and html.count(f"src='cid:{cid}'") == 1
    assert 'src="https://cdn.acme.example/x.png"' in html
    assert 'src="data:image/gif;base64,R0lG"' in html
    assert image.get_content() == PNG
    assert image.get_content_disposition() == "inline"


def test_missing_local_image_is_a_row_error(cdir: CampaignDir) -> None:
    cdir.file("templates/mail.html", '<img src="{{ photo }}">')
    cdir.csv([["email", "photo"], ["a@x.org", "missing.png"], ["b@x.org", "../../../etc/passwd"]])
    cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
              "templates: {html: ../templates/mail.html}\n")
    root = cdir.root
    assert cdir.errors() == [
        f"{root}/templates/mail.html, row 2: the image 'missing.png' does not "
        f"exist (looked for {root}/templates/missing.png)",
        f"{root}/templates/mail.html, row 3: the image path "
        f"'../../../etc/passwd' points outside {root}/templates and {root}/campaign; only files "
        "inside those may be used",
    ]


def test_attachment_with_non_ascii_name(cdir: CampaignDir) -> None:
    cdir.file("campaign/files/Rechnung März 2026 — Ünal.pdf", b"%PDF-1.4 fake")
    cdir.file("templates/mail.txt", "Anbei.\n")
    cdir.csv([["email", "file"], ["a@x.org", "files/Rechnung März 2026 — Ünal.pdf"]])
    cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
              "templates: {text: ../templates/mail.txt}\nattachments: ['{{ file }}']\n")
    (built, msg), = cdir.messages()
    assert tree(msg) == ("multipart/mixed", ["text/plain", "application/pdf"])
    attachment = next(msg.iter_attachments())
    assert attachment.get_filename() == "Rechnung März 2026 — Ünal.pdf"
    assert attachment.get_content() == b"%PDF-1.4 fake"
    assert b"filename*" in built.data and b"utf-8''Rechnung%20M%C3%A4rz" in built.data


def test_several_recipients_to_cc_bcc(cdir: CampaignDir) -> None:
    cdir.file("templates/mail.txt", "x\n")
    cdir.csv([["name", "email", "cc"],
              ['Carol, "CJ"', "carol@example.org", "a@example.org, Bob <b@example.org>"]])
    cdir.yaml("""\
        name: t
        from: "Acme <n@acme.example>"
        to: '"{{ name }} Jones, Jr." <{{ email }}>, boss@acme.example'
        cc: "{{ cc }}"
        bcc: "archive@acme.example, {{ email }}"
        subject: Hi
        recipients: people.csv
        templates: {text: ../templates/mail.txt}
        """)
    (built, msg), = cdir.messages()
    to = msg["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [
        ('Carol, "CJ" Jones, Jr.', "carol@example.org"), ("", "boss@acme.example")]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["a@example.org", "b@example.org"]
    assert msg.get_all("Bcc") is None and b"archive@" not in built.data
    assert built.envelope_to == ("carol@example.org", "boss@acme.example", "a@example.org",
                                 "b@example.org", "archive@acme.example")
    assert built.envelope_from == "n@acme.example"


def test_everything_together(cdir: CampaignDir) -> None:
    cdir.file("templates/logo.png", PNG)
    cdir.file("templates/mail.html", """\
        <!DOCTYPE html><html><head><style>h1 { color: red; }
        @media (max-width: 480px) { h1 { font-size: 12px; } }</style></head>
        <body><img src="logo.png"><h1>Hallo {{ name }}</h1>
        <a href="https://acme.example/u/{{ token }}">mehr</a></body></html>""")
    cdir.file("templates/mail.txt", "Hallo {{ name }}\n")
    cdir.file("campaign/doc.pdf", b"%PDF")
    cdir.xlsx([["email", "name", "token", "cc"], ["zoe@example.org", "Zoë Ünal", "a b", "c@x.org"]])
    cdir.yaml("""\
        name: t
        from: "Äcme <n@acme.example>"
        reply_to: help@acme.example
        to: "{{ name }} <{{ email }}>"
        cc: "{{ cc }}"
        bcc: archive@acme.example
        subject: "Hallo {{ name }}"
        recipients: people.xlsx
        templates: {html: ../templates/mail.html, text: ../templates/mail.txt}
        attachments: [doc.pdf]
        headers: {X-Campaign: "herbst-{{ name }}"}
        unsubscribe: "https://acme.example/u/{{ token|urlencode }}"
        """)
    (built, msg), = cdir.messages()
    assert tree(msg) == ("multipart/mixed", [
        ("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/png"])]),
        "application/pdf"])
    assert_standard_headers(msg)
    assert str(msg["From"]) == "Äcme <n@acme.example>"
    assert b"From: =?utf-8?b?w4RjbWU=?= <n@acme.example>" in built.data  # B: shorter here
    assert msg["To"].addresses[0].display_name == "Zoë Ünal"
    assert msg["Reply-To"] == "help@acme.example"
    assert msg["X-Campaign"] == "herbst-Zoë Ünal"
    assert msg["List-Unsubscribe"] == "<https://acme.example/u/a%20b>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = content(msg, "html")
    assert '<h1 style="color:red">Hallo Zoë Ünal</h1>' in html
    assert "@media (max-width: 480px)" in html
    assert 'href="https://acme.example/u/a b"' in html  # Jinja in href survives inlining
    assert built.envelope_to == ("zoe@example.org", "c@x.org", "archive@acme.example")
    assert all(len(line) <= 998 for line in built.data.split(b"\r\n"))
    assert built.data.split(b"\r\n\r\n")[0].isascii()


def test_from_with_several_mailboxes_needs_a_sender(basic) -> None:
    c = basic('from: "a@acme.example, b@acme.example"\n')
    assert c.errors() == [
        f"{c.folder}/campaign.yaml, line 6, row 2: `from` holds several addresses, so "
        "RFC 5322 requires a Sender; add `sender:` with the one address that actually sends"]
    c = basic('from: "a@acme.example, b@acme.example"\nsender: "Bot <bot@acme.example>"\n')
    (built, msg), = c.messages()
    assert [a.addr_spec for a in msg["From"].addresses] == ["a@acme.example", "b@acme.example"]
    assert msg["Sender"] == "Bot <bot@acme.example>"
    assert built.envelope_from == "bot@acme.example"


def test_sender_equal_to_the_only_from_is_dropped(basic) -> None:
    c = basic("sender: NEWS@acme.example\nfrom: news@acme.example\n")
    (built, msg), = c.messages()
    assert msg.get_all("Sender") is None


def test_empty_optional_fields_give_no_header(basic) -> None:
    c = basic('cc: "{{ cc }}"\nreply_to: "{{ cc }}"\n',
              rows=[["email", "name", "cc"], ["a@x.org", "A", ""]])
    (built, msg), = c.messages()
    assert msg.get_all("Cc") is None and msg.get_all("Reply-To") is None


def test_message_ids_are_unique(basic) -> None:
    c = basic(rows=[["email", "name"], *[[f"p{i}@x.org", "P"] for i in range(20)]])
    ids = {msg["Message-ID"] for _, msg in c.messages()}
    assert len(ids) == 20


def test_non_ascii_local_part_is_sent_as_smtputf8(basic) -> None:
    c = basic(rows=[["email", "name"], ["zoë@bücher.example", "Zoë"]])
    (built, msg), = c.messages()
    assert built.smtputf8
    assert msg["To"].addresses[0].addr_spec == "zoë@xn--bcher-kva.example"
    assert built.envelope_to == ("zoë@xn--bcher-kva.example",)


def test_long_lines_are_encoded(basic) -> None:
    c = basic(html="<p>" + "word " * 400 + "{{ name }}</p>", text="x" * 2000 + "\n")
    (built, msg), = c.messages()
    assert max(len(line) for line in built.data.split(b"\r\n")) <= 78
    assert content(msg, "plain") == "x" * 2000 + "\n"


def test_parse_back_is_unchanged_by_a_round_trip(basic) -> None:
    (built, msg), = basic().messages()
    assert parse(msg.as_bytes()).get_body(("html",)).get_content() == \
        content(msg, "html")


def rfc2047_decoded(data: bytes, name: str) -> str:
    """A header as RFC 2047 6.2 reads it (white space between encoded words dropped)."""
    import email as email_module
    from email.header import decode_header, make_header

    raw = email_module.message_from_bytes(data, policy=email_module.policy.compat32)[name]
    return str(make_header(decode_header(re.sub(r"\r?\n[ \t]", " ", str(raw)))))


@pytest.mark.parametrize("seed", range(3))
def test_long_non_ascii_names_and_subjects_keep_every_space(basic, seed: int) -> None:
    import random

    words = ["Jørgensen", "Müller", "Ærø", "Østergård", "Kierkegård", "ÉcoleNormale", "van",
             "de", "(y)", "[x]", "李小龙", "a" * 40, "Zoë,", '"Q"']
    rng = random.Random(seed)
    rows = [["email", "name"]]
    names = []
    for i in range(60):
        name = " ".join(rng.choice(words) for _ in range(rng.randint(1, 16)))
        names.append(name)
        rows.append([f"p{i}@example.org", name])
    c = basic('to: "{{ name }} <{{ email }}>, boss@acme.example"\nsubject: "{{ name }}"\n',
              html=None, text="x\n", rows=rows)
    for (built, msg), name in zip(c.messages(), names, strict=True):
        assert rfc2047_decoded(built.data, "Subject") == name
        if name.isascii():  # a quoted string, which the email package reads correctly
            assert msg["To"].addresses[0].display_name == name
        else:
            assert rfc2047_decoded(built.data, "To") == (
                f"{name} <{built.envelope_to[0]}>, boss@acme.example")
        assert [a.addr_spec for a in msg["To"].addresses] == [built.envelope_to[0],
                                                              "boss@acme.example"]
        assert max(len(line) for line in built.data.split(b"\r\n")) <= 78
        assert not msg.defects


def test_unsubscribe_https_and_mailto_with_list_id(basic) -> None:
    c = basic('unsubscribe: ["https://acme.example/u/{{ name|urlencode }}", '
              '"mailto:leave@acme.example?subject=leave-{{ name|urlencode }}"]\n'
              'list_id: "Acme News <news.acme.example>"\n',
              html="<a href='{{ unsubscribe_url }}'>leave</a>")
    (built, msg), = c.messages()
    assert msg["List-Unsubscribe"] == ("<https://acme.example/u/Zo%C3%AB>, "
                                       "<mailto:leave@acme.example?subject=leave-Zo%C3%AB>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] == "Acme News <news.acme.example>"
    assert "href='https://acme.example/u/Zo%C3%AB'" in content(msg, "html")


def test_mailto_only_unsubscribe_has_no_one_click_post(basic) -> None:
    c = basic('unsubscribe: "mailto:leave@acme.example"\n')
    (built, msg), = c.messages()
    assert msg["List-Unsubscribe"] == "<mailto:leave@acme.example>"
    assert msg.get("List-Unsubscribe-Post") is None


def test_check_warns_without_unsubscribe_unless_transactional(basic) -> None:
    from click.testing import CliRunner

    from mailmerge.cli import cli

    c = basic("transactional: false\n")
    result = CliRunner().invoke(cli, ["check", str(c.folder / "campaign.yaml")])
    assert result.exit_code == 0
    assert result.output.startswith("Warning: no `unsubscribe:` link: Gmail and Yahoo junk or "
                                    "refuse bulk mail without one-click unsubscribe")
    c = basic("transactional: true\n")
    result = CliRunner().invoke(cli, ["check", str(c.folder / "campaign.yaml")])
    assert "Warning" not in result.output


@pytest.mark.parametrize("line, message", [
    ('list_id: "no dots"\n', "`list_id` 'no dots' is not like"),
    ("unsubscribe: [a, b, c]\n", "`unsubscribe` must be a link, or a list of an https link"),
    ("transactional: maybe\n", "`transactional` must be true or false, not 'maybe'"),
])
def test_deliverability_keys_are_checked(basic, line: str, message: str) -> None:
    from mailmerge import ConfigError, load_campaign

    c = basic(line)
    with pytest.raises(ConfigError) as info:
        load_campaign(c.folder / "campaign.yaml")
    assert message in str(info.value)


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 114, 1000, 57 * 1024, 57 * 1024 + 1,
                                  300_001])
def test_a_file_part_is_byte_for_byte_what_the_email_package_writes(size: int) -> None:
    import os

    from mailmerge.assets import Part
    from mailmerge.mime import file_part_bytes

    from .reference_message import POLICY, file_part

    for inline in (False, True):
        part = Part(os.urandom(size), "application", "pdf", "Rechnung für Zoë.pdf",
                    "abc@mailmerge" if inline else None)
        assert bytes(file_part_bytes(part, inline)) == file_part(part, inline).as_bytes(
            policy=POLICY)


def test_file_caches_hold_a_bounded_number_of_bytes() -> None:
    from mailmerge.assets import SizedCache

    cache: SizedCache[int, bytes] = SizedCache(1000, len)
    for key in range(100):  # a different 300-byte file on every row
        assert cache.put(key, bytes(300)) == bytes(300)
        assert cache.held <= 1000
    assert cache.get(99) is not None and cache.get(0) is None
    cache.get(97)  # used again: kept over the older 98
    cache.put(100, bytes(300))
    assert cache.get(97) is not None and cache.get(98) is None
    cache.put(101, bytes(5000))  # larger than the budget: kept alone, as the newest
    assert cache.get(101) is not None and cache.held == 5000


def test_a_different_attachment_on_every_row_keeps_memory_flat(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailmerge import iter_messages, load_campaign
    from mailmerge.message import _FILE_PARTS

    budget = 2_000_000  # the caches' byte budget, small here: 30 files of 400 KB exceed it
    monkeypatch.setattr("mailmerge.assets.CACHE_BYTES", budget)
    monkeypatch.setattr(_FILE_PARTS, "budget", budget)
    for index in range(30):
        (cdir.folder / f"{index}.bin").write_bytes(bytes([index]) * 400_000)
    (cdir.folder / "mail.txt").write_text("hi\n")
    cdir.csv([["email", "file"], *[[f"p{i}@x.org", f"{i}.bin"] for i in range(30)]])
    cdir.yaml('name: t\nfrom: a@x.org\nto: "{{ email }}"\nsubject: s\ntransactional: true\n'
              'templates: {text: mail.txt}\nrecipients: people.csv\n'
              'attachments: ["{{ file }}"]\n')
    held = []
    for outcome in iter_messages(load_campaign(cdir.folder / "campaign.yaml")):
        assert outcome.built is not None, [str(e) for e in outcome.errors]
        attachment = parse(outcome.built.data).get_payload()[1].get_content()
        assert attachment == bytes([outcome.row - 2]) * 400_000
        held.append(_FILE_PARTS.held)
    assert max(held) <= budget and len(held) == 30


def test_each_message_has_its_own_header_lines_however_addresses_are_reused(basic) -> None:
    """Header lines are cached for fields that repeat; a row's new addresses (whose objects
    may take the identity of freed ones) must never get another row's line."""
    rows = [["email", "name"]] + [[f"p{i}@example.org", f"Name {i}"] for i in range(300)]
    c = basic('to: "{{ name }} <{{ email }}>"\nreply_to: "Help <help@acme.example>"\n'
              "headers: {X-Campaign: spring}\n", rows=rows)
    seen = set()
    for index, (_built, msg) in enumerate(c.messages()):
        assert msg["To"].addresses[0].addr_spec == f"p{index}@example.org"
        assert msg["To"].addresses[0].display_name == f"Name {index}"
        assert msg["Reply-To"] == "Help <help@acme.example>" and msg["X-Campaign"] == "spring"
        seen.add(msg["Message-ID"])
    assert len(seen) == 300
