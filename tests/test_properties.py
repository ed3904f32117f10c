"""Property tests: arbitrary rows through render and build never give a broken message."""

from __future__ import annotations

import email
import email.policy
import os
import re
from email.header import decode_header, make_header

import markupsafe
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mailmerge import RowErrors, build_message, load_campaign
from mailmerge.addresses import parse_address_list
from mailmerge.render import Renderer
from mailmerge.sheet import Row

from .conftest import content, parse

CAMPAIGN = """\
name: prop
from: "Acme <news@acme.example>"
to: "{{ name }} <{{ email }}>"
cc: "{{ cc }}"
subject: "{{ topic }}"
headers: {X-Note: "{{ topic }}"}
recipients: people.csv
templates: {html: mail.html, text: mail.txt}
"""
# Problems a hostile row may legitimately cause; anything else is a bug.
EXPECTED = ("line break or control character", "is not a valid email address",
            "characters long; a header may hold", "a name or address may have at most",
            "the subject is empty", "the message has no recipient")

EXAMPLES = int(os.environ.get("MAILMERGE_PROPERTY_EXAMPLES", 300))
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
clean = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cf")), max_size=200)
long_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=900, max_size=1500)
local = st.from_regex(r"[a-z0-9]{1,10}([._+-][a-z0-9]{1,5}){0,2}", fullmatch=True)
addresses = st.builds(lambda u, d: f"{u}@{d}.example", local,
                      st.sampled_from(["acme", "xn--bcher-kva", "b-c"]))


