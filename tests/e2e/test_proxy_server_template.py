"""`server-template` compared with HAProxy 2.6: the servers it makes (names, ids, weights,
states in `show stat`), the balancing over them, their health checks, and `-c`
verdicts."""
import subprocess
import sys
import time

import pytest

from proxy_harness import Backends, both, free_ports, one_request, workdir

pytestmark = pytest.mark.haproxy

CONFIG = """
global
    stats socket {SOCK} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    http-response set-header X-Srv "%[srv_name] %[srv_id]"
    use_backend dead if { path /dead }
    default_backend bk

backend bk
    balance roundrobin
    default-server inter 200ms
    server a 127.0.0.1:{S1}
    server-template web 2-4 127.0.0.1:{S1} weight 2 check
    server-template x 2 localhost:{S1} id 10
    server-template z 0-1 127.0.0.1:{S1} backup
    server b 127.0.0.1:{S1} weight 3

backend dead
    server-template d 3 127.0.0.1:{DEAD} check inter 200ms fall 1
"""

COLS = ["status", "weight", "sid", "bck", "act", "chkfail", "lbtot"]


def _rows(proxy):
    lines = proxy.cli("show stat").decode().splitlines()
    head = lines[0][2:].split(",")
    out = []
    for line in lines[1:]:
        f = line.split(",")
        if len(f) > 2 and f[0] in ("bk", "dead"):
            out.append((f[0], f[1], {c: f[head.index(c)] for c in COLS}))
    return out


def test_servers_balancing_and_checks_as_haproxy(haproxy_bin):
    be = Backends(["s1"]).start()
    be.ports["dead"] = free_ports(1)[0]      # (after start: nothing listens there)
    try:
        with workdir() as tmp, both(CONFIG, be, tmp, haproxy_bin) as (h, e):
            time.sleep(1.0)          # the checks settle (fall 1, inter 200ms)
            seq = {}
            for p in (h, e):
                seq[p.kind] = [one_request(p.port, "/").header("x-srv") for _ in range(14)]
                seq[p.kind + "/dead"] = one_request(p.port, "/dead").status
            assert seq["edgestick"] == seq["haproxy"]
            assert "web3 3" in seq["haproxy"] and "x1 10" in seq["haproxy"]
            assert seq["edgestick/dead"] == seq["haproxy/dead"] == 503
            assert _rows(e) == _rows(h)
            names = [r[1] for r in _rows(h)]
            assert names[:9] == ["a", "web2", "web3", "web4", "x1", "x2", "z0", "z1", "b"]
    finally:
        be.kill()


BASE = """defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:1
    default_backend bk
backend bk
    {line}
"""

CHECKS = [
    ("server-template s 3 127.0.0.1:80", True, ""),
    ("server-template s 2-4 127.0.0.1:80 check weight 5 cookie c", True, ""),
    ("server-template s 3 localhost:80", True, ""),
    ("server-template s 3 [::1]:80 id 5", True, ""),
    ("server-template s 3 127.0.0.1", True, ""),
    ("server-template s 0-2 127.0.0.1:80", True, ""),
    ("server-template s 2 127.0.0.1:80 id 2\n    server t 127.0.0.1:80 id 1", True, ""),
    ("server-template s 4-2 127.0.0.1:80", False,
     "Wrong server-template number or range arg '4-2'."),
    ("server-template s 0 127.0.0.1:80", False, "Wrong server-template number or range arg"),
    ("server-template s x 127.0.0.1:80", False, "Wrong server-template number or range arg"),
    ("server-template s -3 127.0.0.1:80", False, "Wrong server-template number or range arg"),
    ("server-template s 3", False, "'server-template' expects <prefix> <nb | range> "
     "<addr>[:<port>] as arguments."),
    ("server-template s 3 nosuchhost.invalid:80", False, "could not resolve address "
     "'nosuchhost.invalid'"),
    ("server-template s 3 127.0.0.1:80 frob", False, "unknown keyword 'frob'."),
    ("server-template s 3 127.0.0.1:80 weight 300", False, "is not within 0 and 256"),
    ("server-template s 2 127.0.0.1:80\n    server s1 127.0.0.1:81", False,
     "another server named 's1' was already defined"),
    ("server s2 127.0.0.1:81\n    server-template s 2 127.0.0.1:80", False,
     "another server named 's2' was already defined"),
]


@pytest.mark.parametrize("line,ok,message", CHECKS, ids=[c[0].split("\n")[0] for c in CHECKS])
def test_config_check_as_haproxy(haproxy_bin, line, ok, message):
    with workdir() as d:
        cfg = d / "t.cfg"
        cfg.write_text(BASE.replace("{line}", line))
        for argv in ([haproxy_bin, "-c", "-f", str(cfg)],
                     [sys.executable, "-m", "edgestick", "proxy", "-c", "-f", str(cfg)]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            out = r.stdout + r.stderr
            assert (r.returncode == 0) == ok, (argv[0], out)
            if not ok:
                assert message in out, (argv[0], out)
