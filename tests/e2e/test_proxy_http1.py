"""HTTP/1.1 handling compared byte for byte with HAProxy 2.6: malformed requests (400 and
close), request smuggling shapes, limits, slowloris (408), keep-alive, pipelining,
chunked bodies, HTTP/1.0, forwardfor."""
import socket
import time

import pytest

from proxy_harness import Backends, Client, both, raw_exchange, workdir

pytestmark = pytest.mark.haproxy

TEMPLATE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
    timeout http-request 600ms

frontend fe
    bind 127.0.0.1:{FE}
    default_backend bk

frontend fe_xff
    bind 127.0.0.1:{FE2}
    option forwardfor
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}
"""


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(TEMPLATE, b, wd, haproxy_bin, n_frontends=2) as p:
            yield p
    finally:
        b.kill()


def R(*lines, body=b""):
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


SAME_AS_HAPROXY = {
    "ok": R("GET / HTTP/1.1", "Host: a", "Connection: close"),
    "bad_header_name": R("GET / HTTP/1.1", "Ho st: a"),
    "space_before_colon": R("GET / HTTP/1.1", "Host : a"),
    "no_colon": R("GET / HTTP/1.1", "Host a"),
    "conflicting_cl": R("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Content-Length: 6", body=b"hello!"),
    "cl_not_a_number": R("POST / HTTP/1.1", "Host: a", "Content-Length: 5x", body=b"hello"),
    "cl_negative": R("POST / HTTP/1.1", "Host: a", "Content-Length: -5", body=b"hello"),
    "cl_signed": R("POST / HTTP/1.1", "Host: a", "Content-Length: +5", body=b"hello"),
    "te_gzip": R("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip"),
    "te_chunked_then_gzip": R("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, gzip"),
    "te_chunked_twice": R("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"),
    "bad_chunk_size": R("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", body=b"zz\r\nhello\r\n0\r\n\r\n"),
    "huge_chunk_size": R("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", body=b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    "bad_method": R("G(ET / HTTP/1.1", "Host: a"),
    "http09": b"GET /\r\n\r\n",
    "space_in_uri": R("GET /a b HTTP/1.1", "Host: a", "Connection: close"),
    "leading_space_header": R("GET / HTTP/1.1", " Host: a", "Connection: close"),
    "two_hosts": R("GET / HTTP/1.1", "Host: a", "Host: b", "Connection: close"),
    "too_many_headers": R("GET / HTTP/1.1", "Host: a", *[f"X{i}: y" for i in range(101)], "Connection: close"),
    "hundred_headers": R("GET / HTTP/1.1", "Host: a", *[f"X{i}: y" for i in range(98)], "Connection: close"),
    "head_too_large": R("GET / HTTP/1.1", "Host: a", "X: " + "a" * 16000, "Connection: close"),
    "head_15000": R("GET / HTTP/1.1", "Host: a", "X: " + "a" * 15000, "Connection: close"),
    "lf_only": b"GET / HTTP/1.1\nHost: a\nConnection: close\n\n",
    "empty_lines_first": b"\r\n\r\n" + R("GET / HTTP/1.1", "Host: a", "Connection: close"),
    "http10": R("GET / HTTP/1.0"),
    "http10_keepalive_then_close": R("GET / HTTP/1.0", "Connection: keep-alive") + R("GET /2 HTTP/1.0"),
    "pipelined": R("GET /1 HTTP/1.1", "Host: a") + R("GET /2 HTTP/1.1", "Host: a") + R("GET /3 HTTP/1.1", "Host: a", "Connection: close"),
    "chunked_body": R("POST /c HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Connection: close", body=b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n"),
    "cl_body_pipelined": R("POST /p HTTP/1.1", "Host: a", "Content-Length: 5", body=b"hello") + R("GET /after HTTP/1.1", "Host: a", "Connection: close"),
    "head_method": R("HEAD / HTTP/1.1", "Host: a", "Connection: close"),
    "hop_by_hop": R("GET / HTTP/1.1", "Host: a", "Keep-Alive: timeout=5", "Proxy-Connection: keep-alive", "Connection: close"),
    "absolute_uri": R("GET http://example.com/x?y=1 HTTP/1.1", "Host: example.com", "Connection: close"),
    "chunked_response": R("GET /?chunked=1 HTTP/1.1", "Host: a", "Connection: close"),
    # request targets: controls, DEL, non-ASCII and fragments are refused
    "uri_control_char": R("GET /a\x01 HTTP/1.1", "Host: a", "Connection: close"),
    "uri_vertical_tab": R("GET /a\x0bb HTTP/1.1", "Host: a", "Connection: close"),
    "uri_del": R("GET /a\x7f HTTP/1.1", "Host: a", "Connection: close"),
    "uri_non_ascii": R("GET /caf\xe9 HTTP/1.1", "Host: a", "Connection: close"),
    "uri_fragment": R("GET /a#b HTTP/1.1", "Host: a", "Connection: close"),
    "tab_separators": R("GET\t/\tHTTP/1.1", "Host: a", "Connection: close"),
    # absolute-form: the authority must be the Host (default port aside), userinfo aside
    "absolute_uri_other_host": R("GET http://a/ HTTP/1.1", "Host: b", "Connection: close"),
    "absolute_uri_host_case": R("GET http://a/ HTTP/1.1", "Host: A", "Connection: close"),
    "absolute_uri_default_port": R("GET http://a:80/x HTTP/1.1", "Host: a", "Connection: close"),
    "absolute_uri_host_default_port": R("GET http://a/x HTTP/1.1", "Host: a:80", "Connection: close"),
    "absolute_uri_https_default_port": R("GET https://a:443 HTTP/1.1", "Host: a", "Connection: close"),
    "absolute_uri_other_port": R("GET http://a:81/ HTTP/1.1", "Host: a", "Connection: close"),
    "absolute_uri_userinfo": R("GET http://u:p@a/ HTTP/1.1", "Host: a", "Connection: close"),
    "absolute_uri_query_in_authority": R("GET http://a?x HTTP/1.1", "Host: a", "Connection: close"),
    "absolute_uri_other_scheme": R("GET ftp://a/ HTTP/1.1", "Host: b", "Connection: close"),
    "absolute_uri_http10": R("GET http://a/ HTTP/1.0", "Host: b"),
    "equal_hosts": R("GET / HTTP/1.1", "Host: a", "Host: A", "Connection: close"),
    # a transfer coding besides chunked: HAProxy's 422
    "te_gzip_then_chunked": R("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
    "te_two_headers": R("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "te_empty_element": R("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: ,chunked", body=b"0\r\n\r\n"),
    "te_trailing_comma": R("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked,", "Connection: close", body=b"0\r\n\r\n"),
    "obs_fold_spacing": R("GET / HTTP/1.1", "Host: a", "X: a", "  b", "\tc", "Connection: close"),
    "websocket_without_key": R("GET / HTTP/1.1", "Host: a", "Connection: upgrade", "Upgrade: websocket"),
}

# Stricter than HAProxy on purpose: HAProxy drops Content-Length next to
# Transfer-Encoding and merges equal duplicates; edgestick answers 400 and closes.
SMUGGLING_REJECTED = {
    "cl_and_te": R("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
    "duplicate_equal_cl": R("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Content-Length: 5", body=b"hello"),
    "cl_list": R("POST / HTTP/1.1", "Host: a", "Content-Length: 5, 5", body=b"hello"),
}

BAD_REQUEST = (b"HTTP/1.1 400 Bad request\r\nContent-length: 90\r\nCache-Control: no-cache\r\n"
               b"Connection: close\r\nContent-Type: text/html\r\n\r\n<html><body><h1>400 Bad "
               b"request</h1>\nYour browser sent an invalid request.\n</body></html>\n")


@pytest.mark.parametrize("case", sorted(SAME_AS_HAPROXY))
def test_same_bytes_as_haproxy(pair, case):
    h, e = pair
    raw = SAME_AS_HAPROXY[case]
    got_h = raw_exchange(h.port, raw, timeout=2.0)
    got_e = raw_exchange(e.port, raw, timeout=2.0)
    assert got_e == got_h


def test_malformed_gets_haproxys_400_and_close(pair):
    _, e = pair
    assert raw_exchange(e.port, SAME_AS_HAPROXY["bad_header_name"]) == BAD_REQUEST


@pytest.mark.parametrize("case", sorted(SMUGGLING_REJECTED))
def test_smuggling_shapes_rejected(pair, case):
    _, e = pair
    assert raw_exchange(e.port, SMUGGLING_REJECTED[case]) == BAD_REQUEST


def test_slowloris_gets_408_like_haproxy(pair):
    """Headers trickled one byte every 100 ms: `timeout http-request` (600 ms) ends it."""
    h, e = pair
    results = []
    for p in (h, e):
        s = socket.create_connection(("127.0.0.1", p.port), 3)
        t0 = time.monotonic()
        data = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 40
        out = b""
        try:
            for ch in data:
                s.sendall(bytes([ch]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while True:
                d = s.recv(4096)
                if not d:
                    break
                out += d
        except (ConnectionResetError, socket.timeout):
            pass
        results.append((out, time.monotonic() - t0))
        s.close()
    (out_h, t_h), (out_e, t_e) = results
    assert out_e == out_h
    assert out_e.startswith(b"HTTP/1.1 408 Request Time-out\r\n")
    assert 0.5 < t_e < 2.0


def test_idle_connection_gets_408(pair):
    h, e = pair
    assert raw_exchange(e.port, b"", timeout=3) == raw_exchange(h.port, b"", timeout=3)


def test_forwardfor(pair):
    h, e = pair
    raw = R("GET / HTTP/1.1", "Host: a", "X-Forwarded-For: 1.2.3.4", "Connection: close")
    got_e = raw_exchange(e.ports[1], raw)
    assert got_e == raw_exchange(h.ports[1], raw)
    assert b"x-forwarded-for: 1.2.3.4\nx-forwarded-for: 127.0.0.1\n" in got_e


def test_keep_alive_many_requests_one_connection(pair):
    h, e = pair
    for p in (h, e):
        c = Client(p.port)
        for i in range(20):
            r = c.request(f"/{i}")
            assert r.status == 200 and f"GET /{i}\n" in r.body.decode()
        assert not c.closed_by_peer(0.2)
        c.close()


CLOSE_MODES = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend f1
    bind 127.0.0.1:{FE}
    option httpclose
    default_backend b1
frontend f2
    bind 127.0.0.1:{FE2}
    option http-server-close
    default_backend b1
frontend f3
    bind 127.0.0.1:{FE3}
    default_backend b2
backend b1
    server s1 127.0.0.1:{S1}
backend b2
    option httpclose
    server s1 127.0.0.1:{S1}
"""


def test_httpclose_and_http_server_close(haproxy_bin):
    b = Backends(["s1"]).start()
    raw = R("GET / HTTP/1.1", "Host: a") + R("GET /2 HTTP/1.1", "Host: a")
    try:
        with workdir() as wd, both(CLOSE_MODES, b, wd, haproxy_bin, n_frontends=3) as (h, e):
            for i in range(3):
                assert raw_exchange(e.ports[i], raw, 1.0) == raw_exchange(h.ports[i], raw, 1.0)
    finally:
        b.kill()
