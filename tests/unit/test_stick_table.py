"""Stick tables: declaration grammar, key types, expiry, purge order, counters, dumps.

Expected strings come from HAProxy 2.6.12 (`haproxy -c` for the grammar errors, the
runtime API captures in tests/fixtures/haproxy-transcripts for the dumps)."""
import pytest

import haproxy_transcripts as tr
from edgestick import freq_ctr
from edgestick.proxy.stick_table import DT, StickTable, parse_table_args

T0 = 50_000_000


@pytest.fixture
def clock():
    now = [T0]
    freq_ctr.set_clock(lambda: now[0])
    yield now
    freq_ctr.set_clock(None)


def table(words: str, name: str = "t") -> StickTable:
    decl, warnings = parse_table_args(words.split())
    assert warnings == []
    return StickTable(name, decl)


def dump(t: StickTable) -> str:
    return t.header() + "".join(t.format_entry(r) for r in t.rows())


# ---------------------------------------------------------------- declaration grammar

@pytest.mark.parametrize("words,size", [
    ("type ip size 200k", 204800), ("type ip size 100k", 102400), ("type ip size 1k", 1024),
    ("type ip size 2m", 2097152), ("type ip size 1g", 1 << 30), ("type ip size 7", 7),
    ("size 1K type ip", 1024), ("type ip size 3M", 3 << 20),
])
def test_size_suffixes(words, size):
    assert parse_table_args(words.split())[0].size == size


def test_declaration_fields():
    d, w = parse_table_args("type string len 8 size 16 expire 30m nopurge peers p srvkey addr "
                            "store gpc(3),gpc_rate(2,1m) store gpt(2),server_name".split())
    assert (d.type, d.key_size, d.size, d.expire_ms, d.nopurge, d.peers, d.srvkey) == \
        ("string", 9, 16, 1_800_000, True, "p", "addr")
    assert d.stores == {DT["gpc"]: (3, 0), DT["gpc_rate"]: (2, 60_000), DT["gpt"]: (2, 0),
                        DT["server_key"]: (1, 0)}
    assert w == []
    assert parse_table_args("type binary len 3 size 1".split())[0].key_size == 3
    assert parse_table_args("type string size 1".split())[0].key_size == 32
    assert parse_table_args("type ipv6 size 1".split())[0].key_size == 16


# every message checked against `haproxy -c` (2.6.12) on `stick-table <words>`
GRAMMAR_ERRORS = [
    ("type ip size 4 store foo", "unknown store option 'foo'."),
    ("type ip size 4 store conn_rate", "missing argument to store option 'conn_rate'."),
    ("type ip size 4 store conn_cnt(5)", "unexpected argument to store option 'conn_cnt'."),
    ("type ip size 4 store gpc(0)",
     "array size is out of allowed range (1-100) for store option 'gpc'."),
    ("type ip size 4 store gpc(101)",
     "array size is out of allowed range (1-100) for store option 'gpc'."),
    ("type ip size 4 store gpc", "missing argument to store option 'gpc'."),
    ("type ip size 4 store gpc_rate(2)", "missing argument to store option 'gpc_rate'."),
    ("type ip size 4 store gpc(2),gpc0", "simultaneous usage of 'gpc' and 'gpc[0/1]' in a "
     "same table is not permitted as 'gpc' overrides 'gpc[0/1]'."),
    ("type ip size 4 store gpt(2),gpt0", "simultaneous usage of 'gpt' and 'gpt0' in a same "
     "table is not permitted as 'gpt' overrides 'gpt0'."),
    ("type ip size 4 store gpc_rate(2,1s),gpc1_rate(1s)", "simultaneous usage of 'gpc_rate' "
     "and 'gpc[0/1]_rate' in a same table is not permitted as 'gpc_rate' overrides "
     "'gpc[0/1]_rate'."),
    ("type ip size 4 store conn_rate(10x)", "error when processing store option 'conn_rate'."),
    ("type ip size 4 store conn_rate(10s",
     "missing closing parenthesis after store option 'conn_rate'."),
    ("type ip size 4 store ,conn_cnt", "unknown store option ''."),
    ("type ip size 4 foo", "unknown argument 'foo'."),
    ("type ip", "missing size."),
    ("type ip size 0", "missing size."),
    ("size 4", "missing type."),
    ("type foo size 4", "unknown type 'foo'."),
    ("type string len 0 size 4", "unknown type '0'."),
    ("type ip size 4x", "unexpected character 'x' in argument of 'size'."),
    ("type ip size", "missing argument after 'size'."),
    ("type ip size 4 expire", "missing argument after 'expire'."),
    ("type ip size 4 expire 10x", "unexpected character 'x' in argument of 'expire'."),
    ("type ip size 4 expire 1.5s", "unexpected character '.' in argument of 'expire'."),
    ("type ip size 4 expire 99999999999", "timer overflow in argument <99999999999> to "
     "<expire>, maximum value is 2147483647 ms (~24.8 days)."),
    ("type ip size 4 expire 25d", "timer overflow in argument <25d> to <expire>, maximum "
     "value is 2147483647 ms (~24.8 days)."),
    ("type ip size 4 srvkey foo", "unknown server key type 'foo'."),
]


