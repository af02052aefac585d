"""Health checks and persistence when a server dies (seed configuration 1, checks
sped up with `default-server inter 300ms rise 2 fall 2`), HAProxy 2.6 vs edgestick."""
import time

import pytest

from proxy_harness import (Backends, both, mask_table, one_request, rewrite_addresses,
                           seed_section, workdir)

pytestmark = pytest.mark.haproxy

HEAD = """
global
    stats socket {SOCK} mode 600 level admin
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    default-server inter 300ms rise 2 fall 2

frontend fe
    bind 127.0.0.1:{FE}
    default_backend app_servers

frontend fe_cookie
    bind 127.0.0.1:{FE2}
    default_backend app_servers_cookie
"""
ADDRS = {"10.0.1.10:8080": "127.0.0.1:{APP1}", "10.0.1.11:8080": "127.0.0.1:{APP2}",
         "10.0.1.12:8080": "127.0.0.1:{APP3}"}


class Group:
    """Backends in separate processes so one can be killed."""

    def __init__(self, *names):
        self.members = {n: Backends([n]) for n in names}
        self.ports = {n: b.ports[n] for n, b in self.members.items()}

    def start(self):
        for b in self.members.values():
            b.start()
        return self

    def kill_all(self):
        for b in self.members.values():
            b.kill()


def server_status(proxy, backend, server):
    for line in proxy.cli("show stat").decode().splitlines():
        f = line.split(",")
        if len(f) > 17 and f[0] == backend and f[1] == server:
            return f[17]
    return None


def wait_status(proxies, backend, server, wanted, timeout=6.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(server_status(p, backend, server) == wanted for p in proxies):
            return
        time.sleep(0.05)
    raise AssertionError([server_status(p, backend, server) for p in proxies])


@pytest.fixture(scope="module")
def setup(haproxy_bin):
    group = Group("app1", "app2", "app3").start()
    template = HEAD + rewrite_addresses(seed_section(1) + seed_section(2), ADDRS)
    try:
        with workdir() as wd, both(template, group, wd, haproxy_bin, 2) as pair:
            yield group, pair
    finally:
        group.kill_all()


def test_killed_server_goes_down_and_persistence_moves(setup):
    pytest.importorskip("edgestick.proxy.runtime_api")
    group, (h, e) = setup
    for p in (h, e):
        assert [one_request(p.port, "/", f"127.0.0.{i}").server for i in (1, 2, 3)] == \
            ["app1", "app2", "app3"]
    wait_status((h, e), "app_servers", "app1", "UP")
    group.members["app1"].kill()
    wait_status((h, e), "app_servers", "app1", "DOWN")
    wait_status((h, e), "app_servers_cookie", "app1", "DOWN")
    moved = []
    for p in (h, e):
        moved.append([one_request(p.port, "/", "127.0.0.1").server for _ in range(3)])
    assert moved[1] == moved[0]
    assert len(set(moved[1])) == 1 and moved[1][0] != "app1"
    key = "show table app_servers key 127.0.0.1"
    assert mask_table(e.cli(key)) == mask_table(h.cli(key))
    # the cookie backend: a cookie naming the dead server is ignored, a new one is set
    r = [one_request(p.ports[1], "/", headers=[("Cookie", "SERVERID=s1")]) for p in (h, e)]
    assert r[1].normalised() == r[0].normalised()
    assert r[1].header("set-cookie") == "SERVERID=s2; path=/"
    group.members["app1"].start()
    wait_status((h, e), "app_servers", "app1", "UP")
    wait_status((h, e), "app_servers_cookie", "app1", "UP")
    back = [one_request(p.port, "/", "127.0.0.1").server for p in (h, e)]
    assert back[1] == back[0] == moved[0][0]       # the client stays on its new server
