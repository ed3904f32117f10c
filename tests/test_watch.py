"""The live preview without a browser: what it serves, where, and when it renders again."""

from __future__ import annotations

import email
import email.policy
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


@pytest.mark.parametrize("name", ["campaign/people.csv", "templates/mail.html"])
def test_a_file_that_disappears_and_comes_back_is_noticed_again(live, basic, name) -> None:
    """An editor that saves by deleting and writing anew: the preview shows the error while
    the file is gone, and renders again once it is back."""
    c = basic(rows=[["email", "name"], ["a@x.org", "A"]])
    server = live(c)
    path = c.root / name
    kept = path.read_bytes()
    path.unlink()
    _until(lambda: "does not exist" in str(server.state().get("error")))
    assert server.state()["version"] == 1
    path.write_bytes(kept.replace(b"A", b"Back") if name.endswith(".csv") else kept + b"again")
    _until(lambda: server.state() == {"version": 2, "error": None})


def test_a_file_the_campaign_names_before_it_exists_is_noticed_once_written(live, basic) -> None:
    c = basic(rows=[["email", "name"], ["a@x.org", "A"]])
    server = live(c)
    yaml = c.folder / "campaign.yaml"
    yaml.write_text(yaml.read_text().replace("mail.html", "new.html"))
    _until(lambda: "new.html, which does not exist" in str(server.state().get("error")))
    c.file("templates/new.html", "<p>New {{ name }}</p>")
    _until(lambda: server.state() == {"version": 2, "error": None})


def test_a_template_added_to_the_templates_folder_is_watched(live, basic) -> None:
    c = basic(html="<p>{% include 'footer.html' ignore missing %}</p>",
              rows=[["email", "name"], ["a@x.org", "A"]])
    server = live(c)
    c.file("templates/footer.html", "a footer")
    _until(lambda: server.state().get("version") == 2)
    assert b"a footer" in (server.preview.out / "00002-a@x.org.eml").read_bytes()


def test_a_deleted_output_folder_is_made_again_and_the_watcher_goes_on(live, basic) -> None:
    import shutil

    server = live()
    out = server.preview.out
    shutil.rmtree(out)
    _until(lambda: server.state().get("version") == 2)
    assert sorted(p.name for p in out.glob("*.eml")) == [
        "00002-a@x.org.eml", "00003-b@x.org.eml", "00004-c@x.org.eml"]

    shutil.rmtree(out)  # and again, while the template does not compile
    (server.preview.path.parent.parent / "templates/mail.html").write_text("<p>{% if %}</p>")
    _until(lambda: "template syntax error" in str(server.state().get("error")))
    assert server.thread.is_alive() and server.raised == []


def test_an_output_folder_that_cannot_be_written_is_one_error_line(basic,
                                                                    tmp_path: Path) -> None:
    import shutil

    c = basic(rows=[["email", "name"], ["a@x.org", "A"]])
    preview = LivePreview(c.folder / "campaign.yaml", tmp_path / "live")
    preview.start()  # not run: this test renders itself
    try:
        shutil.rmtree(preview.out)
        preview.out.write_text("not a folder")  # where the preview writes, a file
        rendering = preview.render()
        assert rendering.error == (f"the output folder {preview.out} is a file; choose "
                                   "another --out")
    finally:
        preview.stop()


