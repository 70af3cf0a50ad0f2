"""The HTTP listening socket: accepted connections send small writes at once."""

from __future__ import annotations

import socket

from shoal.server.runtime import _bind, parse_listen


def test_the_http_socket_disables_nagle():
    # Accepted connections inherit TCP_NODELAY; without it a kept-alive client waits for
    # its own delayed ACK (about 40 ms) before each response body arrives.
    sock = _bind(parse_listen("127.0.0.1:0", "--http"))
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        client = socket.create_connection(sock.getsockname()[:2])
        sock.setblocking(True)
        accepted, _ = sock.accept()
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        accepted.close()
        client.close()
    finally:
        sock.close()
