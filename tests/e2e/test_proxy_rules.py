"""http-request rules and counter increment points compared with HAProxy 2.6: the
deny/return/tarpit/reject frontends of the deny-responses transcript, and the
counters-semantics configuration (tcp-request connection vs content vs http-request
tracking, gpc0, http_err/http_fail, bytes in HAProxy's own accounting)."""
import socket
import time

import pytest

from proxy_harness import (Backends, Client, both, mask_table, one_request, private_tmp,
                           raw_exchange, stat_row, workdir)

pytestmark = pytest.mark.haproxy
pytest.importorskip("edgestick.proxy.runtime_api")

DENY = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout tarpit 300ms

frontend fe_deny
    bind 127.0.0.1:{FE}
    http-request deny if { path /default }
    http-request deny deny_status 429 if { path /429 }
    http-request deny status 429 content-type text/plain string "slow down" hdr Retry-After 10 hdr X-Reason "%[src] over limit" if { path /custom }
    http-request return status 200 content-type text/plain string "hello" hdr X-Foo bar if { path /hello }
    http-request return status 503 if { path /empty }
    http-request return status 429 default-errorfiles if { path /ef }
    http-request deny status 404 content-type text/plain string "not here" if { path /nothere }
    http-request tarpit if { path /tarpit }
    http-request tarpit deny_status 429 if { path /tarpit429 }
    default_backend bk

frontend fe_reject
    bind 127.0.0.1:{FE2}
    tcp-request connection reject

backend bk
    server s1 127.0.0.1:{S1}
"""


@pytest.fixture(scope="module")
def deny_pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(DENY, b, wd, haproxy_bin, 2) as pair:
            yield pair
    finally:
        b.kill()


@pytest.mark.parametrize("path", ["/default", "/429", "/custom", "/hello", "/empty", "/ef",
                                  "/nothere", "/tarpit", "/tarpit429"])
@pytest.mark.parametrize("close", [True, False])
def test_deny_return_tarpit_bytes(deny_pair, path, close):
    h, e = deny_pair
    raw = f"GET {path} HTTP/1.1\r\nHost: a\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode()
    out = []
    for p in (h, e):
        t0 = time.monotonic()
        if close:
            got = raw_exchange(p.port, raw, timeout=2.0)
        else:                       # one response, then the connection must stay open
            c = Client(p.port)
            c.send(raw)
            r = c.read_response()
            got = r.raw_head + b"\r\n\r\n" + r.body
            assert not c.closed_by_peer(0.05)
            c.close()
        out.append((got, time.monotonic() - t0))
    assert out[1][0] == out[0][0]
    if path.startswith("/tarpit"):
        assert out[1][1] >= 0.29


def test_keep_alive_after_deny(deny_pair):
    for p in deny_pair:
        c = Client(p.port)
        assert [c.request("/429").status for _ in range(3)] == [429, 429, 429]
        assert c.request("/hello").body == b"hello"
        c.close()


def test_tcp_request_connection_reject(deny_pair):
    for p in deny_pair:
        try:
            s = socket.create_connection(("127.0.0.1", p.ports[1]), 2)
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            got = s.recv(100)
            s.close()
        except (ConnectionResetError, BrokenPipeError):
            got = b"<reset>"
        assert got in (b"<reset>", b"")


def test_frontend_counters_like_haproxy(deny_pair):
    h, e = deny_pair
    cols = ("dreq", "dcon", "ereq", "hrsp_2xx", "hrsp_4xx", "hrsp_5xx", "req_tot", "intercepted",
            "stot")

    for name in ("fe_reject", "fe_deny"):
        assert stat_row(e, name, "FRONTEND", cols) == stat_row(h, name, "FRONTEND", cols)


COUNTERS = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

backend t_conn
    stick-table type ip size 1k expire 60s store conn_cnt,conn_cur,conn_rate(60s),sess_cnt,sess_rate(60s),http_req_cnt,http_req_rate(60s),http_err_cnt,http_err_rate(60s),http_fail_cnt,http_fail_rate(60s),bytes_in_cnt,bytes_out_cnt,gpc0
backend t_content
    stick-table type ip size 1k expire 60s store conn_cnt,conn_cur,conn_rate(60s),sess_cnt,sess_rate(60s),http_req_cnt,http_req_rate(60s),http_err_cnt,http_err_rate(60s),http_fail_cnt,http_fail_rate(60s),gpc0
backend t_http
    stick-table type ip size 1k expire 60s store conn_cnt,conn_cur,conn_rate(60s),sess_cnt,sess_rate(60s),http_req_cnt,http_req_rate(60s),http_err_cnt,http_err_rate(60s),http_fail_cnt,http_fail_rate(60s),bytes_in_cnt,bytes_out_cnt,bytes_in_rate(60s),bytes_out_rate(60s),gpc0

frontend fe_cnt
    bind 127.0.0.1:{FE}
    tcp-request connection track-sc1 src table t_conn
    tcp-request content track-sc2 src table t_content
    http-request track-sc0 src table t_http
    http-request sc-inc-gpc0(0) if { path /inc }
    http-request sc-inc-gpc0(1) if { path /inc }
    http-request sc-inc-gpc0(2) if { path /inc }
    http-request deny if { path /deny }
    use_backend bk_dead if { path /dead }
    default_backend bk_echo

backend bk_echo
    server s1 127.0.0.1:{S1}

backend bk_dead
    retries 0
    server dead 127.0.0.1:{DEAD}
"""


