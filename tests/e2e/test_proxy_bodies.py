"""Bodies through the proxy compared with HAProxy 2.6: large uploads and downloads
(flow control), chunked both ways, Expect: 100-continue, HEAD."""
import socket

import pytest

from proxy_harness import Backends, Client, both, workdir

pytestmark = pytest.mark.haproxy

TEMPLATE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s

frontend fe
    bind 127.0.0.1:{FE}
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}
"""


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(TEMPLATE, b, wd, haproxy_bin) as p:
            yield p
    finally:
        b.kill()


def exchange(port, raw: bytes, method="GET"):
    c = Client(port, timeout=10)
    c.send(raw)
    r = c.read_response(method)
    c.close()
    return r


def test_large_upload_content_length(pair):
    body = bytes(range(256)) * 4096              # 1 MiB
    raw = (b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
           % len(body)) + body
    out = [exchange(p.port, raw) for p in pair]
    assert out[1].normalised() == out[0].normalised() and out[1].body == out[0].body
    assert b"body-bytes: 1048576\n" in out[1].body


def test_chunked_upload_in_pieces(pair):
    for p in pair:
        c = Client(p.port, timeout=10)
        c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(20):
            piece = bytes([65 + i]) * 10000
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and b"transfer-encoding: chunked\n" in r.body
        c.close()


@pytest.mark.parametrize("query", ["size=3000000", "size=300000&chunked=1", "size=0"])
def test_large_download(pair, query):
    raw = f"GET /?{query} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
    out = [exchange(p.port, raw) for p in pair]
    assert out[1].normalised() == out[0].normalised()
    assert out[1].body == out[0].body


def test_slow_reader_gets_everything(pair):
    """Flow control: a client that does not read for a while still gets every byte."""
    import time
    for p in pair:
        s = socket.create_connection(("127.0.0.1", p.port), 10)
        s.sendall(b"GET /?size=3000000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        time.sleep(0.5)
        got = b""
        while True:
            d = s.recv(262144)
            if not d:
                break
            got += d
        s.close()
        assert len(got.split(b"\r\n\r\n", 1)[1]) == 3000000


def test_expect_100_continue(pair):
    """Neither proxy answers `100 Continue` itself (the server did not): the client
    sends its body after its own wait and gets the same final response."""
    out = []
    for p in pair:
        c = Client(p.port, timeout=0.3)
        c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        with pytest.raises(OSError):
            c.read_response()
        c.sock.settimeout(5)
        c.send(b"hello")
        final = c.read_response()
        out.append((final.normalised(), final.body))
        c.close()
    assert out[1] == out[0]
    assert b"body-bytes: 5\n" in out[1][1]


def test_head_and_keep_alive(pair):
    for p in pair:
        c = Client(p.port)
        r = c.request("/", method="HEAD")
        assert r.status == 200 and r.body == b"" and r.header("content-length") is not None
        assert c.request("/after").status == 200
        c.close()


@pytest.mark.parametrize("req", [
    b"GET /ws?upgrade=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n",
    b"GET /ws?upgrade=1 HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n",
])
def test_upgrade_tunnel(pair, req):
    """101 Switching Protocols, then a two-way tunnel (WebSocket and others)."""
    import time
    out = []
    for p in pair:
        s = socket.create_connection(("127.0.0.1", p.port), 3)
        s.sendall(req)
        got = b""
        while b"seen:" not in got or not got.endswith(b"\n"):
            got += s.recv(4096)
        for word in (b"ping", b"pong"):
            s.sendall(word)
            want = b"echo:" + word
            data = b""
            deadline = time.monotonic() + 3
            while want not in data and time.monotonic() < deadline:
                data += s.recv(4096)
            got += data
        s.close()
        out.append(got)
    assert out[1] == out[0]
    assert out[1].startswith(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\n")


def test_keep_alive_sequence_of_body_shapes(pair):
    """One keep-alive connection, responses of every framing one after the other (the
    data-callback forwarding hands chunked and large bodies to the coroutine's code)."""
    queries = ["size=10", "size=300000&chunked=1", "size=0", "size=3000000", "size=5&chunked=1",
               "size=10"]
    outs = []
    for p in pair:
        c = Client(p.port, timeout=10)
        got = []
        for q in queries:
            c.send(f"GET /?{q} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            r = c.read_response()
            got.append((r.normalised(), r.body))
        c.close()
        outs.append(got)
    assert outs[1] == outs[0]
    assert [len(b) for _, b in outs[1]] == [10, 300000, 0, 3000000, 5, 10]
