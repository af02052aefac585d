"""Fleet bans end to end: two edges (two labs, their edge namespaces joined by a veth
this test makes), each running `edgestick run` (the proxy and the shield) on one file
whose `peers fleet` section replicates `table bans ... store gpt0` between the two
proxies, and whose shield section says `share-bans fleet/bans`.

A ban made on edge A, by hand (`add ban` on its shield socket) and by escalation (a
source whose logins fail), becomes an XDP ban on edge B: B's XDP drops that source's
packets (counted with reason ban), B never writes it back, and expiry ends it on both
(the origin's TTL travels in gpt0; no edge ever renews the table entry).
Both labs use the same address plan, so lab B's client/attacker carry the very source
addresses banned on A.

A real HAProxy 2.6 is the third peer of the section (in edge A's namespace): it gets
the bans in its table (it relays nothing: HAProxy never pushes learned entries, which
is why every edge peers with every other)."""
import contextlib
import re
import secrets
import subprocess
import time
import sys

import pytest

from edgestick.control.runtime_client import RuntimeClient, show_table
from edgestick.lab import Lab

from test_bridge import drops_by, http, wait_for

EDGESTICK = [sys.executable, "-m", "edgestick"]
PEER_ADDR = {"A": "198.18.200.1", "B": "198.18.200.2"}   # the veth between the two edges
PEER_PORT = 10400
HAPROXY_PEER_PORT = 10401
TABLE_EXPIRE_S = 20         # the fleet's ban duration, here capped by each ban's own TTL (gpt0)
MANUAL_TTL_S = 6
ESCALATE_TTL_S = 5          # longer than http_err_rate's period: no re-escalation

PEERS = """\
peers fleet
    peer edgeA {peer_a}:{port}
    peer edgeB {peer_b}:{port}
    peer hap {peer_a}:{hap_port}
    table bans type ip size 10k expire {expire}s store gpt0
"""
CONFIG = """\
global
    stats socket {tmp}/proxy.sock mode 600 level admin
    localpeer edge{me}
""" + PEERS + """\
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend http_front
    bind {edge}:80
    stick-table type ip size 10k expire 60s store http_req_rate(10s),http_err_rate(2s)
    http-request track-sc0 src
    default_backend app
backend app
    server s1 {backend}:8080

shield edge
    interface {ifname} mode native
    table type ip size 4k expire 60s store conn_rate(1s),pkt_rate(1s),byte_rate(1s)
    pin-dir {pin_dir}/shield
    stats socket {tmp}/shield.sock mode 600 level admin
    escalate http_front ban {escalate_ttl}s if {{ http_err_rate gt 20 }}
    share-bans fleet/bans
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def shield(tmp, line: str) -> str:
    return RuntimeClient(str(tmp / "shield.sock"), timeout=5).command(line)


def fleet_table(tmp, sock: str = "proxy.sock") -> dict:
    return {e.key: e for e in show_table(RuntimeClient(str(tmp / sock), timeout=5), "fleet/bans")}


HAPROXY_CONFIG = """\
global
    stats socket {tmp}/haproxy.sock mode 600 level admin
