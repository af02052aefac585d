"""HTTP response compression (`compression algo/type/offload`) compared with HAProxy 2.6:
the same configuration, backends and requests through both; status, every response
header and the decompressed body must be equal (HAProxy compresses with libslz,
edgestick with zlib: the compressed bytes differ, nothing else), on keep-alive
connections that go on after compressed responses; bytes counted as HAProxy counts them
(before compression); `-c` accepting and refusing the same configurations."""
import subprocess
import time
import zlib

import pytest

from proxy_harness import (Backends, Client, both, mask_table, raw_exchange, stat_row,
                           workdir)

from edgestick.cfgsyntax import ConfigError
from edgestick.proxy.config import load_config_text

pytestmark = pytest.mark.haproxy

CFG = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
    maxcomprate 100000

defaults withcomp
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    compression algo gzip
    compression type text/html
    compression offload

# inherits gzip and text/html (not offload); its identity comes first
listen li from withcomp
    bind 127.0.0.1:{FE3}
    compression algo identity
    compression type text/plain
    server s1 127.0.0.1:{S1}

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    compression algo gzip deflate
    compression type text/html text/plain
    stick-table type ip size 10 store bytes_in_cnt,bytes_out_cnt,http_req_cnt
    http-request track-sc0 src
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}

# algorithms and offload from the frontend, types from the backend (its own win)
frontend fe2
    bind 127.0.0.1:{FE2}
    compression algo deflate raw-deflate
    compression offload
    default_backend bk2

backend bk2
    compression type text/plain
    http-response add-header X-Rule seen
    http-response add-header X-Comp "%[res.comp] %[res.comp_algo]"
    acl compressed res.comp
    http-response add-header X-Compressed yes if compressed { res.comp_algo raw-deflate }
    server s1 127.0.0.1:{S1}
