"""`bind ... accept-proxy`: the PROXY protocol (v1 and v2) compared with HAProxy 2.6 — the
addresses it carries are the ones tracked, forwarded and logged; tcp-request connection
rules still see the real connection."""
import socket
import struct

import pytest

from proxy_harness import Backends, both, mask_table, raw_exchange, workdir

pytestmark = pytest.mark.haproxy
pytest.importorskip("edgestick.proxy.runtime_api")

TEMPLATE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 2s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{FE} accept-proxy
    stick-table type ip size 1k expire 60s store http_req_cnt,conn_cnt
    tcp-request connection track-sc1 src table t_real
    http-request track-sc0 src
    option forwardfor
    default_backend bk
backend t_real
    stick-table type ip size 1k expire 60s store conn_cnt
backend bk
    server s1 127.0.0.1:{S1}
"""


def v2(src, sport, dst, dport):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


REQ = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
CASES = {
    "v1": b"PROXY TCP4 198.18.0.7 127.0.0.1 40000 80\r\n" + REQ,
    "v1_v6": b"PROXY TCP6 fd00::7 fd00::1 40000 80\r\n" + REQ,
    "v1_unknown": b"PROXY UNKNOWN\r\n" + REQ,
    "v2": v2("198.18.0.9", 40001, "127.0.0.1", 80) + REQ,
    "bad": b"PROXY TCP4 nonsense\r\n" + REQ,
    "missing": REQ,
}


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(TEMPLATE, b, wd, haproxy_bin) as p:
            yield p
    finally:
        b.kill()


@pytest.mark.parametrize("case", sorted(CASES))
def test_proxy_protocol_like_haproxy(pair, case):
    h, e = pair
    got = [raw_exchange(p.port, CASES[case], 3.0) for p in (h, e)]
    assert got[1] == got[0]


def test_tables_see_the_proxied_address(pair):
    h, e = pair
    for p in (h, e):
        raw_exchange(p.port, CASES["v1"], 3.0)
    for cmd in ("show table fe key 198.18.0.7", "show table t_real key 198.18.0.7"):
        assert mask_table(e.cli(cmd)) == mask_table(h.cli(cmd))
    assert "key=198.18.0.7" in e.cli("show table fe key 198.18.0.7").decode()