@pytest.mark.parametrize("words,message", GRAMMAR_ERRORS)
def test_grammar_errors(words, message):
    with pytest.raises(ValueError) as e:
        parse_table_args(words.split())
    assert str(e.value) == message


def test_grammar_warnings_and_lenient_forms():
    d, w = parse_table_args("type ip size 4 store conn_cnt,conn_cnt".split())
    assert w == ["store option 'conn_cnt' already enabled, ignored."]
    d, w = parse_table_args("type ip size 4 expire 1m30s".split())
    assert d.expire_ms == 60_000 and len(w) == 1
    assert w[0].startswith("unexpected character '3' after the timer value '1m30s'")
    # accepted by 2.6 as well: extra array argument, trailing text, empty store list
    for words in ("type ip size 4 store gpc_rate(2,1s,3)", "type ip size 4 store gpc(2)x",
                  "type ip size 4 store", "type ip size 4 expire 0",
                  "type ip size 4 expire 10us"):
        parse_table_args(words.split())
    with pytest.raises(ValueError, match="unknown argument 'peers'"):
        parse_table_args("type ip peers p".split(), in_peers_section=True)
    with pytest.raises(ValueError, match="unknown argument 'peers'"):
        parse_table_args("type ip size 1 peers p".split(), in_peers_section=True)


# ---------------------------------------------------------------- keys

def test_key_types_and_truncation(clock):
    s = table("type string size 8 store gpc0")
    k = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF"
    assert s.key_of(k) == k[:31].encode()                # key_size 32 incl. the NUL
    s8 = table("type string len 8 size 8")
    assert s8.key_of("abcdefghijkl") == b"abcdefgh"
    assert s8.lookup("abcdefghXYZ") is None
    r = s8.get_or_create("abcdefghijkl")
    assert s8.lookup("abcdefghXYZ") == r                  # lookups compare truncated keys
    b = table("type binary len 4 size 8")
    assert b.key_of(b"\x01\x02") == b"\x01\x02\x00\x00"   # padded
    assert b.key_of(b"\x01\x02\x03\x04\x05") == b"\x01\x02\x03\x04"
    i = table("type integer size 8")
    assert i.key_of((1 << 40) + 7) == 7                   # low 32 bits of a 64-bit sample
    assert i.key_of("12") == 12
    ip = table("type ip size 8")
    assert ip.key_of("198.18.0.1") == 0xC6120001
    assert ip.key_of("::ffff:198.18.0.1") == 0xC6120001   # v4-mapped IPv6 converts
    assert ip.key_of("fd00::1") is None                   # other IPv6 cannot be tracked
    assert ip.track("fd00::1") is None
    v6 = table("type ipv6 size 8")
    assert v6.format_key(v6.key_of("198.18.0.1")) == "::ffff:198.18.0.1"
    assert v6.format_key(v6.key_of("fd00::0:1")) == "fd00::1"


