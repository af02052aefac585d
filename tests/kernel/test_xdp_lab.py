"""The XDP shield on the lab's edge interface, with real floods from the attacker namespace
and a real client talking TCP/HTTP to a server in the edge namespace."""
import os
import socket
import struct
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pyroute2 import netns

from edgestick.control.xdp import Shield, xdp_attached
from edgestick.lab import traffic

EDGE4 = "198.18.0.1"
EDGE6 = "fd00:18::1"
HTTP_PORT = 8080
UDP_PORT = 9999


# ---- helpers ---------------------------------------------------------------------------

def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def spoof(template: bytes, sources: list[str]) -> list[bytes]:
    """Copies of an Ethernet/IPv4-or-IPv6/TCP-or-UDP frame, one per source address, with
    correct checksums (scapy would take ~1 ms per frame)."""
    frames = []
    v6 = template[12:14] == b"\x86\xdd"
    for src in sources:
        f = bytearray(template)
        if v6:
            f[22:38] = socket.inet_pton(socket.AF_INET6, src)
            proto, l4 = f[20], 54
            pseudo = bytes(f[22:54]) + struct.pack("!IxxxB", len(f) - l4, proto)
        else:
            ihl = (f[14] & 0x0F) * 4
            f[26:30] = socket.inet_aton(src)
            f[24:26] = b"\0\0"
            f[24:26] = struct.pack("!H", _csum(bytes(f[14:14 + ihl])))
            proto, l4 = f[23], 14 + ihl
            total = struct.unpack("!H", f[16:18])[0]
            pseudo = bytes(f[26:34]) + struct.pack("!xBH", proto, total - ihl)
        at = l4 + (16 if proto == 6 else 6)
        f[at:at + 2] = b"\0\0"
        f[at:at + 2] = struct.pack("!H", _csum(pseudo + bytes(f[l4:])) or 0xFFFF)
        frames.append(bytes(f))
    return frames


def template(lab, kind: str, v6: bool = False, dport: int = UDP_PORT) -> bytes:
    from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw
    l3 = IPv6(src="fd00:18:1::1", dst=EDGE6) if v6 else IP(src="198.18.64.1", dst=EDGE4)
    l4 = TCP(sport=40000, dport=dport, flags="S") if kind == "syn" else UDP(sport=40000, dport=dport) / Raw(b"u" * 18)
    return bytes(Ether(src=lab.mac("attacker"), dst=lab.mac("edge")) / l3 / l4)


@contextmanager
def in_ns(name: str):
    netns.pushns(name)
    try:
        yield
    finally:
        netns.popns()


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the edge\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def http_server(lab):
    """A real HTTP server listening in the edge namespace."""
    with in_ns(lab.ns("edge")):
        server = ThreadingHTTPServer((EDGE4, HTTP_PORT), _Hello)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def http_get(lab, timeout: float = 3.0) -> int:
    """One HTTP/1.0 request on a new TCP connection from the client namespace: the status."""
    with in_ns(lab.ns("client")):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(timeout)
        s.connect((EDGE4, HTTP_PORT))
        s.sendall(b"GET / HTTP/1.0\r\nHost: edge\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return int(data.split(b" ", 2)[1])


@contextmanager
def udp_sink(lab, family=socket.AF_INET):
    """A UDP socket in the edge namespace with a big buffer; yields a packet counter."""
    with in_ns(lab.ns("edge")):
        s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)          # SO_RCVBUFFORCE (root)
    s.bind((EDGE4 if family == socket.AF_INET else EDGE6, UDP_PORT))
    s.setblocking(False)

    def drain() -> int:
        n = 0
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            try:
                s.recv(2048)
                n += 1
                deadline = time.monotonic() + 0.1   # until quiet for 100 ms
            except BlockingIOError:
                time.sleep(0.005)
        return n
    try:
        yield drain
    finally:
        s.close()


def attacker_socket(lab):
    return traffic.packet_socket(lab.ns("attacker"), lab.ifname("attacker"))


def flood(lab, frames, count, duration=5.0):
    with attacker_socket(lab) as sock:
        return traffic.send_frames(sock, frames, count, duration)


@pytest.fixture
def shielded(lab, xdp_shield):
    """The session's shield attached (native) to the lab's edge interface."""
    ns = lab.ns("edge")
    assert xdp_shield.attach(lab.edge_if, mode="native", netns=ns) == "native"
    try:
        yield lab, xdp_shield
    finally:
        xdp_shield.detach(lab.edge_if, netns=ns)


def counted(shield, verdict, reason):
    c = shield.counters().get((verdict, reason))
    return c.packets if c else 0


# ---- attach / detach / adopt -----------------------------------------------------------

