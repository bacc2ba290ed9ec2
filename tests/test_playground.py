"""The playground in a real browser (Debian's headless Chromium via selenium) against the real server.

Screenshots of the finished comparison go to $R2T2_SCREENSHOT_DIR when set (how docs/playground.png is made),
otherwise to the test's temporary directory.
"""
from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    from conftest import RealServer

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,800")
STRATEGIES = ("none", "kernel", "meanshift", "ngd")
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail("Debian's chromium and chromium-driver are needed: `make browser` installs them")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: WebDriver) -> list[str]:
    """Console messages at error level since the last call (reading the log empties it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def waiting(driver: WebDriver, timeout_s: float) -> WebDriverWait:
    """A wait that polls again when the page re-rendered an element between finding and reading it."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support import ui

    return ui.WebDriverWait(driver, timeout_s, ignored_exceptions=(StaleElementReferenceException,))


def open_page(driver: WebDriver, base: str) -> None:
    driver.get(base + "/playground")  # the redirect to /playground/ is part of what is tested
    waiting(driver, 60).until(lambda d: d.find_element("css selector", "body").get_attribute("data-ready"))


def run_comparison(driver: WebDriver) -> dict[str, object]:
    """Submit the form and wait until every strategy's card has finished; returns the cards by strategy."""
    driver.find_element("id", "run").click()
    waiting(driver, RUN_TIMEOUT_S).until(lambda d: len(d.find_elements(
        "css selector", "#results .card.done, #results .card.failed")) == len(STRATEGIES))
    return {c.get_attribute("data-strategy"): c for c in driver.find_elements("css selector", "#results .card")}


def screenshot(driver: WebDriver, path: Path, width: int) -> None:
    """The whole page laid out `width` CSS pixels wide, which it must fit (emulated: headless windows have a
    minimum width above a phone's)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    try:
        scroll_width, height = driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        assert scroll_width <= width, f"the page is {scroll_width} px wide in a {width} px window"
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
        path.write_bytes(base64.b64decode(shot["data"]))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_compares_the_four_strategies_for_every_model(real_server: RealServer, browser: WebDriver,
                                                      tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    cards = {m["id"]: m for m in httpx.get(real_server.base + "/v1/models", timeout=30).json()["data"]}
    shots = Path(os.environ.get("R2T2_SCREENSHOT_DIR") or tmp_path)
    open_page(browser, real_server.base)
    assert console_errors(browser) == []
    assert [o.get_attribute("value") for o in Select(browser.find_element("id", "model")).options] == list(
        real_server.models)
    browser.find_element("id", "opt-k").send_keys("3")  # an edited option reaches every request
    for model in real_server.models:
        weights = sum(len(row["experts"]) for row in cards[model]["routing_rows"])  # vision and LM rows
        rows = len(cards[model]["routing_rows"])
        Select(browser.find_element("id", "model")).select_by_value(model)
        browser.find_element("css selector", "#samples button.sample").click()
        assert browser.find_element("id", "question-text").get_attribute("value").endswith("?")
        found = run_comparison(browser)
        assert set(found) == set(STRATEGIES)
        for strategy, card in found.items():
            failure = card.find_elements("css selector", ".error-message")
            assert not failure, f"{model} {strategy}: {failure[0].text}"
            assert card.find_element("css selector", ".answer-text").text.strip(), f"{model} {strategy}: no answer"
            assert len(card.find_elements("css selector", ".routing-row")) == rows
            assert len(card.find_elements("css selector", ".routing .bar")) == 2 * weights
            assert card.find_element("css selector", ".stage-list .total + dd").text.endswith("ms")
            assert card.find_element("css selector", ".why").text.strip(), f"{model} {strategy}: no explanation"
        for strategy in ("kernel", "ngd"):  # k=3 neighbours, copies of one question shown once with their count
            groups = found[strategy].find_elements("css selector", "ol.neighbours li")
            assert sum(int(g.get_attribute("data-count")) for g in groups) == 3, strategy
        for strategy in ("ngd", "meanshift"):  # NGD's loss per step, mean shift's distance per update
            assert found[strategy].find_elements("css selector", "svg.loss polyline"), f"no {strategy} trace"
        # Every axis label lies inside its chart (none is cut at the left edge).
        assert browser.execute_script(
            "return [...document.querySelectorAll('svg.loss text')].every((t) => t.getBBox().x >= 0)")
        assert console_errors(browser) == [], model
        slug = model.removeprefix("r2t2-")
        screenshot(browser, shots / f"playground-{slug}.png", 1280)
        screenshot(browser, shots / f"playground-{slug}-narrow.png", 400)


def test_a_bad_image_shows_the_apis_error(real_server: RealServer, browser: WebDriver, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    open_page(browser, real_server.base)
    browser.find_element("id", "image-file").send_keys(str(text))
    browser.find_element("id", "question-text").send_keys("what color is the shape?")
    found = run_comparison(browser)
    direct = httpx.post(real_server.base + "/v1/chat/completions", timeout=60, json={
        "model": real_server.model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what color is the shape?"},
            {"type": "image_url", "image_url": {"url": "data:text/plain;base64,"
                                                       + base64.b64encode(text.read_bytes()).decode()}}]}]})
    assert direct.status_code == 415, direct.text
    message = direct.json()["error"]["message"]
    for strategy, card in found.items():
        assert card.find_element("css selector", ".error-message").text == f"Error: {message}", strategy


def test_indexes_panel_lists_describes_and_rebuilds(real_server: RealServer, browser: WebDriver) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, real_server.base)
    listed = {r.get_attribute("data-index") for r in browser.find_elements("css selector", "#indexes-table tbody tr")}
    assert {"embedded"} <= listed
    browser.find_element("css selector", "#indexes-table tr[data-index=embedded] button").click()
    manifest = waiting(browser, 30).until(lambda d: d.find_element("css selector", "#index-detail .manifest"))
    assert '"model_fingerprint"' in manifest.get_attribute("textContent")

    def start_rebuild(token: str) -> None:
        for field, value in (("rebuild-name", "playground"), ("rebuild-token", token), ("rebuild-cap", "20")):
            browser.find_element("id", field).clear()
            browser.find_element("id", field).send_keys(value)
        dataset = browser.find_element("id", "rebuild-dataset")
        dataset.clear()
        dataset.send_keys('{"source": "builtin", "split": "reference", "limit": 24}')
        Select(browser.find_element("id", "rebuild-model")).select_by_value(real_server.model)
        browser.find_element("id", "rebuild-start").click()

    start_rebuild("wrong-token")
    refused = waiting(browser, 30).until(lambda d: d.find_element("css selector", "#rebuild-job .alert"))
    assert refused.text.startswith("Error: ") and "token" in refused.text.lower()
    start_rebuild(real_server.admin_token)
    waiting(browser, 30).until(lambda d: d.find_element("css selector", "#job-progress"))

    def finished(driver: WebDriver) -> str | None:
        state = driver.find_element("css selector", "#rebuild-job .job-state").get_attribute("textContent")
        return state if state in ("succeeded", "failed") else None

    assert waiting(browser, 180).until(finished) == "succeeded", browser.find_element("id", "rebuild-job").text
    waiting(browser, 30).until(lambda d: d.find_elements("css selector", "#indexes-table tr[data-index=playground]"))


def test_the_rebuild_form_shows_only_where_admin_calls_are_on(real_server: RealServer, browser: WebDriver) -> None:
    """The session's /torch app runs without an admin token: the page says how to turn admin calls on instead."""
    for base, admin in ((real_server.base, True), (real_server.base + "/torch", False)):
        assert httpx.get(base + "/v1/indexes", timeout=30).json()["admin_enabled"] is admin
        open_page(browser, base)  # ready once the indexes are listed
        assert browser.find_element("id", "rebuild-form").is_displayed() is admin
        assert browser.find_element("id", "rebuild-off").is_displayed() is not admin
    assert "R2T2_ADMIN_TOKEN" in browser.find_element("id", "rebuild-off").text


