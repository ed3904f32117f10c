"""A lightweight SMTP sink for benchmarks: accepts everything, keeps nothing.

    python bench/sink.py PORT [DELAY_SECONDS]

DELAY_SECONDS is added before every reply, to model a server far away. Loopback only.
"""

from __future__ import annotations

import asyncio
import sys

PORT = int(sys.argv[1])
DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def reply(text: str) -> None:
        if DELAY:
            await asyncio.sleep(DELAY)
        writer.write(text.encode() + b"\r\n")
        await writer.drain()

    await reply("220 sink ESMTP")
    in_data = False
    while line := await reader.readline():
        if in_data:
            if line in (b".\r\n", b".\n"):
                in_data = False
                await reply("250 2.0.0 accepted")
            continue
        command = line[:4].upper()
        if command == b"EHLO":
            await reply("250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 50000000")
        elif command == b"DATA":
            in_data = True
            await reply("354 go ahead")
        elif command == b"QUIT":
            await reply("221 bye")
            break
        else:
            await reply("250 OK")
    writer.close()


async def main() -> None:
    server = await asyncio.start_server(session, "127.0.0.1", PORT)
    async with server:
        await server.serve_forever()


asyncio.run(main())
