"""Pre-flight warnings: what makes a correct message fail in the inbox.

A message can render without an error and still be clipped by Gmail, refused for its
size, carry a placeholder link, hide its unsubscribe link in a header, or say one thing
in HTML and another in text. :class:`Inspector` looks at each rendered message and
returns :class:`Finding` values; ``check`` (and ``send`` before it asks) groups them by
what they say and lists the rows. None stops a run; ``check --strict`` fails on them.

Per row the work is a few regular-expression scans: the tags that matter (``<a>``,
``<img>``, ``<html>``, ``<title>``) are pulled out and judged once per distinct set of
them, which most rows share.
"""

from __future__ import annotations

import enum
import functools
import html as html_module
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .assets import Part
from .campaign import placeholder_name
from .pagescan import TEMPLATE_MARK, Page, tag_matches
from .render import Rendered

GMAIL_CLIP_BYTES = 102 * 1024  # Gmail shows "[Message clipped]" past about this much HTML
CLIP_WARN_BYTES = 90 * 1024
MESSAGE_WARN_BYTES = 10 * 1024 * 1024  # encoded; many servers refuse 10 to 25 MB
IMAGE_WARN_BYTES = 1024 * 1024
DIVERGENCE_ROWS = 10  # rows on which text and HTML are compared: it is the templates' doing
MIN_OVERLAP = 0.5  # of one part's distinct words found in the other
_CACHE_LIMIT = 4096  # judged tags kept; most rows share all but a link or two

