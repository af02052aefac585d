"""The XDP program's verdicts through the kernel's BPF_PROG_TEST_RUN on crafted frames:
the header contract, every branch of the decision order, every parse path, truncation at
every header boundary, and HAProxy's rate arithmetic (reference §5 worked numbers)."""
import ctypes
import time

import pytest
from scapy.all import (ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether, ICMPv6EchoRequest, IPOption_RR,
                       IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                       IPv6ExtHdrRouting, Raw, ARP, fragment)

from edgestick.control.xdp import (C, STRUCTS, EsAddr, EsSource, now_tick_ms, read_freq,
                                   source_key)

SRC4, DST4 = "198.18.1.1", "198.18.0.1"
SRC6, DST6 = "fd00:18:1::5", "fd00:18::1"
ETH = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")   # no neighbour lookups


def syn4(src=SRC4, **ip):
    return bytes(Ether(**ETH) / IP(src=src, dst=DST4, **ip) / TCP(sport=40000, dport=80, flags="S"))


def udp4(src=SRC4, size=18):
    return bytes(Ether(**ETH) / IP(src=src, dst=DST4) / UDP(sport=5000, dport=53) / Raw(b"x" * size))


def syn6(src=SRC6):
    return bytes(Ether(**ETH) / IPv6(src=src, dst=DST6) / TCP(sport=40000, dport=80, flags="S"))


def run(shield, frame, n=1):
    return [shield.test_run(frame) for _ in range(n)]


def counted(shield, verdict, reason):
    c = shield.counters().get((verdict, reason))
    return c.packets if c else 0


# ---- the header contract ---------------------------------------------------------------

def _layout(ctype):
    """(size, {field: (offset, nested layout)}) ignoring bcc's explicit padding fields."""
    if not hasattr(ctype, "_fields_"):
        return ctypes.sizeof(ctype)
    out = {}
    for name, sub in ctype._fields_:
        if not name.startswith("__pad"):
            out[name] = (getattr(ctype, name).offset, _layout(sub))
    return ctypes.sizeof(ctype), out


@pytest.mark.parametrize("table,key,value", [
    ("config", None, "es_config"), ("allow", "es_lpm_key", "es_list_value"),
    ("bans", "es_addr", "es_ban"), ("sources", "es_addr", "es_source"),
    ("counters", None, "es_counter"), ("new_sources", None, "es_freq")])
def test_header_structs_match_clang_layout(xdp_shield, table, key, value):
    # bcc builds its Key/Leaf ctypes from clang's layout of the same header.
    bcc_table = xdp_shield._bpf[table]
    leaf = bcc_table.Leaf
    if table in ("counters", "new_sources"):     # bcc's per-CPU Leaf is an array of slots
        leaf = leaf._type_
    assert _layout(STRUCTS[value]) == _layout(leaf)
    if key:
        assert _layout(STRUCTS[key]) == _layout(bcc_table.Key)


def test_header_constants_parsed():
    assert C["ES_REASON_COUNT"] == 10 and C["ES_R_MALFORMED"] == 8
    assert C["ES_BAN_FOREVER"] == 2 ** 64 - 1
    assert ctypes.sizeof(EsSource) == 64


# ---- decision order --------------------------------------------------------------------

def test_plain_packet_passes_and_is_tracked(xdp_shield):
    assert run(xdp_shield, syn4()) == ["pass"]
    assert counted(xdp_shield, "pass", "none") == 1
    (s,) = xdp_shield.sources()
    assert (s.source, s.conn_rate, s.pkt_rate, s.byte_rate, s.drops) == (SRC4, 1, 1, len(syn4()), 0)
    assert abs(s.last_seen_ns - time.monotonic_ns()) < 5e9


