"""Exceptions raised by broadcaster.

The hierarchy::

    BroadcasterError
    ├── ConfigError            a setting has a bad value (CLI exits 2)
    │   └── TopicsFileError    the topics file cannot be read or is invalid
    ├── BrokerUnavailable      Redis (the cluster's broker) cannot be reached in time
    │                          (broadcaster.cluster.broker; the loop falls back to local)
    └── SourceError            the metrics database did not give a usable answer
        ├── SourceUnavailable  down, unreachable, timed out or answered with an HTTP error
        └── SourceResponseError  answered, but with something that is not a valid result
            └── QueryRejected    refused the query itself (bad InfluxQL, no such database)

Transient errors (``SourceError``) are logged and retried by the broadcast loop; everything
else is a programming error and is allowed to crash loudly.
"""


class BroadcasterError(Exception):
    """Base class of every error raised on purpose by broadcaster."""


class ConfigError(BroadcasterError):
    """A setting has a bad value. ``setting`` is its flag name, ``value`` what was given."""

    def __init__(self, setting: str, value: object, problem: str) -> None:
        self.setting = setting
        self.value = value
        self.problem = problem
        super().__init__(f"{setting}: invalid value {value!r}: {problem}")


class TopicsFileError(ConfigError):
    """The topics file cannot be read or does not describe valid topics."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__("--topics-file", path, problem)


class SourceError(BroadcasterError):
    """The metrics source did not give a usable answer."""


class SourceUnavailable(SourceError):
    """The source is down, unreachable, too slow, or answered with an HTTP error."""


class SourceResponseError(SourceError):
    """The source answered, but the answer is not a valid query result."""


class QueryRejected(SourceResponseError):
    """The source refused the query itself: bad InfluxQL, or no such database."""