def test_string_key_escaping_in_dumps(clock):
    t = table("type string size 8 store gpc0")
    for k in ["a b", "x=y", "back\\slash", "tab\there", "nl\nx", "\x1b", "\x01\xff", "ok"]:
        t.get_or_create(k)
    keys = [line.split(" key=")[1].split(" use=")[0] for line in dump(t).splitlines()[1:]]
    assert keys == ["\\x01\\xFF", "\\e", "a\\ b", "back\\\\slash", "nl\\nx", "ok",
                    "tab\\there", "x\\=y"]


def test_binary_keys_dump_in_hex(clock):
    t = table("type binary len 4 size 8")
    t.get_or_create(b"\xab\x01")
    assert " key=AB010000 " in dump(t)


# ---------------------------------------------------------------- dumps, from the captures

def test_dump_order_and_arrays_match_misc_transcript(clock):
    """misc-key-order-and-arrays: replay its `set table` commands through the table API
    and compare every dump with HAProxy's (pointers masked)."""
    tables = {}
    for name, words, _ in tr.stick_tables(tr.config("misc-key-order-and-arrays.txt")):
        tables[name] = StickTable(name, parse_table_args(words)[0])
    compared = 0
    for cmd, reply in tr.cli_exchanges("misc-key-order-and-arrays.txt"):
        w = cmd.split()
        t = tables[w[2]]
        if w[0] == "set":
            row = t.get_or_create(w[4])
            for i in range(5, len(w), 2):
                dt = DT[w[i][5:]]
                if dt in t._fields:
                    t.cli_set(row, dt, int(w[i + 1]))
            t.touch(row)
        elif w[0] == "show" and len(w) == 3:
            assert tr.mask(dump(t).encode() + b"\n") == tr.mask(reply)
            compared += 1
    assert compared == 3


def test_entry_line_format_of_transcript_c(clock):
    t = table("type ip size 100k expire 30s store http_req_rate(10s),conn_cur", "fe_c")
    for _ in range(150):
        r = t.track("127.0.0.1", http_req=True)
        t.release(r)
    clock[0] += 1
    assert tr.mask(dump(t).encode()) == tr.mask(
        b"# table: fe_c, type: ip, size:102400, used:1\n"
        b"0x55c9ba6c1fe0: key=127.0.0.1 use=0 exp=29999 conn_cur=0 http_req_rate(10000)=150\n")
    assert tr.exps(dump(t).encode()) == [29999]


def test_fields_in_id_order_with_every_type(clock):
    t = table("type ip size 8 store http_fail_rate(1s),http_fail_cnt,server_key,gpc1_rate(1s),"
              "gpc1,bytes_out_rate(1s),bytes_out_cnt,bytes_in_rate(1s),bytes_in_cnt,"
              "http_err_rate(1s),http_err_cnt,http_req_rate(1s),http_req_cnt,sess_rate(1s),"
              "sess_cnt,conn_cur,conn_rate(1s),conn_cnt,gpc0_rate(1s),gpc0,gpt0,server_id")
    r = t.get_or_create("10.0.0.1")
    line = t.format_entry(r)
    assert line.split(" exp=0 ")[1] == (
        "server_id=0 gpt0=0 gpc0=0 gpc0_rate(1000)=0 conn_cnt=0 conn_rate(1000)=0 conn_cur=0 "
        "sess_cnt=0 sess_rate(1000)=0 http_req_cnt=0 http_req_rate(1000)=0 http_err_cnt=0 "
        "http_err_rate(1000)=0 bytes_in_cnt=0 bytes_in_rate(1000)=0 bytes_out_cnt=0 "
        "bytes_out_rate(1000)=0 gpc1=0 gpc1_rate(1000)=0 server_key=- http_fail_cnt=0 "
        "http_fail_rate(1000)=0\n")