def display_name(data: bytes, parsed: str) -> str:
    """The To display name as RFC 2047 6.2 reads it: white space between two encoded words
    is dropped. (CPython's parser keeps it inside a phrase; mail clients do not.)"""
    raw = email.message_from_bytes(data, policy=email.policy.compat32)["To"]
    phrase = re.sub(r"\r?\n[ \t]", " ", str(raw))
    phrase = phrase[:phrase.rindex("<")].strip() if "<" in phrase else ""
    if "=?" not in phrase:
        return parsed
    return str(make_header(decode_header(phrase)))


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    folder = tmp_path_factory.mktemp("prop")
    (folder / "campaign.yaml").write_text(CAMPAIGN)
    (folder / "mail.html").write_text("<html><body><p>{{ name }}</p><p>{{ body }}</p></body></html>")
    (folder / "mail.txt").write_text("{{ name }}\n{{ body }}\n")
    (folder / "people.csv").write_text("email,name,cc,topic,body\n")
    return Renderer(load_campaign(folder / "campaign.yaml"), ("email", "name", "cc", "topic", "body"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(email=st.one_of(addresses, addresses, addresses, text),
       name=st.one_of(clean, clean, clean, text, long_text),
       topic=st.one_of(clean.map("Re: ".__add__), text), body=st.one_of(text, long_text),
       cc=st.one_of(st.just(""), addresses, st.lists(addresses, max_size=3).map(", ".join),
                    text))
def test_any_row_gives_a_clean_message_or_a_known_problem(renderer: Renderer, email: str,
                                                          name: str, topic: str, body: str,
                                                          cc: str) -> None:
    row = Row(2, {"email": email, "name": name, "cc": cc, "topic": topic, "body": body})
    try:
        rendered = renderer.render(row)
    except RowErrors as exc:
        for error in exc.errors:
            event("refused: " + next((t for t in EXPECTED if t in error.message), "?"))
            assert any(text in error.message for text in EXPECTED), str(error)
        return
    event("message built")
    built = build_message(rendered)
    msg = parse(built.data)
    assert not msg.defects and all(not part.defects for part in msg.walk())
    names = sorted(k.lower() for k in msg)
    expected = ["content-type", "date", "from", "message-id", "mime-version", "subject", "to",
                "x-note"] + (["cc"] if rendered.cc else [])
    assert names == sorted(expected)
    assert msg["Subject"] == topic.strip() == msg["X-Note"]
    (to,) = msg["To"].addresses
    assert display_name(built.data, to.display_name) == name.strip(" \t")
    assert to.addr_spec.lower() == email.lower() or to.domain.startswith("xn--")
    assert list(built.envelope_to) == list(dict.fromkeys(
        a.addr_spec for a in (*rendered.to, *rendered.cc)))
    assert all(len(line) <= 998 for line in built.data.split(b"\r\n"))
    plain = content(msg, "plain")
    html = content(msg, "html")
    normal = body.replace("\r\n", "\n").replace("\r", "\n")
    assert normal in plain
    assert str(markupsafe.escape(normal)) in html


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(email=addresses, name=clean, topic=clean.map("Re: ".__add__), body=st.one_of(text, long_text),
       cc=st.lists(addresses, max_size=3).map(", ".join))
def test_well_formed_rows_always_give_a_message(renderer: Renderer, email: str, name: str,
                                                topic: str, body: str, cc: str) -> None:
    row = Row(2, {"email": email, "name": name, "cc": cc, "topic": topic, "body": body})
    rendered = renderer.render(row)
    data = build_message(rendered).data
    msg = parse(data)
    assert not msg.defects and all(not part.defects for part in msg.walk())
    parsed = msg["To"].addresses[0].display_name
    assert display_name(data, parsed) == name.strip(" \t")
    assert msg["Subject"] == topic.strip()
    assert body.replace("\r\n", "\n").replace("\r", "\n") in content(msg, "plain")


# --- fast paths agree with the slow ones they stand in for ---------------------------------

local_part = st.text(st.sampled_from("aZ09.+-_!#'~é\"@ \\"), min_size=0, max_size=70)
domain = st.sampled_from(["example.org", "EXAMPLE.org", "b.test", "xn--bcher-kva.example",
                          "localhost", "a..b", "-x.example", "x" * 64 + ".example",
                          "bücher.example", "1.2.3.4", "[127.0.0.1]", "a.invalid", ""])


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(local=local_part, domain=domain)
def test_cached_address_check_agrees_with_email_validator(local: str, domain: str) -> None:
    from email_validator import EmailNotValidError, validate_email

    from mailmerge.addresses import AddressProblem, make_address

    addr = f"{local}@{domain}"
    try:
        valid = validate_email(addr, check_deliverability=False, allow_smtputf8=True,
                               test_environment=True)
        expected: tuple[str, str] | None = (valid.local_part, valid.ascii_domain)
    except EmailNotValidError:
        expected = None
    try:
        made = make_address("", addr, addr)
        got: tuple[str, str] | None = (made.username, made.domain)
    except AddressProblem:
        got = None
    assert got == expected


script_value = st.lists(st.sampled_from(
    ["javascript:", "vbscript:", "livescript:", "ja", "vb", "li", "j", "v", "l", "a", "b", "i",
     "vascript:", "script:", "logo.png", ":", "&#9;", "&#106;", "&Tab;", "&colon;", "&amp;",
     "&#97;", "&#X61", "&#98;", "&#105;", "&#118;", "&#x76;", "ne-height", "nk", "m",
     "\t", "\x00", " ", "\n", "J", "L", "V", "https://x"]), max_size=6).map("".join)


@settings(max_examples=EXAMPLES * 5, deadline=None)
@example(attr="href", space="", quote='"', value="j&#97;vascript:x")  # a letter as a reference
@example(attr="src", space=" ", quote="", value="l&#105;&#x76;escript:x")
@example(attr="href", space="", quote='"', value="line-height")
@given(attr=st.sampled_from(["href", "SRC", "action", "background", "xlink:href"]),
       space=st.sampled_from(["", " ", "\n"]), quote=st.sampled_from(['"', "'", ""]),
       value=script_value)
def test_script_link_prefilter_never_hides_a_script_link(attr: str, space: str, quote: str,
                                                          value: str) -> None:
    from mailmerge import htmlpart
    from mailmerge.assets import AssetProblem

    if quote == "" and any(c in value for c in " \t\n>"):
        value = value.replace(" ", "").replace("\t", "").replace("\n", "").replace(">", "")
    html = f'<p><a {attr}{space}={space}{quote}{value}{quote}>x</a></p>'
    full_scan_refuses = htmlpart.script_link(html) is not None
    try:
        htmlpart.refuse_script_links(html)
        refused = False
    except AssetProblem:
        refused = True
    assert refused == full_scan_refuses


@given(data=st.lists(st.sampled_from([b".", b"..", b"\r\n", b"\n", b"a", b"\r", b" ."]),
                     max_size=30).map(b"".join))
def test_dot_stuffing_doubles_exactly_the_dots_that_start_a_line(data: bytes) -> None:
    from mailmerge.sending.smtp import dot_stuff

    assert dot_stuff(data) == re.sub(rb"(?m)^\.", b"..", data)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list(" \t.=aZ9-_é中\x00\x7f\u2028")),
                        max_size=200), min_size=1, max_size=12),
       st.booleans())
