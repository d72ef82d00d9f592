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


# Recovery: the cheapest execution that really runs is a kvm site whose VM's kernel QEMU
# cannot boot: the point's disk is written as a qcow2, then the launch fails fast, so
# the execution ends "failed" with a real per-workload row and every step's event. A
# first boot group's delay keeps an execution running (for cancel) without a VM.
def _recovery_site(c: Cluster, tmp_path: Path) -> Path:
    from tests.helpers.cluster import protect_file_source
    from tests.peers.tools import require_qemu
    require_qemu()
    protect_file_source(c)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"not a kernel" * 100)
    (c.root / "kvm").mkdir()
    c.drctl("site", "add", "rs", "--kind", "kvm", "--path", str(c.root / "kvm"))
    return kernel


def _recovery_plan(c: Cluster, rp: str, kernel: Path, delay: int = 0) -> None:
    from tests.helpers.cluster import rest_call
    workload = {"workload": "sites/src/workloads/vm1",
                "kvm": {"memory_mib": 64, "kernel": str(kernel)},
                "checks": [{"kind": "tcp", "port": 22}, {"kind": "tcp", "port": 80}],
                # Reads its JSON: a script that exits before dr-control writes it can
                # fail the execution "internal" (recovery/scripts.py, under uvloop).
                "pre_scripts": [{"command": "cat >/dev/null"}]}
    status, got = rest_call(c, "/v1/recoveryPlans", "POST", {
        "recovery_plan_id": rp, "recovery_plan": {
            "protection_plan": "plans/p1", "recovery_site": "sites/rs",
            "boot_groups": [{"name": "db", "delay_seconds": delay, "workloads": [workload]}]}},
        token_file=c.admin_token_file)
    assert status == 200, got


