"""The live dashboard in a real headless Chromium, against the real service and a real influxd.

Nothing is faked: the service is ``python -m broadcaster serve`` as a subprocess on fixed free
ports, the data is written by the generator's own code, and the page is driven by Selenium
through Debian's chromium and chromium-driver (never Selenium Manager, never the network).
The test checks what the page shows (visible text), not the client's internals. Selenium is
synchronous, so this is a plain sync test; every wait is bounded.

The dashboard with a token, over TLS: the service runs ``--auth-mode jwt`` with a real
HS256 token signed per run and ``--tls-cert-file`` with a certificate made per run
(trustme); Chromium is started with ``--ignore-certificate-errors``, as the CA is not in its
store (the certificate chain itself is checked by the Python client's tests).

Screenshots go to the test's tmp_path and to ``.artifacts/`` in the repository root.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from demo.generator import InfluxWriter, batches
from demo.simulation import MINUTE_MS, POPS, Outage, Regression, Simulation
from tests import REPO
from tests.influxd import Influxd, free_port, free_ports, start_influxd
from tests.jwt_keys import SigningKey, hs256_key
from tests.tls_certs import TLSFiles, make_tls_files

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / ".artifacts"
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
WAIT_S = 30.0
NO_VALUE = "\N{EN DASH}"  # what the page shows for a figure it does not have
INTERVAL_MS = 10_000
# Short delays for the page's client, so a restart is seen within seconds.
CLIENT_QUERY = (
    "baseDelayMs=200&maxDelayMs=1000&maxAttempts=50&pingIntervalMs=1000"
    "&pongTimeoutMs=3000&connectTimeoutMs=3000"
)


def write_fleet(influx_url: str, database: str) -> None:
    """An hour of the whole fleet up to now, through the generator's own writer: random
    events off, sin1 in regression, jnb1 down."""
    now_ms = int(time.time() * 1000) // INTERVAL_MS * INTERVAL_MS
    simulation = Simulation(
        seed=7,
        regressions_per_pop_hour=0,
        outages_per_pop_hour=0,
        forced_regressions=[
            Regression("sin1", now_ms - 10 * MINUTE_MS, now_ms + 10 * MINUTE_MS, increase=1.0)
        ],
        forced_outages=[Outage("jnb1", now_ms - 2 * INTERVAL_MS, now_ms + 10 * MINUTE_MS)],
    )
    history = range(now_ms - 60 * MINUTE_MS + INTERVAL_MS, now_ms + 1, INTERVAL_MS)
    # Loopback HTTP only: verify=False skips loading the CA bundle.
    with httpx.Client(verify=False) as client:
        writer = InfluxWriter(client, influx_url, database)
        for batch in batches(simulation.rounds(history)):
            writer.write(batch)


@pytest.fixture
def fleet_db(influxd: Influxd, influx_db: str) -> str:
    """A database of the session's influxd holding :func:`write_fleet`'s data."""
    write_fleet(influxd.url, influx_db)
    return influx_db


class ServiceProcess:
    """``python -m broadcaster serve`` on the given ports; stopped by its PID."""

    def __init__(
        self,
        command: list[str],
        log_path: Path,
        http_port: int,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.http_port = http_port
        self.log_path = log_path
        self.tls = tls
        self.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{http_port}"
        with log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"service exited with {self.process.returncode}:\n{self.log()}"
                )
            with contextlib.suppress(httpx.TransportError):
                url = f"{self.base_url}/api/client-config"
                verify = self.tls if self.tls is not None else True
                if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"service not ready within {timeout_s} s:\n{self.log()}")

    def stop(self, timeout_s: float = 15) -> int:
        """SIGTERM (the graceful shutdown), SIGKILL if it is not gone in time; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class StartService(Protocol):
    def __call__(
        self,
        ws_port: int,
        http_port: int,
        influx_url: str,
        influx_db: str,
        *,
        default_topics: str | None = None,
        extra_flags: dict[str, object] | None = None,
        tls: TLSFiles | None = None,
    ) -> ServiceProcess: ...


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[StartService]:
    """``start(ws_port, http_port, influx_url, influx_db, default_topics=None)``: the service
    on those ports (the same ones again after a stop), with its own default topics if given,
    more flags (``extra_flags``) and TLS (``tls``). Every service started is stopped at
    teardown."""
    started: list[ServiceProcess] = []

    def start(
        ws_port: int,
        http_port: int,
        influx_url: str,
        influx_db: str,
        *,
        default_topics: str | None = None,
        extra_flags: dict[str, object] | None = None,
        tls: TLSFiles | None = None,
    ) -> ServiceProcess:
        command = [sys.executable, "-m", "broadcaster", "serve"]
        flags: dict[str, object] = {
            "ws-port": ws_port,
            "http-port": http_port,
            "influx-url": influx_url,
            "influx-db": influx_db,
            "broadcast-interval-ms": 1000,
            "query-timeout-ms": 1000,
            "reconnect-after-ms": 300,
        }
        if default_topics is not None:
            flags["default-topics"] = default_topics
        if tls is not None:
            flags["tls-cert-file"], flags["tls-key-file"] = tls.cert_file, tls.key_file
        flags.update(extra_flags or {})
        for name, value in flags.items():
            command += [f"--{name}", str(value)]
        context = tls.client_context if tls is not None else None
        service = ServiceProcess(command, tmp_path / "service.log", http_port, context)
        started.append(service)
        service.wait_ready()
        return service

    try:
        yield start
    finally:
        for service in started:
            service.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Debian chromium through Debian chromium-driver; always quit."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: install the Debian packages chromium and "
            "chromium-driver (scripts/test installs them when missing)",
            pytrace=False,
        )
    options = Options()
    options.binary_location = str(CHROMIUM)
    # The certificate of the TLS test comes from a CA made per run, not in Chromium's store.
    arguments = (*CHROMIUM_ARGS, "--ignore-certificate-errors")
    for argument in (*arguments, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def visible_text(driver: WebDriver, element_id: str) -> str:
    """What the user sees in the element (empty when it is hidden)."""
    return driver.find_element(By.ID, element_id).text


def wait_for_text(
    driver: WebDriver,
    element_id: str,
    expected: Callable[[str], bool],
    what: str,
    timeout_s: float = WAIT_S,
) -> str:
    """Wait until the element's visible text satisfies ``expected``; return that text."""
    seen = [""]

    def check(driver: WebDriver) -> bool:
        seen[0] = visible_text(driver, element_id)
        return expected(seen[0])

    try:
        WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(check)
    except TimeoutException:
        raise AssertionError(
            f"#{element_id} did not show {what} within {timeout_s} s; it shows {seen[0]!r}"
        ) from None
    return seen[0]


def screenshot(driver: WebDriver, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), f"no screenshot {name}"
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / name)


