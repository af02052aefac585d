"""`edgestick proxy` as a process: -c, reload (SIGUSR2 and the `reload` command) keeping
table contents, SIGTERM letting in-flight requests finish."""
import signal
import subprocess
import sys
import threading
import time

import pytest

from proxy_harness import Backends, Client, one_request, private_tmp, start_proxy

CONFIG = """
global
    stats socket {SOCK} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s

frontend fe
    bind 127.0.0.1:{FE}
    stick-table type ip size 1k expire 60s store http_req_cnt,http_req_rate(10s)
    http-request track-sc0 src
    http-request return status 200 content-type text/plain string "VERSION" if { path /version }
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt LIMIT }
    default_backend bk

backend bk
    server s1 127.0.0.1:{S1}
"""


@pytest.fixture
def backend():
    b = Backends(["s1"]).start()
    yield b
    b.kill()


def run_check(private_tmp, text):
    path = private_tmp / "check.cfg"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "edgestick", "proxy", "-c", "-f", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_check_mode(private_tmp):
    ok = run_check(private_tmp, CONFIG.replace("VERSION", "v1").replace("LIMIT", "5")
                   .replace("{SOCK}", "/tmp/x.sock").replace("{FE}", "1").replace("{S1}", "2"))
    assert ok.returncode == 0, ok.stderr
    assert "Configuration file is valid" in ok.stdout
    bad = run_check(private_tmp, "frontend fe\n    bind 127.0.0.1:1\n    bogus-keyword 1\n")
    assert bad.returncode == 1
    assert "check.cfg:3" in bad.stderr and "bogus-keyword" in bad.stderr


def _cli(proxy, cmd):
    pytest.importorskip("edgestick.proxy.runtime_api")
    return proxy.cli(cmd).decode()


def test_reload_keeps_tables_and_applies_new_rules(private_tmp, backend):
    p = start_proxy("edgestick", CONFIG.replace("VERSION", "v1").replace("LIMIT", "5"),
                    backend, private_tmp)
    try:
        c = Client(p.port, "127.0.0.7")
        assert [c.request("/").status for _ in range(3)] == [200, 200, 200]
        before = _cli(p, "show table fe")
        assert "http_req_cnt=3 " in before
        # new rules: version 2, limit 1 -> the same source is now over the limit
        text = open(p.cfg_path).read().replace('"v1"', '"v2"').replace("gt 5", "gt 1")
        open(p.cfg_path, "w").write(text)
        p.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 5
        while one_request(p.port, "/version").body != b"v2":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "http_req_cnt=3 " in _cli(p, "show table fe key 127.0.0.7")
        # new connections run the new rules on the same table (connections already
        # open finish on the old configuration, as with a HAProxy reload)
        assert one_request(p.port, "/", "127.0.0.7").status == 429
        c.close()
        # a broken configuration is refused, the running one stays
        open(p.cfg_path, "w").write(text + "\nfrontend broken\n    nonsense\n")
        reply = _cli(p, "reload")
        assert reply.startswith("Reload failed:") and "nonsense" in reply
        assert one_request(p.port, "/version").body == b"v2"
        open(p.cfg_path, "w").write(text.replace('"v2"', '"v3"'))
        assert _cli(p, "reload").startswith("Success=1")
        assert one_request(p.port, "/version").body == b"v3"
        assert "http_req_cnt=" in _cli(p, "show table fe key 127.0.0.7")
    finally:
        p.stop()


def test_sigterm_lets_inflight_requests_finish(private_tmp, backend):
    p = start_proxy("edgestick", CONFIG.replace("VERSION", "v1").replace("LIMIT", "100"),
                    backend, private_tmp)
    result = {}

    def slow():
        result["r"] = one_request(p.port, "/?sleep=0.8")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    p.proc.send_signal(signal.SIGTERM)
    t.join(5)
    assert result["r"].status == 200 and b"server=s1" in result["r"].body
    assert p.proc.wait(5) == 0
    with pytest.raises(OSError):
        one_request(p.port, "/")


def test_maxconn_holds_extra_connections_until_a_slot_frees(private_tmp, backend):
    text = CONFIG.replace("VERSION", "v1").replace("LIMIT", "1000").replace(
        "    bind 127.0.0.1:{FE}\n", "    bind 127.0.0.1:{FE}\n    maxconn 2\n")
    p = start_proxy("edgestick", text, backend, private_tmp)
    try:
        c1, c2 = Client(p.port), Client(p.port)
        assert c1.request("/").status == c2.request("/").status == 200
        c3 = Client(p.port, timeout=0.5)
        c3.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises(OSError):            # not served while two are open
            c3.read_response()
        c1.close()
        c3.sock.settimeout(3)
        assert c3.read_response().status == 200
        c2.close()
        c3.close()
    finally:
        p.stop()


def test_ipv6_and_wildcard_binds(private_tmp, backend):
    import socket as s
    text = CONFIG.replace("VERSION", "v1").replace("LIMIT", "1000").replace(
        "    bind 127.0.0.1:{FE}\n", "    bind :::{FE}\n")
    p = start_proxy("edgestick", text, backend, private_tmp)
    try:
        for family, host in ((s.AF_INET6, "::1"), (s.AF_INET, "127.0.0.1")):
            sock = s.socket(family, s.SOCK_STREAM)
            sock.settimeout(3)
            sock.connect((host, p.port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")
            sock.close()
    finally:
        p.stop()
