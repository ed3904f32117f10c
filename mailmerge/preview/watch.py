"""The live preview: the gallery served on loopback, rendered again whenever a file changes.

The first rows are written into the preview folder as by ``preview_campaign``; the folder
is served on ``127.0.0.1`` only. ``watch.json`` beside ``index.html`` holds a version
number, bumped after each render, and the error of the last one: the page asks for it
a few times a second, reloads itself (keeping the selected message, the part shown and
the scroll positions) when the version moves on, and shows an error over the messages
it has instead of losing them. The files watched are the campaign file, the sheet, the
suppression lists, the templates and those they extend, include and import, and the local
images they show; then the folders and files in the templates' folders (up to
MAX_WATCHED); they are polled, which needs nothing from the platform. A file that is gone
stays watched until it is back, and an output folder that is deleted (or replaced by a
file, then removed) is written again.

The server answers only its own page (see :class:`_Handler`): the sheet's recipients are
in what it serves.
"""

from __future__ import annotations

import contextlib
import html
import http.server
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

import jinja2
from jinja2 import meta

from ..assets import img_srcs, is_local_src
from ..campaign import MAX_CAMPAIGN_FILE, Campaign, load_campaign, parse_campaign, with_where
from ..errors import ConfigError, MailmergeError
from ..localfiles import read_bytes
from ..markdown_body import make_converter
from ..pipeline import Report, iter_messages
from ..render import make_environment
from . import default_output_folder, preview_campaign
from .folder import WATCH_FILE
from .gallery import list_json, parts_json

POLL_SECONDS = 0.25
MAX_WATCHED = 5000  # files and folders in the template folders; the rest is not watched
HOST = "127.0.0.1"
_DATA = re.compile(r"/(list|parts)/(\d{5,})\.json")  # a gallery data file, as JSON
_SCRIPT_DATA = re.compile(r"\.js\Z|\A/(list|parts)(/|\Z)", re.I)  # served as JSON only
_SCRIPTS = {"script", "worker", "sharedworker", "serviceworker", "audioworklet",
            "paintworklet", "xslt"}  # Sec-Fetch-Dest of a request that would run what it gets


@dataclass
class Rendering:
    """What one render of the live preview came to."""

    version: int
    report: Report | None = None
    error: str | None = None  # the campaign could not be rendered at all

    @property
    def problem(self) -> str | None:
        """The error to show over the gallery: the campaign's, or the first row problem."""
        if self.error is not None:
            return self.error
        if self.report is not None and self.report.problems:
            first = self.report.problems[0].errors[0]
            return (f"Problems in {self.report.failed_rows} of {self.report.rows} rows; the "
                    f"first: {first}")
        return None


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the preview folder to its own page only, never from a cache; logs nothing.

    Another site's page may make the browser ask too: by a name of its own that it points
    at 127.0.0.1 (DNS rebinding: refused by the Host header), or by a ``<script src>``
    (cross-site script inclusion: refused by the Fetch Metadata headers; the data is served
    as JSON, which no browser runs, and the list's and parts' scripts not at all).
    """

    def do_GET(self) -> None:
        if self._allowed():
            self._serve(head=False)

    def do_HEAD(self) -> None:
        if self._allowed():
            self._serve(head=True)

    def _allowed(self) -> bool:
        port = cast(http.server.HTTPServer, self.server).server_port
        names = {f"{HOST}:{port}", f"localhost:{port}"}
        hosts = [h.lower() for h in self.headers.get_all("Host", [])]
        if len(hosts) != 1 or hosts[0] not in names:
            self._refuse(421, f"This preview answers only http://{HOST}:{port}/ and "
                              f"http://localhost:{port}/")
            return False
        site = self.headers.get("Sec-Fetch-Site", "none")
        if (site not in ("same-origin", "none")
                or self.headers.get("Sec-Fetch-Dest", "") in _SCRIPTS):
            self._refuse(403, "This preview answers only its own page")
            return False
        return True

    def _serve(self, head: bool) -> None:
        # decided on the path as the file system sees it (decoded and normalised by the
        # handler itself), not as written: `/list/00000.%6As` is `list/00000.js`
        local = self.translate_path(self.path)
        path = "/" + os.path.relpath(local, self.directory).replace(os.sep, "/")
        data = _DATA.fullmatch(path)
        if data is not None:
            self._send_json(data[1], data[2], head)
        elif "\0" in local or _SCRIPT_DATA.search(path):
            self.send_error(404)  # the file:// gallery's data: never run by a server's page
        elif head:
            super().do_HEAD()
        else:
            super().do_GET()

    def _send_json(self, kind: str, name: str, head: bool) -> None:
        try:
            script = Path(self.directory, kind, f"{name}.js").read_bytes()
        except OSError:
            self.send_error(404)
            return
        body = list_json(script) if kind == "list" else parts_json(script)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _refuse(self, status: int, text: str) -> None:
        body = f"{text}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        """No listings: the .eml files are named after the recipients."""
        self.send_error(404)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _named(campaign: Campaign) -> list[Path]:
    """The files the campaign names, which every render reads."""
    return [campaign.path, campaign.recipients.path, *campaign.suppress, *campaign.templates]


def _used(campaign: Campaign) -> list[Path]:
    """The templates the campaign's templates extend, include and import (found in their
    sources, as the render's loader finds them; where one is missing, each place it would be
    looked for), and the local images they show: every render reads them, wherever they
    stand in the templates' folders."""
    named = campaign.templates
    search = list(dict.fromkeys(t.parent for t in named))
    env = make_environment(search, frozenset(t.name for t in named))
    assert env.loader is not None
    queue, seen, used = deque(t.name for t in named), set(), list[Path]()
    while queue and len(used) < MAX_WATCHED:
        name = queue.popleft()
        if name in seen:
            continue
        seen.add(name)
        try:
            source, filename, _ = env.loader.get_source(env, name)
            found = meta.find_referenced_templates(env.parse(source))
        except jinja2.TemplateNotFound:
            if ".." not in name.split("/"):
                used += [folder / name for folder in search]
            continue
        except (jinja2.TemplateError, OSError, UnicodeDecodeError):
            continue  # the render says what is wrong with it
        used += [Path(filename)] if filename else []
        markdown = campaign.markdown_template
        if (markdown is not None and name == markdown.name) or name.endswith((".md",
                                                                                ".markdown")):
            source = make_converter().render(source)  # its images as the page will have them
        used += _images(source, (campaign.html_template or campaign.markdown_template or
                                 named[0]).parent)
        queue.extend(n for n in found if n is not None)
    return used


