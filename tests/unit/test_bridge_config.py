"""Mirror/escalation configuration (the `mirror ... store` and `proxy-socket` lines of the
shield section) and the bridge's decisions that need no proxy and no kernel."""
import pytest

from edgestick.cfgsyntax import ConfigError
from edgestick.control import config
from edgestick.control.bridge import (
    DEFAULT_STORE, ZERO, Bridge, SourceCounters, _MirrorState, proxy_socket_from_global)
from edgestick.control.runtime_client import parse_table_dump

SHIELD = "shield s\n    interface veth0\n"


def parse(text: str, file: str = "edge.cfg"):
    return config.parse_text(text, file)[0]


def test_mirror_native_and_store_forms():
    cfg = parse(SHIELD + "    mirror http_front\n"
                "    mirror hap_front store gpt0=xdp_conn_rate,gpc1=xdp_drops,gpc0_rate=xdp_pkt_rate\n"
                "    mirror es_front store xdp_conn_rate,xdp_drops\n"
                "    proxy-socket /run/edgestick/proxy.sock\n")
    assert cfg.mirrors == ["http_front", "hap_front", "es_front"]
    assert "http_front" not in cfg.mirror_store            # default: the four native types
    assert cfg.mirror_store["hap_front"] == {"gpt0": "xdp_conn_rate", "gpc1": "xdp_drops",
                                             "gpc0_rate": "xdp_pkt_rate"}
    assert cfg.mirror_store["es_front"] == {"xdp_conn_rate": "xdp_conn_rate", "xdp_drops": "xdp_drops"}
    assert cfg.proxy_socket == "/run/edgestick/proxy.sock"
    assert tuple(DEFAULT_STORE) == config.MIRROR_COUNTERS


@pytest.mark.parametrize("body,message", [
    ("mirror t store\n", "expects 'mirror <table> [store"),
    ("mirror t keep xdp_drops\n", "expects 'mirror <table> [store"),
    ("mirror t store xdp_syn_rate\n", "unknown XDP counter 'xdp_syn_rate'"),
    ("mirror t store gpt1=xdp_drops\n", "cannot store into 'gpt1'"),
    ("mirror t store conn_rate=xdp_conn_rate\n", "cannot store into 'conn_rate'"),
    ("mirror t store gpt0=xdp_drops,gpt0=xdp_conn_rate\n", "'gpt0' is stored twice"),
    ("proxy-socket\n", "expects 'proxy-socket <path>"),
    ("escalate t ban 1m if { http_err_rate gte 5 }\n",
     "unsupported operator 'gte' (expects one of eq, ne, le, ge, lt, gt)"),
    ("proxy-socket host-without-port\n", "invalid runtime API address"),
    ("proxy-socket /a\n    proxy-socket /b\n", "'proxy-socket' is set twice"),
])
def test_mirror_and_proxy_socket_errors_name_file_line_keyword(body, message):
    with pytest.raises(ConfigError) as err:
        parse(SHIELD + "    " + body)
    keyword = body.split()[0]
    assert str(err.value).startswith(f"edge.cfg:{3 + body.count(chr(10)) - 1}: '{keyword}': ")
    assert message in str(err.value)


def test_escalate_takes_every_show_table_operator():
    cfg = parse(SHIELD + "    escalate t ban 1m if { http_err_rate ge 20 }\n"
                "    escalate t ban 1m if { gpc0 eq 3 }\n")
    assert [(e.condition.metric, e.condition.op, e.condition.value) for e in cfg.escalations] == \
        [("http_err_rate", "ge", 20), ("gpc0", "eq", 3)]
    assert str(cfg.escalations[0].condition) == "{ http_err_rate ge 20 }"
    with pytest.raises(ConfigError, match="'drop': unsupported operator 'ge' \\(only 'gt'\\)"):
        parse(SHIELD + "    table type ip size 1k store conn_rate(1s)\n    drop if { conn_rate ge 5 }\n")


