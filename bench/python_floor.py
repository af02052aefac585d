"""The least a Python proxy on uvloop can do per request: the floor under `edgestick proxy`.

    python -m bench.python_floor --port P (--relay BACKEND_PORT | --deny)

`--relay`: a TCP relay, one backend connection per client connection, bytes copied both
ways from the data callbacks (no parsing, no rules, no pooling).
`--deny`: answers every request head with a fixed 429 and reads nothing of it beyond
finding its end.

bench/proxy.py runs it beside HAProxy and edgestick with the same client: its requests per
CPU second bound what any uvloop-based proxy in Python can reach on this machine, before
it parses a head, evaluates a rule or touches a stick table.
"""
from __future__ import annotations

import argparse
import asyncio
import signal

DENY = (b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n")
DENY_CLOSE = (b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")


class Denier(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        buf = self.buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head, buf = buf[:end], buf[end + 4:]
            if b"onnection: close" in head or b"onnection: Close" in head:
                self.transport.write(DENY_CLOSE)
                self.transport.close()
                return
            self.transport.write(DENY)
        self.buf = buf


class _Half(asyncio.Protocol):
    """One side of a relay: what it receives is written to its peer."""
    peer: "_Half | None" = None
    transport: asyncio.Transport | None = None
    pending: list[bytes]

    def __init__(self):
        self.pending = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


def relay_factory(loop, backend_port: int):
    def make():
        client = _Half()

        async def connect():
            try:
                _, server = await loop.create_connection(_Half, "127.0.0.1", backend_port)
            except OSError:
                client.transport.close()
                return
            server.peer, client.peer = client, server
            for data in client.pending:
                server.transport.write(data)
            client.pending.clear()
        loop.create_task(connect())
        return client
    return make


async def serve(port: int, relay: int | None) -> None:
    loop = asyncio.get_running_loop()
    factory = relay_factory(loop, relay) if relay else Denier
    server = await loop.create_server(factory, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--relay", type=int, metavar="BACKEND_PORT")
    mode.add_argument("--deny", action="store_true")
    args = ap.parse_args(argv)
    import uvloop
    uvloop.run(serve(args.port, args.relay))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
