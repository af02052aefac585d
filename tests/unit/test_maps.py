"""proxy/maps.py: map files as HAProxy reads them, each match type's lookup (the rules
tests/e2e/test_maps_vs_haproxy.py checks against haproxy 2.6), the converters, runtime
edits and what a configuration reload does to a map."""
import pytest

from edgestick.proxy.maps import (REGISTRY, MapError, read_map_lines, regm_value,
                                  split_map_line)
from edgestick.proxy.sample import Context, SampleError, compile_expr


@pytest.fixture
def mapdir(tmp_path):
    REGISTRY.begin()
    return tmp_path


def write(d, name, text):
    p = d / name
    p.write_bytes(text.encode())
    return str(p)


def conv(expr, **kw):
    return compile_expr(expr)(Context(**kw))


def test_file_lines_as_haproxy(mapdir):
    path = write(mapdir, "m.map", "# comment\n\n  key1   value with  spaces \t\n"
                                  "\t #key2 v2\r\nkey3\n k4\tv4\r\n")
    lines = read_map_lines(path)
    assert [n for n, _ in lines] == [3, 4, 5, 6]
    assert [split_map_line(t) for _, t in lines] == [
        ("key1", "value with  spaces"), ("#key2", "v2"), ("key3", ""), ("k4", "v4")]
    with pytest.raises(MapError, match="failed to open pattern file <"):
        read_map_lines(str(mapdir / "missing.map"))
    with pytest.raises(MapError, match="Is a directory"):
        read_map_lines(str(mapdir))


def test_str_beg_exact_and_longest_prefix(mapdir):
    path = write(mapdir, "p.map", "/api api\n/api/v2 v2\n/a a\n/dup first\n/dup second\n")
    assert conv(f"path,map_str({path},no)", path="/api") == "api"
    assert conv(f"path,map_str({path},no)", path="/api/x") == "no"
    assert conv(f"path,map({path})", path="/dup") == "first"
    assert conv(f"path,map({path})", path="/zz") is None
    assert conv(f"path,map_beg({path},no)", path="/api/v2/x") == "v2"
    assert conv(f"path,map_beg({path},no)", path="/ab") == "a"
    assert conv(f"path,map_beg({path},no)", path="/b") == "no"


def test_list_matches_first_in_file_order(mapdir):
    path = write(mapdir, "w.map", "/api sub_api\nstatic st\nexample.com dom\n.jpg img\n")
    assert conv(f"path,map_sub({path},no)", path="x/api/static") == "sub_api"
    assert conv(f"path,map_dir({path},no)", path="/x/static/y") == "st"
    assert conv(f"path,map_dir({path},no)", path="/x/statics") == "no"
    assert conv(f"path,map_dom({path},no)", path="www.example.com") == "dom"
    assert conv(f"path,map_end({path},no)", path="/cat.jpg") == "img"
    rx = write(mapdir, "r.map", "^/user/([0-9]+)$ user-\\1\n^/u us\n")
    assert conv(f"path,map_reg({rx},no)", path="/user/42") == "user-\\1"
    assert conv(f"path,map_regm({rx},no)", path="/user/42") == "user-42"
    assert conv(f"path,map_regm({rx},no)", path="/ux") == "us"


def test_int_ranges_first_match(mapdir):
    path = write(mapdir, "i.map", "5 five\n1:10 low\n20-30 mid\n")
    q = f"req.hdr(k),map_int({path},no)"
    assert conv(q, headers=[("k", "5")]) == "five"
    assert conv(q, headers=[("k", "7")]) == "low"
    assert conv(q, headers=[("k", "25")]) == "mid"
    assert conv(q, headers=[("k", "abc")]) == "no"           # reads as 0
    neg = write(mapdir, "neg.map", "-3 upto3\n")                # "-3" is a range, as in 2.6
    assert conv(f"req.hdr(k),map_int({neg})", headers=[("k", "-5")]) == "upto3"
    assert conv(f"req.hdr(k),map_int({neg})", headers=[("k", "2")]) == "upto3"
    assert conv(q, headers=[("k", "")]) is None              # does not convert


