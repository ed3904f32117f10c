"""Rendering a template over a row's context that is already made, without copying it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2


def row_context(globals: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """What every template of a row renders over: the environment's globals, then the
    row's values by column name (a column may hide a global), and ``row`` for all of them."""
    return {**globals, **values, "row": values}


def fill(template: jinja2.Template, context: dict[str, Any]) -> str:
    """``template.render(context)`` for a ``context`` made by :func:`row_context` from the
    template's own globals.

    ``render`` copies its argument, then copies it again under the globals, for every
    template; a row renders five or more (the addresses, the subject, the unsubscribe link,
    both bodies). jinja2 never writes into the dict a context is made over (a template's
    own assignments go to the context's ``vars``), so one dict serves them all.
    """
    return "".join(fill_pieces(template, context))


def fill_pieces(template: jinja2.Template, context: dict[str, Any]) -> list[str]:
    """What :func:`fill` joins: the pieces the template yields, its own text (the same
    string objects on every row) and the values it fills in."""
    ctx = template.new_context(context, shared=True)
    try:
        return list(template.root_render_func(ctx))
    except Exception:  # noqa: BLE001 - as render does: the template's line put in the traceback
        template.environment.handle_exception()
