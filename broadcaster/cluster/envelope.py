"""How a :class:`~broadcaster.cluster.broker.Publication` travels through Redis: bytes.

One header line of JSON (channel, seq, epoch, asOf, which frames follow), then the error
frame's text, the update frame's text and, in the stored last value only, a window topic's
whole window, each on its own line. The frames are JSON encoded
by :mod:`broadcaster.protocol` (orjson writes no raw newline), so they need no escaping, and
they are carried as they are: a node relays the bytes it receives, it never re-encodes them.
"""

from __future__ import annotations

import orjson

from broadcaster.channels import Channel
from broadcaster.cluster.broker import Publication


class BadEnvelope(ValueError):
    """Bytes on the cluster's channel that are not a publication (another version, noise)."""


def encode(publication: Publication, *, whole: bool = False) -> bytes:
    """The publication as one Redis message; with its whole window if ``whole`` (the last
    value the broker keeps), else without (what goes to every node)."""
    whole_text = publication.whole if whole else None
    header = orjson.dumps(
        {
            "topic": publication.channel.topic,
            "tenant": publication.channel.tenant,
            "seq": publication.seq,
            "epoch": publication.epoch,
            "asOf": publication.as_of_unix_s,
            "error": publication.error is not None,
            "update": publication.update is not None,
            "whole": whole_text is not None,
        }
    )
    parts = [header, (publication.error or "").encode(), (publication.update or "").encode()]
    if whole_text is not None:
        parts.append(whole_text.encode())
    return b"\n".join(parts)


def decode(message: bytes) -> Publication:
    """The publication ``message`` carries.

    Raises:
        BadEnvelope: ``message`` is not one :func:`encode` made.
    """
    try:
        header_bytes, error, rest = message.split(b"\n", 2)
        header = orjson.loads(header_bytes)
        has_whole = header.get("whole") is True
        update, whole = rest.split(b"\n", 1) if has_whole else (rest, b"")
        channel = Channel(str(header["topic"]), _optional_str(header["tenant"]))
        seq, epoch, as_of = header["seq"], header["epoch"], header["asOf"]
        if not isinstance(seq, int) or not isinstance(epoch, str):
            raise BadEnvelope("seq or epoch of the wrong type")
        return Publication(
            channel,
            seq,
            epoch,
            error.decode() if header["error"] else None,
            update.decode() if header["update"] else None,
            float(as_of) if as_of is not None else None,
            whole.decode() if has_whole else None,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BadEnvelope(str(exc)) from exc


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)