def test_counter_increment_points_like_haproxy(private_tmp, haproxy_bin):
    """The counters-semantics transcript's traffic: same tables on both sides."""
    b = Backends(["s1"]).start()
    b.ports["dead"] = Backends(["dead"]).ports["dead"]       # nothing listens there
    tables = ("t_conn", "t_content", "t_http")
    try:
        with both(COUNTERS, b, private_tmp, haproxy_bin) as (h, e):
            clients = []
            for p in (h, e):
                # the harness's port probe was an empty connection: start from scratch
                for t in tables:
                    p.cli(f"clear table {t}")
                c = Client(p.port, "127.0.0.1")
                clients.append(c)
                statuses = [c.request(path).status for path in (
                    "/", "/?status=404", "/?status=500", "/?status=501", "/?status=503",
                    "/deny", "/inc", "/?size=700&chunked=1")]
                statuses.append(c.request("/post", "POST", body=b"x" * 300).status)
                c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
                statuses.append(c.read_response().status)
                assert statuses == [200, 404, 500, 501, 503, 403, 200, 200, 200, 200]
            for t in tables:        # connection A still open: conn_cur/use of t_conn = 1
                assert mask_table(e.cli(f"show table {t}")) == mask_table(h.cli(f"show table {t}"))
            for p in (h, e):
                raw_exchange(p.port, b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n")     # 400
                s = socket.create_connection(("127.0.0.1", p.port))          # empty connection
                s.close()
                assert one_request(p.port, "/dead").status == 503
            for c in clients:
                c.close()
            time.sleep(0.2)
            for t in tables:
                assert mask_table(e.cli(f"show table {t}")) == mask_table(h.cli(f"show table {t}"))
    finally:
        b.kill()


SESSION_RULES = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend f
    bind 127.0.0.1:{FE}
    stick-table type ip size 1k expire 1m store conn_cnt,conn_cur,sess_cnt,sess_rate(10s),http_req_cnt
    tcp-request connection track-sc0 src
    tcp-request session track-sc1 src table t_sess
    tcp-request session reject if { sc1_sess_cnt gt 3 }
    default_backend b
backend t_sess
    stick-table type ip size 1k expire 1m store sess_cnt,conn_cnt,conn_cur
backend b
    server s1 127.0.0.1:{S1}
"""


def test_tcp_request_session_rules_like_haproxy(private_tmp, haproxy_bin):
    """A connection-level tracker counts the accepted session (sess_cnt), a session-level
    track counts its own session and connection, and a session reject ends the
    connection with a reset, counted as a denied session (dses), not a denied
    connection (dcon); the tables and counters read as HAProxy's."""
    b = Backends(["s1"]).start()
    try:
        with both(SESSION_RULES, b, private_tmp, haproxy_bin) as (h, e):
            def exchange(port):
                # a reset reads as b"", b"<reset>" or an error of the send, depending on
                # when it lands
                try:
                    got = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n"
                                       b"Connection: close\r\n\r\n", 2.0)[:12]
                except (ConnectionResetError, BrokenPipeError):
                    got = b""
                return got or b"<reset>"

            seen = [[exchange(p.port) for _ in range(6)] for p in (h, e)]
            assert seen[0] == [b"HTTP/1.1 200"] * 3 + [b"<reset>"] * 3
            assert seen[1] == seen[0]
            time.sleep(0.2)         # the last connections' ends are counted
            for t in ("f", "t_sess"):
                assert mask_table(e.cli(f"show table {t}")) == mask_table(h.cli(f"show table {t}"))

            cols = ("dcon", "dses", "stot", "req_tot")
            assert stat_row(e, "f", "FRONTEND", cols) == stat_row(h, "f", "FRONTEND", cols)
            assert stat_row(h, "f", "FRONTEND", cols)["dses"] == "3"
    finally:
        b.kill()