def test_quoted_printable_line_by_line_is_binascii_on_the_whole(lines: list[str],
                                                                  again: bool) -> None:
    """Encoded a line at a time (each distinct line once), the text part is byte for byte
    what binascii makes of it whole: trailing white space, a lone dot, '=', long lines."""
    import binascii

    from mailmerge.message import quoted_printable

    data = ("\n".join(lines) + "\n").encode("utf-8")
    whole = binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")
    assert quoted_printable(data) == whole
    if again:  # from the cache of lines
        assert quoted_printable(data) == whole


def _reference_address_list(text: str, values: list[str]) -> list[str]:
    """The address parser as it was before it worked out each field's items once:
    the values put back into each item's text by a regular expression."""
    from mailmerge.addresses import (
        _TOKEN,
        AddressProblem,
        _check_text,
        _split_top_level,
        _unquote,
        make_address,
    )

    def substitute(part: str) -> tuple[str, str | None]:
        used: list[str] = []

        def put(match: re.Match[str]) -> str:
            used.append(values[int(match.group(1))])
            return used[-1]

        return _TOKEN.sub(put, part), used[-1] if used else None

    result = []
    for raw_item in _split_top_level(text):
        item = raw_item.strip()
        if not item:
            continue
        whole = _TOKEN.fullmatch(item)
        if whole:
            value = values[int(whole.group(1))]
            _check_text(value, value)
            try:
                result += [str(a) for a in parse_address_list(value)]
            except AddressProblem as exc:
                raise AddressProblem(str(exc), value) from None
            continue
        if item.endswith(">") and "<" in item:
            cut = item.rindex("<")
            name, name_source = substitute(_unquote(item[:cut]))
            addr, addr_source = substitute(item[cut + 1:-1])
            _check_text(name, name_source)
            result.append(str(make_address(name.strip(" \t"), addr.strip(), addr_source)))
        else:
            addr, addr_source = substitute(item)
            if addr.strip():
                result.append(str(make_address("", addr.strip(), addr_source)))
    return result


address_piece = st.sampled_from([",", '"', "<", ">", " ", "\\", "{", "}", "{0}", "a", "@",
                                 "x.org", "Zoë", "\n", "b@y.org", "\xa0", "\t"])


@settings(max_examples=EXAMPLES * 2, deadline=None)
@example(text="\ue0000\ue001 {x} <\ue0001\ue001>", values=["Zo{1}ë", "z@x.org", ""])
@example(text="\ue0000\ue001 <\ue0001\ue001>", values=["Zoë\xa0", "z@x.org", ""])
@given(text=st.lists(st.one_of(address_piece, st.integers(0, 2).map(
           lambda i: f"\ue000{i}\ue001")), max_size=10).map("".join),
       values=st.lists(st.lists(address_piece, max_size=6).map("".join), min_size=3,
                       max_size=3))
def test_address_lists_are_parsed_as_the_reference_parses_them(text: str,
                                                                values: list[str]) -> None:
    from mailmerge.addresses import AddressProblem

    def outcome(parse: object) -> object:
        try:
            return parse()  # type: ignore[operator]
        except AddressProblem as exc:
            return ("problem", str(exc), exc.value)

    assert outcome(lambda: [str(a) for a in parse_address_list(text, values)]) == \
        outcome(lambda: _reference_address_list(text, values))
