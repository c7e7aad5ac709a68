"""The browser fixtures of tests/client/test_dashboard_browser.py (``browser``: headless
Chromium; ``start_service``: the real service as a subprocess), for every dashboard test."""

from tests.client.test_dashboard_browser import browser, start_service

__all__ = ["browser", "start_service"]