def test_allow_wins_over_deny_ban_and_thresholds(xdp_shield):
    xdp_shield.update_config(pkt_rate_limit=0, conn_rate_limit=0)
    xdp_shield.list_add("allow", "198.18.1.0/24")
    xdp_shield.list_add("deny", "198.18.0.0/16")
    xdp_shield.add_ban(SRC4)
    assert run(xdp_shield, syn4(), 3) == ["pass"] * 3
    assert counted(xdp_shield, "pass", "allow") == 3
    assert xdp_shield.sources() == []          # allowed traffic costs no per-source state


def test_deny_wins_over_ban(xdp_shield):
    xdp_shield.list_add("deny", "198.18.1.0/24")
    xdp_shield.add_ban(SRC4)
    assert run(xdp_shield, udp4()) == ["drop"]
    assert counted(xdp_shield, "drop", "deny") == 1
    assert run(xdp_shield, udp4("198.18.2.1")) == ["pass"]
    assert xdp_shield.list_del("deny", "198.18.1.0/24")
    assert run(xdp_shield, udp4()) == ["drop"]
    assert counted(xdp_shield, "drop", "ban") == 1


def test_ban_drops_until_it_expires(xdp_shield):
    assert xdp_shield.add_ban(SRC4, ttl_ms=600) == SRC4
    assert [b.source for b in xdp_shield.bans()] == [SRC4]
    assert run(xdp_shield, udp4()) == ["drop"]
    time.sleep(0.65)
    assert run(xdp_shield, udp4()) == ["pass"]
    assert xdp_shield.maps["bans"].lookup(source_key(SRC4, 64)) is None   # the program removed it
    assert xdp_shield.del_ban(SRC4) is False


def test_listing_bans_purges_expired_ones_once(xdp_shield):
    for i in range(20):
        xdp_shield.add_ban(f"198.18.8.{i}", ttl_ms=0)
    xdp_shield.add_ban("fd00:18:9::1")
    xdp_shield.add_ban("198.18.8.200", ttl_ms=60_000)
    bans = xdp_shield.bans()
    assert sorted(b.source for b in bans) == ["198.18.8.200", "fd00:18:9::/64"]
    assert [b.remaining_ms for b in bans if b.source.startswith("fd00")] == [None]
    assert sum(1 for _ in xdp_shield.maps["bans"].keys()) == 2


def test_conn_rate_drops_new_connections_only(xdp_shield):
    xdp_shield.update_config(conn_rate_limit=3)
    assert run(xdp_shield, syn4(), 5) == ["pass"] * 3 + ["drop"] * 2
    ack = bytes(Ether(**ETH) / IP(src=SRC4, dst=DST4) / TCP(flags="A"))
    synack = bytes(Ether(**ETH) / IP(src=SRC4, dst=DST4) / TCP(flags="SA"))
    assert run(xdp_shield, ack) + run(xdp_shield, synack) == ["pass", "pass"]
    assert counted(xdp_shield, "drop", "conn_rate") == 2
    (s,) = xdp_shield.sources()
    assert (s.conn_rate, s.pkt_rate, s.drops) == (5, 7, 2)   # dropped SYNs still count, like HAProxy


def test_pkt_rate_and_byte_rate_limits(xdp_shield):
    xdp_shield.update_config(pkt_rate_limit=4)
    assert run(xdp_shield, udp4(), 6) == ["pass"] * 4 + ["drop"] * 2
    assert counted(xdp_shield, "drop", "pkt_rate") == 2
    frame = udp4("198.18.3.3")
    xdp_shield.update_config(pkt_rate_limit=None, byte_rate_limit=2 * len(frame))
    assert run(xdp_shield, frame, 3) == ["pass", "pass", "drop"]
    assert counted(xdp_shield, "drop", "byte_rate") == 1


