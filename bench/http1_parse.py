"""Request-head parsing cost: edgestick's parser (proxy/http1.py) vs httptools (llhttp),
both producing what the proxy needs (method, target, lower-case header list).

    python -m bench.http1_parse

Each head is parsed once (every iteration has its own target, so proxy/http1.py's memo of
repeated heads never hits), and, for edgestick, once more with the same head over and
over (what the memo gives a client or a flood that repeats itself).
"""
from __future__ import annotations

import timeit

import httptools

from edgestick.proxy import http1

REQUESTS = {
    "minimal": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    "browser": (b"GET /articles/42?page=2 HTTP/1.1\r\nHost: www.example.com\r\n"
                b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
                b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
                b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
                b"Cookie: SERVERID=s1; session=abcdef0123456789\r\nConnection: keep-alive\r\n"
                b"Upgrade-Insecure-Requests: 1\r\n\r\n"),
}


class _Collect:
    __slots__ = ("url", "headers", "complete")

    def __init__(self):
        self.headers = []
        self.complete = False

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        self.headers.append([name.decode("latin-1").lower(), value.decode("latin-1")])

    def on_headers_complete(self):
        self.complete = True


def with_httptools(raw: bytes):
    c = _Collect()
    p = httptools.HttpRequestParser(c)
    p.feed_data(raw)
    return p.get_method().decode(), c.url.decode("latin-1"), c.headers


def _per_call_us(fn, heads: list[bytes]) -> float:
    it = iter(heads)
    return timeit.timeit(lambda: fn(next(it)), number=len(heads)) / len(heads) * 1e6


def main() -> int:
    n = 50_000
    for name, raw in REQUESTS.items():
        line_end = raw.index(b" HTTP/1.1")
        unique = [raw[:line_end] + b"%s%d" % (b"&n=" if b"?" in raw[:line_end] else b"?n=", i)
                  + raw[line_end:] for i in range(n)]
        ours = _per_call_us(http1.parse_request, unique)
        ht = _per_call_us(with_httptools, unique)
        repeated = _per_call_us(http1.parse_request, [raw] * n)
        print(f"{name:<8} each head once: edgestick http1 {ours:5.2f} us, httptools {ht:5.2f} us;"
              f"  the same head again: edgestick http1 {repeated:5.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
