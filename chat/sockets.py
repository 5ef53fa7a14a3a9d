"""What a node asks of a TCP socket beyond trio's streams (Linux first).

Small functions on a stream's socket or its file descriptor: direct reads,
the kernel's count of unacknowledged bytes, TCP keepalive, the peer's
address. Each degrades to a harmless answer on a stream without a socket
(tests' memory streams) or a system without the option.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import termios

import trio

READ_SIZE = 65536  # one large read; lines are split by bytes.find (framing.py)
_SIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)  # the same request on Linux


def read_or_none(fd: int) -> bytes | None:
    """``os.read`` of a non-blocking socket; None when nothing is there yet."""
    try:
        return os.read(fd, READ_SIZE)
    except BlockingIOError:
        return None


def keep_alive(stream: trio.abc.Stream, idle: float) -> None:
    """TCP keepalive on ``stream``'s socket: a vanished host found in about 2 idle."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(idle)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(idle / 3)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def unacknowledged(fd: int) -> int:
    """Bytes sent on socket ``fd`` the remote has not acknowledged (SIOCOUTQ)."""
    try:
        raw = fcntl.ioctl(fd, _SIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


def peername(stream: trio.abc.Stream) -> tuple[str, int] | None:
    # Under TLS (chat.tls) the socket is the transport's, or its inner stream's.
    while inner := getattr(stream, "transport_stream", None) or getattr(stream, "inner", None):
        stream = inner
    sock = getattr(stream, "socket", None)
    if sock is None:
        return None
    try:
        name = sock.getpeername()
    except OSError:
        return None
    return (str(name[0]), int(name[1]))


def dialable(host: str) -> str:
    """An address others can dial for a node listening on ``host``: the
    machine's own for a wildcard (the address it would send from; no
    packet is sent), else ``host`` itself."""
    if host not in ("", "0.0.0.0", "::"):
        return host
    family, probe = (
        (socket.AF_INET6, "2001:db8::1") if host == "::" else (socket.AF_INET, "192.0.2.1")
    )
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            return str(sock.getsockname()[0])
    except OSError:
        return "::1" if host == "::" else "127.0.0.1"