def test_crossing_the_ban_limit_bans_the_source(xdp_shield):
    xdp_shield.update_config(conn_rate_limit=10, ban_conn_rate=3, ban_ttl_ms=60_000)
    assert run(xdp_shield, syn4(), 4) == ["pass"] * 3 + ["drop"]
    assert counted(xdp_shield, "drop", "conn_rate") == 1
    (ban,) = xdp_shield.bans()
    assert (ban.source, ban.reason) == (SRC4, "conn_rate")
    assert 55_000 < ban.remaining_ms <= 60_000
    assert run(xdp_shield, udp4()) == ["drop"]           # everything from it now
    assert counted(xdp_shield, "drop", "ban") == 1


@pytest.fixture
def one_cpu():
    """Keep this process on one CPU: the flood guard's rate is per CPU."""
    import os
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    yield
    os.sched_setaffinity(0, before)


def test_flood_guard_drops_untracked_sources_without_state(xdp_shield, one_cpu):
    xdp_shield.update_config(new_sources_limit=5)
    known = udp4("198.18.9.9")
    assert run(xdp_shield, known) == ["pass"]
    verdicts = [xdp_shield.test_run(udp4(f"198.18.10.{i}")) for i in range(1, 11)]
    assert verdicts == ["pass"] * 4 + ["drop"] * 6       # the known source was the first new one
    assert counted(xdp_shield, "drop", "flood") == 6
    assert xdp_shield.source_count() == 5
    assert run(xdp_shield, known, 3) == ["pass"] * 3     # tracked sources are unaffected
    # while flooding: a tracked banned source drops as "ban"; an untracked one is not even
    # looked up in the bans (it drops as "flood" either way)
    xdp_shield.add_ban("198.18.9.9")
    xdp_shield.add_ban("198.18.11.1")
    assert run(xdp_shield, known) + run(xdp_shield, udp4("198.18.11.1")) == ["drop", "drop"]
    assert (counted(xdp_shield, "drop", "ban"), counted(xdp_shield, "drop", "flood")) == (1, 7)


def test_dry_run_drops_nothing_and_counts_everything(xdp_shield):
    xdp_shield.update_config(mode="dry-run", conn_rate_limit=1, ban_conn_rate=2)
    xdp_shield.list_add("deny", "198.18.5.0/24")
    assert run(xdp_shield, syn4(), 4) == ["pass"] * 4
    assert run(xdp_shield, udp4("198.18.5.5")) == ["pass"]
    c = xdp_shield.counters()
    assert c[("pass", "none")].packets == 1
    assert c[("would_drop", "conn_rate")].packets == 3
    assert c[("would_drop", "deny")].packets == 1
    assert not any(v == "drop" for v, _ in c)
    assert xdp_shield.bans() == []                       # dry-run changes nothing


def test_ipv6_sources_grouped_by_prefix(xdp_shield):
    xdp_shield.update_config(pkt_rate_limit=2)
    frames = [syn6(f"fd00:18:1:0:{i}::1") for i in range(1, 4)]    # three hosts of one /64
    assert [xdp_shield.test_run(f) for f in frames] == ["pass", "pass", "drop"]
    assert [s.source for s in xdp_shield.sources()] == ["fd00:18:1::/64"]
    xdp_shield.clear("sources")
    xdp_shield.update_config(ipv6_prefix=48)
    other64 = [syn6(f"fd00:18:1:{i}::1") for i in range(1, 4)]     # three /64s of one /48
    assert [xdp_shield.test_run(f) for f in other64] == ["pass", "pass", "drop"]
    assert [s.source for s in xdp_shield.sources()] == ["fd00:18:1::/48"]
    assert xdp_shield.add_ban("fd00:18:2::/48") == "fd00:18:2::/48"
    assert xdp_shield.test_run(syn6("fd00:18:2:7::9")) == "drop"
    with pytest.raises(ValueError, match="grouped per /48"):
        xdp_shield.add_ban("fd00:18:3::/64")