DYNAMIC_BACKENDS = """
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
    use_backend be_%[req.hdr(x-tier),lower] if { req.hdr(x-tier) -m found }
    use_backend be_other if { path_beg /other }
    default_backend be_free
backend be_gold
    server s1 127.0.0.1:{S1}
backend be_free
    server s2 127.0.0.1:{S2}
backend be_other
    server s3 127.0.0.1:{S3}
"""


def test_use_backend_with_a_dynamic_name(private_tmp, haproxy_bin):
    """`use_backend be_%[...]` picks the backend the name evaluates to; a name that
    names no backend goes to default_backend, past the rules after it (HAProxy)."""
    b = Backends(["s1", "s2", "s3"]).start()
    try:
        with both(DYNAMIC_BACKENDS, b, private_tmp, haproxy_bin) as pair:
            seen = []
            for p in pair:
                seen.append([(path, tier, one_request(p.port, path, headers=[("X-Tier", tier)] if tier else []).server)
                             for path, tier in (("/", "Gold"), ("/", "free"), ("/other", "nope"),
                                                ("/other", None), ("/", None), ("/", "other"))])
            assert seen[1] == seen[0]
            assert [s for _, _, s in seen[0]] == ["s1", "s2", "s2", "s3", "s2", "s3"]
    finally:
        b.kill()


MONITOR_AND_REDIRECT = """
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
    stick-table type ip size 1k expire 1m store http_req_cnt,conn_cnt
    tcp-request connection track-sc0 src
    monitor-uri /health
    monitor fail if { req.hdr(x-fail) -m found }
    http-request deny deny_status 403 if { path /health }
    http-request allow if { path_beg /allowed }
    http-request deny deny_status 429 if { path /r2 }
    redirect location /moved code 301 if { path_beg /r }
    redirect prefix /pfx if { path_beg /allowed }
    use_backend be_redir if { path_beg /b }
    default_backend be
backend be
    server s1 127.0.0.1:{S1}
backend be_redir
    http-request return status 200 content-type text/plain string "from the backend" if { path /b/ret }
    http-request redirect location /b/elsewhere if { path /b/hr }
    redirect scheme https if { path /b/secure }
    server s1 127.0.0.1:{S1}
"""