def test_ip_longest_prefix_and_families(mapdir):
    path = write(mapdir, "t.map", "10.0.0.0/8 ten\n10.1.0.0/16 ten1\n10.1.2.3 host\n"
                                  "192.168.0.0/255.255.0.0 mask\n10.0.9.0/255.0.255.0 odd\n"
                                  "::ffff:172.16.0.0/108 mapped\nfd00::/8 v6\n"
                                  "fd00:1::/32 v6one\n::1 lo6\n127.0.0.1 lo4\n")
    q = f"req.hdr(k),map_ip({path},no)"

    def look(v):
        return conv(q, headers=[("k", v)])
    assert look("10.1.2.3") == "host"
    assert look("10.1.9.9") == "ten1"
    assert look("10.2.2.2") == "ten"
    assert look("192.168.4.4") == "mask"
    assert look("172.16.0.5") == "mapped"               # IPv4 sample, IPv6 key
    assert look("::ffff:10.1.2.3") == "host"             # IPv6 sample, IPv4 key
    assert look("::127.0.0.1") == "lo4"
    assert look("::1") == "lo6"
    assert look("fd00:1::5") == "v6one"
    assert look("fd00:2::5") == "v6"
    assert look("11.0.9.0") == "no"
    assert look("not-an-ip") is None                     # no sample, no default
    # non-contiguous masks come after both trees (even a /0 one)
    odd = write(mapdir, "o.map", "10.0.9.0/255.0.255.0 odd\n10.0.0.0/8 ten\n1.2.3.4/0 any\n")
    assert conv(f"req.hdr(k),map_ip({odd})", headers=[("k", "11.7.9.1")]) == "any"
    assert conv(f"req.hdr(k),map_ip({odd})", headers=[("k", "10.7.9.1")]) == "ten"
    assert conv(f"req.hdr(k),map_ip({odd})", headers=[("k", "::ffff:10.7.9.1")]) == "ten"


def test_output_types_and_defaults(mapdir):
    ints = write(mapdir, "n.map", "a 1\nb -2\n")
    ips = write(mapdir, "ip.map", "a 198.18.0.1\nb fd00:0::1\n")
    assert conv(f"req.hdr(k),map_str_int({ints},7)", headers=[("k", "b")]) == -2
    assert conv(f"req.hdr(k),map_str_int({ints},7),add(1)", headers=[("k", "z")]) == 8
    assert conv(f"req.hdr(k),map_str_int({ints},)", headers=[("k", "z")]) == 0
    assert conv(f"req.hdr(k),map_str_ip({ips},::2)", headers=[("k", "b")]) == "fd00::1"
    assert conv(f"req.hdr(k),map_str_ip({ips},::2)", headers=[("k", "z")]) == "::2"
    assert compile_expr(f"req.hdr(k),map_str_ip({ips})").out == "ip"


@pytest.mark.parametrize("expr,message", [
    ("map(/nonexistent/x.map)", "invalid args in converter 'map' : failed to open pattern file"),
    ("map", "failed to open pattern file <>"),
    ("map_int({d}/n.map)", "'a' is not a number at line 1 of file '{d}/n.map'"),
    ("map_ip({d}/n.map)", "'a' is not a valid IPv4 or IPv6 address at line 1"),
    ("map_ip({d}/short.map)", "'10.1' is not a valid IPv4 or IPv6 address at line 1"),
    ("map_ip({d}/bits.map)", "'10.1.2.3/33' is not a valid IPv4 or IPv6 address at line 1"),
    ("map_str_ip({d}/n.map)", "unable to parse '1' at line 1"),
    ("map_str_int({d}/n.map,x1)", "failed to parse 'x1' as type 'integer' at position 2"),
    ("map_str_ip({d}/ip.map,zz)", "map: cannot parse default ip <zz>."),
    ("map({d}/n.map,a,b)", "expected ')'"),
    ("map_reg({d}/bad.map)", "regex '(' is invalid (error="),
    ("map_regm_int({d}/n.map)", "unknown converter 'map_regm_int'"),
])
def test_configuration_errors(mapdir, expr, message):
    write(mapdir, "n.map", "a 1\n")
    write(mapdir, "ip.map", "a 198.18.0.1\n")
    write(mapdir, "bad.map", "( x\n")
    write(mapdir, "short.map", "10.1 x\n")
    write(mapdir, "bits.map", "10.1.2.3/33 x\n")
    with pytest.raises(SampleError) as e:
        compile_expr("path," + expr.replace("{d}", str(mapdir)))
    assert message.replace("{d}", str(mapdir)) in str(e.value)


