"""The `shield` section grammar (control/config.py): what it accepts, and every error
path reported as `file:line: 'keyword': message`."""
import ipaddress
from pathlib import Path

import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.control import config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

FULL = """\
global
    stats socket /run/haproxy.sock mode 600 level admin
defaults
    mode http
frontend http_front
    bind *:80
    stick-table type ip size 100k expire 30s store http_req_rate(10s)
    http-request track-sc0 src
    default_backend app
backend app
    server s1 10.0.1.10:8080 check

shield edge
    interface veth0
    interface veth1 mode generic
    interface eth2 mode native
    table type ip size 1m expire 60s store conn_rate(10s),pkt_rate(10s),byte_rate(10s)
    table-ipv6-prefix 56
    allow 192.0.2.0/24 2001:db8:1::/48
    deny 203.0.113.0/24
    deny 198.51.100.7
    drop if { conn_rate gt 200 }
    drop if { pkt_rate gt 5000 }
    drop if { byte_rate gt 10000000 }
    ban 10m if { conn_rate gt 1000 }
    ban 10m if { pkt_rate gt 50000 }
    flood-guard 2000
    mode dry-run
    malformed drop
    pin-dir /sys/fs/bpf/edgestick-test/
    stats socket /run/edgestick/shield.sock mode 660 level admin
    metrics bind 127.0.0.1:9107
    mirror http_front
    escalate http_front ban 10m if { http_err_rate gt 20 }

peers mypeers
    peer a 10.0.1.1:1024
"""


def parse(text: str, file: str = "test.cfg") -> list[config.ShieldConfig]:
    return config.parse_text(text, file)


def one(body: str) -> config.ShieldConfig:
    (cfg,) = parse("shield s\n    interface veth0\n" + body)
    return cfg


