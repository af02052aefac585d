"""Mirror and escalation against a real HAProxy 2.6 (control/bridge.py through its stats
socket), plus the runtime client and `edgestick ctl` on the same socket.

The ban side of escalation needs a shield and therefore root: it is proven in
tests/kernel/test_bridge.py. Here the mirror is fed counters as the shield would give
them; the kernel tier feeds it from a real XDP map."""
import subprocess
import sys

import time

import pytest

from edgestick.control import config
from edgestick.control.bridge import Bridge, SourceCounters
from edgestick.control.runtime_client import RuntimeClient, parse_table_dump, show_table
from proxy_harness import Backends, requests, start_proxy, wait_socket

# The application server is an HAProxy listener answering 404 on /login: a 404 from a
# server counts in http_err_rate (an `http-request return` in the frontend itself would not).
TEMPLATE = """\
global
    stats socket {SOCK} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend http_front
    bind 127.0.0.1:{FE}
    stick-table type ip size 10k expire 60s store http_req_rate(10s),http_err_rate(10s),gpt0,gpc0_rate(10s),gpc1
    http-request track-sc0 src
    http-request deny deny_status 403 if { sc_get_gpt0(0) gt 50 }
    default_backend app
backend app
    server s1 127.0.0.1:{FE2}
backend v6_front
    stick-table type ipv6 size 1k expire 60s store gpt0,gpc1
listen app_server
    bind 127.0.0.1:{FE2}
    http-request return status 404 if { path_beg /login }
    http-request return status 200
"""


@pytest.fixture
def haproxy(tmp_path, haproxy_bin):
    proxy = start_proxy("haproxy", TEMPLATE, Backends([]), tmp_path, n_frontends=2, haproxy_bin=haproxy_bin)
    try:
        wait_socket(proxy.sock)
        yield proxy
    finally:
        proxy.stop()


def shield_config(sock: str, text: str) -> config.ShieldConfig:
    cfg = config.parse_text("shield edge\n    interface veth0\n" + text, "edge.cfg")[0]
    cfg.proxy_socket = sock
    return cfg



def test_escalation_query_finds_the_sources_producing_4xx(haproxy):
    assert requests(haproxy.port, "127.0.0.2", "/login", 25) == [404] * 25      # credential stuffing
    assert requests(haproxy.port, "127.0.0.3", "/login", 5) == [404] * 5
    assert requests(haproxy.port, "127.0.0.3", "/", 20) == [200] * 20
    assert requests(haproxy.port, "127.0.0.4", "/", 30) == [200] * 30
    cfg = shield_config(haproxy.sock, "    escalate http_front ban 10m if { http_err_rate gt 20 }\n")
    bridge = Bridge(cfg, None)
    assert bridge.find_abusers(cfg.escalations[0]) == [("127.0.0.2", 25)]
    # the same question at a lower limit (any show-table operator) lists both 4xx sources,
    # never the clean one
    low = config.Escalate("http_front", 600_000, config.Condition("http_err_rate", 5, "ge"))
    assert sorted(bridge.find_abusers(low)) == [("127.0.0.2", 25), ("127.0.0.3", 5)]


def test_escalation_reports_a_missing_table_once_and_goes_on(haproxy, caplog):
    cfg = shield_config(haproxy.sock, "    escalate nosuch ban 1m if { http_err_rate gt 1 }\n")
    bridge = Bridge(cfg, None)
    for _ in range(2):
        report = bridge.cycle()
        assert report.errors == ["show table nosuch: No such table"] and report.banned == []
    assert sum("No such table" in r.message for r in caplog.records) == 1


def test_mirror_writes_the_configured_slots_and_haproxy_acls_use_them(haproxy):
    assert requests(haproxy.port, "127.0.0.4", "/", 3) == [200] * 3
    cfg = shield_config(haproxy.sock,
                        "    mirror http_front store gpt0=xdp_conn_rate,gpc0_rate=xdp_pkt_rate,gpc1=xdp_drops\n")
    bridge = Bridge(cfg, None)
    flooder = SourceCounters("198.18.0.66", conn_rate=900, pkt_rate=5000, byte_rate=300000, drops=1234)
    client = SourceCounters("127.0.0.4", conn_rate=80, pkt_rate=300, byte_rate=24000, drops=0)
    report = bridge.mirror_sources([client, flooder])
    assert (report.written, report.new, report.errors) == (2, 1, [])

    rows = {e.key: e for e in show_table(RuntimeClient(haproxy.sock), "http_front")}
    assert rows["127.0.0.4"].data == {"http_req_rate(10000)": 3, "http_err_rate(10000)": 0, "gpt0": 80,
                                      "gpc0_rate(10000)": 300, "gpc1": 0}
    assert rows["198.18.0.66"].data == {"http_req_rate(10000)": 0, "http_err_rate(10000)": 0, "gpt0": 900,
                                        "gpc0_rate(10000)": 5000, "gpc1": 1234}
    # HAProxy's own rule reads the mirrored value: conn rate 80 > 50 -> 403
    assert requests(haproxy.port, "127.0.0.4", "/", 1) == [403]

    # unchanged counters are not written again (and this sweep of the map ends here)
    assert bridge.mirror_sources([client, flooder], sweep_done=True).written == 0
    # a sweep that no longer sees them zeroes the mirrored slots once, HTTP counters untouched
    assert bridge.mirror_sources([], sweep_done=True).written == 2
    rows = {e.key: e for e in show_table(RuntimeClient(haproxy.sock), "http_front")}
    assert (rows["127.0.0.4"].get("gpt0"), rows["127.0.0.4"].get("gpc1")) == (0, 0)
    assert rows["127.0.0.4"].get("http_req_rate") == 4
    assert bridge.mirror_sources([], sweep_done=True).written == 0
    assert requests(haproxy.port, "127.0.0.4", "/", 1) == [200]