_ATTR = re.compile(r"""([\w:-]+)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_WORD = re.compile(r"[^\W\d_]{3,}")
_HIDDEN_BLOCK = re.compile(r"<(style|script|head)\b", re.I)  # its text is not shown
_BLOCK_END = {name: re.compile(rf"</{name}\s*>", re.I) for name in ("style", "script", "head")}
# Hosts no reader can reach: a placeholder left in (see campaign.placeholder_name) or a
# name or address of a local network.
_LOCAL_SUFFIXES = (".local", ".lan", ".internal", ".home.arpa")


class Kind(enum.Enum):
    """What a finding is about; each has one fix."""

    CLIPPED = "clipped"
    MESSAGE_SIZE = "message size"
    IMAGE_SIZE = "image size"
    LINK_SCHEME = "link scheme"
    LINK_HTTP = "plain http link"
    LINK_HOST = "placeholder host"
    LINK_MALFORMED = "malformed link"
    LINK_EMPTY = "empty link"
    TEMPLATE_SYNTAX = "template syntax"
    UNSUBSCRIBE_HTML = "unsubscribe not in HTML"
    UNSUBSCRIBE_TEXT = "unsubscribe not in text"
    NO_LANG = "no lang"
    NO_TITLE = "no title"
    NO_ALT = "image without alt"
    HTTP_IMAGE = "image over http"
    DIVERGENT = "text and HTML differ"
    PLACEHOLDER_ADDRESS = "placeholder address"
    NO_ONE_CLICK = "no one-click unsubscribe"


@dataclass(frozen=True)
class Finding:
    """One warning about one message. ``text`` and ``hint`` are the same on every row the
    finding applies to, so that rows group (and the groups stay few, however long the
    sheet); ``amount`` (bytes, or a share) and ``example`` (the link, host or image)
    vary."""

    kind: Kind
    text: str
    hint: str
    amount: float | None = None
    example: str | None = None


# The findings that say the same on every row are made once: a worker process sends each
# once per block of rows (pickle keeps one copy of an object it meets again).
_NO_TITLE = Finding(Kind.NO_TITLE, "the HTML has no <title>: some clients and screen readers "
                                   "show it", "add <title> with the subject")
_TEMPLATE_LEFT = Finding(Kind.TEMPLATE_SYNTAX, "the message holds template syntax ({{ or {%) "
                                               "that was not rendered: a cell holds it, or a "
                                               "template wrote it literally",
                         "check the cell, or the template's {% raw %} blocks")
_UNSUBSCRIBE_HTML = Finding(Kind.UNSUBSCRIBE_HTML, "the unsubscribe link is in the header "
                                                   "only, not in the HTML: readers look for it "
                                                   "in the message (CAN-SPAM asks for it there)",
                            'add <a href="{{ unsubscribe_url }}">Unsubscribe</a> to the HTML '
                            "template")
_UNSUBSCRIBE_TEXT = Finding(Kind.UNSUBSCRIBE_TEXT, "the unsubscribe link is not in the text "
                                                   "part",
                            "add {{ unsubscribe_url }} to the text template")


_NO_ONE_CLICK = Finding(Kind.NO_ONE_CLICK, "the message offers no one-click unsubscribe: "
                                          "RFC 8058 needs an https: link (an http: or "
                                          "mailto: link alone does not give it), and Gmail "
                                          "and Yahoo ask it of bulk mail",
                        "add an https:// link to `unsubscribe:` (a mailto: link may stay "
                        "beside it)")
# The fields whose addresses replies, bounces and unsubscribe requests go to
_SENDING_FIELDS = ("from", "sender", "reply_to", "return_path")


def _kb(size: float) -> str:
    return f"{size / 1024:,.0f} KB" if size < 1024 * 1024 else f"{size / 1048576:,.1f} MB"


def describe_amounts(kind: Kind, low: float, high: float) -> str:
    """The varying amount of a group of findings, as a reader wants it."""
    if kind is Kind.DIVERGENT:
        return f"{low:.0%}" if low == high else f"{low:.0%} to {high:.0%}"
    return _kb(low) if low == high else f"{_kb(low)} to {_kb(high)}"


def _attributes(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _ATTR.finditer(text):
        value = match.group(2) if match.group(2) is not None else (
            match.group(3) if match.group(3) is not None else match.group(4))
        found.setdefault(match.group(1).lower(), html_module.unescape(value or ""))
    return found


def _encoded_size(part: Part) -> int:
    return (len(part.data) + 2) // 3 * 4 * 78 // 76


@functools.lru_cache(maxsize=1024)
def _placeholder_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if placeholder_name(host) or host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        return True
    if not (":" in host or host.replace(".", "").isdigit()):
        return False  # a name, not an address
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local


# The parts of a link its findings depend on: what it starts with and its host.
_SCHEME_HOST = re.compile(r"([a-zA-Z][\w+.-]*):(?://([^/?#]*))?")
_SPACE = re.compile(r"\s")


def _link(href: str) -> Finding | None:
    """What is wrong with one link, if anything (the first thing found)."""
    url = href.strip()
    if not url or url == "#":
        return Finding(Kind.LINK_EMPTY, "a link goes nowhere (href is empty or \"#\")",
                       "give it a real address, or remove the link")
    if TEMPLATE_MARK.search(url):
        return None  # said once for the whole message
    if _SPACE.search(url) or url.count("(") != url.count(")") or \
            url.count("[") != url.count("]"):
        return Finding(Kind.LINK_MALFORMED, "a link has spaces or unbalanced brackets",
                       "encode the cell with |urlencode, or fix the address",
                       example=repr(url[:80]))
    match = _SCHEME_HOST.match(url)
    verdict = _link_verdict(match.group(1).lower() if match else "",
                            (match.group(2) or "") if match else "")
    if verdict is None:
        return None
    kind, host = verdict
    if kind is Kind.LINK_SCHEME:
        return Finding(kind, "a link is not https:, http:, mailto: or tel:",
                       "a relative or other link does not work in a mail client; write the "
                       "whole https:// address", example=repr(url[:80]))
    if kind is Kind.LINK_MALFORMED:
        return Finding(kind, "a link is not a valid address", "fix the address",
                       example=repr(url[:80]))
    if kind is Kind.LINK_HOST:
        return Finding(kind, "a link goes to a host no reader can reach (a placeholder left "
                             "in, or a local address)", "put in the real address",
                       example=host or "no host")
    return Finding(kind, "a link uses plain http:",
                   "use https:; some filters and readers distrust http links", example=host)


@functools.lru_cache(maxsize=1024)
def _link_verdict(scheme: str, authority: str) -> tuple[Kind, str] | None:
    """What a link's scheme and host say (most rows' links share them): the kind of
    finding and the host, or None."""
    if scheme not in ("https", "http", "mailto", "tel"):
        return Kind.LINK_SCHEME, ""
    if scheme in ("https", "http"):
        try:
            host = urlsplit(f"{scheme}://{authority}/").hostname or ""
        except ValueError:
            return Kind.LINK_MALFORMED, ""
        if not host or _placeholder_host(host):
            return Kind.LINK_HOST, host
        if scheme == "http":
            return Kind.LINK_HTTP, host
    return None


class Inspector:
    """Looks at the rendered messages of one campaign. Build once; :meth:`inspect` per row."""

    def __init__(self, html_template: bool, text_template: bool) -> None:
        # text and HTML from two templates of the user's can drift apart; a derived text
        # part or a Markdown body cannot
        self.compare_parts = html_template and text_template
        self._compared = 0
        self._by_tag: dict[str, tuple[Finding, ...]] = {}

    def inspect(self, rendered: Rendered, page: Page | None = None) -> tuple[Finding, ...]:
        """The findings of one rendered message, in a fixed order. ``page``: how its HTML
        was made (the renderer's ``last_page``), to find its tags piece by piece."""
        found: list[Finding] = []
        html, text = rendered.html, rendered.text or ""
        # a character is at most 4 bytes: most messages are measured without encoding them
        if html is not None:
            size = len(html) if 4 * len(html) < CLIP_WARN_BYTES else len(html.encode("utf-8"))
            if size >= CLIP_WARN_BYTES:
                found.append(Finding(
                    Kind.CLIPPED, "the HTML part is near or past the size at which Gmail "
                                  f"clips a message (about {_kb(GMAIL_CLIP_BYTES)}) and hides "
                                  "the rest, the unsubscribe link with it",
                    "shorten it, or move long content to a web page", size))
            found += self._tags(html, page)
        for part in rendered.images:
            if len(part.data) > IMAGE_WARN_BYTES:
                found.append(Finding(Kind.IMAGE_SIZE, "an embedded image is over 1 MB; mail "
                                     "clients load it slowly and count it against the message "
                                     "size", "resize or compress it (a few hundred KB is "
                                     "plenty)", len(part.data), part.filename))
        files = sum(_encoded_size(p) for p in (*rendered.images, *rendered.attachments))
        if files + 4 * (len(html or "") + len(text)) > MESSAGE_WARN_BYTES and (
                total := files + len((html or "").encode("utf-8")) + len(text.encode("utf-8"))
                ) > MESSAGE_WARN_BYTES:
            found.append(Finding(Kind.MESSAGE_SIZE, "the message is large once encoded; many "
                                 "servers refuse mail over 10 to 25 MB",
                                 "attach less, or link to the files instead", total))
        if TEMPLATE_MARK.search(text) or (html is not None and (
                page.template_mark() if page is not None and page.html is html
                else TEMPLATE_MARK.search(html))):
            found.append(_TEMPLATE_LEFT)
        if rendered.unsubscribe:
            found += self._unsubscribe(rendered.unsubscribe, html, text)
            if not any(link[:6].lower() == "https:" for link in rendered.unsubscribe):
                found.append(_NO_ONE_CLICK)
        found += _placeholder_addresses(rendered)
        if self.compare_parts and html is not None and self._compared < DIVERGENCE_ROWS:
            self._compared += 1
            overlap = _overlap(html, text)
            if overlap is not None and overlap < MIN_OVERLAP:
                found.append(Finding(Kind.DIVERGENT, "the text part and the HTML part say "
                                     "different things (share of words in common); spam "
                                     "filters score that (SpamAssassin's MPART_ALT_DIFF)",
                                     "bring the text template up to date with the HTML, or "
                                     "leave `text:` out to derive it from the HTML", overlap))
        return tuple(found)

    def _tags(self, html: str, page: Page | None) -> list[Finding]:
        """What the <html>, <title>, <a> and <img> tags say; each distinct tag judged once."""
        found: list[Finding] = []
        seen_html = has_title = False
        tags = page.tags() if page is not None and page.html is html else tag_matches(html)
        for tag in tags:
            name = tag.name.lower()
            if name == "title":
                has_title = bool(tag.after.strip())
                continue
            if name == "html":
                if seen_html:
                    continue
                seen_html = True
            judged = self._by_tag.get(tag.text)
            if judged is None:
                judged = _judge(name, tag.attributes)
                if len(self._by_tag) >= _CACHE_LIMIT:
                    self._by_tag.clear()
                self._by_tag[tag.text] = judged
            for finding in judged:
                if finding not in found:
                    found.append(finding)
        if seen_html and not has_title:
            found.append(_NO_TITLE)
        return found

    @staticmethod
    def _unsubscribe(links: tuple[str, ...], html: str | None,
                     text: str) -> list[Finding]:
        # looked for from the end, where the link stands in most messages: `in` reads
        # the 16 KB before it on every row
        found = []
        if html is not None and not any(html.rfind(link) >= 0 or
                                        html.rfind(html_module.escape(link)) >= 0
                                        for link in links):
            found.append(_UNSUBSCRIBE_HTML)
        if text and not any(text.rfind(link) >= 0 for link in links):
            found.append(_UNSUBSCRIBE_TEXT)
        return found


def _placeholder_addresses(rendered: Rendered) -> list[Finding]:
    """A finding for each address of From, Sender, Reply-To, the envelope sender and the
    unsubscribe links that is at a placeholder host (see :func:`_placeholder_host`), and
    for a List-Id under one."""
    found = []
    for key in _SENDING_FIELDS:
        value = getattr(rendered, f"{key}_" if key == "from" else key)
        addresses = value if isinstance(value, tuple) else (value,) if value else ()
        found += [_placeholder_address(f"{key}: {address.addr_spec}")
                  for address in addresses if _placeholder_host(address.domain)]
    for link in rendered.unsubscribe:
        scheme, _, rest = link.partition(":")
        try:
            host = (rest.partition("?")[0].rpartition("@")[2] if scheme.lower() == "mailto"
                    else urlsplit(link).hostname or "")
        except ValueError:  # not a valid address: the unsubscribe check says so
            continue
        if host and _placeholder_host(host):
            found.append(_placeholder_address(f"unsubscribe: {link[:60]}"))
    list_id = (rendered.list_id or "").rpartition("<")[2].rstrip(">")
    if list_id and _placeholder_host(list_id):  # a name under the sender's own domain
        found.append(_placeholder_address(f"list_id: {list_id}"))
    return found


def _placeholder_address(example: str) -> Finding:
    return Finding(Kind.PLACEHOLDER_ADDRESS,
                   "an address the message gives for replies, bounces or unsubscribing (or "
                   "its List-Id) is a placeholder (a reserved name such as example.org, .test "
                   "or .invalid, or a local one): nothing sent there arrives, and servers "
                   "distrust mail from such a domain", "put in your own in the campaign file",
                   example=example)


def _judge(name: str, attributes: str) -> tuple[Finding, ...]:
    """What one tag says (its name lowercased, its attributes as written)."""
    attrs = _attributes(attributes)
    if name == "html":
        return () if "lang" in attrs else (Finding(
            Kind.NO_LANG, "<html> has no lang attribute: screen readers may read the message "
                          "in the wrong language", 'add it, e.g. <html lang="en">'),)
    if name in ("a", "area"):
        finding = _link(attrs["href"]) if "href" in attrs else None
        return (finding,) if finding is not None else ()
    found = []
    src = attrs.get("src", "")
    if "alt" not in attrs:
        shown = src if not src.startswith("cid:") else "an embedded image"
        found.append(Finding(Kind.NO_ALT, "an image has no alt text",
                             'add alt="..." (alt="" for a decorative one): blocked images '
                             "and screen readers show it", example=shown[:60]))
    if src.lower().startswith("http:"):
        found.append(Finding(Kind.HTTP_IMAGE, "an image is loaded over plain http:",
                             "load it over https:; many clients block or warn about http "
                             "images", example=src[:60]))
    return tuple(found)


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}



