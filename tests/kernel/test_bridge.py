"""Mirror and escalation in the lab, end to end: the shield daemon (XDP on the edge's
outside interface) with `mirror` and `escalate` lines, in front of a real proxy on the
edge, with the lab's backend behind it.

* mirror: a source flooding SYNs shows its XDP counters in the proxy's `show table`
  (it never made an HTTP request: it is there because it is over half a threshold), and
  a client that did make requests shows its packet rate beside its HTTP counters;
* escalation: a client whose logins fail (401: http_err_rate climbs in the proxy's table)
  is banned at XDP; its next packets are dropped, counted under reason "ban"; another
  client is unaffected.

Run against a real HAProxy 2.6 (mirrored values in gpt0/gpc0_rate/gpc1) and against
`edgestick run` (native xdp_* data types, one configuration for proxy and shield)."""
import contextlib
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from edgestick.control.runtime_client import RuntimeClient, show_table
from edgestick.lab import Lab, traffic
from edgestick.lab.scenarios import in_netns

EDGESTICK = [sys.executable, "-m", "edgestick"]
FLOODER = "198.18.64.9"          # spoofed: the edge has no route back to it
CONN_LIMIT = 100

PROXY_SECTIONS = """\
global
    stats socket {tmp}/proxy.sock mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend http_front
    bind {edge}:80
    stick-table type ip size 10k expire 60s store http_req_rate(10s),http_err_rate(10s),{store}
    http-request track-sc0 src
    default_backend app
backend app
    server s1 {backend}:8080
"""
SHIELD_SECTION = """\
shield edge
    interface {ifname} mode native
    table type ip size 4k expire 60s store conn_rate(1s),pkt_rate(1s),byte_rate(1s)
    drop if {{ conn_rate gt {limit} }}
    pin-dir {pin_dir}/shield
    stats socket {tmp}/shield.sock mode 600 level admin
    mirror http_front{mirror_store}
    escalate http_front ban 1m if {{ http_err_rate gt 20 }}
{extra}"""

VARIANTS = {
    # proxy kind: (data types stored in the proxy table, mirror store clause, fetched names)
    "haproxy": ("gpt0,gpc0_rate(1s),gpc1", " store gpt0=xdp_conn_rate,gpc0_rate=xdp_pkt_rate,gpc1=xdp_drops",
                {"conn": "gpt0", "pkt": "gpc0_rate", "drops": "gpc1"}),
    "edgestick": ("xdp_conn_rate,xdp_pkt_rate,xdp_byte_rate,xdp_drops", "",
                  {"conn": "xdp_conn_rate", "pkt": "xdp_pkt_rate", "drops": "xdp_drops"}),
}


