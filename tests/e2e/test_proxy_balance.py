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
