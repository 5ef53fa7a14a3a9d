"""The rules of a link's life, as pure functions (no I/O).

After h11's ``_state.py``: everything that decides what happens to a link
lives here and answers with a value; the node only carries the decision
out. Which of two links to one node is kept (§3), whether a closed link is
somebody's departure (§4, §9), and why a connection ended. § refers to
``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.Enum):
    """Why a connection ended."""

    CLOSED_BY_REMOTE = "closed by remote"  # EOF from the other side
    RESET = "connection reset"  # the stream broke under us
    LEFT = "left"  # a plain-text client said /exit
    CLOSED = "closed"  # we closed it, for no reason of the remote's
    SHUTTING_DOWN = "shutting down"  # this node is leaving
    DUPLICATE = "duplicate connection"  # the one-link-per-pair rule (§3)
    ITSELF = "connected to itself"  # a node dialled its own address
    PROTOCOL_ERROR = "protocol error"  # we sent the remote an ``error``
    REFUSED = "refused"  # the remote sent us an ``error`` first
    NO_HELLO = "no hello"  # a dialled node never answered (§3)
    DEAD = "dead link"  # nothing received for the dead-link time (§7)
    STALLED = "stopped reading"  # a write blocked for the stall time
    INTERNAL = "internal error"  # a bug of ours, contained to this link


@dataclass(frozen=True, slots=True)
class Closing:
    """Why a connection ended: the reason the rules look at, and the text a
    person reads in a log line (``"the handshake did not complete within 10 s"``)."""

    reason: Reason
    detail: str = ""

    def __str__(self) -> str:
        return self.detail or self.reason.value


# Closings that end a connection without anyone having gone anywhere.
QUIET = frozenset({Reason.DUPLICATE, Reason.ITSELF})


class Verdict(enum.Enum):
    """What to do with a node link whose handshake just completed (§3)."""

    ACCEPT = "accept"  # the first link to that node
    ITSELF = "itself"  # our own id: close without error
    KEEP_OLD = "keep old"  # a link to that node is kept; close this one
    REPLACE_OLD = "replace old"  # keep this one; close the older link quietly


def judge_hello(
    own_id: str, remote_id: str, outgoing: bool, existing_outgoing: bool | None
) -> Verdict:
    """The one-link-per-pair rule (§3), as both ends apply it.

    ``existing_outgoing`` is None when no link to ``remote_id`` is up, else
    whether this node dialled it. Both ends keep the link dialled by the
    node with the smaller id, so they agree without talking; when both were
    dialled by the same node (a re-dial racing a slow close), the older one
    is kept.
    """
    if remote_id == own_id:
        return Verdict.ITSELF
    if existing_outgoing is None:
        return Verdict.ACCEPT
    old_dialler = own_id if existing_outgoing else remote_id
    new_dialler = own_id if outgoing else remote_id
    return Verdict.REPLACE_OLD if new_dialler < old_dialler else Verdict.KEEP_OLD


class Departure(enum.Enum):
    """What a closed link means for the group."""

    NONE = "none"  # nobody went: it said leave already, or it never arrived
    LEAVE = "leave"  # a plain-text client closed its side: its leave (§9)
    LOST = "lost"  # gone without a leave: a ``lost`` event (§4)


def node_departure(
    closing: Closing, *, active: bool, said_leave: bool, stopping: bool, present: bool
) -> Departure:
    """Whether a node link's close means the node is lost (§4).

    Only the active link to a node counts; one that said its ``leave`` went
    properly; when this node is leaving it reports nobody; and a node
    already known to have departed (its leave seen on another path, or
    reported lost already) is not reported again.
    """
    if not active or closing.reason in QUIET or said_leave or stopping or not present:
        return Departure.NONE
    return Departure.LOST


def client_departure(closing: Closing, *, said_leave: bool, stopping: bool) -> Departure:
    """A plain-text client's close (§9): closing its side is its leave.

    A reset counts as closing too: a client closing with lines still unread
    makes its kernel send RST, not FIN. A host that vanished sends neither
    (a dead link: lost).
    """
    if said_leave or stopping:
        return Departure.NONE
    if closing.reason in (Reason.CLOSED_BY_REMOTE, Reason.RESET):
        return Departure.LEAVE
    return Departure.LOST