# ---------------------------------------------------------------- counters

def test_counters_of_counters_semantics_transcript(clock):
    """Scenario A of counters-semantics for an http-request tracker: 7 requests on one
    connection, of which 2 client errors and 2 server failures, gpc0 incremented once."""
    t = table("type ip size 1k expire 60s store conn_cnt,conn_cur,conn_rate(60s),sess_cnt,"
              "sess_rate(60s),http_req_cnt,http_req_rate(60s),http_err_cnt,http_err_rate(60s),"
              "http_fail_cnt,http_fail_rate(60s),bytes_in_cnt,bytes_out_cnt,gpc0", "t_http")
    sizes_in = [53, 64, 64, 64, 64, 55, 51]
    sizes_out = [176, 194, 206, 200, 204, 189, 176]
    for i, kind in enumerate(["ok", "404", "500", "501", "503", "deny", "inc"]):
        r = t.track("127.0.0.1", http_req=True)
        if kind in ("404", "deny"):
            t.inc_http_err(r)
        if kind in ("500", "503"):
            t.inc_http_fail(r)
        if kind == "inc":
            assert t.inc_gpc(r, 0) == 1
        t.add_bytes_in(r, sizes_in[i])
        t.add_bytes_out(r, sizes_out[i])
        clock[0] += 1
        t.release(r)
    r = t.lookup("127.0.0.1")
    got = t.format_entry(r).split(" use=")[1]
    assert got == (
        "0 exp=60000 gpc0=1 conn_cnt=7 conn_rate(60000)=7 conn_cur=0 sess_cnt=0 "
        "sess_rate(60000)=0 http_req_cnt=7 http_req_rate(60000)=7 http_err_cnt=2 "
        "http_err_rate(60000)=2 bytes_in_cnt=415 bytes_out_cnt=1345 http_fail_cnt=2 "
        "http_fail_rate(60000)=2\n")
    # a session-level tracker: one connection, counted once, held while open
    r = t.track("127.0.0.2")
    t.count_session(r)
    assert (t.read(r, "conn_cur"), t.use(r), t.read(r, "sess_cnt")) == (1, 1, 1)
    t.release(r)
    assert (t.read(r, "conn_cur"), t.use(r)) == (0, 0)


def test_reads_and_legacy_gpc_mapping(clock):
    t = table("type ip size 8 store gpc(2),gpc_rate(2,10s),gpt(2)")
    r = t.get_or_create("10.0.0.1")
    assert t.read(r, "conn_cur") is None                  # not stored: no sample
    assert t.inc_gpc(r, 1) == 1                           # sc-inc-gpc1 -> gpc[1]
    assert t.inc_gpc(r, 0, legacy=False) == 1
    assert (t.read(r, "gpc1"), t.read(r, "gpc", 1), t.read(r, "gpc1_rate")) == (1, 1, 1)
    assert t.set_gpt(r, 42) and t.read(r, "gpt0") == 42
    assert t.clr_gpc(r, 1) == 1 and t.read(r, "gpc1") == 0
    legacy = table("type ip size 8 store gpc0,gpc0_rate(10s)")
    r = legacy.get_or_create("10.0.0.1")
    assert legacy.inc_gpc(r, 0) == 1 and legacy.inc_gpc(r, 0, legacy=False) is None
    assert legacy.read(r, "gpc0_rate") == 1 and legacy.read(r, "gpc1") is None
    assert legacy.set_gpt(r, 1) is False


