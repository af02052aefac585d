"""HAProxy's HTTP cache (`cache` sections, cache-use / cache-store, `filter cache`)
compared with HAProxy 2.6.12: the same configuration, backends and requests through
both. Each request carries its own `X-Seq`, which the echo server writes back in the
body: a body from an earlier request is a cache hit, so both proxies must agree on
which requests reached the server, besides status, headers (Age within a second, it
counts seconds) and bodies. `show cache` (pointers masked, expire within seconds) and
the cache_lookups / cache_hits / intercepted / hrsp / bytes counters of `show stat` must
match too, and `-c` must accept, warn about and refuse the same configurations."""
import itertools
import re
import socket
import subprocess
import time
import urllib.parse
import zlib

import pytest

from proxy_harness import Backends, Client, both, stat_row, workdir

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy.config import load_config_text

pytestmark = pytest.mark.haproxy

CFG = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

cache c1
    total-max-size 1
    max-age 100

cache cv
    total-max-size 1
    max-age 100
    process-vary on
    max-secondary-entries 3

cache small
    total-max-size 1
    max-object-size 8000

# the frontend's cache: a hit never reaches the backend (nor its http-response rules)
frontend fe
    bind 127.0.0.1:{FE}
    http-request cache-use c1
    http-request deny if { path_beg /deny }
    http-response add-header X-FE fe
    http-response cache-store c1
    http-response deny if { res.cache_hit } { res.hdr(x-deny-hit) -m found }
    default_backend bk

backend bk
    http-response add-header X-BE be
    server s1 127.0.0.1:{S1}

frontend fe2
    bind 127.0.0.1:{FE2}
    http-request cache-use cv
    http-response cache-store cv
    default_backend bk

# the backend's cache, rules before and after cache-store, compression in the frontend
frontend fe3
    bind 127.0.0.1:{FE3}
    compression algo gzip
    compression type text/plain
    http-response add-header X-FE fe3
    default_backend bk3

backend bk3
    filter cache c1
    filter compression
    http-request cache-use c1 if { path_beg /c }
    http-response add-header X-A a
    http-response cache-store c1
    http-response add-header X-B b
    http-response add-header X-Hit %[res.cache_hit]
    server s1 127.0.0.1:{S1}

listen li
    bind 127.0.0.1:{FE4}
    http-request cache-use small
    http-response cache-store small
    server s1 127.0.0.1:{S1}

# denied after cache-store (its counters not compared: edgestick's http-response deny
# does not count the server's body in bytes out as HAProxy does)
listen li5
    bind 127.0.0.1:{FE5}
    http-request cache-use c1
    http-response cache-store c1
    http-response deny if { res.hdr(x-deny-miss) -m found }
    server s1 127.0.0.1:{S1}