def test_ipv6_lists_and_cidr_normal_form(xdp_shield):
    assert xdp_shield.list_add("deny", "fd00:18:1::77/112") == "fd00:18:1::/112"
    assert xdp_shield.list_add("deny", "198.18.7.9/24") == "198.18.7.0/24"
    assert xdp_shield.list_show("deny") == ["198.18.7.0/24", "fd00:18:1::/112"]
    assert xdp_shield.test_run(syn6()) == "drop"
    assert xdp_shield.test_run(syn6("fd00:18:1::1:5")) == "pass"
    for bad in ("198.18.0.300", "nope", "fd00::/129"):
        with pytest.raises(ValueError):
            xdp_shield.list_add("allow", bad)
    with pytest.raises(ValueError, match="use deny"):
        xdp_shield.add_ban("198.18.0.0/24")


def test_non_ip_passes(xdp_shield):
    assert xdp_shield.test_run(bytes(Ether(**ETH) / ARP(psrc=SRC4, pdst=DST4))) == "pass"
    assert counted(xdp_shield, "pass", "non_ip") == 1


# ---- parse paths -----------------------------------------------------------------------

def test_vlan_and_qinq_reach_the_source(xdp_shield):
    xdp_shield.list_add("deny", SRC4)
    xdp_shield.list_add("deny", SRC6)
    one_tag = bytes(Ether(**ETH) / Dot1Q(vlan=100) / IP(src=SRC4, dst=DST4) / UDP() / Raw(b"x"))
    qinq = bytes(Ether(**ETH) / Dot1AD(vlan=10) / Dot1Q(vlan=20) / IPv6(src=SRC6, dst=DST6) / TCP(flags="S"))
    assert [xdp_shield.test_run(one_tag), xdp_shield.test_run(qinq)] == ["drop", "drop"]
    three = bytes(Ether(**ETH) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP(src=SRC4, dst=DST4) / UDP())
    assert xdp_shield.test_run(three) == "pass"
    assert counted(xdp_shield, "pass", "malformed") == 1


def test_ipv4_options_are_skipped_to_tcp(xdp_shield):
    xdp_shield.update_config(conn_rate_limit=0)
    frame = syn4(options=[IPOption_RR(routers=["198.18.0.9"] * 3)])
    assert frame[14] & 0x0F > 5
    assert xdp_shield.test_run(frame) == "drop"
    assert counted(xdp_shield, "drop", "conn_rate") == 1


def test_only_the_first_ipv4_fragment_has_ports(xdp_shield):
    xdp_shield.update_config(conn_rate_limit=0)
    pkt = IP(src=SRC4, dst=DST4, id=7) / TCP(flags="S") / Raw(b"a" * 64)
    first, second = fragment(pkt, fragsize=32)[:2]
    assert xdp_shield.test_run(bytes(Ether(**ETH) / second)) == "pass"   # no transport header
    assert xdp_shield.test_run(bytes(Ether(**ETH) / first)) == "drop"    # the SYN is in here
    (s,) = xdp_shield.sources()
    assert (s.pkt_rate, s.conn_rate) == (2, 1)


def test_ipv6_extension_header_walk(xdp_shield):
    xdp_shield.update_config(conn_rate_limit=0)
    chain = (IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(addresses=[DST6])
             / IPv6ExtHdrFragment(offset=0, m=1, id=3))
    frame = bytes(Ether(**ETH) / IPv6(src=SRC6, dst=DST6) / chain / TCP(flags="S"))
    assert xdp_shield.test_run(frame) == "drop"
    later = bytes(Ether(**ETH) / IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrFragment(offset=8, id=3) / Raw(b"z" * 24))
    assert xdp_shield.test_run(later) == "pass"                     # later fragment: no ports
    too_many = IPv6(src=SRC6, dst=DST6)
    for _ in range(C["ES_MAX_EXT_HDRS"] + 1):
        too_many = too_many / IPv6ExtHdrDestOpt()
    assert xdp_shield.test_run(bytes(Ether(**ETH) / too_many / TCP(flags="S"))) == "pass"
    assert counted(xdp_shield, "drop", "conn_rate") == 1
    assert counted(xdp_shield, "pass", "malformed") == 1


