"""The topics a client follows, remembered across connections.

Subscriptions belong to one connection on the server, so after every ``welcome`` the client
asks again for what it follows. Two modes, as in the browser client
(``broadcaster/static/broadcaster-client.js``):

- exact (``open_client(url, ["cpu"])``): exactly the given topics; the server's default
  subscriptions (``welcome.subscribed``) that are not among them are unsubscribed.
- following the server (``open_client(url)``): the connection's default subscriptions, as the
  service's ``--default-topics`` defines them, plus :meth:`add`, minus :meth:`remove`. The
  client keeps no list of its own of which topics are the defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class Subscriptions:
    """What to ask for after each ``welcome``, and which updates to keep."""

    def __init__(self, topics: Iterable[str] | None) -> None:
        self._exact = topics is not None
        self._wanted = dict.fromkeys(topics or ())
        self._removed: set[str] = set()
        # What updates are kept for: ``_wanted`` plus, when following, the server's defaults.
        self._current = dict(self._wanted)

    def __contains__(self, topic: object) -> bool:
        return topic in self._current

    @property
    def names(self) -> tuple[str, ...]:
        """The topics followed now (when following the server: known after a ``welcome``)."""
        return tuple(self._current)

    def add(self, names: Sequence[str]) -> None:
        """Follow ``names`` too, on this connection and the next ones."""
        for name in names:
            self._wanted[name] = None
            self._current[name] = None
            self._removed.discard(name)

    def remove(self, names: Sequence[str]) -> None:
        """Stop following ``names``, even when they are among the server's defaults."""
        for name in names:
            self._wanted.pop(name, None)
            self._current.pop(name, None)
            self._removed.add(name)

    def after_welcome(self, subscribed: Sequence[str]) -> tuple[list[str], list[str]]:
        """The ``(unsubscribe, subscribe)`` topics for a new connection whose ``welcome``
        says it is subscribed to ``subscribed``."""
        if self._exact:
            unwanted = [name for name in subscribed if name not in self._wanted]
        else:
            unwanted = [name for name in subscribed if name in self._removed]
            kept = (name for name in subscribed if name not in self._removed)
            self._current = dict.fromkeys([*kept, *self._wanted])
        return unwanted, list(self._wanted)
