#!/usr/bin/env python3
"""Forwards connections from a Unix socket to a TCP port of 127.0.0.1.

How a test outside a private network namespace reaches a server inside it:
the Unix socket is a file, visible from both sides; the TCP port is the
namespace's own.

Usage: unix_forward.py SOCKET_PATH PORT

Prints "FORWARDING <SOCKET_PATH> <PORT>" on stdout once the socket listens.
Each connection is forwarded to 127.0.0.1:PORT, bytes both ways, each
direction's end passed on as a half close. While nothing listens on the port
yet (its server is still starting), connecting is retried every 20 ms for at
most 20 s; after that the Unix connection is closed. Runs until killed.
"""

import asyncio
import sys

CONNECT_DEADLINE = 20.0


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def forward(port, reader, writer):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECT_DEADLINE
    while True:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            if loop.time() > deadline:
                writer.close()
                return
            await asyncio.sleep(0.02)
    await asyncio.gather(pipe(reader, server_writer), pipe(server_reader, writer))
    server_writer.close()
    writer.close()


async def main(path, port):
    server = await asyncio.start_unix_server(lambda r, w: forward(port, r, w), path=path)
    print("FORWARDING %s %d" % (path, port), flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
