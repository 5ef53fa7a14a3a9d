"""Addresses as people and ``peers`` frames write them: ``host:port``.

Pure functions, no I/O. IPv6 hosts are written in brackets (``[::1]:8080``),
as in URLs, so the last colon always separates the port. A host is checked
where it is parsed, so nothing malformed reaches a resolver: an IP literal,
or a host name of ASCII letters, digits and hyphens (RFC 1123 labels of 1
to 63 characters, 253 in all). Names in other scripts are given in their
``xn--`` form.
"""

from __future__ import annotations

import ipaddress
import re

MAX_HOST = 253
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def valid_host(host: str) -> bool:
    """True for an IP literal or a well-formed host name."""
    if ip_literal(host) is not None:
        return True
    if not host or len(host) > MAX_HOST or not host.isascii():
        return False
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return all(_LABEL.fullmatch(label) for label in labels)


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address if it is written as one, else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def dialable_ip(host: str) -> bool:
    """An IP literal a node could listen on: not unspecified, not multicast.

    Addresses learned by peer exchange must be of this kind (§7): a peer
    learns its neighbours' addresses from the IP their connection comes
    from, so a host name there is nobody's address, only a name to make a
    node look up.
    """
    ip = ip_literal(host)
    return ip is not None and not (ip.is_unspecified or ip.is_multicast)


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
        if ip_literal(host) is None or ":" not in host:
            return None  # brackets hold an IPv6 address and nothing else
    elif ":" in host:
        return None  # an IPv6 host needs brackets
    if not valid_host(host):
        return None
    return host, port


def join_addr(host: str, port: int) -> str:
    """The inverse of :func:`split_addr`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
