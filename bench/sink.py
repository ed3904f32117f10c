"""A lightweight SMTP sink for benchmarks: accepts everything, keeps nothing.

    python bench/sink.py PORT [DELAY_SECONDS]

Every reply leaves DELAY_SECONDS after its command arrived, modelling a server far away
(replies to pipelined commands overlap). Loopback only.
"""

from __future__ import annotations

import asyncio
import sys

PORT = int(sys.argv[1])
DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Every reply leaves DELAY after its command arrived, as over a slow network: the
    replies to pipelined commands travel together instead of one after another."""
    replies: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def send() -> None:
        while (item := await replies.get()) is not None:
            due, data = item
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())

    def reply(text: str) -> None:
        replies.put_nowait((loop.time() + DELAY, text.encode() + b"\r\n"))

    reply("220 sink ESMTP")
    in_data = False
    while line := await reader.readline():
        if in_data:
            if line in (b".\r\n", b".\n"):
                in_data = False
                reply("250 2.0.0 accepted")
            continue
        command = line[:4].upper()
        if command == b"EHLO":
            reply("250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                  "250 SIZE 50000000")
        elif command == b"DATA":
            in_data = True
            reply("354 go ahead")
        elif command == b"QUIT":
            reply("221 bye")
            break
        else:
            reply("250 OK")
    replies.put_nowait(None)
    await sender
    writer.close()


async def main() -> None:
    server = await asyncio.start_server(session, "127.0.0.1", PORT)
    async with server:
        await server.serve_forever()


asyncio.run(main())
