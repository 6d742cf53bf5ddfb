"""The socket bound: a bare Sanic WebSocket fan-out with no database and no checks.

A client connects to /connect?group=G and every text frame it sends is forwarded to the
other sockets of group G: the same fan-out chat.py does, minus everything else. Like
chat.py it encodes the frame once and writes the same bytes to each socket's transport
(Sanic's `ws.send` per socket, a lock and a few awaits each, reached about 75% of this).
Run: python bench/fanout_server.py PORT
"""

import sys
from collections import defaultdict

from sanic import Sanic
from websockets.frames import Frame, Opcode

app = Sanic("fanout")
app.config.WEBSOCKET_MAX_SIZE = 64 * 1024
GROUPS = defaultdict(set)


@app.websocket("/connect")
async def connect(request, ws):
    group = GROUPS[request.args.get("group")]
    group.add(ws)
    try:
        async for frame in ws:
            data = Frame(Opcode.TEXT, frame.encode()).serialize(mask=False)
            for other in list(group):
                if other is not ws:
                    other.io_proto.transport.write(data)
    finally:
        group.discard(ws)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), single_process=True, access_log=False, motd=False)