def test_dashboard_shows_live_data_and_reconnects_after_a_restart(
    browser: WebDriver,
    start_service: StartService,
    influxd: Influxd,
    fleet_db: str,
    tmp_path: Path,
) -> None:
    ws_port, http_port = free_ports(2)
    timings: dict[str, float] = {}
    began = time.monotonic()
    service = start_service(ws_port, http_port, influxd.url, fleet_db)
    timings["service up"] = time.monotonic() - began

    # 1. The page connects and shows the fleet.
    browser.get(f"http://127.0.0.1:{http_port}/?{CLIENT_QUERY}")
    wait_for_text(browser, "connection-state", lambda t: t == "Connected", "Connected")
    wait_for_text(browser, "pop-count", lambda t: t == str(len(POPS)), f"{len(POPS)} PoPs")
    assert visible_text(browser, "pops-up") == str(len(POPS) - 1)
    assert visible_text(browser, "pops-down") == "1"  # jnb1
    assert visible_text(browser, "regression-count") == "1"
    assert visible_text(browser, "latency-mean").endswith(" ms")
    regression_rows = wait_for_text(browser, "regressions-body", lambda t: "sin1" in t, "sin1")
    assert "ap-southeast" in regression_rows
    assert visible_text(browser, "no-regressions") == ""  # hidden while there are some
    quality = wait_for_text(
        browser, "quality", lambda t: t in {"excellent", "good", "poor"}, "an RTT quality"
    )
    assert quality == "excellent"  # loopback
    assert visible_text(browser, "rtt").endswith(" ms")
    assert visible_text(browser, "connection-id").startswith("ws_")
    # Live and fresh: no stale badge, no notice. Waited for, not read once: on a loaded machine
    # one query can miss its 1 s timeout, and that tick's update is stale until the next one.
    wait_for_text(browser, "overview-stale", lambda t: t == "", "no stale badge")
    wait_for_text(browser, "notice", lambda t: t == "", "no notice")
    # Live: more updates arrive without any reload (one per topic per second).
    received = int(visible_text(browser, "update-count"))
    wait_for_text(browser, "update-count", lambda t: int(t) > received + 1, "new updates")
    load_id = browser.execute_script("return window.__loadId")
    assert load_id
    updated_before_restart = visible_text(browser, "overview-updated")
    received_before_restart = int(visible_text(browser, "update-count"))
    timings["page connected with data"] = time.monotonic() - began
    screenshot(browser, tmp_path, "dashboard.png")

    # 2. The service stops (graceful shutdown): the page says it is reconnecting.
    assert service.stop() == 0, service.log()
    wait_for_text(
        browser, "connection-state", lambda t: t.startswith("Reconnecting "), "Reconnecting"
    )
    label = visible_text(browser, "connection-state")
    assert label.split()[2:] == ["of", "50"], label  # "Reconnecting k of 50"
    assert "Not live" in visible_text(browser, "notice")
    assert visible_text(browser, "rtt") == NO_VALUE  # no RTT without a connection
    assert visible_text(browser, "quality") == NO_VALUE
    assert visible_text(browser, "pop-count") == str(len(POPS))  # the last values stay
    timings["page reconnecting"] = time.monotonic() - began
    screenshot(browser, tmp_path, "dashboard-reconnecting.png")

    # 3. The service comes back on the same ports: connected again, new data, same page.
    start_service(ws_port, http_port, influxd.url, fleet_db)
    wait_for_text(browser, "connection-state", lambda t: t == "Connected", "Connected again")
    wait_for_text(
        browser,
        "overview-updated",
        lambda t: t.startswith("Updated ") and t != updated_before_restart,
        "a newer overview",
    )
    assert int(visible_text(browser, "update-count")) > received_before_restart
    assert visible_text(browser, "pop-count") == str(len(POPS))
    wait_for_text(browser, "notice", lambda t: t == "", "no notice (live, fresh)")
    assert browser.execute_script("return window.__loadId") == load_id, "the page was reloaded"
    navigations = browser.execute_script(
        "return performance.getEntriesByType('navigation').map(e => e.type)"
    )
    assert navigations == ["navigate"]
    timings["page connected again"] = time.monotonic() - began
    print("timings (s from start):", {name: round(s, 2) for name, s in timings.items()})


