"""Load-balancing algorithms and backup servers compared with HAProxy 2.6: the same
sequence of servers for the same clients (weighted roundrobin included)."""
import pytest

from proxy_harness import Backends, Client, both, one_request, workdir

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

frontend fe_rr
    bind 127.0.0.1:{FE}
    default_backend bk_rr
frontend fe_weights
    bind 127.0.0.1:{FE2}
    default_backend bk_weights
frontend fe_source
    bind 127.0.0.1:{FE3}
    default_backend bk_source
frontend fe_static
    bind 127.0.0.1:{FE4}
    default_backend bk_static
frontend fe_first
    bind 127.0.0.1:{FE5}
    default_backend bk_first
frontend fe_backup
    bind 127.0.0.1:{FE6}
    default_backend bk_backup
frontend fe_leastconn
    bind 127.0.0.1:{FE7}
    default_backend bk_leastconn

backend bk_rr
    balance roundrobin
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3}
backend bk_weights
    balance roundrobin
    server s1 127.0.0.1:{S1} weight 3
    server s2 127.0.0.1:{S2} weight 1
    server s3 127.0.0.1:{S3} weight 2
backend bk_source
    balance source
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3}
backend bk_static
    balance static-rr
    server s1 127.0.0.1:{S1} weight 2
    server s2 127.0.0.1:{S2} weight 1
backend bk_first
    balance first
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
backend bk_leastconn
    balance leastconn
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3} weight 2
backend bk_backup
    server s1 127.0.0.1:{DEAD} check inter 200ms fall 1 rise 1
    server b1 127.0.0.1:{S2} backup
    server b2 127.0.0.1:{S3} backup
"""


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1", "s2", "s3"]).start()
    b.ports["dead"] = Backends(["dead"]).ports["dead"]          # nothing listens there
    try:
        with workdir() as wd, both(TEMPLATE, b, wd, haproxy_bin, n_frontends=7) as p:
            yield p
    finally:
        b.kill()


def servers(port, n, src=None, keep_alive=False):
    if keep_alive:
        c = Client(port, src)
        out = [c.request("/").server for _ in range(n)]
        c.close()
        return out
    return [one_request(port, "/", src).server for _ in range(n)]


@pytest.mark.parametrize("index,n", [(0, 9), (1, 12), (3, 9)])
def test_round_robin_sequences(pair, index, n):
    h, e = pair
    got_h = servers(h.ports[index], n)
    got_e = servers(e.ports[index], n)
    assert got_e == got_h
    if index == 1:                                  # weights 3, 1, 2 (HAProxy's fwrr order)
        assert got_e[:6] == ["s1", "s3", "s1", "s2", "s1", "s3"]
    if index == 0:
        assert got_e == got_h == ["s1", "s2", "s3"] * 3


def test_balance_source_same_server_for_each_address(pair):
    h, e = pair
    srcs = [f"127.0.0.{i}" for i in range(1, 13)] + ["127.1.2.3", "127.200.0.9"]
    got_h = [servers(h.ports[2], 1, s)[0] for s in srcs]
    got_e = [servers(e.ports[2], 1, s)[0] for s in srcs]
    assert got_e == got_h


def test_balance_first(pair):
    h, e = pair
    assert servers(e.ports[4], 4) == servers(h.ports[4], 4) == ["s1"] * 4


def test_first_backup_serves_when_the_active_server_is_down(pair):
    h, e = pair
    import time
    time.sleep(0.6)                                   # s1 (nothing listening) is DOWN
    assert servers(e.ports[5], 4) == servers(h.ports[5], 4) == ["s2"] * 4


def test_leastconn_order_and_load(pair):
    """Idle servers in turn; with two slow requests in flight, the idle one serves."""
    import threading
    import time
    out = []
    for p in pair:
        seq = servers(p.ports[6], 7)
        slow = []

        def hold():
            slow.append(one_request(p.ports[6], "/?sleep=0.6").server)
        threads = [threading.Thread(target=hold) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        time.sleep(0.2)
        during = servers(p.ports[6], 3)
        for t in threads:
            t.join()
        out.append((seq, during, sorted(slow)))
    assert out[1] == out[0]
    assert out[1][0] == ["s1", "s2", "s3", "s1", "s2", "s3", "s1"]


HASH_TEMPLATE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    default_backend bk_uri

frontend fe
    bind 127.0.0.1:{FE}
    use_backend %[req.hdr(x-backend)] if { req.hdr(x-backend) -m found }

backend bk_uri
    balance uri
    server s1 127.0.0.1:{S1} weight 3
    server s2 127.0.0.1:{S2} weight 1
    server s3 127.0.0.1:{S3} weight 2
backend bk_uri_opts
    balance uri whole len 12 depth 2
    hash-type map-based djb2 avalanche
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2} weight 4
    server s3 127.0.0.1:{S3}
backend bk_uri_path
    balance uri path-only
    hash-type map-based wt6
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3} weight 5
backend bk_uri_chash
    balance uri
    hash-type consistent
    server s1 127.0.0.1:{S1} id 7
    server s2 127.0.0.1:{S2} weight 2
    server s3 127.0.0.1:{S3}
backend bk_param
    balance url_param user
    hash-type consistent crc32
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3}
backend bk_param_map
    balance url_param user
    server s1 127.0.0.1:{S1} weight 2
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3}
backend bk_hdr
    balance hdr(x-user)
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2} weight 3
    server s3 127.0.0.1:{S3}
backend bk_domain
    balance hdr(host) use_domain_only
    hash-type consistent sdbm avalanche
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3}
backend bk_source_chash
    balance source
    hash-type consistent
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2} weight 3
    server s3 127.0.0.1:{S3}
backend bk_random
    balance random(3)
    server s1 127.0.0.1:{S1}
    server s2 127.0.0.1:{S2}
    server s3 127.0.0.1:{S3}
"""

