"""The HTML part's neighbours: the text part derived from it, and links that must not be."""

from __future__ import annotations

import html as html_module
import re

from .assets import AssetProblem

_URL_ATTR = re.compile(r"""\b(href|src|action|formaction|background|xlink:href)\s*=\s*"""
                       r"""(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)
_SCRIPT_SCHEME = re.compile(r"^(javascript|vbscript|livescript):", re.I)
# A script URL's value spells "jav", "vbs" or "liv" first (after an optional quote), each
# letter as itself or as a character reference (which starts with "&"), with control
# characters (raw, or as references) before and between them. So a candidate is: "&", or
# the first letter then "&", or the first two then "&" or the third, controls allowed
# between. This finds every script URL, so the full scan (0.4 ms per 16 KB) runs only on
# the rare document that has a candidate after a URL attribute; the third letter keeps
# `style="line-height..."` (in most newsletters, on every tag) from being one. Case is
# ignored as the full scan ignores it.
_CANDIDATE = re.compile(r"""=\s*["']?[\x00-\x20]*(?:&"""
                        r"""|j[\x00-\x20]*(?:&|a[\x00-\x20]*[v&])"""
                        r"""|v[\x00-\x20]*(?:&|b[\x00-\x20]*[s&])"""
                        r"""|l[\x00-\x20]*(?:&|i[\x00-\x20]*[v&]))""", re.I)


# Names the attributes of _URL_ATTR end with ("formaction", "xlink:href" too).
_URL_ENDINGS = ("href", "src", "action", "background")
_HTML_SPACE = " \t\n\r\f"


def _url_candidate(html: str) -> bool:
    """Whether a candidate value stands after a URL attribute: a `style="line-height..."`
    or `class="link"` is no link, and scanning every attribute of 16 KB for those cost
    more than the rest of the row."""
    for match in _CANDIDATE.finditer(html):
        start = match.start()
        before = html[max(0, start - 64):start].rstrip(_HTML_SPACE)
        if (not before and start > 64) or before.lower().endswith(_URL_ENDINGS):
            return True
    return False


def refuse_script_links(html: str) -> None:
    """A javascript: URL in the HTML (most likely from a cell) is a row problem."""
    if not _url_candidate(html):
        return
    for match in _URL_ATTR.finditer(html):
        raw = match.group(2) or match.group(3) or match.group(4) or ""
        value = re.sub(r"[\x00-\x20]", "", html_module.unescape(raw))
        if _SCRIPT_SCHEME.match(value):
            raise AssetProblem(f"the HTML has a {value.split(':')[0].lower()}: link "
                               f"({match.group(1)}={raw[:60]!r}); mail must not carry scripts, "
                               "check the cell that fills it")


def html_to_text(html: str) -> str:
    """A plain-text alternative derived from the HTML, links shown as their URLs."""
    from inscriptis import get_text
    from inscriptis.model.config import ParserConfig

    text = get_text(html, ParserConfig(display_links=True))
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
