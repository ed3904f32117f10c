"""Cheap forms of the character classes two dependencies compile when they are imported.

email_validator compiles four classes that run from U+0080 to U+10FFFF, and PyYAML's
reader one that runs past U+FFFF. For each, sre's optimiser walks the 65,536 code points
of the BMP in Python: 9 ms apiece, a fifth of the start-up of ``mailmerge check``. The
same sets written by what they leave out compile in well under a millisecond.

Imported first by the package, this module puts those cheap forms into re's own cache
under the libraries' pattern text, so that their ``re.compile`` is a look-up: the same
characters match (tests/test_recache.py compares every code point). Only speed rests on
it: should a library change a pattern, or re its cache, that pattern is compiled as
before.
"""

from __future__ import annotations

import re

_HIGH = "\u0080-\U0010ffff"  # every character above ASCII
# email_validator.rfc_constants: ATEXT, the characters of a dot-atom
_ATEXT = r"a-zA-Z0-9_!#\$%&\'\*\+\-/=\?\^`\{\|\}~"


def _outside(ascii_class: str) -> str:
    """``[<ascii_class><_HIGH>]`` written as the negation of the ASCII characters it
    leaves out."""
    inside = re.compile(f"[{ascii_class}]")
    runs: list[list[int]] = []  # the characters left out, as ranges
    for code in range(128):
        if inside.match(chr(code)):
            continue
        if runs and runs[-1][1] == code - 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return "[^" + "".join(f"\\x{a:02x}" if a == b else f"\\x{a:02x}-\\x{b:02x}"
                          for a, b in runs) + "]"


def cheap_forms() -> dict[str, str]:
    """Each pattern, as its library writes it, and the cheap form of the same set."""
    atext = _outside(_ATEXT)
    return {
        # email_validator.rfc_constants: ATEXT_INTL_DOT_RE, DOT_ATOM_TEXT_INTL,
        # ATEXT_HOSTNAME_INTL, QTEXT_INTL
        f"[.{_ATEXT}{_HIGH}]": _outside("." + _ATEXT),
        f"[{_ATEXT}{_HIGH}]+(?:\\.[{_ATEXT}{_HIGH}]+)*\\Z": f"{atext}+(?:\\.{atext}+)*\\Z",
        r"[a-zA-Z0-9\-\." + _HIGH + "]": _outside(r"a-zA-Z0-9\-\."),
        r"[\u0020-\u007E\u0080-\U0010FFFF]": _outside(r"\u0020-\u007E"),
        # yaml.reader.Reader.NON_PRINTABLE: what it leaves out, as a class of its own
        "[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]":
            "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]",
    }


def seed() -> None:
    """Put the cheap forms into re's cache, unless a pattern is compiled there already."""
    cache = getattr(re, "_cache", None)
    if not isinstance(cache, dict):  # a Python whose re keeps no such cache
        return
    for pattern, cheap in cheap_forms().items():
        cache.setdefault((str, pattern, 0), re.compile(cheap))


seed()