def test_mirror_refusal_is_reported_with_haproxys_words(haproxy):
    cfg = shield_config(haproxy.sock, "    mirror http_front store gpc0=xdp_drops\n")
    report = Bridge(cfg, None).mirror_sources([SourceCounters("127.0.0.9", 0, 0, 0, 5)])
    assert report.errors == ["mirror: 'set table http_front key 127.0.0.9 data.gpc0 5': "
                             "Data type not stored in this table"]


def test_pipelined_session_keeps_replies_in_order(haproxy):
    client = RuntimeClient(haproxy.sock)
    commands = [f"set table http_front key 10.1.{i // 250}.{i % 250} data.gpt0 {i}" for i in range(600)]
    commands.insert(300, "set table http_front key 10.9.9.9 data.nosuch 1")
    with client.session() as s:
        replies = s.pipeline(commands)
        dump = s.command("show table http_front data.gpt0 ge 598")
    assert replies[300] == "Unknown data type\n\n"          # as in non-interactive mode
    assert all(r == "\n" for i, r in enumerate(replies) if i != 300)
    headers, entries = parse_table_dump(dump)
    assert headers[0].used == 601 and sorted(e.key for e in entries) == ["10.1.2.98", "10.1.2.99"]


def test_ctl_prints_replies_verbatim_and_fails_on_transport_errors(haproxy, tmp_path):
    ctl = [sys.executable, "-m", "edgestick", "ctl", "-S", haproxy.sock]
    RuntimeClient(haproxy.sock).command("set table http_front key 10.0.0.1 data.gpt0 7")
    expected = RuntimeClient(haproxy.sock).raw(b"show table http_front\n")
    out = subprocess.run(ctl + ["show", "table", "http_front"], capture_output=True, timeout=20)
    assert out.returncode == 0
    assert out.stdout.replace(b"exp=", b"").split()[:4] == expected.replace(b"exp=", b"").split()[:4]
    assert out.stdout.startswith(b"# table: http_front, type: ip, size:10240, used:1\n") and out.stdout.endswith(b"\n\n")
    out = subprocess.run(ctl, input=b"show table nosuch\nshow table http_front key 10.0.0.2\n",
                         capture_output=True, timeout=20)
    assert (out.returncode, out.stdout) == (0, b"No such table\n\n\n")
    out = subprocess.run([sys.executable, "-m", "edgestick", "ctl", "-S", str(tmp_path / "gone.sock"), "show", "info"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "cannot connect to" in out.stderr and out.stdout == ""


def test_ipv6_sources_are_mirrored_per_prefix(haproxy):
    """The shield counts IPv6 sources per /64: every proxy key in the prefix gets the
    prefix's counters; a hot prefix the proxy lacks is written at its network address."""
    cli = RuntimeClient(haproxy.sock)
    for key in ("fd00:18:1::5", "fd00:18:1::6", "fd00:18:9::1"):
        assert cli.command(f"set table v6_front key {key}") == "\n"
    cfg = shield_config(haproxy.sock, "    mirror v6_front store gpt0=xdp_conn_rate,gpc1=xdp_drops\n")
    report = Bridge(cfg, None).mirror_sources([SourceCounters("fd00:18:1::/64", 70, 300, 9000, 2),
                                               SourceCounters("fd00:18:2::/64", 800, 900, 1000, 5)])
    assert (report.written, report.new, report.errors) == (3, 1, [])
    rows = {e.key: (e.get("gpt0"), e.get("gpc1")) for e in show_table(cli, "v6_front")}
    assert rows == {"fd00:18:1::5": (70, 2), "fd00:18:1::6": (70, 2), "fd00:18:9::1": (0, 0),
                    "fd00:18:2::": (800, 5)}


def test_unreachable_proxy_pauses_the_bridge_with_one_log_line(tmp_path, haproxy_bin, caplog):
    sock = str(tmp_path / "haproxy.sock")           # where start_proxy will put it
    cfg = shield_config(sock, "    escalate http_front ban 10m if { http_err_rate gt 20 }\n")
    bridge = Bridge(cfg, None)
    for _ in range(3):
        report = bridge.cycle()
        assert len(report.errors) == 1 and "cannot connect to" in report.errors[0]
    proxy = start_proxy("haproxy", TEMPLATE, Backends([]), tmp_path, n_frontends=2, haproxy_bin=haproxy_bin)
    try:
        wait_socket(sock)
        assert bridge.cycle().errors == []
    finally:
        proxy.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("proxy runtime API unreachable") for m in messages) == 1
    assert sum(m.endswith(" is back") for m in messages) == 1


def test_ctl_on_a_terminal_keeps_one_prompt_session(haproxy):
    import os
    import pty
    import select
    pid, fd = pty.fork()
    if pid == 0:                                   # the child: edgestick ctl on the terminal
        os.execv(sys.executable, [sys.executable, "-m", "edgestick", "ctl", "-S", haproxy.sock])
    out = b""
    done = (0, 0)

    def read_until(marker: bytes, timeout: float = 10.0):
        nonlocal out
        deadline = time.monotonic() + timeout
        while marker not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    return
    try:
        read_until(b"> ")
        os.write(fd, b"set table http_front key 10.0.0.5 data.gpt0 9\n")
        os.write(fd, b"show table http_front data.gpt0 eq 9\n")
        read_until(b"key=10.0.0.5")
        os.write(fd, b"quit\n")
        deadline = time.monotonic() + 10
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = done[1]
    finally:
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"# table: http_front, type: ip, size:10240, used:1" in out and b"gpt0=9" in out
