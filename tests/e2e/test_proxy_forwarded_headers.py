"""`option forwardfor` (with `except`, `header`) and `option originalto` (with `except`,
`header`) in frontends and backends, compared with HAProxy 2.6: which header the server
gets, under which name, and when the client's address is in an `except` network none."""
import subprocess
import sys

import pytest

from proxy_harness import Backends, both, one_request, workdir

pytestmark = pytest.mark.haproxy

TEMPLATE = """
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe_except
    bind 127.0.0.1:{FE}
    option forwardfor except 127.0.0.0/8
    option originalto
    default_backend bk

frontend fe_named
    bind 127.0.0.1:{FE2}
    option forwardfor header X-Client
    option originalto except 127.0.0.2 header X-Dst
    default_backend bk

frontend fe_plain
    bind 127.0.0.1:{FE3}
    option forwardfor header X-Front
    default_backend bk_options

backend bk
    server s 127.0.0.1:{S1}

backend bk_options
    option originalto
    option forwardfor except 10.0.0.0/8 header X-Back
    server s 127.0.0.1:{S1}
"""

NAMES = ("x-forwarded-for", "x-client", "x-original-to", "x-dst", "x-front", "x-back")


def _seen(port: int) -> dict:
    """The forwarding headers the echo server received."""
    r = one_request(port, "/")
    lines = r.body.decode().splitlines()
    return {n: [l.split(": ", 1)[1] for l in lines if l.lower().startswith(n + ": ")]
            for n in NAMES}


def test_forwarding_headers_as_haproxy(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(TEMPLATE, b, wd, haproxy_bin, 3) as (h, e):
            for i in range(3):
                assert _seen(e.ports[i]) == _seen(h.ports[i]), i
            assert _seen(e.ports[0])["x-original-to"] == ["127.0.0.1"]
            assert _seen(e.ports[0])["x-forwarded-for"] == []       # in the except network
            assert _seen(e.ports[2])["x-back"] == ["127.0.0.1"]      # the backend's name
    finally:
        b.kill()


@pytest.mark.parametrize("option,message", [
    ("originalto except", "'option originalto except' expects <address>[/mask] as argument."),
    ("originalto header", "'option originalto header' expects <header_name> as argument."),
    ("originalto frob", "'option originalto' only supports optional values: 'except' and "
                        "'header'."),
])
def test_originalto_errors_as_haproxy(haproxy_bin, option, message):
    with workdir() as d:
        cfg = d / "o.cfg"
        cfg.write_text("defaults\n    mode http\n    timeout client 1s\n    timeout server 1s\n"
                       f"    timeout connect 1s\nbackend b\n    option {option}\n")
        for argv in ([haproxy_bin, "-c", "-f", str(cfg)],
                     [sys.executable, "-m", "edgestick", "proxy", "-c", "-f", str(cfg)]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert r.returncode == 1 and message in r.stdout + r.stderr, (argv[0], r.stdout
                                                                           + r.stderr)
