"""mailmerge: personalised mail from a campaign file, Jinja2 templates and a spreadsheet.

Library use::

    from mailmerge import load_campaign, preview_campaign, iter_messages
    campaign = load_campaign("campaigns/newsletter.yaml")
    for outcome in iter_messages(campaign):
        print(outcome.row, outcome.built.envelope_to if outcome.ok else outcome.errors)
"""

from typing import TYPE_CHECKING, Any

from . import recache  # noqa: F401 - first: before yaml and email_validator compile
from .campaign import Campaign, load_campaign, parse_campaign
from .errors import (
                     ConfigError,
                     MailmergeError,
                     RowError,
                     RowErrors,
                     SendError,
                     SheetError,
                     TemplateError,
)
from .message import build_message
from .mime import Built
from .pipeline import Outcome, Report, check_campaign, iter_messages
from .render import Rendered, Renderer
from .sheet import Row, open_sheet

if TYPE_CHECKING:
    from .preview import preview_campaign

__all__ = [
    "Built", "Campaign", "ConfigError", "MailmergeError", "Outcome", "Rendered", "Renderer",
    "Report", "Row", "RowError", "RowErrors", "SendError", "SheetError", "TemplateError",
    "build_message", "check_campaign", "iter_messages", "load_campaign", "open_sheet",
    "parse_campaign", "preview_campaign",
]


def __getattr__(name: str) -> Any:
    """``preview_campaign`` is imported when first asked for: ``check`` and ``send`` write
    no .eml folder and need not load it at start."""
    if name == "preview_campaign":
        from .preview import preview_campaign

        return preview_campaign
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
