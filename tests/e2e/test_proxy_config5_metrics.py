"""Seed configuration 5 (peers section) parses and serves like HAProxy 2.6 (replication
itself is tested elsewhere), and the Prometheus exporter (`use-service
prometheus-exporter`, HAProxy's metric names) reads the same numbers as HAProxy's."""
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy_harness import (Backends, Client, both, mask_table, one_request, private_tmp,
                           rewrite_addresses, seed_section)

pytestmark = pytest.mark.haproxy
runtime_api = pytest.importorskip("edgestick.proxy.runtime_api")

HEAD = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
"""


def test_config5_parses_and_serves(private_tmp, haproxy_bin):
    template = HEAD + """
frontend fe
    bind 127.0.0.1:{FE}
    default_backend app_servers_replicated
""" + rewrite_addresses(seed_section(5), {"10.0.1.1:1024": "127.0.0.1:{FE2}",
                                          "10.0.1.2:1024": "127.0.0.1:{FE3}"})
    b = Backends([])
    with both(template, b, private_tmp, haproxy_bin, n_frontends=3,
              extra_args=["-L", "haproxy1"], wait_ports=1) as (h, e):
        for src in ("127.0.0.1", "127.0.0.2"):
            rh, re_ = (one_request(p.port, "/", src) for p in (h, e))
            assert (re_.raw_head, re_.body) == (rh.raw_head, rh.body)
            assert re_.status == 503          # the seed's backend has no server
        for cmd in ("show table", "show table app_servers_replicated"):
            assert mask_table(e.cli(cmd)) == mask_table(h.cli(cmd))


PROMEX = HEAD + """
frontend fe_metrics
    bind 127.0.0.1:{FE}
    http-request use-service prometheus-exporter if { path /metrics }
    http-request return status 404

frontend fe_c
    bind 127.0.0.1:{FE2}
    stick-table type ip size 100k expire 30s store http_req_rate(10s),conn_cur
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 5 }
    default_backend bk_c

backend bk_c
    stick-table type ip size 200k expire 30m
    stick on src
    server s1 127.0.0.1:{S1} check
    server s2 127.0.0.1:{S2} check
