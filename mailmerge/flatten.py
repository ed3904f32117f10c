"""A page made of a layout, as one template: the layout with the child's blocks written in.

Most newsletters put their page in a layout that the template extends. Jinja renders such
a page through the layout's blocks, and its CSS cannot be inlined once on either source
alone; it was inlined once for each shape of page (see pageinline). When the child only
fills the layout's blocks, the same page comes from one source: the layout's text with
each block's body taken from the child. That source is inlined once, as a one-file
template is (see css), and kept between runs.

Only the plain case is written out, where the two render alike by construction: the child
holds nothing but its ``{% extends "name" %}`` and its blocks; no block is nested,
scoped or required, or calls ``super()`` or ``self``; every block of the layout stands at
its top level (not in a loop, a condition or a macro, whose names a block would then see)
and the layout extends nothing itself. The blocks keep their tags, so each body is still
a block of its own, with a block's scope. Anything else gives None, and the page is made
as before. The renderer still compares the first rows with the page Jinja makes.
"""

from __future__ import annotations

import re

import jinja2
from jinja2 import nodes

_OPEN = re.compile(r"\{%([-+]?)\s*block\s+(\w+)\s*([-+]?)%\}")
_CLOSE = re.compile(r"\{%([-+]?)\s*endblock(?:\s+\w+)?\s*([-+]?)%\}")
_TAG = re.compile(r"\{%[-+]?\s*(end)?block\b")


class _Blocks:
    """The blocks of one source: the text of each one's body and its tags' trim marks,
    found in the text and checked against the parse."""

    def __init__(self, source: str, names: list[str]) -> None:
        self.source = source
        self.spans: dict[str, tuple[re.Match[str], re.Match[str]]] = {}  # in source order
        at = 0
        for name in names:
            opening = _OPEN.search(source, at)
            if opening is None or opening.group(2) != name:
                raise ValueError(name)
            closing = _CLOSE.search(source, opening.end())
            if closing is None:
                raise ValueError(name)
            self.spans[name] = (opening, closing)
            at = closing.end()
        if len(_TAG.findall(source)) != 2 * len(names):  # one in a comment or raw text
            raise ValueError("tags")

    def body(self, name: str) -> str:
        opening, closing = self.spans[name]
        return self.source[opening.end():closing.start()]


def flatten(env: jinja2.Environment, source: str) -> str | None:
    """The one template that makes the same page as ``source``, a template that extends
    a layout; None unless both are of the plain kind (see the module's docstring)."""
    if _has_raw(source) or env.block_start_string != "{%":
        return None
    try:
        child = env.parse(source)
        parent_name = _parent(child)
        if parent_name is None or env.loader is None:
            return None
        layout_source = env.loader.get_source(env, parent_name)[0]
        if _has_raw(layout_source):
            return None
        layout = env.parse(layout_source)
        if not _plain_layout(layout):
            return None
        child_blocks = [node for node in child.body if isinstance(node, nodes.Block)]
        if not all(map(_plain_block, child_blocks)):
            return None
        own = _Blocks(source, [block.name for block in child_blocks])
        outer = _Blocks(layout_source, [block.name for block in layout.find_all(nodes.Block)])
    except (jinja2.TemplateError, ValueError, OSError):
        return None
    pieces: list[str] = []
    at = 0
    for name, (opening, closing) in outer.spans.items():
        pieces.append(layout_source[at:opening.start()])
        if name in own.spans:
            inner_open, inner_close = own.spans[name]
            pieces.append(f"{{%{opening.group(1)} block {name} {inner_open.group(3)}%}}"
                          f"{own.body(name)}"
                          f"{{%{inner_close.group(1)} endblock {closing.group(2)}%}}")
        else:
            pieces.append(layout_source[opening.start():closing.end()])
        at = closing.end()
    pieces.append(layout_source[at:])
    return "".join(pieces)


def _has_raw(source: str) -> bool:
    """Whether ``source`` has a raw block, whose text may look like block tags."""
    return "{% raw" in source or "{%- raw" in source


def _names_super_or_self(node: nodes.Node) -> bool:
    return any(name.name in ("super", "self") for name in node.find_all(nodes.Name))


def _parent(child: nodes.Template) -> str | None:
    """The layout the child extends, when the child holds nothing but that and blocks."""
    parent = None
    for node in child.body:
        if isinstance(node, nodes.Extends) and parent is None:
            if not isinstance(node.template, nodes.Const) or not isinstance(
                    node.template.value, str):
                return None
            parent = node.template.value
        elif isinstance(node, nodes.Block):
            if parent is None:
                return None
        elif not (isinstance(node, nodes.Output) and all(
                isinstance(item, nodes.TemplateData) and not item.data.strip()
                for item in node.nodes)):
            return None
    return parent


def _plain_block(block: nodes.Block) -> bool:
    """A block that reads only its own body and the context: not nested, scoped or
    required, and no super() or self in it."""
    if block.scoped or getattr(block, "required", False) or block.find(nodes.Block):
        return False
    return not _names_super_or_self(block)


def _plain_layout(layout: nodes.Template) -> bool:
    """A layout that extends nothing and whose blocks all stand at its top level."""
    if layout.find(nodes.Extends) is not None:
        return False
    top = [node for node in layout.body if isinstance(node, nodes.Block)]
    every = list(layout.find_all(nodes.Block))
    if len(top) != len(every) or not all(map(_plain_block, top)):
        return False
    return not any(_names_super_or_self(node) for node in layout.body
                   if not isinstance(node, nodes.Block))
