"""A small ASGI app served by hypercorn (a real HTTP/1.1, h2c and WebSocket server) for
the proxy's transparency tests. Routes:
  /echo           JSON of what arrived: method, path, query, http_version, headers, body
  /chunked?n=N    N chunks streamed with a small pause between them
  /slow?ms=M      answers after M milliseconds
  /status/CODE    answers with that status
  /ws             WebSocket echo
"""
import asyncio
import json


async def read_body(receive):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def send_json(send, status, payload):
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def query_int(scope, name, default):
    for part in scope.get("query_string", b"").decode().split("&"):
        key, _, value = part.partition("=")
        if key == name and value.isdigit():
            return int(value)
    return default


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": "echo: " + message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
    path = scope["path"]
    if path == "/echo":
        body = await read_body(receive)
        await send_json(send, 200, {
            "method": scope["method"],
            "path": path,
            "query": scope.get("query_string", b"").decode(),
            "http_version": scope["http_version"],
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            "body": body.decode(errors="replace"),
        })
    elif path == "/chunked":
        await read_body(receive)
        n = query_int(scope, "n", 3)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(), "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/slow":
        await read_body(receive)
        await asyncio.sleep(query_int(scope, "ms", 1000) / 1000)
        await send_json(send, 200, {"slept_ms": query_int(scope, "ms", 1000)})
    elif path.startswith("/status/"):
        await read_body(receive)
        await send_json(send, int(path.rsplit("/", 1)[1]), {"status": path})
    else:
        await read_body(receive)
        await send_json(send, 404, {"error": "no such route"})
