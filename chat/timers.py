"""The link timers of one connection (§3, §7, §9), applied by the node's watchdog.

Handshake, refusal, stalled writer, keepalive, dead link, and a plain-text
client that neither speaks nor reads: each is a deadline on a
:class:`~chat.connection.Connection`'s clocks, checked here every sweep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chat.lifecycle import Closing, Reason
from chat.protocol import Ping, ProtocolError
from chat.sockets import unacknowledged

if TYPE_CHECKING:
    from chat.connection import Connection

REFUSE_WAIT = 1.0  # seconds a refused connection may take to show its dialect


def check(conn: Connection, now: float) -> None:
    """Apply the link timers (§3, §7) to ``conn``; the node's watchdog calls this."""
    if conn.closing is not None:
        return
    timing = conn.timing
    if conn.refusal is not None:
        if now - conn.born >= REFUSE_WAIT:
            conn.fail(conn.refusal, text=True)  # silent so far: a person, likely
        return
    if not conn.established:
        if now - conn.born >= timing.handshake:
            _timed_out(conn)
        return
    since = conn.outbox.writing_since
    if since is not None and now - since >= timing.stall:
        # The cancelled send_all may have sent part of a frame: nothing
        # more may be written on this stream, last words included.
        conn.abort(Closing(Reason.STALLED, f"stopped reading for {timing.stall:g} s"))
        return
    if not conn.keepalive:
        _check_reading(conn, now)
        return
    if now - conn.heard_at >= timing.dead_after:
        conn.finish(Closing(Reason.DEAD, f"nothing received for {timing.dead_after:g} s"))
        return
    outbox = conn.outbox
    if now - outbox.said_at >= timing.ping_after and not outbox.busy and not len(outbox):
        conn.ping_nonce += 1
        conn.send_frame(Ping(conn.ping_nonce))


def _check_reading(conn: Connection, now: float) -> None:
    """A plain-text client cannot answer pings: drop it if it neither
    speaks nor reads for the dead-link time, keep it if it reads.

    Reading shows in the kernel: bytes sent to it that stay
    unacknowledged (its window is shut) across probes that span the
    dead-link time mean it stopped reading. A host that vanished is
    found by TCP keepalive, set when the session begins.
    """
    timing = conn.timing
    fd = conn.outbox.fd
    if fd is None or now - conn.heard_at < timing.ping_after or now < conn.probe_at:
        return
    conn.probe_at = now + timing.ping_after
    if unacknowledged(fd) == 0:
        conn.unread_since = None
    elif conn.unread_since is None:
        conn.unread_since = now
    elif now - conn.unread_since >= timing.dead_after:
        why = f"neither spoke nor read for {timing.dead_after:g} s"
        conn.finish(Closing(Reason.DEAD, why))


def _timed_out(conn: Connection) -> None:
    timing = conn.timing
    if not conn.outgoing and conn.decoder.plain_text is None:
        # Nothing at all in the handshake time: not a node (a node
        # speaks first, §3), so a person, or a client that listens
        # before it talks. It gets the chat as text from now on.
        conn.decoder.plain_text = True
        conn.handler.on_silent()
        return
    # A hello and a proof each way (§3), all within the handshake time.
    why = f"the handshake did not complete within {timing.handshake:g} s"
    if conn.outgoing:
        conn.finish(Closing(Reason.NO_HELLO, why))
    else:
        conn.fail(ProtocolError("handshake_timeout", why))
