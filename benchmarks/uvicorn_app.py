"""The raw ASGI application uvicorn serves in the benchmarks (no framework).

    /usr/bin/python3 -m uvicorn uvicorn_app:app --app-dir benchmarks \
        --loop uvloop --http httptools --ws websockets --no-access-log --port 8000

It answers like the C++ servers of the comparison:
  GET  any path      200 "Hello, world!" text/plain (with content-length)
  POST /upload       reads the body as it arrives, discards it, {"bytes": N}
  GET  /bytes/{n}    n bytes 'a'..'z' repeated, with content-length, in 64 KiB pieces
  WebSocket, any path: accepts, echoes text as text and bytes as bytes
"""

HELLO = b"Hello, world!"
HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
}
HELLO_BODY = {"type": "http.response.body", "body": HELLO}

# 65520 = 26 * 2520: every piece continues the 'a'..'z' pattern where the last one ended.
PIECE = bytes(ord("a") + i % 26 for i in range(26 * 2520))


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def upload(receive, send):
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # http.disconnect
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b'{"bytes": %d}' % total
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
    })
    await send({"type": "http.response.body", "body": body})


async def download(n, send):
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % n)],
    })
    sent = 0
    while True:
        length = min(len(PIECE), n - sent)
        sent += length
        more = sent < n
        await send({"type": "http.response.body", "body": PIECE[:length], "more_body": more})
        if not more:
            return


async def websocket(receive, send):
    message = await receive()  # websocket.connect
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message.get("text", "")})


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "http":
        path = scope["path"]
        method = scope["method"]
        if method == "POST" and path == "/upload":
            await upload(receive, send)
        elif method in ("GET", "HEAD") and path.startswith("/bytes/") and path[7:].isdigit():
            await download(int(path[7:]), send)
        else:
            await send(HELLO_START)
            await send(HELLO_BODY)
    elif kind == "websocket":
        await websocket(receive, send)
    elif kind == "lifespan":
        await lifespan(receive, send)
