"""The preview gallery in a real browser: headless Chromium, driven over WebDriver."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmerge.cli import cli

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path):
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI"):
            pytest.fail("Chromium and ChromeDriver are missing; .ci/run installs the Debian "
                        "packages chromium and chromium-driver")
        pytest.skip("needs the chromium and chromium-driver packages")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--disable-quic",
                     f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def in_frame(driver, script: str):
    """Run ``script`` in the message frame. The frame navigates to a file of its own
    origin, so the browser may swap its context: enter it afresh every time."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    driver.switch_to.default_content()
    try:
        driver.switch_to.frame(driver.find_element(By.ID, "frame"))
        return driver.execute_script(script)
    except WebDriverException:
        return None
    finally:
        driver.switch_to.default_content()


def open_newsletter(browser, tmp_path: Path) -> None:
    """Dry-run the shipped newsletter and open its gallery."""
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["preview", str(ROOT / "campaigns" / "newsletter.yaml"),
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    browser.get((out / "index.html").as_uri())


def test_gallery_shows_the_newsletter_with_its_logo(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_newsletter(browser, tmp_path)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.ID, "status").text == "5 rows")
    items = browser.find_elements(By.CSS_SELECTOR, ".item")
    assert len(items) == 5
    carol = next(i for i in items if "carol@example.org" in i.text)
    carol.click()
    heads = browser.find_element(By.ID, "heads").text
    assert 'Carol, "CJ", your autumn update from Acme' in heads
    assert "Acme News <news@acme.example>" in heads

    body = "return document.body ? document.body.innerText : ''"
    wait.until(lambda d: 'Hello Carol, "CJ",' in (in_frame(d, body) or ""))
    logo_width = wait.until(lambda d: in_frame(
        d, "const i = document.querySelector('img'); return i && i.complete && i.naturalWidth;"))
    assert logo_width == 120  # the embedded logo loaded
    browser.save_screenshot(str(tmp_path / "gallery.png"))
    assert (tmp_path / "gallery.png").stat().st_size > 10_000

    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-part=text]").click()
    wait.until(lambda d: "Unsubscribe: https://acme.example/unsubscribe/t0002abcd"
               in (in_frame(d, body) or ""))

    search = browser.find_element(By.ID, "search")
    search.send_keys("LI.WEI")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".item")) == 1)
    assert "li.wei@example.com" in browser.find_element(By.CSS_SELECTOR, ".item").text


def big_gallery(folder: Path, count: int) -> None:
    from mailmerge.preview.gallery import Gallery

    gallery = Gallery(folder, "big <campaign>")
    for row in range(2, count + 2):
        gallery.add_problem(row, f"row {row}: problem number {row} </script><b>not bold</b>")
    gallery.close()


def test_gallery_is_written_in_chunks(tmp_path: Path) -> None:
    big_gallery(tmp_path, 2500)
    assert sorted(p.name for p in (tmp_path / "list").iterdir()) == [
        "00000.js", "00001.js", "00002.js"]
    index = (tmp_path / "index.html").read_text()
    assert "const CHUNKS = 3, TOTAL = 2500," in index
    assert "<title>big &lt;campaign&gt; — mailmerge preview</title>" in index
    assert "</script><b>" not in (tmp_path / "list" / "00001.js").read_text()


