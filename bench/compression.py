"""What HTTP compression costs per response in edgestick's Python (proxy/compression.py).

    python -m bench.compression [--algo gzip|deflate|raw-deflate|identity] [--level N]

In-process, no sockets: choosing the algorithm from a browser-like request (every request
of a `compression` proxy pays this), then per response body size: the response check,
the head rewrite and serialisation, and the body through zlib as the relay does it
(compress, flush, chunk framing). The body is generated HTML (compresses about 7:1)."""
from __future__ import annotations

import argparse
import time
import zlib

from edgestick.proxy import compression as comp
from edgestick.proxy import http1

REQUEST = (b"GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip, deflate, br\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\r\n")
HTML = b"<html><body>" + b"".join(
    b"<p class='x%d'>item %d of the list, %s</p>\n" % (i, i * 7, b"lorem ipsum dolor sit amet"[:i % 27])
    for i in range(30000))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--algo", default="gzip", choices=sorted(comp.ALGORITHMS))
    ap.add_argument("--level", type=int, default=1, help="tune.comp.maxlevel (1-9)")
    args = ap.parse_args(argv)
    plan = comp.Plan(comp.Compression(algos=(args.algo,), types=("text/html",),
                                      level=args.level), None)
    req = http1.parse_request(bytearray(REQUEST))
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        choice = plan.select(req.copy())
    print(f"choosing the algorithm (per request){(time.perf_counter() - t0) / n * 1e6:10.2f} us")
    if choice is None:
        print("(this request gets no compression)")
        return 0
    print(f"{args.algo}, level {args.level}: per response, by body size")
    for size in (1000, 10_000, 100_000, 1_000_000):
        body = HTML[:size]
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n\r\n" % size
        template = http1.parse_response(head, 0, "GET")
        n = max(20, 2_000_000 // size)
        t0 = time.perf_counter()
        for _ in range(n):
            resp = template.copy()
            if not choice.applies(req, resp):
                raise SystemExit("the response would not be compressed")
            choice.rewrite_head(resp)
            http1.serialize_response(resp, None)
            enc = choice.encoder()
            out = body if enc is None else enc.compress(body) + enc.flush(zlib.Z_FINISH)
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(out), out)
        dt = (time.perf_counter() - t0) / n
        print(f"{size:>9} bytes -> {len(out):>8} {dt * 1e6:10.1f} us  ({size / dt / 1e6:5.0f} MB/s in)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