def test_full_section_next_to_proxy_sections():
    (cfg,) = parse(FULL)
    assert cfg.name == "edge" and cfg.line == 13
    assert cfg.interfaces == [config.Interface("veth0", "auto"), config.Interface("veth1", "generic"),
                              config.Interface("eth2", "native")]
    assert cfg.table_size == 1 << 20 and cfg.table_expire_ms == 60_000
    assert cfg.periods_ms == {"conn_rate": 10_000, "pkt_rate": 10_000, "byte_rate": 10_000}
    assert cfg.period_ms == 10_000 and cfg.ban_ttl_ms == 600_000
    assert cfg.ipv6_prefix == 56
    assert cfg.allow == [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8:1::/48")]
    assert cfg.deny == [ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("198.51.100.7/32")]
    assert cfg.drops == {"conn_rate": 200, "pkt_rate": 5000, "byte_rate": 10_000_000}
    assert cfg.bans == {"conn_rate": config.Ban(600_000, config.Condition("conn_rate", 1000)),
                        "pkt_rate": config.Ban(600_000, config.Condition("pkt_rate", 50_000))}
    assert cfg.flood_guard == 2000
    assert cfg.mode == "dry-run" and cfg.malformed == "drop"
    assert cfg.pin_dir == "/sys/fs/bpf/edgestick-test"
    assert cfg.stats_socket == config.StatsSocket("/run/edgestick/shield.sock", 0o660, "admin")
    assert cfg.metrics_bind == ("127.0.0.1", 9107)
    assert cfg.mirrors == ["http_front"]
    assert cfg.escalations == [config.Escalate("http_front", 600_000, config.Condition("http_err_rate", 20))]


def test_defaults():
    cfg = one("")
    assert cfg.interfaces == [config.Interface("veth0", "auto")]
    assert cfg.table_size == 65536 and cfg.table_expire_ms == 60_000
    assert cfg.periods_ms == {"conn_rate": 1000, "pkt_rate": 1000, "byte_rate": 1000}
    assert cfg.period_ms == 1000 and cfg.ban_ttl_ms is None
    assert cfg.ipv6_prefix == 64 and cfg.allow == [] and cfg.deny == []
    assert cfg.drops == {} and cfg.bans == {} and cfg.flood_guard is None
    assert cfg.mode == "enforce" and cfg.malformed == "pass"
    assert cfg.pin_dir == "/sys/fs/bpf/edgestick/s"
    assert cfg.stats_socket is None and cfg.metrics_bind is None


def test_table_line_after_rules_still_governs_them():
    cfg = one("    drop if { pkt_rate gt 10 }\n    table type ip size 1k store pkt_rate(10s)\n")
    assert cfg.drops == {"pkt_rate": 10} and cfg.periods_ms == {"pkt_rate": 10_000}


def test_stats_socket_defaults_to_haproxy_level_and_private_mode():
    assert one("    stats socket /tmp/s.sock\n").stats_socket == config.StatsSocket("/tmp/s.sock", 0o600, "operator")


@pytest.mark.parametrize("text,expected", [
    (":9107", ("127.0.0.1", 9107)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("*:80", ("0.0.0.0", 80)),
    ("[::1]:9107", ("::1", 9107)),
    ("::1:9107", ("::1", 9107)),
])
def test_metrics_bind_forms(text, expected):
    assert one(f"    metrics bind {text}\n").metrics_bind == expected


def test_quoted_words_go_through_the_shared_lexer():
    assert one('    pin-dir "/sys/fs/bpf/with space"\n').pin_dir == "/sys/fs/bpf/with space"


def test_several_shields_and_load_by_name(tmp_path):
    path = tmp_path / "two.cfg"
    path.write_text("shield a\n    interface x0\nshield b\n    interface y0 mode generic\n")
    assert [s.name for s in config.parse_text(path.read_text())] == ["a", "b"]
    assert config.load(str(path), "b").interfaces == [config.Interface("y0", "generic")]
    with pytest.raises(ConfigError, match="2 shield sections .*--name"):
        config.load(str(path))
    with pytest.raises(ConfigError, match=r"two\.cfg: no shield section named 'c'"):
        config.load(str(path), "c")
    # Several files read in order, like HAProxy's repeated -f.
    more = tmp_path / "more.cfg"
    more.write_text("frontend f\n    bind :80\nshield c\n    interface z0\n")
    assert config.load([str(path), str(more)], "c").interfaces == [config.Interface("z0")]


def test_seed_configs_hold_no_shield_and_parse_cleanly():
    # The users' HAProxy files pass through the shield parser untouched.
    assert config.parse_text((FIXTURES / "seed-configs.cfg").read_text()) == []


def test_load_reports_missing_file_and_missing_section(tmp_path):
    with pytest.raises(ConfigError, match="cannot open configuration file"):
        config.load(str(tmp_path / "nope.cfg"))
    empty = tmp_path / "proxy-only.cfg"
    empty.write_text("frontend f\n    bind :80\n")
    with pytest.raises(ConfigError, match="proxy-only.cfg: no shield section"):
        config.load(str(empty))


# Every error path: (section body after 'shield s' + 'interface veth0', line, keyword, message part).
ERRORS = [
    ("interface\n", 3, "interface", "expects an interface name"),
    ("interface a/b\n", 3, "interface", "invalid interface name 'a/b'"),
    ("interface averyveryverylongname\n", 3, "interface", "invalid interface name"),
    ("interface eth1 mode turbo\n", 3, "interface", "unknown mode 'turbo'"),
    ("interface eth1 native\n", 3, "interface", "unexpected 'native'"),
    ("interface veth0\n", 3, "interface", "interface 'veth0' is listed twice"),
    ("table size 1k\n", 3, "table", "missing type"),
    ("table type ip\n", 3, "table", "missing size"),
    ("table type ipv6 size 1k\n", 3, "table", "unsupported type 'ipv6'"),
    ("table type ip size lots\n", 3, "table", "invalid size 'lots'"),
    ("table type ip size 0\n", 3, "table", "size must be greater than zero"),
    ("table type ip size 1k expire soon\n", 3, "table", "expire: invalid time value 'soon'"),
    ("table type ip size 1k expire 0\n", 3, "table", "expire must be greater than zero"),
    ("table type ip size 1k store http_req_rate(10s)\n", 3, "table", "unknown data type 'http_req_rate'"),
    ("table type ip size 1k store conn_rate\n", 3, "table", "'conn_rate' expects a period"),
    ("table type ip size 1k store conn_rate(fast)\n", 3, "table", "period of 'conn_rate': invalid time"),
    ("table type ip size 1k store conn_rate(1s),conn_rate(2s)\n", 3, "table", "'conn_rate' is stored twice"),
    ("table type ip size 1k size 2k\n", 3, "table", "'size' given twice"),
    ("table type ip size 1k nopurge\n", 3, "table", "unknown argument 'nopurge'"),
    ("table type ip size\n", 3, "table", "'size' expects a value"),
    ("table type ip size 1k\n    table type ip size 2k\n", 4, "table", "'table' is set twice"),
    ("table-ipv6-prefix 129\n", 3, "table-ipv6-prefix", "prefix length from 1 to 128"),
    ("table-ipv6-prefix\n", 3, "table-ipv6-prefix", "prefix length from 1 to 128"),
    ("allow\n", 3, "allow", "expects one or more addresses"),
    ("allow 10.0.0.1/8\n", 3, "allow", "'10.0.0.1/8' has host bits set (did you mean 10.0.0.0/8?)"),
    ("deny example.com\n", 3, "deny", "'example.com' is not an IPv4/IPv6 address or CIDR"),
    ("deny 10.0.0.0/33\n", 3, "deny", "not an IPv4/IPv6 address or CIDR"),
    ("deny 10.0.0.0/8 10.0.0.0/8\n", 3, "deny", "'10.0.0.0/8' is listed twice"),
    ("allow 10.0.0.0/8\n    deny 10.0.0.0/8\n", 4, "deny", "in both the allow and the deny list"),
    ("drop\n", 3, "drop", "expects 'if { <metric> gt <value> }'"),
    ("drop unless { conn_rate gt 1 }\n", 3, "drop", "'unless' is not supported"),
    ("drop if {conn_rate gt 1}\n", 3, "drop", "braces need spaces"),
    ("drop if { conn_rate gt }\n", 3, "drop", "expects 'if { <metric> gt <value> }'"),
    ("drop if { http_req_rate gt 1 }\n", 3, "drop", "unknown metric 'http_req_rate'"),
    ("drop if { conn_rate ge 1 }\n", 3, "drop", "unsupported operator 'ge'"),
    ("drop if { conn_rate gt -1 }\n", 3, "drop", "threshold '-1' is not a non-negative integer"),
    ("drop if { conn_rate gt 4294967295 }\n", 3, "drop", "is too large (max 4294967294)"),
    ("drop if { conn_rate gt 1 }\n    drop if { conn_rate gt 2 }\n", 4, "drop", "already set"),
    ("table type ip size 1k store pkt_rate(1s)\n    drop if { conn_rate gt 1 }\n", 4, "drop",
     "'conn_rate' is not stored in the table"),
    ("ban\n", 3, "ban", "expects 'ban <ttl> if"),
    ("ban forever if { conn_rate gt 1 }\n", 3, "ban", "ban duration: invalid time value 'forever'"),
    ("ban 0 if { conn_rate gt 1 }\n", 3, "ban", "ban duration must be greater than zero"),
    ("ban 10m\n", 3, "ban", "expects 'if { <metric> gt <value> }'"),
    ("ban 10m if { pkt_rate gt 5 }\n    ban 10m if { pkt_rate gt 9 }\n", 4, "ban", "already set"),
    ("ban 10m if { pkt_rate gt 5 }\n    ban 1m if { conn_rate gt 9 }\n", 4, "ban",
     "every 'ban' rule shares one duration: 1m differs from 600000ms of the 'ban' on 'pkt_rate'"),
    ("table type ip size 1k store conn_rate(1s),pkt_rate(10s)\n", 3, "table",
     "all rates share one period: 'pkt_rate(10s)' differs from 'conn_rate(1000ms)'"),
    ("drop if { conn_rate gt 100 }\n    ban 10m if { conn_rate gt 100 }\n", 4, "ban",
     "must be above the drop threshold 100"),
    ("flood-guard\n", 3, "flood-guard", "expects 'flood-guard <new sources per period>'"),
    ("flood-guard many\n", 3, "flood-guard", "limit 'many' is not a non-negative integer"),
    ("mode fast\n", 3, "mode", "expects enforce or dry-run"),
    ("mode\n", 3, "mode", "expects enforce or dry-run"),
    ("malformed reject\n", 3, "malformed", "expects pass or drop"),
    ("pin-dir relative/dir\n", 3, "pin-dir", "expects one absolute path"),
    ("stats timeout 30s\n", 3, "stats", "expects 'stats socket <path>"),
    ("stats socket\n", 3, "stats", "'stats socket' expects a path"),
    ("stats socket /s mode rw\n", 3, "stats", "invalid mode 'rw'"),
    ("stats socket /s level root\n", 3, "stats", "unknown level 'root'"),
    ("stats socket /s level\n", 3, "stats", "'level' expects a value"),
    ("stats socket /s expose-fd listeners\n", 3, "stats", "unknown socket option 'expose-fd'"),
    ("stats socket /a\n    stats socket /b\n", 4, "stats", "set twice"),
    ("metrics 9107\n", 3, "metrics", "expects 'metrics bind [<address>]:<port>'"),
    ("metrics bind 9107\n", 3, "metrics", "invalid address '9107'"),
    ("metrics bind localhost:9107\n", 3, "metrics", "invalid address 'localhost'"),
    ("metrics bind :70000\n", 3, "metrics", "invalid address ':70000'"),
    ("metrics bind :1\n    metrics bind :2\n", 4, "metrics", "set twice"),
    ("mirror\n", 3, "mirror", "expects 'mirror <table>'"),
    ("mirror bad/name\n", 3, "mirror", "invalid table name 'bad/name'"),
    ("mirror t\n    mirror t\n", 4, "mirror", "mirrored twice"),
    ("escalate t\n", 3, "escalate", "expects 'escalate <table> ban <ttl>"),
    ("escalate t ban 10m if { server_id gt 1 }\n", 3, "escalate", "unknown metric 'server_id'"),
    ("escalate t ban never if { gpc0 gt 1 }\n", 3, "escalate", "ban duration: invalid time"),
    ("escalate t drop if { gpc0 gt 1 }\n", 3, "escalate", "expects 'escalate <table> ban <ttl>"),
    ("listen-to eth0\n", 3, "listen-to", "unknown keyword in shield 's'"),
    ('pin-dir "/unterminated\n', 3, None, "unmatched quote"),
]


@pytest.mark.parametrize("body,lineno,keyword,message", ERRORS)
def test_error_paths_name_file_line_and_keyword(body, lineno, keyword, message):
    text = "shield s\n    interface veth0\n" + "    " + body
    with pytest.raises(ConfigError) as err:
        parse(text, "edge.cfg")
    e = err.value
    assert (e.file, e.line, e.keyword) == ("edge.cfg", lineno, keyword)
    assert message in e.message
    prefix = f"edge.cfg:{lineno}: " + (f"'{keyword}': " if keyword else "")
    assert str(e).startswith(prefix)


@pytest.mark.parametrize("text,lineno,keyword,message", [
    ("shield\n", 1, "shield", "expects 'shield <name>'"),
    ("shield a b\n", 1, "shield", "expects 'shield <name>'"),
    ("shield bad/name\n    interface x\n", 1, "shield", "invalid shield name"),
    ("shield a\n", 1, "shield", "shield 'a' lists no 'interface'"),
    ("shield a\nfrontend f\n    bind :80\n", 1, "shield", "lists no 'interface'"),
    ("shield a\n    interface x\nshield a\n    interface y\n", 3, "shield", "declared twice"),
    ("interface eth0\n", 1, "interface", "keyword outside of any section"),
])
def test_section_level_errors(text, lineno, keyword, message):
    with pytest.raises(ConfigError) as err:
        parse(text, "edge.cfg")
    assert str(err.value).startswith(f"edge.cfg:{lineno}: '{keyword}': ")
    assert message in str(err.value)


def test_error_from_a_real_file_names_that_file(tmp_path):
    path = tmp_path / "haproxy.cfg"
    path.write_text(FULL.replace("mode dry-run", "mode panic"))
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert str(err.value) == f"{path}:28: 'mode': expects enforce or dry-run"


def test_proxy_keywords_inside_proxy_sections_are_not_shield_errors():
    # 'mode', 'table' and 'interface' also exist in HAProxy sections: only shield lines count.
    text = ("defaults\n    mode http\nbackend b\n    mode tcp\n    interface eth0\n"
            "shield s\n    interface v0\nlisten l\n    mode http\n")
    (cfg,) = parse(text)
    assert cfg.mode == "enforce" and cfg.interfaces == [config.Interface("v0")]


# --- `edgestick shield` before any kernel work: configuration errors and --check ---------

def run_cli(argv, capsys):
    from edgestick.control import shield
    status = shield.main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_cli_check_accepts_a_valid_file(tmp_path, capsys):
    path = tmp_path / "ok.cfg"
    path.write_text(FULL)
    assert run_cli(["-f", str(path), "--check"], capsys) == (0, "Configuration file is valid (shield 'edge')\n", "")


def test_cli_reports_config_errors_with_file_line_and_exit_1(tmp_path, capsys):
    path = tmp_path / "bad.cfg"
    path.write_text("shield s\n    interface veth0\n    drop if { conn_rate gt many }\n")
    status, out, err = run_cli(["-f", str(path)], capsys)
    assert status == 1 and out == ""
    assert err == f"{path}:3: 'drop': threshold 'many' is not a non-negative integer\n"


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    path = tmp_path / "ok.cfg"
    path.write_text(FULL)
    assert run_cli([], capsys)[0] == 2
    assert run_cli(["-f", str(path), "--bogus"], capsys)[0] == 2
    status, _, err = run_cli(["-f", str(path), "--purge"], capsys)
    assert status == 2 and "--purge only goes with --detach" in err
