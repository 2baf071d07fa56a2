"""The demo page at ``/`` in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) against a real ``recsys serve`` process.

The set-up installs the browser with apt-get when it is missing and skips, saying why, when
that is impossible (no root, no apt, no network to the Debian mirror).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recsys.data import load_dataset
from recsys.pipeline import Pipeline
from recsys.serving.testing import ServerProcess
from recsys.testing import small_hybrid_config

pytestmark = [pytest.mark.integration, pytest.mark.realdata]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def _browser_paths() -> tuple[str | None, str | None]:
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Paths of Debian's chromium and chromedriver, installed with apt-get when missing."""
    browser, driver = _browser_paths()
    if not (browser and driver):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("chromium/chromedriver missing and apt-get is unavailable (not root?)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
        try:
            done = subprocess.run(install, capture_output=True, text=True, timeout=900, env=env)
            if done.returncode != 0:  # a stale package list: update once and retry
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
                done = subprocess.run(install, capture_output=True, text=True, timeout=900, env=env)
        except subprocess.TimeoutExpired:
            pytest.skip("installing chromium with apt-get timed out")
        browser, driver = _browser_paths()
        if not (browser and driver):
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"could not install chromium with apt-get: {tail[0]}")
    return browser, driver


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server over a MovieLens 100K hybrid artifact (the small test configuration)."""
    tmp = tmp_path_factory.mktemp("page")
    data = load_dataset("ml-100k")
    artifact = Pipeline.fit(
        data.interactions,
        items=data.items,
        users=data.users,
        config=small_hybrid_config(),
        show_progress=False,
    ).save(tmp / "artifact")
    args = ["--events-log", str(tmp / "events.jsonl")]
    with ServerProcess(artifact, log_path=tmp / "server.log", args=args) as server:
        yield server


@pytest.fixture
def browser(chromium: tuple[str, str]) -> Iterator[object]:
    """A headless Chromium session (Selenium WebDriver)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromium[1]), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_shows_history_and_recommendations(
    browser: object, page_server: ServerProcess, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 30)  # type: ignore[arg-type]

    def rows(table: str) -> list[list[str]]:
        # one script call reads the whole table, so a re-render cannot interleave
        script = (
            f"return Array.from(document.querySelectorAll('#{table} tbody tr'))"
            ".map(r => Array.from(r.cells).map(c => c.textContent))"
        )
        return driver.execute_script(script)  # type: ignore[attr-defined,no-any-return]

    def show(user: str) -> None:
        box = driver.find_element(By.ID, "user-id")  # type: ignore[attr-defined]
        box.clear()
        box.send_keys(user)
        driver.find_element(By.ID, "show").click()  # type: ignore[attr-defined]

    driver.get(page_server.url + "/")  # type: ignore[attr-defined]
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    options = driver.find_elements(By.CSS_SELECTOR, "#user-ids option")  # type: ignore[attr-defined]
    assert len(options) == 500 and options[0].get_attribute("value") == "1"
    assert driver.find_element(By.ID, "model-version").text.startswith("model ")  # type: ignore[attr-defined]

    # a known user: history with genres, ten recommendations with sources and scores
    show("196")
    wait.until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded-user") == "196"
    )
    history, recs = rows("history"), rows("recommendations")
    assert len(history) == 39 and all(r[3] == "training" for r in history)
    assert all(r[2] for r in history)  # every MovieLens movie has a genre
    assert [r[0] for r in recs] == [str(i) for i in range(1, 11)]
    # the scores and sources the API gives for the same list
    api = httpx.get(page_server.url + "/recommend/196", params={"k": 10}).json()["items"]
    assert [r[1] for r in recs] == [str(it["item_id"]) for it in api]
    assert [r[5] for r in recs] == [", ".join(it["sources"]) for it in api]
    assert all(r[5] and r[5] != "popular" for r in recs)
    assert driver.find_element(By.ID, "strategy").text == "personalized"  # type: ignore[attr-defined]
    driver.save_screenshot(str(tmp_path / "page.png"))  # type: ignore[attr-defined]

    # "seen it" sends an event: the item moves to the history and leaves the list
    first_item = recs[0][1]
    driver.find_elements(By.CSS_SELECTOR, "#recommendations tbody button")[0].click()  # type: ignore[attr-defined]
    wait.until(lambda d: rows("history")[0][0] == first_item)
    assert rows("history")[0][3] == "event"
    assert first_item not in [r[1] for r in rows("recommendations")]

    # a genre filter
    Select(driver.find_element(By.ID, "genre")).select_by_visible_text("Comedy")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "show").click()  # type: ignore[attr-defined]
    wait.until(lambda d: all("Comedy" in r[3] for r in rows("recommendations")))

    # an unknown user: a cold-start answer and no history, never an error
    Select(driver.find_element(By.ID, "genre")).select_by_index(0)  # type: ignore[attr-defined]
    show("someone new")
    wait.until(lambda d: d.find_element(By.ID, "strategy").text == "cold_start")
    assert rows("history") == []
    assert "unknown user" in driver.find_element(By.ID, "history-count").text  # type: ignore[attr-defined]
    assert all(r[5] == "popular" for r in rows("recommendations"))
    assert driver.find_element(By.ID, "error").get_attribute("hidden") is not None  # type: ignore[attr-defined]

    severe = [
        e
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE"  # type: ignore[attr-defined]
    ]
    assert severe == []