def test_u32_counters_wrap_and_set_semantics(clock):
    t = table("type ip size 8 store gpc0,server_id,bytes_in_cnt,http_req_rate(10s)")
    r = t.get_or_create("10.0.0.1")
    t.cli_set(r, DT["gpc0"], 4294967297)
    t.cli_set(r, DT["server_id"], 4294967295)
    t.cli_set(r, DT["bytes_in_cnt"], 1 << 40)
    t.cli_set(r, DT["http_req_rate"], 99)
    assert (t.read(r, "gpc0"), t.read(r, "server_id"), t.read(r, "bytes_in_cnt")) == \
        (1, -1, 1 << 40)
    t.cli_set(r, DT["gpc0"], -1)
    assert t.read(r, "gpc0") == 4294967295
    assert t.inc_gpc(r, 0) == 0                           # u32 wraps
    clock[0] += 9_998
    assert t.read(r, "http_req_rate") == 99
    clock[0] += 5_000
    assert t.read(r, "http_req_rate") == 49


# ---------------------------------------------------------------- expiry

def test_expire_refresh_rules(clock):
    t = table("type ip size 8 expire 30s store http_req_cnt,conn_cur")
    r = t.track("10.0.0.1", http_req=True)
    t.release(r)
    clock[0] += 10_000
    assert t.expire_in(r) == 20_000
    t.lookup("10.0.0.1")                                   # reads do not touch
    t.read(r, "http_req_cnt")
    dump(t)
    assert t.expire_in(r) == 20_000
    t.inc_http_req(r)                                      # counter changes do
    assert t.expire_in(r) == 30_000
    clock[0] += 29_999
    assert t.lookup("10.0.0.1") == r
    clock[0] += 1
    assert t.lookup("10.0.0.1") is None and len(t) == 0   # due: gone


def test_counting_an_unstored_type_does_not_touch(clock):
    t = table("type ip size 8 expire 30s store server_id")
    r = t.get_or_create("10.0.0.1")
    clock[0] += 5_000
    t.inc_http_req(r)
    t.inc_http_err(r)
    assert t.expire_in(r) == 25_000


def test_sweep_and_references(clock):
    t = table("type ip size 8 expire 1s store conn_cur")
    held = t.track("10.0.0.1")
    t.get_or_create("10.0.0.2")
    t.get_or_create("10.0.0.3")
    clock[0] += 1_000
    assert t.sweep() == 2 and len(t) == 1                  # the tracked one stays
    clock[0] += 5_000
    assert t.sweep() == 0 and t.used == 1
    t.release(held)                                        # release touches (conn_cur-1)
    assert len(t) == 1
    clock[0] += 1_000
    assert t.used == 0
    assert t.next_expiry() is None


def test_release_of_an_entry_past_expiry_removes_it(clock):
    t = table("type ip size 8 expire 1s store gpc0")       # no conn_cur: release does not touch
    r = t.track("10.0.0.1")
    clock[0] += 2_000
    assert t.sweep() == 0
    t.release(r)
    assert len(t) == 0


def test_no_expire_table_keeps_entries_and_shows_exp_0(clock):
    t = table("type integer size 4 store gpc0")
    t.get_or_create(12)
    clock[0] += 10 ** 9
    assert t.used == 1 and " exp=0 " in dump(t)


# ---------------------------------------------------------------- purge when full

def _replay_full_table(words: str):
    """The misc transcript's sequence: insert .1-.4 ~50 ms apart, touch .1, insert .5,
    insert .6 (each by `set table ... data.gpc0 N`). Returns the dumps after .5 and .6
    and the CLI-style results of the two inserts."""
    t = table(words, "t_small")
    results = []
    dumps = []

    def cli_set(ip, value):
        row = t.get_or_create(ip)
        if row is None:
            results.append("Unable to allocate a new entry")
            return
        t.cli_set(row, DT["gpc0"], value)
        t.touch(row)
        results.append("")

    for i in range(1, 5):
        cli_set(f"10.0.0.{i}", i)
        freq_ctr_now[0] += 50
    cli_set("10.0.0.1", 11)
    freq_ctr_now[0] += 50
    cli_set("10.0.0.5", 5)
    dumps.append(dump(t))
    freq_ctr_now[0] += 50
    cli_set("10.0.0.6", 6)
    dumps.append(dump(t))
    return dumps, results


freq_ctr_now = [T0]


