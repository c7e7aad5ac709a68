"""The dashboard's vendored uPlot (broadcaster/static/vendor/uplot/) is the pinned package's.

The pin is scripts/dashboard_vendor/package.json with its lock file; ``npm ci`` installs it
into .bench/ (tests/node_tools.py) and each vendored file must equal the package's, byte for
byte, so a hand edit or a forgotten ``scripts/vendor_uplot.py`` after a version bump fails here.
The page must load the vendored files, never a CDN.
"""

from __future__ import annotations

import json
import re

import trio

from tests import REPO
from tests.node_tools import (
    DASHBOARD_VENDOR_DIR,
    UPLOT_VENDOR_DIR,
    VENDORED_UPLOT,
    ensure_dashboard_vendor,
)

STATIC = REPO / "broadcaster" / "static"


async def test_vendored_uplot_files_are_the_pinned_packages() -> None:
    modules = await trio.to_thread.run_sync(ensure_dashboard_vendor)
    pinned = json.loads((DASHBOARD_VENDOR_DIR / "package.json").read_text())["dependencies"]
    installed = json.loads((modules / "uplot" / "package.json").read_text())["version"]
    assert installed == pinned["uplot"]
    for source, target in VENDORED_UPLOT.items():
        vendored = (UPLOT_VENDOR_DIR / target).read_bytes()
        assert vendored == (modules / source).read_bytes(), f"{target}: run scripts/vendor_uplot.py"
    # The banner of the built file names the same version.
    banner = (UPLOT_VENDOR_DIR / "uPlot.iife.min.js").read_text()[:200]
    assert f"(v{pinned['uplot']})" in banner


def test_vendor_folder_holds_exactly_the_vendored_files() -> None:
    assert sorted(p.name for p in UPLOT_VENDOR_DIR.iterdir()) == sorted(VENDORED_UPLOT.values())


def test_page_loads_the_vendored_files_and_nothing_from_elsewhere() -> None:
    page = (STATIC / "index.html").read_text()
    assert '<script src="static/vendor/uplot/uPlot.iife.min.js"></script>' in page
    assert '<link rel="stylesheet" href="static/vendor/uplot/uPlot.min.css" />' in page
    for name in ("index.html", "dashboard.css", *(p.name for p in STATIC.glob("dashboard*.js"))):
        text = (STATIC / name).read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), name
        assert not re.search(r"\bimport\b[^;]*[\"']https?://", text), name
