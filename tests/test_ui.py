"""The web UI in headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium with explicit paths: nothing is downloaded) against real daemons."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.helpers.cluster import setup_plan, wait_points, wait_rest
from tests.helpers.disks import MiB, make_disk, write_at
from tests.peers.tools import require_tool
from tools.localcluster import Cluster

pytestmark = pytest.mark.e2e

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run")
WAIT = 60


@pytest.fixture
def browser():
    chromium = require_tool("chromium")
    chromedriver = require_tool("chromedriver")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="dr-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(executable_path=chromedriver),
                                  options=options)
        try:
            yield driver
        finally:
            driver.quit()


def _plan_cell(driver, cls: str, plan: str = "plans/p1") -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    try:
        return driver.find_element(
            "css selector", f'tr.plan[data-plan="{plan}"] td.{cls}').text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _wait(driver, predicate, what: str):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(
        lambda d: predicate(d), message=f"waiting for {what}")


def test_dashboard_shows_rpo_and_run_now_shows_progress(cluster: Cluster, browser):
    c = cluster
    disk = c.src / "vm1.img"
    make_disk(disk, 16 * MiB, [(0, 2 * MiB)])
    plan = setup_plan(c)
    wait_points(c, plan, 1)
    wait_rest(c)
    # Slow the next cycle down so that its progress is visible while it runs.
    c.drctl("plan", "update", plan, "--bandwidth", "1MiB/s")
    write_at(disk, 4 * MiB, os.urandom(6 * MiB))

    browser.get(c.rest_url + "/")
    _wait(browser, lambda d: _plan_cell(d, "rpo") == "met", "plan p1 with RPO met")
    assert _plan_cell(browser, "points-count") == "1"
    assert "s of 3600 s" in _plan_cell(browser, "lag")
    assert browser.find_element("id", "role").text == "admin"
    _wait(browser, lambda d: d.find_elements("css selector", 'tr.node[data-node="nodes/n1"]'),
          "node n1 listed")

    browser.find_element("css selector", 'tr.plan[data-plan="plans/p1"] button.run').click()
    # The running cycle appears with a progress bar (watermark bytes / total).
    running = _wait(browser, lambda d: d.find_elements(
        "css selector", "#cycles .running-cycle progress"), "a running cycle's progress")
    assert running[0].get_attribute("max") == str(16 * MiB)
    # ... and ends as a second recovery point, its cycle complete.
    _wait(browser, lambda d: _plan_cell(d, "points-count") == "2", "a second recovery point")
    _wait(browser, lambda d: "completed" in _plan_cell(d, "last-cycle"), "the cycle completed")
    bar = browser.find_element("css selector",
                               'tr.plan[data-plan="plans/p1"] td.last-cycle progress')
    assert bar.get_attribute("value") == bar.get_attribute("max") == str(16 * MiB)
    # Points are listed with a restore action for an admin.
    assert len(browser.find_elements("css selector",
                                     'table.points[data-plan="plans/p1"] tr.point')) == 2
    assert browser.find_elements("css selector", "button.restore")


def test_viewer_token_sees_no_actions(tmp_path: Path, browser):
    with Cluster(tmp_path, auth=True) as c:
        make_disk(c.src / "vm1.img", 4 * MiB, [(0, MiB)])
        plan = setup_plan(c)
        wait_points(c, plan, 1)
        viewer = c.create_token("watcher", "viewer").read_text().strip()
        operator = c.create_token("oncall", "operator").read_text().strip()
        wait_rest(c, c.admin_token_file)

        # Without a token the page says what is wrong.
        browser.get(c.rest_url + "/")
        _wait(browser, lambda d: "UNAUTHENTICATED" in d.find_element("id", "error").text,
              "an authentication error")

        browser.get(c.rest_url + f"/?token={viewer}")
        _wait(browser, lambda d: _plan_cell(d, "rpo") == "met", "plan p1 for the viewer")
        assert browser.find_element("id", "role").text == "viewer (watcher)"
        assert "token=" not in browser.current_url
        assert _plan_cell(browser, "points-count") == "1"
        assert not browser.find_elements("css selector", "button.run, button.pause, "
                                         "button.resume, button.restore")

        # Entering an operator token in the field brings the actions.
        browser.find_element("id", "token").send_keys(operator)
        browser.find_element("id", "save-token").click()
        _wait(browser, lambda d: d.find_elements(
            "css selector", 'tr.plan[data-plan="plans/p1"] button.pause'), "operator actions")
        assert browser.find_element("id", "role").text == "operator (oncall)"
