"""trio-chat: a group chat over TCP for the terminal, on Trio."""

__version__ = "0.2.0"