def test_attach_modes_and_matching_detach(lab, xdp_shield):
    ns = lab.ns("edge")
    for mode, reported in (("native", "native"), ("generic", "generic"), ("auto", "native")):
        assert xdp_shield.attach(lab.edge_if, mode=mode, netns=ns) == reported
        assert xdp_attached(lab.edge_if, ns) == (reported, xdp_shield.prog_id)
        if mode == "generic":
            with pytest.raises(ValueError, match="generic XDP program, not native"):
                xdp_shield.detach(lab.edge_if, netns=ns, mode="native")
            with pytest.raises(RuntimeError, match="already has a generic XDP program"):
                xdp_shield.attach(lab.edge_if, mode="native", netns=ns)
        assert xdp_shield.detach(lab.edge_if, netns=ns, mode=mode)
        assert xdp_attached(lab.edge_if, ns) == (None, 0)
    assert xdp_shield.detach(lab.edge_if, netns=ns) is False
    with pytest.raises(ValueError, match="no interface 'nope0'"):
        xdp_shield.attach("nope0", netns=ns)


def test_generic_mode_enforces_the_same_rules(lab, xdp_shield):
    ns = lab.ns("edge")
    assert xdp_shield.attach(lab.edge_if, mode="generic", netns=ns) == "generic"
    try:
        xdp_shield.list_add("deny", "198.18.64.40/29")
        frames = spoof(template(lab, "udp"), ["198.18.64.41", "198.18.64.50"])
        with udp_sink(lab) as received:
            flood(lab, frames, 40)
            assert received() == 20                         # only the source outside the /29
        assert counted(xdp_shield, "drop", "deny") == 20
    finally:
        assert xdp_shield.detach(lab.edge_if, netns=ns, mode="generic")


def test_tagged_frames_on_the_wire_are_parsed(shielded):
    from scapy.all import IP, UDP, Dot1AD, Dot1Q, Ether, IPv6
    lab, shield = shielded
    shield.list_add("deny", "198.18.64.60")
    shield.list_add("deny", "fd00:18:1:60::/64")
    l2 = Ether(src=lab.mac("attacker"), dst=lab.mac("edge"))
    frames = [bytes(l2 / Dot1Q(vlan=7) / IP(src="198.18.64.60", dst=EDGE4) / UDP(dport=UDP_PORT)),
              bytes(l2 / Dot1AD(vlan=8) / Dot1Q(vlan=9) / IPv6(src="fd00:18:1:60::5", dst=EDGE6)
                    / UDP(dport=UDP_PORT))]
    flood(lab, frames, 20)
    assert counted(shield, "drop", "deny") == 20


def test_restart_adopts_pinned_state_and_replaces_program(shielded):
    lab, shield = shielded
    shield.update_config(pkt_rate_limit=1000, mode="dry-run")
    shield.add_ban("198.18.64.9", ttl_ms=60_000)
    shield.list_add("deny", "198.18.70.0/24")
    sent = flood(lab, spoof(template(lab, "udp"), ["198.18.64.9"]), 50).sent
    before = shield.counters()
    # a new control plane of the same build adopts the pinned program too: nothing compiled
    same = Shield.build(shield.pin_dir)
    try:
        assert same._bpf is None and same.prog_id == shield.prog_id
    finally:
        same.close()
    # a new build (an upgrade): compile again, adopt the pins, attach with the same mode
    again = Shield.build(shield.pin_dir, rebuild=True)
    try:
        assert again.get_config() == shield.get_config()
        assert [b.source for b in again.bans()] == ["198.18.64.9"]
        assert again.list_show("deny") == ["198.18.70.0/24"]
        assert again.counters()[("would_drop", "ban")] == before[("would_drop", "ban")]
        assert before[("would_drop", "ban")].packets == sent
        old_id = shield.prog_id
        assert again.attach(lab.edge_if, mode="native", netns=lab.ns("edge")) == "native"
        assert again.prog_id != old_id and xdp_attached(lab.edge_if, lab.ns("edge"))[1] == again.prog_id
        flood(lab, spoof(template(lab, "udp"), ["198.18.64.9"]), 50)
        assert counted(shield, "would_drop", "ban") == sent + 50   # same maps, new program
    finally:
        again.close()


# ---- floods ----------------------------------------------------------------------------
# One long period (60 s) so no rotation happens during a test: each source's counters are
# then exact totals of what XDP saw, and the checks hold even if the veth/bridge path loses
# frames under load before XDP sees them.
LONG = 60_000


def test_spoofed_syn_flood_dropped_while_client_http_succeeds(shielded):
    lab, shield = shielded
    shield.update_config(period_ms=LONG, conn_rate_limit=10)
    sources = traffic.spoofed_sources(1000, seed=4)
    frames = spoof(template(lab, "syn", dport=HTTP_PORT), sources)
    with http_server(lab):
        assert http_get(lab) == 200
        result = {}
        sender = threading.Thread(target=lambda: result.update(r=flood(lab, frames, 30 * len(frames))))
        sender.start()
        statuses = []
        while sender.is_alive() and len(statuses) < 5:
            statuses.append(http_get(lab))
        sender.join(timeout=10)
        statuses.append(http_get(lab))
    assert result["r"].sent > 20_000
    assert statuses == [200] * len(statuses) and len(statuses) >= 2
    stats = {s.source: s for s in shield.sources()}
    seen = [stats[a] for a in sources if a in stats]
    assert len(seen) >= 900
    for s in seen:                                      # every SYN above 10 dropped
        assert s.drops == max(0, s.conn_rate - 10), s
    assert counted(shield, "drop", "conn_rate") == sum(s.drops for s in seen) > 10_000
    client = stats[lab.addr4("client")]
    assert client.drops == 0 and client.conn_rate >= len(statuses) + 1


