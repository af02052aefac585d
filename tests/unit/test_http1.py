"""proxy/http1.py: the parser's accept/reject rules (HAProxy 2.6's, checked against the
real binary in tests/e2e/test_proxy_http1.py), body framing, re-chunking, error pages."""
import pytest

from edgestick.proxy import http1


def req(*lines, body=b""):
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_minimal_request():
    m = http1.parse_request(req("GET /a?b=1 HTTP/1.1", "Host: x", "X-Y:  z  "))
    assert (m.method, m.target, m.version, m.keep_alive) == ("GET", "/a?b=1", 11, True)
    assert m.headers == [["host", "x"], ["x-y", "z"]]
    assert m.framing == http1.NO_BODY and m.head_len == len(req("GET /a?b=1 HTTP/1.1", "Host: x", "X-Y:  z  "))


def test_incomplete_returns_none():
    assert http1.parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n") is None
    assert http1.parse_request(b"\r\n") is None


def test_pipelined_heads_parse_one_at_a_time():
    data = req("GET /1 HTTP/1.1", "Host: x") + req("GET /2 HTTP/1.1", "Host: x")
    first = http1.parse_request(data)
    second = http1.parse_request(data, first.head_len)
    assert (first.target, second.target) == ("/1", "/2")


@pytest.mark.parametrize("raw", [
    req("GET / HTTP/1.1", "Ho st: a"),
    req("GET / HTTP/1.1", "Host : a"),
    req("GET / HTTP/1.1", "Host a"),
    req("GET / HTTP/1.1", " Host: a"),
    req("GET / HTTP/1.1", "Host: a", "Host: b"),
    req("POST / HTTP/1.1", "Content-Length: 5x"),
    req("POST / HTTP/1.1", "Content-Length: -1"),
    req("POST / HTTP/1.1", "Content-Length: 5", "Content-Length: 6"),
    req("POST / HTTP/1.1", "Content-Length: 5", "Content-Length: 5"),
    req("POST / HTTP/1.1", "Content-Length: 5", "Transfer-Encoding: chunked"),
    req("POST / HTTP/1.1", "Transfer-Encoding: gzip"),
    req("POST / HTTP/1.1", "Transfer-Encoding: chunked, chunked"),
    req("G(ET / HTTP/1.1", "Host: a"),
    req("GET /a b HTTP/1.1"),
    req("GET /a#b HTTP/1.1"),
    req("GET /\x7f HTTP/1.1"),
    req("GET http://a/ HTTP/1.1", "Host: b"),
    req("GET / HTTP/1.1", "Connection: upgrade", "Upgrade: websocket"),
    b"GET /\r\n\r\n",
    req("GET / HTTP/1.1", *[f"X{i}: y" for i in range(102)]),
    req("GET / HTTP/1.1", "X: " + "a" * 16000),
])
def test_rejected(raw):
    with pytest.raises(http1.BadMessage):
        http1.parse_request(raw)


def test_accepted_like_haproxy():
    assert http1.parse_request(b"GET / HTTP/1.1\nHost: a\n\n").headers == [["host", "a"]]
    folded = http1.parse_request(req("GET / HTTP/1.1", "X: a", " b"))
    assert folded.headers == [["x", "a   b"]]      # the fold's CR LF become spaces
    twice = http1.parse_request(req("GET / HTTP/1.1", "Host: a", "Host: A"))
    assert twice.headers == [["host", "a"]]         # equal values: the first is kept
    assert http1.parse_request(req("GET\t/\tHTTP/1.1")).target == "/"
    assert http1.parse_request(req("GET http://a:80/x HTTP/1.1", "Host: a")).target == "http://a/x"
    assert http1.parse_request(req("GET http://u@a/ HTTP/1.1", "Host: a:80")).target == "http://u@a/"
    assert http1.parse_request(b"\r\n" + req("GET / HTTP/1.1")).target == "/"
    assert http1.parse_request(req("GET / HTTP/1.0")).keep_alive is False
    assert http1.parse_request(req("GET / HTTP/1.0", "Connection: keep-alive")).keep_alive
    assert http1.parse_request(req("GET / HTTP/1.1", "Connection: close")).keep_alive is False
    assert len(http1.parse_request(req("GET / HTTP/1.1", *[f"X{i}: y" for i in range(101)])).headers) == 101


