"""How a :class:`~broadcaster.cluster.broker.Publication` travels through Redis: bytes.

One header line of JSON (channel, seq, epoch, asOf, which frames follow), then the error
frame's text and the update frame's text, each on its own line. The frames are JSON encoded
by :mod:`broadcaster.protocol` (orjson writes no raw newline), so they need no escaping, and
they are carried as they are: a node relays the bytes it receives, it never re-encodes them.
"""

from __future__ import annotations

import orjson

from broadcaster.channels import Channel
from broadcaster.cluster.broker import Publication


class BadEnvelope(ValueError):
    """Bytes on the cluster's channel that are not a publication (another version, noise)."""


def encode(publication: Publication) -> bytes:
    """The publication as one Redis message."""
    header = orjson.dumps(
        {
            "topic": publication.channel.topic,
            "tenant": publication.channel.tenant,
            "seq": publication.seq,
            "epoch": publication.epoch,
            "asOf": publication.as_of_unix_s,
            "error": publication.error is not None,
            "update": publication.update is not None,
        }
    )
    error = (publication.error or "").encode()
    update = (publication.update or "").encode()
    return b"\n".join((header, error, update))


def decode(message: bytes) -> Publication:
    """The publication ``message`` carries.

    Raises:
        BadEnvelope: ``message`` is not one :func:`encode` made.
    """
    try:
        header_bytes, error, update = message.split(b"\n", 2)
        header = orjson.loads(header_bytes)
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
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BadEnvelope(str(exc)) from exc


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)