@pytest.fixture
def shared_clock():
    freq_ctr_now[0] = T0
    freq_ctr.set_clock(lambda: freq_ctr_now[0])
    yield
    freq_ctr.set_clock(None)


def _expected_dumps(table_name: str) -> list[bytes]:
    out = [r for c, r in tr.cli_exchanges("misc-table-full-and-double-tracking.txt")
           if c == f"show table {table_name}"]
    return [out[1], out[2]]


@pytest.mark.parametrize("name,words", [
    ("t_small", "type ip size 4 expire 1h store gpc0"),
    ("t_small_noexp", "type ip size 4 store gpc0"),
])
def test_purge_order_as_observed(shared_clock, name, words):
    dumps, results = _replay_full_table(words)
    expected = _expected_dumps(name)
    for got, exp in zip(dumps, expected):
        got = got.replace("t_small,", f"{name},").encode() + b"\n"
        assert tr.mask(got) == tr.mask(exp)
    assert results == ["", "", "", "", "", "", ""]


def test_nopurge_refuses_new_entries(shared_clock):
    dumps, results = _replay_full_table("type ip size 4 expire 1h nopurge store gpc0")
    assert results[-2:] == ["Unable to allocate a new entry"] * 2
    expected = _expected_dumps("t_small_nopurge")
    for got, exp in zip(dumps, expected):
        got = got.replace("t_small,", "t_small_nopurge,").encode() + b"\n"
        assert tr.mask(got) == tr.mask(exp)


def test_purge_skips_referenced_and_respects_the_candidate_budget(clock):
    t = table("type ip size 4 expire 1h store conn_cur")
    rows = [t.track(f"10.0.0.{i}") for i in range(1, 5)]   # all referenced
    assert t.get_or_create("10.0.0.9") is None             # nothing evictable
    t.release(rows[1])
    assert t.get_or_create("10.0.0.9") is not None          # .2 released: evicted
    assert t.lookup("10.0.0.2") is None
    # budget: batch = (size >> 8) + 1 = 1, so at most 2 queued candidates are examined;
    # two entries touched since queued (re-queued, not evicted) exhaust it
    u = table("type ip size 4 expire 1h store gpc0")
    for i in range(1, 5):
        u.get_or_create(f"10.0.0.{i}")
        clock[0] += 10
    u.touch(u.lookup("10.0.0.1"))
    u.touch(u.lookup("10.0.0.2"))
    assert u.get_or_create("10.0.0.5") is None
    # the next attempt finds .3 first in the queue (.1 and .2 were re-queued later)
    assert u.get_or_create("10.0.0.5") is not None and u.lookup("10.0.0.3") is None


def test_batch_eviction_on_large_tables(clock):
    t = table("type ip size 512 expire 1h store gpc0")
    for i in range(512):
        t.get_or_create(0x0A000000 + i)
        clock[0] += 1
    assert len(t) == 512
    t.get_or_create(0x0B000000)                            # evicts (512 >> 8) + 1 = 3
    assert len(t) == 510
    assert all(t.lookup(0x0A000000 + i) is None for i in range(3))
    assert t.lookup(0x0A000003) is not None


def test_remote_update_overwrites_without_conn_cur(clock):
    t = table("type ip size 8 expire 30s store conn_cur,http_req_rate(10s),server_key")
    vals = {DT["conn_cur"]: [5], DT["http_req_rate"]: [(T0 & ~1, 7, 3)],
            DT["server_key"]: ["s2"]}
    r = t.apply_remote(t.key_of("10.0.0.1"), vals)
    assert (t.read(r, "conn_cur"), t.read(r, "http_req_rate"), t.read(r, "server_key")) == \
        (0, 7 + 3, "s2")                                 # whole previous period still counts
    assert t.expire_in(r) == 30_000
    r = t.apply_remote(t.key_of("10.0.0.1"), vals, expire_ms=1234)
    assert t.expire_in(r) == 1234
    assert t.raw_values(r)[DT["http_req_rate"]] == [(T0 & ~1, 7, 3)]


