"""Every message of every shipped campaign meets the 13 standards (tests/standards.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmerge import iter_messages, load_campaign

from .standards import standard_problems

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "campaigns").glob("*.yaml"))


@pytest.mark.parametrize("campaign", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_message_meets_the_standards(campaign: Path) -> None:
    ids = set()
    count = 0
    for outcome in iter_messages(load_campaign(campaign)):
        assert outcome.built is not None, outcome.errors
        assert standard_problems(outcome.built.data, outcome.built.smtputf8) == []
        ids.add(outcome.built.message_id)
        count += 1
    assert count and len(ids) == count  # Message-IDs are unique


def test_the_checker_catches_what_it_checks(basic) -> None:
    (built, _), = basic().messages()
    good = built.data
    assert standard_problems(good) == []
    broken = {
        "2 From headers, not one": good.replace(b"From: ", b"From: a@b.example\r\nFrom: ", 1),
        "0 Date headers, not one": good.replace(b"\r\nDate: ", b"\r\nX-Date: ", 1),
        "a Bcc header is on the wire": good.replace(b"\r\nSubject: ", b"\r\nBcc: x@y.org\r\nSubject: ", 1),
        "a line does not end in CRLF": good.replace(b"\r\nSubject: ", b"\nSubject: ", 1),
        "MIME-Version is missing": good.replace(b"MIME-Version: 1.0\r\n", b""),
        "the header block is not 7-bit": good.replace(b"Subject: ", "Subject: ï".encode(), 1),
        "an <img src> still points at a local file": good.replace(
            b"<body>", b'<body><img src=3D"logo.png">', 1),
    }
    for expected, data in broken.items():
        assert expected in " | ".join(standard_problems(data)), expected


def test_several_from_mailboxes_with_a_sender_meet_the_standards(basic) -> None:
    c = basic('from: "Ann <ann@acme.example>, Bob <bob@acme.example>"\n'
              'sender: "Bot <bot@acme.example>"\n')
    (built, _), = c.messages()
    assert standard_problems(built.data) == []