def _images(source: str, folder: Path) -> list[Path]:
    """The local images a template's source shows by a src written out (not computed)."""
    srcs = (unquote(html.unescape(found.src).strip()) for found in img_srcs(source))
    return [folder / src for src in srcs
            if is_local_src(src) and "{" not in src and "\0" not in src]


def _named_in(path: Path) -> list[Path]:
    """The files the campaign file at ``path`` names, those missing too (none if it does not
    parse)."""
    try:
        text = read_bytes(path, MAX_CAMPAIGN_FILE).decode("utf-8")
        return _named(parse_campaign(text, path))
    except (MailmergeError, OSError, UnicodeDecodeError):
        return []


def _tree(folders: list[Path], out: Path) -> Iterator[Path]:
    """The folders and their files, breadth first (a folder's files before its subfolders):
    a file added or removed changes its folder. Hidden folders are left out, and those of
    the output (which each render changes) and above it."""
    queue, seen = deque(folders), set()
    while queue:
        folder = queue.popleft()
        if (real := folder.resolve()) in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        yield folder
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                yield Path(entry.path)
                continue
            real = Path(entry.path).resolve()
            if not (entry.name.startswith(".") or real.is_relative_to(out)
                    or out.is_relative_to(real)):
                queue.append(Path(entry.path))


def _files(campaign: Campaign, out: Path) -> tuple[list[Path], bool]:
    """The files whose change makes a new preview: those the campaign names and those its
    templates use, always; then the templates' folders up to MAX_WATCHED; and whether the
    folders held more."""
    folders = list(dict.fromkeys(t.parent for t in campaign.templates))
    tree = list(islice(_tree(folders, out.resolve()), MAX_WATCHED + 1))
    return ([*_named(campaign), *_used(campaign), *tree[:MAX_WATCHED]],
            len(tree) > MAX_WATCHED)


Stamp = tuple[tuple[str, int, int, int], ...]


def _stamp(paths: list[Path]) -> Stamp:
    """What the files look like now: changed content almost always changes one of these
    (an editor that saves by writing a new file and renaming it changes the inode)."""
    found = []
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            found.append((str(path), -1, -1, -1))
            continue
        found.append((str(path), info.st_mtime_ns, info.st_size, info.st_ino))
    return tuple(found)


