"""`stick match` / `store-request` / `store-response`, `http-request allow` and the
src_*_gpc* / gpt fetches, compared with HAProxy 2.6: the same configuration, backends and
traffic on both; the servers chosen, the statuses and the `show table` dumps must be the
same."""
import pytest

from proxy_harness import Backends, Client, both, mask_table, one_request, workdir

pytestmark = pytest.mark.haproxy

CONFIG = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend fe
    bind 127.0.0.1:{FE}
    stick-table type ip size 1k expire 10m store gpc0,gpt0,http_req_cnt
    http-request allow if { path_beg /free }
    http-request track-sc0 src
    http-request deny deny_status 404 if { path_beg /clr } { src_clr_gpc0 ge 0 } !{ always_true }
    http-request deny deny_status 429 if { src_get_gpc0 gt 2 }
    http-request deny deny_status 403 if { path_beg /inc } { src_inc_gpc0 gt 100 }
    http-request sc-set-gpt0(0) 7 if { path_beg /flag }
    http-request deny deny_status 410 if { sc_get_gpt0(0) eq 7 } { path_beg /flagged }
    use_backend by_user if { path_beg /user }
    use_backend by_cookie if { path_beg /cookie }
    default_backend by_src

backend by_user
    balance roundrobin
    stick-table type string len 32 size 1k expire 10m
    stick match url_param(user)
    stick store-request url_param(user)
    server a 127.0.0.1:{A}
    server b 127.0.0.1:{B}
    server c 127.0.0.1:{C}

backend by_cookie
    balance roundrobin
    stick-table type string len 32 size 1k expire 10m
    stick store-response res.cook(sid)
    stick match req.cook(sid)
    server a 127.0.0.1:{A}
    server b 127.0.0.1:{B}
    server c 127.0.0.1:{C}

backend by_src
    balance roundrobin
    stick-table type ip size 1k expire 10m
    stick on src
    server a 127.0.0.1:{A}
    server b 127.0.0.1:{B}
    server c 127.0.0.1:{C}
"""

TABLES = ("fe", "by_user", "by_cookie", "by_src")


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["a", "b", "c"]).start()
    try:
        with workdir() as wd, both(CONFIG, b, wd, haproxy_bin) as p:
            yield p
    finally:
        b.kill()


def _same_tables(h, e):
    for t in TABLES:
        assert mask_table(e.cli(f"show table {t}")) == mask_table(h.cli(f"show table {t}")), t


def test_stick_match_and_store_request_keep_a_user_on_a_server(pair):
    seen = []
    for p in pair:
        run = []
        for user in ("alice", "bob", "carol", "dave", "alice", "bob", "alice", "carol"):
            r = one_request(p.port, f"/user/x?user={user}", "127.0.0.1")
            run.append((user, r.status, r.server))
        run.append(("none", *(lambda r: (r.status, r.server))(one_request(p.port, "/user/y"))))
        seen.append(run)
    assert seen[1] == seen[0]
    first = {u: s for u, _, s in seen[0][:4]}
    assert all(s == first[u] for u, _, s in seen[0][4:8])     # the stickiness is real
    _same_tables(*pair)


def test_stick_store_response_learns_the_server_of_a_response_cookie(pair):
    seen = []
    for p in pair:
        run = []
        for sid in ("s1", "s2", "s3", "s4"):
            r = one_request(p.port, f"/cookie/login?setcookie=sid%3D{sid}", "127.0.0.2")
            run.append(("login", sid, r.status, r.server))
        for sid in ("s3", "s1", "s4", "s2", "s1"):
            r = one_request(p.port, "/cookie/page", "127.0.0.2", headers=[("Cookie", f"sid={sid}")])
            run.append(("page", sid, r.status, r.server))
        seen.append(run)
    assert seen[1] == seen[0]
    logged = {sid: s for _, sid, _, s in seen[0][:4]}
    assert all(s == logged[sid] for _, sid, _, s in seen[0][4:])
    _same_tables(*pair)


def test_stick_on_src_keeps_each_source_on_its_server(pair):
    seen = []
    for p in pair:
        run = []
        for i in (1, 2, 3, 4, 1, 2, 3, 4):
            run.append(one_request(p.port, "/src", f"127.0.0.{10 + i}").server)
        c = Client(p.port, "127.0.0.11")
        run += [c.request("/src").server for _ in range(3)]
        c.close()
        seen.append(run)
    assert seen[1] == seen[0]
    _same_tables(*pair)


def test_allow_gpc_and_gpt_fetches_and_actions(pair):
    seen = []
    for p in pair:
        c = Client(p.port, "127.0.0.30")
        run = [c.request(path).status for path in
               ("/free", "/inc", "/inc", "/x", "/inc", "/x", "/free", "/clr", "/x",
                "/flagged", "/flag", "/flagged", "/free")]
        c.close()
        seen.append(run)
    assert seen[1] == seen[0]
    assert 429 in seen[0] and 410 in seen[0]        # the rules do fire
    _same_tables(*pair)
