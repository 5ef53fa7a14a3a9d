"""Addresses as people and ``peers`` frames write them: ``host:port``.

Pure functions, no I/O. IPv6 hosts are written in brackets (``[::1]:8080``),
as in URLs, so the last colon always separates the port.
"""

from __future__ import annotations


def split_addr(addr: str) -> tuple[str, int] | None:
    """``"host:port"`` or ``"[v6]:port"`` as (host, port), or None if malformed."""
    host, sep, port_text = addr.rpartition(":")
    # isdigit alone admits "²" and Arabic-Indic digits, which int() refuses or misreads.
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()):
        return None
    if len(port_text) > 5:
        return None
    port = int(port_text)
    if not 0 < port < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return None  # an IPv6 host needs brackets
    if not host or any(c.isspace() for c in host):
        return None
    return host, port


def join_addr(host: str, port: int) -> str:
    """The inverse of :func:`split_addr`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
