"""Build the book in the smoke profile, open it in headless Chromium, and use the scrubber.

Asserts, as a reader would see it: moving the slider and pressing keys change the displayed frame, the
plot cursor and the values at the cursor; the ipywidgets output renders through the vendored widget
manager; and no request leaves 127.0.0.1 (or data:/blob:/about:) -- the book works offline.

Needs Debian's Chromium at /usr/bin/chromium (`make test` installs it when it can) and Playwright's
Python package; Playwright's own browser download is never used.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    """The whole book built in the smoke profile with warnings as errors (as `make book` does)."""
    if shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("jupyter-book is not installed in this environment (pip install -e '.[book]')")
    subprocess.run(["bash", "tools/vendor_js.sh"], cwd=ROOT, check=True)
    out = ROOT / "_build" / "smoke"
    env = {**os.environ, "WMKIT_PROFILE": "smoke", "WMKIT_RENDER": "static"}
    jb = str(Path(sys.executable).parent / "jupyter-book")
    proc = subprocess.run([jb, "build", ".", "--path-output", str(out), "-W", "--keep-going"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return out / "_build" / "html"


def test_no_cdn_in_built_html(built_book: Path):
    """Every <script src> and <link href> that the browser loads is local."""
    offenders = []
    for page in built_book.rglob("*.html"):
        if "_static" in page.parts:
            continue
        text = page.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"<(script|link)\b[^>]*?(?:src|href)=\"(https?:)?//[^\"]+\"", text):
            offenders.append(f"{page.relative_to(built_book)}: {m.group(0)[:160]}")
        if "data-jupyter-widgets-cdn" in text:
            offenders.append(f"{page.relative_to(built_book)}: data-jupyter-widgets-cdn attribute")
    assert not offenders, "CDN references in the built book:\n" + "\n".join(offenders)


@pytest.fixture(scope="module")
def server(built_book: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output readable
            pass

    handler = functools.partial(Quiet, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (make test-deps) to run the browser test")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def _state(page, root):
    return page.evaluate(
        """(root) => ({
            t: root.querySelector('img.wmk-frame').dataset.t,
            src: root.querySelector('img.wmk-frame').src.slice(-64),
            slider: root.querySelector('.wmk-slider').value,
            values: root.querySelector('.wmk-values').textContent,
            cursor: root.querySelector('.wmk-cursor') ? root.querySelector('.wmk-cursor').getAttribute('x1') : null,
        })""", root)


def test_scrubber_in_browser_offline(server: str, browser, tmp_path: Path):
    requests: list[str] = []
    failed: list[str] = []
    page = browser.new_page(viewport={"width": 1200, "height": 1600})
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failed.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server}/notebooks/00_tour.html", wait_until="networkidle")

    root = page.locator(".wmk-scrubber").first
    root.scroll_into_view_if_needed()
    n = int(root.locator(".wmk-slider").get_attribute("max")) + 1
    assert n >= 3, f"the smoke episode should have several frames, got {n}"
    handle = root.element_handle()
    s0 = _state(page, handle)
    assert s0["t"] == "0" and s0["slider"] == "0"

    # 1. move the slider with the mouse: click at 3/4 of its width
    box = root.locator(".wmk-slider").bounding_box()
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + box["height"] / 2)
    s1 = _state(page, handle)
    assert int(s1["t"]) > 0 and s1["t"] == s1["slider"], s1
    assert s1["src"] != s0["src"], "the displayed frame did not change when the slider moved"
    assert s1["cursor"] != s0["cursor"], "the plot cursor did not follow the slider"
    assert s1["values"] != s0["values"], "the values at the cursor did not change"

    # 2. keyboard: focus the scrubber, Home, then ArrowRight twice
    root.locator(".wmk-title").click()
    page.keyboard.press("Home")
    s2 = _state(page, handle)
    assert s2["t"] == "0" and s2["src"] == s0["src"]
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    s3 = _state(page, handle)
    assert s3["t"] == "2" and s3["slider"] == "2" and s3["src"] != s2["src"]
    assert s3["values"] != s2["values"] and s3["cursor"] != s2["cursor"]

    # 3. the step buttons and play
    root.locator("button[data-act=last]").click()
    assert _state(page, handle)["t"] == str(n - 1)
    root.locator("button[data-act=play]").click()  # at the end, play restarts from 0
    page.wait_for_timeout(400)
    assert int(_state(page, handle)["t"]) >= 1

    # 4. ipywidgets output (the tab widget) rendered by the vendored widget manager
    page.wait_for_selector(".jupyter-widgets.widget-tab, .lm-TabBar, .p-TabBar", timeout=15000)
    tab_titles = page.locator(".lm-TabBar-tabLabel, .p-TabBar-tabLabel").all_inner_texts()
    assert "steering" in tab_titles, tab_titles
    page.screenshot(path=str(tmp_path / "tour.png"), full_page=True)

    assert not errors, f"JavaScript errors on the page: {errors}"
    outside = [u for u in requests
               if urlparse(u).scheme not in ("data", "blob", "about") and not u.startswith(server)]
    assert not outside, f"requests left 127.0.0.1: {outside}"
    assert not [u for u in failed if u.startswith(server)], f"local requests failed: {failed}"


def test_every_page_loads_offline(server: str, browser, built_book: Path):
    """Every page of the book loads with no request leaving 127.0.0.1 and no JavaScript error."""
    page = browser.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    pages = sorted(p.relative_to(built_book).as_posix() for p in built_book.rglob("*.html")
                   if "_static" not in p.parts and p.name not in ("genindex.html", "search.html"))
    for rel in pages:
        page.goto(f"{server}/{rel}", wait_until="networkidle")
    outside = sorted({u for u in requests
                      if urlparse(u).scheme not in ("data", "blob", "about") and not u.startswith(server)})
    assert not outside, f"requests left 127.0.0.1: {outside}"
    assert not errors, f"JavaScript errors: {errors}"
