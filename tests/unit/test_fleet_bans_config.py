"""Fleet bans: the `share-bans <table>` line of the shield section and the mapping between
shield sources and the keys of the replicated table (control/bridge.py)."""
import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.control import config
from edgestick.control.bridge import Bridge, _fleet_key, _fleet_source

SHIELD = "shield s\n    interface veth0\n"


def parse(text: str):
    return config.parse_text(text, "edge.cfg")[0]


def test_share_bans_names_a_peers_table_or_a_proxy_table():
    assert parse(SHIELD + "    share-bans fleet/bans\n").share_bans == "fleet/bans"
    assert parse(SHIELD + "    share-bans bans_be\n").share_bans == "bans_be"
    assert parse(SHIELD).share_bans is None


@pytest.mark.parametrize("body,message", [
    ("share-bans\n", "expects 'share-bans <table>'"),
    ("share-bans a b\n", "expects 'share-bans <table>'"),
    ("share-bans a/b/c\n", "invalid table name 'a/b/c'"),
    ("share-bans fleet/bans\n    share-bans other\n", "'share-bans' is set twice"),
])
def test_share_bans_errors_name_file_line_and_keyword(body, message):
    with pytest.raises(ConfigError) as e:
        parse(SHIELD + "    " + body)
    text = str(e.value)
    assert text.startswith("edge.cfg:3: 'share-bans': ") or text.startswith("edge.cfg:4: 'share-bans': ")
    assert message in text


def test_share_bans_needs_the_proxy_socket():
    cfg = parse(SHIELD + "    share-bans fleet/bans\n")
    with pytest.raises(ValueError, match="need the proxy's runtime socket"):
        Bridge(cfg, None)
    cfg = parse(SHIELD + "    share-bans fleet/bans\n    proxy-socket /run/p.sock\n")
    assert Bridge(cfg, None).share == "fleet/bans"


@pytest.mark.parametrize("source,table_type,key", [
    ("198.18.0.10", "ip", "198.18.0.10"),
    ("fd00:18::/64", "ip", None),                       # an ip table cannot hold IPv6
    ("198.18.0.10", "ipv6", "::ffff:198.18.0.10"),
    ("fd00:18::/64", "ipv6", "fd00:18::"),
])
def test_sources_and_keys_map_both_ways(source, table_type, key):
    assert _fleet_key(source, table_type) == key
    if key is not None:
        assert _fleet_source(key, 64) == source


def test_keys_that_are_no_address_are_ignored():
    assert _fleet_source("not-an-ip", 64) is None
    assert _fleet_source("fd00:18::7", 48) == "fd00:18::/48"
