"""More backend behaviour against HAProxy 2.6: health-check bytes (plain TCP and
option httpchk / http-check send), cookie variants of the b-transcript (options,
rewrite, prefix), MAINT through the runtime API, request header rules."""
import re
import socket
import threading
import time

import pytest

from proxy_harness import Backends, both, mask_table, one_request, workdir

pytestmark = pytest.mark.haproxy
pytest.importorskip("edgestick.proxy.runtime_api")


class CheckRecorder:
    """A listener that records the first bytes of each connection and answers 200."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:                 # reset before accept() (plain TCP checks)
                if not self.stop:
                    self.seen.append(b"")
                continue
            c.settimeout(0.3)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    d = c.recv(4096)
                    if not d:
                        break
                    data += d
                if data:
                    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            self.seen.append(data)
            c.close()

    def close(self):
        self.stop = True
        self.sock.close()


CHECKS = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout check 1s
backend bk_tcp
    server s1 127.0.0.1:{TCP} check inter 200ms
backend bk_httpchk
    option httpchk
    server s1 127.0.0.1:{HTTP} check inter 200ms
backend bk_httpchk2
    option httpchk GET /health HTTP/1.1
    http-check send hdr Host example.com
    server s1 127.0.0.1:{HTTP2} check inter 200ms rise 1 fall 1
frontend fe
    bind 127.0.0.1:{FE}
    default_backend bk_tcp
"""


def test_health_check_bytes(haproxy_bin):
    seen = {}
    for kind in ("haproxy", "edgestick"):
        recs = {k: CheckRecorder() for k in ("tcp", "http", "http2")}
        b = Backends([])
        b.ports.update({k: r.port for k, r in recs.items()})
        from proxy_harness import start_proxy
        with workdir() as wd:
            p = start_proxy(kind, CHECKS, b, wd, haproxy_bin=haproxy_bin)
            time.sleep(0.9)
            # a plain check is a TCP connect reset at once (the listener never sees
            # it): its verdict is what shows
            stat = [ln.split(",") for ln in p.cli("show stat").decode().splitlines()]
            tcp = [f for f in stat if f[:2] == ["bk_tcp", "s1"]][0]
            seen[kind] = {"tcp": (tcp[17], tcp[36])}
            p.stop()
        for r in recs.values():
            r.close()
        seen[kind].update({k: set(r.seen) for k, r in recs.items() if k != "tcp"})
        assert all(len(recs[k].seen) >= 2 for k in ("http", "http2"))
    assert seen["edgestick"] == seen["haproxy"]
    assert seen["edgestick"]["tcp"] == ("UP", "L4OK")
    assert seen["edgestick"]["http"] == {b"OPTIONS / HTTP/1.0\r\n\r\n"}
    assert seen["edgestick"]["http2"] == {
        b"GET /health HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n"}


COOKIES = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{FE}
    use_backend bk_opts     if { path_beg /opts }
    use_backend bk_rewrite  if { path_beg /rewrite }
    use_backend bk_prefix   if { path_beg /prefix }
    http-request set-header X-Set %[src] if { path_beg /hdr }
    http-request add-header X-Add two if { path_beg /hdr }
    http-request del-header X-Drop if { path_beg /hdr }
    default_backend bk_stick
backend bk_opts
    balance roundrobin
    cookie SRVOPT insert indirect nocache httponly secure maxidle 30m maxlife 8h domain .example.com attr "SameSite=Lax"
    server s1 127.0.0.1:{S1} cookie s1
    server s2 127.0.0.1:{S2} cookie s2
backend bk_rewrite
    balance roundrobin
    cookie JSESSIONID rewrite
    server s1 127.0.0.1:{S1} cookie s1
    server s2 127.0.0.1:{S2} cookie s2
backend bk_prefix
    balance roundrobin
    cookie JSESSIONID prefix
    server s1 127.0.0.1:{S1} cookie s1
    server s2 127.0.0.1:{S2} cookie s2
backend bk_stick
    stick-table type ip size 1k expire 30m
    stick on src
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
"""

DATES = re.compile(r"(SRVOPT=s\d)\|([A-Za-z0-9+/]{5})\|([A-Za-z0-9+/]{5})")


@pytest.fixture(scope="module")
def cookie_pair(haproxy_bin):
    b = Backends(["s1", "s2"]).start()
    try:
        with workdir() as wd, both(COOKIES, b, wd, haproxy_bin) as p:
            yield p
    finally:
        b.kill()


@pytest.mark.parametrize("path,headers", [
    ("/opts", []),
    ("/rewrite?setcookie=JSESSIONID=abc123;%20Path=/", []),
    ("/prefix?setcookie=JSESSIONID=abc123;%20Path=/", []),
    ("/prefix", [("Cookie", "JSESSIONID=s2~abc123")]),
    ("/rewrite", [("Cookie", "JSESSIONID=s2")]),
    ("/hdr", [("X-Drop", "1"), ("X-Set", "client")]),
])
def test_cookie_variants_and_header_rules(cookie_pair, path, headers):
    h, e = cookie_pair
    out = []
    for p in (h, e):
        r = one_request(p.port, path, headers=headers)
        out.append((r, [(k, DATES.sub(r"\1|DATE|DATE", v)) for k, v in r.normalised()[1]]))
    (rh, nh), (re_, ne) = out
    assert (re_.status_line, ne, re_.body) == (rh.status_line, nh, rh.body)
    m = DATES.search(re_.header("set-cookie") or "")
    if m:                                   # (unix seconds + 3) >> 2, now
        from edgestick.proxy.backend import decode_cookie_date
        assert abs(decode_cookie_date(m.group(2)) - time.time()) < 10


def test_maint_moves_a_stuck_client_and_it_stays(cookie_pair):
    h, e = cookie_pair
    first = [one_request(p.port, "/", "127.0.0.5").server for p in (h, e)]
    assert first[0] == first[1]
    other = {"s1": "s2", "s2": "s1"}[first[0]]
    for p in (h, e):
        assert p.cli(f"set server bk_stick/{first[0]} state maint") == b"\n"
    moved = [one_request(p.port, "/", "127.0.0.5").server for p in (h, e)]
    assert moved == [other, other]
    key = "show table bk_stick key 127.0.0.5"
    assert mask_table(e.cli(key)) == mask_table(h.cli(key))
    for p in (h, e):
        assert p.cli(f"set server bk_stick/{first[0]} state ready") == b"\n"
    assert [one_request(p.port, "/", "127.0.0.5").server for p in (h, e)] == [other, other]