"""

_RUNS = itertools.count(1)


def q(*headers) -> str:
    """The query asking the echo server for these response headers."""
    return "&".join("hdr=" + urllib.parse.quote(h) for h in headers)


OK = q("Cache-Control: max-age=30")


class Run:
    """A scenario against one proxy: each request gets the next X-Seq; `log` keeps what
    must be equal, `ages` the Age values (compared within a second)."""

    def __init__(self, port: int, first_seq: int):
        self.port = port
        self.c = Client(port)
        self.log, self.ages = [], []
        self.seq = itertools.count(first_seq)

    def req(self, path, method="GET", headers=(), version="1.1", body=None):
        seq = next(self.seq)
        lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1", f"X-Seq: {seq}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        self.c.send(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        r = self.c.read_response(method)
        assert r is not None, path
        age = r.header("age")
        if age is not None and not age.isdigit():
            age = None                          # (the server's own, compared as it is)
        heads = [(k.lower(), v) for k, v in r.headers
                 if k.lower() != "date" and (k.lower() != "age" or age is None)]
        self.ages.append(None if age is None else int(age))
        body = r.body
        if r.header("content-encoding") == "gzip" and body[:2] == b"\x1f\x8b":
            body = zlib.decompress(body, 31)    # (compressed by the proxy: zlib or libslz)
        seen = re.search(rb"x-seq: (\d+)", body)
        if seen is not None:
            origin = "server" if int(seen.group(1)) == seq else "cache"
        else:                                   # (size=N bodies: the Age a hit gets)
            origin = "-" if method == "HEAD" else "cache" if age is not None else "server"
        self.log.append((method, path, headers, r.status_line, heads, origin,
                         age is not None, re.sub(rb"x-seq: \d+", b"x-seq: N", body)))
        if version == "1.0":
            self.c.close()
            self.c = Client(self.port)
        return r

    def close(self):
        self.c.close()


def run_both(pair, which: int, scenario):
    """The scenario on both proxies (the same X-Seq numbers), its logs compared."""
    h, e = pair
    start = next(_RUNS) * 100000
    runs = []
    for p in (h, e):
        r = Run(p.ports[which], start)
        try:
            scenario(r)
        finally:
            r.close()
        runs.append(r)
    rh, re_ = runs
    for a, b in zip(rh.log, re_.log):
        assert b == a
    assert len(rh.log) == len(re_.log)
    for a, b in zip(rh.ages, re_.ages):
        assert (a is None) == (b is None) and (a is None or abs(a - b) <= 1), (rh.ages, re_.ages)
    return rh, re_


def masked_cache(p) -> list[tuple]:
    """`show cache`: pointers out, expire kept apart (compared within the seconds the
    scenarios take: HAProxy's ran first)."""
    out = []
    for line in p.cli("show cache").decode().splitlines():
        line = re.sub(r"0x[0-9a-f]+:", "PTR:", line)
        line = re.sub(r"^0x[0-9a-f]+ ", "PTR ", line)
        line = re.sub(r"shctx:0x[0-9a-f]+", "shctx:PTR", line)
        m = re.search(r" expire:(-?\d+)$", line)
        out.append((line[:m.start()] if m else line, int(m.group(1)) if m else None))
    return out


def assert_same_cache(h, e):
    ours, theirs = masked_cache(e), masked_cache(h)
    assert [x[0] for x in ours] == [x[0] for x in theirs]
    for a, b in zip(ours, theirs):
        assert a[1] is None and b[1] is None or 0 <= a[1] - b[1] <= 3, (a, b)
    return theirs


FE_COUNTERS = ["cache_lookups", "cache_hits", "intercepted", "hrsp_2xx", "hrsp_3xx", "hrsp_5xx",
               "dresp", "req_tot", "bin", "bout", "comp_in", "comp_byp", "comp_rsp"]
BE_COUNTERS = ["cache_lookups", "cache_hits", "hrsp_2xx", "hrsp_5xx", "dresp", "req_tot", "stot",
               "bin", "bout", "comp_in", "comp_byp", "comp_rsp"]


def assert_same_counters(h, e):
    for name, row in (("fe", "FRONTEND"), ("bk", "BACKEND"), ("fe2", "FRONTEND"),
                      ("fe3", "FRONTEND"), ("bk3", "BACKEND"), ("li", "FRONTEND"),
                      ("li", "BACKEND")):
        cols = FE_COUNTERS if row == "FRONTEND" else BE_COUNTERS
        assert stat_row(e, name, row, cols) == stat_row(h, name, row, cols), (name, row)


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(CFG, b, wd, haproxy_bin, 5) as p:
            yield p
    finally:
        b.kill()


# ------------------------------------------------------------------ what is stored

RESPONSE_CASES = [
    (), ("Cache-Control: private",), ("Cache-Control: no-cache",), ("Cache-Control: no-store",),
    ("Cache-Control: max-age=0",), ("Cache-Control: s-maxage=0",), ("Cache-Control: public",),
    ("Cache-Control: max-age=0, s-maxage=10",), ("Cache-Control: PRIVATE",),
    ("Cache-Control: max-age=5, private",), ("Cache-Control: max-age=5,no-store",),
    ('Cache-Control: no-cache="set-cookie"', "Cache-Control: max-age=5"),
    ("Cache-Control: max-age=5", 'Cache-Control: no-cache="Set-Cookie"'),
    ("Set-Cookie: a=b",), ("Set-Cookie: a=b", "Cache-Control: max-age=5"),
    ("Pragma: no-cache", "Cache-Control: max-age=5"), ("Pragma: no-cache, x", "Cache-Control: max-age=5"),
    ("Cache-Control: max-age=5", "Pragma: x", "Pragma: no-cache"),
    ('ETag: "x"',), ("Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT",),
    ("Expires: Wed, 21 Oct 2015 07:28:00 GMT",), ("Expires: Wed, 21 Oct 2099 07:28:00 GMT",),
    ("Expires: garbage",), ("Cache-Control: max-age=7",), ("Cache-Control: s-maxage=8, max-age=3",),
    ('Cache-Control: max-age="9"',), ("Cache-Control: max-age=abc",), ("Cache-Control: max-age=-1",),
    ("Age: 5", "Cache-Control: max-age=30"), ("Age: 50", "Cache-Control: max-age=30"),
    ("Age: x", "Cache-Control: max-age=30"), ("Vary: accept-encoding", "Cache-Control: max-age=30"),
]


def test_response_cacheability_as_haproxy(pair):
    """Each response shape twice: stored (the second from the cache) or not, as HAProxy;
    Age from the server kept in the entry (and taken off the response that is stored)."""
    def scenario(r):
        for i, hs in enumerate(RESPONSE_CASES):
            path = f"/r{i}?" + q(*hs)
            r.req(path)
            r.req(path)
    rh, _ = run_both(pair, 0, scenario)
    origins = [x[5] for x in rh.log]
    assert origins.count("cache") >= 8          # (the cases do hit)
    assert_same_cache(*pair)


def test_request_rules_as_haproxy(pair):
    """What a request does to lookups and stores: Authorization, Cache-Control and Pragma
    in it, HEAD served from a GET's entry, unsafe methods dropping the entry, HTTP/1.0,
    statuses other than 200, a later http-request deny winning over a hit, an
    http-response deny on a hit."""
    def scenario(r):
        for i, rh in enumerate([[("Authorization", "Basic eA==")], [("Cache-Control", "no-cache")],
                                [("Pragma", "no-cache")], [("Cache-Control", "max-age=5")],
                                [("Cache-Control", "no-store")], [("Cache-Control", "max-stale")],
                                [("Cache-Control", "min-fresh=3")],
                                [("Pragma", "no-cache"), ("Cache-Control", "foo")]]):
            path = f"/q{i}?" + OK
            r.req(path, headers=rh)
            r.req(path)
            r.req(path, headers=rh)
        path = "/m?" + OK
        for method, body in [("HEAD", None), ("HEAD", None), ("GET", None), ("HEAD", None),
                             ("POST", b"x"), ("GET", None), ("GET", None), ("PUT", b"x"),
                             ("GET", None), ("OPTIONS", None), ("GET", None)]:
            r.req(path, method, body=body)
        r.req(path + "&status=404", "DELETE")
        r.req(path + "&status=500", "POST", body=b"x")
        r.req(path)
        r.req(path, version="1.0")
        r.req(path + "&v10", version="1.0")
        r.req(path + "&v10")
        for st in (201, 203, 301, 404):
            r.req(f"/s?status={st}&" + OK)
            r.req(f"/s?status={st}&" + OK)
        r.req("/deny?" + OK)
        r.req("/deny?" + OK)
        for path in ("http://127.0.0.1/abs?" + OK, "http://127.0.0.1/abs?" + OK, "/abs?" + OK):
            r.req(path)                         # (absolute form: its own key)
        path = "/dh?" + q("Cache-Control: max-age=30", "X-Deny-Hit: 1")
        r.req(path)
        r.req(path)                             # http-response deny on a hit: 502
    rh, _ = run_both(pair, 0, scenario)
    assert rh.log[-1][3] == "HTTP/1.1 502 Bad Gateway"
    assert_same_cache(*pair)


def test_conditional_requests_and_age(pair):
    """If-None-Match (weak comparison, `*`, lists) and If-Modified-Since (Last-Modified,
    else Date) turn hits into 304; Age grows with time on top of the server's."""
    lm = "Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT"

    def scenario(r):
        path = "/c?" + q("Cache-Control: max-age=30", 'ETag: "abc"', lm)
        r.req(path)
        for h in [("If-None-Match", '"abc"'), ("If-None-Match", 'W/"abc"'),
                  ("If-None-Match", '"x", "abc"'), ("If-None-Match", '"x"'),
                  ("If-None-Match", "*"), ("If-Modified-Since", "Wed, 21 Oct 2015 07:28:00 GMT"),
                  ("If-Modified-Since", "Wed, 21 Oct 2015 07:27:59 GMT"),
                  ("If-Modified-Since", "garbage")]:
            r.req(path, headers=[h])
        r.req(path, "HEAD", headers=[("If-None-Match", '"abc"')])
        r.req(path, headers=[("If-None-Match", '"x"'),
                             ("If-Modified-Since", "Wed, 21 Oct 2015 07:28:00 GMT")])
        path = "/c2?" + q("Cache-Control: max-age=30", 'ETag: W/"abc"')
        r.req(path)
        r.req(path, headers=[("If-None-Match", '"abc"')])
        path = "/c4?" + q("Cache-Control: max-age=30", "Date: Wed, 21 Oct 2015 07:28:00 GMT")
        r.req(path)
        r.req(path, headers=[("If-Modified-Since", "Wed, 21 Oct 2015 07:28:00 GMT")])
        path = "/age?" + q("Cache-Control: max-age=30", "Age: 3")
        r.req(path)
        r.req(path)
        time.sleep(1.1)
        r.req(path)
    rh, re_ = run_both(pair, 0, scenario)
    assert [x[3] for x in rh.log[1:3]] == ["HTTP/1.1 304 Not Modified"] * 2
    assert rh.ages[-1] >= 4 and re_.ages[-1] >= 4
    assert_same_cache(*pair)


def test_vary_as_haproxy(pair):
    """process-vary on: Accept-Encoding (bitmaps, q=0, `*`, unknown encodings) and Referer
    as secondary keys, Vary on other headers not stored, a Content-Encoding 2.6 does not
    know not stored, max-secondary-entries, and 2.6's Vary-on-referer-alone entries that
    are never served."""
    def scenario(r):
        both_hdrs = [("Accept-Encoding", "gzip"), ("Referer", "http://a/")]
        other = [("Accept-Encoding", "br"), ("Referer", "http://b/")]
        for vary in ["accept-encoding", "referer", "accept-encoding, referer", "origin", "*",
                     "user-agent"]:
            path = "/v?" + q("Cache-Control: max-age=30", "Vary: " + vary)
            for hs in (both_hdrs, both_hdrs, other, other, []):
                r.req(path, headers=hs)
        path = "/e?" + q("Cache-Control: max-age=30", "Vary: accept-encoding",
                         "Content-Encoding: gzip")
        r.req(path, headers=[("Accept-Encoding", "gzip, br")])
        for ae in ["gzip", "br", "GZIP", "gzip;q=0", "deflate, gzip", "*", "x-gzip", "identity",
                   "", None, "gzip;q=0.5", "gz"]:
            r.req(path, headers=[("Accept-Encoding", ae)] if ae is not None else [])
        path = "/e2?" + q("Cache-Control: max-age=30", "Vary: accept-encoding")
        r.req(path, headers=[("Accept-Encoding", "gzip")])
        for ae in ["br", "identity;q=0", "*", "identity", None, "foo"]:
            r.req(path, headers=[("Accept-Encoding", ae)] if ae is not None else [])
        path = "/e3?" + q("Cache-Control: max-age=30", "Vary: accept-encoding",
                          "Content-Encoding: weird")
        r.req(path, headers=[("Accept-Encoding", "weird")])
        r.req(path, headers=[("Accept-Encoding", "weird")])
        path = "/sec?" + q("Cache-Control: max-age=30", "Vary: accept-encoding")
        for i in range(5):
            r.req(path, headers=[("Accept-Encoding", "identity;q=0, " + "gzip" * (i % 2))])
        for i in range(5):
            r.req(path, headers=[("Accept-Encoding", "identity;q=0")])
    run_both(pair, 1, scenario)
    theirs = assert_same_cache(*pair)
    assert any("vary:0x01000000" in line for line, _ in theirs)


def test_denied_after_store(pair):
    """A response denied by a rule after cache-store: 2.6 keeps its entry, incomplete
    (no body): listed by `show cache`, never served, and no other store for its key."""
    def scenario(r):
        path = "/dm?" + q("Cache-Control: max-age=30", "X-Deny-Miss: 1")
        for _ in range(3):
            r.req(path)
    rh, _ = run_both(pair, 4, scenario)
    assert [x[3] for x in rh.log] == ["HTTP/1.1 502 Bad Gateway"] * 3
    assert_same_cache(*pair)


def test_backend_cache_rules_and_compression(pair):
    """The cache in a backend: the head stored as the rules before cache-store left it,
    every rule run again on a hit (cache-store excepted), res.cache_hit; the body stored
    before compression, a hit compressed for the clients that accept it."""
    gz = [("Accept-Encoding", "gzip")]

    def scenario(r):
        for path in ("/c?" + OK, "/c?chunked=1&" + OK):
            r.req(path)
            r.req(path)
            r.req(path, "HEAD")
            r.req(path, headers=gz)
        r.req("/d?" + OK)
        r.req("/d?" + OK)
        r.req("/c2?" + OK, headers=gz)
        r.req("/c2?" + OK, headers=gz)
        r.req("/c2?" + OK)
    rh, _ = run_both(pair, 2, scenario)
    assert [x[5] for x in rh.log[:4]] == ["server", "cache", "-", "cache"]
    assert ("content-encoding", "gzip") in rh.log[3][4]
    assert_same_cache(*pair)


def test_object_size_and_eviction(pair):
    """max-object-size (objects over it not stored, by Content-Length or as a chunked body
    grows), then more objects than the blocks hold: the least recently used go first (a
    hit refreshes its entry); `show cache` as HAProxy's afterwards."""
    def scenario(r):
        for path in ("/big?size=7000&" + OK, "/big?size=9000&" + OK,
                     "/big?size=5000&chunked=1&" + OK):
            r.req(path)
            r.req(path)
        # 3000-byte bodies: 4 blocks each, 256 of them fill the 1024 blocks
        for i in range(262):
            r.req(f"/ev{i}?size=3000&" + OK)
            if i in (10, 100):
                r.req("/ev0?size=3000&" + OK)           # keeps /ev0 recently used
        for i in (0, 1, 2, 3, 4, 5, 6, 7, 11, 12):
            r.req(f"/ev{i}?size=3000&" + OK)
    rh, _ = run_both(pair, 3, scenario)
    origins = [x[5] for x in rh.log]
    # 7000 bytes stored, 9000 not, 5000 (chunked) stored
    assert origins[:6] == ["server", "cache", "server", "server", "server", "cache"]
    assert origins[-10] == "cache" and origins[-9:].count("server") >= 7   # /ev0 kept
    theirs = assert_same_cache(*pair)
    assert len(theirs) > 250
    # a chunked body growing over max-object-size (last: the blocks it took before it
    # was given up depend on how the body arrived)
    rh, _ = run_both(pair, 3, lambda r: [r.req("/big?size=9000&chunked=1&" + OK)
                                         for _ in range(2)])
    assert [x[5] for x in rh.log] == ["server", "server"]


def test_counters_as_haproxy(pair):
    """After the traffic above: cache_lookups, cache_hits (frontend or backend, where the
    rule is), intercepted (a frontend's hits), statuses, denied responses, requests and
    sessions of the backends, bytes (a hit counted as the cache gave it, before the
    rules and compression)."""
    h, e = pair
    run_both(pair, 0, lambda r: [r.req("/cnt?" + OK) for _ in range(3)])
    assert_same_counters(h, e)
    assert int(stat_row(h, "fe", "FRONTEND", ["cache_hits"])["cache_hits"]) > 0
    assert int(stat_row(h, "bk3", "BACKEND", ["cache_hits"])["cache_hits"]) > 0


LOG_CFG = """
global
    nbthread 1

defaults
    mode http
    log 127.0.0.1:{LOG} local0
    option httplog
    timeout connect 1s
    timeout client 5s
    timeout server 5s

cache c1
    total-max-size 1

frontend fe
    bind 127.0.0.1:{FE}
    http-request cache-use c1 if { path_beg /f }
    http-response cache-store c1
    default_backend bk

backend bk
    http-request cache-use c1 if { path_beg /b }
    http-response cache-store c1
    server s1 127.0.0.1:{S1}
"""


def test_hits_logged_as_haproxy(haproxy_bin):
    """A hit's log line: `<CACHE>` for the server (of the frontend or the backend whose
    rule hit), LR, no waits, the bytes HAProxy counts."""
    b = Backends(["s1"]).start()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2)
    lines = {}
    try:
        with workdir() as wd, both(LOG_CFG.replace("{LOG}", str(sink.getsockname()[1])),
                                   b, wd, haproxy_bin) as pair:
            for p in pair:
                r = Run(p.port, 1)
                for path in ("/f?" + OK, "/f?" + OK, "/b?" + OK, "/b?" + OK):
                    r.req(path)
                r.close()
                got = []
                while len(got) < 4:
                    text = sink.recv(4096).decode()
                    if "GET " in text:          # (not the harness's port probes)
                        got.append(re.sub(r"^.*?\] ", "", text.strip()))
                lines[p.kind] = [re.sub(r" [-\d]+/[-\d]+/[-\d]+/[-\d]+/\d+ ", " T ", x)
                                 for x in got]
    finally:
        sink.close()
        b.kill()
    assert lines["edgestick"] == lines["haproxy"]
    assert "fe/<CACHE> T 200" in lines["haproxy"][1] and " LR-- " in lines["haproxy"][1]
    assert "bk/<CACHE> T 200" in lines["haproxy"][3]
    assert " 0/0/0/0/" in "".join(got)          # (edgestick's hit: no waits either)