def test_udp_flood_above_pkt_rate_dropped_and_dry_run_drops_nothing(shielded):
    lab, shield = shielded
    sources = ["198.18.64.11", "198.18.64.12", "198.18.64.13", "198.18.64.14"]
    frames = spoof(template(lab, "udp"), sources)
    shield.update_config(period_ms=LONG, pkt_rate_limit=200, mode="dry-run")
    prog_id = shield.prog_id

    def seen():
        stats = {s.source: s.pkt_rate for s in shield.sources()}
        return sum(stats.get(a, 0) for a in sources)

    with udp_sink(lab) as received:
        flood(lab, frames, 6000)
        total = seen()
        assert total > 4 * 200
        assert received() == total                          # dry-run: everything passes
        assert counted(shield, "would_drop", "pkt_rate") == total - 4 * 200
        assert counted(shield, "drop", "pkt_rate") == 0

        shield.update_config(mode="enforce")                # no reload: same program
        shield.clear("sources", "counters")
        assert shield.prog_id == prog_id
        flood(lab, frames, 6000)
        total = seen()
        assert received() == 4 * 200                        # the limit, per source
        assert counted(shield, "drop", "pkt_rate") == total - 4 * 200


def test_flood_guard_keeps_known_clients_under_a_random_source_flood(shielded):
    lab, shield = shielded
    shield.update_config(period_ms=LONG, new_sources_limit=300)
    frames = spoof(template(lab, "syn", dport=HTTP_PORT), traffic.spoofed_sources(15_000, seed=5))
    with http_server(lab):
        assert http_get(lab) == 200                         # the client is tracked now
        flood(lab, frames, len(frames))
        assert http_get(lab) == 200
    cpus = len(os.sched_getaffinity(0))
    c = shield.counters()
    flood_drops = c[("drop", "flood")].packets
    admitted = shield.source_count()
    assert admitted <= 300 * cpus + 10                      # per-CPU budget of new sources
    assert flood_drops > 5_000
    # everything XDP saw was either admitted (one SYN per spoofed source) or dropped
    assert c[("pass", "none")].packets <= admitted + 100    # + the client's own packets


def test_bans_expire_on_time(shielded):
    lab, shield = shielded
    frames = spoof(template(lab, "udp"), ["198.18.64.21"])
    with udp_sink(lab) as received:
        t0 = time.monotonic()
        shield.add_ban("198.18.64.21", ttl_ms=1500)
        time.sleep(max(0.0, t0 + 0.5 - time.monotonic()))
        assert 0 < shield.bans()[0].remaining_ms <= 1000
        assert flood(lab, frames, 20).sent == 20
        assert received() == 0                              # still banned at ~0.5 s
        time.sleep(max(0.0, t0 + 1.65 - time.monotonic()))
        flood(lab, frames, 20)
        assert received() == 20                             # expired at 1.5 s
    assert shield.bans() == []
    assert counted(shield, "drop", "ban") == 20


def test_allow_list_wins_over_everything(shielded):
    lab, shield = shielded
    shield.update_config(pkt_rate_limit=0, conn_rate_limit=0)
    shield.list_add("deny", "198.18.0.0/16")
    shield.add_ban(lab.addr4("client"))
    shield.list_add("allow", lab.addr4("client") + "/32")
    with http_server(lab):
        assert [http_get(lab) for _ in range(3)] == [200] * 3
    flood(lab, spoof(template(lab, "udp"), ["198.18.64.31"]), 10)
    assert counted(shield, "drop", "deny") == 10
    assert counted(shield, "pass", "allow") >= 3 * 5        # each request is 5+ packets
    shield.list_del("allow", lab.addr4("client"))
    with http_server(lab), pytest.raises(OSError):
        http_get(lab, timeout=0.5)


def test_ipv6_sources_grouped_by_prefix(shielded):
    lab, shield = shielded
    shield.update_config(period_ms=LONG, pkt_rate_limit=20)
    one64 = [f"fd00:18:1:7::{i:x}" for i in range(1, 41)]              # 40 hosts, one /64
    many64 = [f"fd00:18:1:{100 + i:x}::1" for i in range(40)]         # 40 different /64s
    assert flood(lab, spoof(template(lab, "udp", v6=True), one64), 200).sent == 200
    flood(lab, spoof(template(lab, "udp", v6=True), many64), 200)
    stats = {s.source: s for s in shield.sources()}
    group = stats["fd00:18:1:7::/64"]
    assert group.pkt_rate > 100 and group.drops == group.pkt_rate - 20
    singles = [s for k, s in stats.items() if k.startswith("fd00:18:1:") and s is not group]
    assert len(singles) >= 35 and all(s.pkt_rate <= 5 and s.drops == 0 for s in singles)
    assert counted(shield, "drop", "pkt_rate") == group.drops