def test_dashboard_marks_stale_data_during_a_database_outage(
    browser: WebDriver, start_service: StartService, tmp_path: Path
) -> None:
    # An influxd of its own: stopping the session's one would break the other tests.
    influx_port = free_port()
    database = start_influxd(tmp_path / "influxd", http_port=influx_port)
    try:
        write_fleet(database.url, "metrics")
        ws_port, http_port = free_ports(2)
        start_service(ws_port, http_port, database.url, "metrics")
        browser.get(f"http://127.0.0.1:{http_port}/?{CLIENT_QUERY}")
        wait_for_text(browser, "pop-count", lambda t: t == str(len(POPS)), f"{len(POPS)} PoPs")
        # The chart's window too (its first read is the whole hour): only a topic that had a
        # good value can be resent stale.
        wait_for_text(
            browser, "latency-history-updated", lambda t: t.startswith("Updated "), "a window"
        )
        wait_for_text(browser, "overview-stale", lambda t: t == "", "no stale badge")
        wait_for_text(browser, "notice", lambda t: t == "", "no notice")

        # The database goes away: the last good values stay on screen, marked stale.
        database.stop()
        for topic in ("overview", "regressions", "latency-history"):
            badge = wait_for_text(
                browser, f"{topic}-stale", lambda t: t.startswith("Stale"), "a stale badge"
            )
            assert "data as of" in badge
            assert "database unreachable" in badge
        assert "Stale data" in visible_text(browser, "notice")
        assert visible_text(browser, "pop-count") == str(len(POPS))
        assert "sin1" in visible_text(browser, "regressions-body")
        assert visible_text(browser, "connection-state") == "Connected"  # the service is fine
        screenshot(browser, tmp_path, "dashboard-stale.png")

        # It comes back (same port, same files): fresh values, the marks go away.
        database = start_influxd(tmp_path / "influxd", http_port=influx_port)
        wait_for_text(browser, "overview-stale", lambda t: t == "", "no stale badge")
        wait_for_text(browser, "regressions-stale", lambda t: t == "", "no stale badge")
        wait_for_text(browser, "latency-history-stale", lambda t: t == "", "no stale badge")
        wait_for_text(browser, "notice", lambda t: t == "", "no notice")
    finally:
        database.stop()


def test_dashboard_ignores_query_options_the_client_would_refuse(
    browser: WebDriver, start_service: StartService
) -> None:
    """``?baseDelayMs=0&probeIntervalMs=0`` would be a tight reconnect loop: the page ignores
    both (with a console warning each) and connects with the defaults. No database needed."""
    ws_port, http_port = free_ports(2)
    start_service(ws_port, http_port, f"http://127.0.0.1:{free_port()}", "metrics")
    browser.get(f"http://127.0.0.1:{http_port}/?baseDelayMs=0&probeIntervalMs=0&maxAttempts=7")
    wait_for_text(browser, "connection-state", lambda t: t == "Connected", "Connected")
    options = browser.execute_script(
        "const o = window.__dashboard.client.options;"
        "return [o.baseDelayMs, o.probeIntervalMs, o.maxAttempts];"
    )
    assert options == [5000, 60000, 7]


