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


class _Live:
    """A live preview serving and watching in a thread; what its thread raised, if any."""

    def __init__(self, path: Path, out: Path, limit: int = 5) -> None:
        self.preview = LivePreview(path, out, limit=limit)
        self.url, self.first = self.preview.start()
        self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))
        self.raised: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.preview.run(lambda r: None)
        except BaseException as exc:  # the test reports it
            self.raised.append(exc)
            raise

    def state(self) -> dict[str, object]:
        status, body = _get(self.url + "watch.json")
        return json.loads(body) if status == 200 else {}

    def stop(self) -> None:
        self.preview.stop()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()
        assert self.raised == []


@pytest.fixture
def live(basic, tmp_path: Path):
    """A campaign of three rows, in a live preview; stopped after the test."""
    started: list[_Live] = []

    def start(c: CampaignDir | None = None) -> _Live:
        c = c or basic(rows=[["email", "name"], ["a@x.org", "A"], ["b@x.org", "B"],
                             ["c@x.org", "C"]])
        started.append(_Live(c.folder / "campaign.yaml", tmp_path / "live"))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def _ask(port: int, path: str, host: str | None = None,
         headers: dict[str, str] | None = None, method: str = "GET"):
    """One request with the Host header given (None: none at all): status, headers, body."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            connection.putheader("Host", host)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        reply = connection.getresponse()
        return reply.status, reply.headers, reply.read()
    finally:
        connection.close()


def test_the_live_preview_answers_only_its_own_host_name(live) -> None:
    """DNS rebinding: a page of another site whose name now points at 127.0.0.1 asks with
    its own name as Host; it gets nothing, on any path."""
    server = live()
    port = server.port
    paths = ["/", "/index.html", "/watch.json", "/list/00000.json", "/parts/00002.json",
             "/00002-a@x.org.eml", "/manifest.csv", "/nothing-here"]
    for path in paths:
        for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1:{port + 1}",
                     f"127.0.0.1.attacker.example:{port}", f"[::1]:{port}", "", None):
            status, _, body = _ask(port, path, host)
            assert (status, body) == (421, b"This preview answers only "
                                      b"http://127.0.0.1:%d/ and http://localhost:%d/\n"
                                      % (port, port)), (path, host)
        status, _, body = _ask(port, path, host=f"attacker.example:{port}", method="HEAD")
        assert (status, body) == (421, b""), path
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}"):
        assert _ask(port, "/watch.json", host)[0] == 200, host
        status, headers, body = _ask(port, "/00002-a@x.org.eml", host)
        assert status == 200 and headers["Content-Type"] == "message/rfc822"
        assert b"To: a@x.org" in body


def test_the_data_of_the_live_preview_cannot_be_read_by_another_origin(live) -> None:
    """Cross-site script inclusion: the recipients are served as JSON that no <script src>
    runs, only to the page itself."""
    server = live()
    port, host = server.port, f"127.0.0.1:{server.port}"
    status, headers, body = _ask(port, "/list/00000.json", host,
                                 {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors",
                                  "Sec-Fetch-Dest": "empty"})
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert "Access-Control-Allow-Origin" not in headers
    assert [entry["to"] for entry in json.loads(body)] == ["a@x.org", "b@x.org", "c@x.org"]
    status, headers, body = _ask(port, "/parts/00002.json", host)
    assert status == 200 and headers["Content-Type"] == "application/json"
    parts = json.loads(body)
    assert sorted(parts) == ["2", "3", "4"] and "Hello A</p>" in parts["2"]["html"]
    for path in ("/list/00000.js", "/parts/00002.js"):  # never as a script, even to itself
        assert _ask(port, path, host)[0] == 404, path

    for path in ("/", "/index.html", "/watch.json", "/list/00000.json", "/parts/00002.json",
                 "/00002-a@x.org.eml", "/manifest.csv"):
        for site in ("cross-site", "same-site"):
            status, headers, body = _ask(port, path, host, {"Sec-Fetch-Site": site})
            assert (status, body) == (403, b"This preview answers only its own page\n"), path
        status, _, _ = _ask(port, path, host, {"Sec-Fetch-Site": "same-origin",
                                               "Sec-Fetch-Mode": "no-cors",
                                               "Sec-Fetch-Dest": "script"})
        assert status == 403, path
        status, headers, _ = _ask(port, path, host, {"Sec-Fetch-Site": "none"})
        assert status == 200, path  # typed in the address bar, or opened from the terminal
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Cross-Origin-Resource-Policy"] == "same-origin", path
        assert "Access-Control-Allow-Origin" not in headers, path
    assert _ask(port, "/list/", host)[0] == 404  # no listing of the recipients' files