"""

COMPARED = ("haproxy_sticktable_size", "haproxy_sticktable_used",
            "haproxy_frontend_http_requests_total", "haproxy_frontend_http_responses_total",
            "haproxy_frontend_requests_denied_total", "haproxy_frontend_sessions_total",
            "haproxy_backend_http_responses_total", "haproxy_backend_http_requests_total",
            "haproxy_backend_status", "haproxy_backend_active_servers",
            "haproxy_frontend_denied_connections_total",
            # read from show stat's rows, as HAProxy's exporter reads its stats fields
            "haproxy_frontend_bytes_in_total", "haproxy_frontend_bytes_out_total",
            "haproxy_backend_bytes_in_total", "haproxy_backend_bytes_out_total",
            "haproxy_backend_loadbalanced_total", "haproxy_backend_max_sessions",
            "haproxy_backend_weight", "haproxy_backend_check_up_down_total",
            "haproxy_backend_max_queue", "haproxy_frontend_failed_header_rewriting_total",
            "haproxy_frontend_http_comp_bytes_in_total", "haproxy_frontend_internal_errors_total")


def scrape(port, query):
    r = one_request(port, "/metrics" + query)
    assert r.status == 200
    values = {}
    for fam in text_string_to_metric_families(r.body.decode()):
        for s in fam.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return r, values


def test_prometheus_exporter_same_numbers_as_haproxy(private_tmp, haproxy_bin):
    b = Backends(["s1", "s2"]).start()
    try:
        with both(PROMEX, b, private_tmp, haproxy_bin, n_frontends=2) as (h, e):
            for p in (h, e):
                c = Client(p.ports[1], "127.0.0.1")
                statuses = [c.request("/").status for _ in range(8)]
                c.close()
                assert statuses == [200] * 5 + [429] * 3
                assert one_request(p.ports[1], "/?status=404", "127.0.0.2").status == 404
            got = []
            for p in (h, e):
                r, values = scrape(p.port, "?scope=frontend&scope=backend&scope=sticktable")
                assert r.header("content-type") == "text/plain; version=0.0.4"
                got.append({k: v for k, v in values.items() if k[0] in COMPARED
                            and dict(k[1]).get("proxy") != "fe_metrics"})
            assert got[1] == got[0]
            assert got[1][("haproxy_frontend_requests_denied_total", (("proxy", "fe_c"),))] == 3
            # 3 denials + the server's 404 + the harness's empty probe connection,
            # which HAProxy counts as a bad request (400)
            assert got[1][("haproxy_frontend_http_responses_total",
                           (("code", "4xx"), ("proxy", "fe_c")))] == 5
            # only the table scope
            _, only = scrape(e.port, "?scope=sticktable")
            assert {k[0] for k in only} == {"haproxy_sticktable_size", "haproxy_sticktable_used",
                                            "edgestick_sticktable_entries_over_threshold"}
            assert only[("edgestick_sticktable_entries_over_threshold",
                         (("data_type", "http_req_rate"), ("name", "fe_c"), ("op", "gt"),
                          ("threshold", "5")))] == 1
    finally:
        b.kill()


def test_metrics_listener_option(private_tmp):
    """edgestick's own listener (`--metrics`), loopback by default."""
    from proxy_harness import free_ports, start_proxy
    mport = free_ports(1)[0]
    b = Backends(["s1", "s2"]).start()
    p = start_proxy("edgestick", PROMEX, b, private_tmp, 2, extra_args=["--metrics", str(mport)])
    try:
        from proxy_harness import wait_port
        wait_port(mport)
        for _ in range(7):
            one_request(p.ports[1], "/", "127.0.0.9")
        s = socket.create_connection(("127.0.0.1", mport))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
        s.close()
        text = out.decode()
        assert text.startswith("HTTP/1.1 200 OK\r\n")
        assert 'haproxy_frontend_requests_denied_total{proxy="fe_c"} 2.0' in text
        assert ('edgestick_sticktable_entries_over_threshold{data_type="http_req_rate",'
                'name="fe_c",op="gt",threshold="5"} 1.0') in text
        assert 'haproxy_server_status{proxy="bk_c",server="s1",state="UP"} 1.0' in text
    finally:
        p.stop()
        b.kill()


def test_503_keep_alive_like_haproxy(private_tmp, haproxy_bin):
    template = HEAD + """
frontend fe
    bind 127.0.0.1:{FE}
    default_backend empty

backend empty
    balance roundrobin
"""
    with both(template, Backends([]), private_tmp, haproxy_bin) as (h, e):
        out = []
        for p in (h, e):
            c = Client(p.port)
            r1, r2 = c.request("/"), c.request("/", close=True)
            out.append((r1.raw_head, r1.body, r2.raw_head, c.closed_by_peer(1.0)))
            c.close()
        assert out[1] == out[0]


def test_metrics_from_the_global_section(private_tmp):
    """`metrics bind ADDR:PORT` in `global` (edgestick's own keyword) opens the listener."""
    from proxy_harness import free_ports, start_proxy, wait_port
    mport = free_ports(1)[0]
    text = PROMEX.replace("    nbthread 1\n", f"    nbthread 1\n    metrics bind 127.0.0.1:{mport}\n")
    b = Backends(["s1", "s2"]).start()
    p = start_proxy("edgestick", text, b, private_tmp, 2)
    try:
        wait_port(mport)
        s = socket.create_connection(("127.0.0.1", mport))
        s.sendall(b"GET /metrics?scope=sticktable HTTP/1.1\r\nHost: x\r\n\r\n")
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
        s.close()
        assert b'haproxy_sticktable_size{name="fe_c",type="ip"} 102400.0' in out
    finally:
        p.stop()
        b.kill()
