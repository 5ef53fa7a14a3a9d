"""The ceiling for W1 on this machine: a relay that does nothing but copy.

It completes each client's protocol-2 handshake like the reference relay,
then copies whatever a client sends, cut at its last newline so lines stay
whole, to every other client: one ``os.read`` and one write per client per
chunk, no parsing, no checks, no queues, no history, no limits. Nothing
real can relay faster in Python on the same machine with the same load
tool, so the hub's W1 over this relay's says how much of the ceiling the
hub reaches, and this relay's W1 over the reference's says what ratio the
machine and the tool allow at all. Not shipped; it exists to be measured.

    python benchmarks/ceiling_relay.py [PORT]   # prints "listening on PORT"
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys
from dataclasses import dataclass, field

from chat.handshake import Handshake
from chat.keys import SigningKey
from chat.parse import parse_frame
from chat.protocol import ProtocolError, encode, make_hello

KEY = SigningKey()


@dataclass(eq=False)
class Client:
    sock: socket.socket
    shake: Handshake = field(
        default_factory=lambda: Handshake(
            KEY,
            outgoing=False,
            make_hello=lambda nonce: make_hello(KEY, nonce, "ceiling", "hub", None, {}),
        )
    )
    tail: bytes = b""  # the part of a line read so far


def main(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=4096)
    print(f"listening on {listener.getsockname()[1]}", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    relaying: list[Client] = []

    def drop(client: Client) -> None:
        selector.unregister(client.sock)
        if client in relaying:
            relaying.remove(client)
        client.sock.close()

    while True:
        for key, _ in selector.select():
            if key.data is None:
                sock, _ = listener.accept()
                selector.register(sock, selectors.EVENT_READ, Client(sock))
                continue
            client: Client = key.data
            try:
                data = client.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                drop(client)
                continue
            data = client.tail + data
            cut = data.rfind(b"\n") + 1
            client.tail, data = data[cut:], data[:cut]
            if not client.shake.done:
                try:
                    data = handshake(client, data)
                except (ProtocolError, OSError):
                    drop(client)
                    continue
                if client.shake.done:
                    relaying.append(client)
            if data:
                for other in relaying:
                    if other is not client:
                        # One that broke is dropped when its read ends.
                        with contextlib.suppress(OSError):
                            other.sock.sendall(data)


def handshake(client: Client, data: bytes) -> bytes:
    """Feed ``data``'s lines to the handshake; what follows it, to relay."""
    while data and not client.shake.done:
        line, _, data = data.partition(b"\n")
        for frame in client.shake.receive(parse_frame(line)):
            client.sock.sendall(encode(frame))
    return data


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