def item_texts(driver) -> list[str]:
    """The list's rows, read in one go (the list redraws while it loads and scrolls)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('.item')].map((e) => e.innerText)")


def test_a_large_gallery_loads_incrementally_as_a_virtual_list(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    big_gallery(tmp_path, 20_000)
    browser.get((tmp_path / "index.html").as_uri())
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.ID, "status").text == "20000 rows, 20000 with problems")
    assert len(item_texts(browser)) < 60  # only what is visible is drawn
    browser.execute_script("document.getElementById('list').scrollTop = 52 * 15000")
    WebDriverWait(browser, 10).until(
        lambda d: any("problem number 15002 " in text for text in item_texts(d)))
    search = browser.find_element(By.ID, "search")
    search.send_keys("number 19999 ")
    WebDriverWait(browser, 10).until(lambda d: len(item_texts(d)) == 1)
    assert "<b>not bold</b>" in item_texts(browser)[0]  # shown as text, not markup


def test_gallery_opens_on_the_first_message_and_shows_it_at_phone_width(browser,
                                                                        tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_newsletter(browser, tmp_path)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: "Zoë, your autumn update" in d.find_element(By.ID, "heads").text)
    selected = browser.find_element(By.CSS_SELECTOR, ".item.selected").text
    assert "row 2" in selected
    frame_width = "return document.getElementById('frame').getBoundingClientRect().width"
    assert browser.execute_script(frame_width) > 600
    browser.find_element(By.CSS_SELECTOR, "#widths button[data-width=phone]").click()
    wait.until(lambda d: d.execute_script(frame_width) == 377)  # 375 and its two borders
    assert in_frame(browser, "return window.innerWidth") == 375  # the message lays out at 375
    browser.find_elements(By.CSS_SELECTOR, ".item")[2].click()
    browser.refresh()  # the place is kept in the address
    wait.until(lambda d: "row 4" in d.find_element(By.CSS_SELECTOR, ".item.selected").text)
    assert browser.execute_script(frame_width) == 377
    browser.find_element(By.CSS_SELECTOR, "#widths button[data-width=desktop]").click()
    wait.until(lambda d: d.execute_script(frame_width) > 600)


LONG_HTML = ("<html><body><h1>{{ name }} version ONE</h1>"
             + "".join(f"<p>paragraph {i}</p>" for i in range(200)) + "</body></html>\n")


def test_live_preview_follows_edits_keeps_the_place_and_shows_errors(browser,
                                                                     tmp_path: Path) -> None:
    import subprocess
    import sys

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder = tmp_path / "c"
    folder.mkdir()
    template = folder / "mail.html"
    template.write_text(LONG_HTML)
    (folder / "people.csv").write_text("email,name\n" + "".join(
        f"p{i}@example.org,Person {i}\n" for i in range(5)))
    (folder / "c.yaml").write_text(
        "name: live\nfrom: a@example.org\nsubject: 'Hi {{ name }}'\ntemplates: {html: mail.html}\n"
        "recipients: people.csv\ntransactional: true\n")
    watcher = subprocess.Popen([sys.executable, "-m", "mailmerge", "preview",
                                str(folder / "c.yaml"), "--watch", "-o", str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=tmp_path)
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()
        assert first.startswith("Live preview of the first 20 rows at http://127.0.0.1:"), first
        url = first.split(" at ")[1].split()[0]
        wait = WebDriverWait(browser, 20)
        body = "return document.body ? document.body.innerText : ''"
        browser.get(url)
        wait.until(lambda d: "Person 0 version ONE" in (in_frame(d, body) or ""))
        browser.find_elements(By.CSS_SELECTOR, ".item")[3].click()  # row 5
        wait.until(lambda d: "Person 3 version ONE" in (in_frame(d, body) or ""))
        in_frame(browser, "window.scrollTo(0, 700)")
        wait.until(lambda d: in_frame(d, "return window.scrollY") == 700)

        template.write_text(LONG_HTML.replace("ONE", "TWO"))
        wait.until(lambda d: "Person 3 version TWO" in (in_frame(d, body) or ""))
        assert "row 5" in browser.find_element(By.CSS_SELECTOR, ".item.selected").text
        wait.until(lambda d: in_frame(d, "return window.scrollY") == 700)
        assert not browser.find_element(By.ID, "watcherror").is_displayed()

        template.write_text("<html><body>\n<h1>{{ name }}</h1>\n{% if %}</body></html>\n")
        wait.until(lambda d: d.find_element(By.ID, "watcherror").is_displayed())
        error = browser.find_element(By.ID, "watcherror").text
        assert f"{template}, line 3: template syntax error" in error or \
               "mail.html, line 3: template syntax error" in error, error
        assert "Person 3 version TWO" in (in_frame(browser, body) or "")  # still shown

        template.write_text(LONG_HTML.replace("ONE", "THREE"))
        wait.until(lambda d: "Person 3 version THREE" in (in_frame(d, body) or ""))
        assert not browser.find_element(By.ID, "watcherror").is_displayed()
        assert sorted(p.name for p in folder.iterdir()) == ["c.yaml", "mail.html", "people.csv"]
    finally:
        watcher.terminate()
        watcher.communicate(timeout=10)  # and close its pipe


def test_messages_in_every_parts_file_are_shown(browser, tmp_path: Path, monkeypatch) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mailmerge.preview import gallery

    monkeypatch.setattr(gallery, "PARTS_MESSAGES", 2)  # five messages in three parts files
    open_newsletter(browser, tmp_path)
    assert sorted(p.name for p in (tmp_path / "out" / "parts").iterdir()) == [
        "00002.js", "00004.js", "00006.js"]  # named by their first row
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.ID, "status").text == "5 rows")
    body = "return document.body ? document.body.innerText : ''"
    names = ["Zoë", 'Carol, "CJ"', "伟", "Ólafur", "أميرة"]
    for index in (4, 0, 2, 4):  # the last file, the first again, one in between
        item = browser.find_elements(By.CSS_SELECTOR, ".item")[index]
        row = item.text.split("row ")[1].split(" ")[0]
        item.click()
        wait.until(lambda d, row=row: f"row={row}" in d.current_url)
        heads = browser.find_element(By.ID, "heads").text
        name = next(n for n in names if f"{n}, your autumn update" in heads)
        wait.until(lambda d, name=name: f"Hello {name}," in (in_frame(d, body) or ""))


ATTACK = """<!doctype html><body><script>
"use strict";
// another origin's page, which knows the gallery's data files and calls
const BASE = "__BASE__", got = [];
window.mm = {add: (items) => got.push(...items), part: (row, body) => got.push(body)};
const waits = ["list/00000.js", "list/00000.json", "parts/00002.js", "parts/00002.json"]
  .map((name) => new Promise((done) => {
    const script = document.createElement("script");
    script.src = BASE + name;
    script.onload = script.onerror = done;
    document.body.appendChild(script);
  }));