def test_icmp_and_icmpv6(xdp_shield):
    xdp_shield.update_config(pkt_rate_limit=1)
    ping = bytes(Ether(**ETH) / IP(src=SRC4, dst=DST4) / ICMP())
    ping6 = bytes(Ether(**ETH) / IPv6(src=SRC6, dst=DST6) / ICMPv6EchoRequest())
    assert run(xdp_shield, ping, 2) + run(xdp_shield, ping6, 2) == ["pass", "drop"] * 2
    short = bytes(Ether(**ETH) / IP(src=SRC4, dst=DST4, proto=1) / Raw(b"\x08\x00\x00\x00"))
    assert xdp_shield.test_run(short) == "pass"
    assert counted(xdp_shield, "pass", "malformed") == 1


def test_ethernet_padding_is_not_truncation(xdp_shield):
    frame = bytes(Ether(**ETH) / IP(src=SRC4, dst=DST4) / UDP()).ljust(60, b"\0")
    assert xdp_shield.test_run(frame) == "pass"
    assert counted(xdp_shield, "pass", "none") == 1


SAMPLES = {
    "ipv4-options-tcp": Ether(**ETH) / IP(src=SRC4, dst=DST4, options=[IPOption_RR(routers=[DST4])])
                        / TCP(flags="S", options=[("MSS", 1460)]),
    "vlan-ipv4-udp": Ether(**ETH) / Dot1Q(vlan=5) / IP(src=SRC4, dst=DST4) / UDP() / Raw(b"q"),
    "qinq-ipv6-ext-tcp": Ether(**ETH) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / IPv6(src=SRC6, dst=DST6)
                         / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(m=1) / TCP(flags="S"),
    "ipv6-icmpv6": Ether(**ETH) / IPv6(src=SRC6, dst=DST6) / ICMPv6EchoRequest(),
}


def _boundaries(pkt):
    """Byte offsets where each header of a scapy packet starts and ends, Ethernet excepted
    (BPF_PROG_TEST_RUN refuses frames shorter than 14 bytes)."""
    cuts, layer, off = set(), pkt, 0
    total = len(bytes(pkt))
    while layer is not None and not isinstance(layer, (Raw,)) and layer.name != "NoPayload":
        head = len(bytes(layer)) - len(bytes(layer.payload))
        cuts.update({off, off + 1, off + head - 1})
        off += head
        layer = layer.payload if layer.payload else None
    return sorted(c for c in cuts if 14 <= c < total)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_truncated_at_every_header_boundary(xdp_shield, name):
    whole = bytes(SAMPLES[name])
    assert xdp_shield.test_run(whole) == "pass"
    assert counted(xdp_shield, "pass", "malformed") == 0
    cuts = _boundaries(SAMPLES[name])
    assert len(cuts) >= 6
    assert [xdp_shield.test_run(whole[:n]) for n in cuts] == ["pass"] * len(cuts)
    assert counted(xdp_shield, "pass", "malformed") == len(cuts)
    xdp_shield.update_config(malformed="drop")
    assert [xdp_shield.test_run(whole[:n]) for n in cuts] == ["drop"] * len(cuts)
    assert counted(xdp_shield, "drop", "malformed") == len(cuts)
    assert xdp_shield.test_run(whole) == "pass"


# ---- rate arithmetic (reference §5, P = 10000 ms) --------------------------------------

def _seed(shield, src, tick, curr, prev):
    state = EsSource()
    state.pkt.curr_tick, state.pkt.curr_ctr, state.pkt.prev_ctr = tick & 0xFFFFFFFE, curr, prev
    shield.maps["sources"].update(source_key(src, 64), state)


def _state(shield, src):
    return shield.maps["sources"].lookup(source_key(src, 64))