def test_monitor_uri_and_redirect_rules(private_tmp, haproxy_bin):
    """`monitor-uri` answers before any rule (503 when `monitor fail` holds, the exact
    URI only); `redirect` rules run after the http-request rules, even after an allow,
    in a backend too; a local reply to HEAD is its head alone. Bytes, tables and
    counters as HAProxy's."""
    b = Backends(["s1"]).start()
    try:
        with both(MONITOR_AND_REDIRECT, b, private_tmp, haproxy_bin) as pair:
            reqs = [("GET", "/health", ""), ("GET", "/health", "X-Fail: 1\r\n"),
                    ("HEAD", "/health", ""), ("GET", "/health?x", ""), ("GET", "/r1", ""),
                    ("GET", "/r2", ""), ("HEAD", "/r2", ""), ("GET", "/allowed/x", ""),
                    ("GET", "/b/secure", ""), ("GET", "/b/other", ""), ("GET", "/b/ret", ""),
                    ("GET", "/b/hr", ""), ("GET", "/", "")]
            seen = []
            for p in pair:
                c = Client(p.port)
                run = []
                for method, path, extra in reqs:      # one keep-alive connection: framing holds
                    c.send(f"{method} {path} HTTP/1.1\r\nHost: a\r\n{extra}\r\n".encode())
                    r = c.read_response(method)
                    run.append((method, path, r.raw_head if r else None, r.body if r else None))
                c.close()
                seen.append(run)
            assert seen[1] == seen[0]
            time.sleep(0.2)
            assert mask_table(pair[1].cli("show table fe")) == mask_table(pair[0].cli("show table fe"))

            cols = ("req_tot", "intercepted", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx",
                    "dreq")
            assert stat_row(pair[1], "fe", "FRONTEND", cols) == \
                stat_row(pair[0], "fe", "FRONTEND", cols)
    finally:
        b.kill()


REWRITES = r"""
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
    http-request deny deny_status 404 if { path_reg ^/a\.b$ }
    http-request set-path /new%[path] if { path_beg /sp }
    http-request set-query a=1&b=%[src] if { path_beg /sq }
    http-request set-query %[url_param(none)] if { path_beg /empty }
    http-request set-uri /u?x=%[url_param(y)] if { path_beg /su }
    http-request replace-path /api/(.*) /\1 if { path_beg /api }
    http-request replace-path o 0 if { path_beg /oo }
    http-request replace-uri ^/ru/([^?]*)(.*) /rewritten/\1\2 if { path_beg /ru }
    http-request replace-pathq ^/rq(.*) /q\1 if { path_beg /rq }
    http-request set-method POST if { path_beg /sm }
    http-request replace-header X-A (.*)-(.*) \2-\1 if { path_beg /rh }
    http-request replace-value X-B ^b(.*) B\1 if { path_beg /rv }
    http-request set-pathq /pq?z=%[path] if { path_beg /pq }
    http-request deny deny_status 403 if { path_beg /new/sp/deny }
    http-response replace-header X-Server (.*) srv-\1
    http-response replace-value Cache-Control ^max-age=(.*) s-maxage=\1 if { status 200 }
    default_backend be
backend be
    server s1 127.0.0.1:{S1}
"""


@pytest.mark.parametrize("path,extra", [
    ("/cc?hdr=Cache-Control%3A%20max-age%3D5%2C%20public", ""),
    ("/cc?hdr=Cache-Control%3A%20no-store&status=404", ""),
    ("/sp/x?q=1", ""), ("/sp/deny", ""), ("/sq/a?old=1", ""), ("/sq", ""), ("/empty?x=1", ""),
    ("/su/a?y=7", ""), ("/api/v1/x?k", ""), ("/oo/foo", ""), ("/ru/a/b?c=d", ""),
    ("/rq/x?y", ""), ("/sm/x", ""), ("/rh", "X-A: left-right\r\n"),
    ("/rv", "X-B: b1, b2,a3\r\n"), ("/rv", "X-B: b1\r\nX-B: c, bb\r\n"), ("/rv", "X-B: b1,  a2\r\n"),
    ("/pq/x?old", ""),
    ("/a.b", ""), ("/aXb", ""),
    ("http://h/sp/x?q=1", ""),
])
def test_request_rewrites(rewrite_pair, path, extra):
    r"""set-path/-pathq/-query/-uri/-method, replace-path/-pathq/-uri/-header/-value as
    HAProxy applies them (a replacement is the whole new value, \1 its groups; later
    rules see the new request); a regex keeps its escaped dot."""
    raw = f"GET {path} HTTP/1.1\r\nHost: h\r\n{extra}Connection: close\r\n\r\n".encode()
    h, e = rewrite_pair
    assert raw_exchange(e.port, raw) == raw_exchange(h.port, raw)


