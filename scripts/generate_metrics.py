#!/usr/bin/env python3
"""Write realistic PoP metrics to InfluxDB; see broadcaster.metrics_generator.

Usage: uv run scripts/generate_metrics.py --influx-url http://127.0.0.1:8086 --influx-db metrics
"""

import sys
from pathlib import Path

# Run as a file, Python puts scripts/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broadcaster.metrics_generator import main

if __name__ == "__main__":
    sys.exit(main())