TARGETS = ["/", "/a", "/a/b/c", "/a/b/c?x=1", "/a/b/c?x=2", "/img/logo.png", "/api/v1/users/42",
           "/api/v1/users/43?user=bob", "/?user=alice", "/x?id=1&user=carol&z=2",
           "/x?user=", "/x?users=dave", "/x?user=erin&user=frank", "/%41%42", "/" + "z" * 40,
           "http://www.example.com/a/b?user=alice", "/q?user=alice"]


@pytest.fixture(scope="module")
def hash_pair(haproxy_bin):
    b = Backends(["s1", "s2", "s3"]).start()
    try:
        with workdir() as wd, both(HASH_TEMPLATE, b, wd, haproxy_bin) as p:
            yield p
    finally:
        b.kill()


def _server_for(port, target, headers=(), src=None):
    from proxy_harness import raw_exchange
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    raw = f"GET {target} HTTP/1.1\r\nHost: www.example.com\r\n{head}Connection: close\r\n\r\n"
    if src is None:
        out = raw_exchange(port, raw.encode())
        line = [x for x in out.split(b"\r\n\r\n", 1)[1].split(b"\n") if x.startswith(b"server=")]
        return line[0].decode()[7:] if line else out.split(b"\r\n", 1)[0].decode()
    return one_request(port, target, src, list(headers)).server


@pytest.mark.parametrize("backend", ["bk_uri", "bk_uri_opts", "bk_uri_path", "bk_uri_chash",
                                     "bk_param", "bk_param_map"])
def test_uri_and_url_param_hashing_as_haproxy(hash_pair, backend):
    """The same server for each target (weights, options, hash functions, both hash types);
    targets without the parameter go round robin, in HAProxy's order."""
    h, e = hash_pair
    got = [[_server_for(p.port, t, [("X-Backend", backend)]) for t in TARGETS] for p in (h, e)]
    assert got[1] == got[0]
    assert len(set(got[0])) > 1, got[0]


@pytest.mark.parametrize("backend,header", [("bk_hdr", "X-User"), ("bk_domain", "Host")])
def test_header_hashing_as_haproxy(hash_pair, backend, header):
    h, e = hash_pair
    values = ["alice", "bob", "carol, dave", "  erin", "www.example.com", "api.example.org",
              "example.net", "a.b.c.d", "localhost", "x.", "", None, "frank"]
    got = []
    for p in (h, e):
        seq = []
        for v in values:
            hdrs = [("X-Backend", backend)]
            if header == "Host":
                target = f"/h?{v}"
                if v is not None:
                    raw = (f"GET {target} HTTP/1.1\r\nHost: {v}\r\nX-Backend: {backend}\r\n"
                           "Connection: close\r\n\r\n").encode()
                    from proxy_harness import raw_exchange
                    out = raw_exchange(p.port, raw)
                    seq.append(out.split(b"server=", 1)[1].split(b"\n", 1)[0] if b"server="
                               in out else out.split(b"\r\n", 1)[0])
                    continue
            elif v is not None:
                hdrs.append((header, v))
            seq.append(_server_for(p.port, "/h", hdrs))
        got.append(seq)
    assert got[1] == got[0]


def test_source_consistent_hashing_as_haproxy(hash_pair):
    h, e = hash_pair
    srcs = [f"127.0.0.{i}" for i in range(1, 20)] + ["127.1.2.3", "127.200.0.9"]
    got = [[_server_for(p.port, "/", [("X-Backend", "bk_source_chash")], s) for s in srcs]
           for p in (h, e)]
    assert got[1] == got[0]
    assert len(set(got[0])) == 3


def test_random_spreads_over_the_servers(hash_pair):
    """`balance random(3)` (no two runs alike): every server serves, none takes them all."""
    _, e = hash_pair
    seen = [_server_for(e.port, "/", [("X-Backend", "bk_random")]) for _ in range(60)]
    assert {seen.count(s) for s in ("s1", "s2", "s3")} and all(seen.count(s) >= 3 for s in
                                                              ("s1", "s2", "s3")), seen


def test_consistent_hashing_moves_only_the_keys_of_a_server_in_maintenance(hash_pair):
    """A server put in maintenance: HAProxy's ring sends its keys to the neighbours and
    keeps every other key where it was; edgestick's ring does the same."""
    h, e = hash_pair
    before = [_server_for(e.port, t, [("X-Backend", "bk_uri_chash")]) for t in TARGETS]
    for p in (h, e):
        assert p.cli("set server bk_uri_chash/s2 state maint").strip() == b""
    try:
        got = [[_server_for(p.port, t, [("X-Backend", "bk_uri_chash")]) for t in TARGETS]
               for p in (h, e)]
    finally:
        for p in (h, e):
            p.cli("set server bk_uri_chash/s2 state ready")
    assert got[1] == got[0]
    assert "s2" not in got[1]
    assert all(a == b for a, b in zip(before, got[1]) if a != "s2")
