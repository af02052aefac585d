"""Timeouts, connection failures, retries and redispatch compared with HAProxy 2.6."""
import time

import pytest

from proxy_harness import Backends, Client, both, one_request, workdir

pytestmark = pytest.mark.haproxy

TEMPLATE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 500ms
    timeout client 5s
    timeout server 400ms
    timeout http-keep-alive 300ms

frontend fe
    bind 127.0.0.1:{FE}
    use_backend bk_persist if { path_beg /persist }
    use_backend bk_redisp if { path_beg /redisp }
    use_backend bk_dead if { path_beg /dead }
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}

backend bk_dead
    retries 0
    server dead 127.0.0.1:{DEAD}

backend bk_persist
    option persist
    retries 1
    cookie SERVERID insert indirect nocache
    server s1 127.0.0.1:{S1} cookie s1
    server s2 127.0.0.1:{DEAD} cookie s2

backend bk_redisp
    option persist
    option redispatch
    retries 1
    cookie SERVERID insert indirect nocache
    server s1 127.0.0.1:{S1} cookie s1
    server s2 127.0.0.1:{DEAD} cookie s2
"""


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1"]).start()
    b.ports["dead"] = Backends(["dead"]).ports["dead"]          # nothing listens there
    try:
        with workdir() as wd, both(TEMPLATE, b, wd, haproxy_bin) as p:
            yield p
    finally:
        b.kill()


def test_server_timeout_gives_504(pair):
    out = [one_request(p.port, "/?sleep=1") for p in pair]
    assert out[1].normalised() == out[0].normalised() and out[1].body == out[0].body
    assert out[1].status == 504


def test_refused_server_gives_503(pair):
    out = [one_request(p.port, "/dead") for p in pair]
    assert (out[1].raw_head, out[1].body) == (out[0].raw_head, out[0].body)
    assert out[1].status == 503


def test_keep_alive_timeout_closes_idle_connection_silently(pair):
    for p in pair:
        c = Client(p.port)
        assert c.request("/").status == 200
        t0 = time.monotonic()
        assert c.closed_by_peer(2.0)
        assert 0.2 < time.monotonic() - t0 < 1.5
        assert c.buf == b""
        c.close()


def test_persist_retries_then_503_or_redispatch(pair):
    """Cookie names a dead server with option persist: after the retries, 503 without
    redispatch; with redispatch the last retry goes to another server (b transcript)."""
    for path, status in (("/persist", 503), ("/redisp", 200)):
        out, took = [], []
        for p in pair:
            t0 = time.monotonic()
            out.append(one_request(p.port, path, headers=[("Cookie", "SERVERID=s2")]))
            took.append(time.monotonic() - t0)
        assert out[1].normalised() == out[0].normalised(), path
        # the turn-around before a retry: min(1s, timeout connect)
        assert abs(took[1] - took[0]) < 0.3, took
        assert out[1].status == status
        assert out[1].body == out[0].body


QUEUE = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe_wait
    bind 127.0.0.1:{FE}
    default_backend bk_wait
frontend fe_short
    bind 127.0.0.1:{FE2}
    default_backend bk_short
backend bk_wait
    timeout queue 3s
    server s1 127.0.0.1:{S1} maxconn 1
backend bk_short
    timeout queue 200ms
    server s1 127.0.0.1:{S1} maxconn 1
"""


def test_server_maxconn_queues_then_503(haproxy_bin):
    """maxconn 1: a second concurrent request waits for the slot, or gets 503 once
    `timeout queue` is over."""
    import threading
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(QUEUE, b, wd, haproxy_bin, n_frontends=2) as (h, e):
            results = {}
            for p in (h, e):
                for idx in (0, 1):
                    got = []

                    def slow(port=p.ports[idx]):
                        t0 = time.monotonic()
                        r = one_request(port, "/?sleep=0.5")
                        got.append((r.status, round(time.monotonic() - t0, 1)))
                    threads = [threading.Thread(target=slow) for _ in range(2)]
                    for t in threads:
                        t.start()
                        time.sleep(0.05)
                    for t in threads:
                        t.join()
                    results[(p.kind, idx)] = sorted(s for s, _ in got)
                    if idx == 0:
                        assert max(d for _, d in got) >= 0.9      # served one after the other
            assert results[("edgestick", 0)] == results[("haproxy", 0)] == [200, 200]
            assert results[("edgestick", 1)] == results[("haproxy", 1)] == [200, 503]
    finally:
        b.kill()


def test_server_closing_an_idle_connection_is_not_an_error(pair):
    """The server drops a keep-alive connection while it sits idle in the pool: the next
    request goes through (on a new connection), as with HAProxy."""
    for p in pair:
        c = Client(p.port)
        assert c.request("/?idle_close=0.05").status == 200
        time.sleep(0.2)                 # (the client side's keep-alive timeout is 300 ms)
        assert c.request("/next").status == 200
        c.close()


def test_server_closing_a_reused_connection_as_the_request_arrives(pair):
    """The server drops a pooled connection just as the next request arrives: an
    idempotent request is sent again on a new connection (HAProxy closes the client
    connection instead, leaving the retry to the client); a POST closes the client
    connection unanswered, as HAProxy does."""
    h, e = pair
    c = Client(e.port)
    assert c.request("/?drop_next=1").status == 200
    r = c.request("/next")
    assert r.status == 200 and b"GET /next\n" in r.body
    c.close()
    # (HAProxy may pick another pooled connection here, so only edgestick is checked)
    c = Client(e.port)
    assert c.request("/?drop_next=1").status == 200
    c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
    assert c.read_response() is None and c.closed_by_peer(1.0)
    c.close()
