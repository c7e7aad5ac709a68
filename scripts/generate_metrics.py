#!/usr/bin/env python3
"""Write realistic PoP metrics to InfluxDB; see demo.generator.

Usage: uv run scripts/generate_metrics.py --influx-url http://127.0.0.1:8086 --influx-db metrics

``demo`` is importable from the project's environment (``uv sync`` installs the project in
editable mode, which puts the repository root on the path); it is not in the product wheel.
"""

import sys

from demo.generator import main

if __name__ == "__main__":
    sys.exit(main())
