"""Runtime command parsing and validation for the shield's socket (no kernel needed):
every command's accepted forms, and the error line each bad form gets."""
import ipaddress

import pytest

from edgestick.control import runtime
from edgestick.control.runtime import CommandError, parse_command


def net(text):
    return ipaddress.ip_network(text)


@pytest.mark.parametrize("line,name,args", [
    ("help", "help", {}),
    ("prompt", "prompt", {}),
    ("quit", "quit", {}),
    ("show shield", "show shield", {}),
    ("  show   shield  ", "show shield", {}),
    ("show sources", "show sources", {"top": 20, "by": "pkt_rate"}),
    ("show sources top 5", "show sources", {"top": 5, "by": "pkt_rate"}),
    ("show sources by drops", "show sources", {"top": 20, "by": "drops"}),
    ("show sources by byte_rate top 3", "show sources", {"top": 3, "by": "byte_rate"}),
    ("show sources top 1 by conn_rate", "show sources", {"top": 1, "by": "conn_rate"}),
    ("show bans", "show bans", {}),
    ("show rules", "show rules", {}),
    ("add ban 198.18.64.7", "add ban", {"network": net("198.18.64.7/32"), "ttl_ms": None}),
    ("add ban 198.18.64.0/24 10m", "add ban", {"network": net("198.18.64.0/24"), "ttl_ms": 600_000}),
    ("add ban fd00:18:1::/64 30s", "add ban", {"network": net("fd00:18:1::/64"), "ttl_ms": 30_000}),
    ("add ban 198.18.64.7 1500", "add ban", {"network": net("198.18.64.7/32"), "ttl_ms": 1500}),
    ("del ban fd00:18:1::1", "del ban", {"network": net("fd00:18:1::1/128")}),
    ("add allow 198.18.0.10", "add allow", {"network": net("198.18.0.10/32")}),
    ("del allow 198.18.0.0/24", "del allow", {"network": net("198.18.0.0/24")}),
    ("add deny 2001:db8::/32", "add deny", {"network": net("2001:db8::/32")}),
    ("del deny 203.0.113.0/24", "del deny", {"network": net("203.0.113.0/24")}),
    ("set threshold conn_rate 200", "set threshold", {"name": "conn_rate", "value": 200}),
    ("set threshold ban_pkt_rate 4294967294", "set threshold", {"name": "ban_pkt_rate", "value": 2**32 - 2}),
    ("set threshold byte_rate off", "set threshold", {"name": "byte_rate", "value": None}),
    ("set threshold flood_guard 3000", "set threshold", {"name": "flood_guard", "value": 3000}),
    ("set mode dry-run", "set mode", {"mode": "dry-run"}),
    ("set mode enforce", "set mode", {"mode": "enforce"}),
    ("show sources # a comment", "show sources", {"top": 20, "by": "pkt_rate"}),
])
def test_valid_commands(line, name, args):
    cmd = parse_command(line)
    assert (cmd.name, cmd.args) == (name, args)
    assert cmd.method == name.replace(" ", "_")


