"""http-request set-map / del-map (a blocklist a rule fills, read by the same request's
map converter and by the runtime API) compared with HAProxy 2.6."""
import re

import pytest

from proxy_harness import Backends, both, one_request, workdir

pytestmark = pytest.mark.haproxy

TEMPLATE = """
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
    http-request set-map({MAP}) %[req.hdr(k)] %[req.hdr(v)] if { path /set }
    http-request del-map({MAP}) %[req.hdr(k)] if { path /del }
    http-request set-map({NEW}) %[req.hdr(k)] x if { path /new }
    http-request return status 200 content-type text/plain lf-string "v=%[req.hdr(k),map({MAP},none)]\\n"
"""

STEPS = [("/get", [("k", "198.18.0.1")]), ("/set", [("k", "198.18.0.1"), ("v", "new")]),
         ("/set", [("k", "a"), ("v", "one")]), ("/set", [("k", "a"), ("v", "two")]),
         ("/del", [("k", "a")]), ("/get", [("k", "a")]), ("/set", [("k", "a"), ("v", "")]),
         ("/new", [("k", "b")])]


def _map(proxy, path) -> list[str]:
    """show map lines without their entry pointers (they differ by design)."""
    return [re.sub(r"^0x[0-9a-f]+ ", "", line)
            for line in proxy.cli(f"show map {path}").decode().splitlines()]


def test_set_map_and_del_map_as_haproxy(haproxy_bin):
    b = Backends([])
    with workdir() as wd:
        (wd / "bl.map").write_text("198.18.0.1 old\n")
        template = TEMPLATE.replace("{MAP}", str(wd / "bl.map")).replace(
            "{NEW}", str(wd / "absent.map"))
        with both(template, b, wd, haproxy_bin) as (h, e):
            for path, headers in STEPS:
                rh, re_ = one_request(h.port, path, headers=headers), one_request(
                    e.port, path, headers=headers)
                assert (re_.status, re_.body) == (rh.status, rh.body), path
                assert _map(e, wd / "bl.map") == _map(h, wd / "bl.map"), path
            assert _map(h, wd / "bl.map") == ["198.18.0.1 new", "a ", ""]
            # a file no map converter reads: a reference all the same, which `show map`
            # does not list
            assert _map(e, wd / "absent.map") == _map(h, wd / "absent.map") == [
                "Unknown map identifier. Please use #<id> or <file>.", ""]
