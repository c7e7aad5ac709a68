"""The dashboard's latency chart and freshness line in a real headless Chromium, against the
real service (``python -m broadcaster serve``, a subprocess, ``--broadcast-interval-ms 1000``)
and a real influxd holding an hour of the demo fleet written by the generator's own code.

Nothing is faked. The chart is checked twice over: uPlot's data (through the page's
``window.__dashboard.chart.describe()``) and the pixels of its canvas (each region's line
colour is drawn). Light and dark mode are switched with the DevTools protocol's
``Emulation.setEmulatedMedia`` (prefers-color-scheme), the phone with
``Emulation.setDeviceMetricsOverride``; screenshots of each go to ``.artifacts/``.
The fixtures ``browser`` and ``start_service`` are test_dashboard_browser's.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from demo.generator import InfluxWriter, batches
from demo.simulation import MINUTE_MS, POPS, Outage, Regression, Simulation
from tests.client import test_dashboard_browser
from tests.client.test_dashboard_browser import (
    WAIT_S,
    StartService,
    screenshot,
    visible_text,
    wait_for_text,
)
from tests.influxd import Influxd, free_ports

# test_dashboard_browser's fixtures, bound here so that they apply to this module only: its
# start_service (the service as a subprocess) overrides the root conftest's in-process one.
browser = test_dashboard_browser.browser
start_service = test_dashboard_browser.start_service

STEP_MS = 10_000  # the demo's write interval and latency-history's resolution
REGIONS = sorted({pop.region for pop in POPS})
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
# Counts, per line colour given (hex), the opaque canvas pixels within a small distance of it.
COUNT_COLOUR_PIXELS = """
const [colours] = arguments;
const canvas = document.querySelector('#latency-chart canvas');
const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
const rgb = colours.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
const counts = rgb.map(() => 0);
for (let i = 0; i < pixels.length; i += 4) {
  if (pixels[i + 3] < 200) continue;
  rgb.forEach(([r, g, b], k) => {
    const distance =
      Math.abs(pixels[i] - r) + Math.abs(pixels[i + 1] - g) + Math.abs(pixels[i + 2] - b);
    if (distance < 60) counts[k] += 1;
  });
}
return counts;
"""


class Fleet:
    """The demo fleet in one database: an hour of history up to ``last_ms``, more on demand."""

    def __init__(self, influx_url: str, database: str) -> None:
        self.url, self.database = influx_url, database
        now_ms = int(time.time() * 1000) // STEP_MS * STEP_MS
        # The history ends one step before now, so the round of `now_ms` (already in the past)
        # can be written later: a new point for the chart at the next tick.
        self.next_ms = now_ms
        self.simulation = Simulation(
            seed=7,
            regressions_per_pop_hour=0,
            outages_per_pop_hour=0,
            forced_regressions=[
                Regression("sin1", now_ms - 10 * MINUTE_MS, now_ms + 10 * MINUTE_MS, increase=1.0)
            ],
            forced_outages=[Outage("jnb1", now_ms - 2 * STEP_MS, now_ms + 10 * MINUTE_MS)],
        )
        self.write(range(now_ms - 60 * MINUTE_MS + STEP_MS, now_ms, STEP_MS))

    def write(self, times_ms: range) -> None:
        with httpx.Client(verify=False) as client:  # loopback HTTP: no CA bundle to load
            writer = InfluxWriter(client, self.url, self.database)
            for batch in batches(self.simulation.rounds(times_ms)):
                writer.write(batch)

    def write_next_round(self) -> int:
        """Write the round of ``next_ms`` (not in the future); its time in unix seconds."""
        written = self.next_ms
        self.write(range(written, written + 1))
        self.next_ms += STEP_MS
        return written // 1000


def chart(driver: WebDriver) -> dict[str, Any]:
    described = driver.execute_script(
        "const c = window.__dashboard && window.__dashboard.chart; return c ? c.describe() : null"
    )
    assert isinstance(described, dict), "the page has no chart"
    return described


def wait_for_chart(
    driver: WebDriver, expected: Any, what: str, timeout_s: float = WAIT_S
) -> dict[str, Any]:
    """Wait until ``expected(describe())`` holds; the description then."""
    seen: list[dict[str, Any]] = [{}]

    def check(driver: WebDriver) -> bool:
        seen[0] = chart(driver)
        return bool(expected(seen[0]))

    try:
        WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(check)
    except TimeoutException:
        raise AssertionError(
            f"the chart did not show {what} within {timeout_s} s: {seen[0]}"
        ) from None
    return seen[0]


def start(start_service: StartService, influxd: Influxd, database: str, driver: WebDriver) -> Any:
    ws_port, http_port = free_ports(2)
    service = start_service(ws_port, http_port, influxd.url, database)
    driver.get(f"http://127.0.0.1:{http_port}/")
    wait_for_text(driver, "connection-state", lambda t: t == "Connected", "Connected")
    return service


def set_color_scheme(driver: WebDriver, scheme: str) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"media": "", "features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )


def test_chart_draws_every_region_live_with_regressions_highlighted(
    browser: WebDriver,
    start_service: StartService,
    influxd: Influxd,
    influx_db: str,
    tmp_path: Path,
) -> None:
    fleet = Fleet(influxd.url, influx_db)
    began = time.monotonic()
    set_color_scheme(browser, "light")
    start(start_service, influxd, influx_db, browser)

    # 1. The chart (the page subscribed to latency-history itself): every region, an hour.
    drawn = wait_for_chart(browser, lambda c: c["regions"] == REGIONS, "every region")
    assert browser.find_element(By.ID, "latency-history").is_displayed()
    assert "latency-history" in browser.execute_script(
        "return window.__dashboard.client.subscribedTopics"
    )
    # An hour at 10 s is 359 rows; af-south (jnb1 only) misses the two rounds it is down.
    assert all(count >= 300 for count in drawn["points"].values()), drawn["points"]
    assert drawn["stat"] == "mean"
    assert drawn["width"] > 1000
    assert drawn["height"] >= 200
    # ... and each region's line is really on the canvas, in its own colour.
    counts = browser.execute_script(COUNT_COLOUR_PIXELS, drawn["colors"])
    print("pixels per region (light):", dict(zip(drawn["regions"], counts, strict=True)))
    assert all(count > 30 for count in counts), dict(zip(drawn["regions"], counts, strict=True))

    # 2. sin1's region is highlighted: thicker, marked in the legend and named above the chart.
    drawn = wait_for_chart(browser, lambda c: c["highlighted"] == ["ap-southeast"], "highlight")
    row = browser.find_element(By.CSS_SELECTOR, '.u-legend .u-series[data-region="ap-southeast"]')
    assert "regression" in (row.get_attribute("class") or "")
    assert "ap-southeast · regression" in row.text
    assert "ap-southeast" in visible_text(browser, "latency-history-regressions")
    others = browser.find_elements(By.CSS_SELECTOR, ".u-legend .u-series.regression")
    assert len(others) == 1

    screenshot(browser, tmp_path, "dashboard-chart-light.png")

    # 3. Hovering shows each region's value at that time in the legend.
    canvas = browser.find_element(By.CSS_SELECTOR, "#latency-chart .u-over")
    ActionChains(browser).move_to_element(canvas).perform()
    legend = WebDriverWait(browser, WAIT_S).until(
        lambda d: (t := d.find_element(By.CSS_SELECTOR, ".u-legend").text).count(" ms") >= 9 and t
    )
    assert "UTC" in legend  # the hovered time

    # 4. A new round in the database: a new point at the next tick (an append, not a reload).
    newest = drawn["newestTime"]
    load_id = browser.execute_script("return window.__loadId")
    written = fleet.write_next_round()
    assert written > newest
    drawn = wait_for_chart(browser, lambda c: c["newestTime"] == written, "the new round", 10)
    assert browser.execute_script("return window.__loadId") == load_id

    # 5. The freshness line: recent, not late, and it moves every second.
    line = visible_text(browser, "freshness")
    assert line.startswith("Data as of "), line
    assert line.endswith(" s ago"), line
    assert browser.find_element(By.ID, "freshness").get_attribute("data-late") == "false"
    wait_for_text(browser, "freshness", lambda t: t != line, "a new age", timeout_s=5)

    # 6. P95 instead of the mean: the same regions, the other column, the button pressed.
    browser.find_element(By.CSS_SELECTOR, '.stat-switch button[data-stat="p95"]').click()
    p95 = wait_for_chart(browser, lambda c: c["stat"] == "p95", "p95")
    assert p95["regions"] == REGIONS
    assert p95["newestTime"] == written
    pressed = browser.find_element(By.CSS_SELECTOR, '.stat-switch [aria-pressed="true"]')
    assert pressed.text == "P95"
    browser.find_element(By.CSS_SELECTOR, '.stat-switch button[data-stat="mean"]').click()
    drawn = wait_for_chart(browser, lambda c: c["stat"] == "mean", "the mean again")

    # 7. Dark mode (the system's preference): the chart is rebuilt with the dark palette.
    set_color_scheme(browser, "dark")
    dark = wait_for_chart(browser, lambda c: c["colors"] != drawn["colors"], "dark colours", 5)
    assert dark["regions"] == REGIONS
    background = browser.execute_script(
        "return getComputedStyle(document.documentElement).backgroundColor"
    )
    assert background == "rgb(17, 21, 28)", background  # --bg of the dark scheme
    counts = browser.execute_script(COUNT_COLOUR_PIXELS, dark["colors"])
    assert all(count > 30 for count in counts), dict(zip(dark["regions"], counts, strict=True))
    screenshot(browser, tmp_path, "dashboard-chart-dark.png")

    # 8. A phone: the chart shrinks to the screen, nothing is wider than the page.
    set_color_scheme(browser, "light")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    phone = wait_for_chart(browser, lambda c: 0 < c["width"] < PHONE["width"], "a phone's width")
    assert phone["regions"] == REGIONS
    assert phone["height"] >= 200
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow} px wider than the phone's screen"
    screenshot(browser, tmp_path, "dashboard-chart-phone.png")
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    print(f"chart test took {time.monotonic() - began:.1f} s")


def test_freshness_line_warns_when_updates_stop_arriving(
    browser: WebDriver,
    start_service: StartService,
    influxd: Influxd,
    influx_db: str,
    tmp_path: Path,
) -> None:
    """The service is paused (SIGSTOP): no stale badge can come, as nothing comes at all; the
    freshness line turns to a warning once the data is two intervals (2 s) old, and back when
    the service goes on (SIGCONT)."""
    Fleet(influxd.url, influx_db)
    service = start(start_service, influxd, influx_db, browser)
    wait_for_text(browser, "freshness", lambda t: t.startswith("Data as of "), "fresh data")
    wait_for_chart(browser, lambda c: c["regions"] == REGIONS, "every region")
    late = browser.find_element(By.ID, "freshness")
    assert late.get_attribute("data-late") == "false"
    service.process.send_signal(signal.SIGSTOP)
    try:
        text = wait_for_text(browser, "freshness", lambda t: "late" in t, "a warning", 10)
        assert "the service sends every 1.0 s" in text
        assert late.get_attribute("data-late") == "true"
        screenshot(browser, tmp_path, "dashboard-freshness-late.png")
    finally:
        service.process.send_signal(signal.SIGCONT)
    wait_for_text(browser, "freshness", lambda t: "late" not in t, "fresh data again", 15)
    assert late.get_attribute("data-late") == "false"
