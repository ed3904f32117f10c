"""SpamAssassin (local rules only, no network tests) over every shipped message."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailmerge import iter_messages, load_campaign

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "campaigns").glob("*.yaml"))
FORBIDDEN = {"MISSING_DATE", "MISSING_MID", "MIME_HTML_ONLY", "MPART_ALT_DIFF",
             "HTML_MIME_NO_HTML_TAG", "MIME_QP_LONG_LINE", "INVALID_DATE", "MIME_BASE64_TEXT"}


def spamassassin(data: bytes) -> tuple[float, set[str]]:
    """Score and rule names, from SpamAssassin's own report on ``data``."""
    done = subprocess.run(["spamassassin", "-L", "-t", "-p", "/dev/null"], input=data,
                          capture_output=True, timeout=120, check=True)
    head = done.stdout.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: (.*(?:\n[ \t].*)*)", head, re.M)
    assert status, head
    text = re.sub(r",\s+", ",", " ".join(status.group(1).split()))
    score = float(re.search(r"score=(-?[\d.]+)", text).group(1))
    rules = set(re.search(r"tests=(\S*)", text).group(1).split(",")) - {""}
    return score, rules


@pytest.fixture(scope="module", autouse=True)
def need_spamassassin() -> None:
    if shutil.which("spamassassin") is None:
        if os.environ.get("CI"):
            pytest.fail("SpamAssassin is missing; .ci/run installs the spamassassin package")
        pytest.skip("needs the spamassassin package")


def test_every_shipped_message_scores_low(tmp_path: Path) -> None:
    messages = [o.built.data for campaign in SHIPPED
                for o in iter_messages(load_campaign(campaign)) if o.built is not None]
    assert len(messages) >= 8
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(spamassassin, messages))
    for score, rules in results:
        assert score < 1.0, (score, rules)
        assert not rules & FORBIDDEN, rules


def test_the_harness_sees_structural_rules() -> None:
    broken = (b"From: a@acme.example\r\nTo: b@example.org\r\nSubject: hi\r\n"
              b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
              b"<p>hello there, this is a message without a date</p>\r\n")
    score, rules = spamassassin(broken)
    assert {"MISSING_DATE", "MISSING_MID", "MIME_HTML_ONLY", "HTML_MIME_NO_HTML_TAG"} <= rules
