"""Rendering a template over a row's context that is already made, without copying it."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2.nodes import EvalContext
from jinja2.runtime import Context


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
    kept = _makers.get(id(template))
    if kept is not None and kept[0]() is template:
        ctx = kept[1](template, context)
    else:
        ctx = _keep_maker(template)(template, context)
    try:
        return list(template.root_render_func(ctx))
    except Exception:  # noqa: BLE001 - as render does: the template's line put in the traceback
        template.environment.handle_exception()


# The attributes of a jinja2 Context and of its EvalContext, in the order the versions this
# was written for set them (set in that order, they stay in the object's compact form,
# which the template's code reads fastest); a jinja2 that sets others makes its own.
_CONTEXT = ["parent", "vars", "environment", "eval_ctx", "exported_vars", "name",
            "globals_keys", "blocks"]
_EVAL_CONTEXT = ["environment", "autoescape", "volatile"]
_Maker = Callable[[jinja2.Template, dict[str, Any]], Context]
# by id(template), while it lives (a WeakKeyDictionary's look-up makes a weak reference
# each time: a fifth of the cost it saves)
_makers: dict[int, tuple[weakref.ref[jinja2.Template], _Maker]] = {}


def _keep_maker(template: jinja2.Template) -> _Maker:
    key = id(template)
    make = _context_maker(template)
    # the entry goes as the template does, before another object can take its id
    _makers[key] = (weakref.ref(template, lambda _: _makers.pop(key, None)), make)
    return make


def _jinjas(template: jinja2.Template, context: dict[str, Any]) -> Context:
    return template.new_context(context, shared=True)


def _context_maker(template: jinja2.Template) -> _Maker:
    """What ``template.new_context(context, shared=True)`` returns, made from what the
    first one it made holds: ``new_context`` works out again, for every render, what is
    the same for each (the template's autoescape setting, a set of its globals' names),
    which is most of the cost of a small template (a row renders five or more). What a
    render changes (its variables, exports, blocks, autoescape state) is new each time."""
    first = template.new_context({}, shared=True)
    if type(first) is not Context or type(first.eval_ctx) is not EvalContext or \
            list(vars(first)) != _CONTEXT or list(vars(first.eval_ctx)) != _EVAL_CONTEXT:
        return _jinjas
    environment, name, globals_keys = first.environment, first.name, first.globals_keys
    autoescape, blocks = first.eval_ctx.autoescape, template.blocks
    new_context, new_eval_context = Context.__new__, EvalContext.__new__

    def make(template: jinja2.Template, context: dict[str, Any]) -> Context:
        eval_ctx = new_eval_context(EvalContext)
        eval_ctx.environment = environment
        eval_ctx.autoescape = autoescape
        eval_ctx.volatile = False
        ctx = new_context(Context)
        ctx.parent = context
        ctx.vars = {}
        ctx.environment = environment
        ctx.eval_ctx = eval_ctx
        ctx.exported_vars = set()
        ctx.name = name
        ctx.globals_keys = globals_keys  # read only: jinja2 subtracts from it
        ctx.blocks = {block_name: [block] for block_name, block in blocks.items()}
        return ctx
    return make