def _text(driver, css: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    try:
        return driver.find_element("css selector", css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _click(driver, css: str, until=None) -> None:
    """Clicks `css` once it is there, again until `until(driver)` holds: a poll that
    re-renders a part above it (the forecast, once an execution ends) can move it between
    Selenium finding it and clicking it, and the click lands beside it."""
    from selenium.common.exceptions import (NoSuchElementException,
                                            StaleElementReferenceException, TimeoutException)
    from selenium.webdriver.support.ui import WebDriverWait

    def clicked(d):
        try:
            d.find_element("css selector", css).click()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        if until is None:
            return True
        try:
            return WebDriverWait(d, 10, poll_frequency=0.1).until(lambda d: until(d))
        except TimeoutException:
            return False
    _wait(driver, clicked, f"clicking {css}")


def test_recovery_plan_run_execution_results_cleanup_and_cancel(cluster: Cluster, browser,
                                                                tmp_path: Path):
    c = cluster
    kernel = _recovery_site(c, tmp_path)
    _recovery_plan(c, "rp1", kernel)
    _recovery_plan(c, "rp2", kernel, delay=600)
    wait_rest(c)

    browser.get(c.rest_url + "/")
    row = 'tr.recovery-plan[data-recovery-plan="recoveryPlans/rp1"]'
    _wait(browser, lambda d: _text(d, row + " td.protection-plan") == "plans/p1",
          "recovery plan rp1 listed")
    assert _text(browser, row + " td.recovery-site") == "sites/rs"
    assert _text(browser, row + " td.groups-count") == "1"
    assert _text(browser, row + " td.workloads-count") == "1"
    assert _text(browser, row + " td.failed-over-by") == "never"

    # The plan's detail: its boot groups, its RTO forecast's parts, no executions yet.
    group = '#recovery-plan tr.boot-group[data-group="db"]'
    _click(browser, row + " button.open-recovery-plan",
           lambda d: _text(d, group + " td.group-checks") == "2")
    assert _text(browser, group + " td.group-workloads") == "sites/src/workloads/vm1"
    assert _text(browser, group + " td.group-delay") == "0 s"
    assert _text(browser, group + " td.group-scripts") == "1"
    parts = browser.find_elements("css selector", "#recovery-plan dd.forecast-part")
    assert len(parts) == 6 and all(p.text.endswith(" s") for p in parts)
    assert _text(browser, "#recovery-plan dd.forecast-last") == "none yet"
    assert float(_text(browser, "#recovery-plan dd.forecast-rto").split()[0]) > 0
    assert browser.find_elements("css selector", "#recovery-plan button.start-failover")
    assert browser.find_elements("css selector", "#recovery-plan button.start-migrate")

    # Run a test: the execution's view follows it live to its end.
    _click(browser, "#recovery-plan button.start-test",
           lambda d: "recoveryPlans/rp1/" in _text(d, "#execution h3"))
    _wait(browser, lambda d: _text(d, "#execution .execution-state") == "failed",
          "the execution to fail at the VM's launch")
    result = '#execution tr.workload-result[data-workload="sites/src/workloads/vm1"]'
    assert "QEMU did not start" in _text(browser, "#execution .execution-error")
    assert _text(browser, result + " td.group") == "db"
    assert _text(browser, result + " td.state") == "failed"
    assert _text(browser, result + " td.checks-count") == "0/0"  # never launched
    assert "QEMU" in _text(browser, "#execution .execution-error")
    steps = [e.get_attribute("data-step") for e in
             browser.find_elements("css selector", "#execution tr.event")]
    assert steps[0] == "started" and "disk-prepared" in steps and steps[-1] == "failed", steps
    assert "test" in _text(browser, '#execution tr.event[data-step="started"] td.detail')
    # Ended: it can be cleaned up, not cancelled.
    assert not browser.find_elements("css selector", "#execution button.cancel")
    _wait(browser, lambda d: _text(d, '#recovery-plan tr.execution td.state') == "failed",
          "the execution in the plan's list")
    _click(browser, "#execution button.cleanup",
           lambda d: not d.find_elements("css selector", "#execution button.cleanup"))
    _wait(browser, lambda d: _text(d, "#execution .execution-state") == "cleaned-up",
          "the execution cleaned up")
    _wait(browser, lambda d: not d.find_elements("css selector", "#execution button.cleanup"),
          "no cleanup once cleaned up")
    assert list((c.root / "kvm").iterdir()) == []

    # A running execution (its first group waits out a delay) can be cancelled.
    _click(browser, 'tr.recovery-plan[data-recovery-plan="recoveryPlans/rp2"] '
                    'button.open-recovery-plan',
           lambda d: _text(d, '#recovery-plan tr.boot-group td.group-delay') == "600 s")
    _click(browser, "#recovery-plan button.start-test",
           lambda d: "recoveryPlans/rp2/" in _text(d, "#execution h3"))
    _wait(browser, lambda d: "recoveryPlans/rp2/" in _text(d, "#execution h3") and
          any(e.get_attribute("data-step") == "group-delayed"
              for e in d.find_elements("css selector", "#execution tr.event")),
          "rp2's execution waiting out its delay")
    assert _text(browser, "#execution .execution-state") == "running"
    assert not browser.find_elements("css selector", "#execution button.cleanup")
    _click(browser, "#execution button.cancel",
           lambda d: not d.find_elements("css selector", "#execution button.cancel"))
    _wait(browser, lambda d: _text(d, "#execution .execution-state") == "cancelled",
          "the execution cancelled")
    assert _text(browser, result + " td.state") in ("not-started", "pending")


def test_recovery_viewer_sees_no_actions_operator_does(tmp_path: Path, browser):
    from tests.helpers.cluster import rest_call
    with Cluster(tmp_path, auth=True) as c:
        kernel = _recovery_site(c, tmp_path)
        viewer = c.create_token("watcher", "viewer").read_text().strip()
        operator = c.create_token("oncall", "operator").read_text().strip()
        wait_rest(c, c.admin_token_file)
        _recovery_plan(c, "rp1", kernel)
        status, started = rest_call(c, "/v1/recoveryPlans/rp1:start", "POST", {"mode": "test"},
                                    token_file=c.admin_token_file)
        assert status == 200, started

        browser.get(c.rest_url + f"/?token={viewer}")
        row = 'tr.recovery-plan[data-recovery-plan="recoveryPlans/rp1"]'
        _click(browser, row + " button.open-recovery-plan",
               lambda d: d.find_elements("css selector", "#recovery-plan tr.boot-group"))
        _wait(browser, lambda d: _text(d, "#recovery-plan tr.execution td.state") == "failed",
              "the ended execution listed for the viewer")
        _click(browser, "#recovery-plan tr.execution button.view-execution", lambda d: _text(
            d, "#execution tr.workload-result td.state") == "failed")
        assert browser.find_elements("css selector", "#execution tr.event")
        actions = ("button.start-test, button.start-failover, button.start-migrate, "
                   "button.cancel, button.cleanup")
        assert not browser.find_elements("css selector", actions)

        browser.find_element("id", "token").send_keys(operator)
        browser.find_element("id", "save-token").click()
        _wait(browser, lambda d: d.find_elements("css selector", "#execution button.cleanup"),
              "the operator's cleanup button")
        assert browser.find_element("id", "role").text == "operator (oncall)"
        for action in ("start-test", "start-failover", "start-migrate"):
            assert browser.find_elements("css selector", f"#recovery-plan button.{action}")