def test_dashboard_follows_the_services_default_topics(
    browser: WebDriver, start_service: StartService
) -> None:
    """The page has no topic list of its own: a service started with ``--default-topics
    overview`` gets a page that follows overview, and hides the regressions panel. The one
    topic the page asks for itself is its chart's, latency-history (no default topic)."""
    ws_port, http_port = free_ports(2)
    start_service(
        ws_port, http_port, f"http://127.0.0.1:{free_port()}", "metrics", default_topics="overview"
    )
    browser.get(f"http://127.0.0.1:{http_port}/")
    wait_for_text(browser, "connection-state", lambda t: t == "Connected", "Connected")
    WebDriverWait(browser, WAIT_S).until(
        lambda d: (
            d.execute_script("return document.body.dataset.topics") == "latency-history,overview"
        )
    )
    followed = browser.execute_script("return window.__dashboard.client.subscribedTopics")
    assert followed == ["latency-history", "overview"]
    assert browser.find_element(By.ID, "overview").is_displayed()
    assert browser.find_element(By.ID, "latency-history").is_displayed()
    assert not browser.find_element(By.ID, "regressions").is_displayed()


def test_dashboard_with_a_token_over_tls(
    browser: WebDriver, start_service: StartService, tmp_path: Path
) -> None:
    """``https://.../#token=<jwt>`` against a service with ``--auth-mode jwt`` and TLS: the
    page connects over wss:// with the token, takes it out of the address bar, keeps it for a
    reload; a refused token is said plainly and the page asks for another one."""
    tls = make_tls_files(tmp_path)
    key: SigningKey = hs256_key(tmp_path)
    valid = key.sign(sub="noc-screen", exp=int(time.time() + 3600))
    ws_port, http_port = free_ports(2)
    service = start_service(
        ws_port,
        http_port,
        f"http://127.0.0.1:{free_port()}",
        "metrics",
        tls=tls,
        extra_flags={
            "auth-mode": "jwt",
            "jwt-secret-file": key.key_file,
            "auth-timeout-ms": 2000,
        },
    )

    # 1. The token in the fragment: connected over wss://, the token gone from the URL.
    browser.get(f"{service.base_url}/?{CLIENT_QUERY}#token={valid}")
    wait_for_text(browser, "connection-state", lambda t: t == "Connected", "Connected")
    assert visible_text(browser, "websocket-url") == f"wss://127.0.0.1:{ws_port}/ws"
    assert "token" not in browser.current_url
    assert browser.current_url == f"{service.base_url}/?{CLIENT_QUERY}"
    stored = browser.execute_script("return sessionStorage.getItem('broadcaster.token')")
    assert stored == valid
    status = httpx.get(f"{service.base_url}/api/websocket/status", verify=tls.client_context)
    (connection,) = status.json()["connections"]
    assert connection["identity"] == {"sub": "noc-screen", "tenant": None}
    assert valid not in service.log()  # neither the URL nor the token reached the service logs
    screenshot(browser, tmp_path, "dashboard-token-tls.png")

    # 2. A reload keeps the token (sessionStorage), with nothing in the URL.
    browser.refresh()
    wait_for_text(browser, "connection-state", lambda t: t == "Connected", "Connected again")

    # 3. A token the service refuses: the reason, plainly, and a form asking for another.
    browser.get(f"{service.base_url}/?{CLIENT_QUERY}#token=not-a-jwt")
    wait_for_text(browser, "connection-state", lambda t: t == "Not authorized", "Not authorized")
    notice = wait_for_text(browser, "notice", lambda t: "Not authorized" in t, "the reason")
    assert "invalid token" in notice
    assert "not-a-jwt" not in notice
    assert browser.find_element(By.ID, "token-form").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('broadcaster.token')") is None
    screenshot(browser, tmp_path, "dashboard-token-refused.png")

    # 4. A valid token entered in the form: connected at once, without a reload.
    load_id = browser.execute_script("return window.__loadId")
    browser.find_element(By.ID, "token-input").send_keys(valid)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait_for_text(browser, "connection-state", lambda t: t == "Connected", "Connected")
    assert not browser.find_element(By.ID, "token-form").is_displayed()
    assert browser.execute_script("return window.__loadId") == load_id

    # 5. No token at all: /api/client-config says authRequired, the page asks at once.
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{service.base_url}/?{CLIENT_QUERY}")
    wait_for_text(browser, "connection-state", lambda t: t == "Token needed", "Token needed")
    assert browser.find_element(By.ID, "token-form").is_displayed()
    assert "needs an access token" in visible_text(browser, "token-reason")
    assert browser.execute_script("return window.__dashboard") is None  # never connected
