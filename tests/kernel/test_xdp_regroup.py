"""A new IPv6 grouping (`table-ipv6-prefix`) regroups the pinned IPv6 state: bans move to
the new groups, per-source rates at the old grouping are dropped, IPv4 is untouched, and
the program drops a banned source under the new grouping."""
from scapy.all import TCP, Ether, IPv6

from edgestick.control.xdp import ShieldConfig

ETH = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def syn6(src):
    return bytes(Ether(**ETH) / IPv6(src=src, dst="fd00:18::1") / TCP(sport=40000, dport=80, flags="S"))


def bans(shield):
    return {b.source: (b.remaining_ms, b.reason, b.origin) for b in shield.bans()}


def test_shorter_prefix_widens_bans_and_drops_ipv6_rates(xdp_shield):
    xdp_shield.add_ban("fd00:18:1:5::/64", ttl_ms=60_000)
    xdp_shield.add_ban("198.18.64.7")
    assert xdp_shield.test_run(syn6("fd00:18:2:1::9")) == "pass"         # tracked per /64
    xdp_shield.test_run(bytes(Ether(**ETH) / IPv6(src="fd00:18:2:1::9", dst="fd00:18::1")))
    notes = xdp_shield.regroup_ipv6(ShieldConfig(ipv6_prefix=48), max_split=256)
    assert xdp_shield.get_config().ipv6_prefix == 48
    got = bans(xdp_shield)
    assert set(got) == {"fd00:18:1::/48", "198.18.64.7"}
    assert 59_000 < got["fd00:18:1::/48"][0] <= 60_000 and got["fd00:18:1::/48"][2] == "manual"
    assert xdp_shield.sources() == []                                    # per-/64 rates dropped
    assert notes == ["ban of fd00:18:1:5::/64 widened to fd00:18:1::/48",
                     "1 IPv6 sources counted per /64 dropped: counting restarts per /48"]
    assert xdp_shield.test_run(syn6("fd00:18:1:9::1")) == "drop"         # another /64 of the /48
    assert [s.source for s in xdp_shield.sources()] == []                # banned: not tracked


def test_longer_prefix_splits_bans_or_moves_them_to_the_deny_list(xdp_shield):
    xdp_shield.set_config(ShieldConfig(ipv6_prefix=48))
    xdp_shield.add_ban("fd00:18:1::/48", ttl_ms=60_000)
    notes = xdp_shield.regroup_ipv6(ShieldConfig(ipv6_prefix=56), max_split=256)
    assert notes == ["ban of fd00:18:1::/48 split into 256 bans, one per /56"]
    got = bans(xdp_shield)
    assert len(got) == 256 and "fd00:18:1:ff00::/56" in got and "fd00:18:1::/56" in got
    assert xdp_shield.test_run(syn6("fd00:18:1:ab12::1")) == "drop"
    assert xdp_shield.test_run(syn6("fd00:18:2::1")) == "pass"

    # /56 -> /64 would be 256 bans each (65,536): too many, each range goes to the deny list
    notes = xdp_shield.regroup_ipv6(ShieldConfig(ipv6_prefix=64), max_split=16)
    assert len(notes) == 257 and notes[0].endswith("moved to the deny list, which does not expire "
                                                   f"('del deny {notes[0].split()[2][:-1]}' lifts it)")
    assert notes[-1] == "1 IPv6 sources counted per /56 dropped: counting restarts per /64"
    assert xdp_shield.bans() == [] and len(xdp_shield.list_show("deny")) == 256
    assert xdp_shield.test_run(syn6("fd00:18:1:ab12::1")) == "drop"


def test_same_prefix_changes_nothing(xdp_shield):
    xdp_shield.add_ban("fd00:18:1:5::/64")
    assert xdp_shield.test_run(syn6("fd00:18:2:1::9")) == "pass"
    assert xdp_shield.regroup_ipv6(ShieldConfig(ipv6_prefix=64, conn_rate_limit=5), max_split=256) == []
    assert set(bans(xdp_shield)) == {"fd00:18:1:5::/64"}
    assert [s.source for s in xdp_shield.sources()] == ["fd00:18:2:1::/64"]
    assert xdp_shield.get_config().conn_rate_limit == 5
