"""Sending a campaign over SMTP, resumably: the plan, the run, the journal, the Sent copy.

``prepare_send`` validates every row and opens the journal; the :class:`SendPlan` it
returns says what will happen, and ``SendPlan.run`` does it. ``send_test`` sends rendered
rows to one address without a journal. ``look_up``, and ``choose`` with ``settle_by_hand``, settle the
recipients a run left uncertain. ``read_bounces`` reads bounces and complaints back from
the `bounces:` mailbox into the journal and the suppression file. ``save_drafts`` puts
the messages in the IMAP Drafts folder instead of sending them.
"""

from __future__ import annotations

from .bounces import BounceReport, read_bounces
from .drafts import DraftReport, save_drafts
from .journal import CSV_COLUMNS, Journal, Record, SenderLock, State
from .plan import SendOptions, SendPlan, journal_path, prepare_send, send_test
from .runner import Event, SendReport
from .settle import Settled, Verdict, choose, look_up, names, settle_by_hand
from .smtp import Delivery

__all__ = [
    "CSV_COLUMNS",
    "BounceReport",
    "Delivery",
    "DraftReport",
    "Event",
    "Journal",
    "Record",
    "SendOptions",
    "SendPlan",
    "SendReport",
    "SenderLock",
    "Settled",
    "State",
    "Verdict",
    "choose",
    "journal_path",
    "look_up",
    "names",
    "prepare_send",
    "read_bounces",
    "save_drafts",
    "send_test",
    "settle_by_hand",
]