# ------------------------------------------------------------------ -c

D = """defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""
C1 = "cache c1\n    total-max-size 1\n"
FE = ("frontend f\n    bind 127.0.0.1:20999\n    http-request cache-use c1\n"
      "    http-response cache-store c1\n    default_backend b\n")
BE = "backend b\n    server s1 127.0.0.1:20998\n"
F0 = "frontend f\n    bind 127.0.0.1:20999\n    default_backend b\n"

CHECK_CASES = [
    # (name, valid, warns, text)
    ("all keywords", True, False, D + "cache c1\n    total-max-size 4\n    max-object-size 10000\n"
     "    max-age 240\n    process-vary on\n    max-secondary-entries 5\n" + FE + BE),
    ("process-vary off", True, False, D + C1 + "    process-vary off\n" + FE + BE),
    ("no name", False, False, D + "cache\n    total-max-size 1\n" + F0 + BE),
    ("extra argument", False, False, D + "cache c1 extra\n    total-max-size 1\n" + FE + BE),
    ("duplicate", False, False, D + C1 + C1 + FE + BE),
    ("unknown keyword", False, False, D + C1 + "    foo bar\n" + FE + BE),
    ("no size", False, False, D + "cache c1\n    max-age 10\n" + FE + BE),
    ("object over half", False, False, D + C1 + "    max-object-size 600000\n" + FE + BE),
    ("bad size", False, False, D + "cache c1\n    total-max-size 1x\n" + FE + BE),
    ("huge size", False, False, D + "cache c1\n    total-max-size 5000\n" + FE + BE),
    ("size without value", False, False, D + "cache c1\n    total-max-size\n" + FE + BE),
    ("size with two values", False, False, D + "cache c1\n    total-max-size 1 2\n" + FE + BE),
    ("max-age without value", True, True, D + C1 + "    max-age\n" + FE + BE),
    ("process-vary maybe", True, True, D + C1 + "    process-vary maybe\n" + FE + BE),
    ("secondary 0", False, False, D + C1 + "    max-secondary-entries 0\n" + FE + BE),
    ("secondary without value", False, False, D + C1 + "    max-secondary-entries\n" + FE + BE),
    ("object size 12k", False, False, D + C1 + "    max-object-size 12k\n" + FE + BE),
    ("object size without value", False, False, D + C1 + "    max-object-size\n" + FE + BE),
    ("long name", False, True, D + "cache c123456789012345678901234567890123\n"
     "    total-max-size 1\n" + FE + BE),
    ("unknown cache", False, False, D + C1 + FE.replace("cache-use c1", "cache-use c2") + BE),
    ("cache-use without name", False, False, D + C1 + F0 + "    http-request cache-use\n" + BE),
    ("cache-store if", False, False, D + C1 + F0 + "    http-response cache-store if TRUE\n" + BE),
    ("cache-use extra word", False, False, D + C1 + F0 + "    http-request cache-use c1 foo\n" + BE),
    ("conditions", True, False, D + C1 + F0 + "    http-request cache-use c1 if { path /a }\n"
     "    http-response cache-store c1 unless { status 404 }\n" + BE),
    ("in a backend", True, False, D + C1 + F0 + BE + "    http-request cache-use c1\n"
     "    http-response cache-store c1\n"),
    ("compression filter first", False, False, D + C1 + F0 + "    filter compression\n"
     "    http-request cache-use c1\n    compression algo gzip\n" + BE),
    ("cache rule first", True, False, D + C1 + F0 + "    http-request cache-use c1\n"
     "    filter compression\n    compression algo gzip\n" + BE),
    ("compression before explicit", False, False, D + C1 + F0 + "    filter compression\n"
     "    filter cache c1\n    http-request cache-use c1\n" + BE),
    ("explicit then compression", True, False, D + C1 + F0 + "    filter cache c1\n"
     "    filter compression\n    http-request cache-use c1\n"
     "    http-response cache-store c1\n" + BE),
    ("explicit twice", False, False, D + C1 + F0 + "    filter cache c1\n    filter cache c1\n" + BE),
    ("implicit then explicit", True, False, D + C1 + F0 + "    http-request cache-use c1\n"
     "    filter cache c1\n" + BE),
    ("filter without name", False, False, D + C1 + F0 + "    filter cache\n" + BE),
    ("filter unknown cache", False, False, D + C1 + F0 + "    filter cache c2\n" + BE),
    ("filter extra", False, False, D + C1 + F0 + "    filter cache c1 extra\n" + BE),
    ("cache-store as a request action", False, False, D + C1 + F0
     + "    http-request cache-store c1\n" + BE),
    ("res.cache_hit in a request rule", False, False, D + C1 + F0
     + "    http-request set-header X %[res.cache_hit]\n" + BE),
    ("res.cache_name in a request condition", True, True, D + C1 + F0
     + "    http-request deny if { res.cache_name c1 }\n" + BE),
    ("res.cache_hit in a response rule", True, False, D + C1 + F0
     + "    http-response set-header X %[res.cache_hit]\n" + BE),
]


@pytest.mark.parametrize("name,valid,warns,text", CHECK_CASES, ids=[c[0] for c in CHECK_CASES])
def test_check_as_haproxy(haproxy_bin, name, valid, warns, text):
    with workdir() as wd:
        path = wd / "c.cfg"
        path.write_text(text)
        res = subprocess.run([haproxy_bin, "-c", "-f", str(path)], capture_output=True,
                             text=True, timeout=20)
        said = res.stdout + res.stderr
        try:
            _, warnings = load_config_text(text, str(path))
            ours, message = True, ""
        except ConfigError as e:
            ours, message, warnings = False, str(e), []
    assert (res.returncode == 0) == valid, said
    assert ours == valid, message
    if not valid and name != "cache-store as a request action":
        words = message.split(": ", 2)[2]           # the same words as HAProxy's alert
        assert words in said, (words, said)
    if valid:
        assert bool(warnings) == warns == ("WARNING" in said), (warnings, said)
        for w in warnings:
            assert w.split(": ", 2)[2] in said, (w, said)