def test_body_framing():
    m = http1.parse_request(req("POST / HTTP/1.1", "Content-Length: 5"))
    assert (m.framing, m.length) == (http1.LENGTH, 5)
    m = http1.parse_request(req("POST / HTTP/1.1", "Transfer-Encoding: chunked,"))
    assert m.framing == http1.CHUNKED
    with pytest.raises(http1.BadMessage) as bad:        # HAProxy: 422, not 400
        http1.parse_request(req("POST / HTTP/1.1", "Transfer-Encoding: gzip, chunked"))
    assert bad.value.status == 422
    r = http1.parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 0, "GET")
    assert (r.status, r.reason, r.framing, r.length) == (200, "OK", http1.LENGTH, 3)
    r = http1.parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", 0, "HEAD")
    assert r.framing == http1.NO_BODY
    r = http1.parse_response(b"HTTP/1.0 200 OK\r\n\r\n", 0, "GET")
    assert r.framing == http1.UNTIL_CLOSE and r.keep_alive is False
    r = http1.parse_response(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", 0, "GET")
    assert r.framing == http1.NO_BODY


def test_chunked_scanner_reframes_and_stops_at_the_end():
    s = http1.ChunkedScanner()
    data = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\nNEXT"
    used = s.feed(data[:7])
    used += s.feed(data[used:])
    assert s.done and data[used:] == b"NEXT"
    assert s.take() == b"8\r\nhelloabc\r\n0\r\n\r\n"


@pytest.mark.parametrize("body", [b"zz\r\n", b"fffffffffffffffffff\r\n", b"5\r\nhelloX\r\n"])
def test_chunked_scanner_rejects(body):
    with pytest.raises(http1.BadMessage):
        http1.ChunkedScanner().feed(body)


def test_error_pages_are_haproxys():
    assert http1.error_response(429, False) == (
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 117\r\ncache-control: no-cache\r\n"
        b"content-type: text/html\r\n\r\n<html><body><h1>429 Too Many Requests</h1>\nYou have "
        b"sent too many requests in a given amount of time.\n</body></html>\n")
    assert http1.error_response(403, True).endswith(
        b"connection: close\r\n\r\n<html><body><h1>403 Forbidden</h1>\nRequest forbidden by "
        b"administrative rules.\n</body></html>\n")
    assert http1.mux_error_response(400) == (
        b"HTTP/1.1 400 Bad request\r\nContent-length: 90\r\nCache-Control: no-cache\r\n"
        b"Connection: close\r\nContent-Type: text/html\r\n\r\n<html><body><h1>400 Bad request"
        b"</h1>\nYour browser sent an invalid request.\n</body></html>\n")
    for status in http1.ERROR_STATUSES:
        page = http1.error_response(status, False)
        head, body = page.split(b"\r\n\r\n", 1)
        assert f"content-length: {len(body)}".encode() in head


def test_serialize_request_and_response():
    m = http1.parse_request(req("GET / HTTP/1.0", "Host: a", "Connection: keep-alive"))
    assert http1.serialize_request(m, [("x-forwarded-for", "1.2.3.4")]) == (
        b"GET / HTTP/1.0\r\nhost: a\r\nx-forwarded-for: 1.2.3.4\r\nconnection: keep-alive\r\n\r\n")
    r = http1.parse_response(b"HTTP/1.0 200 OK\r\nServer: x\r\nConnection: close\r\n\r\n", 0, "GET")
    assert http1.serialize_response(r, "close") == (
        b"HTTP/1.1 200 OK\r\nserver: x\r\nconnection: close\r\n\r\n")
    assert http1.simple_response(429, [("Retry-After", "10")], b"slow down", "text/plain", None) == (
        b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 10\r\ncontent-length: 9\r\n"
        b"content-type: text/plain\r\n\r\nslow down")


def test_canonical_response_counts_the_head_lines():
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: b\r\n\r\n"
    assert http1.canonical_response(bytearray(head + b"ok"), "GET") == (200, len(head), 2, 4)
    assert http1.canonical_response(bytearray(head), "HEAD") == (200, len(head), 0, 4)
    assert http1.canonical_response(bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                                    "GET") is None      # not lower case: parsed instead