def test_runtime_edits_and_counters(mapdir):
    path = write(mapdir, "p.map", "/a a\n/dup one\n/dup two\n")
    beg = compile_expr(f"path,map_beg({path},no)")
    s = compile_expr(f"path,map_str({path},no)")
    ref = REGISTRY.lookup(path)
    assert ref.entry_cnt == 6                        # 3 entries x 2 indexes
    ref.add("/new", "n")
    assert beg(Context(path="/new/x")) == "n" and ref.entry_cnt == 8
    ints = write(mapdir, "n.map", "a 1\n")
    compile_expr(f"path,map_str_int({ints},0)")
    with pytest.raises(MapError, match="unable to parse 'x'"):
        REGISTRY.lookup(ints).add("b", "x")
    assert REGISTRY.lookup(ints).entry_cnt == 0      # HAProxy's count after a refusal
    ref.set_value(ref.find_entries("/dup"), "changed")
    assert s(Context(path="/dup")) == "changed"
    first = ref.entries[0]
    assert ref.find_entries(f"#0x{first.id:x}") == [first]
    assert ref.find_entries("#0xzz") is None
    ref.delete(ref.find_entries("/dup"))
    assert s(Context(path="/dup")) == "no" and ref.entry_cnt == 6
    ref.clear()
    assert beg(Context(path="/a")) == "no" and ref.entries == []


def test_shared_by_file_name_and_read_again_by_a_load(mapdir):
    path = write(mapdir, "p.map", "/a one\n")
    f1 = compile_expr(f"path,map({path})")
    f2 = compile_expr(f"path,map_str({path})")
    ref = REGISTRY.lookup(path)
    assert len(ref.current_exprs()) == 1            # map and map_str share one index
    ref.add("/b", "cli")
    assert f2(Context(path="/b")) == "cli"
    write(mapdir, "p.map", "/a two\n")
    with REGISTRY.loading():                        # a configuration (re)load
        f3 = compile_expr(f"path,map({path})")
        assert f1(Context(path="/a")) == "one"      # applied only at the end
    assert REGISTRY.lookup(path) is ref and ref.uid == 0
    # expressions compiled before read the new contents; runtime additions are gone
    assert f1(Context(path="/a")) == f3(Context(path="/a")) == "two"
    assert f1(Context(path="/b")) is None


def test_a_failed_load_leaves_the_running_maps(mapdir):
    path = write(mapdir, "p.map", "/a one\n")
    f = compile_expr(f"path,map_beg({path})")
    write(mapdir, "p.map", "/a two\n")
    write(mapdir, "n.map", "x notint\n")
    with pytest.raises(SampleError):
        with REGISTRY.loading():
            compile_expr(f"path,map_beg({path})")
            compile_expr(f"path,map_int({mapdir}/n.map)")
    assert f(Context(path="/a/x")) == "one"
    assert [r.path for r in REGISTRY.maps()] == [path]
    report = REGISTRY.lookup(path).lookup_report("/a/x")
    assert report.startswith("type=beg, case=sensitive, found=yes")


def test_regm_value_groups():
    import re
    m = re.search(r"^/img/(.*)\.(png|jpg)$", "/img/cat.png")
    assert regm_value("\\2:\\1 \\0 \\7", m) == "png:cat /img/cat.png "


def test_add_payload_as_haproxy_reads_it(mapdir):
    path = write(mapdir, "p.map", "/a a\n")
    compile_expr(f"path,map({path})")
    ref = REGISTRY.lookup(path)
    ref.add_payload("/b  b b \nbad\n/c c\n\t/d d")
    assert [(e.key, e.value) for e in ref.entries] == [
        ("/a", "a"), ("/b", "b b "), ("bad\n/c", "c"), ("", "/d d")]
    with pytest.raises(MapError, match="Missing value for key 'last'"):
        ref.add_payload("/e e\nlast")
    assert ref.entries[-1].key == "/e"