def wait_for(pred, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out waiting for {what}")


def http(lab, host: str, path: str, count: int = 1, timeout: float = 2.0) -> list[int]:
    """Statuses of `count` keep-alive requests from `host` to the edge (0: no answer)."""
    with in_netns(lab.ns(host)):
        sock = socket.socket()
    statuses = []
    try:
        sock.settimeout(timeout)
        sock.connect((lab.addr4("edge"), 80))
        buf = b""
        for _ in range(count):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n".encode())
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
            while len(buf) < length:
                buf += sock.recv(65536)
            buf = buf[length:]
            statuses.append(int(head.split()[1]))
    except OSError:
        statuses += [0] * (count - len(statuses))
    finally:
        sock.close()
    return statuses


def shield_command(tmp, line: str) -> str:
    return RuntimeClient(str(tmp / "shield.sock"), timeout=5).command(line)


def drops_by(reply: str, reason: str) -> int:
    m = re.search(rf"^counter: drop reason={reason} packets=(\d+) ", reply, re.M)
    return int(m.group(1)) if m else 0


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def edge(request, tmp_path_factory, haproxy_bin):
    """A lab with the backend, the proxy and the shield running on the edge."""
    kind = request.param
    store, mirror_store, fields = VARIANTS[kind]
    tmp = tmp_path_factory.mktemp(f"bridge-{kind}")
    lab = Lab.create()
    try:
        lab.popen("backend", [sys.executable, "-m", "edgestick.lab.backend", "--bind",
                              f"{lab.addr4('backend')}:8080"], stdout=subprocess.DEVNULL)
        proxy_cfg = PROXY_SECTIONS.format(tmp=tmp, edge=lab.addr4("edge"), backend=lab.addr4("backend"),
                                          store=store)
        log = open(tmp / "edge.log", "wb")
        if kind == "haproxy":     # two files: HAProxy does not read `shield` sections
            shield_cfg = SHIELD_SECTION.format(ifname=lab.edge_if, limit=CONN_LIMIT, pin_dir=lab.pin_dir,
                                               tmp=tmp, mirror_store=mirror_store,
                                               extra=f"    proxy-socket {tmp}/proxy.sock\n")
            (tmp / "proxy.cfg").write_text(proxy_cfg)
            (tmp / "shield.cfg").write_text(shield_cfg)
            procs = [lab.popen("edge", [haproxy_bin, "-db", "-f", str(tmp / "proxy.cfg")], stdout=log, stderr=log),
                     lab.popen("edge", [*EDGESTICK, "shield", "-f", str(tmp / "shield.cfg")],
                               stdout=log, stderr=log)]
        else:                     # one file, one command; the shield finds the proxy's socket in global
            shield_cfg = SHIELD_SECTION.format(ifname=lab.edge_if, limit=CONN_LIMIT, pin_dir=lab.pin_dir,
                                               tmp=tmp, mirror_store=mirror_store, extra="")
            (tmp / "edge.cfg").write_text(proxy_cfg + "\n" + shield_cfg)
            procs = [lab.popen("edge", [*EDGESTICK, "run", "-f", str(tmp / "edge.cfg")], stdout=log, stderr=log)]

        def up():
            if any(p.poll() is not None for p in procs):
                pytest.fail(f"edge process exited: {(tmp / 'edge.log').read_text()}")
            with contextlib.suppress(OSError):
                return "attach=native" in shield_command(tmp, "show shield") and \
                    RuntimeClient(str(tmp / "proxy.sock"), timeout=2).command("show table").startswith("# table")
        wait_for(up, 60, "the proxy and the shield")
        wait_for(lambda: http(lab, "attacker", "/") == [200], 10, "the backend through the edge")
        yield lab, tmp, fields
    finally:
        lab.destroy()


def table(tmp) -> dict:
    return {e.key: e for e in show_table(RuntimeClient(str(tmp / "proxy.sock")), "http_front")}


def test_syn_flooder_and_client_show_xdp_counters_in_the_proxy_table(edge):
    lab, tmp, fields = edge
    assert http(lab, "client", "/", 5) == [200] * 5       # the client becomes a table member
    sock = traffic.packet_socket(lab.ns("attacker"), lab.ifname("attacker"))
    frames = traffic.build_frames("syn", [FLOODER] * 64, lab.addr4("edge"),
                                  lab.mac("attacker"), lab.mac("edge"))
    sent = []
    flood = threading.Thread(target=lambda: sent.append(
        traffic.send_frames(sock, frames, count=1200, duration=4.0, pps=400)))
    flood.start()
    try:
        def mirrored():
            row = table(tmp).get(FLOODER)
            return row if row is not None and row.get(fields["conn"]) > CONN_LIMIT \
                and row.get(fields["drops"]) > 0 else None
        row = wait_for(mirrored, 8, f"{FLOODER}'s XDP counters in show table")
    finally:
        flood.join()
        sock.close()
    assert sent[0].sent > 0
    # the flooder made no HTTP request: the HTTP counters are zero beside the XDP ones
    assert row.get("http_req_rate") == 0 and row.get(fields["pkt"]) >= row.get(fields["conn"])
    shield = shield_command(tmp, "show shield")
    assert drops_by(shield, "conn_rate") >= row.get(fields["drops"])
    # the client, a member through its HTTP requests, gets its packet rate mirrored
    def client_mirrored():          # it keeps browsing: its rates stay up while we look
        assert http(lab, "client", "/", 2) == [200] * 2
        row = table(tmp).get(lab.addr4("client"))
        return row if row is not None and row.get(fields["pkt"]) > 0 else None
    client = wait_for(client_mirrored, 8, "the client's packet rate in show table")
    assert client.get("http_req_rate") >= 5 and client.get(fields["drops"]) == 0


def test_client_with_failing_logins_is_banned_at_xdp_others_are_not(edge):
    lab, tmp, _ = edge
    client = lab.addr4("client")
    assert http(lab, "client", "/login", 30) == [401] * 30
    wait_for(lambda: f"key={client} " in shield_command(tmp, "show bans"), 8, f"a ban of {client}")
    assert re.search(rf"^key={re.escape(client)} exp=\d+ reason=escalate$", shield_command(tmp, "show bans"), re.M)
    before = drops_by(shield_command(tmp, "show shield"), "ban")
    assert http(lab, "client", "/", 1, timeout=1.5) == [0]          # its SYNs are dropped at XDP
    assert drops_by(shield_command(tmp, "show shield"), "ban") > before
    assert http(lab, "attacker", "/", 3) == [200] * 3                 # another source is unaffected
    log = (tmp / "edge.log").read_text()
    assert len(re.findall(rf"escalate: banned {re.escape(client)} at XDP", log)) == 1
