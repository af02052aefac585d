"""edgestick's own stick-table data types for the shield's mirrored counters
(xdp_conn_rate, xdp_pkt_rate, xdp_byte_rate, xdp_drops; proxy/stick_table.py)."""
import pytest

from edgestick.proxy.stick_table import DT, LOCAL_DATA_TYPE_MIN, StickTable, parse_table_args


def table(words: str) -> StickTable:
    decl, warnings = parse_table_args(words.split())
    assert warnings == []
    return StickTable("http_front", decl)


def test_ids_stay_clear_of_haproxys():
    ids = [DT[n] for n in ("xdp_conn_rate", "xdp_pkt_rate", "xdp_byte_rate", "xdp_drops")]
    assert ids == [64, 65, 66, 67] and min(ids) == LOCAL_DATA_TYPE_MIN
    assert max(v for k, v in DT.items() if not k.startswith("xdp_")) < LOCAL_DATA_TYPE_MIN


def test_stored_set_shown_filtered_and_kept_off_the_peers_wire():
    t = table("type ip size 1k expire 30s store http_req_rate(10s),xdp_conn_rate,xdp_pkt_rate,"
              "xdp_byte_rate,xdp_drops")
    row = t.get_or_create("198.18.0.66")
    for name, value in (("xdp_conn_rate", 120), ("xdp_pkt_rate", 400), ("xdp_byte_rate", 5_000_000_000),
                        ("xdp_drops", 4_294_967_296 + 7)):
        t.cli_set(row, DT[name], value)
    line = t.format_entry(row)
    assert line.split(" exp=")[1].split(" ", 1)[1] == (
        "http_req_rate(10000)=0 xdp_conn_rate=120 xdp_pkt_rate=400 xdp_byte_rate=5000000000 "
        "xdp_drops=4294967303\n")
    assert t.cli_value(row, DT["xdp_conn_rate"]) == 120
    assert t.read(row, "xdp_drops") == 4_294_967_303
    assert set(t.raw_values(row)) == {DT["http_req_rate"]}


@pytest.mark.parametrize("store", ["xdp_conn_rate(1s)", "xdp_syn_rate"])
def test_store_errors(store):
    with pytest.raises(ValueError):
        parse_table_args(f"type ip size 1k store {store}".split())
