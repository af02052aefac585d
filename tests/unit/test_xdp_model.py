"""control/xdp.py without a kernel: the header parser, config encoding, address keys."""
import ctypes

import pytest

from edgestick.control import xdp
from edgestick.control.xdp import ShieldConfig, lpm_cidr, lpm_key, parse_header, source_key, source_str


def test_header_parser_builds_structs_and_constants():
    consts, structs = parse_header("""
        /* comment with struct nope { __u8 x; }; inside */
        #ifndef ES_N
        #define ES_N 4
        #endif
        #define ES_BIG 18446744073709551615ULL
        enum es_e { ES_A = 3, ES_B, ES_C = ES_N, ES_D };
        struct es_in { __u16 a; __u16 b; };
        struct es_out { struct es_in in; __u8 raw[ES_N]; __u64 wide; };
    """)
    assert (consts["ES_N"], consts["ES_BIG"]) == (4, 2 ** 64 - 1)
    assert [consts[k] for k in ("ES_A", "ES_B", "ES_C", "ES_D")] == [3, 4, 4, 5]
    out = structs["es_out"]
    assert ctypes.sizeof(out) == 16 and out.wide.offset == 8 and out.raw.size == 4
    assert "nope" not in structs
    with pytest.raises(ValueError, match="cannot parse member"):
        parse_header("struct es_bad { int x; };")


def test_the_real_header_has_every_enum_name():
    assert xdp.REASONS == ["none", "allow", "deny", "ban", "conn_rate", "pkt_rate", "byte_rate",
                           "flood", "malformed", "non_ip"]
    assert xdp.VERDICTS == ["pass", "drop", "would_drop"]
    # es_freq's first two fields are one 64-bit word the program compare-and-swaps
    assert xdp.EsFreq.curr_tick.offset == 0 and xdp.EsFreq.curr_ctr.offset == 4
    for name in ("conn", "pkt", "bytes"):
        assert getattr(xdp.EsSource, name).offset % 8 == 0


def test_config_round_trip_and_limit_bits():
    cfg = ShieldConfig(period_ms=10_000, mode="dry-run", malformed="drop", ipv6_prefix=48,
                       conn_rate_limit=0, ban_pkt_rate=5000, ban_ttl_ms=30_000)
    raw = cfg.to_struct()
    assert raw.limits_enabled == xdp.C["ES_LIM_CONN_RATE"] | xdp.C["ES_LIM_BAN_PKT_RATE"]
    assert raw.ban_ttl_ns == 30_000_000_000
    assert ShieldConfig.from_struct(raw) == cfg
    # a zeroed map (before the loader writes it) reads as defaults with every limit off
    assert ShieldConfig.from_struct(xdp.EsConfig()) == ShieldConfig(ban_ttl_ms=0)


@pytest.mark.parametrize("field,value,message", [
    ("mode", "block", "mode must be one of enforce, dry-run"),
    ("malformed", "eat", "malformed must be one of pass, drop"),
    ("period_ms", 0, "period_ms must be"),
    ("ipv6_prefix", 129, "ipv6_prefix must be"),
    ("pkt_rate_limit", -1, "pkt_rate_limit must be"),
    ("conn_rate_limit", 2 ** 32, "conn_rate_limit must be"),
    ("ban_ttl_ms", -5, "ban_ttl_ms must be"),
])
def test_bad_config_values_are_refused(field, value, message):
    cfg = ShieldConfig(**{field: value})
    with pytest.raises(ValueError, match=message):
        cfg.to_struct()


def test_lpm_keys_are_normalised_and_v4_mapped():
    key = lpm_key("198.18.7.9/24")
    assert key.prefixlen == 96 + 24
    assert bytes(key.addr) == bytes(10) + b"\xff\xff" + bytes([198, 18, 7, 0])
    assert lpm_cidr(key) == "198.18.7.0/24"
    assert lpm_cidr(lpm_key("fd00:18::77/112")) == "fd00:18::/112"
    assert lpm_cidr(lpm_key("198.18.0.5")) == "198.18.0.5/32"
    for bad in ("198.18.0.256", "fd00::/200", "", "10.0.0.0/8/8"):
        with pytest.raises(ValueError, match="not an IPv4/IPv6 address or CIDR"):
            lpm_key(bad)


def test_source_keys_group_ipv6_by_prefix():
    assert source_str(source_key("198.18.0.5", 64), 64) == "198.18.0.5"
    assert source_str(source_key("fd00:18:1:2:3::4", 64), 64) == "fd00:18:1:2::/64"
    assert bytes(source_key("fd00:18:1:2::/64", 64).a) == bytes(source_key("fd00:18:1:2:ffff::1", 64).a)
    assert source_str(source_key("fd00:18:1:2:3::4", 48), 48) == "fd00:18:1::/48"
    with pytest.raises(ValueError, match="per address"):
        source_key("198.18.0.0/24", 64)
    with pytest.raises(ValueError, match="grouped per /64"):
        source_key("fd00:18::/48", 64)
    with pytest.raises(ValueError, match="not an IPv4/IPv6 address"):
        source_key("example.org", 64)
