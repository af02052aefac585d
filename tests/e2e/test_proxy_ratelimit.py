"""Seed configurations 3 (per-source request rate, 429) and 4 (three deny rules, TLS),
on the real HAProxy 2.6 and on edgestick: same traffic, same statuses, same tables."""
import importlib.util

import pytest

from proxy_harness import (Backends, Client, both, mask_table, rewrite_addresses, seed_section,
                           self_signed_cert, workdir)

pytestmark = pytest.mark.haproxy
HAVE_CLI = importlib.util.find_spec("edgestick.proxy.runtime_api") is not None

HEAD = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout http-keep-alive 10s

backend app_servers
    server app1 127.0.0.1:{APP1}
"""


@pytest.fixture(scope="module")
def backends():
    b = Backends(["app1"]).start()
    yield b
    b.kill()


@pytest.fixture(scope="module")
def config3(backends, haproxy_bin):
    template = HEAD + rewrite_addresses(seed_section(3), {"*:80": "127.0.0.1:{FE}"})
    with workdir() as wd, both(template, backends, wd, haproxy_bin) as pair:
        yield pair


@pytest.fixture(scope="module")
def config4(backends, haproxy_bin):
    with workdir() as tmp:
        yield from _config4(backends, haproxy_bin, tmp)


def _config4(backends, haproxy_bin, tmp):
    cert = self_signed_cert(tmp)
    template = HEAD + rewrite_addresses(seed_section(4), {
        "*:443": "127.0.0.1:{FE}", "/etc/ssl/cert.pem": cert})
    # fe_d2 of the d-transcript: the same rules with connection-level tracking
    template += """
frontend fe_conn_level
    bind 127.0.0.1:{FE2}
    stick-table type ip size 100k expire 30s store http_req_rate(10s),http_err_rate(10s),conn_rate(10s)
    tcp-request connection track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100 }
    http-request deny deny_status 403 if { sc_http_err_rate(0) gt 20 }
    http-request deny deny_status 429 if { sc_conn_rate(0) gt 50 }
    default_backend app_servers
"""
    with both(template, backends, tmp, haproxy_bin, n_frontends=2) as pair:
        yield pair


def keep_alive_statuses(port, src, n, path="/", tls=False):
    c = Client(port, src, tls=tls)
    out = [c.request(path).status for _ in range(n)]
    c.close()
    return out


def new_conn_statuses(port, src, n, path="/", tls=False):
    out = []
    for _ in range(n):
        c = Client(port, src, tls=tls)
        out.append(c.request(path, close=True).status)
        c.close()
    return out


def runs(statuses):
    """[(first request number, last, status)] of consecutive equal statuses."""
    out = []
    for i, s in enumerate(statuses, 1):
        if out and out[-1][2] == s:
            out[-1][1] = i
        else:
            out.append([i, i, s])
    return [tuple(r) for r in out]


def test_config3_first_429_is_request_101(config3):
    h, e = config3
    for src, fn in (("127.0.0.1", keep_alive_statuses), ("127.0.0.2", new_conn_statuses)):
        got_h = fn(h.port, src, 150)
        got_e = fn(e.port, src, 150)
        assert got_e == got_h
        assert runs(got_e) == [(1, 100, 200), (101, 150, 429)]


def test_config3_deny_bytes_and_keep_alive(config3):
    h, e = config3
    for p in (h, e):
        keep_alive_statuses(p.port, "127.0.0.3", 101)
    resp = []
    for p in (h, e):
        c = Client(p.port, "127.0.0.3")
        r1 = c.request("/")
        r2 = c.request("/")           # the connection stays open after a deny
        resp.append((r1.raw_head, r1.body, r2.status))
        c.close()
    assert resp[1] == resp[0]
    assert resp[1][0].startswith(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 117\r\n")


def test_config3_show_table(config3):
    pytest.importorskip("edgestick.proxy.runtime_api")
    h, e = config3
    for src in ("127.0.0.4", "127.0.0.5"):
        for p in (h, e):
            keep_alive_statuses(p.port, src, 7)
    th = mask_table(h.cli("show table http_front"))
    te = mask_table(e.cli("show table http_front"))
    assert te == th
    assert "PTR: key=127.0.0.4 use=0 exp=X conn_cur=0 http_req_rate(10000)=7" in te
    for cmd in ("show table http_front data.http_req_rate gt 100", "show table",
                "show table http_front key 127.0.0.5"):
        assert mask_table(e.cli(cmd)) == mask_table(h.cli(cmd))


def test_config4_rules_fire_in_transcript_order_over_tls(config4):
    """d-transcript: 1..50 200, 51..71 429 (conn rate), 72..100 403 (err rate),
    101..150 429 (req rate) for request-level tracking, keep-alive and new connections."""
    h, e = config4
    expected = [(1, 50, 200), (51, 71, 429), (72, 100, 403), (101, 150, 429)]
    for src, fn in (("127.0.0.11", keep_alive_statuses), ("127.0.0.12", new_conn_statuses)):
        got_h = fn(h.port, src, 150, tls=True)
        got_e = fn(e.port, src, 150, tls=True)
        assert got_e == got_h
        assert runs(got_e) == expected
    got_h = keep_alive_statuses(h.port, "127.0.0.13", 150, "/?status=404", tls=True)
    got_e = keep_alive_statuses(e.port, "127.0.0.13", 150, "/?status=404", tls=True)
    assert got_e == got_h
    assert runs(got_e) == [(1, 21, 404), (22, 100, 403), (101, 150, 429)]
    if HAVE_CLI:
        assert mask_table(e.cli("show table https_front")) == mask_table(h.cli("show table https_front"))


def test_config4_connection_level_tracking(config4):
    h, e = config4
    got_h = keep_alive_statuses(h.ports[1], "127.0.0.21", 150)
    got_e = keep_alive_statuses(e.ports[1], "127.0.0.21", 150)
    assert got_e == got_h
    assert runs(got_e) == [(1, 100, 200), (101, 150, 429)]
    got_h = new_conn_statuses(h.ports[1], "127.0.0.22", 150)
    got_e = new_conn_statuses(e.ports[1], "127.0.0.22", 150)
    assert got_e == got_h
    assert runs(got_e) == [(1, 50, 200), (51, 71, 429), (72, 100, 403), (101, 150, 429)]
    if HAVE_CLI:
        assert mask_table(e.cli("show table fe_conn_level")) == mask_table(h.cli("show table fe_conn_level"))