@pytest.mark.parametrize("line,message", [
    ("", "Empty command"),
    ("   ", "Empty command"),
    ("show", "Unknown command 'show' (try 'help')"),
    ("show table", "Unknown command 'show table'"),
    ("flush everything", "Unknown command 'flush everything'"),
    ("SHOW SHIELD", "Unknown command"),
    ("show shield now", "Usage: show shield"),
    ("help me", "Usage: help"),
    ("show sources top", "Usage: show sources"),
    ("show sources top 0", "'top' expects a number from 1 to 100000, not '0'"),
    ("show sources top -3", "'top' expects a number"),
    ("show sources top 100001", "'top' expects a number"),
    ("show sources by src", "'by' expects one of conn_rate, pkt_rate, byte_rate, drops, not 'src'"),
    ("show sources top 3 top 4", "Usage: show sources"),
    ("show sources sideways 3", "Usage: show sources"),
    ("add ban", "Usage: add ban <addr|cidr> [<ttl>]"),
    ("add ban 1.2.3.4 10m extra", "Usage: add ban"),
    ("add ban 1.2.3.400", "'1.2.3.400' is not an IPv4/IPv6 address or CIDR"),
    ("add ban evil.example", "is not an IPv4/IPv6 address or CIDR"),
    ("add ban 1.2.3.4/24", "'1.2.3.4/24' has host bits set (did you mean 1.2.3.0/24?)"),
    ("add ban fd00::1/200", "is not an IPv4/IPv6 address or CIDR"),
    ("add ban 1.2.3.4 soon", "invalid time value 'soon'"),
    ("add ban 1.2.3.4 0", "ttl must be greater than zero"),
    ("add ban 1.2.3.4 30d", "too large"),
    ("del ban", "Usage: del ban <addr|cidr>"),
    ("del ban 1.2.3.4 10m", "Usage: del ban"),
    ("add allow", "Usage: add allow"),
    ("add deny ::ffff:zz", "is not an IPv4/IPv6 address or CIDR"),
    ("del deny 10.1.0.0/8", "has host bits set"),
    ("set threshold", "Usage: set threshold"),
    ("set threshold conn_rate", "Usage: set threshold"),
    ("set threshold http_req_rate 5", "unknown threshold 'http_req_rate'"),
    ("set threshold conn_rate lots", "threshold 'lots' is not a non-negative integer"),
    ("set threshold conn_rate -1", "is not a non-negative integer"),
    ("set threshold conn_rate 4294967295", "is too large"),
    ("set mode", "Usage: set mode enforce|dry-run"),
    ("set mode panic", "unknown mode 'panic' (expects enforce or dry-run)"),
    ("add ban '1.2.3.4", "unmatched quote"),
])
def test_bad_commands_get_one_error_line(line, message):
    with pytest.raises(CommandError) as err:
        parse_command(line)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_every_command_has_help_and_a_known_level():
    text = runtime.help_text()
    for name, (usage, _, level) in runtime.COMMANDS.items():
        assert usage.startswith(name) and f"  {usage}" in text
        assert level in ("user", "operator", "admin")


def test_help_lists_only_what_the_level_may_run():
    user = runtime.help_text("user")
    assert "  show shield" in user and "show sources" not in user and "add ban" not in user
    operator = runtime.help_text("operator")
    assert "  show bans" in operator and "add ban" not in operator and "set mode" not in operator
    assert "  set mode enforce|dry-run" in runtime.help_text("admin")


def test_levels_follow_haproxy_order():
    assert runtime.level_allows("admin", "operator") and runtime.level_allows("operator", "operator")
    assert not runtime.level_allows("user", "operator") and not runtime.level_allows("operator", "admin")
    # Reading addresses needs operator, changing anything needs admin, like HAProxy's tables.
    assert parse_command("show shield").level == "user"
    assert parse_command("show sources").level == "operator"
    assert all(parse_command(c).level == "admin" for c in
               ("add ban 1.2.3.4", "del ban 1.2.3.4", "add allow 1.2.3.4", "del deny 1.2.3.4",
                "set threshold conn_rate 1", "set mode enforce"))


def test_refused_commands_reach_no_shield_method():
    # RuntimeServer.execute validates level and syntax before touching the shield: an
    # object with no methods at all proves nothing was called.
    server = runtime.RuntimeServer(object(), "/nonexistent.sock", level="operator")
    assert server.execute("add ban 1.2.3.4") == ("Permission denied\n", None)
    assert server.execute("add ban 1.2.3.999") == ("'1.2.3.999' is not an IPv4/IPv6 address or CIDR\n", None)
    assert server.execute("help")[0] == runtime.help_text("operator")
    assert server.execute("prompt") == ("", "prompt")
    assert server.execute("quit") == ("", "quit")
