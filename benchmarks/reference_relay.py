"""The reference relay for ``make bench``: a chat relay written the
straightforward way with asyncio streams, as most Python chat servers are.

It speaks just enough of protocol v1 for ``trio-chat bench``: it answers a
client's hello with its own, then writes every line a client sends to every
other client, awaiting ``drain()`` after each write. Not shipped; it exists
to be measured against.

    python benchmarks/reference_relay.py [PORT]   # prints "listening on PORT"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys

HELLO = (
    json.dumps(
        {
            "type": "hello",
            "proto": 1,
            "node": secrets.token_hex(16),
            "name": "reference",
            "role": "hub",
            "listen": None,
            "have": {},
        },
        separators=(",", ":"),
    ).encode()
    + b"\n"
)

clients: set[asyncio.StreamWriter] = set()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readline()  # the client's hello
        writer.write(HELLO)
        await writer.drain()
        clients.add(writer)
        while line := await reader.readline():
            for other in list(clients):
                if other is not writer:
                    other.write(line)
                    await other.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
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