waits.push(fetch(BASE + "list/00000.json").then((r) => r.text())
  .then((text) => got.push(text), () => null));
Promise.all(waits).then(() => { window.stolen = JSON.stringify(got); });
</script></body>
"""


def test_another_origins_page_cannot_read_the_live_previews_recipients(browser, basic,
                                                                        tmp_path: Path) -> None:
    """Cross-site script inclusion, in a real browser: a page of another origin includes the
    live preview's data files as scripts and fetches them; it reads nothing."""
    import http.server
    import threading
    from functools import partial

    from mailmerge.preview.watch import LivePreview

    c = basic(rows=[["email", "name"], ["secret@x.org", "Secret"]])
    live = LivePreview(c.folder / "campaign.yaml", tmp_path / "live")
    url, _ = live.start()
    site = tmp_path / "site"
    site.mkdir()
    (site / "attack.html").write_text(ATTACK.replace("__BASE__", url))
    other = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(http.server.SimpleHTTPRequestHandler, directory=str(site)))
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        from selenium.webdriver.support.ui import WebDriverWait

        browser.get(f"http://127.0.0.1:{other.server_address[1]}/attack.html")
        stolen = WebDriverWait(browser, 20).until(lambda d: d.execute_script(
            "return window.stolen"))
        assert stolen == "[]"
        from selenium.webdriver.common.by import By

        browser.get(url)  # while the page itself reads them
        WebDriverWait(browser, 20).until(
            lambda d: "secret@x.org" in d.find_element(By.ID, "heads").text)
    finally:
        other.shutdown()
        other.server_close()
        live.stop()


def test_the_live_preview_shows_the_embedded_images_it_serves(browser, tmp_path: Path) -> None:
    """The message frame (srcdoc, of the page's origin) loads its images from the server,
    which answers only its own page."""
    from selenium.webdriver.support.ui import WebDriverWait

    from mailmerge.preview.watch import LivePreview

    live = LivePreview(ROOT / "campaigns" / "newsletter.yaml", tmp_path / "live")
    url, first = live.start()
    try:
        assert first.error is None
        browser.get(url)
        logo_width = WebDriverWait(browser, 20).until(lambda d: in_frame(
            d, "const i = document.querySelector('img'); return i && i.complete && i.naturalWidth;"))
        assert logo_width == 120
    finally:
        live.stop()
