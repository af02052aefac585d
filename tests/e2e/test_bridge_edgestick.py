"""Mirror and escalation against `edgestick proxy`: the native data types xdp_conn_rate,
xdp_pkt_rate, xdp_byte_rate and xdp_drops (stored, shown, filtered, written by the
mirror) and the fetches that read them in ACLs (sc_/scN_/src_ forms). The ban side needs
the kernel: tests/kernel/test_bridge.py."""

import pytest

from edgestick.control import config
from edgestick.control.bridge import Bridge, SourceCounters
from edgestick.control.runtime_client import RuntimeClient, show_table
from proxy_harness import Backends, requests, start_proxy, wait_socket

TEMPLATE = """\
global
    stats socket {SOCK} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend http_front
    bind 127.0.0.1:{FE}
    stick-table type ip size 10k expire 60s store http_req_rate(10s),http_err_rate(10s),xdp_conn_rate,xdp_pkt_rate,xdp_byte_rate,xdp_drops
    http-request track-sc0 src
    http-request deny deny_status 403 if { sc_xdp_conn_rate(0) gt 50 }
    http-request deny deny_status 429 if { src_xdp_drops gt 0 }
    http-request deny deny_status 503 if { sc0_xdp_pkt_rate gt 1000 }
    default_backend app
backend app
    server s1 127.0.0.1:{S1}
backend by_host
    stick-table type string len 32 size 1k store http_err_rate(10s),xdp_drops
"""


@pytest.fixture
def edgestick(tmp_path):
    backends = Backends(["s1"]).start()
    try:
        proxy = start_proxy("edgestick", TEMPLATE, backends, tmp_path)
        try:
            wait_socket(proxy.sock)
            yield proxy
        finally:
            proxy.stop()
    finally:
        backends.kill()



def bridge(sock: str, text: str) -> Bridge:
    cfg = config.parse_text("shield edge\n    interface veth0\n" + text, "edge.cfg")[0]
    cfg.proxy_socket = sock
    return Bridge(cfg, None)


def test_native_mirror_shows_beside_http_counters_and_drives_acls(edgestick):
    for src in ("127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"):
        assert requests(edgestick.port, src, "/", 2) == [200, 200]
    b = bridge(edgestick.sock, "    mirror http_front\n")
    report = b.mirror_sources([
        SourceCounters("127.0.0.4", conn_rate=80, pkt_rate=300, byte_rate=24000, drops=0),
        SourceCounters("127.0.0.5", conn_rate=3, pkt_rate=20, byte_rate=2000, drops=17),
        SourceCounters("127.0.0.6", conn_rate=3, pkt_rate=5000, byte_rate=6_000_000_000, drops=0),
        SourceCounters("127.0.0.7", conn_rate=1, pkt_rate=9, byte_rate=900, drops=0),
        SourceCounters("198.18.64.9", conn_rate=900, pkt_rate=900, byte_rate=54000, drops=800),
    ])
    assert (report.written, report.new, report.errors) == (5, 1, [])
    rows = {e.key: e for e in show_table(RuntimeClient(edgestick.sock), "http_front")}
    assert rows["127.0.0.4"].data == {"http_req_rate(10000)": 2, "http_err_rate(10000)": 0, "xdp_conn_rate": 80,
                                      "xdp_pkt_rate": 300, "xdp_byte_rate": 24000, "xdp_drops": 0}
    assert rows["127.0.0.6"].get("xdp_byte_rate") == 6_000_000_000        # 64-bit: beyond u32
    assert rows["198.18.64.9"].data == {"http_req_rate(10000)": 0, "http_err_rate(10000)": 0,
                                        "xdp_conn_rate": 900, "xdp_pkt_rate": 900, "xdp_byte_rate": 54000,
                                        "xdp_drops": 800}
    # the proxy's own rules read the mirrored values
    assert requests(edgestick.port, "127.0.0.4", "/", 1) == [403]         # sc_xdp_conn_rate(0) gt 50
    assert requests(edgestick.port, "127.0.0.5", "/", 1) == [429]         # src_xdp_drops gt 0
    assert requests(edgestick.port, "127.0.0.6", "/", 1) == [503]         # sc0_xdp_pkt_rate gt 1000
    assert requests(edgestick.port, "127.0.0.7", "/", 1) == [200]
    # and the runtime API filters on them, as escalation would
    hot = show_table(RuntimeClient(edgestick.sock), "http_front", "data.xdp_conn_rate gt 50")
    assert sorted(e.key for e in hot) == ["127.0.0.4", "198.18.64.9"]
    # a store list mirrors only what it names
    b2 = bridge(edgestick.sock, "    mirror http_front store xdp_drops\n")
    assert b2.mirror_sources([SourceCounters("127.0.0.7", 500, 500, 500, 3)]).written == 1
    row = {e.key: e for e in show_table(RuntimeClient(edgestick.sock), "http_front")}["127.0.0.7"]
    assert (row.get("xdp_conn_rate"), row.get("xdp_drops")) == (1, 3)


def test_escalation_query_on_edgestick(edgestick):
    assert requests(edgestick.port, "127.0.0.2", "/login?status=404", 25) == [404] * 25
    assert requests(edgestick.port, "127.0.0.3", "/?status=404", 3) == [404] * 3
    assert requests(edgestick.port, "127.0.0.4", "/", 10) == [200] * 10
    b = bridge(edgestick.sock, "    escalate http_front ban 10m if { http_err_rate gt 20 }\n")
    assert b.find_abusers(b.config.escalations[0]) == [("127.0.0.2", 25)]


def test_a_table_not_keyed_by_address_is_reported_not_used(edgestick):
    """Mirror and escalation need ip/ipv6 keys: another key type is an error of the
    cycle (named with its use), and nothing is written or banned."""
    b = bridge(edgestick.sock, "    mirror by_host\n"
               "    escalate by_host ban 10m if { http_err_rate gt 0 }\n")
    report = b.mirror_sources([SourceCounters("127.0.0.4", 1, 1, 1, 1)])
    assert report.written == 0
    assert report.errors == ["mirror by_host: the table's type is string; "
                             "mirroring needs an ip or ipv6 table"]
    assert b.find_abusers(b.config.escalations[0]) == []
    assert show_table(RuntimeClient(edgestick.sock), "by_host") == []
