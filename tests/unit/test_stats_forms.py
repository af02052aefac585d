"""show info / show stat forms (proxy/stats.py): arguments read as HAProxy 2.6 reads
them, HAProxy's float format, the field tables. The outputs themselves are compared
with HAProxy's in tests/e2e/test_show_info_vs_haproxy.py."""
import json

import pytest

from edgestick.proxy import stats
from edgestick.proxy.config import load_config_text

CFG = """
global
    stats socket /tmp/x.sock
frontend f
    bind :8080
    default_backend b
backend b
    id 9
    server s1 127.0.0.1:1
"""


class Proc:
    cfg = load_config_text(CFG, "t.cfg")[0]


@pytest.mark.parametrize("args, form, desc, flt", [
    ([], "plain", False, False),
    (["typed"], "typed", False, False),
    (["json", "typed"], "typed", False, False),        # the last one wins
    (["typed", "json", "desc"], "json", True, False),
    (["float", "bogus"], "plain", False, True),         # others ignored
])
def test_show_info_arguments(args, form, desc, flt):
    opt = stats.StatOptions(["show", "info", *args])
    assert (opt.form, opt.desc, opt.float) == (form, desc, flt)


@pytest.mark.parametrize("args, expect", [
    (["b", "4", "-1"], (9, 4, -1, None)),              # a proxy by name
    (["9", "-1", "1", "typed"], (9, -1, 1, None)),
    (["-1", "2", "-1"], (-1, 2, -1, None)),            # every proxy
    (["b", "4"], (None, None, None, None)),             # fewer than 3: words, ignored
    (["nosuch", "1", "1"], (None, None, None, "No such proxy.\n")),
    (["0", "1", "1"], (None, None, None, "No such proxy.\n")),
    (["domain", "dns"], (None, None, None, "Invalid statistics domain.\n")),
    (["domain"], (None, None, None, "Invalid statistics domain.\n")),
    (["domain", "proxy", "b", "1", "0"], (9, 1, 0, None)),
])
def test_show_stat_filter_arguments(args, expect):
    opt = stats.StatOptions(["show", "stat", *args], Proc, stat=True)
    assert (opt.iid, opt.types, opt.sid, opt.error) == expect


def test_show_stat_filter_selects_rows():
    opt = stats.StatOptions(["show", "stat", "9", "6", "1"], Proc, stat=True)
    rows = [{"iid": 9, "type": 1, "sid": 0, "status": "UP"},
            {"iid": 9, "type": 2, "sid": 1, "status": "UP"},
            {"iid": 9, "type": 2, "sid": 2, "status": "UP"},
            {"iid": 9, "type": 0, "sid": 0, "status": "OPEN"},
            {"iid": 3, "type": 1, "sid": 0, "status": "UP"}]
    assert [stats._selected(r, opt) for r in rows] == [True, True, False, False, False]


def test_up_and_no_maint():
    rows = [{"pxname": "b", "type": 2, "status": s} for s in ("UP", "no check", "DOWN", "MAINT")]
    rows.append({"pxname": "b", "type": 1, "status": "UP"})
    stats._count_up(rows)
    assert rows[-1]["status"] == "UP (2/4)"
    up = stats.StatOptions(["show", "stat", "up"], Proc, stat=True)
    no_maint = stats.StatOptions(["show", "stat", "no-maint"], Proc, stat=True)
    assert [stats._selected(r, up) for r in rows] == [True, True, False, False, True]
    assert [stats._selected(r, no_maint) for r in rows] == [True, True, True, False, True]


@pytest.mark.parametrize("value, text", [
    (0.0, "0"), (11.6238031, "11.623803"), (2.5, "2.5"), (100.0, "100"), (1e-7, "0")])
def test_float_as_haproxy_prints_it(value, text):
    assert stats._flt(value) == text


def test_field_tables():
    # show info: positions increasing, 45/46/51 (never printed) left out
    positions = [f[0] for f in stats.INFO_META]
    assert positions == sorted(positions) and {45, 46, 51}.isdisjoint(positions)
    assert positions[-1] == 71 and stats.INFO_META[-1][1] == "Tainted"
    # show stat: every printed column has its tags and type; positions skip "-"
    assert stats.STAT_POS["agg_check_status"] == 102 and stats.STAT_POS["ssl_sess"] == 103
    for name, (tags, kind, desc) in stats.STAT_META.items():
        assert tags[0] in stats._ORIGIN and tags[1] in stats._NATURE and tags[2] in stats._SCOPE
        assert kind in ("str", "u32", "s32", "u64", "s64", "flt") and desc


def test_json_field():
    text = "{" + stats._json_field(8, "Uptime_sec", "MDP", "flt", 1.5) + "}"
    assert json.loads(text) == {
        "field": {"pos": 8, "name": "Uptime_sec"}, "processNum": 1,
        "tags": {"origin": "Metric", "nature": "Duration", "scope": "Process"},
        "value": {"type": "flt", "value": 1.5}}
    assert '"value":{"type":"str","value":"a\\"b"}' in stats._json_field(
        0, "Name", "POS", "str", 'a"b')


def test_process_rates_from_the_totals():
    """ProcessRates reads the frontends' real counters once a second: rates read like
    freq_ctr, peaks the highest one-second counts, the CLI's bytes in the bytes out."""
    from types import SimpleNamespace

    from edgestick import freq_ctr
    from edgestick.proxy.frontend import StatusCounters

    clock = [10_000]
    freq_ctr.set_clock(lambda: clock[0])
    try:
        st = StatusCounters()
        fe = SimpleNamespace(stats=st, conns=set(), listeners=[])
        proc = SimpleNamespace(frontends=[fe], old_frontends=[], backends={},
                               runtime=SimpleNamespace(conn_total=3, bytes_out=100))
        pr = stats.ProcessRates(proc)
        st.conn_tot = st.stot = 4
        st.h1_out = 900
        clock[0] += 1000
        pr.tick()                                   # second 1: 4 connections
        st.conn_tot = st.stot = 6
        clock[0] += 500                             # half-way through second 2: 2 more
        totals = pr.totals()
        assert totals == (6, 6, 0, 0, 1000)
        assert pr.rate(pr.CONN, totals, freq_ctr.now_ms()) == (4 * 500 + 2 * 1000) // 1000
        assert pr.rate(pr.CONN, totals, freq_ctr.now_ms(), as_float=True) == 4.0
        assert pr.rates.max(pr.CONN, totals[pr.CONN]) == 4
        assert 0 <= pr.idle_pct <= 100
    finally:
        freq_ctr.set_clock(None)


def test_show_info_and_stat_at_user_level():
    from types import SimpleNamespace

    from edgestick.proxy.runtime_api import USER, CommandRegistry

    reg = CommandRegistry()
    stats.register_commands(SimpleNamespace(), reg)
    assert reg.find(["show", "info", "typed"]).level == USER
    assert reg.find(["show", "stat", "json"]).level == USER