# ---------------------------------------------------------------- expiry queue vs a model

class HaproxyModel:
    """HAProxy 2.6's expiry tree written out naively: a sorted list of (queued date,
    insertion order, key) walked the way trash_oldest/trash_expired walk the eb-tree."""

    def __init__(self, size, expire):
        self.size, self.expire = size, expire
        self.exp, self.use, self.tree, self.seq = {}, {}, [], 0

    def _queue(self, key, date):
        self.seq += 1
        node = (date, self.seq, key)
        self.tree.append(node)
        self.tree.sort()
        return node

    def _next(self, node):
        later = [n for n in self.tree if n > node]
        return later[0] if later else None

    def create(self, key, now):
        if key in self.exp:
            return True
        if len(self.exp) >= self.size and not self.trash_oldest((self.size >> 8) + 1):
            return False
        self.exp[key], self.use[key] = now + self.expire, 0
        self._queue(key, now + self.expire)
        return True

    def trash_oldest(self, batch):
        budget, evicted = 2 * batch, 0
        node = self.tree[0] if self.tree else None
        while evicted < batch and node is not None:
            budget -= 1
            if budget < 0:
                break
            date, _, key = node
            nxt = self._next(node)
            if self.use[key]:
                node = nxt
                continue
            self.tree.remove(node)
            if self.exp[key] != date:
                new = self._queue(key, self.exp[key])
                node = new if nxt is None or nxt[0] > new[0] else nxt
                continue
            del self.exp[key], self.use[key]
            evicted += 1
            node = nxt
        return evicted

    def trash_expired(self, now):
        node = self.tree[0] if self.tree else None
        while node is not None and node[0] <= now:
            date, _, key = node
            nxt = self._next(node)
            if self.use[key]:
                node = nxt
                continue
            self.tree.remove(node)
            if self.exp[key] > now:
                new = self._queue(key, self.exp[key])
                node = new if nxt is None or nxt[0] > new[0] else nxt
                continue
            del self.exp[key], self.use[key]
            node = nxt


@pytest.mark.parametrize("seed,expire,size,nkeys", [
    (1, 1000, 6, 14), (2, 1000, 6, 14), (3, 0, 6, 14), (4, 50, 6, 14), (5, 0, 6, 14),
    (6, 300, 6, 9), (7, 0, 260, 400), (8, 2000, 260, 400)])
def test_expiry_queue_matches_haproxys_tree(clock, seed, expire, size, nkeys):
    """Random creations (into a full table), touches, references, clock steps and
    sweeps: the same entries survive as in HAProxy's algorithm (budget included)."""
    import random
    rnd = random.Random(seed)
    t = table(f"type integer size {size} expire {expire}ms store gpc0" if expire
              else f"type integer size {size} store gpc0")
    m = HaproxyModel(size, expire)
    for step in range(3000):
        op = rnd.random()
        key = rnd.randrange(nkeys)
        if expire:
            # HAProxy's expire task runs on time; edgestick also drops due entries on
            # access, so both sides sweep before each operation
            t.sweep()
            m.trash_expired(clock[0])
        if op < 0.35:
            ok = t.get_or_create(key) is not None
            assert ok == m.create(key, clock[0]), step
        elif op < 0.6:
            row = t._index.get(key)
            if row is not None:
                t.touch(row)
                m.exp[key] = clock[0] + expire
        elif op < 0.7:
            row = t._index.get(key)
            if row is not None and m.use[key] < 2:
                t.acquire(row)
                m.use[key] += 1
        elif op < 0.8:
            row = t._index.get(key)
            if row is not None and m.use[key]:
                t.unref(row)
                m.use[key] -= 1
        elif op < 0.9:
            clock[0] += rnd.choice((0, 1, 7, 30, 200))
        else:
            t.sweep()
            if expire:
                m.trash_expired(clock[0])
        assert set(t._index) == set(m.exp), step
