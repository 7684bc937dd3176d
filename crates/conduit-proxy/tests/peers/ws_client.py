"""A real WebSocket client (the `websockets` library): connects, sends messages, prints
the echoes as one JSON line.  ws_client.py ws://HOST:PORT/ws N"""
import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main(url, n):
    async with connect(url, open_timeout=10) as ws:
        replies = []
        for i in range(n):
            await ws.send(f"message {i}")
            replies.append(await asyncio.wait_for(ws.recv(), 10))
        print(json.dumps({"replies": replies}))


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
