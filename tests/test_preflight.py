"""Pre-flight warnings: one campaign per warning that triggers it, and clean campaigns that
trigger none (the shipped ones and both starters)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmerge import check_campaign, load_campaign
from mailmerge.cli import cli
from mailmerge.preflight import Kind

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "campaigns").glob("*.yaml"))
GOOD = ('<!DOCTYPE html><html lang="en"><head><title>Hi</title></head><body>'
        '<p>Hello {{ name }}, see <a href="https://acme.example/news">the news</a>.</p>'
        "{BODY}</body></html>")
WORDS = ("Our autumn letter tells you about the harvest festival, the new opening hours "
         "of the shop and the team that looks after the cheese counter every day.")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def html_with(body: str) -> str:
    return GOOD.replace("{BODY}", body)


BIG = "x" * 1_500_000
CASES = [
    pytest.param(Kind.CLIPPED, {"html": html_with("<p>" + "long text " * 9500 + "</p>")},
                 "Gmail clips a message", id="clipped"),
    pytest.param(Kind.MESSAGE_SIZE, {"html": html_with(""), "files": {"big.bin": 8_000_000},
                                         "extra": 'attachments: ["big.bin"]\n'},
                 "the message is large once encoded", id="message-size"),
    pytest.param(Kind.IMAGE_SIZE, {"html": html_with('<img src="photo.png" alt="photo">'),
                                       "files": {"templates/photo.png": 1_200_000}},
                 "an embedded image is over 1 MB; mail clients load it slowly and count it against the message size (photo.png) (1.1 MB)", id="image-size"),
    pytest.param(Kind.LINK_SCHEME, {"html": html_with('<a href="javascrip:void">x</a>'
                                                       '<a href="news.html">y</a>')},
                 "a link is not https:, http:, mailto: or tel:", id="scheme"),
    pytest.param(Kind.LINK_HTTP, {"html": html_with('<a href="http://acme.example/">x</a>')},
                 "a link uses plain http: (acme.example)", id="http"),
    pytest.param(Kind.LINK_HOST, {"html": html_with('<a href="https://localhost:8000/a">x</a>'
                                                     '<a href="https://192.168.1.4/">y</a>'
                                                     '<a href="https://www.example.com/">z'
                                                     '</a><a href="https://shop.test/">w</a>'
                                                     '<a href="https://nas.local/">v</a>')},
                 "a link goes to a host no reader can reach (a placeholder left in, or a local address) (localhost, 192.168.1.4, www.example.com, ...)", id="placeholder-host"),
    pytest.param(Kind.LINK_MALFORMED, {"html": html_with(
        '<a href="https://acme.example/{{ name }}">x</a>')}, "a link has spaces or unbalanced "
        "brackets ('https://acme.example/Zoë Ünal')", id="malformed"),
    pytest.param(Kind.LINK_EMPTY, {"html": html_with('<a href="#">top</a>')},
                 "a link goes nowhere", id="empty-link"),
    pytest.param(Kind.TEMPLATE_SYNTAX, {"html": html_with("<p>{{ note }}</p>"),
                                            "rows": [["email", "name", "note"],
                                                  ["z@example.org", "Zoë Ünal", "{{ oops }}"]]},
                 "the message holds template syntax", id="template-syntax"),
    pytest.param(Kind.UNSUBSCRIBE_HTML, {"html": html_with(""), "text": "Hello {{ name }}\n",
                                             "extra": 'unsubscribe: "https://acme.example/u/'
                                                   '{{ name|urlencode }}"\n'},
                 "the unsubscribe link is in the header only, not in the HTML", id="unsub"),
    pytest.param(Kind.NO_LANG, {"html": GOOD.replace(' lang="en"', "").replace("{BODY}", "")},
                 "<html> has no lang attribute", id="lang"),
    pytest.param(Kind.NO_TITLE, {"html": GOOD.replace("<title>Hi</title>", "")
                                     .replace("{BODY}", "")}, "the HTML has no <title>",
                 id="title"),
    pytest.param(Kind.NO_ALT, {"html": html_with('<img src="https://acme.example/a.png">')},
                 "an image has no alt text (https://acme.example/a.png)", id="alt"),
    pytest.param(Kind.HTTP_IMAGE, {"html": html_with(
        '<img src="http://acme.example/a.png" alt="">')},
                 "an image is loaded over plain http:", id="http-image"),
    pytest.param(Kind.DIVERGENT, {"html": html_with(f"<p>{WORDS}</p>"),
                                      "text": "Dear customer, please find attached the invoice "
                                           "for last quarter's consulting services rendered, "
                                           "payable within thirty days by bank transfer.\n"},
                 "the text part and the HTML part say different things", id="divergent"),
]


@pytest.mark.parametrize(("kind", "setup", "expected"), CASES)
def test_each_warning_is_found_with_its_rows(basic, kind: Kind, setup: dict[str, object],
                                             expected: str) -> None:
    rows = setup.get("rows") or [["email", "name"], ["z@example.org", "Zoë Ünal"],
                                 ["b@example.org", "Bob"]]
    c = basic(str(setup.get("extra", "")), html=str(setup["html"]),
              text=setup.get("text"), rows=rows)  # type: ignore[arg-type]
    for name, size in dict(setup.get("files", {})).items():  # type: ignore[call-overload]
        target = c.root / (name if "/" in name else f"campaign/{name}")
        target.write_bytes(os.urandom(size))
    report = check_campaign(load_campaign(c.folder / "campaign.yaml"))
    assert not report.problems, [str(e) for o in report.problems for e in o.errors]
    kinds = {group.finding.kind for group in report.warnings.values()}
    assert kind in kinds, [g.describe() for g in report.warnings.values()]
    lines = [g.describe() for g in report.warnings.values() if g.finding.kind is kind]
    assert any(expected in line for line in lines), lines
    result = run("check", str(c.folder / "campaign.yaml"))
    assert result.exit_code == 0, result.output  # warnings do not fail a check
    assert "Before you send (pre-flight warnings):" in result.output
    strict = run("check", str(c.folder / "campaign.yaml"), "--strict")
    assert strict.exit_code == 1


def test_placeholder_hosts_are_each_found_and_grouped_in_one_line(basic) -> None:
    c = basic(html=html_with('<a href="https://localhost:8000/a">x</a><a href="https://192.168.'
                             '1.4/">y</a><a href="https://www.example.com/">z</a><a href="http'
                             's://shop.test/">w</a><a href="https://nas.local/">v</a><a href='
                             '"https://[::1]/">u</a>'),
              rows=[["email", "name"], ["a@example.org", "A"], ["b@example.org", "B"]])
    report = check_campaign(load_campaign(c.folder / "campaign.yaml"))
    group, = [g for g in report.warnings.values() if g.finding.kind is Kind.LINK_HOST]
    assert group.rows == 2 and group.spans == [[2, 3]]
    assert group.examples == ["localhost", "192.168.1.4", "www.example.com", "shop.test"]
    assert group.describe().startswith(
        "rows 2-3: a link goes to a host no reader can reach (a placeholder left in, or a "
        "local address) (localhost, 192.168.1.4, www.example.com, ...); put in")


def test_a_finding_on_every_other_row_of_a_long_sheet_stays_one_short_line(basic) -> None:
    rows = [["email", "name", "url"]] + [
        [f"p{i}@example.org", f"P{i}", f"https://acme.example/{i} x" if i % 2 else
         "https://acme.example/ok"] for i in range(400)]
    c = basic(html=html_with('<a href="{{ url }}">x</a>'), rows=rows)
    report = check_campaign(load_campaign(c.folder / "campaign.yaml"))
    group, = report.warnings.values()
    assert group.rows == 200 and len(group.spans) == 8 and len(group.examples) <= 4
    assert group.describe().startswith("rows 3, 5, 7, 9, 11, 13, 15, 17, ... (200 rows): a link "
                                       "has spaces or unbalanced brackets "
                                       "('https://acme.example/1 x', 'https://acme.example/3 x',"
                                       " 'https://acme.example/5 x', ...); encode")


def test_rows_and_sizes_are_grouped_in_one_line(basic) -> None:
    rows = [["email", "name", "filler"]] + [
        [f"p{i}@example.org", f"P{i}", "word " * (19_000 + 200 * i)] for i in range(4)]
    c = basic(html=html_with("<p>{{ filler }}</p>"), rows=rows)
    result = run("check", str(c.folder / "campaign.yaml"))
    clipped = [line for line in result.output.splitlines() if "Gmail clips" in line]
    assert len(clipped) == 1
    assert clipped[0].startswith("  rows 2-5: the HTML part is near or past the size")
    assert "(93 KB to 96 KB); shorten it" in clipped[0]
    assert result.output.endswith("4 rows: 4 messages ok, 1 warning.\n")


def test_a_derived_text_part_and_an_unsubscribe_link_in_the_body_warn_nothing(basic) -> None:
    c = basic('unsubscribe: "https://acme.example/u/{{ name|urlencode }}"\n',
              html=html_with('<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'))
    result = run("check", str(c.folder / "campaign.yaml"), "--strict")
    assert result.exit_code == 0, result.output
    assert "Before you send" not in result.output


@pytest.mark.parametrize("campaign", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_the_shipped_campaigns_warn_nothing(campaign: Path) -> None:
    result = run("check", str(campaign), "--strict")
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.output and "Before you send" not in result.output


@pytest.mark.parametrize("markdown", [False, True], ids=["html", "markdown"])
def test_an_untouched_starter_fails_a_strict_check_until_its_placeholders_are_yours(
        tmp_path: Path, markdown: bool) -> None:
    assert run("init", str(tmp_path / "s"), *(["--markdown"] if markdown else [])
               ).exit_code == 0
    config = tmp_path / "s" / "campaign.yaml"
    result = run("check", str(config), "--strict")
    assert result.exit_code == 1
    assert result.output == (
        "Warning: `smtp.host` smtp.example.org is a placeholder: put in the SMTP server of "
        "your mail provider before you send\n"
        "Before you send (pre-flight warnings):\n"
        "  rows 2-4: the message offers no one-click unsubscribe: RFC 8058 needs an https: "
        "link (an http: or mailto: link alone does not give it), and Gmail and Yahoo ask it "
        "of bulk mail; add an https:// link to `unsubscribe:` (a mailto: link may stay "
        "beside it)\n"
        "  rows 2-4: an address the message gives for replies, bounces or unsubscribing (or "
        "its List-Id) is a placeholder (a reserved name such as example.org, .test or "
        ".invalid, or a local one): nothing sent there arrives, and servers distrust mail "
        "from such a domain (from: you@example.org, unsubscribe: mailto:you@example.org?"
        "subject=unsubscribe, list_id: news.example.org); put in your own in the campaign "
        "file\n"
        "3 rows: 3 messages ok, 2 warnings.\n")
    # made the user's own (the fictional company of the examples stands for it here)
    text = re.sub(r'unsubscribe: ".*"', 'unsubscribe: ["https://acme.example/u/{{ email|'
                  'urlencode }}", "mailto:you@acme.example"]', config.read_text())
    config.write_text(text.replace("example.org", "acme.example"))
    result = run("check", str(config), "--strict")
    assert result.exit_code == 0, result.output
    assert result.output == "3 rows: 3 messages ok.\n"


# (an address at .invalid or localhost is an error already: email_validator refuses it)
@pytest.mark.parametrize(("field", "host"), [
    *((field, host) for field in ("from", "reply_to", "return_path", "unsubscribe", "list_id")
      for host in ("example.com", "news.example.net", "shop.test")),
    ("unsubscribe", "x.invalid"), ("unsubscribe", "localhost")])
def test_a_placeholder_address_of_the_sender_is_a_warning(basic, field: str,
                                                          host: str) -> None:
    value = (f'["https://acme.example/u", "mailto:leave@{host}"]' if field == "unsubscribe"
             else f'"News <news.{host}>"' if field == "list_id" else f'"Acme <news@{host}>"')
    c = basic(f"{field}: {value}\n")
    report = check_campaign(load_campaign(c.folder / "campaign.yaml"))
    assert not report.problems
    groups = [g for g in report.warnings.values() if g.finding.kind is Kind.PLACEHOLDER_ADDRESS]
    assert [g.examples for g in groups] == [
        [f"unsubscribe: mailto:leave@{host}" if field == "unsubscribe" else
         f"list_id: news.{host}" if field == "list_id" else f"{field}: news@{host}"]]


def test_an_unsubscribe_link_over_http_offers_no_one_click_and_is_a_warning(basic) -> None:
    c = basic('unsubscribe: "http://acme.example/u/{{ name|urlencode }}"\n',
              html=html_with('<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'))
    report = check_campaign(load_campaign(c.folder / "campaign.yaml"))
    assert {g.finding.kind for g in report.warnings.values()} == {Kind.NO_ONE_CLICK,
                                                                  Kind.LINK_HTTP}
    c = basic('unsubscribe: ["https://acme.example/u", "mailto:u@acme.example"]\n',
              html=html_with('<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'))
    assert not check_campaign(load_campaign(c.folder / "campaign.yaml")).warnings


def test_check_spam_scores_the_first_rows_with_their_rules(basic) -> None:
    if shutil.which("spamassassin") is None:
        if os.environ.get("CI"):
            pytest.fail("SpamAssassin is missing; .ci/run installs the spamassassin package")
        pytest.skip("needs the spamassassin package")
    rows = [["email", "name"]] + [[f"p{i}@example.org", f"P{i}"] for i in range(5)]
    c = basic(html="<p>FREE MONEY!!! Click here {{ name }}</p>", rows=rows)
    result = run("check", str(c.folder / "campaign.yaml"), "--spam", "--spam-rows", "2")
    out = result.output
    assert "Spam score (SpamAssassin, local rules" in out
    assert "  row 2: " in out and "  row 3: " in out and "  row 4: " not in out
    assert re.search(r"^ +0\.0 HTML_MESSAGE +BODY: HTML included in message$", out, re.M)


def test_check_spam_without_spamassassin_says_how_to_install_it(basic, tmp_path: Path,
                                                                monkeypatch) -> None:
    c = basic()
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = run("check", str(c.folder / "campaign.yaml"), "--spam")
    assert result.exit_code == 2
    assert "`--spam` needs SpamAssassin, which is not installed here" in result.output
    assert "apt-get install spamassassin" in result.output
