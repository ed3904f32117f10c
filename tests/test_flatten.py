"""A page made of a layout, written out as one template: the same page as Jinja makes
through the layout's blocks, or nothing where that is not certain."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmerge import iter_messages, load_campaign
from mailmerge.css import canonical_html
from mailmerge.flatten import flatten
from mailmerge.render import make_environment

from .conftest import CampaignDir
from .test_pageinline import each_inlined, run
from .test_pagescan import EXAMPLES

LAYOUT = ("<!DOCTYPE html><html><head><title>{% block title %}News{% endblock %}</title>"
          "<style>p { color: #333333; } .note b { color: red; }</style></head>\n<body>\n"
          "  {%- block body %}<p>default</p>{% endblock -%}\n  <p>{{ footer }}</p>\n"
          "</body></html>\n")


def env_with(templates: dict[str, str]) -> jinja2.Environment:
    env = make_environment([Path(".")])
    loader = env.loader.loaders[0]  # type: ignore[attr-defined]
    loader.mapping.update(templates)
    return env


CONTEXT = {"name": "Zoë & <Co>", "items": ["a", "b"], "vip": True, "footer": "Bye"}


@pytest.mark.parametrize("child", [
    '{% extends "layout.html" %}{% block body %}<p>Hi {{ name }}</p>{% endblock %}',
    '{% extends "layout.html" %}\n{% block body -%}\n  <p>Hi {{ name }}</p>\n{%- endblock %}\n',
    '{% extends "layout.html" %}{% block title %}For {{ name }}{% endblock %}'
    '{% block body %}{% for i in items %}<p class="note">{{ loop.index }} <b>{{ i }}</b></p>'
    '{% endfor %}{% if vip %}<p>VIP</p>{% endif %}{% set local = 1 %}{{ local }}{% endblock %}',
    '{% extends "layout.html" %}{# just a comment #}{% block unused %}x{% endblock %}',
    '{% extends "layout.html" %}{% block body %}{% endblock %}',
])
def test_a_child_that_only_fills_blocks_gives_the_page_jinja_makes(child: str) -> None:
    env = env_with({"layout.html": LAYOUT, "mail.html": child})
    flat = flatten(env, child)
    assert flat is not None and "extends" not in flat
    env.loader.loaders[0].mapping["flat.html"] = flat  # type: ignore[attr-defined]
    assert env.get_template("flat.html").render(CONTEXT) == \
        env.get_template("mail.html").render(CONTEXT)


@pytest.mark.parametrize("child, layout", [
    ('{% extends "layout.html" %}{% block body %}{{ super() }}x{% endblock %}', LAYOUT),
    ('{% extends "layout.html" %}{% block body %}{{ self.title() }}{% endblock %}', LAYOUT),
    ('{% extends "layout.html" %}{% block body scoped %}x{% endblock %}', LAYOUT),
    ('{% extends "layout.html" %}{% block body %}{% block inner %}x{% endblock %}'
     '{% endblock %}', LAYOUT),
    ('{% extends "layout.html" %}{% set greeting = "Hi" %}{% block body %}{{ greeting }}'
     '{% endblock %}', LAYOUT),
    ('{% extends "layout.html" %}<p>text outside the blocks</p>{% block body %}x{% endblock %}',
     LAYOUT),
    ('{% extends name %}{% block body %}x{% endblock %}', LAYOUT),
    ('{% extends "layout.html" %}{% block body %}x{% endblock %}',
     "{% for i in items %}{% block body %}{{ i }}{% endblock %}{% endfor %}"),
    ('{% extends "layout.html" %}{% block body %}x{% endblock %}',
     "{% if vip %}{% block body %}{% endblock %}{% endif %}"),
    ('{% extends "layout.html" %}{% block body %}x{% endblock %}',
     '{% extends "base.html" %}{% block body %}{% endblock %}'),
    ('{% extends "layout.html" %}{# {% block body %} #}{% block body %}x{% endblock %}', LAYOUT),
    ('{% extends "layout.html" %}{% block body %}{% raw %}{% endblock %}{% endraw %}'
     '{% endblock %}', LAYOUT),
    ('{% extends "layout.html" %}{% block body %}x{% endblock %}', "<p>no blocks, {{ x }}</p>"
     "{{ '{% block body %}' }}"),
])
def test_anything_else_is_left_to_jinja(child: str, layout: str) -> None:
    """super(), self, scoped or nested blocks, statements or text outside the child's
    blocks, a layout chosen by a value, blocks inside a loop or a condition of the layout,
    a layout that extends another, block tags in comments, raw text or strings."""
    env = env_with({"layout.html": layout, "base.html": LAYOUT, "mail.html": child})
    assert flatten(env, child) is None


def test_a_layout_newsletter_is_inlined_once_and_kept_like_one_file(
        cdir: CampaignDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page the child only fills is inlined once as one template: no page is inlined
    by shape, and every message is what inlining its own page gives."""
    cdir.file("templates/layout.html", LAYOUT)
    cdir.file("templates/mail.html", '{% extends "layout.html" %}{% block body %}'
                                     '{% for i in name.split() %}<p class="note"><b>{{ i }}</b>'
                                     '</p>{% endfor %}{% endblock %}')
    rows = [["email", "name", "footer"], *[[f"p{i}@x.org", f"Zoë {i}" * (i % 3 + 1), "Bye"]
                                           for i in range(6)]]
    cdir.csv(rows)
    config = cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
                       "transactional: true\ntemplates: {html: ../templates/mail.html}\n")
    htmls, notices, by_shape = run(config, monkeypatch)
    assert [canonical_html(h) for h in htmls] == each_inlined(cdir, rows)
    assert not by_shape and not notices
    assert re.search(r'<p class="note" style="color:#333"><b style="color:red">Zo', htmls[0])


