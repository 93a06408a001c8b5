# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The demo app (`app.py`) end to end in a real headless browser: `python app.py` serves a tiny random model (both
heads) on a free port, Chromium (driven by selenium through the system's chromedriver) types titles, adds two items,
asks for recommendations and reads the rendered lists, which must be `recommend` and `generate_items` on the same
history; then a test user's history, with the held-out item marked. Skipped, with the reason, where no Chromium or
chromedriver is installed (Debian: `apt-get install chromium chromium-driver`). The logic is `tests/test_demo.py`'s."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mmesid_testing import REPO, build_tiny_demo_run


BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    BROWSER is None or DRIVER is None,
    reason="no Chromium and chromedriver on PATH (Debian: `apt-get install chromium chromium-driver`); "
    "the browser test of app.py needs both",
)
STARTUP_S = 240  # importing torch, transformers and gradio on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`python app.py` on a tiny run, as a user starts it; yields the URL and the run folder, then stops it."""
    pytest.importorskip("gradio", reason="gradio is not installed (`pip install -e '.[demo]'`)")
    run = build_tiny_demo_run(tmp_path_factory.mktemp("app"))
    port, log = _free_port(), run / "app.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    url = f"http://127.0.0.1:{port}/"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--model", str(run / "finetune" / "model"),
                                 "--host", "127.0.0.1", "--port", str(port)], cwd=run, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + STARTUP_S
            while True:
                try:
                    urllib.request.urlopen(url, timeout=5)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        out.flush()
                        pytest.fail(f"app.py did not serve {url} (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
                    time.sleep(1)
            yield {"url": url, "run": run}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the `dev` extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1500"):
        options.add_argument(arg)
    # the system's chromedriver: Selenium Manager would try to download one, which offline fails
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _ids(driver, selector: str) -> list[int]:
    return [int(e.get_attribute("data-item-id")) for e in _css(driver, selector)]


def add_by_title(driver, query: str, title: str) -> None:
    """Type `query` in the search box, click the match whose label is `title (#id)`, press "Add to history"."""
    box = _css(driver, "#search textarea, #search input")[0]
    box.clear()
    box.send_keys(query)
    match = _wait(driver, lambda d: [e for e in _css(d, "#matches label") if e.text.startswith(f"{title} (#")])[0]
    match.click()
    before = len(_css(driver, "#history-list li"))
    _css(driver, "#add")[0].click()
    _wait(driver, lambda d: len(_css(d, "#history-list li")) == before + 1)


def recommend(driver, history: list[int]) -> tuple[list[int], list[int]]:
    """Press "Recommend"; once both results say they are for `history` (`data-history`), the item ids of the ranked
    rows and of the beams, in their rendered order."""
    _css(driver, "#recommend")[0].click()
    key = ",".join(map(str, history))
    for view in ("#ranking", "#generation"):
        _wait(driver, lambda d, view=view: _css(d, f'{view}[data-history="{key}"] tr[data-item-id]'))
    return _ids(driver, "#ranking tr[data-item-id]"), _ids(driver, "#generation tr[data-item-id]")


def test_type_titles_add_two_items_and_read_the_recommendations(served, browser, tmp_path):
    from transformers import AutoModel, AutoProcessor

    import modeling_mmesid  # registers the Auto classes

    browser.get(served["url"])
    _wait(browser, lambda d: _css(d, "#search textarea, #search input"))
    add_by_title(browser, "rose sham", "Rose Shampoo")  # item 41
    add_by_title(browser, "argan hair", "Argan Hair Oil")  # item 12
    history = _ids(browser, "#history-list li")
    assert history == [41, 12]
    ranked, beams = recommend(browser, history)

    folder = served["run"] / "finetune" / "model"
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    recommender = modeling_mmesid.MMESIDRecommender(model, processor)
    assert ranked == recommender.recommend([history], k=10)[0].tolist()
    assert beams == recommender.recommend([history], k=10, method="generate")[0].tolist()
    rows = _css(browser, "#ranking tr[data-item-id]")
    assert rows[0].text.split()[0] == "1" and str(ranked[0]) in rows[0].text and "held-out" not in rows[0].text
    _css(browser, "#remove-last")[0].click()
    _wait(browser, lambda d: len(_css(d, "#history-list li")) == 1)
    assert _ids(browser, "#history-list li") == [41]

    # a test user: the history of the test split, the held-out item marked where it is recommended. User 31 bought
    # items 1..49 before item 50, so 50 is the only candidate left.
    user = _css(browser, "#user input")[0]
    user.clear()
    user.send_keys("31")
    _css(browser, "#show-user")[0].click()
    _wait(browser, lambda d: len(_css(d, "#history-list li")) == 49)
    assert _ids(browser, "#history-list li") == list(range(1, 50))
    ranked, beams = recommend(browser, list(range(1, 50)))
    assert ranked == beams == [50]
    row = _css(browser, "#ranking tr[data-item-id]")[0]
    assert "held-out" in row.get_attribute("class") and "held-out" in row.text
    assert "ranks 1 of 1 candidates" in _css(browser, "#ranking")[0].text

    shot = tmp_path / "app.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