class LivePreview:
    """Renders the first ``limit`` rows of the campaign at ``path`` into ``out`` whenever a
    file changes, and serves that folder on loopback. Call :meth:`start`, then :meth:`run`
    (in the main thread: a row's time limit needs its signals); :meth:`stop` ends both."""

    def __init__(self, path: Path, out: Path | None = None, *, limit: int = 20,
                 where: str | None = None, port: int = 0) -> None:
        self.path, self.limit, self.where = path, limit, where
        campaign = self._load()  # a campaign file that cannot be read stops here
        self.out = Path(os.path.realpath(out or default_output_folder(campaign)))
        self.version = 0
        self.files: list[Path] = []  # watched: set by each render from the campaign it read
        self.capped = False  # the templates' folders hold more than MAX_WATCHED
        self._stamp: Stamp = ()
        self._told = False  # watch.json was written: its going means the folder went
        self._unwritable: Stamp | None = None  # the output as it was when it could not be
        self._stopped = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._port = port

    def _load(self) -> Campaign:
        return with_where(load_campaign(self.path), self.where)

    def start(self) -> tuple[str, Rendering]:
        """Render once, then serve the folder on 127.0.0.1 (a free port unless one was
        given): the URL, and how the render went."""
        # made before the render watches its folders, or its making is a change; a folder
        # that cannot be made is the render's error
        with contextlib.suppress(OSError):
            self.out.mkdir(parents=True, exist_ok=True)
        first = self.render()
        handler = partial(_Handler, directory=str(self.out))
        self._server = http.server.ThreadingHTTPServer((HOST, self._port), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="preview-server",
                         daemon=True).start()
        return f"http://{HOST}:{self._server.server_address[1]}/", first

    def render(self) -> Rendering:
        """Read the campaign, watch its files as they are now, render, and tell the page
        (through watch.json)."""
        self.version += 1
        rendering = Rendering(self.version)
        try:
            rendering.report = self._render()
        except MailmergeError as exc:
            rendering.error = str(exc)
            self.version -= 1  # the page keeps the messages it shows, and the error goes over
            rendering.version = self.version
        self._tell(rendering)
        return rendering

    def _render(self) -> Report:
        # until the campaign reads again: what was watched, and what it names now (a sheet
        # that is gone, a template not yet written), so that a file coming back is noticed
        self._watch([self.path, *_named_in(self.path), *self.files])
        campaign = self._load()
        files, self.capped = _files(campaign, self.out)
        self._watch(files)
        # a template that does not compile is found before the folder is cleared, so
        # the page keeps every message it shows under the error
        for _ in iter_messages(campaign, limit=1, build=False):
            pass
        return preview_campaign(campaign, self.out, limit=self.limit, jobs=1, live=True)

    def _tell(self, rendering: Rendering) -> None:
        """Write watch.json, and the folder again if it was deleted; a folder that cannot be
        written is the rendering's error."""
        state = {"version": rendering.version, "error": rendering.problem}
        partial_file = self.out / f".{WATCH_FILE}.part"
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            partial_file.write_text(json.dumps(state), encoding="utf-8")
            os.replace(partial_file, self.out / WATCH_FILE)
        except OSError as exc:
            self._told, self._unwritable = False, _stamp([self.out])
            if rendering.error is None:
                rendering.error = str(ConfigError(
                    f"cannot write the live preview into {self.out}: {exc.strerror or exc}",
                    hint="make that folder writable again (or stop and choose another "
                         "--out); the next change renders again"))
            return
        self._told, self._unwritable = True, None

    def _watch(self, files: list[Path]) -> None:
        """Watch ``files`` from their state now: a change during the render renders again."""
        files = list(dict.fromkeys(files))
        self.files, self._stamp = files, _stamp(files)

    def changed(self) -> bool:
        """Whether a watched file changed since the last render began, the output folder
        (its watch.json) was deleted since it was written, or the output that could not be
        written (a file in its place, say) changed."""
        lost = self._told and not (self.out / WATCH_FILE).is_file()
        freed = self._unwritable is not None and _stamp([self.out]) != self._unwritable
        return lost or freed or _stamp(self.files) != self._stamp

    def run(self, on_render: Callable[[Rendering], None]) -> None:
        """After :meth:`start`: render again after every change, until :meth:`stop`."""
        while not self._stopped.wait(POLL_SECONDS):
            if not self.changed():
                continue
            time.sleep(POLL_SECONDS / 2)  # an editor may write a file in several steps
            on_render(self.render())

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
