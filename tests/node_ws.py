"""Node.js and npm `ws` (locked in scripts/bench_node) for the compatibility test and the bench.

``npm ci`` installs the locked `ws` into ``.bench/node`` (ignored by git), again only when the
lock file changed (tests/node_tools.py).
"""

from __future__ import annotations

from tests import REPO
from tests.node_tools import NodeUnavailable, ensure_node, npm_ci

ROOT = REPO
NODE_DIR = ROOT / "scripts" / "bench_node"  # committed: package.json, lock file, .mjs
NODE_PREFIX = ROOT / ".bench" / "node"  # ignored: npm ci installs node_modules here
NODE_MODULES = NODE_PREFIX / "node_modules"

__all__ = ["NODE_DIR", "NODE_MODULES", "NODE_PREFIX", "NodeUnavailable", "ensure_node_ws"]


def ensure_node_ws() -> str:
    """Node >= 18.14, and npm `ws` from the committed lock file in .bench/node; node's path.

    Raises:
        NodeUnavailable: node or npm is missing or too old, or ``npm ci`` failed.
    """
    npm_ci(NODE_DIR, NODE_PREFIX, "ws/package.json")
    return ensure_node()