""" + PEERS


@pytest.fixture(scope="module")
def edges(tmp_path_factory, haproxy_bin):
    labs = {}
    veth = "fl" + secrets.token_hex(3)
    try:
        for me in ("A", "B"):
            labs[me] = Lab.create()
        # the link between the two edges, peers traffic only
        _ip("link", "add", veth + "a", "type", "veth", "peer", "name", veth + "b")
        for me in ("A", "B"):
            end, ns = veth + me.lower(), labs[me].ns("edge")
            _ip("link", "set", end, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{PEER_ADDR[me]}/30", "dev", end)
            _ip("-n", ns, "link", "set", end, "up")
        out = {}
        ports = dict(peer_a=PEER_ADDR["A"], peer_b=PEER_ADDR["B"], port=PEER_PORT,
                     hap_port=HAPROXY_PEER_PORT, expire=TABLE_EXPIRE_S)
        for me, lab in labs.items():
            tmp = tmp_path_factory.mktemp(f"fleet-{me}")
            lab.popen("backend", [sys.executable, "-m", "edgestick.lab.backend", "--bind",
                                  f"{lab.addr4('backend')}:8080"], stdout=subprocess.DEVNULL)
            (tmp / "edge.cfg").write_text(CONFIG.format(
                tmp=tmp, me=me, edge=lab.addr4("edge"), backend=lab.addr4("backend"),
                ifname=lab.edge_if, pin_dir=lab.pin_dir, escalate_ttl=ESCALATE_TTL_S, **ports))
            log = open(tmp / "edge.log", "wb")
            proc = lab.popen("edge", [*EDGESTICK, "run", "-f", str(tmp / "edge.cfg")], stdout=log, stderr=log)
            out[me] = (lab, tmp, proc)
        hap_tmp = tmp_path_factory.mktemp("fleet-haproxy")
        (hap_tmp / "haproxy.cfg").write_text(HAPROXY_CONFIG.format(tmp=hap_tmp, **ports))
        hap_log = open(hap_tmp / "haproxy.log", "wb")
        hap = labs["A"].popen("edge", [haproxy_bin, "-db", "-f", str(hap_tmp / "haproxy.cfg"), "-L", "hap"],
                              stdout=hap_log, stderr=hap_log)
        for me, (lab, tmp, proc) in out.items():
            def up():
                if proc.poll() is not None:
                    pytest.fail(f"edge {me} exited: {(tmp / 'edge.log').read_text()}")
                with contextlib.suppress(OSError):
                    return "attach=native" in shield(tmp, "show shield") and \
                        "edgeA(" in RuntimeClient(str(tmp / "proxy.sock"), timeout=2).command("show peers")
            wait_for(up, 60, f"edge {me}'s proxy and shield")
        for me, (lab, tmp, _) in out.items():
            wait_for(lambda: "state=EST" in RuntimeClient(str(tmp / "proxy.sock")).command("show peers"),
                     10, f"edge {me}'s peers session")
        wait_for(lambda: hap.poll() is None and (hap_tmp / "haproxy.sock").exists(), 10, "HAProxy")
        out["haproxy"] = (labs["A"], hap_tmp, hap)
        yield out
    finally:
        for lab in labs.values():
            with contextlib.suppress(subprocess.SubprocessError):
                _ip("-n", lab.ns("edge"), "link", "del", veth + ("a" if lab is labs.get("A") else "b"))
            lab.destroy()


def banned(tmp, source: str) -> bool:
    return f"key={source} " in shield(tmp, "show bans")


def test_bans_made_on_edge_a_are_dropped_on_edge_b_until_they_expire(edges):
    lab_a, tmp_a, _ = edges["A"]
    lab_b, tmp_b, _ = edges["B"]
    _, tmp_hap, _ = edges["haproxy"]
    client, attacker = lab_a.addr4("client"), lab_a.addr4("attacker")
    assert http(lab_b, "client", "/") == [200] and http(lab_b, "attacker", "/") == [200]
    drops_before = drops_by(shield(tmp_b, "show shield"), "ban")

    # on A: the client banned by hand, the attacker by escalation (failing logins)
    t0 = time.time()
    assert shield(tmp_a, f"add ban {client} {MANUAL_TTL_S}s").strip() == ""
    assert http(lab_a, "attacker", "/login", 30) == [401] * 30
    wait_for(lambda: banned(tmp_a, attacker), 8, "the escalation on A")

    # both reach B's XDP through the replicated table
    wait_for(lambda: banned(tmp_b, client) and banned(tmp_b, attacker), 8, "the bans on B")
    bans_a, bans_b = shield(tmp_a, "show bans"), shield(tmp_b, "show bans")
    assert re.search(rf"^key={re.escape(client)} exp=\d+ reason=manual$", bans_a, re.M)
    assert re.search(rf"^key={re.escape(attacker)} exp=\d+ reason=escalate$", bans_a, re.M)
    for source in (client, attacker):                         # B learned both from the fleet
        assert re.search(rf"^key={re.escape(source)} exp=\d+ reason=fleet$", bans_b, re.M)
    table_b = fleet_table(tmp_b)
    # gpt0: when the origin's ban ends (unix time, s)
    assert t0 + MANUAL_TTL_S - 1 <= table_b[client].get("gpt0") <= t0 + MANUAL_TTL_S + 2
    assert t0 + ESCALATE_TTL_S - 1 <= table_b[attacker].get("gpt0") <= time.time() + ESCALATE_TTL_S + 2
    table_hap = wait_for(lambda: (lambda t: t if {client, attacker} <= set(t) else None)(
        fleet_table(tmp_hap, "haproxy.sock")), 5, "the bans in HAProxy's table")
    assert table_hap[client].get("gpt0") == table_b[client].get("gpt0")
    assert table_hap[attacker].get("gpt0") == table_b[attacker].get("gpt0")
    for host in ("client", "attacker"):          # B drops them at the NIC, reason ban
        assert http(lab_b, host, "/", 1, timeout=1.0) == [0]
    assert drops_by(shield(tmp_b, "show shield"), "ban") > drops_before
    assert http(lab_a, "client", "/", 1, timeout=1.0) == [0]     # A drops its own ban too

    log_b = (tmp_b / "edge.log").read_text()
    for source in (client, attacker):
        assert len(re.findall(rf"share-bans: banned {re.escape(source)} at XDP for \S+ \(learned from table fleet/bans\)",
                              log_b)) == 1
        assert f"published the ban of {source}" not in log_b     # learned bans are not written back

    # expiry ends them on both edges; no node renewed the table entries meanwhile (no loop)
    socks = ((tmp_a, "proxy.sock"), (tmp_b, "proxy.sock"), (tmp_hap, "haproxy.sock"))
    snapshot = time.monotonic()
    exps = [{k: e.exp for k, e in fleet_table(tmp, sock).items()} for tmp, sock in socks]
    def all_gone():
        return not any(banned(tmp, s) for tmp in (tmp_a, tmp_b) for s in (client, attacker))
    wait_for(all_gone, MANUAL_TTL_S + 6, "the bans' expiry on both edges", step=0.5)
    for (tmp, sock), before in zip(socks, exps):
        now = fleet_table(tmp, sock)
        elapsed_ms = (time.monotonic() - snapshot) * 1000
        for source in (client, attacker):
            # a renewal would reset exp to the table's expire; without one it only counts down
            assert now[source].exp <= before[source] - elapsed_ms + 1000, (tmp, source)
    assert http(lab_b, "client", "/") == [200] and http(lab_b, "attacker", "/") == [200]
    log_a = (tmp_a / "edge.log").read_text()
    assert "learned from table" not in log_a                      # A never learns its own bans


def test_a_restarted_edge_keeps_the_fleet_bans_and_writes_none_back(edges):
    """Edge B restarts (proxy and shield) while a fleet ban is active: its proxy gets the
    table back from A (resync), its shield keeps the pinned ban and does not publish it
    again (which would renew the entry on every edge), and an entry whose ban has ended
    (the attacker's, from the test before) is not banned again."""
    lab_a, tmp_a, _ = edges["A"]
    lab_b, tmp_b, proc_b = edges["B"]
    client = lab_a.addr4("client")
    assert shield(tmp_a, f"add ban {client} {TABLE_EXPIRE_S + 10}s").strip() == ""
    wait_for(lambda: banned(tmp_b, client), 8, "the ban on B")
    exp_before = fleet_table(tmp_a)[client].exp

    proc_b.terminate()
    proc_b.wait(20)
    log = open(tmp_b / "restart.log", "wb")
    proc = lab_b.popen("edge", [*EDGESTICK, "run", "-f", str(tmp_b / "edge.cfg")], stdout=log, stderr=log)
    edges["B"] = (lab_b, tmp_b, proc)

    def up():
        assert proc.poll() is None, (tmp_b / "restart.log").read_text()
        with contextlib.suppress(OSError):
            return "attach=native" in shield(tmp_b, "show shield") and client in fleet_table(tmp_b)
    wait_for(up, 40, "edge B back, with the table learned from A")
    assert banned(tmp_b, client)                               # pinned: survived the restart
    time.sleep(2.5)                                            # two bridge cycles of the new B
    text = (tmp_b / "restart.log").read_text()
    assert f"published the ban of {client}" not in text and "learned from table" not in text
    exp_after = fleet_table(tmp_a)[client].exp                 # A's entry was not renewed
    assert exp_after < exp_before
    assert http(lab_b, "client", "/", 1, timeout=1.0) == [0]
