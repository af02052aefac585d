"""set-src / set-src-port (the client address behind a load balancer, as the trackers and
logs see it) and silent-drop (the connection ends, the client is told nothing), compared
with HAProxy 2.6: the answers, the stick table, the denied counters."""
import socket

import pytest

from proxy_harness import Backends, both, mask_table, stat_row, workdir

pytestmark = pytest.mark.haproxy

TEMPLATE = """
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
    stick-table type ip size 1k store http_req_cnt,http_err_cnt
    http-request set-src hdr(x-real-ip) if { hdr(x-real-ip) -m found }
    http-request set-src-port hdr(x-real-port) if { hdr(x-real-port) -m found }
    http-request track-sc0 src
    http-request silent-drop if { path /drop }
    http-request return status 200 content-type text/plain lf-string "src=%[src] port=%[src_port] cnt=%[sc0_http_req_cnt]\\n"

frontend fe_tcp
    bind 127.0.0.1:{FE2}
    tcp-request connection silent-drop if { src 127.0.0.1 }
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}
"""

HEADERS = [[], [("X-Real-IP", "198.18.5.5")], [("X-Real-IP", "198.18.5.5")],
           [("X-Real-IP", "fd00::5")], [("X-Real-IP", "garbage")],
           [("X-Real-IP", "198.18.7.7"), ("X-Real-Port", "4242")],
           [("X-Real-Port", "99999")]]


def _ask(port: int, headers) -> bytes:
    s = socket.create_connection(("127.0.0.1", port))
    local = s.getsockname()[1]
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    s.sendall(f"GET / HTTP/1.1\r\nHost: a\r\n{head}Connection: close\r\n\r\n".encode())
    data = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
    s.close()
    # the client's own port varies: it is the one the answer shows when not set
    return data.split(b"\r\n\r\n", 1)[1].replace(b"port=%d " % local, b"port=CLIENT ")


def _silence(port: int, payload: bytes) -> bytes:
    """What the client gets within 0.5 s: nothing at all (<silence>), bytes, or <EOF>."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(0.5)
    try:
        s.sendall(payload)
        d = s.recv(4096)
        return d if d else b"<EOF>"
    except socket.timeout:
        return b"<silence>"
    except ConnectionResetError:
        return b"<RST>"
    finally:
        s.close()


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(TEMPLATE, b, wd, haproxy_bin, 2) as p:
            yield p
    finally:
        b.kill()


def test_set_src_as_haproxy(pair):
    h, e = pair
    got = [[_ask(p.port, hd) for hd in HEADERS] for p in (h, e)]
    assert got[1] == got[0]
    assert got[0][1] == b"src=198.18.5.5 port=CLIENT cnt=1\n"
    assert got[0][5] == b"src=198.18.7.7 port=4242 cnt=1\n"
    assert mask_table(e.cli("show table fe")) == mask_table(h.cli("show table fe"))


def test_silent_drop_as_haproxy(pair):
    h, e = pair
    for p in (h, e):
        assert _silence(p.port, b"GET /drop HTTP/1.1\r\nHost: a\r\n\r\n") == b"<silence>"
        # dropped at accept: bytes the client sends after that meet no socket, and the
        # kernel resets them (both proxies, depending on timing); never an answer or a FIN
        assert _silence(p.ports[1], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") in (
            b"<silence>", b"<RST>")
    cols = ("dreq", "dcon", "ereq")
    assert stat_row(e, "fe", "FRONTEND", cols) == stat_row(h, "fe", "FRONTEND", cols)
    assert stat_row(e, "fe_tcp", "FRONTEND", cols) == stat_row(h, "fe_tcp", "FRONTEND", cols)
    assert mask_table(e.cli("show table fe")) == mask_table(h.cli("show table fe"))