@pytest.fixture(scope="module")
def rewrite_pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(REWRITES, b, wd, haproxy_bin) as p:
            yield p
    finally:
        b.kill()


REDIRECTS = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend f1
    bind 127.0.0.1:{FE}
    http-request redirect location /new if { path /loc }
    http-request redirect location https://%[hdr(host)]%[path] code 301 if { path /lf }
    http-request redirect prefix /pre if { path_beg /p }
    http-request redirect prefix /pre2 drop-query append-slash if { path_beg /q }
    http-request redirect scheme https code 308 if { path /s }
    http-request redirect code 301 drop-query prefix /any-order if { path_beg /o }
    http-request redirect location /c set-cookie A=1 if { path /ck }
    http-request redirect location /d clear-cookie B= if { path /clr }
    http-response set-header X-Resp yes
    http-response del-header X-Server
    http-response deny if { status 404 }
    default_backend b1
backend b1
    server s1 127.0.0.1:{S1}
"""


@pytest.fixture(scope="module")
def redirect_pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(REDIRECTS, b, wd, haproxy_bin) as p:
            yield p
    finally:
        b.kill()


@pytest.mark.parametrize("path", ["/loc", "/lf?x=1", "/p/x?y=1", "/q/a?y=1", "/s?z", "/o/x?y=1", "/ck",
                                  "/clr", "/", "/?status=404"])
def test_redirects_and_response_rules(redirect_pair, path):
    out = []
    for p in redirect_pair:
        c = Client(p.port)
        c.send(f"GET {path} HTTP/1.1\r\nHost: ex.com\r\n\r\n".encode())
        r = c.read_response()
        out.append((r.raw_head, r.body, c.request("/again").status))
        c.close()
    assert out[1] == out[0]


def test_pipelined_rules_on_a_keep_alive_connection(deny_pair):
    """After a first request, several requests in one packet: denied, returned,
    redirected to the server, denied again, on one connection (edgestick answers the
    frontend's own replies without waking the connection's coroutine)."""
    h, e = deny_pair
    burst = b"".join(f"GET {p} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
                     for p in ("/429", "/hello", "/", "/custom", "/429")) + \
        b"GET /empty HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    out = []
    for p in (h, e):
        c = Client(p.port)
        first = c.request("/hello")
        c.send(burst)
        got = [c.read_response() for _ in range(6)]
        out.append([(first.raw_head, first.body)] + [(r.raw_head, r.body) for r in got]
                   + [c.closed_by_peer(1.0)])
        c.close()
    assert out[1] == out[0]
    assert [r[0].split(b"\r\n")[0] for r in out[1][1:7]] == [
        b"HTTP/1.1 429 Too Many Requests", b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK",
        b"HTTP/1.1 429 Too Many Requests", b"HTTP/1.1 429 Too Many Requests",
        b"HTTP/1.1 503 Service Unavailable"]


RESPONSE_RULES = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
backend t_res
    stick-table type ip size 1k expire 60s store conn_cnt,http_req_cnt,http_err_cnt,http_fail_cnt
frontend fe
    bind 127.0.0.1:{FE}
    http-response track-sc1 src table t_res
    http-response set-header X-Was %[res.hdr(x-server)]-%[status] if { status 200 }
    http-response del-header X-Server if { res.hdr(x-server) s1 }
    http-response add-header X-Status %[status]
    default_backend bk
backend bk
    server s1 127.0.0.1:{S1}
"""


def test_http_response_rules_and_tracking(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(RESPONSE_RULES, b, wd, haproxy_bin) as (h, e):
            out = []
            for p in (h, e):
                c = Client(p.port, "127.0.0.1")
                got = [c.request(path) for path in ("/", "/?status=404", "/?status=503")]
                c.close()
                out.append([(r.raw_head, r.body) for r in got])
            assert out[1] == out[0]
            import time
            time.sleep(0.1)
            assert mask_table(e.cli("show table t_res")) == mask_table(h.cli("show table t_res"))
    finally:
        b.kill()
