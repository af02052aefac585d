"""The lab's HTTP backend: small, fast, and honest about who answered.

    python -m edgestick.lab.backend --bind 198.19.0.2:8080 --name s1 [--bind ... --name s2]

Every response names the server in an `x-server` header and in the body, so a client
behind the edge sees the balancing and the persistence. Routes:
  /health  200 "ok"                    (for the proxy's health checks)
  /login   401                         (every login fails: credential stuffing makes
                                        http_err_rate climb in the proxy's table)
  anything else  200 "<name> <path>"
HTTP/1.1 keep-alive (HTTP/1.0 and `connection: close` close); request bodies are read and
discarded. httptools does the parsing, so one process serves tens of thousands of
requests a second, more than the lab's clients can send through the edge.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import httptools

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized"}


def response(status: int, name: str, body: bytes, keep_alive: bool) -> bytes:
    head = (f"HTTP/1.1 {status} {REASONS[status]}\r\n"
            f"content-type: text/plain\r\n"
            f"content-length: {len(body)}\r\n"
            f"x-server: {name}\r\n")
    if not keep_alive:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + body


class BackendProtocol(asyncio.Protocol):
    """One connection; httptools calls back as the bytes arrive (pipelining works)."""

    def __init__(self, name: str, stats: dict):
        self.name = name
        self.stats = stats
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply(400, b"upgrade not supported\n", keep_alive=False)
        except httptools.HttpParserError:
            self._reply(400, b"bad request\n", keep_alive=False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        path = httptools.parse_url(self.url).path.decode("latin-1") if self.url else "/"
        keep_alive = self.parser.should_keep_alive()
        if path == "/health":
            self._reply(200, b"ok\n", keep_alive)
        elif path == "/login":
            self._reply(401, b"login failed\n", keep_alive)
        else:
            self._reply(200, f"{self.name} {path}\n".encode(), keep_alive)

    def _reply(self, status: int, body: bytes, keep_alive: bool) -> None:
        self.stats[status] = self.stats.get(status, 0) + 1
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response(status, self.name, body, keep_alive))
        if not keep_alive:
            self.transport.close()


def parse_bind(text: str) -> tuple[str, int]:
    """ADDR:PORT, [V6ADDR]:PORT or :PORT (all addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad bind '{text}': expects ADDR:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


async def serve(binds: list[tuple[str, int]], names: list[str],
                stats: dict[str, dict[int, int]] | None = None) -> list[asyncio.Server]:
    """Start one listener per (address, name); returns the servers (already listening).
    `stats[name]` counts the responses each server sent, by status."""
    loop = asyncio.get_running_loop()
    stats = {} if stats is None else stats
    servers = []
    for (host, port), name in zip(binds, names):
        counts = stats.setdefault(name, {})
        servers.append(await loop.create_server(lambda n=name, c=counts: BackendProtocol(n, c),
                                                host, port, reuse_address=True, backlog=1024))
    return servers


async def _run(binds, names) -> None:
    stats: dict[str, dict[int, int]] = {}
    servers = await serve(binds, names, stats)
    for (host, port), name in zip(binds, names):
        print(f"backend {name} listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()
    for name, counts in stats.items():        # what reached the backends, for lab summaries
        done = " ".join(f"{code}:{n}" for code, n in sorted(counts.items())) or "none"
        print(f"backend {name} answered {sum(counts.values())} ({done})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgestick.lab.backend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", action="append", required=True, metavar="ADDR:PORT",
                        help="address to listen on (repeat for several servers)")
    parser.add_argument("--name", action="append", default=[],
                        help="server name, one per --bind (default s1, s2, ...)")
    args = parser.parse_args(argv)
    try:
        binds = [parse_bind(b) for b in args.bind]
    except ValueError as e:
        parser.error(str(e))
    names = args.name or [f"s{i + 1}" for i in range(len(binds))]
    if len(names) != len(binds):
        parser.error(f"{len(binds)} --bind but {len(names)} --name: give one name per bind")
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(_run(binds, names))
    except OSError as e:
        print(f"backend: cannot listen: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
