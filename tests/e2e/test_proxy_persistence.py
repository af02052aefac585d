"""Seed configurations 1 (stick on src) and 2 (cookie insert indirect nocache), run on
the real HAProxy 2.6 and on edgestick with the same backends and the same traffic."""
import importlib.util

import pytest

from proxy_harness import (Backends, Client, both, mask_table, one_request, raw_exchange,
                           rewrite_addresses, seed_section, workdir)

pytestmark = pytest.mark.haproxy

HEAD = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
"""

ADDRS = {"10.0.1.10:8080": "127.0.0.1:{APP1}", "10.0.1.11:8080": "127.0.0.1:{APP2}",
         "10.0.1.12:8080": "127.0.0.1:{APP3}"}


@pytest.fixture(scope="module")
def backends():
    b = Backends(["app1", "app2", "app3"]).start()
    yield b
    b.kill()


@pytest.fixture(scope="module")
def config1(backends, haproxy_bin):
    template = HEAD + """
frontend fe
    bind 127.0.0.1:{FE}
    default_backend app_servers
""" + rewrite_addresses(seed_section(1), ADDRS)
    with workdir() as wd, both(template, backends, wd, haproxy_bin) as pair:
        yield pair


@pytest.fixture(scope="module")
def config2(backends, haproxy_bin):
    template = HEAD + """
frontend fe
    bind 127.0.0.1:{FE}
    default_backend app_servers_cookie
""" + rewrite_addresses(seed_section(2), ADDRS)
    with workdir() as wd, both(template, backends, wd, haproxy_bin) as pair:
        yield pair


def _sources_traffic(port):
    """Five client addresses, three requests each on new connections, then one more
    round on a keep-alive connection per source."""
    seen = []
    for i in range(1, 6):
        src = f"127.0.0.{i}"
        for _ in range(3):
            seen.append((src, one_request(port, "/", src).server))
    for i in range(1, 6):
        c = Client(port, f"127.0.0.{i}")
        seen.extend((f"127.0.0.{i}", c.request("/ka").server) for _ in range(2))
        c.close()
    return seen


def test_config1_stick_on_src_same_server_per_source(config1):
    h, e = config1
    got_h = _sources_traffic(h.port)
    got_e = _sources_traffic(e.port)
    assert got_e == got_h
    # persistence itself: every source always lands on one server, new sources in turn
    per_src = {}
    for src, srv in got_e:
        per_src.setdefault(src, set()).add(srv)
    assert all(len(s) == 1 for s in per_src.values())
    assert [per_src[f"127.0.0.{i}"].pop() for i in range(1, 6)] == ["app1", "app2", "app3", "app1", "app2"]
    if importlib.util.find_spec("edgestick.proxy.runtime_api") is not None:
        assert mask_table(e.cli("show table app_servers")) == mask_table(h.cli("show table app_servers"))
        assert "PTR: key=127.0.0.3 use=0 exp=X server_id=3 server_key=app3" in mask_table(
            e.cli("show table app_servers"))


def test_config1_responses_identical(config1):
    h, e = config1
    rh = one_request(h.port, "/same", "127.0.0.1")
    re_ = one_request(e.port, "/same", "127.0.0.1")
    assert re_.normalised() == rh.normalised()
    assert re_.body == rh.body


COOKIE_CASES = [
    ("/", []),
    ("/", []),
    ("/", [("Cookie", "SERVERID=s2")]),
    ("/", [("Cookie", "app=1; SERVERID=s1; other=2")]),
    ("/", [("Cookie", "SERVERID=zzz")]),
    ("/?setcookie=SERVERID=fromapp", [("Cookie", "SERVERID=s1")]),
    ("/?setcookie=SERVERID=fromapp", []),
    ("/?status=404", []),
    ("/?hdr=Last-Modified:%20Mon,%2001%20Jan%202024%2000:00:00%20GMT", []),
    ("/?hdr=Cache-Control:%20max-age=60", []),
    ("/?hdr=Cache-Control:%20no-cache", []),
    ("/?hdr=Cache-Control:%20max-age=60", [("Cookie", "SERVERID=s1")]),
    ("/?hdr=Expires:%20Mon,%2001%20Jan%202024%2000:00:00%20GMT", []),
]


def test_config2_cookie_insert_indirect_nocache(config2):
    h, e = config2
    for path, headers in COOKIE_CASES:
        rh = one_request(h.port, path, headers=headers)
        re_ = one_request(e.port, path, headers=headers)
        assert re_.normalised() == rh.normalised(), (path, headers)
        assert re_.body == rh.body, (path, headers)
    # POST is never cacheable; the body still reaches the server
    for port_h, port_e in [(h.port, e.port)]:
        ch, ce = Client(port_h), Client(port_e)
        rh = ch.request("/?hdr=Last-Modified:%20Mon,%2001%20Jan%202024%2000:00:00%20GMT",
                        "POST", body=b"abc", close=True)
        re_ = ce.request("/?hdr=Last-Modified:%20Mon,%2001%20Jan%202024%2000:00:00%20GMT",
                         "POST", body=b"abc", close=True)
        assert re_.normalised() == rh.normalised()
        assert re_.body == rh.body


def test_config2_exact_set_cookie_and_stripping(config2):
    _, e = config2
    r = one_request(e.port, "/", headers=[("Cookie", "SERVERID=zzz")])
    assert r.header("set-cookie") in ("SERVERID=s1; path=/", "SERVERID=s2; path=/")
    r = one_request(e.port, "/", headers=[("Cookie", "app=1; SERVERID=s2; other=2")])
    assert r.server == "app2" and r.header("set-cookie") is None
    assert "cookie: app=1; other=2\n" in r.body.decode()
    r = one_request(e.port, "/?hdr=Cache-Control:%20max-age=60")
    assert [v for k, v in r.headers if k == "cache-control"] == ["max-age=60", "private"]


def test_config2_keep_alive_sequence(config2):
    """Same cookie traffic on one keep-alive connection per proxy."""
    h, e = config2
    out = []
    for port in (h.port, e.port):
        c = Client(port)
        seq = []
        for path, headers in COOKIE_CASES[:6]:
            r = c.request(path, headers=headers)
            seq.append((r.status, r.server, r.header("set-cookie"), r.header("connection")))
        c.close()
        out.append(seq)
    assert out[1] == out[0]


RESPONSE_ORDER = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{FE}
    http-response set-header X-Frame-Options DENY
    http-response set-header X-Seen %[res.cook(JSESSIONID)]
    use_backend pfx if { path_beg /pfx }
    default_backend ins
backend ins
    cookie SRV insert indirect nocache httponly
    http-response set-header X-Backend ins
    server s1 127.0.0.1:{S1} cookie one
backend pfx
    cookie JSESSIONID prefix
    server s1 127.0.0.1:{S1} cookie p1
"""


@pytest.mark.parametrize("path", ["/", "/?setcookie=SRV%3Dfromapp", "/pfx?setcookie=JSESSIONID%3Dabc"])
def test_cookie_insertion_after_response_rules(haproxy_bin, path):
    """HAProxy applies the persistence cookie (insertion, the server's cookie prefixed or
    dropped) after the http-response rules: the rules read the server's own value and
    the inserted Set-Cookie comes after the headers they add."""
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(RESPONSE_ORDER, b, wd, haproxy_bin) as (h, e):
            raw = f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
            assert raw_exchange(e.port, raw) == raw_exchange(h.port, raw)
    finally:
        b.kill()