def test_rate_read_matches_worked_example(xdp_shield):
    # 60 events in the previous period, this packet is the 1st of the current one, and the
    # current period started ~3.84 s ago: like the reference read at t=14000, 37 for any
    # remain in 6000..6166 (a 160 ms margin for this process to reach the kernel).
    xdp_shield.update_config(period_ms=10_000, pkt_rate_limit=37)
    _seed(xdp_shield, SRC4, now_tick_ms() - 3840, 0, 60)
    assert xdp_shield.test_run(udp4()) == "pass"                      # 37 is not > 37
    _seed(xdp_shield, SRC4, now_tick_ms() - 3840, 0, 60)
    xdp_shield.update_config(pkt_rate_limit=36)
    assert xdp_shield.test_run(udp4()) == "drop"                      # 37 > 36
    s = _state(xdp_shield, SRC4)
    assert read_freq(s.pkt, 10_000, s.pkt.curr_tick + 4000) == 37
    assert read_freq(s.pkt, 10_000, s.pkt.curr_tick + 7500) == 16
    assert read_freq(s.pkt, 10_000, s.pkt.curr_tick + 11000) == 1    # low-rate rule


def test_rotation_moves_the_period_like_haproxy(xdp_shield):
    xdp_shield.update_config(period_ms=10_000)
    start = now_tick_ms() - 12_000                    # "t=12000": one period and a bit later
    _seed(xdp_shield, SRC4, start, 60, 0)
    xdp_shield.test_run(udp4())
    s = _state(xdp_shield, SRC4).pkt
    assert (s.curr_tick, s.curr_ctr, s.prev_ctr) == ((start & ~1) + 10_000, 1, 60)
    # then nothing for 2+ periods: "event at t=35000" restarts the grid at now
    _seed(xdp_shield, SRC4, now_tick_ms() - 25_000, 1, 60)
    before = now_tick_ms()
    xdp_shield.test_run(udp4())
    s = _state(xdp_shield, SRC4).pkt
    assert (s.curr_ctr, s.prev_ctr) == (1, 0)
    assert before - 2 <= s.curr_tick <= now_tick_ms() + 1 and s.curr_tick % 2 == 0


def test_low_rate_rule_and_fade_out(xdp_shield):
    # previous period held 1 event, none in the current one: HAProxy reads 1, not 0
    xdp_shield.update_config(period_ms=10_000, pkt_rate_limit=1)
    _seed(xdp_shield, SRC4, now_tick_ms() - 11_000, 1, 0)   # rotation: prev=1, curr=this one
    assert xdp_shield.test_run(udp4()) == "pass"             # 1*remain/P + 1 < 2
    s = _state(xdp_shield, SRC4).pkt
    assert read_freq(s, 10_000, s.curr_tick + 11_000) == 1   # reference t=21000 -> 1
    assert read_freq(s, 10_000, s.curr_tick + 21_000) == 0   # reference t=31000 -> 0


def test_repeated_runs_add_every_event(xdp_shield):
    xdp_shield.test_run(udp4(), repeat=5000)
    s = _state(xdp_shield, SRC4).pkt
    assert s.curr_ctr + s.prev_ctr == 5000
    assert counted(xdp_shield, "pass", "none") == 5000


def test_two_cpus_at_once_lose_no_event(xdp_shield):
    import os
    import threading
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    xdp_shield.update_config(period_ms=60_000)
    frame, runs = udp4(), 200_000

    def hammer(cpu):
        os.sched_setaffinity(0, {cpu})       # this thread only
        xdp_shield.test_run(frame, repeat=runs)

    threads = [threading.Thread(target=hammer, args=(cpu,)) for cpu in cpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    s = _state(xdp_shield, SRC4)
    assert (s.pkt.curr_ctr, s.pkt.prev_ctr) == (2 * runs, 0)     # one period, every add kept
    assert s.bytes.curr_ctr == 2 * runs * len(frame)
    assert counted(xdp_shield, "pass", "none") == 2 * runs
