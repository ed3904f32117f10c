"""The live preview without a browser: what it serves, where, and when it renders again."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mailmerge import ConfigError
from mailmerge.preview.watch import LivePreview

from .conftest import CampaignDir


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _state(url: str) -> dict[str, object]:
    return json.loads(_get(url + "watch.json")[1])


def _until(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "nothing changed in time"
        time.sleep(0.05)


def test_the_live_preview_serves_loopback_and_renders_again_on_change(
        basic, tmp_path: Path) -> None:
    c: CampaignDir = basic(rows=[["email", "name"]] + [[f"p{i}@x.org", f"P{i}"] for i in range(30)])
    out = tmp_path / "live"
    live = LivePreview(c.folder / "campaign.yaml", out, limit=5)
    url, first = live.start()
    runner = threading.Thread(target=live.run, args=(lambda r: None,), daemon=True)
    runner.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        assert first.report is not None and first.report.messages == 5  # the first rows only
        assert _state(url) == {"version": 1, "error": None}
        status, page = _get(url + "index.html")
        assert status == 200 and b"WATCH = true" in page
        assert _get(url + "../" + c.folder.name + "/campaign.yaml")[0] == 404
        assert _get(url + "%2e%2e/%2e%2e/etc/passwd")[0] == 404

        c.csv([["email", "name"], ["new@x.org", "New"]])  # the sheet changes
        _until(lambda: _state(url)["version"] == 2)
        assert [p.name for p in out.glob("*.eml")] == ["00002-new@x.org.eml"]

        (c.root / "templates/mail.html").write_text("<p>{% if %}</p>")
        _until(lambda: _state(url)["error"] is not None)
        state = _state(url)
        assert state["version"] == 2  # no reload: the page keeps what it shows
        assert "mail.html, line 1: template syntax error" in str(state["error"])
        assert [p.name for p in out.glob("*.eml")] == ["00002-new@x.org.eml"]

        (c.root / "templates/mail.html").write_text("<p>{{ name }} again</p>")
        _until(lambda: _state(url) == {"version": 3, "error": None})
        assert sorted(p.name for p in c.folder.iterdir()) == ["campaign.yaml", "people.csv"]
    finally:
        live.stop()
        runner.join(timeout=5)
    assert not runner.is_alive()


def test_a_campaign_file_that_cannot_be_read_stops_the_live_preview_at_once(
        tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError):
        LivePreview(tmp_path / "c.yaml")
