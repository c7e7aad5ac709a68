"""The source interface the broadcast loop consumes, and the result types it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Series:
    """One series of one statement: a measurement, its group-by tags and its rows."""

    name: str
    columns: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    tags: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """The values as one dict per row, keyed by column name."""
        return [dict(zip(self.columns, row, strict=False)) for row in self.values]


@dataclass(frozen=True, slots=True)
class StatementResult:
    """The answer to one statement of a query (a query may hold several, ';'-separated)."""

    series: tuple[Series, ...] = ()


class MetricsSource(Protocol):
    """Runs queries against a metrics database. Implementations are Trio-native."""

    async def query(self, statements: str) -> list[StatementResult]:
        """Run one request holding one or more statements; one result per statement.

        Raises:
            SourceUnavailable: the database is down, unreachable or answered an HTTP error.
            SourceResponseError: the answer is not a valid result.
        """
        ...

    async def ping(self) -> None:
        """Check that the database answers, without running a query.

        Raises:
            SourceUnavailable: it does not.
        """
        ...