def test_a_verified_answer_is_sent_and_the_index_shows_its_growth(real_server: RealServer,
                                                                  browser: WebDriver) -> None:
    """Press "right" under one strategy's answer: the outcome shows inline, and the indexes panel counts the
    references verified answers added. They grow an index of their own, so the default index stays as it was."""
    from selenium.webdriver.support.ui import Select

    from conftest import wait_for_job

    index, strategy = "playground-verified", "kernel"
    rebuilt = httpx.post(f"{real_server.base}/v1/indexes/{index}/rebuild", timeout=30,
                         headers={"Authorization": f"Bearer {real_server.admin_token}"},
                         json={"dataset": {"source": "builtin", "split": "reference", "limit": 24},
                               "model": real_server.model})
    assert rebuilt.status_code == 202, rebuilt.text
    assert wait_for_job(real_server, rebuilt.json()["id"])["state"] == "succeeded"

    open_page(browser, real_server.base)  # lists the new index among the model's choices
    console_errors(browser)  # earlier tests' refused calls stay out of this one's check
    Select(browser.find_element("id", "model")).select_by_value(real_server.model)
    Select(browser.find_element("id", "opt-index")).select_by_value(index)
    browser.find_element("css selector", "#samples button.sample").click()
    found = run_comparison(browser)
    failure = found[strategy].find_elements("css selector", ".error-message")
    assert not failure, failure[0].text
    assert found[strategy].find_element("css selector", ".verify").get_attribute("data-completion-id").startswith(
        "chatcmpl-")

    token = browser.find_element("id", "verify-token")
    token.clear()
    browser.find_element("id", f"verify-right-{strategy}").click()  # no token yet: the page asks for it
    asked = waiting(browser, 10).until(lambda d: d.find_element("id", f"verify-outcome-{strategy}").get_attribute(
        "data-status") == "no-token" and d.find_element("id", f"verify-outcome-{strategy}"))
    assert "token" in asked.text.lower()

    token.send_keys(real_server.feedback_token)
    assert browser.execute_script("return sessionStorage.getItem('r2t2.verifyToken')") == real_server.feedback_token
    browser.find_element("id", f"verify-right-{strategy}").click()

    def outcome(driver: WebDriver) -> str | None:
        status = driver.find_element("id", f"verify-outcome-{strategy}").get_attribute("data-status")
        return status if status in ("added", "duplicate", "refused", "error") else None

    status = waiting(browser, 120).until(outcome)
    text = browser.find_element("id", f"verify-outcome-{strategy}").text
    assert status in ("added", "duplicate", "refused"), text
    assert text.startswith(status), text

    def growth(driver: WebDriver) -> str | None:
        counts = driver.find_elements("css selector", f'#indexes-table tr[data-index="{index}"] .verified-count')
        return counts[0].text if counts else None

    shown = waiting(browser, 30).until(growth)
    assert re.fullmatch(r"\(\d+ from verified answers\)", shown), shown
    cell = browser.find_element("css selector", f'#indexes-table tr[data-index="{index}"] .growth')
    assert int(cell.get_attribute("data-references")) >= int(cell.get_attribute("data-verified"))
    if status == "added":
        assert int(cell.get_attribute("data-verified")) >= 1
    assert console_errors(browser) == []