def shown_text(html: str) -> str:
    """``html`` with each tag, and each style, script and head block, as one space: the
    text a reader sees. In linear time: a block kind or a ">" not found from one place is
    not looked for again (a lazy expression over the page retried at every "<" took time
    growing with the square of the unclosed starts)."""
    out: list[str] = []
    at, unclosed, no_end = 0, set(), False
    while (lt := html.find("<", at)) >= 0:
        out.append(html[at:lt])
        block = _HIDDEN_BLOCK.match(html, lt)
        name = block.group(1).lower() if block else ""
        if block and name not in unclosed:
            end = _BLOCK_END[name].search(html, block.end())
            if end is not None:
                out.append(" ")
                at = end.end()
                continue
            unclosed.add(name)
        gt = -1 if no_end else html.find(">", lt + 1)
        no_end = gt < 0
        if gt > lt + 1:  # a tag holds one character at least: "<>" is text
            out.append(" ")
            at = gt + 1
        else:
            out.append("<")
            at = lt + 1
    out.append(html[at:])
    return "".join(out)

def _overlap(html: str, text: str) -> float | None:
    """The smaller share of one part's distinct words that the other part has too; None
    when a part has too few words to say."""
    shown = _words(html_module.unescape(shown_text(html)))
    written = _words(text)
    if len(shown) < 10 or len(written) < 10:
        return None
    common = len(shown & written)
    return min(common / len(shown), common / len(written))
