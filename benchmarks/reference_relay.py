"""The reference relay for ``make bench``: a chat relay written the
straightforward way with asyncio streams, as most Python chat servers are.

It speaks just enough of protocol 2 for ``trio-chat bench``: it completes a
client's handshake (with the project's sans-IO ``chat.handshake``, which
any event loop can drive), then writes every line a client sends to every
other client, awaiting ``drain()`` after each write. Like the hub's
first-hop rule, it checks no signature of a client's own events. Not
shipped; it exists to be measured against.

    python benchmarks/reference_relay.py [PORT]   # prints "listening on PORT"
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from chat.handshake import Handshake
from chat.keys import SigningKey
from chat.parse import parse_frame
from chat.protocol import ProtocolError, encode, make_hello

KEY = SigningKey()

clients: set[asyncio.StreamWriter] = set()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    shake = Handshake(
        KEY,
        outgoing=False,
        make_hello=lambda nonce: make_hello(KEY, nonce, "reference", "hub", None, {}),
    )
    try:
        while not shake.done:  # the client's hello, then its proof (§3)
            for frame in shake.receive(parse_frame(await reader.readuntil(b"\n"))):
                writer.write(encode(frame))
            await writer.drain()
        clients.add(writer)
        while line := await reader.readline():
            for other in list(clients):
                if other is not writer:
                    other.write(line)
                    await other.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError):
        pass
    finally:
        clients.discard(writer)
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=1 << 17, backlog=4096)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
