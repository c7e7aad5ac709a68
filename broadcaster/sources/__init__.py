"""Metrics sources: where topic values come from."""

from broadcaster.sources.base import MetricsSource, Series, StatementResult

__all__ = ["MetricsSource", "Series", "StatementResult"]