"""

GZ = [("Accept-Encoding", "gzip")]

# (path, request headers) on frontend fe, one keep-alive connection
FE_CASES = [
    ("/", GZ),
    ("/", [("Accept-Encoding", "deflate")]),
    ("/", [("Accept-Encoding", "*")]),
    ("/", [("Accept-Encoding", "gzip;q=0.5, deflate;q=0.6")]),
    ("/", [("Accept-Encoding", "deflate;q=0.5"), ("Accept-Encoding", "gzip ; level=1 ; q=0.7")]),
    ("/", [("Accept-Encoding", "gzip;q=0")]),
    ("/", [("Accept-Encoding", "gzip;q=abc")]),
    ("/", [("Accept-Encoding", "identity, gzip;Q=0")]),
    ("/", [("Accept-Encoding", "br")]),
    ("/", [("Accept-Encoding", "x-gzip, GZIP")]),
    ("/", []),
    ("/", [("Accept-Encoding", "gzip"), ("User-Agent", "Mozilla/4.0 (compatible)")]),
    ("/", [("Accept-Encoding", "gzip"),
           ("User-Agent", "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0)")]),
    ("/", [("Accept-Encoding", "gzip"),
           ("User-Agent", "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)")]),
    ("/", [("Accept-Encoding", "gzip"),
           ("User-Agent", "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; XX1)")]),
    ("/?status=201", GZ),
    ("/?status=203", GZ),
    ("/?status=202", GZ),
    ("/?status=206", GZ),
    ("/?status=404", GZ),
    ("/?status=500", GZ),
    ("/?size=0", GZ),
    ("/?size=1", GZ),
    ("/?size=200000", GZ),
    ("/?size=200000&chunked=1", [("Accept-Encoding", "deflate")]),
    ("/?chunked=1", GZ),
    ("/?chunked=1&size=0", GZ),
    ("/?ctype=text/html;%20charset=utf-8", GZ),
    ("/?ctype=TEXT/PLAIN", GZ),
    ("/?ctype=text/htmlx", GZ),
    ("/?ctype=application/json", GZ),
    ("/?ctype=", GZ),
    ("/?ctype=multipart/mixed", GZ),
    ("/?hdr=Cache-Control:%20no-transform", GZ),
    ("/?hdr=Cache-Control:%20max-age=1,%20No-Transform", GZ),
    ("/?hdr=Cache-Control:%20no-transformx", GZ),
    ("/?hdr=Content-Encoding:%20br", GZ),
    ("/?hdr=Content-Encoding:%20identity", GZ),
    ("/?hdr=ETag:%20%22abc%22", GZ),
    ("/?hdr=ETag:%20W/%22abc%22", GZ),
    ("/?hdr=ETag:%20abc", GZ),
    ("/?hdr=ETag:%20%22a%22&hdr=ETag:%20%22b%22", GZ),
    ("/?hdr=Vary:%20Origin", GZ),
    ("/?hdr=Vary:%20Accept-Encoding", GZ),
]

FE2_CASES = [
    ("/", [("Accept-Encoding", "deflate")]),        # raw-deflate (configured last)
    ("/", [("Accept-Encoding", "gzip")]),           # none, Accept-Encoding kept
    ("/?ctype=text/html", [("Accept-Encoding", "deflate"), ("Accept-Encoding", "br")]),
    ("/?size=50000", [("Accept-Encoding", "deflate")]),
    ("/", []),
]

LI_CASES = [
    ("/", GZ),                                      # gzip, Accept-Encoding kept
    ("/", [("Accept-Encoding", "*")]),              # identity: chunked, Vary, no encoding
    ("/", []),                                      # identity as the fallback
    ("/?ctype=text/html", [("Accept-Encoding", "identity")]),
    ("/?ctype=text/css", GZ),
    ("/?size=30000", [("Accept-Encoding", "br")]),
    ("/?size=30000&chunked=1", GZ),
]


def decoded(r):
    """(how the body was encoded, the body decoded)."""
    ce = r.header("content-encoding")
    if ce == "gzip":
        return "gzip", zlib.decompress(r.body, 31)
    if ce == "deflate":
        try:
            return "zlib", zlib.decompress(r.body)
        except zlib.error:
            return "raw", zlib.decompress(r.body, -15)
    return ce, r.body


def exchange(port: int, cases, method: str = "GET"):
    """Every case on one keep-alive connection: what must be equal, per response."""
    c = Client(port)
    out = []
    try:
        for path, headers in cases:
            r = c.request(path, method, headers)
            assert r is not None, (path, headers)
            out.append((path, headers, r.status_line,
                        [(k.lower(), v) for k, v in r.headers], decoded(r)))
        # the connection is still usable after all of them
        last = c.request("/?status=404")
        out.append(("after", (), last.status_line, None, None))
    finally:
        c.close()
    return out


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(CFG, b, wd, haproxy_bin, 3) as p:
            yield p
    finally:
        b.kill()


@pytest.mark.parametrize("which,cases", [(0, FE_CASES), (1, FE2_CASES), (2, LI_CASES)],
                         ids=["fe", "fe2-offload", "listen-identity"])
def test_responses_as_haproxy(pair, which, cases):
    h, e = pair
    got_h = exchange(h.ports[which], cases)
    got_e = exchange(e.ports[which], cases)
    for a, b in zip(got_h, got_e):
        assert b == a
    assert len(got_h) == len(got_e)


def test_compression_happens(pair):
    """The differential cases do cover compressed responses (not only untouched ones)."""
    h, e = pair
    cases = FE_CASES[:4] + [("/?size=200000", GZ), ("/?chunked=1", GZ), ("/?status=404", GZ)]
    for p in (h, e):
        kinds = [x[4][0] for x in exchange(p.ports[0], cases)[:-1]]
        assert kinds == ["gzip", "zlib", "zlib", "zlib", "gzip", "gzip", None]


def test_head_and_http10(pair):
    h, e = pair
    got = []
    for p in (h, e):
        c = Client(p.port)
        r = c.request("/", "HEAD", GZ)
        r2 = c.request("/", "GET", GZ)
        c.close()
        raw = raw_exchange(p.port, b"GET /?size=100 HTTP/1.0\r\nHost: a\r\n"
                                   b"Accept-Encoding: gzip\r\n\r\n")
        # offload takes Accept-Encoding away even when the response will not be compressed
        raw2 = raw_exchange(p.ports[1], b"GET / HTTP/1.0\r\nHost: a\r\n"
                                        b"Accept-Encoding: deflate\r\n\r\n")
        got.append((r.status_line, r.headers, r.body, r2.header("content-encoding"), raw, raw2))
    assert got[1] == got[0]
    assert got[0][3] == "gzip"
    assert b"accept-encoding" not in got[0][5] and b"server=s1" in got[0][5]


def test_request_body_and_close(pair):
    """A request with a body (the coroutine's path), and `Connection: close` after a
    compressed response."""
    h, e = pair
    got = []
    for p in (h, e):
        c = Client(p.port)
        r = c.request("/?size=3000", "POST", GZ, body=b"hello" * 100)
        r2 = c.request("/", "GET", GZ, close=True)
        closed = c.closed_by_peer(2.0)
        c.close()
        got.append((r.status_line, r.headers, decoded(r), r2.headers, decoded(r2), closed))
    assert got[1] == got[0]
    assert got[0][2][0] == "gzip" and got[0][5]


def test_bytes_counted_before_compression(pair):
    """show stat bin/bout and the table's bytes_in/out_cnt equal HAProxy's: a compressed
    response counts as the server sent it (its head and its uncompressed payload)."""
    h, e = pair
    # a fresh source address, so the table row holds only these requests
    for p in (h, e):
        c = Client(p.ports[0], src="127.0.0.77")
        for path, headers in FE_CASES[:4] + FE_CASES[20:26]:
            c.request(path, "GET", headers)
        c.close()
        for port in p.ports[1:]:
            c = Client(port)
            for path, headers in FE2_CASES + LI_CASES:
                c.request(path, "GET", headers)
            c.close()
    time.sleep(0.3)
    cols = ["bin", "bout", "stot", "req_tot"]
    for name in ("fe", "fe2", "li"):
        assert stat_row(e, name, "FRONTEND", cols) == stat_row(h, name, "FRONTEND", cols), name
    for name in ("bk", "bk2", "li"):
        assert stat_row(e, name, "BACKEND", cols[:2]) == stat_row(h, name, "BACKEND", cols[:2])
    # the compression counters: comp_in (into the compressor), comp_byp (through identity)
    # and comp_rsp as HAProxy's; comp_out, what zlib and libslz make of it, differs
    comp = ["comp_in", "comp_byp", "comp_rsp"]
    for name, row in (("fe", "FRONTEND"), ("bk", "BACKEND"), ("fe2", "FRONTEND"),
                      ("bk2", "BACKEND"), ("li", "FRONTEND"), ("li", "BACKEND")):
        ours, theirs = stat_row(e, name, row, comp + ["comp_out"]), stat_row(h, name, row, comp
                                                                               + ["comp_out"])
        assert [ours[c] for c in comp] == [theirs[c] for c in comp], (name, row)
        assert (int(ours["comp_out"]) > 0) == (int(theirs["comp_out"]) > 0) == (
            int(ours["comp_in"]) > 0)
    assert int(stat_row(e, "li", "FRONTEND", ["comp_byp"])["comp_byp"]) > 0
    key = "show table fe key 127.0.0.77"
    assert mask_table(e.cli(key)) == mask_table(h.cli(key))
    assert "bytes_out_cnt=" in e.cli(key).decode()


def test_show_info_compression_rates(pair):
    """show info: CompressBpsRateLim is maxcomprate in bytes, CompressBpsIn/Out the last
    second's bytes into and out of the compressors (read right after compressing)."""
    h, e = pair
    for p in (h, e):
        c = Client(p.port)
        for _ in range(3):
            c.request("/?size=100000", "GET", GZ)
        c.close()
        info = dict(line.split(": ", 1) for line in p.cli("show info").decode().splitlines()
                    if ": " in line)
        assert info["CompressBpsRateLim"] == str(100000 * 1024)
        assert int(info["CompressBpsIn"]) >= 100000
        assert 0 < int(info["CompressBpsOut"]) < int(info["CompressBpsIn"])


# ------------------------------------------------------------------ -c

D = """defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""
FE = "frontend f\n    bind 127.0.0.1:20999\n    default_backend b\n"
BE = "backend b\n    server s1 127.0.0.1:20998\n"

CHECK_CASES = [
    ("all keywords", True, D + FE + "    compression algo identity gzip deflate raw-deflate\n"
     "    compression type text/html text/plain\n    compression offload\n" + BE
     + "    compression algo gzip\n"),
    ("in defaults", True, D + "    compression algo gzip\n    compression type text/css\n" + FE + BE),
    ("offload in defaults warns", True, D + "    compression offload\n" + FE + BE),
    ("type alone", True, D + FE + "    compression type text/html\n" + BE),
    ("bare", False, D + FE + "    compression\n" + BE),
    ("unknown sub-keyword", False, D + FE + "    compression level 5\n" + BE),
    ("algo without name", False, D + FE + "    compression algo\n" + BE),
    ("unknown algo", False, D + FE + "    compression algo brotli\n" + BE),
    ("unknown algo after a good one", False, D + FE + "    compression algo gzip zstd\n" + BE),
    ("type without mime", False, D + FE + "    compression type\n" + BE),
    ("global limits", True, "global\n    maxcomprate 100\n    maxcompcpuusage 50\n"
     "    tune.comp.maxlevel 9\n" + D + FE + BE),
    ("maxcomprate without value", False, "global\n    maxcomprate\n" + D + FE + BE),
    ("maxcompcpuusage over 100", False, "global\n    maxcompcpuusage 101\n" + D + FE + BE),
    ("maxcompcpuusage without value", False, "global\n    maxcompcpuusage\n" + D + FE + BE),
    ("maxlevel 0", False, "global\n    tune.comp.maxlevel 0\n" + D + FE + BE),
    ("maxlevel 10", False, "global\n    tune.comp.maxlevel 10\n" + D + FE + BE),
    ("filter compression", True, D + FE + "    filter compression\n    compression algo gzip\n"
     + BE + "    filter compression\n"),
    ("filter twice", False, D + FE + BE + "    filter compression\n    filter compression\n"),
    ("filter in defaults", False, D + "    filter compression\n" + FE + BE),
    ("filter without name", False, D + FE + "    filter\n" + BE),
    ("filter compression argument", False, D + FE + "    filter compression foo\n" + BE),
]


@pytest.mark.parametrize("name,valid,text", CHECK_CASES, ids=[c[0] for c in CHECK_CASES])
def test_check_as_haproxy(haproxy_bin, name, valid, text):
    with workdir() as wd:
        path = wd / "c.cfg"
        path.write_text(text)
        res = subprocess.run([haproxy_bin, "-c", "-f", str(path)], capture_output=True,
                             text=True, timeout=20)
        try:
            load_config_text(text, str(path))
            ours, message = True, ""
        except ConfigError as e:
            ours, message = False, str(e)
    assert (res.returncode == 0) == valid, res.stdout + res.stderr
    assert ours == valid, message
    if not valid:                   # the same words as HAProxy's alert
        said = message.split(": ", 2)[2]
        assert said in res.stdout + res.stderr, (said, res.stderr)
