"""A closed group's door (§8): TLS on each stream before it becomes a link.

With a secret, the node hands every stream it accepts or dials here; what
comes back is the link to serve, with its TLS sealer and the binding its
group proofs are made with, or why there is none. An accepted stream that
is not TLS becomes a link all the same, refused in its own dialect.
"""

from __future__ import annotations

import logging

import trio

from chat.addr import join_addr
from chat.dialler import LinkEnd
from chat.lifecycle import Closing, Reason
from chat.link import Link
from chat.links import Links
from chat.sockets import peername
from chat.tls import Tls, TlsFailed, accept, dial

log = logging.getLogger("chat")


def _where(stream: trio.abc.Stream) -> str:
    return join_addr(*peername(stream) or ("?", 0))


async def accepted(links: Links, stream: trio.SocketStream, tls: Tls, limit: float) -> Link | None:
    """The link of an accepted stream, after TLS (``limit``: seconds for it)."""
    born = trio.current_time()
    try:
        served, sealer, refusal = await accept(stream, tls, born + limit)
    except TlsFailed as exc:
        log.info("connection from %s: %s", _where(stream), exc)
        await trio.aclose_forcefully(stream)
        return None
    group = tls.binding() if refusal is None else None
    link = links.open(served, outgoing=False, group=group, sealer=sealer)
    link.conn.born = born  # the handshake time counts from the connection
    if refusal is not None:
        link.conn.refuse(refusal)
    return link


async def dialled(links: Links, stream: trio.abc.Stream, tls: Tls, limit: float) -> Link | LinkEnd:
    """The link of a dialled stream after TLS, or how the dial ended."""
    born = trio.current_time()
    try:
        sealer, cert = await dial(stream, tls, born + limit)
    except TlsFailed as exc:
        where = _where(stream)
        log.warning("cannot join %s: %s", where, exc)
        await trio.aclose_forcefully(stream)
        return LinkEnd("", where, False, Closing(Reason.REFUSED, str(exc)))
    return links.open(stream, outgoing=True, group=tls.binding(cert), sealer=sealer)
