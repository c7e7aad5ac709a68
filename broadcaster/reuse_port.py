"""Listening sockets with ``SO_REUSEPORT`` (``--reuse-port``): several processes, one port.

Each process binds its own socket to the same address and port; the kernel (Linux 3.9+)
spreads new connections between the listening sockets, so several service processes on one
machine share the WebSocket and HTTP ports without a proxy in front. A connection, once
accepted, stays with the process that accepted it. Every process sharing a port must set the
option (and run as the same user): a process without it keeps the port to itself, and the
others then fail to start with "address already in use".

The WebSocket server listens on these sockets itself; hypercorn is handed them as ``fd://``
binds (:func:`broadcaster.ops.http_server.serve_on_sockets`).
"""

from __future__ import annotations

import socket

import trio


async def bind_reuse_port(host: str, port: int) -> list[socket.socket]:
    """Sockets bound (not yet listening) to every address ``host`` resolves to, on ``port``,
    each with ``SO_REUSEADDR`` and ``SO_REUSEPORT``.

    Raises:
        OSError: ``host`` does not resolve, or an address cannot be bound (a process holds
            the port without ``SO_REUSEPORT``, or as another user).
    """
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as trio.open_tcp_listeners: one family per socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def open_reuse_port_listeners(
    host: str, port: int, backlog: int = 0xFFFF
) -> list[trio.SocketListener]:
    """:func:`trio.open_tcp_listeners`, but with ``SO_REUSEPORT``: Trio listeners on the
    sockets of :func:`bind_reuse_port`. The backlog is Trio's default (the kernel caps it at
    ``net.core.somaxconn``).

    Raises:
        OSError: as :func:`bind_reuse_port`.
    """
    listeners = []
    for sock in await bind_reuse_port(host, port):
        sock.listen(backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    return listeners
