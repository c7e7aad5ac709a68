"""The test suite; see tests/conftest.py for its rules."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The repository's root, for tests that run its scripts or read its files."""
