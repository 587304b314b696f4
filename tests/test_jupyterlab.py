"""The live path: JupyterLab in headless Chromium runs the tour, and the scrubber's Python callbacks work.

Starts `jupyter lab` from this environment on 127.0.0.1, opens notebooks/00_tour.ipynb, runs all cells,
then presses → on the scrubber's slider and asserts that the frame image, the values at the cursor and
the slider readout change (the update round-trips through the kernel). A reader's "open notebooks/ in
JupyterLab and execute cell by cell" is exactly this.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (make test-deps) to run the browser test")
    jupyter = Path(sys.executable).parent / "jupyter"
    if not jupyter.exists():
        pytest.skip("jupyter is not installed in this environment (pip install -e '.[book]')")
    port = _free_port()
    log = tmp_path_factory.mktemp("lab") / "lab.log"
    env = {**os.environ, "WMKIT_PROFILE": "smoke", "JUPYTER_CONFIG_DIR": str(log.parent / "cfg")}
    env.pop("WMKIT_RENDER", None)
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1", "--allow-root",
         "--IdentityProvider.token=wmkit-test", f"--ServerApp.root_dir={ROOT}"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"jupyter lab did not start:\n{log.read_text()[-3000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tour_scrubber_is_live_in_jupyterlab(lab: str):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{lab}/lab/tree/notebooks/00_tour.ipynb?token=wmkit-test")
        page.wait_for_selector(".jp-Notebook", timeout=90_000)
        # the kernel must be up before "Run All Cells" (the status bar says "| Idle")
        page.get_by_text("| Idle").first.wait_for(timeout=90_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").click()
        page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()

        slider = page.locator(".widget-slider").first  # the tour's only slider: the scrubber's
        slider.wait_for(timeout=120_000)
        box = slider.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]")
        img = box.locator("img").first
        values = box.locator(".widget-html").last
        readout = slider.locator(".widget-readout")
        before = (img.get_attribute("src"), values.inner_text(), readout.inner_text())
        assert before[2] == "0"

        slider.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.wait_for_function("(el) => el.innerText === '2'", arg=readout.element_handle(), timeout=30_000)
        # the Python callback re-encodes the frame and the values; wait for the round trip
        page.wait_for_function("([el, old]) => el.getAttribute('src') !== old",
                               arg=[img.element_handle(), before[0]], timeout=30_000)
        # the values are a second widget, updated by a second message: the image can arrive first (seen on a
        # slow host, where the values were read between the two), so wait for them too, and fail if they never come
        try:
            page.wait_for_function("([el, old]) => el.innerText !== old",
                                   arg=[values.element_handle(), before[1]], timeout=30_000)
        except sync_api.TimeoutError:
            pass                                           # the assertion below reports it
        after = (img.get_attribute("src"), values.inner_text(), readout.inner_text())
        assert after[2] == "2"
        assert after[1] != before[1], f"values at the cursor did not update: {after[1]!r}"
        assert "reward" in after[1]
        browser.close()
