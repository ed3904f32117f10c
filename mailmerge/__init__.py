"""mailmerge: personalised mail from a campaign file, Jinja2 templates and a spreadsheet.

Library use::

    from mailmerge import load_campaign, preview_campaign, iter_messages
    campaign = load_campaign("campaigns/newsletter.yaml")
    for outcome in iter_messages(campaign):
        print(outcome.row, outcome.built.envelope_to if outcome.ok else outcome.errors)
"""

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
from .preview import preview_campaign
from .render import Rendered, Renderer
from .sheet import Row, open_sheet

__all__ = [
    "Built", "Campaign", "ConfigError", "MailmergeError", "Outcome", "Rendered", "Renderer",
    "Report", "Row", "RowError", "RowErrors", "SendError", "SheetError", "TemplateError",
    "build_message", "check_campaign", "iter_messages", "load_campaign", "open_sheet",
    "parse_campaign", "preview_campaign",
]
