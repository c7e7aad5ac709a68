"""Copy the pinned uPlot's built files into broadcaster/static/vendor/uplot/ (the dashboard's
chart library, shipped in the wheel; no CDN).

The version is pinned by scripts/dashboard_vendor/package.json and its package-lock.json. To
update uPlot:

    cd scripts/dashboard_vendor
    npm install --save-exact --package-lock-only --ignore-scripts uplot@<version>
    cd ../..
    uv run --no-sync python scripts/vendor_uplot.py
    # commit the two files of scripts/dashboard_vendor and broadcaster/static/vendor/uplot/

The script installs the lock file with ``npm ci`` into .bench/dashboard-vendor (as the tests
do, tests/node_tools.py) and copies the files listed in ``VENDORED_UPLOT``.
tests/static/test_vendor.py fails while the committed copies differ from the pinned package's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests/

from tests.node_tools import UPLOT_VENDOR_DIR, VENDORED_UPLOT, ensure_dashboard_vendor


def main() -> None:
    modules = ensure_dashboard_vendor()
    UPLOT_VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    for source, target in VENDORED_UPLOT.items():
        shutil.copyfile(modules / source, UPLOT_VENDOR_DIR / target)
        print(f"{modules / source} -> {UPLOT_VENDOR_DIR / target}")


if __name__ == "__main__":
    main()
