"""`edgestick top` joins the shield's per-source rows with the proxy's table entries. The
shield counts IPv6 sources per prefix (/64 by default) while a stick table keys the full
address: an address takes its prefix's XDP counters and ban."""
from edgestick.control import top
from edgestick.control.runtime_client import TableEntry

SHOW_SOURCES = """\
# sources: tracked=3 by=conn_rate top=10 period=1000
key=fd00:18:1:5::/64 conn_rate(1000)=70 pkt_rate(1000)=900 byte_rate(1000)=54000 drops=800 seen=3
key=198.18.0.10 conn_rate(1000)=2 pkt_rate(1000)=20 byte_rate(1000)=1500 drops=0 seen=10
key=fd00:18:7::/64 conn_rate(1000)=1 pkt_rate(1000)=3 byte_rate(1000)=200 drops=0 seen=50
"""
SHOW_BANS = """\
# bans: active=2
key=fd00:18:1:5::/64 exp=30000 reason=escalate
key=fd00:18:9::/64 exp=- reason=manual
"""


def view() -> top.Snapshot:
    shield = top.ShieldView(name="edge")
    top.parse_show_sources(SHOW_SOURCES, shield)
    top.parse_show_bans(SHOW_BANS, shield)
    proxy = top.ProxyView(table="http_front", entries=[
        TableEntry("fd00:18:1:5::7", 0, 9000, {"http_req_rate(10000)": 40}),
        TableEntry("fd00:18:1:5::8", 0, 9000, {"http_req_rate(10000)": 3}),
        TableEntry("198.18.0.10", 0, 9000, {"http_req_rate(10000)": 12}),
        TableEntry("fd00:18:2::1", 0, 9000, {"http_req_rate(10000)": 1}),
    ])
    return top.Snapshot(shield=shield, proxy=proxy)


def test_ipv6_addresses_take_their_prefix_counters_and_ban():
    rows, bans = top.join_sources(view().shield, view().proxy)
    # the prefix's place in the shield's order, one row per address of the proxy's
    assert list(rows) == ["fd00:18:1:5::7", "fd00:18:1:5::8", "198.18.0.10", "fd00:18:7::/64",
                          "fd00:18:2::1"]
    for addr in ("fd00:18:1:5::7", "fd00:18:1:5::8"):
        xdp, entry = rows[addr]
        assert (xdp.key, xdp.conn_rate, xdp.drops) == ("fd00:18:1:5::/64", 70, 800)
        assert entry.key == addr
        assert bans[addr] == "escalate/30s"
    assert rows["198.18.0.10"][0].pkt_rate == 20 and rows["198.18.0.10"][1].data["http_req_rate(10000)"] == 12
    assert rows["fd00:18:7::/64"] == (rows["fd00:18:7::/64"][0], None)      # no proxy entry
    assert rows["fd00:18:2::1"][0] is None                                   # not in the shield
    assert "fd00:18:1:5::/64" not in bans                  # shown on its addresses' rows
    assert bans["fd00:18:9::/64"] == "manual/forever"      # a quiet banned prefix keeps its line


def test_render_shows_the_joined_rows():
    text = top.render(view(), width=200)
    line = next(l for l in text.splitlines() if l.startswith("fd00:18:1:5::7 "))
    assert line.split() == ["fd00:18:1:5::7", "70", "900", "54.0k", "800", "escalate/30s", "40"]
    assert next(l for l in text.splitlines() if l.startswith("fd00:18:9::/64 ")).split()[5] == "manual/forever"
    assert "fd00:18:1:5::/64" not in text


def test_no_shield_or_no_ipv6_keeps_keys_as_they_are():
    snap = view()
    rows, bans = top.join_sources(None, snap.proxy)
    assert list(rows) == [e.key for e in snap.proxy.entries] and bans == {}
    snap.shield.sources = [s for s in snap.shield.sources if ":" not in s.key]
    snap.shield.bans = {}
    rows, _ = top.join_sources(snap.shield, snap.proxy)
    assert list(rows) == ["198.18.0.10", "fd00:18:1:5::7", "fd00:18:1:5::8", "fd00:18:2::1"]
