"""The cheap forms of the dependencies' character classes match what the classes match."""

from __future__ import annotations

import re

import email_validator.rfc_constants as rfc
import pytest
import yaml.reader

from mailmerge import recache

# every code point, surrogates too: a class matches the same set when removing its
# matches from this leaves the same characters
EVERY = "".join(map(chr, range(0x110000)))
FORMS = recache.cheap_forms()
DOT_ATOM = next(p for p in FORMS if p.endswith("\\Z"))


def _compiled_afresh(pattern: str) -> re.Pattern[str]:
    # DOTALL changes nothing in a class, but is another key of re's cache: a real compile
    return re.compile(pattern, re.DOTALL)


@pytest.mark.parametrize("pattern", [p for p in FORMS if p != DOT_ATOM],
                         ids=lambda p: ascii(p)[:30])
def test_a_cheap_class_matches_the_same_characters(pattern: str) -> None:
    original, cheap = _compiled_afresh(pattern), re.compile(FORMS[pattern])
    assert cheap.pattern != pattern
    assert original.sub("", EVERY) == cheap.sub("", EVERY)


def test_the_cheap_dot_atom_is_the_same_pattern_over_the_same_class() -> None:
    atext = recache._outside(recache._ATEXT)
    assert (_compiled_afresh(f"[{recache._ATEXT}{recache._HIGH}]").sub("", EVERY)
            == re.compile(atext).sub("", EVERY))
    assert FORMS[DOT_ATOM] == f"{atext}+(?:\\.{atext}+)*\\Z"
    original, cheap = _compiled_afresh(DOT_ATOM), re.compile(FORMS[DOT_ATOM])
    for text in ("a", "a.b", "zoë.ünal", "a..b", ".a", "a.", "a b", "a@b", "日本.語",
                 "a\u2028b", "x" * 70, "", "a.b\n"):
        assert bool(original.match(text)) == bool(cheap.match(text)), text


def test_the_libraries_find_the_cheap_forms() -> None:
    """Fails when email_validator or PyYAML changes a pattern: the cheap form then goes
    unused (start-up is slower, nothing else); bring cheap_forms up to date."""
    compiled = [rfc.ATEXT_INTL_DOT_RE, rfc.DOT_ATOM_TEXT_INTL, rfc.ATEXT_HOSTNAME_INTL,
                rfc.QTEXT_INTL, yaml.reader.Reader.NON_PRINTABLE]
    assert [p.pattern for p in compiled] == list(FORMS.values())


def test_seeding_keeps_a_pattern_compiled_before() -> None:
    pattern = next(iter(FORMS))
    before = re.compile(pattern)
    recache.seed()
    assert re.compile(pattern) is before