def test_proxy_socket_defaults_to_the_global_admin_socket(tmp_path):
    path = tmp_path / "edge.cfg"
    path.write_text("global\n    stats socket /run/ro.sock level user\n"
                    "    stats socket ipv4@127.0.0.1:9999 level admin\n"
                    "frontend f\n    bind :80\n" + SHIELD + "    mirror f\n")
    assert proxy_socket_from_global(str(path)) == "ipv4@127.0.0.1:9999"
    cfg = config.load(str(path))
    assert Bridge(cfg, None).client.address == "ipv4@127.0.0.1:9999"
    path.write_text("frontend f\n    bind :80\n" + SHIELD + "    mirror f\n")
    with pytest.raises(ValueError, match="add 'proxy-socket <path>'"):
        Bridge(config.load(str(path)), None)


def entry(line: str):
    _, entries = parse_table_dump("# table: t, type: ip, size:10, used:1\n" + line + "\n\n")
    return entries[0]


def test_set_command_writes_only_what_changed():
    m = _MirrorState("hap", {"gpt0": "xdp_conn_rate", "gpc0_rate": "xdp_pkt_rate", "gpc1": "xdp_drops"})
    c = SourceCounters("10.0.0.1", conn_rate=70, pkt_rate=210, byte_rate=9000, drops=3)
    # unknown to the proxy: created with the non-zero values
    assert Bridge._set_command(m, "10.0.0.1", c, None) == \
        "set table hap key 10.0.0.1 data.gpt0 70 data.gpc0_rate 210 data.gpc1 3"
    same = entry("0x1: key=10.0.0.1 use=0 exp=100 gpt0=70 gpc0_rate(1000)=210 gpc1=3")
    assert Bridge._set_command(m, "10.0.0.1", c, same) is None
    moved = entry("0x1: key=10.0.0.1 use=0 exp=100 gpt0=70 gpc0_rate(1000)=150 gpc1=3")
    assert Bridge._set_command(m, "10.0.0.1", c, moved) == "set table hap key 10.0.0.1 data.gpc0_rate 210"
    # a source gone from the shield: its values are zeroed once, then left to expire
    assert Bridge._set_command(m, "10.0.0.1", ZERO, same) == \
        "set table hap key 10.0.0.1 data.gpt0 0 data.gpc0_rate 0 data.gpc1 0"
    zeroed = entry("0x1: key=10.0.0.1 use=0 exp=100 gpt0=0 gpc0_rate(1000)=0 gpc1=0")
    assert Bridge._set_command(m, "10.0.0.1", ZERO, zeroed) is None
    assert Bridge._set_command(m, "10.0.0.9", ZERO, None) is None


def test_native_store_names_the_xdp_types():
    m = _MirrorState("http_front", dict(DEFAULT_STORE))
    c = SourceCounters("198.18.0.66", 120, 400, 32000, 0)
    assert Bridge._set_command(m, "198.18.0.66", c, None) == (
        "set table http_front key 198.18.0.66 data.xdp_conn_rate 120 data.xdp_pkt_rate 400 "
        "data.xdp_byte_rate 32000")


def test_row_struct_reads_the_counters_where_edgestick_h_puts_them():
    xdp = pytest.importorskip("edgestick.control.xdp", reason="libbpf is needed to load control/xdp.py")
    import ctypes
    from edgestick.control.bridge import _row_struct
    rows, names = _row_struct(xdp)
    assert rows.size == ctypes.sizeof(xdp.EsSource)
    s = xdp.EsSource()
    s.conn.curr_tick, s.conn.curr_ctr, s.conn.prev_ctr = 10, 1, 2
    s.pkt.curr_tick, s.pkt.curr_ctr, s.pkt.prev_ctr = 20, 3, 4
    s.bytes.curr_tick, s.bytes.curr_ctr, s.bytes.prev_ctr = 30, 5, 6
    s.drops, s.last_seen_ns = 7, 8
    row = dict(zip(names, rows.unpack(bytes(s))))
    assert row == {"conn_curr_tick": 10, "conn_curr_ctr": 1, "conn_prev_ctr": 2,
                   "pkt_curr_tick": 20, "pkt_curr_ctr": 3, "pkt_prev_ctr": 4,
                   "bytes_curr_tick": 30, "bytes_curr_ctr": 5, "bytes_prev_ctr": 6, "drops": 7}
