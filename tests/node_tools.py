"""Pinned npm packages for the tests: ``npm ci`` from a committed lock file, once per change.

Each package folder in scripts/ (package.json + package-lock.json, committed) is installed into
its own folder under ``.bench/`` (ignored by git). The install is skipped while a stamp of the
two files matches, so after the first run the tests need no network. ``scripts/test`` runs
``python -m tests.node_tools`` before pytest to install them all; the tests call the same
functions, so ``uv run pytest`` alone works too.

    scripts/bench_node      -> .bench/node            npm `ws` (compatibility test, bench)
    scripts/protocol_tools  -> .bench/protocol-tools  typescript (tsc --noEmit of the .d.ts)
    scripts/asyncapi_cli    -> .bench/asyncapi-cli    @asyncapi/cli (`asyncapi validate`)
    scripts/dashboard_vendor -> .bench/dashboard-vendor  uplot (the dashboard's chart library,
                               whose built files are vendored: :data:`VENDORED_UPLOT`)
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from tests import REPO

MIN_NODE = (18, 14)
LOCKED_FILES = ("package.json", "package-lock.json")
PROTOCOL_TOOLS_DIR = REPO / "scripts" / "protocol_tools"  # committed
PROTOCOL_TOOLS_MODULES = REPO / ".bench" / "protocol-tools" / "node_modules"  # ignored
ASYNCAPI_CLI_DIR = REPO / "scripts" / "asyncapi_cli"  # committed
ASYNCAPI_CLI_MODULES = REPO / ".bench" / "asyncapi-cli" / "node_modules"  # ignored
ASYNCAPI_CLI_BIN = "@asyncapi/cli/bin/run_bin"  # under ASYNCAPI_CLI_MODULES: `asyncapi`
DASHBOARD_VENDOR_DIR = REPO / "scripts" / "dashboard_vendor"  # committed
DASHBOARD_VENDOR_MODULES = REPO / ".bench" / "dashboard-vendor" / "node_modules"  # ignored
UPLOT_VENDOR_DIR = REPO / "broadcaster" / "static" / "vendor" / "uplot"  # committed, shipped
# The files of the pinned uplot package (under node_modules) that the dashboard ships, and
# their names under UPLOT_VENDOR_DIR: scripts/vendor_uplot.py copies them,
# tests/static/test_vendor.py checks that the committed copies are the pinned package's.
VENDORED_UPLOT = {
    "uplot/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "uplot/dist/uPlot.min.css": "uPlot.min.css",
    "uplot/LICENSE": "LICENSE",
}


class NodeUnavailable(RuntimeError):
    """Node.js, npm or a locked package could not be had."""


def ensure_node() -> str:
    """The path of node >= 18.14.

    Raises:
        NodeUnavailable: node or npm is missing, or node is too old.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise NodeUnavailable("needs node (>= 18.14) and npm on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    major, minor = (int(part) for part in version.stdout.strip().lstrip("v").split(".")[:2])
    if (major, minor) < MIN_NODE:
        raise NodeUnavailable(f"needs node >= 18.14, found {version.stdout.strip()}")
    return node


def npm_ci(package_dir: Path, prefix: Path, probe: str) -> Path:
    """``npm ci`` the lock file of ``package_dir`` into ``prefix``, unless already there.

    ``probe`` is a path under node_modules that exists once the install is complete. Install
    scripts are not run (none of the locked packages needs one).

    Returns:
        ``prefix / "node_modules"``.

    Raises:
        NodeUnavailable: node or npm is missing or too old, or ``npm ci`` failed.
    """
    ensure_node()
    modules = prefix / "node_modules"
    digest = hashlib.sha256()
    for name in LOCKED_FILES:
        digest.update((package_dir / name).read_bytes())
    stamp = prefix / ".installed-sha256"
    if (modules / probe).exists() and stamp.exists() and stamp.read_text() == digest.hexdigest():
        return modules
    prefix.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    for name in LOCKED_FILES:
        shutil.copyfile(package_dir / name, prefix / name)
    npm = shutil.which("npm")
    assert npm is not None  # checked by ensure_node
    # The real path: npm takes a prefix reached through a symlink (a .bench linked from another
    # checkout) for a link to a package named after the folder, missing from the lock file.
    done = subprocess.run(
        [
            npm,
            "ci",
            "--prefix",
            str(prefix.resolve()),
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode or not (modules / probe).exists():
        raise NodeUnavailable(
            f"npm ci of {package_dir} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    stamp.write_text(digest.hexdigest())
    return modules


def ensure_protocol_tools() -> Path:
    """The locked typescript; its node_modules folder.

    Raises:
        NodeUnavailable: as :func:`npm_ci`.
    """
    return npm_ci(PROTOCOL_TOOLS_DIR, PROTOCOL_TOOLS_MODULES.parent, "typescript/package.json")


def ensure_asyncapi_cli() -> Path:
    """The locked @asyncapi/cli (about 1.5 GB: a first install takes minutes); the path of its
    ``asyncapi`` command, a node script.

    Raises:
        NodeUnavailable: as :func:`npm_ci`.
    """
    modules = npm_ci(ASYNCAPI_CLI_DIR, ASYNCAPI_CLI_MODULES.parent, "@asyncapi/cli/package.json")
    return modules / ASYNCAPI_CLI_BIN


def ensure_dashboard_vendor() -> Path:
    """The locked uplot package; its node_modules folder.

    Raises:
        NodeUnavailable: as :func:`npm_ci`.
    """
    return npm_ci(DASHBOARD_VENDOR_DIR, DASHBOARD_VENDOR_MODULES.parent, "uplot/package.json")


if __name__ == "__main__":  # scripts/test: install every locked package before pytest
    from tests.node_ws import ensure_node_ws

    ensure_node_ws()
    ensure_protocol_tools()
    ensure_asyncapi_cli()
    ensure_dashboard_vendor()
