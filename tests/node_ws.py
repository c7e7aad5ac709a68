"""Node.js and npm `ws` (locked in scripts/bench_node) for the compatibility test and the bench.

``npm ci`` installs the locked `ws` into ``.bench/node`` (ignored by git), again only when the
lock file changed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess

from tests import REPO

ROOT = REPO
NODE_DIR = ROOT / "scripts" / "bench_node"  # committed: package.json, lock file, .mjs
NODE_PREFIX = ROOT / ".bench" / "node"  # ignored: npm ci installs node_modules here
NODE_MODULES = NODE_PREFIX / "node_modules"
MIN_NODE = (18, 14)


class NodeUnavailable(RuntimeError):
    """Node.js, npm or the locked `ws` could not be had."""


def ensure_node_ws() -> str:
    """Node >= 18.14, and npm `ws` from the committed lock file in .bench/node; node's path.

    Raises:
        NodeUnavailable: node or npm is missing or too old, or ``npm ci`` failed.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise NodeUnavailable("needs node (>= 18.14) and npm on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    major, minor = (int(part) for part in version.stdout.strip().lstrip("v").split(".")[:2])
    if (major, minor) < MIN_NODE:
        raise NodeUnavailable(f"needs node >= 18.14, found {version.stdout.strip()}")
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((NODE_DIR / name).read_bytes())
    stamp = NODE_PREFIX / ".installed-sha256"
    installed = NODE_MODULES / "ws" / "package.json"
    if installed.exists() and stamp.exists() and stamp.read_text() == digest.hexdigest():
        return node
    NODE_PREFIX.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(NODE_DIR / name, NODE_PREFIX / name)
    done = subprocess.run(
        [npm, "ci", "--prefix", str(NODE_PREFIX), "--ignore-scripts", "--no-audit", "--no-fund"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode or not installed.exists():
        raise NodeUnavailable(f"npm ci failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    stamp.write_text(digest.hexdigest())
    return node
