"""Tracking by keys other than `src`, in tables of every key type, on slots 0-2, with the
gpc/gpt arrays, compared with HAProxy 2.6: the same configuration and traffic on both,
then the statuses and every table's `show table` must be the same."""
import pytest

from proxy_harness import Client, Backends, both, mask_table, workdir

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
    http-request track-sc0 hdr(host) table by_host
    http-request track-sc1 url32+src table by_url_src
    http-request track-sc2 base32 table by_base
    http-request sc-inc-gpc(1,0) if { path_beg /mark }
    http-request sc-inc-gpc0(1) if { path_beg /mark }
    http-request sc-set-gpt(1,1) 42 if { path_beg /gpt }
    http-request deny deny_status 403 if { sc0_http_req_rate gt 8 }
    http-request deny deny_status 429 if { sc_get_gpc(1,0) gt 2 }
    http-request deny deny_status 410 if { sc_get_gpt(1,1) eq 42 } { path_beg /gptcheck }
    http-request deny deny_status 401 if { path_beg /tracked } { sc_tracked(2) } { sc_trackers(0) gt 0 }
    http-request track-sc0 src table by_v6 if { path_beg /never }
    default_backend app

backend app
    server s1 127.0.0.1:{S1}

backend by_host
    stick-table type string len 16 size 1k expire 10m store http_req_cnt,http_req_rate(10s),gpc(3),gpc_rate(3,10s),conn_cur

backend by_url_src
    stick-table type binary len 8 size 1k expire 10m store http_req_cnt,gpc0,gpt(2)

backend by_base
    stick-table type integer size 1k expire 10m store http_req_cnt,http_err_cnt

backend by_v6
    stick-table type ipv6 size 1k expire 10m store http_req_cnt
"""

TABLES = ("by_host", "by_url_src", "by_base", "by_v6")


def test_tracking_by_header_url_hash_and_base_hash(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(CONFIG, b, wd, haproxy_bin) as pair:
            seen = []
            for p in pair:
                run = []
                for host, src in (("a.example", "127.0.0.1"), ("b.example", "127.0.0.2"),
                                  ("A.Example", "127.0.0.3"), ("a.example:8080", "127.0.0.1")):
                    c = Client(p.port, src)
                    for path in ("/", "/tracked", "/x?q=1", "/mark", "/mark", "/gpt", "/gptcheck",
                                 "/mark", "/x?q=1", "/?status=404", "/mark", "/"):
                        c.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                        r = c.read_response()
                        run.append((host, path, r.status if r is not None else None))
                    c.close()
                seen.append(run)
            assert seen[1] == seen[0]
            assert {429, 403, 410, 401} <= {st for _, _, st in seen[0]}     # every rule fires somewhere
            for t in TABLES:
                assert mask_table(pair[1].cli(f"show table {t}")) == \
                    mask_table(pair[0].cli(f"show table {t}")), t
    finally:
        b.kill()
