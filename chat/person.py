"""The person at a node: what they do through it, and what reaches them.

:class:`Person` is a part of :class:`chat.node.Node`: messages, ``/me``,
``/msg``, ``/reply`` and ``/nick``, each answering the reason it cannot be
done (or None); and :func:`screen_for`, the sink between the node's
display and the person's: hidden when they ignore its author
(chat.attention), logged when they keep a log (``--log``).
"""

from __future__ import annotations

from chat.attention import Attention
from chat.author import Author
from chat.config import Config
from chat.links import Links
from chat.members import Entry
from chat.names import name_problem, text_problem
from chat.router import Router, Sink


def screen_for(attention: Attention, config: Config, sink: Sink | None) -> Sink:
    """What the node shows its person, through ``/ignore`` and ``--log``."""
    person = sink or (lambda entry: None)

    def shown(entry: Entry) -> None:
        if attention.hidden(entry):
            return
        if config.log is not None:
            config.log.write(entry)
        person(entry)

    return shown


class Person:
    """The person's actions, for a node that has these parts."""

    me: Author
    router: Router
    links: Links

    @property
    def stopping(self) -> bool:
        """True from the node's ``stop`` on: nothing more is taken in or relayed."""
        return self.links.stopping

    def say(self, text: str, *, action: bool = False) -> str | None:
        """Send a message as this node (``action``: a /me); the reason if it
        cannot be sent."""
        problem = text_problem(text)
        if problem or self.stopping:
            return problem or "leaving"
        if action:
            self.router.originate(self.me, "msg", text=text, me=True)
        else:
            self.router.originate(self.me, "msg", text=text)
        return None

    def private(self, name: str, text: str) -> str | None:
        """``/msg NAME text``: sealed to that one member (§4); the reason if not."""
        return "leaving" if self.stopping else self.router.private(self.me, name, text)

    def reply(self, text: str) -> str | None:
        """``/reply text``: to whoever last wrote to us privately."""
        return "leaving" if self.stopping else self.links.reply(self.me, text)

    def rename(self, name: str) -> str | None:
        """Change this node's name (a ``nick`` event); the reason if refused."""
        problem = name_problem(name)
        if problem:
            return problem
        if name != self.me.name:
            self.me.name = name
            self.router.originate(self.me, "nick")
        return None