def test_past_5000_files_the_templates_the_campaign_uses_are_still_watched(
        live, cdir: CampaignDir) -> None:
    """A big folder of images beside the HTML template, and the text template in a folder
    of its own: the templates are watched first, the rest up to the limit."""
    from mailmerge.preview import watch

    images = cdir.root / "templates/html/images"
    images.mkdir(parents=True)
    for i in range(watch.MAX_WATCHED + 1):
        (images / f"{i:05d}.png").touch()
    cdir.file("templates/html/mail.html", "<p>{{ name }}</p>")
    cdir.file("templates/text/mail.txt", "{{ name }}\n")
    cdir.csv([["email", "name"], ["a@x.org", "A"]])
    cdir.yaml("name: big\nfrom: a@example.org\nsubject: Hi\ntransactional: true\n"
              "recipients: people.csv\ntemplates:\n  html: ../templates/html/mail.html\n"
              "  text: ../templates/text/mail.txt\n")
    server = live(cdir)
    files = set(server.preview.files)
    assert {cdir.root / "templates/html/mail.html", cdir.root / "templates/text/mail.txt",
            cdir.folder / "people.csv", cdir.folder / "campaign.yaml"} <= files
    assert len(files) <= watch.MAX_WATCHED + 10 and server.preview.capped
    cdir.file("templates/text/mail.txt", "{{ name }} changed\n")
    _until(lambda: server.state().get("version") == 2)
    assert b"A changed" in (server.preview.out / "00002-a@x.org.eml").read_bytes()


def test_a_render_changes_nothing_it_watches(cdir: CampaignDir) -> None:
    """The output inside the folder of the templates, made by the first render: the folders
    are watched, and the preview's own writing must not start another render."""
    cdir.file("campaign/mail.html", "<p>{{ name }}</p>")
    cdir.csv([["email", "name"], ["a@x.org", "A"]])
    cdir.yaml("name: here\nfrom: a@example.org\nsubject: Hi\ntransactional: true\n"
              "recipients: people.csv\ntemplates: {html: mail.html}\n")
    preview = LivePreview(cdir.folder / "campaign.yaml", cdir.folder / "out" / "here")
    preview.start()  # not run: this test asks it
    try:
        assert cdir.folder in preview.files
        assert not preview.changed()
        preview.render()
        assert not preview.changed()
        cdir.file("campaign/footer.html", "a new file")
        assert preview.changed()
    finally:
        preview.stop()


@pytest.mark.parametrize("path", [
    "/list/00000.js", "/list/00000.%6As", "/list/00000.%6a%73", "/list/00000%2ejs",
    "/list/00000%2Ejs", "/list/00000.js/.", "/list/00000.js/", "/list/./00000.js",
    "/list//00000.js", "//list/00000.js", "/list/00000.JS", "/LIST/00000.js",
    "/parts/00002.j%73", "/parts/00002.js?x=1", "/parts/00002.js#x", "/%70arts/00002.js",
    "/parts/../parts/00002.js", "/x/../list/00000.js", "/list/%2e%2e/list/00000.js",
    "/list%2f00000.js", "/list%2F00000.js", "/list\\00000.js", "/list/00000.js%00",
    "/list/00000.js%00.json", "/list/00000%00.json", "/list/%00", "/list/", "/parts",
])
def test_the_data_scripts_are_not_served_under_any_spelling_of_their_path(live, path) -> None:
    """The handler decodes and normalises the path before it opens the file: the refusal
    is decided on that path, not on the one written in the request."""
    server = live()
    for method in ("GET", "HEAD"):
        status, headers, body = _ask(server.port, path, f"127.0.0.1:{server.port}",
                                     method=method)
        assert status == 404, (path, method, status, headers["Content-Type"])
        assert b"a@x.org" not in body


@pytest.mark.parametrize("path", ["/list/00000%2ejson", "/list/00000.%6Ason",
                                  "/list/./00000.json", "//list/00000.json",
                                  "/x/../list/00000.json", "/list/00000.json?v=2"])
def test_the_json_data_is_found_by_the_path_the_file_system_sees(live, path) -> None:
    server = live()
    status, headers, body = _ask(server.port, path, f"127.0.0.1:{server.port}")
    assert status == 200 and headers["Content-Type"] == "application/json", path
    assert [entry["to"] for entry in json.loads(body)] == ["a@x.org", "b@x.org", "c@x.org"]


