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


def test_gallery_shows_the_newsletter_with_its_logo(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["preview", str(ROOT / "campaigns" / "newsletter.yaml"),
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    wait = WebDriverWait(browser, 20)
    browser.get((out / "index.html").as_uri())
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
