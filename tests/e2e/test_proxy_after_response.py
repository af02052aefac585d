"""http-after-response (and http-response set-status) compared with HAProxy 2.6 byte for
byte: rules on every response, the ones made by the proxy included (deny pages, return,
redirects, 503), the backend's before the frontend's, set-status with and without a
reason; request headers are gone by then (a condition on `path` never matches, a
log-format naming it is refused); `-c` messages."""
import subprocess
import sys

import pytest

from proxy_harness import Backends, both, exchange_and_state, workdir

pytestmark = pytest.mark.haproxy

TEMPLATE = """
global
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{FE}
    http-request deny if { path /deny }
    http-request return status 200 content-type text/plain string "hi" if { path /ret }
    http-request redirect location /elsewhere if { path /redir }
    http-response set-status 202 if { status 204 }
    http-after-response set-header X-Served-By edgeproxy
    http-after-response add-header X-Status %[status]
    http-after-response del-header content-type if { status 403 }
    http-after-response set-status 418 reason "Teapot here" if { status 302 }
    http-after-response set-status 503 if { path /ret }
    http-after-response replace-value x-list (a),(b) \\2,\\1
    http-response set-header x-frontend-response yes
    http-after-response set-var(txn.seen) str(yes)
    http-after-response set-header X-Seen %[var(txn.seen)]
    use_backend bk if { path_beg /fwd }
    default_backend empty

backend bk
    http-response add-header x-list a,b
    http-response allow if { res.hdr(x-list) -m found }
    http-response set-header x-never here
    http-after-response set-header X-Backend bk
    http-after-response set-status 299 if { res.hdr(x-list) -m found }
    http-after-response allow if { status 299 }
    http-after-response set-header X-Not-Here yes
    server s1 127.0.0.1:{S1}

backend empty
"""

PATHS = ["/deny", "/ret", "/redir", "/fwd/x", "/none"]


@pytest.fixture(scope="module")
def pair(haproxy_bin):
    b = Backends(["s1"]).start()
    try:
        with workdir() as wd, both(TEMPLATE, b, wd, haproxy_bin) as p:
            yield p
    finally:
        b.kill()


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "close"])
@pytest.mark.parametrize("path", PATHS)
def test_after_response_rules_as_haproxy(pair, path, close):
    h, e = pair
    got_h, got_e = exchange_and_state(h.port, path, close), exchange_and_state(e.port, path, close)
    if path.startswith("/fwd"):      # the echo server's body names the proxy's port: heads
        got_h, got_e = got_h.split(b"\r\n\r\n")[0], got_e.split(b"\r\n\r\n")[0]
    assert got_e == got_h
    assert b"x-served-by: edgeproxy" in got_e


CONFIG_ERRORS = [
    ("http-after-response deny", "'http-after-response' expects 'ot-group', 'add-header', "
     "'allow', 'capture', 'del-header', 'replace-header', 'replace-value', 'set-header', "
     "'set-status', 'strict-mode', 'set-var-fmt(*)', 'set-var(*)', 'unset-var(*)', but got "
     "'deny'."),
    ("http-after-response set-status abc", "expects an integer status code between 100 "
     "and 999."),
    ("http-response set-status 99", "expects an integer status code between 100 and 999."),
    ("http-response set-header X %[path]", "sample fetch <path]> may not be reliably used "
     "here because it needs 'HTTP request headers' which is not available here."),
    ("http-after-response set-header X %[req.hdr(host)]", "needs 'HTTP request headers'"),
]


@pytest.mark.parametrize("rule,message", CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_config_errors_as_haproxy(haproxy_bin, rule, message):
    with workdir() as d:
        cfg = d / "a.cfg"
        cfg.write_text("defaults\n    mode http\n    timeout client 1s\n    timeout server 1s\n"
                       f"    timeout connect 1s\nfrontend f\n    bind 127.0.0.1:1\n    {rule}\n")
        for argv in ([haproxy_bin, "-c", "-f", str(cfg)],
                     [sys.executable, "-m", "edgestick", "proxy", "-c", "-f", str(cfg)]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert r.returncode == 1, (argv[0], r.stdout + r.stderr)
            assert message in r.stdout + r.stderr, (argv[0], r.stdout + r.stderr)