@pytest.mark.parametrize(("relative", "text", "seen"), [
    ("templates/layouts/base.html", "<p>{% block body %}{% endblock %} new layout</p>",
     b"new layout"),
    ("templates/junk/f59.txt", "junk changed", b"junk changed"),
    ("templates/junk/later.html", "written later", b"written later"),
    ("templates/macros/m.html", "{% macro sign() %}signed again{% endmacro %}",
     b"signed again"),
    ("templates/macros/f.html", "{% macro sign() %}from again{% endmacro %}", b"from again"),
    ("templates/pics/logo.png", b"\x89PNG two", b"\x89PNG two"),
], ids=["extends", "include", "include-missing", "import", "from-import", "image"])
def test_past_the_limit_what_the_templates_extend_include_import_and_show_is_watched(
        live, basic, monkeypatch, relative: str, text: str | bytes, seen: bytes) -> None:
    """Folders of many files before them: the layout extended from a subfolder, a file
    included from a big folder, macro files imported, an image the layout shows, and an
    include not yet written are watched first, outside the limit."""
    from mailmerge.preview import watch

    monkeypatch.setattr(watch, "MAX_WATCHED", 40)
    c = basic(html='{% extends "layouts/base.html" %}{% block body %}{{ name }} '
                   '{% include "junk/f59.txt" %} {% include "junk/later.html" ignore missing %}'
                   '{% endblock %}',
              rows=[["email", "name"], ["a@x.org", "A"]])
    for folder in ("assets", "junk"):
        for i in range(60):
            c.file(f"templates/{folder}/f{i:02d}.txt", f"{folder} {i}")
    c.file("templates/layouts/base.html",
           '{% import "macros/m.html" as m %}{% from "macros/f.html" import sign %}'
           '<p>{% block body %}{% endblock %} {{ m.sign() }} {{ sign() }}'
           '<img src="pics/logo.png" alt=""></p>')
    c.file("templates/macros/m.html", "{% macro sign() %}signed{% endmacro %}")
    c.file("templates/macros/f.html", "{% macro sign() %}from{% endmacro %}")
    c.file("templates/pics/logo.png", b"\x89PNG one")
    server = live(c)
    assert server.preview.capped and server.first.error is None
    c.file(relative, text)
    _until(lambda: server.state() == {"version": 2, "error": None})
    message = email.message_from_bytes((server.preview.out / "00002-a@x.org.eml").read_bytes(),
                                       policy=email.policy.default)
    html = message.get_body(("html",))
    assert html is not None
    images = [part.get_content() for part in message.walk()
              if part.get_content_maintype() == "image"]
    assert seen in html.get_content().encode() or images == [seen]


def test_an_output_replaced_by_a_file_is_written_again_once_the_file_is_gone(
        live) -> None:
    import shutil

    server = live()
    out = server.preview.out
    shutil.rmtree(out)
    out.write_text("not a folder")
    _until(lambda: server.preview.version == 1 and not server.preview._told)
    out.unlink()
    _until(lambda: server.state() == {"version": 2, "error": None})
    assert (out / "00002-a@x.org.eml").is_file()


def test_past_the_limit_an_image_a_markdown_template_shows_is_watched(
        live, cdir: CampaignDir, monkeypatch) -> None:
    from mailmerge.preview import watch

    monkeypatch.setattr(watch, "MAX_WATCHED", 40)
    for i in range(60):
        cdir.file(f"templates/assets/f{i:02d}.txt", "")
    cdir.file("templates/mail.md", "Hello {{ name }}\n\n![logo](pics/logo.png)\n")
    cdir.file("templates/pics/logo.png", b"\x89PNG one")
    cdir.csv([["email", "name"], ["a@x.org", "A"]])
    cdir.yaml("name: md\nfrom: a@example.org\nsubject: Hi\ntransactional: true\n"
              "recipients: people.csv\ntemplates:\n  markdown: ../templates/mail.md\n")
    server = live(cdir)
    assert server.preview.capped and server.first.error is None
    cdir.file("templates/pics/logo.png", b"\x89PNG two")
    _until(lambda: server.state() == {"version": 2, "error": None})
    message = email.message_from_bytes((server.preview.out / "00002-a@x.org.eml").read_bytes(),
                                       policy=email.policy.default)
    assert [part.get_content() for part in message.walk()
            if part.get_content_maintype() == "image"] == [b"\x89PNG two"]