def test_an_error_in_a_written_out_block_names_the_child_and_its_line(
        cdir: CampaignDir) -> None:
    cdir.file("templates/layout.html", LAYOUT)
    cdir.file("templates/mail.html", '{% extends "layout.html" %}\n{% block body %}\n'
                                     "<p>{{ missing_column }}</p>\n{% endblock %}\n")
    cdir.csv([["email", "footer"], ["a@x.org", "Bye"]])
    config = cdir.yaml("name: t\nfrom: n@acme.example\nsubject: Hi\nrecipients: people.csv\n"
                       "transactional: true\ntemplates: {html: ../templates/mail.html}\n")
    outcome = next(iter(iter_messages(load_campaign(config))))
    assert outcome.errors
    error = outcome.errors[0]
    assert str(error.path).endswith("mail.html") and error.line == 3, str(error)


TEXT = st.sampled_from(["", " ", "\n", "\n  ", "<p>x</p>", " {{ name }} ", "\n<b>{{ footer }}</b>\n",
                        "{% if vip %} vip {% endif %}", "{% for i in items %}{{ i }}\n{% endfor %}"])
MARK = st.sampled_from(["", "-", "+"])


@st.composite
def block_tags(draw: st.DrawFn, name: str) -> tuple[str, str]:
    return (f"{{%{draw(MARK)} block {name} {draw(MARK)}%}}",
            f"{{%{draw(MARK)} endblock {draw(MARK)}%}}")


@st.composite
def layout_and_child(draw: st.DrawFn) -> tuple[str, str]:
    names = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3,
                          unique=True))
    layout = [draw(TEXT)]
    for name in names:
        opening, closing = draw(block_tags(name))
        layout += [opening, draw(TEXT), closing, draw(TEXT)]
    child = ['{% extends "layout.html" %}']
    for name in draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4, unique=True)):
        opening, closing = draw(block_tags(name))
        child += [draw(st.sampled_from(["", "\n", "  "])), opening, draw(TEXT), closing]
    child.append(draw(st.sampled_from(["", "\n"])))
    return "".join(layout), "".join(child)


@settings(max_examples=EXAMPLES, deadline=None)
@given(layout_and_child())
def test_a_written_out_page_renders_as_jinja_renders_it(pair: tuple[str, str]) -> None:
    """Layouts and children of every mix of blocks, texts and trim marks: where the
    child is written out into its layout, the one template renders the same string."""
    layout, child = pair
    env = env_with({"layout.html": layout, "mail.html": child})
    flat = flatten(env, child)
    assert flat is not None  # these are all of the plain kind
    env.loader.loaders[0].mapping["flat.html"] = flat  # type: ignore[attr-defined]
    assert env.get_template("flat.html").render(CONTEXT) == \
        env.get_template("mail.html").render(CONTEXT)
